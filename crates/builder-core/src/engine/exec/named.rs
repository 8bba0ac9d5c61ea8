//! Named contexts in a build (`--build-context`): the state a `FROM NAME` (or a stage
//! named `NAME`) becomes, and the layers a `COPY --from=NAME` or `RUN --mount from=NAME`
//! reads. An image context is resolved like a `FROM`; a directory (local, or a fetched
//! git repository or tarball) becomes one layer copied from it with its `.dockerignore`
//! applied, keyed by its content; an OCI layout's image is read from the layout.

use std::io::Read;

use super::*;
use crate::engine::named::{NamedContext, context_key};

impl Ctx {
    /// The named context `reference` (an image reference or a stage name) stands for, with
    /// its key. `scratch` and `context` never name one (as BuildKit's frontend).
    pub(super) fn named(&self, reference: &str) -> Option<(String, NamedContext)> {
        if self.named.is_empty()
            || reference.eq_ignore_ascii_case("scratch")
            || reference.eq_ignore_ascii_case("context")
        {
            return None;
        }
        let key = context_key(reference)?;
        self.named.get(&key).map(|c| (key, c.clone()))
    }
}

/// The state of a directory or OCI-layout context (an image context is resolved as a
/// `FROM` of its reference by the caller) for stage `idx` on `target`.
pub(super) async fn named_state(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    idx: usize,
    (key, nc): (&str, &NamedContext),
    target: Platform,
    build_target: &Platform,
) -> Result<StageState, Error> {
    if let NamedContext::OciLayout { dir, tag, digest } = nc {
        let (config, layers, manifest) =
            oci_layout(ctx, dir, tag, digest.as_deref(), &target).await?;
        let config = ImageConfig::from_slice(&config).map_err(|e| Error::BadImage {
            reference: format!("oci-layout://{}", dir.display()),
            reason: e.to_string(),
        })?;
        let env: Vec<String> = config
            .env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Ok(StageState {
            key: crate::graph::keys::image(&manifest),
            scope: plan.image_scope(idx, &env),
            config,
            layers,
            base_repo: None,
            cmd_set: false,
            platform: target,
            build_target: build_target.clone(),
        });
    }
    let Some(dir) = nc.dir() else {
        return Err(Error::invalid_step(format!(
            "named context {key}: an image context is resolved as its reference"
        )));
    };
    let mut state = scratch_state(plan, idx, target.clone(), build_target);
    let stats = ctx
        .cache
        .stat_cache(&format!("context:{}", dir.display()))?;
    let bc = crate::copy::BuildContext::open(dir, None, stats).map_err(|e| {
        crate::engine::invalid(
            "--build-context",
            &format!("{key}={}", dir.display()),
            e.to_string(),
        )
    })?;
    let df = dockerfile::parse("COPY . /\n")
        .map_err(|e| Error::invalid_step(format!("named context {key}: {e}")))?;
    let ins = &df.instructions[0];
    let id = ctx.step_id();
    let name = format!("[context {key}] load from client");
    ctx.emit(ProgressEvent::StepStarted {
        id,
        name: name.clone(),
        platform: None,
        location: None,
    });
    let t = Instant::now();
    let stage_span = plan.stages()[idx].span;
    let result = copy_step(
        ctx,
        plan,
        &target,
        &HashMap::new(),
        &mut state,
        ins,
        None,
        id,
        stage_span,
        &name,
        &Arc::new(bc),
    )
    .await;
    match result {
        Ok(()) => ctx.emit(ProgressEvent::StepDone {
            id,
            elapsed: t.elapsed(),
        }),
        Err(e) => {
            ctx.emit(ProgressEvent::StepFailed {
                id,
                error: e.to_string(),
            });
            return Err(e);
        }
    }
    // The directory is the base as BuildKit's frontend makes it: an empty image's config.
    state.config = scratch_state(plan, idx, target, build_target).config;
    Ok(state)
}

/// The layers and key a `COPY --from=NAME` or `RUN --mount from=NAME` reads from a
/// directory or OCI-layout context.
pub(super) fn named_layers<'a>(
    ctx: &'a Arc<Ctx>,
    plan: &'a BuildPlan,
    stage: usize,
    named: (&'a str, &'a NamedContext),
    platform: &'a Platform,
    build_target: &'a Platform,
) -> BoxFuture<'a, Result<(Vec<Layer>, CacheKey), Error>> {
    // Boxed: a directory context is copied by the COPY step that may have asked for it.
    async move {
        let s = named_state(ctx, plan, stage, named, platform.clone(), build_target).await?;
        Ok((s.layers, s.key))
    }
    .boxed()
}

