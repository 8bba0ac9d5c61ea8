//! The example's builds (also run by `tests/examples.rs`).

use std::path::Path;

use builder_core::{Build, BuildGroup, ExportSpec, GroupSink, ProgressEvent, TargetResult};

/// Hands each build's step names and warnings, tagged with the build's name, to a
/// closure.
struct Lines<F>(F);

impl<F: FnMut(&str, &str) + Send> GroupSink for Lines<F> {
    fn event(&mut self, target: &str, ev: &ProgressEvent) {
        match ev {
            ProgressEvent::StepStarted { name, .. } => (self.0)(target, name),
            ProgressEvent::StepCached { .. } => (self.0)(target, "  CACHED"),
            ProgressEvent::Warning { message, .. } => {
                (self.0)(target, &format!("WARNING: {message}"))
            }
            _ => {}
        }
    }
}

/// Builds every context at once over the cache in `cache_dir` and pushes each as
/// `repository/NAME:latest`: the builds' results in the order of `contexts`, then a failed
/// result for each context that could not be set up (the others still build).
pub(crate) async fn build_many(
    cache_dir: &Path,
    repository: &str,
    contexts: &[String],
    log: impl FnMut(&str, &str) + Send,
) -> Vec<TargetResult> {
    let mut group = BuildGroup::new().keep_going(true);
    let mut refused = Vec::new();
    for context in contexts {
        let name = Path::new(context)
            .file_name()
            .map_or_else(|| context.clone(), |n| n.to_string_lossy().into_owned());
        let build = Build::new(context)
            .and_then(|b| b.tag(&format!("{repository}/{name}:latest")))
            .map(|b| b.cache_dir(cache_dir).output(ExportSpec::registry()));
        match build {
            Ok(b) => group = group.add(&name, b),
            Err(e) => refused.push(TargetResult {
                name,
                result: Err(e),
            }),
        }
    }
    let mut results = group.run(&mut Lines(log)).await;
    results.extend(refused);
    results
}
