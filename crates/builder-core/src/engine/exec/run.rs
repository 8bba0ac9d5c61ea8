//! `RUN`: the command line and its key, the mounts, and the command run in the sandbox on
//! the stage's layers.

use super::*;

/// `--add-host` entries as a RUN step's key holds them (the graph derives the same).
pub(crate) fn extra_host_keys(hosts: &[(String, std::net::IpAddr)]) -> Vec<String> {
    hosts.iter().map(|(h, ip)| format!("{h}={ip}")).collect()
}

/// The heredoc marker word alone (`<<EOF`, `<<-EOF`, `<<"EOF"`).
pub(crate) fn is_lone_heredoc(cmd: &str, name: &str) -> bool {
    let w = cmd.trim();
    let Some(rest) = w.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim();
    rest.chars()
        .filter(|c| *c != '"' && *c != '\'')
        .collect::<String>()
        == name
}

/// A RUN's argv (the shell form wrapped in the config's shell, heredocs resolved) and the
/// heredoc files it reads from `/dev/pipes/<name>`.
pub(crate) fn run_argv(
    config: &ImageConfig,
    r: &dockerfile::RunInstruction,
) -> (Vec<String>, Vec<(String, String)>) {
    let shell = config
        .shell()
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    let mut files: Vec<(String, String)> = Vec::new();
    let argv: Vec<String> = match &r.command {
        Command::Exec(v) => v.iter().map(|s| s.value.clone()).collect(),
        Command::Shell(cmd) if !r.heredocs.is_empty() => {
            let body = |h: &dockerfile::Heredoc| {
                if h.chomp {
                    dockerfile::chomp_heredoc(&h.content)
                } else {
                    h.content.clone()
                }
            };
            if r.heredocs.len() == 1 && is_lone_heredoc(&cmd.value, &r.heredocs[0].name) {
                // As BuildKit: a body with a shebang becomes an executable file run by
                // path; any other body is the shell's argument itself, so that a SHELL
                // like `["/bin/awk"]` gets the program text (SH-04).
                let h = &r.heredocs[0];
                let data = body(h);
                let mut a = shell.clone();
                if data.starts_with("#!") {
                    a.push(format!("/dev/pipes/{}", h.name));
                    files.push((h.name.clone(), data));
                } else {
                    a.push(data);
                }
                a
            } else {
                let mut script = cmd.value.clone();
                for h in &r.heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    script.push_str(&h.name);
                }
                let mut a = shell.clone();
                a.push(script);
                a
            }
        }
        Command::Shell(cmd) => {
            let mut a = shell.clone();
            a.push(cmd.value.clone());
            a
        }
    };
    (argv, files)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_step(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    platform: &Platform,
    deps: &HashMap<usize, StageFuture>,
    state: &mut StageState,
    r: &dockerfile::RunInstruction,
    id: StepId,
    span: dockerfile::Span,
    text: &str,
) -> Result<(), Error> {
    let key_env: BTreeMap<String, String> = state
        .scope
        .env()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let def = crate::graph::keys::exec(&ctx.key_opts, &state.config, key_env, platform, r)
        .map_err(|reason| step_failed(ctx, span, text, reason))?;
    // Proxy variables reach the step but not its cache key (ARG-14).
    let mut env = def.env.clone();
    for (k, v) in plan.proxy_env() {
        env.insert(k, v);
    }
    let crate::graph::keys::ExecDef {
        argv,
        files,
        user,
        cwd,
        network,
        insecure,
        ..
    } = def.clone();
    // RUN --mount: the `from` stages and images, then the mounts' part of the key.
    let froms = mount_froms(ctx, plan, platform, deps, state, r, id)
        .await
        .map_err(|e| locate(ctx, span, text, e))?;
    let from_keys: Vec<Option<CacheKey>> = froms
        .iter()
        .map(|f| f.as_ref().map(|(_, k)| k.clone()))
        .collect();
    let mounts = crate::engine::mounts::prepare(&r.mounts, &from_keys, &cwd, &ctx.copy_context)
        .await
        .map_err(|reason| step_failed(ctx, span, text, reason))?;
    if let Some(rec) = &ctx.recorder {
        for m in mounts.key() {
            let id = m["id"].as_str().unwrap_or_default();
            let required = m["required"].as_bool().unwrap_or(false);
            match m["type"].as_str() {
                Some("secret") => rec.secret(id, required),
                Some("ssh") => rec.ssh(id, required),
                _ => {}
            }
        }
        if !matches!(network, NetworkMode::None) {
            rec.network();
        }
    }
    let key = def.key(&ctx.key_opts, &state.key, mounts.key());
    let created_by = history::run(&state.scope.declared_args(), &argv);
    let platform_s = platform.to_string();
    let hostname = ctx.sandbox_hostname.clone();
    let native = platform.architecture() == ctx.build_platform.architecture();
    // Exported with the cache even when the step is a hit (a warm runner's copy).
    ctx.note_cache_mounts(&mounts.cache_dirs());
    cached_or_run(ctx, state, key, id, created_by, |ctx, state, dir| {
        let ctx = ctx.clone();
        let layers = state.layers.clone();
        let dir = dir.to_owned();
        async move {
            // A cache mount this runner never had starts from an imported cache's copy.
            let dirs = mounts.cache_dirs();
            let (lowers, ()) = tokio::try_join!(
                ctx.materialize(&layers, id),
                ctx.restore_cache_mounts(&dirs, id)
            )?;
            let mut from_lowers = Vec::new();
            for f in &froms {
                from_lowers.push(match f {
                    Some((l, _)) => Some(ctx.materialize(l, id).await?),
                    None => None,
                });
            }
            let mount_timer = ctx.timer(id, Phase::Mount, "");
            let active = mounts
                .activate(&crate::engine::mounts::Sources {
                    opts: &ctx.run_opts,
                    cache: &ctx.cache,
                    lease: &ctx.lease,
                    context: &ctx.copy_context,
                    from_lowers: &from_lowers,
                    scratch: &dir,
                    cancel: &ctx.cancel,
                })
                .await?;
            drop(mount_timer);
            let mut env = env;
            active.apply_env(&mut env);
            // Without USER, root with its supplementary groups from /etc/group (as
            // BuildKit: `id -G` is `0 10` on busybox); plain root when the image has none.
            let run_user = if user.is_empty() {
                sandbox::resolve_user(&lowers, "root").unwrap_or_else(|_| sandbox::User::root())
            } else {
                sandbox::resolve_user(&lowers, &user)?
            };
            let mut spec = RunSpec::new(
                Rootfs::Layers {
                    lowers,
                    upper: dir.join("diff"),
                },
                dir.join("scratch"),
                argv.clone(),
            )?
            .with_env(env)?
            .with_cwd(cwd)?
            // BuildKit's RUN sees this hostname (NET-03).
            .with_hostname(hostname.as_str())?
            .with_extra_hosts(&ctx.extra_hosts)?
            .with_user(run_user)
            .with_network(network)
            .with_insecure(insecure)
            .with_limits(ctx.run_limits.clone());
            if !native {
                spec = spec.with_platform(&platform_s)?;
            }
            for (name, content) in &files {
                let path = dir.join(format!("heredoc-{name}"));
                // Executable: the shell runs it by path, and a shebang line picks the
                // interpreter (HD-07), as BuildKit's 0755 heredoc file.
                std::fs::write(&path, content)
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &path,
                            std::os::unix::fs::PermissionsExt::from_mode(0o755),
                        )
                    })
                    .map_err(|e| {
                        Error::from(layer_cache::Error::Io {
                            path: path.clone(),
                            source: e,
                        })
                    })?;
                spec = spec.with_mount(sandbox::Mount::bind(
                    sandbox::MountSource::Host(path),
                    format!("/dev/pipes/{name}"),
                    sandbox::BindAccess::ReadOnly,
                ))?;
            }
            for m in active.mounts() {
                spec = spec.with_mount(m.clone())?;
            }
            let ctx2 = ctx.clone();
            let (status, tail) = tokio::task::spawn_blocking(move || {
                let mut tail = Tail::default();
                let mut timer = ctx2.timer(id, Phase::Run, "");
                let status = ctx2.sandbox.run_measured(
                    &spec,
                    &ctx2.cancel,
                    &mut |stream: Stream, data: &[u8]| {
                        tail.push(data);
                        ctx2.emit(ProgressEvent::StepLog {
                            id,
                            stream,
                            data: data.to_vec(),
                        });
                    },
                );
                let status = status.map(|(s, cpu)| {
                    timer.cpu(cpu);
                    s
                });
                drop(timer);
                (status, tail)
            })
            .await
            .map_err(|e| join_error(&e))?;
            let status = match status {
                Ok(s) => s,
                Err(sandbox::SandboxError::Cancelled) => return Err(Error::Cancelled),
                Err(e) => return Err(e.into()),
            };
            if !status.success() {
                let output_tail = tail.lines();
                let mut reason = format!(
                    "process \"{}\" did not complete successfully: {status}",
                    argv.join(" ")
                );
                // A call refused because of the mode (mknod of a device, a mount, a chroot
                // without namespaces): say which mode, since the command cannot.
                let mode = ctx.sandbox.mode_name();
                if mode != "root"
                    && output_tail
                        .iter()
                        .any(|l| l.contains("Operation not permitted"))
                {
                    reason.push_str(&format!(
                        " (a call was refused: rbuild runs in the {mode} mode, {}, where device \
                         nodes{} cannot be made; see `rbuild info`)",
                        ctx.sandbox.capabilities().describe(),
                        if mode == "unprivileged" {
                            ", mounts, chroot and ptrace"
                        } else {
                            " and mounts of most file systems"
                        }
                    ));
                }
                // A step that ran out of space while its upper directory (in the cache)
                // filled the cache's file system: say so, so the build names the cache.
                if output_tail.iter().any(|l| {
                    l.contains("No space left on device") || l.contains("Disk quota exceeded")
                }) {
                    if let Some(free) = nearly_full(ctx.cache.root()) {
                        reason.push_str(&format!(
                            " (No space left on device: the cache directory {} has {} KiB free)",
                            ctx.cache.root().display(),
                            free / 1024
                        ));
                    }
                }
                return Err(Error::Step {
                    location: String::new(),
                    instruction: String::new(),
                    reason,
                    output_tail,
                    source: StepError::Exit(status),
                });
            }
            Ok(())
        }
    })
    .await
    .map_err(|e| locate(ctx, span, text, e))
}

/// The last lines of a step's output, for error messages.
#[derive(Default)]
pub(super) struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    const KEEP: usize = 16 * 1024;

    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * Self::KEEP {
            self.buf.drain(..self.buf.len() - Self::KEEP);
        }
    }

    pub(super) fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }
}

/// The bytes free on the file system of `dir` when it is nearly full (under 4 MiB or 1%
/// free), `None` otherwise or when it cannot be told.
pub(super) fn nearly_full(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    (free < (4 << 20) || free < size / 100).then_some(free)
}
