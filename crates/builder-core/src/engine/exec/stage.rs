//! One stage: its base (scratch, another stage, an image resolved and its layers
//! prefetched), its ONBUILD triggers, then its instructions in order.

use super::*;

/// What the ONBUILD trigger number `t` of the stage's base reads with `COPY --from`: the
/// stage the plan found for it when the base is a stage of this Dockerfile, else an image
/// (a base image's trigger cannot name a stage of this build, which its author never saw).
pub(crate) fn trigger_dep(
    plan: &BuildPlan,
    stage: &dockerfile::Stage,
    t: usize,
    ins: &Spanned<Instruction>,
) -> Result<Option<DepSource>, String> {
    let Instruction::Copy(c) = &ins.value else {
        return Ok(None);
    };
    let Some(from) = &c.from else {
        return Ok(None);
    };
    if let Some(d) = stage
        .deps
        .iter()
        .find(|d| d.kind == dockerfile::DepKind::Onbuild && d.instruction == t)
    {
        return Ok(Some(d.source.clone()));
    }
    if from.value.parse::<i64>().is_ok() || names_stage(plan, &from.value) {
        return Err(format!(
            "COPY --from={} in an ONBUILD trigger of a base image names a stage of this \
             Dockerfile: not supported (a trigger can read stages only when its base is a \
             stage of the same Dockerfile)",
            from.value
        ));
    }
    Ok(Some(DepSource::Image(from.value.clone())))
}

/// Whether `name` is the name of a stage of the plan (stage names are case-insensitive).
pub(crate) fn names_stage(plan: &BuildPlan, name: &str) -> bool {
    let name = name.to_lowercase();
    plan.stages()
        .iter()
        .any(|s| s.name.as_deref() == Some(name.as_str()))
}

