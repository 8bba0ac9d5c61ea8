//! Running a build: the CLI's validated options handed to `builder_core::Build`, progress
//! rendered, `--iidfile` and `--metadata-file` written, errors turned into exit codes.

use builder_core::{Build, ExportSpec, SecretSource, SshSource};

use crate::build::BuildOpts;
use crate::exit::Failure;
use crate::progress::{Mode, Renderer};

/// Builds with the engine. `dockerfile_text` is set when the Dockerfile came from stdin.
pub(crate) fn build(
    opts: &BuildOpts,
    build_args: &std::collections::BTreeMap<String, String>,
    dockerfile_text: Option<(String, String)>,
) -> Result<(), Failure> {
    build_or_graph(opts, build_args, dockerfile_text, None)
}

/// The build graph of the command line's build (`--call plan,format=json|text`): with
/// `plan`, that JSON with the graph as its `graph` member; else the graph's short text
/// form. Nothing is built.
pub(crate) fn graph(
    opts: &BuildOpts,
    build_args: &std::collections::BTreeMap<String, String>,
    dockerfile_text: Option<(String, String)>,
    plan: Option<serde_json::Value>,
) -> Result<(), Failure> {
    build_or_graph(opts, build_args, dockerfile_text, Some(plan))
}

/// What to print instead of building: the graph, in the CI plan's JSON or as text.
type GraphCall = Option<Option<serde_json::Value>>;

fn print_graph(b: &Build, plan: Option<serde_json::Value>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    let graph = runtime.block_on(b.graph()).map_err(failure)?;
    match plan {
        Some(mut plan) => {
            plan["graph"] = serde_json::to_value(&graph)
                .map_err(|e| Failure::build(format!("failed to encode the graph: {e}")))?;
            let text = serde_json::to_string_pretty(&plan)
                .map_err(|e| Failure::build(format!("failed to encode the plan: {e}")))?;
            println!("{text}");
        }
        None => print!("{}", graph.to_text()),
    }
    Ok(())
}

/// The build every `rbuild build` call starts from: context, Dockerfile (`(name, text)`
/// when it was read already, else `-f` or the context's), platforms, build args, target.
pub(crate) fn base_build(
    opts: &BuildOpts,
    build_args: &std::collections::BTreeMap<String, String>,
    dockerfile_text: Option<(String, String)>,
) -> Result<Build, Failure> {
    let usage = |e: builder_core::Error| Failure::usage(e.to_string());
    let mut b = Build::new(&opts.context).map_err(usage)?;
    b = match (dockerfile_text, opts.file.as_deref()) {
        (Some((name, text)), _) => b.dockerfile_text(&name, text),
        (None, Some(path)) => b.dockerfile(path).map_err(usage)?,
        (None, None) => b,
    };
    if !opts.platforms.is_empty() {
        b = b.target_platforms(opts.platforms.iter().flatten().cloned());
    }
    for (k, v) in build_args {
        b = b.build_arg(k, v).map_err(usage)?;
    }
    if let Some(t) = &opts.target {
        b = b.target(t);
    }
    Ok(b)
}

/// The outputs of the command line: the `--output`s, and `--push`'s registry output
/// when none of them pushes (`--load`'s docker archive is added where it is written).
fn outputs(opts: &BuildOpts) -> Vec<ExportSpec> {
    let mut outputs = opts.outputs.clone();
    if opts.push && !outputs.iter().any(ExportSpec::pushes) {
        outputs.push(ExportSpec::registry());
    }
    outputs
}

/// The command line's configuration judged by [`Build::validate`] before anything is read
/// or built: the context, platforms, tags and outputs (`--load` counting as a docker
/// archive).
pub(crate) fn validate(opts: &BuildOpts) -> Result<(), Failure> {
    let usage = |e: builder_core::Error| Failure::usage(e.to_string());
    let mut b = Build::new(&opts.context).map_err(usage)?;
    if !opts.platforms.is_empty() {
        b = b.target_platforms(opts.platforms.iter().flatten().cloned());
    }
    for t in &opts.tags {
        b = b.tag(t).map_err(usage)?;
    }
    for o in outputs(opts) {
        b = b.output(o);
    }
    if opts.dropin.load_target()?.is_some() {
        // Where it goes does not matter to the check; nothing is written.
        b = b.output(ExportSpec::docker(
            std::env::temp_dir().join("rbuild-load.tar"),
        ));
    }
    b.validate().map_err(usage)
}

