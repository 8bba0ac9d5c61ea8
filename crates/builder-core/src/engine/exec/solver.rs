//! The solver: loads the Dockerfile, sets up the build's shared context, starts one task
//! per reachable stage (a stage waits on the stages it reads, the first failure cancels
//! the rest), then hands the solved result to the exporters and the cache export.

use super::*;

/// A unique build id of 25 lowercase letters and digits, like BuildKit's build refs: a hash
/// of the time, the process and a counter.
pub(super) fn new_build_ref() -> String {
    use sha2::Digest as _;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = sha2::Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = h
        .finalize()
        .iter()
        .take(25)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("rbuild/local/{id}")
}

/// Whether a `syntax` directive's image is the Dockerfile frontend (`docker/dockerfile`
/// or `docker/dockerfile-upstream`, from Docker Hub under any of its spellings, any tag or
/// digest), whose syntax rbuild implements itself.
pub(super) fn is_dockerfile_frontend(reference: &str) -> bool {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    let name = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    matches!(name, "docker/dockerfile" | "docker/dockerfile-upstream")
}

/// Runs a whole build.
/// The Dockerfile's name, text and parse (after checking its `syntax` directive).
pub(crate) fn load_dockerfile(b: &Build) -> Result<(String, String, Dockerfile), Error> {
    let (name, text) = match &b.dockerfile {
        Some(DockerfileSource::Text { name, text }) => (name.clone(), text.clone()),
        Some(DockerfileSource::Path(p)) => (p.display().to_string(), read_dockerfile(p)?),
        None => {
            let p = crate::engine::default_dockerfile(&b.context);
            (p.display().to_string(), read_dockerfile(&p)?)
        }
    };
    if let Some(syntax) = dockerfile::detect_syntax(&text) {
        if !is_dockerfile_frontend(&syntax.reference) {
            return Err(Error::UnsupportedFrontend {
                file: name,
                line: syntax.line.max(1),
                reference: syntax.reference,
            });
        }
    }
    let df = dockerfile::parse(&text).map_err(|source| Error::Parse {
        file: name.clone(),
        source: source.into(),
    })?;
    Ok((name, text, df))
}