pub(super) async fn build_stage(
    ctx: Arc<Ctx>,
    plan: Arc<BuildPlan>,
    platform: Platform,
    idx: usize,
    deps: HashMap<usize, StageFuture>,
) -> Result<StageState, Error> {
    let stage = &plan.stages()[idx];
    let labels = crate::engine::labels::StepLabels::new(stage, plan.stages().len());
    let plat_label = ctx
        .multi_platform
        .then(|| platform_spec(&platform).to_string());

    // FROM
    let id = ctx.step_id();
    let from_text = ctx.source_text(stage.span);
    ctx.emit(ProgressEvent::StepStarted {
        id,
        name: labels.from(&from_text),
        platform: plat_label.clone(),
        location: Some(ctx.location(stage.span)),
    });
    let t0 = Instant::now();
    // A named context replaces a stage of its name, or the image a FROM names.
    let overridden = stage.name.as_deref().and_then(|n| ctx.named(n));
    let named = overridden.clone().or_else(|| match &stage.base {
        StageBase::Image(r) => ctx.named(r),
        _ => None,
    });
    let named_base;
    let base = match &named {
        Some((_, crate::engine::named::NamedContext::Image(r))) => {
            // `docker-image://scratch` is the empty image (BuildKit's EmptyImageName).
            named_base = if r == "scratch" {
                StageBase::Scratch
            } else {
                StageBase::Image(r.clone())
            };
            &named_base
        }
        _ => &stage.base,
    };
    let mut state = match (&named, base) {
        (Some((key, nc)), _) if !matches!(nc, crate::engine::named::NamedContext::Image(_)) => {
            let target = stage_platform(&plan, stage, &platform)
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            named::named_state(&ctx, &plan, idx, (key, nc), target, &platform)
                .await
                .map_err(|e| e.at_step(&ctx.location(stage.span), &from_text))?
        }
        (_, StageBase::Scratch) => {
            let target = stage_platform(&plan, stage, &platform)
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            scratch_state(&plan, idx, target, &platform)
        }
        (_, StageBase::Image(r)) => {
            let target = stage_platform(&plan, stage, &platform)
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            let base = resolve_image(&ctx, r, &target, id)
                .await
                .map_err(|e| e.at_step(&ctx.location(stage.span), &from_text))?;
            note_image(&ctx, &platform, r, &base, &target);
            if let Some(rec) = &ctx.recorder {
                rec.step(
                    &platform.to_string(),
                    idx,
                    0,
                    crate::attest::provenance::StepRecord {
                        op: serde_json::json!({"source": {
                            "identifier": format!("docker-image://{}@{}", r.split('@').next().unwrap_or(r), base.resolved_digest),
                        }}),
                        platform: Some((target.os().to_owned(), target.architecture().to_owned())),
                        lines: (stage.span.start_line, stage.span.end_line),
                        extra_inputs: Vec::new(),
                        chain: base.layers.last().map(|l| l.chain.to_string()),
                        key: crate::graph::keys::image(&base.manifest_digest).as_str().to_owned(),
                    },
                );
            }
            let config = ImageConfig::from_slice(&base.config).map_err(|e| Error::BadImage {
                reference: r.clone(),
                reason: e.to_string(),
            })?;
            let env: Vec<String> = config
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            StageState {
                key: crate::graph::keys::image(&base.manifest_digest),
                scope: plan.image_scope(idx, &env),
                config,
                layers: base.layers.clone(),
                base_repo: Some(base.repo.clone()),
                cmd_set: false,
                platform: target,
                build_target: platform.clone(),
            }
        }
        (_, StageBase::Stage(j)) => {
            let parent = wait_stage(&deps, *j).await?;
            let mut s = (*parent).clone();
            s.scope = plan.stage_scope(idx, &parent.scope);
            s.cmd_set = false;
            s
        }
        _ => {
            return Err(step_failed(
                &ctx,
                stage.span,
                &from_text,
                "unsupported stage base",
            ));
        }
    };
    let missing = matches!(base, StageBase::Image(_))
        && !ctx.lazy_base(&state.layers)
        && state.layers.iter().any(|l| {
            l.blob
                .as_ref()
                .is_some_and(|b| !ctx.cache.content().contains(&b.digest))
        });
    if missing {
        // The base's blobs are fetched in the background, under this FROM step, as
        // BuildKit shows them: the first step that needs the files waits for them (one
        // pull per blob), and a build whose steps are all cached does not wait. A failure
        // here is not reported: the step that needs the blob reports it.
        // The pull locks are taken here, before any step of this stage can ask.
        let mut locked = Vec::new();
        for l in &state.layers {
            if let Some(b) = &l.blob {
                ctx.lease
                    .hold(layer_cache::EntryRef::Blob(b.digest.clone()))?;
                locked.push((l.clone(), b.clone(), ctx.pull_lock(b).await));
            }
        }
        let me = ctx.clone();
        let task = tokio::spawn(async move {
            for (layer, blob, guard) in locked {
                let pulled = me.pull_locked(&layer, &blob, id).await;
                drop(guard);
                if pulled.is_err() {
                    break;
                }
            }
            me.emit(ProgressEvent::StepDone {
                id,
                elapsed: t0.elapsed(),
            });
        });
        ctx.prefetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, t0, task));
    } else {
        ctx.emit(ProgressEvent::StepDone {
            id,
            elapsed: t0.elapsed(),
        });
    }

    ctx.note_step_key(&platform, idx, None, &state.key);

    // A stage replaced by a named context is that context: its instructions do not run.
    if overridden.is_some() {
        return Ok(state);
    }

    // ONBUILD triggers of the base run first, then are cleared.
    let triggers = state.config.onbuild();
    if !triggers.is_empty() {
        state.config.clear_onbuild();
        for (t, trigger) in triggers.into_iter().enumerate() {
            let df: Dockerfile = dockerfile::parse(&trigger).map_err(|e| {
                step_failed(
                    &ctx,
                    stage.span,
                    &format!("ONBUILD {trigger}"),
                    e.to_string(),
                )
            })?;
            for ins in &df.instructions {
                let step = state.scope.step(ins).map_err(|source| Error::Stages {
                    file: ctx.dockerfile_name.clone(),
                    source: source.into(),
                })?;
                let text = format!("ONBUILD {trigger}");
                let dep = trigger_dep(&plan, stage, t, &step.instruction)
                    .map_err(|reason| step_failed(&ctx, stage.span, &text, reason))?;
                let sid = ctx.step_id();
                ctx.emit(ProgressEvent::StepStarted {
                    id: sid,
                    name: labels.unnumbered(&text),
                    platform: plat_label.clone(),
                    location: Some(ctx.location(stage.span)),
                });
                let t = Instant::now();
                dispatch(
                    &ctx,
                    &plan,
                    &deps,
                    &mut state,
                    &step.instruction,
                    dep,
                    sid,
                    stage.span,
                    &text,
                )
                .await?;
                ctx.emit(ProgressEvent::StepDone {
                    id: sid,
                    elapsed: t.elapsed(),
                });
            }
        }
    }

    for (i, ins) in stage.instructions.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let text = ctx.source_text(ins.span);
        let id = ctx.step_id();
        let step = state.scope.step(ins).map_err(|source| Error::Stages {
            file: ctx.dockerfile_name.clone(),
            source: source.into(),
        })?;
        for w in step
            .warnings
            .iter()
            .filter(|w| ctx.checks.enabled_name(w.rule))
        {
            let location = w.span.map(|s| ctx.location(s));
            ctx.emit(ProgressEvent::Warning {
                message: format!("{}: {}", w.rule, w.message),
                location: location.clone(),
            });
            if ctx.checks.error {
                return Err(Error::LintViolations {
                    location: location.unwrap_or_default(),
                    rules: vec![w.rule.to_owned()],
                });
            }
        }
        let dep = stage
            .deps
            .iter()
            .find(|d| d.instruction == i && d.kind != dockerfile::DepKind::Onbuild)
            .map(|d| d.source.clone());
        ctx.emit(ProgressEvent::StepStarted {
            id,
            name: labels.instruction(i, &text),
            platform: plat_label.clone(),
            location: Some(ctx.location(ins.span)),
        });
        let t = Instant::now();
        let before = ctx
            .recorder
            .as_ref()
            .and_then(|_| provenance_op(&state, &step.instruction.value, dep.as_ref()));
        match dispatch(
            &ctx,
            &plan,
            &deps,
            &mut state,
            &step.instruction,
            dep,
            id,
            ins.span,
            &text,
        )
        .await
        {
            Ok(()) => {
                ctx.note_step_key(&platform, idx, Some(i), &state.key);
                if let (Some(rec), Some((op, extra, exec))) = (&ctx.recorder, before) {
                    rec.step(
                        &platform.to_string(),
                        idx,
                        i + 1,
                        crate::attest::provenance::StepRecord {
                            op,
                            platform: exec.then(|| {
                                (
                                    state.platform.os().to_owned(),
                                    state.platform.architecture().to_owned(),
                                )
                            }),
                            lines: (ins.span.start_line, ins.span.end_line),
                            extra_inputs: extra,
                            chain: state.layers.last().map(|l| l.chain.to_string()),
                            key: state.key.as_str().to_owned(),
                        },
                    );
                }
                ctx.emit(ProgressEvent::StepDone {
                    id,
                    elapsed: t.elapsed(),
                })
            }
            Err(e) => {
                ctx.emit(ProgressEvent::StepFailed {
                    id,
                    error: e.to_string(),
                });
                return Err(e);
            }
        }
    }
    Ok(state)
}

