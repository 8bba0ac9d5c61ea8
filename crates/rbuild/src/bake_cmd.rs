//! `rbuild bake`: the targets of compose and bake files (`docker buildx bake`), built
//! concurrently in this process over one cache.

use std::path::PathBuf;

use builder_core::bake::{self, BakeOptions, Definition, Env};
use clap::Args;

use crate::exit::Failure;
use crate::progress::{GroupRenderer, Mode};

const BAKE_HELP: &str = "\
Usage:  {usage}

{about}

Options:
{options}
";

/// Build from a file
#[derive(Debug, Args)]
#[command(
    override_usage = "rbuild bake [OPTIONS] [TARGET...]",
    help_template = BAKE_HELP,
    about = "Build from a file",
    term_width = 0,
    next_line_help = false
)]
pub(crate) struct BakeOpts {
    /// Directory of the build cache (default: "$XDG_CACHE_HOME/rbuild")
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Build definition file
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<String>,

    /// Registry reached over plain HTTP (localhost and 127.0.0.1 always are)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,

    /// Set method for evaluating build ("build", "plan": the targets' build graph, merged)
    #[arg(long = "call", value_name = "METHOD", default_value = "build",
          hide_default_value = true, value_parser = crate::call::parse_call)]
    call: crate::call::CallFunc,

    /// Let the other targets finish when one fails (by default the first failure stops them)
    #[arg(long = "keep-going")]
    keep_going: bool,

    /// List targets or variables
    #[arg(long = "list", value_name = "TYPE", value_parser = parse_list)]
    list: Option<String>,

    /// Shorthand for "--set=*.output=type=docker" (not supported: rbuild has no docker daemon)
    #[arg(long = "load")]
    load: bool,

    /// Write build result metadata to a file
    #[arg(long = "metadata-file", value_name = "PATH")]
    metadata_file: Option<PathBuf>,

    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,

    /// Print the options without building
    #[arg(long = "print")]
    print: bool,

    /// Set type of progress output ("auto", "none", "plain", "quiet", "rawjson", "tty"). Use plain to show container output (default "auto")
    #[arg(long = "progress", value_name = "TYPE", default_value = "auto",
          hide_default_value = true, hide_possible_values = true,
          value_parser = ["auto", "none", "plain", "quiet", "rawjson", "tty"])]
    progress: String,

    /// Always attempt to pull all referenced images (rbuild always resolves tags against their registry)
    #[arg(long = "pull")]
    pull: bool,

    /// Shorthand for "--set=*.output=type=registry"
    #[arg(long = "push")]
    push: bool,

    /// Override target value (e.g., "targetpattern.key=value")
    #[arg(long = "set", value_name = "stringArray")]
    set: Vec<String>,

    /// Targets or groups to build (default: the "default" group)
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
}

/// `--list targets|variables` (or `type=targets`).
fn parse_list(s: &str) -> Result<String, String> {
    let kind = s.strip_prefix("type=").unwrap_or(s);
    match kind {
        "targets" | "variables" => Ok(kind.to_owned()),
        _ => Err(format!(
            "invalid list type {kind:?}: expected targets or variables"
        )),
    }
}

fn definition_error(e: bake::DefinitionError) -> Failure {
    match e {
        bake::DefinitionError::Set { .. }
        | bake::DefinitionError::UnknownTarget(_)
        | bake::DefinitionError::NoFile(_) => Failure::usage(e.to_string()),
        e => Failure::build(e.to_string()),
    }
}

/// The files read, the definition and the selected targets (with `--set` applied).
fn resolve(opts: &BakeOpts, env: &Env) -> Result<(Definition, Vec<String>), Failure> {
    let files = if opts.files.is_empty() {
        bake::default_files(std::path::Path::new(".")).map_err(definition_error)?
    } else {
        opts.files.clone()
    };
    let mut def = bake::load_files(&files, env).map_err(definition_error)?;
    let selected = bake::select(&def, &opts.targets).map_err(definition_error)?;
    let mut sets = opts.set.clone();
    if opts.no_cache {
        sets.push("*.no-cache=true".to_owned());
    }
    bake::apply_set(&mut def, &selected, &sets).map_err(definition_error)?;
    // buildx: SOURCE_DATE_EPOCH from the environment, unless the target sets it.
    if let Some(epoch) = env.get("SOURCE_DATE_EPOCH") {
        for name in &selected {
            if let Some(t) = def.target.get_mut(name) {
                t.args
                    .entry("SOURCE_DATE_EPOCH".to_owned())
                    .or_insert_with(|| epoch.clone());
            }
        }
    }
    Ok((def, selected))
}