pub(in crate::engine) async fn run(
    b: Build,
    sink: &mut dyn ProgressSink,
) -> Result<BuildReport, Error> {
    let started = Instant::now();
    let wall_start = attest::Started::now();
    let (name, text, df) = load_dockerfile(&b)?;
    let host = Platform::host();
    let platforms = if b.platforms.is_empty() {
        vec![host.clone()]
    } else {
        b.platforms.clone()
    };
    // The configuration as a whole (outputs against platforms and names).
    b.validate()?;
    // The repositories the registry outputs push to (their names passed validate).
    let mut push_repos: Vec<Repository> = Vec::new();
    for o in b.outputs.iter().filter(|o| o.kind == ExportKind::Registry) {
        for t in crate::engine::export::push_targets(o, &b.tag_names)? {
            if !push_repos.contains(&t.repo) {
                push_repos.push(t.repo);
            }
        }
    }

    // Plans first: every stage error is reported before anything runs.
    let make_plans = |build_args: &BTreeMap<String, String>| {
        let mut plans = Vec::new();
        for p in &platforms {
            let mut opts = PlanOptions::new(platform_spec(p), platform_spec(&host));
            opts.build_args = build_args.clone();
            opts.target = b.target.clone();
            let plan = BuildPlan::new(&df, &opts).map_err(|source| Error::Stages {
                file: name.clone(),
                source: source.into(),
            })?;
            plans.push(Arc::new(plan));
        }
        Ok::<_, Error>(plans)
    };
    let mut plans = make_plans(&b.build_args)?;
    let epoch = crate::engine::epoch::resolve(&b, &plans[0], &name)?;
    // `context` or a stage name: the steps see the seconds it resolved to (or nothing).
    if let Some(v) = epoch.replaced() {
        let mut args = b.build_args.clone();
        args.insert("SOURCE_DATE_EPOCH".to_owned(), v);
        plans = make_plans(&args)?;
    }
    let source_date_epoch = epoch.seconds;

    let cache_dir = b
        .cache_dir
        .clone()
        .unwrap_or_else(crate::engine::default_cache_dir);
    let cache = Cache::open(&cache_dir)?;
    crate::engine::cache_owner::check(cache.root())?;
    let lease = cache.lease()?;
    let tmp = cache.other_dir("tmp")?;
    let sandbox = match b.sandbox_mode {
        Some(mode) => Sandbox::detect_with(&tmp, mode)?,
        None => Sandbox::detect(&tmp)?,
    };
    let mut client = Client::builder();
    for h in &b.insecure_registries {
        client = client.insecure_registry(h);
    }
    let client = client.build()?;
    let first_output = b.outputs.first().cloned();
    let mut pack = PackOptions::default();
    pack.compression = first_output
        .as_ref()
        .map_or(Compression::Gzip, |o| o.compression);
    pack.level = first_output.as_ref().and_then(|o| o.compression_level);
    for c in &b.cache_to {
        match (c.compression, &first_output) {
            (Some(cc), None) => {
                pack.compression = cc;
                pack.level = c.compression_level.or(pack.level);
            }
            // Recompressed for the cache at export.
            (Some(_), Some(_)) if c.force_compression => {}
            (Some(cc), Some(o)) if cc != o.compression => {
                return Err(Error::InvalidCache {
                    spec: c.location.to_string(),
                    reason: format!(
                        "compression {cc:?} differs from the output's {:?}: without \
                         force-compression=true the cache keeps the layers' compression",
                        o.compression
                    ),
                });
            }
            _ => {}
        }
    }
    let mut next_step = 1;
    let remote = if b.cache_from.is_empty() || b.no_cache {
        remote::RemoteCaches::default()
    } else {
        next_step += b.cache_from.len() as u32;
        remote::import_caches(&client, &b.cache_from, sink, StepId(1)).await
    }
    .rejecting(&b.rejected_cache_blobs);
    // Every output a push: a layer the registry has elsewhere is mounted, never pulled.
    let lazy_push_repos: Vec<Repository> = if !b.outputs.is_empty()
        && b.outputs
            .iter()
            .all(|o| matches!(o.kind, ExportKind::Registry))
    {
        push_repos.clone()
    } else {
        Vec::new()
    };
    // The clamp of the new layers' mtimes: on with SOURCE_DATE_EPOCH unless the output
    // says `rewrite-timestamp=false` (see `ExportSpec::rewrite_timestamp`).
    // An output's own `source-date-epoch=` replaces the build's epoch for what it writes.
    let rewrite_timestamp = first_output.as_ref().and_then(|o| o.rewrite_timestamp);
    let export_epoch = first_output
        .as_ref()
        .and_then(|o| o.source_date_epoch)
        .unwrap_or(source_date_epoch);
    pack.source_date_epoch = export_epoch.filter(|_| rewrite_timestamp != Some(false));
    let stat_cache = cache.stat_cache(&format!("context:{}", b.context.display()))?;
    let copy_context =
        crate::copy::BuildContext::open(&b.context, b.dockerfile_path().as_deref(), stat_cache)
            .map_err(|e| {
                crate::engine::invalid("context", &b.context.display().to_string(), e.to_string())
            })?;
    let checks = crate::engine::check::config(&text, &b.build_args)?;
    // An output other than files needs the image's layers compressed.
    let packs_layers = b
        .outputs
        .iter()
        .any(|o| !matches!(o.kind, ExportKind::Local { .. }));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = Arc::new(Ctx {
        cache,
        lease,
        client,
        sandbox,
        cancel: b.cancel.clone(),
        events: tx,
        clock: crate::progress::Clock(started),
        next_step: AtomicU32::new(next_step),
        cached_steps: AtomicU32::new(0),
        run_steps: AtomicU32::new(0),
        no_cache: b.no_cache,
        no_cache_stages: no_cache_stages(&plans[0], &b.no_cache_filter)?,
        key_locks: b.key_locks.clone(),
        cpu: Semaphore::new(cores),
        dockerfile_name: name.clone(),
        text: text.clone(),
        checks,
        pack,
        key_opts: b.key_options(),
        build_platform: host.clone(),
        explicit_platform: !b.platforms.is_empty(),
        source_date_epoch,
        rewritten_timestamp: export_epoch.filter(|_| rewrite_timestamp == Some(true)),
        first_error: Mutex::new(None),
        images: tokio::sync::Mutex::new(HashMap::new()),
        tmp,
        labels: b.labels.clone(),
        copy_context: Arc::new(copy_context),
        named: b.named_contexts.clone(),
        run_opts: crate::engine::mounts::RunOptions::new(&b),
        multi_platform: platforms.len() > 1,
        prefetches: Mutex::new(Vec::new()),
        ahead_stages: if packs_layers && ahead::enabled() {
            ahead::image_stages(&plans[0])
        } else {
            Default::default()
        },
        packing: Mutex::new(Vec::new()),
        verified: Mutex::default(),
        step_keys: Mutex::default(),
        sandbox_hostname: b
            .build_args
            .get("BUILDKIT_SANDBOX_HOSTNAME")
            .filter(|h| !h.is_empty())
            .cloned()
            .unwrap_or_else(|| "buildkitsandbox".to_owned()),
        extra_hosts: b.extra_hosts.clone(),
        run_limits: b.run_limits.clone(),
        remote,
        push_repos: lazy_push_repos,
        used_mounts: Mutex::default(),
        note_steps: b
            .cache_to
            .iter()
            .any(|c| c.mode == crate::remote_cache::CacheMode::Max),
        noted: Mutex::new(Vec::new()),
        inline_cache: remote::inline_wanted(&b.cache_to, &b.outputs)?,
        recorder: b
            .attestations
            .provenance
            .as_ref()
            .map(|_| crate::attest::provenance::Recorder::default()),
    });
    // However the build ends, no background pull outlives it.
    let _prefetches = StopPrefetches(ctx.clone());
    let mode = ctx.sandbox.capabilities().describe();
    sink.event(&ProgressEvent::BuildStarted {
        platforms: platforms.iter().map(ToString::to_string).collect(),
        sandbox: mode.clone(),
        privilege: crate::Privilege::current().describe(),
    });
    // Build checks, before anything runs (error=true stops the build here).
    crate::engine::check::report(
        &name,
        &text,
        &df,
        &plans,
        &ctx.checks,
        ctx.copy_context.ignore_patterns(),
        sink,
    )?;

    let work = {
        let ctx = ctx.clone();
        let plans = plans.clone();
        let platforms = platforms.clone();
        async move {
            let mut finals = Vec::new();
            for (plan, platform) in plans.iter().zip(&platforms) {
                finals.push(spawn_stages(&ctx, plan.clone(), platform.clone()));
            }
            let mut states = Vec::new();
            for f in finals {
                match f.await {
                    Ok(s) => states.push(s),
                    Err(e) => {
                        ctx.cancel.cancel();
                        return Err(e);
                    }
                }
            }
            Ok(states)
        }
    };
    let states = forwarding(work, &mut rx, sink).await;
    let states = states.map_err(|e| {
        // Cancelled because another stage failed: report that failure.
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match (e, first) {
            (Error::Cancelled, Some(first)) => first,
            (e, _) => e,
        }
    })?;

    // Debug builds: every step's key is the one the build's graph derives.
    if cfg!(debug_assertions) {
        keycheck::check(&ctx, &plans, &platforms).await?;
    }

    // Assemble the images and export them.
    let export_step = ctx.step_id();
    // Without an output nothing needs compressed layers: only the configs are made.
    // Files only (`type=local`): copied from the snapshots, nothing compressed either.
    let exporters =
        crate::engine::export::exporters(&b.outputs, &b.tags, &b.tag_names, ctx.source_date_epoch)?;
    // With attestations the images are made all the same: a local output writes their
    // statements beside the files (the predicates describe the images).
    let needs_blobs = exporters.iter().any(|e| e.needs() == Needs::Blobs)
        || (b.attestations.any() && !exporters.is_empty());
    let built = if !needs_blobs {
        None
    } else {
        let assembled = futures_util::future::try_join_all(
            states
                .iter()
                .zip(&platforms)
                .map(|(state, platform)| assemble(&ctx, state, platform, export_step)),
        );
        let mut images = forwarding(assembled, &mut rx, sink).await?;
        crate::annotations::annotate_manifests(&mut images, &b.annotations);
        let attestations = if b.attestations.any() {
            let inputs = attest::Inputs {
                attestations: &b.attestations,
                request: provenance_request(&b, &name, &text),
                names: b
                    .tags
                    .iter()
                    .map(ToString::to_string)
                    .chain(b.outputs.iter().flat_map(|o| o.names.iter().cloned()))
                    .collect(),
                started: wall_start,
            };
            let made = attest::make(&ctx, &inputs, &states, &platforms, &images, export_step);
            forwarding(made, &mut rx, sink).await?
        } else {
            Vec::new()
        };
        let mut built =
            BuiltImage::with_attestations(images, attestations, b.attestations.referrers);
        crate::annotations::annotate_index(&mut built, &b.annotations)?;
        Some(built)
    };
    let config_digests: Vec<String> = match &built {
        Some(img) => img
            .images
            .iter()
            .map(PlatformImage::config_digest)
            .collect(),
        None if b.image_id => {
            let ids = futures_util::future::try_join_all(
                states
                    .iter()
                    .zip(&platforms)
                    .map(|(state, platform)| image_id(&ctx, state, platform)),
            );
            forwarding(ids, &mut rx, sink).await?
        }
        None => Vec::new(),
    };
    // The names as given, as BuildKit's `image.name` (the `-t`s, else the outputs' `name=`).
    let mut names: Vec<String> = Vec::new();
    for o in &b.outputs {
        for n in crate::engine::export::output_names(o, &b.tag_names) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    if b.outputs.is_empty() {
        names.clone_from(&b.tag_names);
    }
    let base_repos = states_layers(&states);
    if !exporters.is_empty() {
        let files = StageFiles {
            ctx: ctx.clone(),
            states: states.clone(),
            platforms: platforms.clone(),
        };
        let solved = Solved {
            image: built.as_ref(),
            files: &files,
            base_repos: &base_repos,
        };
        let cx = ExportCx {
            client: &ctx.client,
            events: &ctx.events,
            clock: ctx.clock,
            step: export_step,
        };
        let export = crate::engine::export::export_all(&exporters, &solved, &cx);
        forwarding(export, &mut rx, sink).await?;
    }
    if !b.cache_to.is_empty() {
        let step = ctx.step_id();
        let export = remote::export_caches(&ctx, &states, &b.cache_to, &push_repos, step);
        forwarding(export, &mut rx, sink).await?;
    }
    // Base blobs no step needed: stop fetching them; their FROM steps end here.
    for (id, t0) in ctx.stop_prefetches() {
        sink.event(&ProgressEvent::StepDone {
            id,
            elapsed: t0.elapsed(),
        });
    }
    while let Ok(ev) = rx.try_recv() {
        sink.event(&ev);
    }
    ctx.copy_context
        .save()
        .map_err(|e| Error::invalid_step(e.to_string()))?;
    sink.event(&ProgressEvent::BuildDone {
        elapsed: started.elapsed(),
    });
    Ok(BuildReport {
        digest: built.as_ref().map(BuiltImage::digest),
        // BuildKit's descriptor: a single manifest (one platform, no attestations) carries
        // its platform.
        descriptor: built.as_ref().map(|b| match (&b.index, &b.images[..]) {
            (None, [one]) => serde_json::Value::Object(one.descriptor(true)),
            _ => serde_json::Value::Object(b.root_descriptor()),
        }),
        config_digests,
        image: built,
        sandbox_mode: mode,
        steps_run: ctx.run_steps.load(Ordering::Relaxed),
        steps_cached: ctx.cached_steps.load(Ordering::Relaxed),
        names,
        build_ref: new_build_ref(),
    })
}

/// Runs `fut` while handing the progress events the build's tasks send to `sink`, then
/// the events still queued when it ends.
pub(super) async fn forwarding<T>(
    fut: impl Future<Output = T>,
    rx: &mut mpsc::UnboundedReceiver<ProgressEvent>,
    sink: &mut dyn ProgressSink,
) -> T {
    tokio::pin!(fut);
    let out = loop {
        tokio::select! {
            biased;
            Some(ev) = rx.recv() => sink.event(&ev),
            r = &mut fut => break r,
        }
    };
    while let Ok(ev) = rx.try_recv() {
        sink.event(&ev);
    }
    out
}

/// The frontend request as the provenance records it: buildx's frontend options
/// (`build-arg:K`, `label:K`, `target`), the Dockerfile's name and bytes, the local sources.
pub(super) fn provenance_request(
    b: &Build,
    name: &str,
    text: &str,
) -> crate::attest::provenance::Request {
    let mut args = BTreeMap::new();
    for (k, v) in &b.build_args {
        args.insert(format!("build-arg:{k}"), v.clone());
    }
    for (k, v) in &b.labels {
        args.insert(format!("label:{k}"), v.clone());
    }
    if let Some(t) = &b.target {
        args.insert("target".to_owned(), t.clone());
    }
    if b.no_cache {
        args.insert("no-cache".to_owned(), String::new());
    }
    let filename = Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    crate::attest::provenance::Request {
        args,
        filename,
        dockerfile: text.as_bytes().to_vec(),
        locals: vec!["context".to_owned(), "dockerfile".to_owned()],
        builder_platform: Platform::host().to_string(),
    }
}

/// The layers of each platform's final stage with where they came from (for pushes).
pub(super) fn states_layers(states: &[Arc<StageState>]) -> Vec<Option<Repository>> {
    states.iter().map(|s| s.base_repo.clone()).collect()
}

pub(in crate::engine) fn read_dockerfile(p: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(p).map_err(|source| Error::ReadDockerfile {
        path: p.to_owned(),
        source: source.into(),
    })?;
    String::from_utf8(bytes).map_err(|_| Error::ReadDockerfile {
        path: p.to_owned(),
        source: Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the Dockerfile is not valid UTF-8",
        )),
    })
}

