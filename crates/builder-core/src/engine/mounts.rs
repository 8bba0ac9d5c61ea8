//! `RUN --mount`: the typed mounts of a RUN become sandbox mounts, their part of the step's
//! cache key, and the environment they add.
//!
//! Two phases. [`prepare`] validates every mount and describes it for the cache key before
//! the cache is looked up: a mount's *definition* (type, target, id, options; the content of
//! the build context a bind mount shows; the cache key of the stage it comes from), never
//! the content of a cache directory or of a secret. [`Prepared::activate`] runs only on a
//! cache miss: it fills and locks cache directories, writes secrets to a private
//! memory-backed file, starts SSH agent proxies, and returns the sandbox mounts with guards
//! that tear it all down when dropped.
//!
//! Every path is resolved inside its own root: a target inside the step's root (lexically
//! here, then by the sandbox, which resolves symlinks in the root's namespace), a `source`
//! inside the build context (symlinks followed on the host, and refused when they lead out
//! of it: the RUN --mount CVEs of BuildKit and Buildah came from following them) or inside
//! the stage it comes from.
//!
//! Cache mounts live in `<cache>/other/cache-mounts/<sha256 of id and seed>/<n>/`, counted
//! by `rbuild du` and removed by `rbuild prune --all`. Each instance `n` has a lock file
//! `<n>.lock`: `sharing=shared` takes it shared, `locked` exclusive (so concurrent users
//! wait, in this process or another), `private` takes the first instance it can lock
//! exclusively without waiting and creates a new one when all are busy.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dockerfile::{CacheSharing, Mount as DfMount, MountSpec, Spanned};
use layer_cache::{Cache, EntryRef, Lease};
use rustix::fs::{FlockOperation, flock};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{Build, Error, SecretSource, SshSource};
use crate::cachekey::CacheKey;
use crate::copy::{BuildContext, CopyParams, CopySource};
use crate::fsview::LayeredView;
use crate::sandbox::{BindAccess, CancelHandle, Mount, MountSource};

/// The `other/` directory of the cache that holds cache mounts.
pub(crate) const CACHE_MOUNTS: &str = "cache-mounts";
/// Symlink hops allowed while resolving a context path (Linux's MAXSYMLINKS).
const MAX_HOPS: usize = 40;
/// Root permissions of a tmpfs mount (what BuildKit uses).
const TMPFS_MODE: u32 = 0o1777;

/// Build-wide inputs of RUN steps that this module handles: secrets and SSH agents (the
/// `network.host` entitlement is checked with the step's key, see `graph::keys::exec`).
#[derive(Debug, Clone, Default)]
pub(super) struct RunOptions {
    secrets: BTreeMap<String, SecretSource>,
    ssh: BTreeMap<String, SshSource>,
}

impl RunOptions {
    /// The options of a build.
    pub(super) fn new(b: &Build) -> Self {
        RunOptions {
            secrets: b.secrets.clone(),
            ssh: b.ssh.clone(),
        }
    }
}

/// The `from` of a bind or cache mount: a stage or an image the engine must resolve.
pub(crate) fn mount_from(spec: &MountSpec) -> Option<&str> {
    match spec.literal.as_ref()? {
        DfMount::Bind(b) => b.from.as_deref(),
        DfMount::Cache(c) => c.from.as_deref(),
        _ => None,
    }
}

/// One mount, validated, before anything is materialised.
#[derive(Debug, Clone)]
enum Planned {
    /// A bind mount of the build context (or a path in it).
    Context {
        target: String,
        /// The resolved path in the context (no symlinks left).
        rel: Vec<OsString>,
        is_dir: bool,
        readonly: bool,
    },
    /// A bind mount of a path in another stage or an image (the mount's `from`).
    Layers {
        target: String,
        /// Index of the mount (and of its `from` source).
        from: usize,
        path: String,
        readonly: bool,
    },
    /// A persistent cache directory.
    Cache {
        target: String,
        /// The directory's name under `other/cache-mounts`.
        dir: String,
        sharing: CacheSharing,
        readonly: bool,
        init: CacheInit,
    },
    /// A fresh tmpfs.
    Tmpfs { target: String, size: Option<u64> },
    /// A build secret, as a file and/or an environment variable.
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// An SSH agent socket.
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// How a new cache directory starts.
#[derive(Debug, Clone)]
enum CacheInit {
    /// Empty, with this mode and owner.
    Empty { mode: u32, uid: u32, gid: u32 },
    /// A copy of `path` in the mount's `from` stage.
    Seed { from: usize, path: String },
}

/// The mounts of one RUN, validated and described for its cache key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    planned: Vec<Planned>,
    key: Vec<Value>,
}

