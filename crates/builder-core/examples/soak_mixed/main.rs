//! Soak: N consecutive builds (default 200) in one process through the builder-core API,
//! some failing, some cancelled, printing the process's open fds, mounts, child
//! processes, threads and RSS every 20 builds, and the growth from build 20 to the end.
//!
//!     cargo run -p builder-core --example soak_mixed -- [BUILDS] [BASE_IMAGE]
//!
//! BASE_IMAGE defaults to the test registry's busybox (scripts/testenv/up.sh). Run as
//! root (or rootless with subordinate ids). `scripts/soak-mixed.sh` runs it. (`examples/soak.rs`, issue 21, measures memory over
//! successful builds only.)

mod soak_loop;

fn main() -> std::process::ExitCode {
    // RUN steps re-execute this binary as the sandbox init.
    builder_core::maybe_run_init();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(200);
    let base = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:5000/library/busybox:latest".to_owned());
    let dir = match tempfile::Builder::new()
        .prefix("rbuild-soak-")
        .tempdir_in("/var/tmp")
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("soak: a temporary directory in /var/tmp: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let start = std::time::Instant::now();
    let mut samples = Vec::new();
    let result = rt.block_on(soak_loop::soak(&base, dir.path(), n, 20, |s| {
        println!("{s}  ({:.0?})", start.elapsed());
        samples.push(s);
    }));
    match result {
        Ok(o) => {
            println!(
                "{n} builds in {:.0?}: {} ok, {} failed, {} cancelled",
                start.elapsed(),
                o.ok,
                o.failed,
                o.cancelled
            );
            if let (Some(a), Some(b)) = (samples.get(1), samples.last()) {
                println!(
                    "growth from build {} to {}: fds {:+}, mounts {:+}, children {:+}, threads {:+}, rss {:+} KiB",
                    a.builds,
                    b.builds,
                    b.fds as i64 - a.fds as i64,
                    b.mounts as i64 - a.mounts as i64,
                    b.children as i64 - a.children as i64,
                    b.threads as i64 - a.threads as i64,
                    b.rss_kib as i64 - a.rss_kib as i64
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