/// Starts a task per reachable stage; returns the target stage's future.
pub(super) fn spawn_stages(
    ctx: &Arc<Ctx>,
    plan: Arc<BuildPlan>,
    platform: Platform,
) -> StageFuture {
    let mut futures: HashMap<usize, StageFuture> = HashMap::new();
    let reachable = named::stages_to_build(ctx, &plan);
    for &idx in &reachable {
        let stage = &plan.stages()[idx];
        let mut deps: HashMap<usize, StageFuture> = HashMap::new();
        let mut wanted: Vec<usize> = stage
            .deps
            .iter()
            .filter_map(|d| match d.source {
                DepSource::Stage(j) => Some(j),
                _ => None,
            })
            .collect();
        if let StageBase::Stage(j) = stage.base {
            wanted.push(j);
        }
        for j in wanted {
            if let Some(f) = futures.get(&j) {
                deps.insert(j, f.clone());
            }
        }
        let (ctx2, plan2, platform2) = (ctx.clone(), plan.clone(), platform.clone());
        let handle = tokio::spawn(async move {
            let r = build_stage(ctx2.clone(), plan2, platform2, idx, deps).await;
            if let Err(e) = &r {
                ctx2.fail(e);
            }
            r.map(Arc::new)
        });
        let fut: BoxFuture<'static, Result<Arc<StageState>, Error>> = async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(join_error(&e)),
            }
        }
        .boxed();
        futures.insert(idx, fut.shared());
    }
    futures
        .remove(&plan.target())
        .expect("the target stage is reachable")
}