/// The state of `FROM scratch` for stage `idx` on `target`.
pub(super) fn scratch_state(
    plan: &BuildPlan,
    idx: usize,
    target: Platform,
    build_target: &Platform,
) -> StageState {
    let config = ImageConfig::scratch(target.os(), target.architecture(), oci_variant(&target));
    StageState {
        key: crate::graph::keys::scratch(&target),
        scope: plan.image_scope(
            idx,
            &config
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        ),
        config,
        layers: Vec::new(),
        base_repo: None,
        cmd_set: false,
        platform: target,
        build_target: build_target.clone(),
    }
}

pub(crate) fn stage_platform(
    plan: &BuildPlan,
    stage: &dockerfile::Stage,
    platform: &Platform,
) -> Result<Platform, Error> {
    let _ = plan;
    match &stage.platform {
        Some(p) if !p.is_empty() => p.parse().map_err(|e: registry_client::Error| {
            crate::engine::invalid("FROM --platform", p, e.to_string())
        }),
        _ => Ok(platform.clone()),
    }
}

pub(super) async fn resolve_image(
    ctx: &Ctx,
    r: &str,
    platform: &Platform,
    step: StepId,
) -> Result<Arc<BaseImage>, Error> {
    let mut memo = ctx.images.lock().await;
    let memo_key = (r.to_owned(), platform.to_string());
    if let Some(b) = memo.get(&memo_key) {
        return Ok(b.clone());
    }
    let reference: Reference = r.parse()?;
    let _timer = ctx.timer(step, Phase::Resolve, r);
    // A digest-pinned base resolved before needs no registry: its manifests are kept in
    // the content store, like its config below.
    let (platform_manifest, resolved_digest) = match pinned_from_store(ctx, &reference, platform) {
        Some(m) => (
            m,
            reference
                .digest()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        None => {
            let resolved = ctx.client.resolve_platform(&reference, platform).await?;
            if reference.digest().is_some() {
                if let Some(index) = &resolved.index {
                    ctx.cache.content().put_bytes(index.bytes())?;
                }
                ctx.cache.content().put_bytes(resolved.manifest.bytes())?;
            }
            let top = match &resolved.index {
                Some(ix) => ix.digest().to_string(),
                None => resolved.manifest.digest().to_string(),
            };
            (resolved.manifest, top)
        }
    };
    let repo = reference.repository().clone();
    let manifest = match platform_manifest.parse()? {
        registry_client::Manifest::Image(m) => m,
        _ => {
            return Err(Error::BadImage {
                reference: r.to_owned(),
                reason: "the platform's manifest is not an image manifest".into(),
            });
        }
    };
    // The config is small: keep it in the content store for offline rebuilds of pinned bases.
    let cfg_desc = manifest.config();
    let cfg_digest: Digest = cfg_desc.digest().to_string().parse()?;
    let config = if ctx.cache.content().contains(&cfg_digest) {
        std::fs::read(ctx.cache.content().path(&cfg_digest)).map_err(|e| {
            Error::from(layer_cache::Error::Io {
                path: ctx.cache.content().path(&cfg_digest),
                source: e,
            })
        })?
    } else {
        let bytes = ctx.client.fetch_blob(&repo, cfg_desc).await?.to_vec();
        ctx.cache.content().put_bytes(&bytes)?;
        bytes
    };
    let parsed = ImageConfig::from_slice(&config).map_err(|e| Error::BadImage {
        reference: r.to_owned(),
        reason: e.to_string(),
    })?;
    let diff_ids = parsed.diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::BadImage {
            reference: r.to_owned(),
            reason: format!(
                "the manifest lists {} layers but the config {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers: Vec<Layer> = Vec::new();
    for (d, diff) in manifest.layers().iter().zip(&diff_ids) {
        let mt = d.media_type().to_string();
        if !(mt.contains("tar") || mt.contains("layer")) {
            return Err(Error::BadImage {
                reference: r.to_owned(),
                reason: format!("layer media type {mt} is not supported"),
            });
        }
        let diff_id: Digest = diff.parse()?;
        let chain = ChainId::child(layers.last().map(|l| &l.chain), &diff_id);
        layers.push(Layer {
            diff_id: Some(diff_id),
            chain,
            blob: Some(CacheBlobRef::new(
                d.digest().to_string().parse()?,
                mt,
                d.size(),
            )),
            origin: Some(repo.clone()),
            dir_origin: None,
            key: None,
        });
    }
    let base = Arc::new(BaseImage {
        repo,
        resolved_digest,
        manifest_digest: platform_manifest.digest().to_string(),
        config,
        layers,
    });
    memo.insert(memo_key, base.clone());
    Ok(base)
}

/// The image manifest for `platform` of a digest-pinned reference, from the content store
/// where an earlier build kept it; `None` when it is not pinned or anything is missing.
pub(super) fn pinned_from_store(
    ctx: &Ctx,
    reference: &Reference,
    platform: &Platform,
) -> Option<registry_client::RawManifest> {
    let read = |d: &str| {
        let digest: Digest = d.parse().ok()?;
        let bytes = std::fs::read(ctx.cache.content().path(&digest)).ok()?;
        let m = registry_client::RawManifest::new(bytes.into(), None).ok()?;
        (m.digest().as_str() == d).then_some(m)
    };
    let top = read(reference.digest()?.as_str())?;
    match top.parse().ok()? {
        registry_client::Manifest::Image(_) => Some(top),
        registry_client::Manifest::Index(index) => {
            let m = read(platform.select(&index)?.digest().as_ref())?;
            (m.kind() == registry_client::ManifestKind::Image).then_some(m)
        }
    }
}

/// The stage or image each `RUN --mount` names with `from` (`None` for the others): its
/// layers and its cache key.
pub(super) async fn mount_froms(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    platform: &Platform,
    deps: &HashMap<usize, StageFuture>,
    state: &StageState,
    r: &dockerfile::RunInstruction,
    id: StepId,
) -> Result<Vec<Option<(Vec<Layer>, CacheKey)>>, Error> {
    let stage_deps = &plan.stages()[state.scope.stage()].deps;
    let mut out = Vec::new();
    for m in &r.mounts {
        let Some(from) = crate::engine::mounts::mount_from(m) else {
            out.push(None);
            continue;
        };
        let source = stage_deps
            .iter()
            .find(|d| {
                matches!(
                    d.kind,
                    dockerfile::DepKind::Mount | dockerfile::DepKind::Onbuild
                ) && d.from == from
            })
            .map(|d| d.source.clone());
        let source = match source {
            Some(s) => s,
            // Every mount of the Dockerfile's own RUNs naming a stage is a dep; one that is
            // not comes from an ONBUILD trigger of a base image.
            None if names_stage(plan, from) => {
                return Err(Error::invalid_step(format!(
                    "RUN --mount from={from} in an ONBUILD trigger of a base image names a \
                     stage of this Dockerfile: not supported (a trigger can read stages only \
                     when its base is a stage of the same Dockerfile)"
                )));
            }
            None => DepSource::Image(from.to_owned()),
        };
        out.push(Some(match source {
            DepSource::Stage(j) => {
                let s = wait_stage(deps, j).await?;
                (s.layers.clone(), s.key.clone())
            }
            DepSource::Image(r) => match ctx.named(&r) {
                Some((key, nc)) if !matches!(nc, crate::engine::NamedContext::Image(_)) => {
                    named::named_layers(
                        ctx,
                        plan,
                        state.scope.stage(),
                        (&key, &nc),
                        platform,
                        &state.build_target,
                    )
                    .await?
                }
                named => {
                    let r = match named {
                        Some((_, crate::engine::NamedContext::Image(image))) => image,
                        _ => r,
                    };
                    let b = resolve_image(ctx, &r, platform, id).await?;
                    note_image(ctx, &state.build_target, &r, &b, platform);
                    let key = crate::graph::keys::image(&b.manifest_digest);
                    (b.layers.clone(), key)
                }
            },
            _ => {
                return Err(Error::invalid_step(format!(
                    "mount from {from}: unsupported source"
                )));
            }
        }));
    }
    Ok(out)
}