impl Prepared {
    /// What the mounts add to the RUN's cache key (definitions, never secret or cache
    /// contents), in the order written.
    pub(crate) fn key(&self) -> &[Value] {
        &self.key
    }

    /// The directory names (under `other/cache-mounts`) of the cache mounts.
    pub(crate) fn cache_dirs(&self) -> Vec<String> {
        self.planned
            .iter()
            .filter_map(|p| match p {
                Planned::Cache { dir, .. } => Some(dir.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Validates the mounts of a RUN and describes them for its cache key. `from_keys[i]` is the
/// cache key of the stage or image that mount `i` names with `from` (`None` without one);
/// `cwd` is the step's working directory (relative targets are below it).
pub(crate) async fn prepare(
    specs: &[MountSpec],
    from_keys: &[Option<CacheKey>],
    cwd: &str,
    context: &Arc<BuildContext>,
) -> Result<Prepared, String> {
    let mut out = Prepared::default();
    let mut targets = BTreeSet::new();
    let mut ssh_count = 0;
    for (i, spec) in specs.iter().enumerate() {
        let raw = &spec.raw.value;
        let m = spec
            .literal
            .as_ref()
            .ok_or_else(|| format!("--mount={raw}: the mount was not expanded"))?;
        let from_key = || {
            from_keys
                .get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| format!("--mount={raw}: its from source was not resolved"))
        };
        let (planned, key) = match m {
            DfMount::Bind(b) => {
                let target = clean_target(&b.target, cwd)?;
                match &b.from {
                    Some(_) => {
                        let path = clean_source(b.source.as_deref().unwrap_or("/"), raw)?;
                        let key = json!({
                            "type": "bind",
                            "target": target,
                            "from": from_key()?.as_str(),
                            "source": path,
                            "readonly": b.readonly,
                        });
                        let p = Planned::Layers {
                            target,
                            from: i,
                            path,
                            readonly: b.readonly,
                        };
                        (p, key)
                    }
                    None => {
                        let source = b.source.clone().unwrap_or_default();
                        let ctx = context.clone();
                        let (rel, is_dir, inputs) =
                            tokio::task::spawn_blocking(move || context_source(&ctx, &source))
                                .await
                                .map_err(|e| format!("internal task failed: {e}"))??;
                        let key = json!({
                            "type": "bind",
                            "target": target,
                            "context": inputs,
                            "readonly": b.readonly,
                        });
                        let p = Planned::Context {
                            target,
                            rel,
                            is_dir,
                            readonly: b.readonly,
                        };
                        (p, key)
                    }
                }
            }
            DfMount::Cache(c) => {
                let target = clean_target(&c.target, cwd)?;
                // BuildKit's default id is the target as written, cleaned.
                let id = c.id.clone().unwrap_or_else(|| go_clean(&c.target));
                let (init, seed) = match &c.from {
                    Some(_) => {
                        let path = clean_source(c.source.as_deref().unwrap_or("/"), raw)?;
                        let seed = json!({ "from": from_key()?.as_str(), "source": path });
                        (CacheInit::Seed { from: i, path }, seed)
                    }
                    None => {
                        let (mode, uid, gid) = (
                            c.mode.unwrap_or(0o755),
                            c.uid.unwrap_or(0),
                            c.gid.unwrap_or(0),
                        );
                        if mode > 0o7777 {
                            return Err(format!("--mount={raw}: mode {mode:o} is too large"));
                        }
                        let seed = json!({ "mode": mode, "uid": uid, "gid": gid });
                        (CacheInit::Empty { mode, uid, gid }, seed)
                    }
                };
                let dir = hex::encode(sha2::Sha256::digest(
                    serde_json::to_vec(&json!({ "id": id, "init": seed }))
                        .expect("JSON values serialise"),
                ));
                let key = json!({
                    "type": "cache",
                    "target": target,
                    "id": id,
                    "init": seed,
                    "sharing": sharing_name(c.sharing),
                    "readonly": c.readonly,
                });
                let p = Planned::Cache {
                    target,
                    dir,
                    sharing: c.sharing,
                    readonly: c.readonly,
                    init,
                };
                (p, key)
            }
            DfMount::Tmpfs(t) => {
                let target = clean_target(&t.target, cwd)?;
                let key = json!({ "type": "tmpfs", "target": target, "size": t.size });
                (
                    Planned::Tmpfs {
                        target,
                        size: t.size,
                    },
                    key,
                )
            }
            DfMount::Secret(s) => {
                let id = match (&s.id, &s.target) {
                    (Some(id), _) => id.clone(),
                    (None, Some(t)) => go_base(t),
                    (None, None) => return Err("one of source, target required".into()),
                };
                if id.is_empty() || id == "/" {
                    return Err(format!("--mount={raw}: invalid secret id {id:?}"));
                }
                let target = match (&s.target, &s.env) {
                    (Some(t), _) => Some(clean_target(t, cwd)?),
                    (None, None) => Some(format!("/run/secrets/{}", go_base(&id))),
                    (None, Some(_)) => None,
                };
                if let Some(env) = &s.env {
                    if env.is_empty() || env.contains(['=', '\0']) {
                        return Err(format!(
                            "--mount={raw}: {env:?} is not a valid variable name"
                        ));
                    }
                }
                let (mode, uid, gid) = (
                    s.mode.unwrap_or(0o400),
                    s.uid.unwrap_or(0),
                    s.gid.unwrap_or(0),
                );
                if mode > 0o7777 {
                    return Err(format!("--mount={raw}: mode {mode:o} is too large"));
                }
                // The secret's id only: its value never enters a key.
                let key = json!({
                    "type": "secret",
                    "id": id,
                    "target": target,
                    "env": s.env,
                    "required": s.required,
                    "mode": mode,
                    "uid": uid,
                    "gid": gid,
                });
                let p = Planned::Secret {
                    id,
                    target,
                    env: s.env.clone(),
                    required: s.required,
                    mode,
                    uid,
                    gid,
                };
                (p, key)
            }
            DfMount::Ssh(s) => {
                let id = s.id.clone().unwrap_or_else(|| "default".into());
                let target = match &s.target {
                    Some(t) => clean_target(t, cwd)?,
                    None => format!("/run/buildkit/ssh_agent.{ssh_count}"),
                };
                ssh_count += 1;
                let (mode, uid, gid) = (
                    s.mode.unwrap_or(0o600),
                    s.uid.unwrap_or(0),
                    s.gid.unwrap_or(0),
                );
                if mode > 0o7777 {
                    return Err(format!("--mount={raw}: mode {mode:o} is too large"));
                }
                let key = json!({
                    "type": "ssh",
                    "id": id,
                    "target": target,
                    "required": s.required,
                    "mode": mode,
                    "uid": uid,
                    "gid": gid,
                });
                let p = Planned::Ssh {
                    id,
                    target,
                    required: s.required,
                    mode,
                    uid,
                    gid,
                };
                (p, key)
            }
            _ => return Err(format!("--mount={raw}: this mount type is not supported")),
        };
        if let Some(t) = planned.target() {
            if !targets.insert(t.to_owned()) {
                return Err(format!("duplicate mount target {t}"));
            }
        }
        out.planned.push(planned);
        out.key.push(key);
    }
    Ok(out)
}

impl Planned {
    fn target(&self) -> Option<&str> {
        match self {
            Planned::Context { target, .. }
            | Planned::Layers { target, .. }
            | Planned::Cache { target, .. }
            | Planned::Tmpfs { target, .. }
            | Planned::Ssh { target, .. } => Some(target),
            Planned::Secret { target, .. } => target.as_deref(),
        }
    }
}

fn sharing_name(s: CacheSharing) -> &'static str {
    match s {
        CacheSharing::Shared => "shared",
        CacheSharing::Private => "private",
        CacheSharing::Locked => "locked",
    }
}

/// Go's `path.Base`.
fn go_base(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { ".".into() } else { "/".into() };
    }
    t.rsplit('/').next().unwrap_or(t).to_owned()
}

/// Go's `filepath.Clean` (lexical; `..` at the root of an absolute path stays at the root).
fn go_clean(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let s = out.join("/");
    match (abs, s.is_empty()) {
        (true, _) => format!("/{s}"),
        (false, true) => ".".into(),
        (false, false) => s,
    }
}

/// Cleans an absolute path lexically; `..` above the root is an escape
/// ([`crate::fsview::clean_path`], the cleaner that refuses escapes).
fn clean_abs(path: &str) -> Option<String> {
    let parts = crate::fsview::clean_path(path).ok()?;
    let mut out = String::from("/");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&p.to_string_lossy());
    }
    Some(out)
}

