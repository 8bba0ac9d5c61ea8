//! The build engine: the public [`Build`] builder, and the executor that turns a
//! Dockerfile's stages into images.

mod cache_owner;
mod check;
mod epoch;
mod error;
pub(crate) mod exec;
mod export;
pub(crate) mod export_spec;
mod group;
mod history;
pub(crate) mod labels;
mod local_attest;
pub(crate) mod mounts;
mod named;
mod plan;
mod workdir;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use registry_client::{Platform, Reference};

pub use check::CheckReport;
pub use error::{Error, StepError};
pub use exec::BuildReport;
pub use export_spec::{ExportKind, ExportSpec};
pub use group::{BuildGroup, GroupSink, TargetResult};
pub use named::NamedContext;

use crate::progress::{ProgressEvent, ProgressSink};

pub(crate) fn invalid_option(what: &'static str, value: &str, reason: impl Into<String>) -> Error {
    invalid(what, value, reason)
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
enum DockerfileSource {
    Path(PathBuf),
    Text { name: String, text: String },
}

/// A build to run. Setters validate at once; [`Build::run`] does the work.
///
/// ```no_run
/// # async fn f() -> Result<(), builder_core::Error> {
/// use builder_core::{Build, NullSink};
/// let report = Build::new("services/auth")?
///     .platforms(["linux/amd64", "linux/arm64"])?
///     .output("type=oci,dest=out.tar".parse()?)
///     .run(&mut NullSink)
///     .await?;
/// println!("{}", report.digest.unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Build {
    context: PathBuf,
    dockerfile: Option<DockerfileSource>,
    platforms: Vec<Platform>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    tags: Vec<Reference>,
    /// The `-t` names as given (`tags` fills in `latest`): a push by digest refuses a tag.
    tag_names: Vec<String>,
    outputs: Vec<ExportSpec>,
    cache_dir: Option<PathBuf>,
    cache_to: Vec<crate::remote_cache::CacheExportSpec>,
    cache_from: Vec<crate::remote_cache::CacheImportSpec>,
    no_cache: bool,
    no_cache_filter: Vec<String>,
    image_id: bool,
    labels: BTreeMap<String, String>,
    network: crate::sandbox::NetworkMode,
    extra_hosts: Vec<(String, std::net::IpAddr)>,
    run_limits: crate::sandbox::RunLimits,
    /// The sandbox mode asked for; `None` reads `RBUILD_SANDBOX` (as before the setter).
    sandbox_mode: Option<crate::sandbox::ModeRequest>,
    annotations: Vec<crate::annotations::Annotation>,
    /// A fetched remote context, kept until the last clone of this build is dropped.
    remote_context: Option<std::sync::Arc<crate::remote_context::FetchedContext>>,
    insecure_registries: Vec<String>,
    secrets: BTreeMap<String, SecretSource>,
    ssh: BTreeMap<String, SshSource>,
    allow_insecure: bool,
    allow_network_host: bool,
    cancel: crate::sandbox::CancelHandle,
    attestations: crate::attest::Attestations,
    /// The per-cache-key locks, shared with the other builds of a [`BuildGroup`].
    key_locks: exec::KeyLocks,
    /// Blobs of the imported caches found corrupt in an earlier attempt: never trusted.
    rejected_cache_blobs: std::collections::BTreeSet<String>,
    /// `--build-context`: by name as BuildKit looks it up (familiar, without `:latest`).
    named_contexts: BTreeMap<String, NamedContext>,
}

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// A file.
    File(PathBuf),
    /// An environment variable of the rbuild process.
    Env(String),
}

/// Where an `--ssh` agent comes from (`RUN --mount=type=ssh`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SshSource {
    /// The socket of a running SSH agent (`--ssh default` uses `$SSH_AUTH_SOCK`).
    Agent(PathBuf),
    /// Private key files, served by an `ssh-agent` that rbuild starts for each step that
    /// mounts them (keys protected by a passphrase cannot be loaded: use an agent).
    Keys(Vec<PathBuf>),
}