pub(super) async fn wait_stage(
    deps: &HashMap<usize, StageFuture>,
    j: usize,
) -> Result<Arc<StageState>, Error> {
    match deps.get(&j) {
        Some(f) => f.clone().await,
        None => Err(Error::invalid_step(format!(
            "stage {j} is not part of this build"
        ))),
    }
}

/// Looks the step up in the cache; on a miss runs `work` to fill a fresh diff directory
/// (`<dir>/diff`, with `<dir>` free for scratch space) and stores the result. Either way the
/// layer (the empty tar when nothing changed) and a history entry are added to the stage.
/// The stages `--no-cache-filter` names (stage names compare case-insensitively, as
/// BuildKit's do).
pub(super) fn no_cache_stages(
    plan: &BuildPlan,
    names: &[String],
) -> Result<std::collections::BTreeSet<usize>, Error> {
    let mut out = std::collections::BTreeSet::new();
    for n in names {
        let found = plan
            .stages()
            .iter()
            .find(|s| s.name.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(n)))
            .ok_or_else(|| {
                crate::engine::invalid(
                    "no-cache-filter",
                    n,
                    "the Dockerfile has no stage of that name",
                )
            })?;
        out.insert(found.index);
    }
    Ok(out)
}

/// The final stages' filesystems for the exporters of files: their snapshots (unpacked
/// where needed), nothing compressed.
pub(super) struct StageFiles {
    ctx: Arc<Ctx>,
    states: Vec<Arc<StageState>>,
    platforms: Vec<Platform>,
}