/// A mount target made absolute (relative ones are below the working directory) and
/// cleaned; a target that climbs above the root or is the root itself is refused.
fn clean_target(target: &str, cwd: &str) -> Result<String, String> {
    if target.is_empty() {
        return Err("mount target is required".into());
    }
    if target.contains('\0') {
        return Err(format!("invalid mount target {target:?}"));
    }
    let joined = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{}/{target}", cwd.trim_end_matches('/'))
    };
    let clean = clean_abs(&joined).ok_or_else(|| {
        format!("mount target {target:?} escapes the root filesystem: '..' leads above '/'")
    })?;
    if clean == "/" {
        return Err(format!("invalid mount target {target:?}"));
    }
    Ok(clean)
}

/// A `source` inside a stage or image, absolute and cleaned; `..` above its root is refused
/// (the sandbox then resolves symlinks inside that root, refusing those that lead out).
fn clean_source(source: &str, raw: &str) -> Result<String, String> {
    if source.contains('\0') {
        return Err(format!("--mount={raw}: invalid source {source:?}"));
    }
    clean_abs(&format!("/{source}")).ok_or_else(|| {
        format!("--mount={raw}: source {source:?} escapes its root: '..' leads above '/'")
    })
}

/// Resolves `source` inside the build context, following symlinks on the host and refusing
/// any that lead out of it (an absolute target, or `..` above the context's root). Returns
/// the resolved relative path, whether it is a directory, and its cache-key description
/// (the content of what the mount shows, after `.dockerignore`).
fn context_source(
    ctx: &BuildContext,
    source: &str,
) -> Result<(Vec<OsString>, bool, Value), String> {
    let root = ctx.root();
    let shown = if source.is_empty() { "." } else { source };
    let escape = |why: String| format!("mount source {shown:?} escapes the build context: {why}");
    let mut pending: Vec<OsString> = source
        .split('/')
        .filter(|c| !c.is_empty())
        .map(OsString::from)
        .rev()
        .collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == "." {
            continue;
        }
        if c == ".." {
            if done.pop().is_none() {
                return Err(escape("'..' leads above its root".into()));
            }
            continue;
        }
        done.push(c);
        let host: PathBuf = std::iter::once(root.as_os_str().to_owned())
            .chain(done.iter().cloned())
            .collect();
        let meta = match fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                return Err(format!(
                    "mount source {shown:?}: not found in the build context"
                ));
            }
            Err(e) => return Err(format!("{}: {e}", host.display())),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_HOPS {
                return Err(format!(
                    "mount source {shown:?}: too many levels of symbolic links"
                ));
            }
            let link = fs::read_link(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            let rel: PathBuf = done.iter().collect();
            if link.is_absolute() {
                return Err(escape(format!(
                    "the symlink {} points to {}",
                    rel.display(),
                    link.display()
                )));
            }
            done.pop();
            let mut parts: Vec<OsString> = link
                .as_os_str()
                .as_bytes()
                .split(|b| *b == b'/')
                .filter(|c| !c.is_empty())
                .map(|c| OsString::from_vec(c.to_vec()))
                .collect();
            parts.reverse();
            // `..` in the link is checked against the root as the walk goes on.
            pending.extend(parts);
        }
    }
    let host: PathBuf = std::iter::once(root.as_os_str().to_owned())
        .chain(done.iter().cloned())
        .collect();
    let meta = fs::metadata(&host).map_err(|e| format!("{}: {e}", host.display()))?;
    let rel = rel_string(&done);
    if !done.is_empty()
        && !ctx
            .visible(&rel, meta.is_dir())
            .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "mount source {shown:?}: not found in the build context (excluded by {})",
            ctx.ignore_file()
                .map_or_else(|| ".dockerignore".into(), |p| p.display().to_string())
        ));
    }
    let params = context_params(&rel).map_err(|e| e.to_string())?;
    let inputs =
        crate::copy::cache_inputs(&params, &CopySource::Context(ctx)).map_err(|e| e.to_string())?;
    Ok((done, meta.is_dir(), inputs))
}