impl SshSource {
    /// What `--ssh ID[=PATH,...]` names: no path means the agent in `$SSH_AUTH_SOCK`; one
    /// socket means that agent; otherwise every path must be a key file.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self, Error> {
        use std::os::unix::fs::FileTypeExt;
        if paths.is_empty() {
            let sock = std::env::var_os("SSH_AUTH_SOCK")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "ssh",
                        "default",
                        "SSH_AUTH_SOCK is not set: start an agent or give a socket or key path",
                    )
                })?;
            return Ok(SshSource::Agent(PathBuf::from(sock)));
        }
        let socket = |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
        match paths {
            [p] if socket(p) => Ok(SshSource::Agent(p.clone())),
            _ => {
                if let Some(p) = paths.iter().find(|p| socket(p)) {
                    return Err(invalid(
                        "ssh",
                        &p.display().to_string(),
                        "an agent socket cannot be combined with other paths",
                    ));
                }
                Ok(SshSource::Keys(paths.to_vec()))
            }
        }
    }
}

impl Build {
    /// A build of the context directory `context`.
    pub fn new(context: impl AsRef<Path>) -> Result<Self, Error> {
        let c = context.as_ref();
        let context = std::fs::canonicalize(c)
            .map_err(|e| invalid("context", &c.display().to_string(), e.to_string()))?;
        if !context.is_dir() {
            return Err(invalid(
                "context",
                &c.display().to_string(),
                "not a directory",
            ));
        }
        Ok(Self {
            context,
            dockerfile: None,
            platforms: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            tags: Vec::new(),
            tag_names: Vec::new(),
            outputs: Vec::new(),
            cache_dir: None,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            image_id: false,
            labels: BTreeMap::new(),
            network: crate::sandbox::NetworkMode::Host,
            extra_hosts: Vec::new(),
            run_limits: crate::sandbox::RunLimits::default(),
            sandbox_mode: None,
            annotations: Vec::new(),
            remote_context: None,
            insecure_registries: Vec::new(),
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            allow_insecure: false,
            allow_network_host: false,
            cancel: crate::sandbox::CancelHandle::new(),
            attestations: crate::attest::Attestations::default(),
            key_locks: exec::KeyLocks::default(),
            rejected_cache_blobs: std::collections::BTreeSet::new(),
            named_contexts: BTreeMap::new(),
        })
    }

    /// The Dockerfile to use (default: `Dockerfile` in the context).
    pub fn dockerfile(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let p = path.as_ref();
        if !p.is_file() {
            return Err(invalid(
                "Dockerfile",
                &p.display().to_string(),
                "no such file",
            ));
        }
        self.dockerfile = Some(DockerfileSource::Path(p.to_owned()));
        Ok(self)
    }

    /// The Dockerfile's text (for `-f -`), with a name for messages.
    pub fn dockerfile_text(mut self, name: &str, text: String) -> Self {
        self.dockerfile = Some(DockerfileSource::Text {
            name: name.to_owned(),
            text,
        });
        self
    }

    /// The target platforms (default: the host's), each a platform or a comma-separated
    /// list of them, read by [`Platform::parse_list`] (containerd's grammar, for an
    /// operating system and architecture Go knows); duplicates are dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), builder_core::Error> {
    /// let dir = std::env::temp_dir();
    /// let b = builder_core::Build::new(&dir)?.platforms(["linux/x86_64,linux/arm64", "linux/amd64"])?;
    /// assert!(builder_core::Build::new(&dir)?.platforms(["linux/amd65"]).is_err());
    /// # let _ = b; Ok(()) }
    /// ```
    pub fn platforms<I, S>(self, platforms: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed: Vec<Platform> = Vec::new();
        for p in platforms {
            let p = p.as_ref();
            parsed.extend(Platform::parse_list(p).map_err(|e| match e {
                registry_client::Error::InvalidPlatform { input, reason } => {
                    invalid("platform", &input, reason)
                }
                e => invalid("platform", p, e.to_string()),
            })?);
        }
        Ok(self.target_platforms(parsed))
    }

    /// The target platforms, parsed ([`Build::platforms`] with typed values); duplicates
    /// are dropped.
    pub fn target_platforms(mut self, platforms: impl IntoIterator<Item = Platform>) -> Self {
        let mut out: Vec<Platform> = Vec::new();
        for p in platforms {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        self.platforms = out;
        self
    }

    /// A `--build-arg`.
    pub fn build_arg(mut self, key: &str, value: &str) -> Result<Self, Error> {
        if key.is_empty() || key.contains(['=', ' ']) {
            return Err(invalid("build arg", key, "not a variable name"));
        }
        self.build_args.insert(key.to_owned(), value.to_owned());
        Ok(self)
    }

    /// The stage to build (default: the last).
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }

    /// An image name (`-t`), used by the registry, oci and docker outputs.
    pub fn tag(mut self, tag: &str) -> Result<Self, Error> {
        let r: Reference = tag
            .parse()
            .map_err(|e: registry_client::Error| invalid("tag", tag, e.to_string()))?;
        self.tags.push(r);
        self.tag_names.push(tag.to_owned());
        Ok(self)
    }

