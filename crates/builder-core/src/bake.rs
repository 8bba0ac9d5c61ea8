//! Bake definitions (the `bake` crate's resolved targets) turned into builds: one [`Build`] per
//! target, all in one [`BuildGroup`] over one cache.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use builder_core::bake::{BakeOptions, Env, group, load_files, select};
//! use builder_core::{GroupSink, ProgressEvent};
//! struct Print;
//! impl GroupSink for Print {
//!     fn event(&mut self, target: &str, ev: &ProgressEvent) { eprintln!("{target}: {ev:?}") }
//! }
//! let env = Env::from_process();
//! let def = load_files(&["docker-bake.hcl".to_owned()], &env)?;
//! let selected = select(&def, &[])?;
//! let opts = BakeOptions { push: true, ..BakeOptions::default() };
//! for r in group(&def, &selected, &opts)?.run(&mut Print).await {
//!     println!("{}: {}", r.name, r.result.is_ok());
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

/// The definitions: reading files, selecting targets, `--set`, `--print`.
pub use ::bake::{
    Attrs, DEFAULT_FILES, Definition, Env, Error as DefinitionError, Group, Pos, Target, Variable,
    apply_set, default_files, load_files, load_text, printed, select,
};

use crate::engine::{Build, BuildGroup, Error, ExportKind, ExportSpec, SecretSource, SshSource};

/// What applies to every target of a bake (the command line's options).
#[derive(Debug, Clone, Default)]
pub struct BakeOptions {
    /// Push every target (`--push`): a registry output is added where there is none.
    pub push: bool,
    /// The cache directory (default [`crate::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Build every target without the cache (`--no-cache`).
    pub no_cache: bool,
    /// Compute the image ID even without an output (for `--metadata-file`).
    pub image_id: bool,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The directory relative paths of the definition are taken from (default: the
    /// working directory, as buildx).
    pub base_dir: Option<PathBuf>,
}

fn invalid(target: &str, key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        what: "bake target",
        value: format!("{target}.{key}"),
        reason: reason.into(),
    }
}