fn build_or_graph(
    opts: &BuildOpts,
    build_args: &std::collections::BTreeMap<String, String>,
    dockerfile_text: Option<(String, String)>,
    graph: GraphCall,
) -> Result<(), Failure> {
    let usage = |e: builder_core::Error| Failure::usage(e.to_string());
    let mut b = base_build(opts, build_args, dockerfile_text)?;
    for t in &opts.tags {
        b = b.tag(t).map_err(usage)?;
    }
    let mut outputs = outputs(opts);
    // --load: a docker-archive in a temporary directory, loaded after the build.
    let load = match graph {
        Some(_) => None,
        None => opts.dropin.load_target()?,
    };
    let load_dir = match &load {
        Some(target) => {
            target.probe().map_err(failure)?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir =
                std::env::temp_dir().join(format!("rbuild-load-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::build(format!("--load: {}: {e}", dir.display())))?;
            outputs.push(ExportSpec::docker(dir.join("image.tar")));
            Some(RemoveOnDrop(dir))
        }
        None => None,
    };
    if outputs.is_empty() && graph.is_none() {
        eprintln!(
            "WARNING: No output specified with docker-container driver. Build result will only remain in the build cache. \
             To push result image into registry use --push or to load image into docker use --load"
        );
    }
    let pushes = outputs.iter().any(ExportSpec::pushes);
    for o in outputs {
        b = b.output(o);
    }
    // buildx's order: the --attest flags, then --provenance, then --sbom.
    for a in opts.attest.iter().chain(&opts.provenance).chain(&opts.sbom) {
        b = b.attest(a.clone());
    }
    // buildx adds mode=min provenance to what it pushes, unless told not to.
    let no_default = match std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS") {
        Ok(v) => match v.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => false,
            _ => {
                return Err(Failure::usage(format!(
                    "invalid BUILDX_NO_DEFAULT_ATTESTATIONS {v:?}: expected true or false"
                )));
            }
        },
        Err(_) => false,
    };
    if pushes && !no_default {
        b = b.default_attestations();
    }
    b = b.attestations_as_referrers(opts.attest_referrers);
    if let Some(dir) = &opts.cache_dir {
        b = b.cache_dir(dir);
    }
    b = b.no_cache(opts.no_cache);
    for c in &opts.cache_from {
        b = b.cache_from(c.clone());
    }
    for c in &opts.cache_to {
        b = b.cache_to(c.clone());
    }
    // Without an output the image ID costs hashing every new layer: only when asked for.
    b = b.image_id(
        opts.iidfile.is_some() || opts.metadata_file.is_some() || opts.progress == "quiet",
    );
    for (k, v) in &opts.labels {
        b = b.label(k, v).map_err(usage)?;
    }
    b = b.network(&opts.network).map_err(usage)?;
    // The sandbox mode: RBUILD_SANDBOX, read here and handed to the library's setter.
    if let Some(v) = std::env::var_os(builder_core::SANDBOX_MODE_ENV) {
        let mode = v
            .to_string_lossy()
            .parse::<builder_core::ModeRequest>()
            .map_err(|e| Failure::usage(e.to_string()))?;
        b = b.sandbox_mode(mode);
    }
    b = opts.dropin.apply(b).map_err(usage)?;
    b = crate::context::named_contexts(opts, b)?;
    for h in &opts.insecure_registries {
        b = b.insecure_registry(h);
    }
    for s in &opts.secrets {
        b = b.secret(&s.id, secret_source(s)).map_err(usage)?;
    }
    for s in &opts.ssh {
        let paths: Vec<std::path::PathBuf> = s.paths.iter().map(Into::into).collect();
        let source = SshSource::from_paths(&paths).map_err(usage)?;
        b = b.ssh(&s.id, source).map_err(usage)?;
    }
    b = b.allow_insecure(opts.allow.iter().any(|a| a == "security.insecure"));
    b = b.allow_network_host(opts.allow.iter().any(|a| a == "network.host"));
    if let Some(plan) = graph {
        return print_graph(&b, plan);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    let cancel = b.cancel_handle();
    let mut renderer = Renderer::new(Mode::parse(&opts.progress));
    let result = runtime.block_on(async {
        let on_signal = {
            let cancel = cancel.clone();
            async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
                }
                cancel.cancel();
            }
        };
        let watcher = tokio::spawn(on_signal);
        let r = b.run(&mut renderer).await;
        watcher.abort();
        r
    });
    renderer.finish();
    let report = result.map_err(failure)?;
    if let (Some(target), Some(dir)) = (&load, &load_dir) {
        let said = target.load(&dir.0.join("image.tar")).map_err(failure)?;
        if opts.progress != "quiet" && !said.is_empty() {
            eprintln!("{said}");
        }
    }
    // One platform: the config digest (docker's image ID). Several: the index digest, or
    // without an output (no index was made) the config digests, one per line.
    let image_id = match (&report.config_digests[..], &report.digest) {
        ([one], _) => one.clone(),
        (_, Some(index)) => index.clone(),
        (many, None) => many.join("\n"),
    };
    if let Some(p) = &opts.iidfile {
        std::fs::write(p, &image_id)
            .map_err(|e| Failure::build(format!("writing --iidfile {}: {e}", p.display())))?;
    }
    if let Some(p) = &opts.metadata_file {
        let m = metadata(&report);
        let text =
            serde_json::to_string_pretty(&serde_json::Value::Object(m)).expect("JSON serialises");
        std::fs::write(p, text)
            .map_err(|e| Failure::build(format!("writing --metadata-file {}: {e}", p.display())))?;
    }
    if opts.progress != "quiet" {
        // Without an output there is no manifest: name the image ID(s) when computed.
        let what = match (&report.digest, &report.config_digests[..]) {
            (Some(d), _) => format!("image {d}"),
            (None, []) if opts.outputs.is_empty() && !opts.push => {
                "build complete, the result is in the build cache".to_owned()
            }
            (None, []) => "build complete".to_owned(),
            (None, ids) => format!("image ID {}", ids.join(", ")),
        };
        eprintln!(
            "{what} ({} steps run, {} cached)",
            report.steps_run, report.steps_cached
        );
    } else {
        println!("{image_id}");
    }
    Ok(())
}