    /// An output (several may be given).
    pub fn output(mut self, spec: ExportSpec) -> Self {
        self.outputs.push(spec);
        self
    }

    /// Checks the configuration as a whole without reading the Dockerfile or building:
    /// what each setter cannot judge alone. [`Build::run`] checks the same first; a
    /// command line calls this to refuse a bad combination before any work.
    ///
    /// - a docker-archive output (`type=docker`) holds one platform: not with several;
    /// - every output that pushes needs a name (a [`Build::tag`] or the output's `name=`),
    ///   each a valid reference, untagged for `push-by-digest=true`.
    ///
    /// ```
    /// use builder_core::{Build, ExportSpec};
    /// # fn main() -> Result<(), builder_core::Error> {
    /// let dir = std::env::temp_dir();
    /// let push = Build::new(&dir)?.output(ExportSpec::registry());
    /// let e = push.clone().validate().unwrap_err();
    /// assert!(e.to_string().contains("tag is needed when pushing to registry"));
    /// assert!(e.is_usage());
    /// push.tag("127.0.0.1:5000/app:1")?.validate()?;
    ///
    /// let two = Build::new(&dir)?.platforms(["linux/amd64,linux/arm64"])?;
    /// let e = two.output(ExportSpec::docker(dir.join("image.tar"))).validate().unwrap_err();
    /// assert!(e.to_string().contains("does not currently support exporting manifest lists"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOutput`] naming the output and the problem (a usage error).
    pub fn validate(&self) -> Result<(), Error> {
        if self.platforms.len() > 1 && self.outputs.iter().any(ExportSpec::is_docker) {
            return Err(Error::InvalidOutput {
                spec: "type=docker".into(),
                reason: "docker exporter does not currently support exporting manifest lists; \
                         build one platform"
                    .into(),
            });
        }
        for o in self.outputs.iter().filter(|o| o.pushes()) {
            export::push_targets(o, &self.tag_names)?;
        }
        Ok(())
    }

    /// The cache directory (default `$XDG_CACHE_HOME/rbuild` or `~/.cache/rbuild`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Exports the build's cache (`--cache-to`; several may be given). With
    /// [`CacheMode::Max`](crate::remote_cache::CacheMode::Max) every step of every stage
    /// built is exported, else the final image's steps.
    pub fn cache_to(mut self, spec: crate::remote_cache::CacheExportSpec) -> Self {
        self.cache_to.push(spec);
        self
    }

    /// Imports a remote cache (`--cache-from`; several are searched in the order given).
    /// Only its manifest and config are read before the build; a cache that does not
    /// exist is a warning.
    pub fn cache_from(mut self, spec: crate::remote_cache::CacheImportSpec) -> Self {
        self.cache_from.push(spec);
        self
    }

    /// Without an output, still compute the image ID ([`BuildReport::config_digests`]):
    /// the layers are hashed (never compressed). Off by default: a build without output
    /// then reads no layer back (for `--iidfile` and `--metadata-file`).
    pub fn image_id(mut self, yes: bool) -> Self {
        self.image_id = yes;
        self
    }

