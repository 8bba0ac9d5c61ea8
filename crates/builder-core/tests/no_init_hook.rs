//! A program that never calls `maybe_run_init` (this test binary: libtest's own `main`)
//! still builds what needs no sandbox, and a RUN step fails with an error that names the
//! missing call. Before the guard, the sandbox re-executed `/proc/self/exe`, which ran this
//! `main` again: every child started another build and another child, and the run hung.

use std::sync::mpsc;
use std::time::Duration;

use builder_core::{Build, CollectSink};

/// Builds `dockerfile` over an empty context in a fresh cache, giving up after two minutes
/// (a regression would otherwise hang the suite).
fn build(dockerfile: &'static str) -> Result<builder_core::BuildReport, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> Result<builder_core::BuildReport, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            std::fs::write(dir.path().join("hello.txt"), "hello\n").map_err(|e| e.to_string())?;
            let out = dir.path().join("image.tar");
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            let mut sink = CollectSink::default();
            let spec = format!("type=oci,dest={}", out.display())
                .parse()
                .map_err(|e: builder_core::Error| e.to_string())?;
            runtime
                .block_on(
                    Build::new(dir.path())
                        .map_err(|e| e.to_string())?
                        .dockerfile_text("Dockerfile", dockerfile.to_owned())
                        .cache_dir(dir.path().join("cache"))
                        .output(spec)
                        .run(&mut sink),
                )
                .map_err(|e| format!("{e:#}"))
        };
        let _ = tx.send(run());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| Err("the build did not finish within 120 s".into()))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn a_build_without_run_needs_no_init() {
    if !is_root() {
        eprintln!("skipped: unpacking layers needs root");
        return;
    }
    let report = build("FROM scratch\nCOPY hello.txt /\n").expect("the build succeeds");
    assert!(report.digest.is_some());
}

#[test]
fn a_run_step_names_the_missing_call() {
    if !is_root() {
        eprintln!("skipped: unpacking layers needs root");
        return;
    }
    let err = build("FROM scratch\nCOPY hello.txt /\nRUN [\"/hello.txt\"]\n")
        .expect_err("a RUN step cannot run without the init");
    assert!(err.contains("maybe_run_init"), "{err}");
}
