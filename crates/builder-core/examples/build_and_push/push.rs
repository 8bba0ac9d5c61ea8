//! The example's build (also run by `tests/examples.rs`).

use std::path::PathBuf;

use builder_core::{Build, BuildReport, Error, ExportSpec, ProgressEvent, ProgressSink};

/// Prints step names, cache hits and RUN output to stderr, as a minimal renderer.
struct Stderr;

impl ProgressSink for Stderr {
    fn event(&mut self, ev: &ProgressEvent) {
        match ev {
            ProgressEvent::StepStarted { name, .. } => eprintln!("{name}"),
            ProgressEvent::StepCached { .. } => eprintln!("  CACHED"),
            ProgressEvent::StepLog { data, .. } => eprint!("  {}", String::from_utf8_lossy(data)),
            ProgressEvent::Warning { message, .. } => eprintln!("WARNING: {message}"),
            _ => {}
        }
    }
}

/// Builds `context` and pushes it as `tag`, over `cache_dir` (default: rbuild's cache).
pub(crate) async fn build_and_push(
    context: &str,
    tag: &str,
    cache_dir: Option<PathBuf>,
) -> Result<BuildReport, Error> {
    let mut build = Build::new(context)?
        .tag(tag)?
        .output(ExportSpec::registry());
    if let Some(dir) = cache_dir {
        build = build.cache_dir(dir);
    }
    build.run(&mut Stderr).await
}