fn rel_string(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `COPY /<rel> /`: what a context bind mount shows, as COPY computes and writes it.
fn context_params(rel: &str) -> Result<CopyParams, crate::copy::CopyError> {
    let span = dockerfile::Span::default();
    let c = dockerfile::CopyInstruction {
        sources: vec![dockerfile::Source::Path(Spanned::new(
            format!("/{rel}"),
            span,
        ))],
        dest: Spanned::new("/".to_owned(), span),
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        json: false,
    };
    CopyParams::from_copy(&c, "/")
}

/// What keeps an activated mount usable; dropping it tears the mount's host side down.
enum Guard {
    /// A temporary directory (secret files, SSH sockets).
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// A flock on a cache instance.
    Lock(#[allow(dead_code)] File),
    /// An SSH proxy's accept loop.
    Task(tokio::task::JoinHandle<()>),
    /// An `ssh-agent` rbuild started (killed on drop).
    Child(#[allow(dead_code)] tokio::process::Child),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Task(t) = self {
            t.abort();
        }
    }
}

/// The mounts of a running step and what keeps them alive.
pub(super) struct Active {
    mounts: Vec<Mount>,
    /// Variables set for the step, overriding ENV (secrets as `env=`).
    env: Vec<(String, String)>,
    /// Variables set unless ENV has them (`SSH_AUTH_SOCK`).
    default_env: Vec<(String, String)>,
    _guards: Vec<Guard>,
}

impl Active {
    /// The sandbox mounts, parents before children.
    pub(super) fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Adds the mounts' variables to the step's environment.
    pub(super) fn apply_env(&self, env: &mut BTreeMap<String, String>) {
        for (k, v) in &self.env {
            env.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.default_env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Where a step's mounts come from, for [`Prepared::activate`].
pub(super) struct Sources<'a> {
    /// Build-wide options (secrets, SSH).
    pub(super) opts: &'a RunOptions,
    /// The cache (cache mounts live in it).
    pub(super) cache: &'a Cache,
    /// The build's lease (it holds the cache mounts against a concurrent prune).
    pub(super) lease: &'a Lease,
    /// The build context.
    pub(super) context: &'a Arc<BuildContext>,
    /// The snapshot directories (topmost first) of each mount's `from`, by mount index.
    pub(super) from_lowers: &'a [Option<Vec<PathBuf>>],
    /// A private directory of the step for copies, removed after it.
    pub(super) scratch: &'a Path,
    /// The build's cancel handle (waiting for a locked cache stops on cancel).
    pub(super) cancel: &'a CancelHandle,
}

fn failed(reason: impl Into<String>) -> Error {
    Error::invalid_step(reason)
}

fn io_failed(what: &str, path: &Path, e: &io::Error) -> Error {
    failed(format!("{what} {}: {e}", path.display()))
}

impl Prepared {
    /// Makes the mounts real for one run of the step (on a cache miss).
    pub(super) async fn activate(&self, src: &Sources<'_>) -> Result<Active, Error> {
        let mut planned: Vec<&Planned> = self.planned.iter().collect();
        // Parents before children: `/a` is mounted before `/a/b` (BuildKit sorts too).
        planned.sort_by(|a, b| a.target().cmp(&b.target()));
        let mut active = Active {
            mounts: Vec::new(),
            env: Vec::new(),
            default_env: Vec::new(),
            _guards: Vec::new(),
        };
        let mut private_dir: Option<PathBuf> = None;
        for (n, p) in planned.into_iter().enumerate() {
            match p {
                Planned::Context {
                    target,
                    rel,
                    is_dir,
                    readonly,
                } => {
                    let host: PathBuf = std::iter::once(src.context.root().as_os_str().to_owned())
                        .chain(rel.iter().cloned())
                        .collect();
                    let filtered = *is_dir && !src.context.filter().is_pass_through();
                    let (source, access) = if filtered {
                        // What .dockerignore hides is not in the mount (DI-06): a filtered
                        // copy, private to this step, so writes to it are discarded anyway.
                        let out = src.scratch.join(format!("mount-{n}"));
                        fs::create_dir(&out).map_err(|e| io_failed("mkdir", &out, &e))?;
                        let (ctx, rel_s, out2) =
                            (src.context.clone(), rel_string(rel), out.clone());
                        tokio::task::spawn_blocking(move || -> Result<(), String> {
                            let params = context_params(&rel_s).map_err(|e| e.to_string())?;
                            crate::copy::execute(&params, &CopySource::Context(&ctx), None, &out2)
                                .map_err(|e| e.to_string())?;
                            let mode = fs::metadata(&host).map_err(|e| e.to_string())?.mode();
                            fs::set_permissions(&out2, fs::Permissions::from_mode(mode & 0o7777))
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .map_err(|e| failed(format!("internal task failed: {e}")))?
                        .map_err(|e| {
                            failed(format!("mount of the build context at {target}: {e}"))
                        })?;
                        let access = if *readonly {
                            BindAccess::ReadOnly
                        } else {
                            BindAccess::ReadWrite
                        };
                        (out, access)
                    } else {
                        let access = if *readonly {
                            BindAccess::ReadOnly
                        } else {
                            BindAccess::Discard
                        };
                        (host, access)
                    };
                    active.mounts.push(Mount::bind(
                        MountSource::Host(source),
                        target.clone(),
                        access,
                    ));
                }
                Planned::Layers {
                    target,
                    from,
                    path,
                    readonly,
                } => {
                    let lowers =
                        src.from_lowers
                            .get(*from)
                            .cloned()
                            .flatten()
                            .ok_or_else(|| {
                                failed(format!(
                                    "mount at {target}: its from source is not available"
                                ))
                            })?;
                    let access = if *readonly {
                        BindAccess::ReadOnly
                    } else {
                        BindAccess::Discard
                    };
                    active.mounts.push(Mount::bind(
                        MountSource::Layers {
                            lowers,
                            path: path.clone(),
                        },
                        target.clone(),
                        access,
                    ));
                }
                Planned::Cache {
                    target,
                    dir,
                    sharing,
                    readonly,
                    init,
                } => {
                    let (instance, lock) = self.cache_instance(src, dir, *sharing, init).await?;
                    active._guards.push(Guard::Lock(lock));
                    let access = if *readonly {
                        BindAccess::ReadOnly
                    } else {
                        BindAccess::ReadWrite
                    };
                    active.mounts.push(Mount::bind(
                        MountSource::Host(instance),
                        target.clone(),
                        access,
                    ));
                }
                Planned::Tmpfs { target, size } => {
                    active
                        .mounts
                        .push(Mount::tmpfs(target.clone(), *size, TMPFS_MODE));
                }
                Planned::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(value) = read_secret(src.opts, id)? else {
                        if *required {
                            return Err(failed(format!("secret {id}: not found")));
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        let text = String::from_utf8(value.clone())
                            .ok()
                            .filter(|t| !t.contains('\0'))
                            .ok_or_else(|| {
                                failed(format!(
                                    "secret {id}: cannot be the variable {var}: it is not text without NUL bytes"
                                ))
                            })?;
                        active.env.push((var.clone(), text));
                    }
                    if let Some(target) = target {
                        let dir = match &private_dir {
                            Some(d) => d.clone(),
                            None => {
                                let d = private_tempdir()?;
                                let p = d.path().to_owned();
                                active._guards.push(Guard::Dir(d));
                                private_dir = Some(p.clone());
                                p
                            }
                        };
                        let file = dir.join(format!("secret-{n}"));
                        write_private(&file, &value, *mode, *uid, *gid)?;
                        active.mounts.push(Mount::bind(
                            MountSource::Host(file),
                            target.clone(),
                            BindAccess::ReadOnly,
                        ));
                    }
                }
                Planned::Ssh {
                    id,
                    target,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(source) = src.opts.ssh.get(id) else {
                        if *required {
                            return Err(failed(format!(
                                "ssh {id}: not found: pass --ssh {id}[=SOCKET|KEY,...]"
                            )));
                        }
                        continue;
                    };
                    let d = private_tempdir()?;
                    let dir = d.path().to_owned();
                    active._guards.push(Guard::Dir(d));
                    let upstream = match source {
                        SshSource::Agent(sock) => sock.clone(),
                        SshSource::Keys(keys) => {
                            let (sock, child) = start_agent(id, keys, &dir).await?;
                            active._guards.push(Guard::Child(child));
                            sock
                        }
                    };
                    let sock = dir.join("proxy.sock");
                    let task = proxy(&upstream, &sock, *mode, *uid, *gid)?;
                    active._guards.push(Guard::Task(task));
                    if !active.default_env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                        active
                            .default_env
                            .push(("SSH_AUTH_SOCK".into(), target.clone()));
                    }
                    active.mounts.push(Mount::bind(
                        MountSource::Host(sock),
                        target.clone(),
                        BindAccess::ReadOnly,
                    ));
                }
            }
        }
        Ok(active)
    }

    /// Finds (creating it when needed) and locks an instance of a cache mount.
    async fn cache_instance(
        &self,
        src: &Sources<'_>,
        dir: &str,
        sharing: CacheSharing,
        init: &CacheInit,
    ) -> Result<(PathBuf, File), Error> {
        // Hold the directory before creating it, so a concurrent prune leaves it alone.
        src.lease.hold(EntryRef::Other(CACHE_MOUNTS.into()))?;
        let root = src.cache.other_dir(CACHE_MOUNTS)?.join(dir);
        fs::create_dir_all(&root).map_err(|e| io_failed("mkdir", &root, &e))?;
        let mut n = 0usize;
        let lock = loop {
            let path = root.join(format!("{n}.lock"));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_failed("open", &path, &e))?;
            let op = match sharing {
                CacheSharing::Shared => FlockOperation::NonBlockingLockShared,
                _ => FlockOperation::NonBlockingLockExclusive,
            };
            match flock(&f, op) {
                Ok(()) => break f,
                Err(rustix::io::Errno::WOULDBLOCK) if sharing == CacheSharing::Private => {
                    n += 1;
                }
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                    if src.cancel.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(io_failed("flock", &path, &e.into())),
            }
        };
        let instance = root.join(n.to_string());
        if !instance.is_dir() {
            let seed = match init {
                CacheInit::Seed { from, path } => Some((
                    src.from_lowers
                        .get(*from)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| {
                            failed("cache mount: its from source is not available".to_owned())
                        })?,
                    path.clone(),
                )),
                CacheInit::Empty { .. } => None,
            };
            let (init, root2, instance2) = (init.clone(), root.clone(), instance.clone());
            tokio::task::spawn_blocking(move || create_instance(&root2, &instance2, &init, seed))
                .await
                .map_err(|e| failed(format!("internal task failed: {e}")))??;
        }
        Ok((instance, lock))
    }
}

/// Creates a cache instance in a temporary directory beside it and renames it into place
/// (a concurrent creator's instance wins; ours is removed).
fn create_instance(
    root: &Path,
    instance: &Path,
    init: &CacheInit,
    seed: Option<(Vec<PathBuf>, String)>,
) -> Result<(), Error> {
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(root)
        .map_err(|e| io_failed("create a directory in", root, &e))?;
    let content = tmp.path().join("d");
    match (init, seed) {
        (CacheInit::Empty { mode, uid, gid }, _) => {
            fs::create_dir(&content).map_err(|e| io_failed("mkdir", &content, &e))?;
            std::os::unix::fs::chown(&content, Some(*uid), Some(*gid))
                .map_err(|e| io_failed("chown", &content, &e))?;
            fs::set_permissions(&content, fs::Permissions::from_mode(*mode))
                .map_err(|e| io_failed("chmod", &content, &e))?;
        }
        (CacheInit::Seed { .. }, Some((lowers, path))) => {
            let view = LayeredView::new(lowers);
            let (rel, entry) = view
                .stat(Path::new(&path), true)
                .map_err(|e| failed(format!("cache mount source {path}: {e}")))?
                .ok_or_else(|| failed(format!("cache mount source {path}: not found")))?;
            if !entry.meta.is_dir() {
                return Err(failed(format!(
                    "cache mount source {path}: not a directory"
                )));
            }
            copy_view_dir(&view, &rel, &entry.meta, &content)?;
        }
        (CacheInit::Seed { .. }, None) => {
            return Err(failed("cache mount: its from source is not available"));
        }
    }
    match fs::rename(&content, instance) {
        Ok(()) => Ok(()),
        Err(_) if instance.is_dir() => Ok(()),
        Err(e) => Err(io_failed("rename into", instance, &e)),
    }
}

/// Copies a directory of a merged view (owners, modes, symlinks, times of files) to `dest`.
fn copy_view_dir(
    view: &LayeredView,
    rel: &[OsString],
    meta: &fs::Metadata,
    dest: &Path,
) -> Result<(), Error> {
    fs::create_dir(dest).map_err(|e| io_failed("mkdir", dest, &e))?;
    for (name, entry) in view
        .read_dir(rel)
        .map_err(|e| failed(format!("cache mount seed: {e}")))?
    {
        let to = dest.join(&name);
        let ft = entry.meta.file_type();
        if ft.is_dir() {
            let mut child = rel.to_vec();
            child.push(name);
            copy_view_dir(view, &child, &entry.meta, &to)?;
        } else if ft.is_symlink() {
            let link =
                fs::read_link(&entry.host).map_err(|e| io_failed("readlink", &entry.host, &e))?;
            std::os::unix::fs::symlink(&link, &to).map_err(|e| io_failed("symlink", &to, &e))?;
            std::os::unix::fs::lchown(&to, Some(entry.meta.uid()), Some(entry.meta.gid()))
                .map_err(|e| io_failed("chown", &to, &e))?;
        } else if ft.is_file() {
            fs::copy(&entry.host, &to).map_err(|e| io_failed("copy", &entry.host, &e))?;
            set_owner_mode(&to, &entry.meta)?;
            let mtime = filetime_of(&entry.meta);
            File::options()
                .write(true)
                .open(&to)
                .and_then(|f| f.set_modified(mtime))
                .map_err(|e| io_failed("set the time of", &to, &e))?;
        }
        // Devices, fifos and sockets are not cache content: they are left out.
    }
    set_owner_mode(dest, meta)
}

fn filetime_of(meta: &fs::Metadata) -> std::time::SystemTime {
    meta.modified().unwrap_or(std::time::UNIX_EPOCH)
}

fn set_owner_mode(path: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| io_failed("chown", path, &e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io_failed("chmod", path, &e))
}

/// The value of a secret, `None` when it was not provided.
fn read_secret(opts: &RunOptions, id: &str) -> Result<Option<Vec<u8>>, Error> {
    match opts.secrets.get(id) {
        None => Ok(None),
        Some(SecretSource::File(p)) => fs::read(p)
            .map(Some)
            .map_err(|e| failed(format!("secret {id}: reading {}: {e}", p.display()))),
        Some(SecretSource::Env(var)) => Ok(std::env::var_os(var).map(OsString::into_vec)),
    }
}

/// A private (0700) directory for secrets and sockets: in memory (`/dev/shm`) when the host
/// has it, never in the cache directory.
fn private_tempdir() -> Result<tempfile::TempDir, Error> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let mut b = tempfile::Builder::new();
    b.prefix("rbuild-run-")
        .permissions(fs::Permissions::from_mode(0o700));
    b.tempdir_in(&base)
        .or_else(|_| b.tempdir_in(std::env::temp_dir()))
        .map_err(|e| io_failed("create a private directory in", &base, &e))
}

/// Writes a secret file with its final owner and mode.
fn write_private(path: &Path, value: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_failed("create", path, &e))?;
    f.write_all(value)
        .and_then(|()| f.flush())
        .map_err(|e| io_failed("write", path, &e))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        .map_err(|e| io_failed("chown", path, &e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_failed("chmod", path, &e))
}

/// Serves `sock` (with the mount's owner and mode) by forwarding each connection to the
/// agent at `upstream`. The step connects as its own user; the agent sees rbuild.
fn proxy(
    upstream: &Path,
    sock: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener =
        tokio::net::UnixListener::bind(sock).map_err(|e| io_failed("listen on", sock, &e))?;
    std::os::unix::fs::chown(sock, Some(uid), Some(gid))
        .map_err(|e| io_failed("chown", sock, &e))?;
    fs::set_permissions(sock, fs::Permissions::from_mode(mode))
        .map_err(|e| io_failed("chmod", sock, &e))?;
    let upstream = upstream.to_owned();
    Ok(tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::UnixStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            });
        }
    }))
}

