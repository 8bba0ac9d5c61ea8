//! One instruction of a stage: metadata changes applied to the configuration, and the
//! steps that make a layer looked up in the cache by key before they run.

use super::*;

pub(super) fn step_failed(
    ctx: &Ctx,
    span: dockerfile::Span,
    instruction: &str,
    reason: impl Into<String>,
) -> Error {
    Error::invalid_step(reason).at_step(&ctx.location(span), instruction)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn dispatch(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    deps: &HashMap<usize, StageFuture>,
    state: &mut StageState,
    ins: &Spanned<Instruction>,
    dep: Option<DepSource>,
    id: StepId,
    span: dockerfile::Span,
    text: &str,
) -> Result<(), Error> {
    // Metadata entries get their time when the image is assembled (see `assemble`).
    let meta = |state: &mut StageState, created_by: String| {
        state.config.push_history(&HistoryEntry {
            created: String::new(),
            created_by,
            empty_layer: true,
        });
    };
    match &ins.value {
        Instruction::Env(kvs) => {
            let mut parts = Vec::new();
            for kv in kvs {
                state.config.set_env(&kv.key.value, &kv.value.value);
                parts.push(format!("{}={}", kv.key.value, kv.value.value));
            }
            meta(state, format!("ENV {}", parts.join(" ")));
        }
        Instruction::Label(kvs) => {
            let mut parts = Vec::new();
            for kv in kvs {
                state.config.set_label(&kv.key.value, &kv.value.value);
                parts.push(format!("{}={}", kv.key.value, kv.value.value));
            }
            meta(state, format!("LABEL {}", parts.join(" ")));
        }
        Instruction::Maintainer(m) => {
            state.config.set_author(&m.value);
            meta(state, format!("MAINTAINER {}", m.value));
        }
        Instruction::Arg(defs) => {
            let parts: Vec<String> = defs
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={}", d.name.value, v.value),
                    None => d.name.value.clone(),
                })
                .collect();
            meta(state, format!("ARG {}", parts.join(" ")));
        }
        Instruction::User(u) => {
            state.config.set_user(&u.value);
            meta(state, format!("USER {}", u.value));
        }
        Instruction::Expose(ports) => {
            let mut list = Vec::new();
            for p in ports {
                for port in expand_ports(&p.value).map_err(|r| step_failed(ctx, span, text, r))? {
                    state.config.add_exposed_port(&port);
                    list.push(port);
                }
            }
            meta(state, format!("EXPOSE {}", history::go_plain_list(&list)));
        }
        Instruction::Volume(vols) => {
            let list: Vec<String> = vols.iter().map(|v| v.value.clone()).collect();
            if list.is_empty() {
                return Err(step_failed(
                    ctx,
                    span,
                    text,
                    "VOLUME requires at least one argument",
                ));
            }
            for v in &list {
                if v.trim().is_empty() {
                    return Err(step_failed(
                        ctx,
                        span,
                        text,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                state.config.add_volume(v);
            }
            meta(state, format!("VOLUME {}", history::go_plain_list(&list)));
        }
        Instruction::StopSignal(s) => {
            validate_signal(&s.value).map_err(|r| step_failed(ctx, span, text, r))?;
            state.config.set_stop_signal(&s.value);
            meta(state, format!("STOPSIGNAL {}", s.value));
        }
        Instruction::Shell(words) => {
            let list: Vec<String> = words.iter().map(|w| w.value.clone()).collect();
            state.config.set_shell(list.clone());
            meta(state, format!("SHELL {}", history::go_plain_list(&list)));
        }
        Instruction::Cmd(c) => {
            let argv = command_argv(&state.config, c);
            state.config.set_cmd(argv.clone());
            meta(state, format!("CMD {}", history::go_quoted_list(&argv)));
        }
        Instruction::Entrypoint(c) => {
            let argv = command_argv(&state.config, c);
            state.config.set_entrypoint(argv.clone());
            // An ENTRYPOINT clears an inherited CMD, unless this stage set one.
            if !state.cmd_set {
                state.config.clear_cmd();
            }
            meta(
                state,
                format!("ENTRYPOINT {}", history::go_quoted_list(&argv)),
            );
        }
        Instruction::Healthcheck(h) => {
            let hc = healthcheck(&state.config, h);
            state.config.set_healthcheck(&hc);
            meta(state, format!("HEALTHCHECK {}", history::healthcheck(&hc)));
        }
        Instruction::Onbuild(o) => {
            state.config.add_onbuild(&o.expression);
        }
        Instruction::Workdir(w) => {
            let written = join_workdir(state.config.working_dir().as_deref(), &w.value);
            state.config.set_working_dir(&written);
            let created_by = format!("WORKDIR {written}");
            let dir = clean_path(&written);
            let user = state.config.user().unwrap_or_default();
            let key = crate::graph::keys::workdir(&state.key, &dir, &user);
            if dir == "/" {
                meta(state, created_by);
                return Ok(());
            }
            cached_or_run(ctx, state, key, id, created_by, |ctx, state, out| {
                let ctx = ctx.clone();
                let layers = state.layers.clone();
                let dir = dir.clone();
                let out = out.join("diff");
                async move {
                    let lowers = ctx.materialize(&layers, id).await?;
                    let owner = resolve_owner(&lowers, &user)?;
                    tokio::task::spawn_blocking(move || {
                        crate::engine::workdir::make_workdir(
                            &LayeredView::new(lowers),
                            &dir,
                            owner,
                            &out,
                        )
                        .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| join_error(&e))?
                    .map_err(Error::invalid_step)
                }
            })
            .await
            .map_err(|e| locate(ctx, span, text, e))?;
        }
        Instruction::Run(r) => {
            let stage_platform = state.platform.clone();
            run_step(ctx, plan, &stage_platform, deps, state, r, id, span, text).await?;
        }
        Instruction::Copy(_) | Instruction::Add(_) => {
            let stage_platform = state.platform.clone();
            let context = ctx.copy_context.clone();
            copy_step(
                ctx,
                plan,
                &stage_platform,
                deps,
                state,
                ins,
                dep,
                id,
                span,
                text,
                &context,
            )
            .await?;
        }
        Instruction::From(_) => return Err(step_failed(ctx, span, text, "FROM inside a stage")),
        other => {
            return Err(step_failed(
                ctx,
                span,
                text,
                format!("{} is not supported yet", other.keyword()),
            ));
        }
    }
    if matches!(ins.value, Instruction::Cmd(_)) {
        state.cmd_set = true;
    }
    Ok(())
}

/// The working directory as a path in the stage's filesystem: Windows images record it
/// with backslashes (`\\`, `C:\\app`), file operations use forward slashes.
pub(super) fn fs_workdir(state: &StageState) -> String {
    workdir_path(&state.config, &state.platform)
}

/// [`fs_workdir`] of a config for a platform.
pub(crate) fn workdir_path(config: &ImageConfig, platform: &Platform) -> String {
    let wd = config.working_dir().unwrap_or_else(|| "/".into());
    if platform.os() != "windows" {
        return wd;
    }
    let wd = wd.replace('\\', "/");
    let wd = match wd.split_once(':') {
        Some((drive, rest)) if drive.len() == 1 => rest.to_owned(),
        _ => wd,
    };
    if wd.starts_with('/') {
        wd
    } else {
        format!("/{wd}")
    }
}

/// Attaches the instruction's location to an error raised inside a step.
pub(super) fn locate(ctx: &Ctx, span: dockerfile::Span, text: &str, e: Error) -> Error {
    e.at_step(&ctx.location(span), text)
}

pub(super) async fn cached_or_run<F, Fut>(
    ctx: &Arc<Ctx>,
    state: &mut StageState,
    key: CacheKey,
    id: StepId,
    created_by: String,
    work: F,
) -> Result<(), Error>
where
    F: FnOnce(&Arc<Ctx>, &StageState, &Path) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let _guard = ctx.key_lock(&key).await;
    let (mut origin, mut dir_origin, mut source) = (None, None, None);
    let filtered = ctx.no_cache || ctx.no_cache_stages.contains(&state.scope.stage());
    let mut key = key;
    let hit = if filtered {
        None
    } else {
        cache_source::lookup(ctx, &key)?
    };
    let rec = match hit.map(|hit| {
        (origin, dir_origin, source) = (hit.repo, hit.dir, hit.source);
        hit.rec
    }) {
        Some(rec) => {
            ctx.emit(ProgressEvent::StepCached { id });
            if let Some(source) = source {
                ctx.emit(ProgressEvent::StepCachedRemote { id, source });
            }
            ctx.cached_steps.fetch_add(1, Ordering::Relaxed);
            rec
        }
        None => {
            if ctx.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let tmp = ctx.tempdir("step-")?;
            let diff = tmp.path().join("diff");
            std::fs::create_dir(&diff).map_err(|e| {
                Error::from(layer_cache::Error::Io {
                    path: diff.clone(),
                    source: e,
                })
            })?;
            // Steps run as soon as their inputs are ready, as many at once as the graph
            // allows (as BuildKit): a slow emulated step must not hold up native ones.
            work(ctx, state, tmp.path()).await?;
            if filtered {
                // A step run again under --no-cache-filter is a result of its own: recorded
                // under a key of this run, so the steps built on it (in this stage or in
                // others, by COPY --from or a mount) run again too, as in BuildKit, and
                // the cached result of `key` stays what later builds reuse with the steps
                // made from it.
                let nonce = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                key = CacheKey::derive(
                    Some(&key),
                    "no-cache-filter-run",
                    &format!("{}:{nonce}:{id:?}", std::process::id()),
                );
            }
            let (ctx2, key2, parent) = (ctx.clone(), key.clone(), state.layers.clone());
            let rec = tokio::task::spawn_blocking(move || {
                let _timer = ctx2.timer(id, Phase::Snapshot, "");
                ctx2.commit_diff(&key2, &diff, &parent)
            })
            .await
            .map_err(|e| join_error(&e))??;
            ctx.run_steps.fetch_add(1, Ordering::Relaxed);
            rec
        }
    };
    let created = rfc3339(rec.created as i64, 0);
    {
        // A blob pruned since (or never made) is packed again from the snapshot on demand.
        // A remote cache's blob is pulled from `origin` when something needs it.
        let blob = pick_blob(&rec, ctx.pack.compression)
            .filter(|b| {
                rec.diff_id.is_some()
                    && (origin.is_some()
                        || dir_origin.is_some()
                        || ctx.cache.content().contains(&b.digest))
            })
            .cloned();
        let parent = state.layers.last().map(|l| l.chain.clone());
        let chain = match (&rec.chain_id, &rec.diff_id) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => ChainId::child(parent.as_ref(), d),
            (None, None) => {
                return Err(Error::invalid_step(format!(
                    "cache record for {key} has neither a layer nor a snapshot"
                )));
            }
        };
        state.layers.push(Layer {
            diff_id: rec.diff_id.clone(),
            chain,
            blob,
            origin,
            dir_origin,
            key: Some(key.clone()),
        });
    }
    ctx.note_stack(&state.layers);
    ctx.pack_ahead(&state.layers, state.scope.stage(), id);
    state.config.push_history(&HistoryEntry {
        created,
        created_by,
        empty_layer: false,
    });
    state.key = key;
    Ok(())
}

/// uid/gid for new directories of a step run as `user`.
pub(super) fn resolve_owner(lowers: &[PathBuf], user: &str) -> Result<(u32, u32), Error> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let u = sandbox::resolve_user(lowers, user)?;
    Ok((u.uid, u.gid))
}