fn list(def: &Definition, kind: &str) {
    if kind == "variables" {
        println!("VARIABLE\tTYPE\tVALUE\tDESCRIPTION");
        for v in &def.variables {
            println!(
                "{}\t{}\t{}\t{}",
                v.name,
                v.type_name,
                v.value,
                v.description.as_deref().unwrap_or("")
            );
        }
        return;
    }
    println!("TARGET\tDESCRIPTION");
    for (name, g) in &def.group {
        println!("{name}\t{}", g.description.as_deref().unwrap_or(""));
    }
    for (name, t) in &def.target {
        if !def.group.contains_key(name) {
            println!("{name}\t{}", t.description.as_deref().unwrap_or(""));
        }
    }
}

/// Runs `rbuild bake`.
pub(crate) fn run(opts: &BakeOpts) -> Result<(), Failure> {
    if opts.load {
        return Err(Failure::usage(
            "--load is not supported by rbuild (it has no docker daemon to load into): use \
             --push, or --set '*.output=type=docker,dest=FILE' and `docker load -i FILE`",
        ));
    }
    let env = Env::from_process();
    let (def, selected) = resolve(opts, &env)?;
    if let Some(kind) = &opts.list {
        list(&def, kind);
        return Ok(());
    }
    if opts.print {
        let printed = bake::printed(&def, &opts.targets, &selected);
        let text = serde_json::to_string_pretty(&printed)
            .map_err(|e| Failure::build(format!("failed to encode the definition: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let bake_opts = BakeOptions {
        push: opts.push,
        cache_dir: opts.cache_dir.clone(),
        no_cache: opts.no_cache,
        image_id: opts.metadata_file.is_some(),
        insecure_registries: opts.insecure_registries.clone(),
        base_dir: None,
    };
    let group = bake::group(&def, &selected, &bake_opts)
        .map_err(|e| Failure::usage(e.to_string()))?
        .keep_going(opts.keep_going);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    match opts.call.name.as_str() {
        "build" => {}
        "plan" => {
            // One graph for every target: the steps they share appear once.
            let graph = runtime
                .block_on(group.graph())
                .map_err(crate::run::failure)?;
            if opts.call.json {
                let text = serde_json::to_string_pretty(&graph)
                    .map_err(|e| Failure::build(format!("failed to encode the graph: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", graph.to_text());
            }
            return Ok(());
        }
        other => {
            return Err(Failure::usage(format!(
                "--call {other} is not supported by rbuild bake (build or plan)"
            )));
        }
    }
    let cancels = group.cancel_handles();
    let mut renderer = GroupRenderer::new(Mode::parse(&opts.progress));
    let results = runtime.block_on(async {
        let watcher = tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
            for c in &cancels {
                c.cancel();
            }
        });
        let r = group.run(&mut renderer).await;
        watcher.abort();
        r
    });
    let mut metadata = serde_json::Map::new();
    let mut failures = Vec::new();
    let mut cancelled = Vec::new();
    for r in results {
        match r.result {
            Ok(report) => {
                if opts.progress != "quiet" {
                    let what = match &report.digest {
                        Some(d) => format!("image {d}"),
                        None => "build complete".to_owned(),
                    };
                    eprintln!(
                        "{}: {what} ({} steps run, {} cached)",
                        r.name, report.steps_run, report.steps_cached
                    );
                }
                metadata.insert(
                    r.name.clone(),
                    serde_json::Value::Object(crate::run::metadata(&report)),
                );
            }
            Err(builder_core::Error::Cancelled) => cancelled.push(r.name),
            Err(e) => failures.push((r.name, crate::run::failure(e))),
        }
    }
    // Targets stopped because another failed: that one's error is the news.
    for name in &cancelled {
        eprintln!("{name}: cancelled");
    }
    if failures.is_empty() && !cancelled.is_empty() {
        return Err(Failure::build("build cancelled"));
    }
    if let Some(p) = &opts.metadata_file {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(metadata))
            .expect("JSON serialises");
        std::fs::write(p, text)
            .map_err(|e| Failure::build(format!("writing --metadata-file {}: {e}", p.display())))?;
    }
    match failures.len() {
        0 => Ok(()),
        1 => {
            let (name, f) = failures.remove(0);
            Err(prefix(&name, f))
        }
        _ => {
            let msgs: Vec<String> = failures
                .into_iter()
                .map(|(name, f)| match prefix(&name, f) {
                    Failure::Usage(m) | Failure::Build(m) => m,
                    Failure::Status(code) => format!("target {name}: exit status {code}"),
                })
                .collect();
            Err(Failure::build(msgs.join("\n")))
        }
    }
}

/// A target's failure, naming it.
fn prefix(name: &str, f: Failure) -> Failure {
    match f {
        Failure::Usage(m) => Failure::Usage(format!("target {name}: {m}")),
        Failure::Build(m) => {
            let m = m.strip_prefix("error: ").unwrap_or(&m);
            Failure::Build(format!("error: target {name}: {m}"))
        }
        Failure::Status(code) => Failure::Status(code),
    }
}