    /// Do not use cached results (results are still stored).
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.no_cache = yes;
        self
    }

    /// Do not use cached results for the steps of the stage named `stage`
    /// (`--no-cache-filter`; may be given several times). The build fails when the
    /// Dockerfile has no such stage.
    pub fn no_cache_filter(mut self, stage: &str) -> Self {
        self.no_cache_filter.push(stage.to_owned());
        self
    }

    /// A named build context (`--build-context NAME=VALUE`): `FROM NAME`, `COPY
    /// --from=NAME` and `RUN --mount from=NAME` read it instead of the image of that name,
    /// and a stage named `NAME` is replaced by it (its instructions do not run), as
    /// BuildKit's Dockerfile frontend does. Names match as image references do
    /// (`alpine` is `docker.io/library/alpine:latest`). The context's content (a
    /// directory's files, an image's manifest) is part of the cache keys of the steps that
    /// read it.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), builder_core::Error> {
    /// use builder_core::{Build, NamedContext};
    /// let build = Build::new(".")?
    ///     .build_context("alpine", NamedContext::parse("docker-image://busybox:1.36")?)?
    ///     .build_context("src", NamedContext::parse("../shared-src")?)?;
    /// # let _ = build; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a name that is no valid image or stage name, or a local
    /// context that is not a directory.
    pub fn build_context(mut self, name: &str, context: NamedContext) -> Result<Self, Error> {
        let key = named::context_key(name).ok_or_else(|| {
            invalid(
                "--build-context",
                name,
                "invalid context name: it must be a valid image or stage name (lowercase)",
            )
        })?;
        if let Some(d) = context.dir() {
            if !d.is_dir() {
                return Err(invalid(
                    "--build-context",
                    &format!("{name}={}", d.display()),
                    "failed to get build context path: not a directory",
                ));
            }
        }
        self.named_contexts.insert(key, context);
        Ok(self)
    }

    /// A label added to the final image.
    pub fn label(mut self, key: &str, value: &str) -> Result<Self, Error> {
        if key.is_empty() {
            return Err(invalid("label", key, "empty key"));
        }
        self.labels.insert(key.to_owned(), value.to_owned());
        Ok(self)
    }

    /// An `/etc/hosts` entry for RUN steps (`--add-host HOST=IP`): `ip` is one address or
    /// several separated by `,` (each may be in brackets, `[::1]`), or `host-gateway`,
    /// which is the host itself: `127.0.0.1`, since RUN steps share the host's network.
    /// Entries are part of the RUN steps' cache keys, as in BuildKit.
    ///
    /// ```
    /// let b = builder_core::Build::new(".")?
    ///     .add_host("db", "10.0.0.5")?
    ///     .add_host("gw", "host-gateway")?;
    /// # Ok::<(), builder_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// An empty or blank host name, or an address that is not an IP address.
    pub fn add_host(mut self, host: &str, ip: &str) -> Result<Self, Error> {
        let spec = format!("{host}={ip}");
        if host.is_empty() || ip.is_empty() || host.contains(char::is_whitespace) {
            return Err(invalid("add-host", &spec, "expected HOST=IP"));
        }
        if ip == "host-gateway" {
            self.extra_hosts
                .push((host.to_owned(), std::net::Ipv4Addr::LOCALHOST.into()));
            return Ok(self);
        }
        for v in ip.split(',') {
            let v = v
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(v);
            let addr: std::net::IpAddr = v
                .parse()
                .map_err(|_| invalid("add-host", &spec, format!("{v:?} is not an IP address")))?;
            self.extra_hosts.push((host.to_owned(), addr));
        }
        Ok(self)
    }

    /// A build of a fetched remote context ([`crate::remote_context::fetch`]): the build
    /// owns the temporary directory; a context that was a lone Dockerfile is the
    /// Dockerfile.
    pub fn from_remote(ctx: crate::remote_context::FetchedContext) -> Result<Self, Error> {
        let mut b = Build::new(ctx.path())?;
        if let Some(text) = ctx.dockerfile_text() {
            b = b.dockerfile_text("Dockerfile", text.to_owned());
        }
        b.remote_context = Some(std::sync::Arc::new(ctx));
        Ok(b)
    }

    /// An annotation of the image (`--annotation`, see [`crate::annotations`]): in the
    /// manifests by default, or the index and descriptors its type prefix names.
    ///
    /// ```
    /// let b = builder_core::Build::new(".")?
    ///     .annotation("org.opencontainers.image.title=app")?
    ///     .annotation("index,manifest-descriptor:org.opencontainers.image.version=1.2")?;
    /// # Ok::<(), builder_core::Error>(())
    /// ```
    pub fn annotation(mut self, spec: &str) -> Result<Self, Error> {
        self.annotations
            .extend(crate::annotations::Annotation::parse(spec)?);
        Ok(self)
    }

    /// A resource limit of RUN steps (`--ulimit NAME=SOFT[:HARD]`, `-1` unlimited), set
    /// with setrlimit in the step's process as BuildKit's runtime does; part of the steps'
    /// cache keys.
    ///
    /// ```
    /// let b = builder_core::Build::new(".")?
    ///     .ulimit("nofile=1024:4096")?
    ///     .shm_size("128m")?;
    /// # Ok::<(), builder_core::Error>(())
    /// ```
    pub fn ulimit(mut self, spec: &str) -> Result<Self, Error> {
        let u: crate::sandbox::Ulimit = spec
            .parse()
            .map_err(|e: crate::SandboxError| invalid("ulimit", spec, e.to_string()))?;
        self.run_limits.ulimits.push(u);
        Ok(self)
    }

    /// The size of RUN steps' `/dev/shm` (`--shm-size`, docker's units: `64m`, `1g`;
    /// BuildKit's default is 64 MiB); part of the steps' cache keys.
    pub fn shm_size(mut self, size: &str) -> Result<Self, Error> {
        let bytes = crate::sandbox::parse_mem_bytes(size)
            .map_err(|e| invalid("shm-size", size, e.to_string()))?;
        self.run_limits.shm_size = Some(bytes);
        Ok(self)
    }

    /// The default network of RUN steps (`default`/`host`, or `none`).
    pub fn network(mut self, mode: &str) -> Result<Self, Error> {
        self.network = match mode {
            "default" | "host" => crate::sandbox::NetworkMode::Host,
            "none" => crate::sandbox::NetworkMode::None,
            _ => return Err(invalid("network", mode, "expected default, host or none")),
        };
        Ok(self)
    }

    /// The sandbox mode of RUN steps: [`ModeRequest::Auto`](crate::ModeRequest::Auto) (the
    /// overlay mode where the host allows it, else chroot), `Overlay` (or an error) or
    /// `Chroot`. Without this setter the build reads [`SANDBOX_MODE_ENV`](crate::SANDBOX_MODE_ENV)
    /// (`RBUILD_SANDBOX`), as `rbuild` does before calling it.
    ///
    /// ```
    /// use builder_core::{Build, ModeRequest};
    /// let b = Build::new(".")?.sandbox_mode("chroot".parse()?);
    /// let b = b.sandbox_mode(ModeRequest::Auto);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sandbox_mode(mut self, mode: crate::sandbox::ModeRequest) -> Self {
        self.sandbox_mode = Some(mode);
        self
    }

    /// A registry reached over plain HTTP (`host[:port]`).
    pub fn insecure_registry(mut self, host: &str) -> Self {
        self.insecure_registries.push(host.to_owned());
        self
    }

    /// A build secret (`--secret id=ID,src=PATH` / `env=VAR`).
    pub fn secret(mut self, id: &str, source: SecretSource) -> Result<Self, Error> {
        if id.is_empty() {
            return Err(invalid("secret", id, "empty id"));
        }
        if let SecretSource::File(p) = &source {
            if !p.is_file() {
                return Err(invalid("secret", &p.display().to_string(), "no such file"));
            }
        }
        self.secrets.insert(id.to_owned(), source);
        Ok(self)
    }

    /// An SSH agent for `RUN --mount=type=ssh,id=ID` (`--ssh ID=...`).
    pub fn ssh(mut self, id: &str, source: SshSource) -> Result<Self, Error> {
        use std::os::unix::fs::FileTypeExt;
        if id.is_empty() || id.contains(['=', ',']) {
            return Err(invalid("ssh", id, "not a valid id"));
        }
        match &source {
            SshSource::Agent(p) => {
                let ok = std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
                if !ok {
                    return Err(invalid(
                        "ssh",
                        &p.display().to_string(),
                        "not an agent socket",
                    ));
                }
            }
            SshSource::Keys(keys) => {
                if keys.is_empty() {
                    return Err(invalid("ssh", id, "no key file"));
                }
                for k in keys {
                    if !k.is_file() {
                        return Err(invalid("ssh", &k.display().to_string(), "no such key file"));
                    }
                }
            }
        }
        self.ssh.insert(id.to_owned(), source);
        Ok(self)
    }

    /// `--allow network.host`: lets `RUN --network=host` run.
    pub fn allow_network_host(mut self, yes: bool) -> Self {
        self.allow_network_host = yes;
        self
    }

    /// `--allow security.insecure`.
    pub fn allow_insecure(mut self, yes: bool) -> Self {
        self.allow_insecure = yes;
        self
    }

    /// An attestation to attach (`--attest`, `--provenance`, `--sbom`; later flags of a
    /// type replace earlier ones, `type=none` switches all off). Attestations go into every
    /// image output; see [`AttestSpec`](crate::AttestSpec).
    pub fn attest(mut self, spec: crate::attest::AttestSpec) -> Self {
        self.attestations.apply(spec);
        self
    }

    /// buildx's default attestation, `mode=min` provenance, unless a provenance flag or
    /// `type=none` was given (buildx adds it when it pushes; `BUILDX_NO_DEFAULT_ATTESTATIONS`
    /// switches it off there, which is the caller's to read).
    pub fn default_attestations(mut self) -> Self {
        self.attestations = self.attestations.with_buildx_default();
        self
    }

    /// Attach the attestations as OCI 1.1 referrers (their manifests' `subject` is the
    /// image; pushed with the referrers tag fallback) instead of entries of the image's
    /// index: a single platform image stays a plain manifest.
    pub fn attestations_as_referrers(mut self, yes: bool) -> Self {
        self.attestations.referrers = yes;
        self
    }

    /// The attestations this build attaches.
    pub fn attestations(&self) -> &crate::attest::Attestations {
        &self.attestations
    }

    /// A handle that cancels the build (for Ctrl-C): running steps are killed and torn down.
    pub fn cancel_handle(&self) -> crate::sandbox::CancelHandle {
        self.cancel.clone()
    }

    /// The Dockerfile's path, when it comes from a file.
    fn dockerfile_path(&self) -> Option<PathBuf> {
        match &self.dockerfile {
            Some(DockerfileSource::Path(p)) => Some(p.clone()),
            Some(DockerfileSource::Text { .. }) => None,
            None => Some(default_dockerfile(&self.context)),
        }
    }

    /// Runs the build, reporting progress to `sink`.
    ///
    /// A blob of a `--cache-from` cache whose bytes do not match its descriptor is
    /// rejected: a warning says so and the build runs again without it (its steps are
    /// rebuilt; what the first attempt built is a local cache hit).
    pub async fn run(mut self, sink: &mut dyn ProgressSink) -> Result<BuildReport, Error> {
        loop {
            match exec::run(self.clone(), sink).await {
                Err(Error::RejectedCacheBlob { digest, reason })
                    if !self.rejected_cache_blobs.contains(&digest) =>
                {
                    sink.event(&ProgressEvent::Warning {
                        message: format!(
                            "cache blob {digest} rejected ({reason}): building again without \
                             it, its steps are rebuilt"
                        ),
                        location: None,
                    });
                    self.rejected_cache_blobs.insert(digest);
                }
                r => return r.map_err(|e| self.name_full_cache(e)),
            }
        }
    }

    /// `e` as [`Error::CacheFull`] when a write failed for want of space and it was not
    /// an output's (those name their own path).
    fn name_full_cache(&self, e: Error) -> Error {
        if matches!(e, Error::Export { .. } | Error::CacheFull { .. }) || !is_out_of_space(&e) {
            return e;
        }
        Error::CacheFull {
            dir: self.cache_dir.clone().unwrap_or_else(default_cache_dir),
            source: Box::new(e),
        }
    }
}

