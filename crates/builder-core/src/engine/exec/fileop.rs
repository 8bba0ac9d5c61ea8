//! The file operations `COPY` and `ADD`: their sources (the context, a stage or an
//! image) and the layer they write.

use super::*;

/// What a COPY reads from, before it is materialised.
pub(super) enum CopyFrom {
    Context,
    Layers { layers: Vec<Layer>, key: CacheKey },
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_step(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    platform: &Platform,
    deps: &HashMap<usize, StageFuture>,
    state: &mut StageState,
    ins: &Spanned<Instruction>,
    dep: Option<DepSource>,
    id: StepId,
    span: dockerfile::Span,
    text: &str,
    context: &Arc<crate::copy::BuildContext>,
) -> Result<(), Error> {
    // `ADD <git URL>`: a COPY from the fetched checkout.
    let git = add_git::git_add(ctx, ins)
        .await
        .map_err(|e| e.at_step(&ctx.location(span), text))?;
    let (ins, context) = match &git {
        Some((copy, checkout, _)) => (copy, checkout),
        None => (ins, context),
    };
    let workdir = fs_workdir(state);
    let fail = |e: crate::copy::CopyError| {
        let reason = e.to_string();
        Error::unlocated(StepError::Copy(reason.as_str().into()), reason)
            .at_step(&ctx.location(span), text)
    };
    let (params, keyword, flags, shown) = match &ins.value {
        Instruction::Copy(c) => {
            let mut flags = Vec::new();
            if let Some(v) = &c.chown {
                flags.push(format!("--chown={}", v.value));
            }
            if let Some(v) = &c.chmod {
                flags.push(format!("--chmod={}", v.value));
            }
            if c.parents {
                flags.push("--parents".to_owned());
            }
            (
                crate::copy::CopyParams::from_copy(c, &workdir).map_err(fail)?,
                "COPY",
                flags,
                source_names(&c.sources, &c.dest.value),
            )
        }
        Instruction::Add(a) => {
            let mut flags = Vec::new();
            if let Some(v) = &a.chown {
                flags.push(format!("--chown={}", v.value));
            }
            if let Some(v) = &a.chmod {
                flags.push(format!("--chmod={}", v.value));
            }
            (
                crate::copy::CopyParams::from_add(a, &workdir).map_err(fail)?,
                "ADD",
                flags,
                source_names(&a.sources, &a.dest.value),
            )
        }
        _ => unreachable!("copy_step is only called for COPY and ADD"),
    };
    // The history of an `ADD <git URL>` names the ADD, as BuildKit's.
    let (keyword, shown) = match &git {
        Some((_, _, fetched)) => ("ADD", (vec![fetched.url.clone()], shown.1)),
        None => (keyword, shown),
    };
    let from = match dep {
        Some(DepSource::Stage(j)) => {
            let s = wait_stage(deps, j).await?;
            CopyFrom::Layers {
                layers: s.layers.clone(),
                key: s.key.clone(),
            }
        }
        Some(DepSource::Image(r))
            if ctx.named(&r).is_some_and(|(_, c)| {
                c.dir().is_some() || matches!(c, crate::engine::NamedContext::OciLayout { .. })
            }) =>
        {
            let (key, nc) = ctx.named(&r).expect("just matched");
            let (layers, key) = named::named_layers(
                ctx,
                plan,
                state.scope.stage(),
                (&key, &nc),
                platform,
                &state.build_target,
            )
            .await
            .map_err(|e| e.at_step(&ctx.location(span), text))?;
            CopyFrom::Layers { layers, key }
        }
        Some(DepSource::Image(r)) => {
            let r = match ctx.named(&r) {
                Some((_, crate::engine::NamedContext::Image(image))) => image,
                _ => r,
            };
            let b = resolve_image(ctx, &r, platform, id)
                .await
                .map_err(|e| e.at_step(&ctx.location(span), text))?;
            note_image(ctx, &state.build_target, &r, &b, platform);
            CopyFrom::Layers {
                layers: b.layers.clone(),
                key: crate::graph::keys::image(&b.manifest_digest),
            }
        }
        _ => CopyFrom::Context,
    };
    let params = Arc::new(params);
    let inputs = match &from {
        CopyFrom::Context => {
            let (ctx2, p2, context2) = (ctx.clone(), params.clone(), context.clone());
            tokio::task::spawn_blocking(move || {
                let _timer = ctx2.timer(id, Phase::Context, "");
                crate::copy::cache_inputs(&p2, &crate::copy::CopySource::Context(&context2))
            })
            .await
            .map_err(|e| join_error(&e))?
            .map_err(fail)?
        }
        CopyFrom::Layers { key, .. } => {
            let empty = LayeredView::default();
            crate::copy::cache_inputs(
                &params,
                &crate::copy::CopySource::Layers { view: &empty, key },
            )
            .map_err(fail)?
        }
    };
    if let Some(rec) = &ctx.recorder {
        let downloads = params
            .downloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (url, d) in downloads.iter() {
            rec.url(&state.build_target.to_string(), url, &d.digest);
        }
    }
    let key = crate::graph::keys::copy(&state.key, &inputs);
    let (sources, dest) = shown;
    let created_by = history::copy(keyword, &flags, &sources, &dest);
    let link = params.link;
    let context = context.clone();
    cached_or_run(ctx, state, key, id, created_by, |ctx, state, dir| {
        let ctx = ctx.clone();
        let parent = state.layers.clone();
        let out = dir.join("diff");
        async move {
            let dest_lowers = if link {
                Vec::new()
            } else {
                ctx.materialize(&parent, id).await?
            };
            let src_lowers = match &from {
                CopyFrom::Layers { layers, key } => {
                    Some((ctx.materialize(layers, id).await?, key.clone()))
                }
                CopyFrom::Context => None,
            };
            let ctx2 = ctx.clone();
            tokio::task::spawn_blocking(move || {
                let _timer = ctx2.timer(id, Phase::Copy, "");
                let dest_view = (!link).then(|| LayeredView::new(dest_lowers));
                let src_view = src_lowers.map(|(lowers, key)| (LayeredView::new(lowers), key));
                let source = match &src_view {
                    Some((view, key)) => crate::copy::CopySource::Layers { view, key },
                    None => crate::copy::CopySource::Context(&context),
                };
                crate::copy::execute(&params, &source, dest_view.as_ref(), &out)
                    .map_err(|e| Error::invalid_step(e.to_string()))?;
                // What the copy rewrote unchanged is not part of the layer (BuildKit's differ).
                match &dest_view {
                    Some(v) => sandbox::prune_unchanged(v, &out)
                        .map_err(|e| Error::invalid_step(e.to_string())),
                    None => Ok(()),
                }
            })
            .await
            .map_err(|e| join_error(&e))?
        }
    })
    .await
    .map_err(|e| locate(ctx, span, text, e))
}

pub(super) fn source_label(s: &dockerfile::Source) -> String {
    match s {
        dockerfile::Source::Path(p) => p.value.clone(),
        dockerfile::Source::Heredoc(h) => format!("<<{}", h.name),
    }
}

pub(super) fn source_names(sources: &[dockerfile::Source], dest: &str) -> (Vec<String>, String) {
    let names = sources
        .iter()
        .map(|s| match s {
            dockerfile::Source::Path(p) => p.value.clone(),
            dockerfile::Source::Heredoc(h) => format!("<<{}", h.name),
        })
        .collect();
    (names, dest.to_owned())
}