/// A temporary directory, removed with its contents when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a `--secret` comes from.
pub(crate) fn secret_source(s: &crate::build::SecretSpec) -> SecretSource {
    match (&s.src, &s.env) {
        (Some(src), _) => SecretSource::File(src.into()),
        (None, Some(env)) => SecretSource::Env(env.clone()),
        // buildx: no src and no env means the environment variable named like the id,
        // else a file of that name.
        (None, None) if std::env::var_os(&s.id).is_some() => SecretSource::Env(s.id.clone()),
        (None, None) => SecretSource::File(s.id.clone().into()),
    }
}

/// A failed build's error as the command reports it.
pub(crate) fn failure(e: builder_core::Error) -> Failure {
    match e {
        e if e.is_usage() => Failure::usage(e.to_string()),
        builder_core::Error::Step {
            location,
            instruction,
            reason,
            output_tail,
            ..
        } => {
            let mut msg = String::new();
            if !output_tail.is_empty() {
                msg.push_str(&format!("------\n > [{location}] {instruction}:\n"));
                for l in &output_tail {
                    msg.push_str(&format!("{l}\n"));
                }
                msg.push_str("------\n");
            }
            let at = if location.is_empty() {
                String::new()
            } else {
                format!("{location}: ")
            };
            let ins = if instruction.is_empty() {
                String::new()
            } else {
                format!("{instruction}: ")
            };
            msg.push_str(&format!("error: failed to solve: {at}{ins}{reason}"));
            msg.push_str(&not_root_hint());
            Failure::build(msg)
        }
        builder_core::Error::Cancelled => Failure::build("build cancelled"),
        e => Failure::build(format!("failed to solve: {e}{}", not_root_hint())),
    }
}

/// `--metadata-file`'s entries for one build.
pub(crate) fn metadata(
    report: &builder_core::BuildReport,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    if let Some(d) = &report.digest {
        m.insert("containerimage.digest".into(), d.clone().into());
    }
    if let Some(d) = &report.descriptor {
        m.insert("containerimage.descriptor".into(), d.clone());
    }
    if report.config_digests.len() == 1 {
        m.insert(
            "containerimage.config.digest".into(),
            report.config_digests[0].clone().into(),
        );
    }
    if !report.names.is_empty() {
        m.insert("image.name".into(), report.names.join(",").into());
    }
    m.insert("buildx.build.ref".into(), report.build_ref.clone().into());
    m
}

/// Unpacking layers (their owners) and the sandbox need root (real, or of the rootless
/// user namespace): a build that fails when run by a user who stays so says so, rather than only which file could not be chowned.
fn not_root_hint() -> String {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return String::new();
    }
    format!(
        "\nhint: rbuild runs as uid {} without a user namespace ({}=0): unpacking layers \
         and RUN steps need root or the rootless mode (unset {} to use it)",
        uid.as_raw(),
        builder_core::ROOTLESS_ENV,
        builder_core::ROOTLESS_ENV
    )
}