/// Whether `e` comes from `ENOSPC` or `EDQUOT`: an I/O error in its chain, or their text
/// in a message (a step's reason, a sandbox's report).
fn is_out_of_space(e: &Error) -> bool {
    let full = |code: Option<i32>| code.is_some_and(|c| c == 28 || c == 122); // ENOSPC, EDQUOT
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let io = err.downcast_ref::<std::io::Error>().or_else(|| {
            err.downcast_ref::<std::sync::Arc<std::io::Error>>()
                .map(AsRef::as_ref)
        });
        if let Some(io) = io {
            if full(io.raw_os_error()) || io.kind() == std::io::ErrorKind::StorageFull {
                return true;
            }
        }
        cur = err.source();
    }
    let text = e.to_string();
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

fn exec_join(e: &tokio::task::JoinError) -> Error {
    Error::invalid_step(format!("internal task failed: {e}"))
}

/// A target platform as a Dockerfile's `TARGETPLATFORM`/`TARGETVARIANT` args show it
/// (containerd's `platforms.Normalize`: arm64 without its default `v8`), for the
/// [`dockerfile`] stage model and [`crate::plan::PlanRequest`].
///
/// ```
/// use builder_core::{platform_args, registry_client::Platform};
/// let p = Platform::parse_target("linux/aarch64").unwrap();
/// assert_eq!(platform_args(&p).to_string(), "linux/arm64");
/// assert_eq!(platform_args(&"linux/arm".parse().unwrap()).variant, "v7");
/// ```
pub fn platform_args(p: &Platform) -> dockerfile::PlatformSpec {
    dockerfile::PlatformSpec::new(
        p.os(),
        p.architecture(),
        p.normalized_variant().unwrap_or_default(),
    )
}

/// The Dockerfile a build reads when none is named: `Dockerfile` in the context, else
/// `dockerfile` when only that exists (as BuildKit's frontend does).
pub fn default_dockerfile(context: &Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    let lower = context.join("dockerfile");
    if !upper.exists() && lower.is_file() {
        lower
    } else {
        upper
    }
}

/// The default cache directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rbuild");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/rbuild");
    }
    PathBuf::from("/var/cache/rbuild")
}