/// Starts `ssh-agent` on a socket in `dir` and loads `keys` into it. Keys that need a
/// passphrase fail (nothing prompts).
async fn start_agent(
    id: &str,
    keys: &[PathBuf],
    dir: &Path,
) -> Result<(PathBuf, tokio::process::Child), Error> {
    let sock = dir.join("agent.sock");
    let child = tokio::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(format!(
                "ssh {id}: cannot start ssh-agent to serve its key files: {e}"
            ))
        })?;
    let mut waited = 0;
    while !sock.exists() {
        if waited >= 200 {
            return Err(failed(format!("ssh {id}: ssh-agent did not start")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += 1;
    }
    let out = tokio::process::Command::new("ssh-add")
        .arg("-q")
        .args(keys)
        .env("SSH_AUTH_SOCK", &sock)
        .env("SSH_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("DISPLAY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| failed(format!("ssh {id}: cannot run ssh-add: {e}")))?;
    if !out.status.success() {
        let list = keys
            .iter()
            .map(|k| k.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(failed(format!(
            "ssh {id}: cannot load {list} (keys with a passphrase need an agent: pass its socket): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((sock, child))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(clean_target("/a/./b/", "/").unwrap(), "/a/b");
        assert_eq!(clean_target("cache", "/app").unwrap(), "/app/cache");
        assert_eq!(clean_target("../x", "/app/sub").unwrap(), "/app/x");
        assert!(
            clean_target("/../etc", "/")
                .unwrap_err()
                .contains("escapes")
        );
        assert!(
            clean_target("../../..", "/app")
                .unwrap_err()
                .contains("escapes")
        );
        assert!(clean_target("/", "/").is_err());
        assert!(clean_target("a/..", "/").is_err());
        assert!(clean_target("", "/").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(clean_source("out", "").unwrap(), "/out");
        assert_eq!(clean_source("/a/../b", "").unwrap(), "/b");
        assert!(
            clean_source("../../etc", "")
                .unwrap_err()
                .contains("escapes")
        );
    }

    #[test]
    fn go_paths() {
        assert_eq!(go_clean("/mycache/"), "/mycache");
        assert_eq!(go_clean("a/../../b"), "../b");
        assert_eq!(go_clean("/../a"), "/a");
        assert_eq!(go_base("/run/secrets/x"), "x");
        assert_eq!(go_base("x/"), "x");
        assert_eq!(go_base("/"), "/");
    }
}