/// `blobs/ALGORITHM/HEX` of a layout.
fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image of an OCI layout: its config bytes, its layers (their blobs copied into the
/// content store) and its manifest digest.
async fn oci_layout(
    ctx: &Arc<Ctx>,
    dir: &Path,
    tag: &str,
    digest: Option<&str>,
    platform: &Platform,
) -> Result<(Vec<u8>, Vec<Layer>, String), Error> {
    let what = format!("oci-layout://{}", dir.display());
    let bad = |reason: String| Error::BadImage {
        reference: what.clone(),
        reason,
    };
    let read_blob = |d: &str| -> Result<Vec<u8>, Error> {
        let digest: Digest = d.parse()?;
        let path = blob_path(dir, &digest.to_string());
        let bytes = std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let actual = format!(
            "sha256:{:x}",
            <sha2::Sha256 as sha2::Digest>::digest(&bytes)
        );
        if actual != d {
            return Err(bad(format!("blob {d} has digest {actual}")));
        }
        Ok(bytes)
    };
    let top = match digest {
        Some(d) => d.to_owned(),
        None => {
            let path = dir.join("index.json");
            let text = std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            let index: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| bad(format!("index.json: {e}")))?;
            let list = index["manifests"].as_array().cloned().unwrap_or_default();
            let tagged = list
                .iter()
                .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag));
            let chosen = match (tagged, list.as_slice()) {
                (Some(m), _) => m,
                (None, [only]) => only,
                _ => return Err(bad(format!("no image tagged {tag:?} in index.json"))),
            };
            chosen["digest"]
                .as_str()
                .ok_or_else(|| bad("index.json entry without a digest".into()))?
                .to_owned()
        }
    };
    let raw = registry_client::RawManifest::new(read_blob(&top)?.into(), None)?;
    let raw = match raw.parse()? {
        registry_client::Manifest::Image(_) => raw,
        registry_client::Manifest::Index(index) => {
            let d = platform
                .select(&index)
                .ok_or_else(|| bad(format!("no image for {platform} in {top}")))?
                .digest()
                .to_string();
            registry_client::RawManifest::new(read_blob(&d)?.into(), None)?
        }
    };
    let registry_client::Manifest::Image(manifest) = raw.parse()? else {
        return Err(bad(
            "the platform's manifest is not an image manifest".into()
        ));
    };
    let config = read_blob(manifest.config().digest().as_ref())?;
    let parsed = ImageConfig::from_slice(&config).map_err(|e| bad(e.to_string()))?;
    let diff_ids = parsed.diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            "the manifest's layers and the config's diff_ids differ".into(),
        ));
    }
    let mut layers: Vec<Layer> = Vec::new();
    for (d, diff) in manifest.layers().iter().zip(&diff_ids) {
        let digest: Digest = d.digest().to_string().parse()?;
        let (store, src) = (
            ctx.cache.content().clone(),
            blob_path(dir, &digest.to_string()),
        );
        let (dg, size) = (digest.clone(), d.size());
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            if let Ingest::Writer(mut w) = store.ingest(&dg, Some(size))? {
                w.restart()?;
                let mut f = std::fs::File::open(&src).map_err(|e| Error::BadImage {
                    reference: src.display().to_string(),
                    reason: e.to_string(),
                })?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).map_err(|e| Error::BadImage {
                        reference: src.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut w, &buf[..n]).map_err(|e| Error::BadImage {
                        reference: src.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                w.commit(&dg)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| join_error(&e))??;
        let diff_id: Digest = diff.parse()?;
        let chain = ChainId::child(layers.last().map(|l| &l.chain), &diff_id);
        layers.push(Layer {
            diff_id: Some(diff_id),
            chain,
            blob: Some(CacheBlobRef::new(
                digest,
                d.media_type().to_string(),
                d.size(),
            )),
            origin: None,
            dir_origin: None,
            key: None,
        });
    }
    Ok((config, layers, raw.digest().to_string()))
}

/// The stages to build: those reachable from the target, where a stage replaced by a named
/// context reads nothing (its base and `--from` stages are not built for it).
pub(super) fn stages_to_build(ctx: &Ctx, plan: &BuildPlan) -> Vec<usize> {
    let mut reachable: Vec<usize> = plan.reachable().to_vec();
    reachable.sort_unstable();
    if ctx.named.is_empty() {
        return reachable;
    }
    let stages = plan.stages();
    let mut needed = std::collections::BTreeSet::new();
    let mut todo = vec![plan.target()];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let s = &stages[i];
        if s.name.as_deref().and_then(|n| ctx.named(n)).is_some() {
            continue;
        }
        if let StageBase::Stage(j) = s.base {
            todo.push(j);
        }
        for d in &s.deps {
            if let DepSource::Stage(j) = d.source {
                todo.push(j);
            }
        }
    }
    reachable.retain(|i| needed.contains(i));
    reachable
}
