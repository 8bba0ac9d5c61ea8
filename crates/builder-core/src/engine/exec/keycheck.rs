//! Debug builds: after the stages are solved, the build's graph is derived again (from the
//! images the build resolved and the same context) and every step's filesystem key must be
//! the graph's. The executor and the graph frontend share `graph::keys`; this check catches
//! a walk of one that drifts from the other's (a step's inputs taken from another state, an
//! instruction one of them skips).

use futures_util::future::BoxFuture;

use super::*;
use crate::graph::{GraphBuilder, ImageResolver, ResolvedImage, StepKey};

impl Ctx {
    /// Notes the filesystem key of stage `idx` (built for `platform`) after its instruction
    /// `ins` (`None`: its base).
    pub(super) fn note_step_key(
        &self,
        platform: &Platform,
        idx: usize,
        ins: Option<usize>,
        key: &CacheKey,
    ) {
        if cfg!(debug_assertions) {
            self.step_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((platform.to_string(), idx, ins, key.clone()));
        }
    }
}

/// Answers from the images the build resolved (nothing is fetched again).
struct Resolved<'a>(&'a Ctx);

impl ImageResolver for Resolved<'_> {
    fn resolve<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
    ) -> BoxFuture<'a, Result<ResolvedImage, Error>> {
        async move {
            let memo = self.0.images.lock().await;
            let base = memo
                .get(&(reference.to_owned(), platform.to_string()))
                .ok_or_else(|| Error::invalid_step(format!("{reference} was not resolved")))?;
            let config = ImageConfig::from_slice(&base.config).map_err(|e| Error::BadImage {
                reference: reference.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(ResolvedImage {
                manifest_digest: base.manifest_digest.clone(),
                config,
            })
        }
        .boxed()
    }
}

/// Whether the graph can be derived again without side effects and must match: not with
/// `--no-cache` or `--no-cache-filter` (steps run again get keys of their own), not with
/// named contexts (`--build-context`: the graph frontend does not take them yet), not with
/// `ADD` of URLs or
/// git repositories (they would be downloaded again).
fn checkable(ctx: &Ctx, plans: &[Arc<BuildPlan>]) -> bool {
    let remote = |s: &dockerfile::Source| match s {
        dockerfile::Source::Path(p) => p.value.contains("://") || p.value.starts_with("git@"),
        dockerfile::Source::Heredoc(_) => false,
    };
    !ctx.no_cache
        && ctx.no_cache_stages.is_empty()
        && ctx.named.is_empty()
        && !plans.iter().any(|plan| {
            plan.stages().iter().any(|st| {
                st.instructions.iter().any(|ins| match &ins.value {
                    Instruction::Add(a) => a.sources.iter().any(remote),
                    _ => false,
                })
            })
        })
}

/// Derives the graph of `plans` and compares its step keys with the ones the build used;
/// an error names the first step whose keys differ. A graph that cannot be derived (an
/// image the build did not resolve) is not compared.
pub(super) async fn check(
    ctx: &Arc<Ctx>,
    plans: &[Arc<BuildPlan>],
    platforms: &[Platform],
) -> Result<(), Error> {
    if !checkable(ctx, plans) {
        return Ok(());
    }
    let resolver = Resolved(ctx);
    let mut builder = GraphBuilder::new(
        &resolver,
        ctx.copy_context.clone(),
        ctx.key_opts.clone(),
        &ctx.dockerfile_name,
        &ctx.text,
    );
    for (plan, platform) in plans.iter().zip(platforms) {
        if builder.add_plan(plan, platform).await.is_err() {
            return Ok(());
        }
    }
    let graph: HashMap<(&str, usize, Option<usize>), &CacheKey> = builder
        .steps()
        .iter()
        .map(|(p, s, i, k)| ((p.as_str(), *s, *i), k))
        .collect();
    let used: Vec<StepKey> = ctx
        .step_keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (p, s, i, key) in &used {
        let want = graph.get(&(p.as_str(), *s, *i)).copied();
        if want != Some(key) {
            return Err(Error::invalid_step(format!(
                "internal: stage {s} ({p}) after {} has key {key} in the build but {} in its \
                 graph",
                i.map_or_else(|| "its base".to_owned(), |i| format!("instruction {i}")),
                want.map_or_else(|| "none".to_owned(), ToString::to_string)
            )));
        }
    }
    Ok(())
}
