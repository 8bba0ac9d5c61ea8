//! A bounded soak (issue 22): 60 consecutive builds in one process through the builder-core
//! API (a fifth failing in a RUN step, a fifth cancelled mid-step), then no growth from
//! build 20 to build 60 in open fds, mounts or child processes, and RSS within 32 MiB.
//! `examples/soak_mixed` runs 200 and prints the figures. This binary is its own sandbox init.

#[path = "../examples/soak_mixed/soak_loop.rs"]
#[allow(dead_code)]
mod soak_loop;

fn main() {
    builder_core::maybe_run_init();
    if std::env::args().any(|a| a == "--list") {
        println!("soak::no_growth_over_60_builds: test");
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filter.is_empty()
        && !filter
            .iter()
            .any(|f| "soak::no_growth_over_60_builds".contains(f.as_str()))
    {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rbuild-soak-test-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut samples = Vec::new();
    let outcomes = rt
        .block_on(soak_loop::soak(
            "127.0.0.1:5000/library/busybox:latest",
            dir.path(),
            60,
            20,
            |s| {
                eprintln!("{s}");
                samples.push(s);
            },
        ))
        .unwrap_or_else(|e| panic!("soak: {e}"));
    assert_eq!(
        (outcomes.ok, outcomes.failed, outcomes.cancelled),
        (36, 12, 12)
    );
    let (a, b) = (samples[1], samples[samples.len() - 1]);
    assert_eq!((a.builds, b.builds), (20, 60));
    assert!(b.fds <= a.fds, "open fds grew: {a} -> {b}");
    assert_eq!(b.mounts, 0, "mounts left below the soak's directory: {b}");
    assert_eq!(b.children, 0, "child processes left: {b}");
    assert!(
        b.rss_kib <= a.rss_kib + 32 * 1024,
        "resident memory grew by more than 32 MiB: {a} -> {b}"
    );
    println!("test soak::no_growth_over_60_builds ... ok");
}