impl SolvedFiles for StageFiles {
    fn platforms(&self) -> Vec<(String, String, Option<String>)> {
        self.platforms
            .iter()
            .map(|p| {
                (
                    p.os().to_owned(),
                    p.architecture().to_owned(),
                    oci_variant(p).map(str::to_owned),
                )
            })
            .collect()
    }

    fn layer_dirs(&self, i: usize, step: StepId) -> BoxFuture<'_, Result<Vec<PathBuf>, Error>> {
        async move {
            let state = self
                .states
                .get(i)
                .ok_or_else(|| Error::invalid_step(format!("no platform {i} in this build")))?;
            self.ctx.materialize(&state.layers, step).await
        }
        .boxed()
    }

    fn pack(&self) -> &PackOptions {
        &self.ctx.pack
    }
}

#[cfg(test)]
mod frontend_tests {
    use super::is_dockerfile_frontend;

    #[test]
    fn the_dockerfile_frontend_under_its_spellings() {
        for r in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7-labs",
            "docker.io/docker/dockerfile:1.26",
            "docker/dockerfile-upstream:master",
            "docker/dockerfile@sha256:0123",
            "docker/dockerfile",
        ] {
            assert!(is_dockerfile_frontend(r), "{r}");
        }
        for r in [
            "127.0.0.1:5000/library/nosuchfrontend",
            "tonistiigi/dockerfile:x",
            "example.com:5000/docker/dockerfile:1",
            "docker/dockerfile2",
        ] {
            assert!(!is_dockerfile_frontend(r), "{r}");
        }
    }
}