/// `k=v,...` from an attribute list (as `--cache-from`, `--output` take them).
fn join_attrs(a: &::bake::Attrs) -> String {
    a.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The build of one resolved target.
pub fn build(name: &str, t: &::bake::Target, opts: &BakeOptions) -> Result<Build, Error> {
    let base = opts.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let context = t.context.as_deref().unwrap_or(".");
    let secret_source = |s: &::bake::Attrs, id: &str| {
        let kind = s.get("type").map(String::as_str);
        match (s.get("src"), s.get("env"), kind) {
            (Some(src), _, Some("env")) => SecretSource::Env(src.clone()),
            (Some(src), _, _) => SecretSource::File(base.join(src)),
            (None, Some(env), _) => SecretSource::Env(env.clone()),
            (None, None, _) if std::env::var_os(id).is_some() => SecretSource::Env(id.to_owned()),
            (None, None, _) => SecretSource::File(base.join(id)),
        }
    };
    let ctx_err = |e: Error| invalid(name, "context", e.to_string());
    let spec = crate::remote_context::ContextSpec::parse(context).map_err(ctx_err)?;
    let (mut b, context) = if spec.is_remote() && spec != crate::remote_context::ContextSpec::Stdin
    {
        // A git or HTTP context: fetched with the target's GIT_AUTH_* secrets.
        let sources: Vec<(String, SecretSource)> = t
            .secret
            .iter()
            .filter_map(|s| s.get("id").map(|id| (id.clone(), secret_source(s, id))))
            .collect();
        let auth = crate::remote_context::GitAuth::from_secrets(
            sources.iter().map(|(id, s)| (id.as_str(), s)),
        )
        .map_err(ctx_err)?;
        let keep = t
            .args
            .get("BUILDKIT_CONTEXT_KEEP_GIT_DIR")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
        let fetched = crate::remote_context::fetch(&spec, &auth, keep, None).map_err(ctx_err)?;
        let dir = fetched.path().to_owned();
        (Build::from_remote(fetched).map_err(ctx_err)?, dir)
    } else {
        let context = base.join(context);
        (Build::new(&context).map_err(ctx_err)?, context)
    };
    let wrap = |key: &'static str| move |e: Error| invalid(name, key, e.to_string());
    if let Some(text) = &t.dockerfile_inline {
        b = b.dockerfile_text("Dockerfile", text.clone());
    } else if let Some(df) = &t.dockerfile {
        let p = Path::new(df);
        let p = if p.is_absolute() {
            p.to_owned()
        } else {
            context.join(p)
        };
        b = b.dockerfile(p).map_err(wrap("dockerfile"))?;
    }
    if !t.contexts.is_empty() {
        let names: Vec<&str> = t.contexts.keys().map(String::as_str).collect();
        return Err(invalid(
            name,
            "contexts",
            format!(
                "named build contexts ({}) are not supported by rbuild yet",
                names.join(", ")
            ),
        ));
    }
    for a in &t.annotations {
        b = b.annotation(a).map_err(wrap("annotations"))?;
    }
    if !t.platforms.is_empty() {
        b = b.platforms(&t.platforms).map_err(wrap("platforms"))?;
    }
    for (k, v) in &t.args {
        b = b.build_arg(k, v).map_err(wrap("args"))?;
    }
    if let Some(s) = &t.target {
        b = b.target(s);
    }
    for tag in &t.tags {
        b = b.tag(tag).map_err(wrap("tags"))?;
    }
    for (k, v) in &t.labels {
        b = b.label(k, v).map_err(wrap("labels"))?;
    }
    let mut outputs = Vec::new();
    for o in &t.output {
        let spec = ExportSpec::from_attrs(o).map_err(wrap("output"))?;
        outputs.push(spec);
    }
    if opts.push && !outputs.iter().any(|o| o.kind == ExportKind::Registry) {
        outputs.push(ExportSpec::registry());
    }
    for o in outputs {
        b = b.output(o);
    }
    for c in &t.cache_from {
        b = b.cache_from(join_attrs(c).parse().map_err(wrap("cache-from"))?);
    }
    for c in &t.cache_to {
        b = b.cache_to(join_attrs(c).parse().map_err(wrap("cache-to"))?);
    }
    for s in &t.secret {
        let id = s
            .get("id")
            .ok_or_else(|| invalid(name, "secret", "a secret needs id="))?;
        b = b.secret(id, secret_source(s, id)).map_err(wrap("secret"))?;
    }
    for s in &t.ssh {
        let id = s.get("id").map_or("default", String::as_str);
        let paths: Vec<PathBuf> = s
            .get("paths")
            .map(|p| p.split(',').map(|p| base.join(p)).collect())
            .unwrap_or_default();
        let source = SshSource::from_paths(&paths).map_err(wrap("ssh"))?;
        b = b.ssh(id, source).map_err(wrap("ssh"))?;
    }
    // `pull`: rbuild resolves every tag against its registry on each build (only
    // digest-pinned bases are served from the store), which is what `pull = true` asks;
    // `pull = false` changes nothing either.
    b = b.no_cache(opts.no_cache || t.no_cache == Some(true));
    if let Some(dir) = &opts.cache_dir {
        b = b.cache_dir(dir);
    }
    b = b.image_id(opts.image_id);
    for h in &opts.insecure_registries {
        b = b.insecure_registry(h);
    }
    // The target as a whole (a push needs a name, a docker archive one platform).
    b.validate().map_err(|e| match e {
        Error::InvalidOutput { reason, .. } => invalid(name, "output", reason),
        e => e,
    })?;
    Ok(b)
}

/// The builds of the `selected` targets of `def`, in one group (their order kept).
pub fn group(
    def: &::bake::Definition,
    selected: &[String],
    opts: &BakeOptions,
) -> Result<BuildGroup, Error> {
    let mut g = BuildGroup::new();
    for name in selected {
        let t = def.target.get(name).ok_or_else(|| Error::InvalidOption {
            what: "bake target",
            value: name.clone(),
            reason: "no such target".to_owned(),
        })?;
        g = g.add(name, build(name, t, opts)?);
    }
    Ok(g)
}