/// The working directory a `WORKDIR dir` leaves in the config, as BuildKit's
/// `NormalizeWorkdir`: an absolute `dir` as written (a trailing `/` or a `..` stays), a
/// relative one joined to the current directory and cleaned.
pub(crate) fn join_workdir(current: Option<&str>, dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_owned()
    } else {
        clean_path(&format!("{}/{}", current.unwrap_or("/"), dir))
    }
}

/// `path` made absolute, with `.`, `..` (clamped at the root) and repeated or trailing
/// slashes cleaned away: Go's `filepath.Clean("/" + path)`.
pub(crate) fn clean_path(path: &str) -> String {
    dockerfile::filepath_clean(&format!("/{path}"))
}

pub(super) fn command_argv(config: &ImageConfig, c: &Command) -> Vec<String> {
    match c {
        Command::Exec(v) => v.iter().map(|s| s.value.clone()).collect(),
        Command::Shell(s) => {
            let mut argv = config
                .shell()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            argv.push(s.value.clone());
            argv
        }
    }
}

pub(super) fn healthcheck(config: &ImageConfig, h: &dockerfile::Healthcheck) -> ConfigHealthcheck {
    match h {
        dockerfile::Healthcheck::None => ConfigHealthcheck {
            test: vec!["NONE".into()],
            ..ConfigHealthcheck::default()
        },
        dockerfile::Healthcheck::Cmd(c) => {
            let _ = config;
            let test = match &c.command {
                Command::Exec(v) => std::iter::once("CMD".to_owned())
                    .chain(v.iter().map(|s| s.value.clone()))
                    .collect(),
                Command::Shell(s) => vec!["CMD-SHELL".to_owned(), s.value.clone()],
            };
            let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as u64);
            ConfigHealthcheck {
                test,
                interval: ns(c.interval),
                timeout: ns(c.timeout),
                start_period: ns(c.start_period),
                start_interval: ns(c.start_interval),
                retries: c.retries.map(u64::from),
            }
        }
    }
}

/// `3000`, `4000/udp`, `8000-8002/udp` → `port/proto` keys.
pub(super) fn expand_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // An IP prefix (`127.0.0.1:80:80`) is not allowed in EXPOSE; take the last field.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {s}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid range: {ports}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

pub(super) fn validate_signal(s: &str) -> Result<(), String> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return if n == 0 {
            Err(format!("invalid signal: {s}"))
        } else {
            Ok(())
        };
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if NAMES.contains(&name) {
        return Ok(());
    }
    if let Some(rt) = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
    {
        if rt.is_empty()
            || rt
                .strip_prefix(['+', '-'])
                .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            return Ok(());
        }
    }
    Err(format!("invalid signal: {s}"))
}
