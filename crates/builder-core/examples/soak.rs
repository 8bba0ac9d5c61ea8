//! Soak benchmark (issue 21): many builds in one process through the embedding API, printing
//! this process's memory every few builds, to show that it stays flat.
//!
//! Each build copies a file whose content changes every time into a busybox image and runs
//! a step that reads it, then writes an OCI layout: every build runs a step, packs a layer
//! and exports, on one cache.
//!
//! ```sh
//! cargo run --release -p builder-core --example soak -- [--builds 200] [--every 20]
//!     [--base 127.0.0.1:5000/library/busybox:latest] [--dir DIR]
//! ```
//!
//! Prints one line per `--every` builds: builds done, VmRSS, VmHWM (peak), open fds and
//! seconds per build; then the RSS growth from the first line to the last.

use std::path::{Path, PathBuf};
use std::time::Instant;

use builder_core::{Build, NullSink};

struct Opts {
    builds: usize,
    every: usize,
    base: String,
    dir: Option<PathBuf>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        builds: 200,
        every: 20,
        base: "127.0.0.1:5000/library/busybox:latest".into(),
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--builds" => o.builds = value()?.parse().map_err(|e| format!("--builds: {e}"))?,
            "--every" => o.every = value()?.parse().map_err(|e| format!("--every: {e}"))?,
            "--base" => o.base = value()?,
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if o.builds == 0 || o.every == 0 {
        return Err("--builds and --every must be above 0".into());
    }
    Ok(o)
}

/// `VmRSS` and `VmHWM` of this process, kB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn write(p: &Path, text: &str) -> Result<(), String> {
    std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
}

fn main() {
    builder_core::maybe_run_init();
    if let Err(e) = run() {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = parse()?;
    builder_core::enter_rootless().map_err(|e| e.to_string())?;
    let tmp = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("temporary directory: {e}"))?;
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).map_err(|e| format!("{}: {e}", ctx.display()))?;
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM {}\nCOPY build.txt /build.txt\nRUN wc -c /build.txt > /size\n",
            o.base
        ),
    )?;
    let cache = tmp.path().join("cache");
    let dest = tmp.path().join("out.tar");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("async runtime: {e}"))?;
    println!("builds  rss_kB  peak_kB  fds  s/build");
    let (mut first_rss, mut last_rss) = (None, 0);
    let mut t = Instant::now();
    for i in 1..=o.builds {
        write(&ctx.join("build.txt"), &format!("build {i}\n"))?;
        let build = Build::new(&ctx)
            .map_err(|e| e.to_string())?
            .cache_dir(&cache)
            .output(
                format!("type=oci,dest={}", dest.display())
                    .parse()
                    .map_err(|e: builder_core::Error| e.to_string())?,
            );
        let report = runtime
            .block_on(build.run(&mut NullSink))
            .map_err(|e| format!("build {i}: {e}"))?;
        if report.steps_run == 0 {
            return Err(format!(
                "build {i} ran no step: the soak would measure nothing"
            ));
        }
        if i % o.every == 0 {
            let (rss, hwm) = memory();
            println!(
                "{i:>6}  {rss:>6}  {hwm:>7}  {:>3}  {:>7.2}",
                open_fds(),
                t.elapsed().as_secs_f64() / o.every as f64
            );
            first_rss.get_or_insert(rss);
            last_rss = rss;
            t = Instant::now();
        }
    }
    if let Some(first) = first_rss {
        println!(
            "rss growth from the first line to the last: {} kB",
            last_rss as i64 - first as i64
        );
    }
    Ok(())
}
