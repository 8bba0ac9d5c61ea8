//! Build graph, cache keys, sandboxed RUN, COPY/ADD, image assembly and exporters: the
//! engine behind `rbuild build`, for programs that build container images themselves.
//!
//! # Guide
//!
//! A build is a [`Build`]: made from a context directory, configured with setters that
//! check their value at once (a bad platform, tag or output is an [`Error`] there, not
//! halfway through the build), then [`Build::run`] with a [`ProgressSink`] that receives
//! every [`ProgressEvent`]. The result is a [`BuildReport`]: the image digest, the image
//! IDs, the steps run and cached.
//!
//! ## The sandbox init
//!
//! RUN steps run in a sandbox that re-executes the current binary. A program that builds
//! Dockerfiles with RUN steps calls [`maybe_run_init`] first thing in `main`, before it
//! starts threads or an async runtime:
//!
//! ```no_run
//! fn main() {
//!     builder_core::maybe_run_init();
//!     // ... start the runtime and build
//! }
//! ```
//!
//! ## Build from a directory
//!
//! `Dockerfile` in the context is read unless [`Build::dockerfile`] names another file.
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, NullSink};
//! let report = Build::new("services/api")?
//!     .dockerfile("services/api/Dockerfile.prod")?
//!     .platforms(["linux/amd64", "linux/arm64"])?
//!     .build_arg("VERSION", "1.2.3")?
//!     .target("runtime")
//!     .output("type=oci,dest=api.tar".parse()?)
//!     .run(&mut NullSink)
//!     .await?;
//! println!("{:?} ({} steps run)", report.digest, report.steps_run);
//! # Ok(()) }
//! ```
//!
//! ## Build from an in-memory Dockerfile
//!
//! [`Build::dockerfile_text`] takes the Dockerfile's text (the name is used in messages);
//! the context still provides what COPY reads. This example runs: it builds into an OCI
//! layout tar in a temporary directory (as root, as every build that unpacks layers).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # builder_core::maybe_run_init();
//! # if !rustix::process::geteuid().is_root() { return Ok(()); }
//! use builder_core::{Build, CollectSink};
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("hello.txt"), "hello\n")?;
//! let dockerfile = "FROM scratch\nCOPY hello.txt /\nLABEL made-by=builder-core\n";
//! let out = dir.path().join("image.tar");
//! let mut sink = CollectSink::default();
//! let runtime = tokio::runtime::Runtime::new()?;
//! let report = runtime.block_on(
//!     Build::new(dir.path())?
//!         .dockerfile_text("Dockerfile", dockerfile.to_owned())
//!         .cache_dir(dir.path().join("cache"))
//!         .output(format!("type=oci,dest={}", out.display()).parse()?)
//!         .run(&mut sink),
//! )?;
//! assert!(report.digest.is_some() && out.is_file());
//! assert_eq!(report.config_digests.len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Outputs
//!
//! An output is an [`ExportSpec`], parsed from buildx's `--output` grammar (CSV
//! `key=value` fields; a bare path is `type=local`) or made with
//! [`ExportSpec::registry`]. A build may have several.
//!
//! ```
//! use builder_core::{ExportKind, ExportSpec};
//! # fn main() -> Result<(), builder_core::Error> {
//! // Push to the registry of every tag (`--push`).
//! let push = ExportSpec::registry();
//! assert_eq!(push.kind, ExportKind::Registry);
//! // An OCI layout, as a tar file or (tar=false) a directory, zstd layers.
//! let oci: ExportSpec = "type=oci,dest=out.tar,compression=zstd".parse()?;
//! // A docker-archive for `docker load`.
//! let docker: ExportSpec = "type=docker,dest=image.tar".parse()?;
//! // The final filesystem as plain files.
//! let local: ExportSpec = "type=local,dest=rootfs".parse()?;
//! assert_eq!(local, "rootfs".parse()?);
//! # let _ = (oci, docker); Ok(()) }
//! ```
//!
//! Pushing names the image with [`Build::tag`] (or `name=` in the spec):
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, ExportSpec, NullSink};
//! let report = Build::new(".")?
//!     .tag("registry.example/team/app:1.0")?
//!     .output(ExportSpec::registry())
//!     .run(&mut NullSink)
//!     .await?;
//! println!("pushed {}", report.digest.unwrap_or_default());
//! # Ok(()) }
//! ```
//!
//! Loading into the local Docker engine or containerd (`--load`) is a `type=docker`
//! output loaded afterwards with [`load::LoadTarget`] (see [`load`] for an example).
//!
//! ## A custom progress sink
//!
//! A [`ProgressSink`] sees each event once, in order; [`CollectSink`] keeps them all and
//! [`NullSink`] drops them.
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, NullSink, ProgressEvent, ProgressSink};
//! /// Prints step names and RUN output, counts cache hits.
//! #[derive(Default)]
//! struct Log {
//!     cached: usize,
//! }
//! impl ProgressSink for Log {
//!     fn event(&mut self, ev: &ProgressEvent) {
//!         match ev {
//!             ProgressEvent::StepStarted { name, .. } => eprintln!("{name}"),
//!             ProgressEvent::StepCached { .. } => self.cached += 1,
//!             ProgressEvent::StepLog { data, .. } => {
//!                 eprint!("{}", String::from_utf8_lossy(data))
//!             }
//!             ProgressEvent::Warning { message, .. } => eprintln!("warning: {message}"),
//!             _ => {}
//!         }
//!     }
//! }
//! let mut log = Log::default();
//! Build::new(".")?.run(&mut log).await?;
//! eprintln!("{} steps from the cache", log.cached);
//! # Ok(()) }
//! ```
//!
//! ## Cancel
//!
//! [`Build::cancel_handle`] gives a [`CancelHandle`] that stops the build from another
//! task or a signal handler: running steps are killed and torn down, and
//! [`Build::run`] returns [`Error::Cancelled`].
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, Error, NullSink};
//! let build = Build::new(".")?;
//! let cancel = build.cancel_handle();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok();
//!     cancel.cancel();
//! });
//! match build.run(&mut NullSink).await {
//!     Err(Error::Cancelled) => eprintln!("cancelled"),
//!     other => drop(other?),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Errors
//!
//! A failed step is [`Error::Step`] with the instruction, its location and the tail of
//! its output; [`Error::is_usage`] tells a bad request (exit code 2 in the CLI) from a
//! build that failed.
//!
//! ## Many builds over one cache
//!
//! Builds that share a cache directory may run at once in one process; a
//! [`BuildGroup`] also shares the per-step locks, so a step or a pull that several
//! builds need runs once. `examples/build_many.rs` builds a list of contexts so, and
//! `examples/build_and_push.rs` is the smallest build-and-push program.
#![deny(unsafe_code)]
// The guide's first example is about what `main` must do first.
#![allow(clippy::needless_doctest_main)]

pub mod annotations;
mod attest;
pub mod bake;
mod cachekey;
mod copy;
mod engine;
pub mod graph;
mod image;
pub mod load;
mod oci;
pub mod plan;
mod progress;
pub mod remote_cache;
pub mod remote_context;
pub mod timeline;

pub use attest::{
    ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE,
    ARTIFACT_TYPE_ATTESTATION, AttestSpec, AttestationManifest, Attestations, ImageAttestations,
    MEDIA_TYPE_IN_TOTO, PREDICATE_PROVENANCE, PREDICATE_SPDX, ProvenanceMode, ProvenanceOptions,
    SbomOptions, format_attestations, inspect_attestations, predicates, scan, spdx_document,
};
pub use cachekey::CacheKey;
pub use engine::{
    Build, BuildGroup, BuildReport, CheckReport, Error, ExportKind, ExportSpec, GroupSink,
    NamedContext, SecretSource, SshSource, StepError, TargetResult, default_cache_dir,
    default_dockerfile, platform_args,
};
pub use graph::{
    Edge, EdgeKind, Graph, GraphResult, ImageResolver, Op, RegistryResolver, ResolvedImage, Vertex,
};
pub use image::{
    ConfigParseError, DEFAULT_PATH, HISTORY_COMMENT, Healthcheck, HistoryEntry, ImageConfig,
    MEDIA_TYPE_CONFIG, rfc3339,
};
pub use oci::{
    BlobRef, BuiltImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD,
    MEDIA_TYPE_MANIFEST, PlatformImage,
};
pub use progress::{
    Activity, ByteSize, CollectSink, NullSink, Phase, ProgressEvent, ProgressSink, StepId, Stream,
    human_bytes,
};
pub use sandbox::{
    BindAccess, CancelHandle, Capabilities, ExitStatus, HostCheck, HostReport, IdRange, Mode,
    ModeRequest, ModeStatus, Mount, MountKind, MountSource, NetworkMode, Privilege, ROOTLESS_ENV,
    Rootfs, RunLimits, RunSpec, SANDBOX_MODE_ENV, Sandbox, SandboxError, SizeError, Ulimit, User,
    enter_rootless, maybe_run_init, parse_mem_bytes, parse_ram_in_bytes, resolve_user,
    run_platforms,
};

pub use timeline::{Timeline, TimelineError};

// The sandbox is its own crate; its layered view of snapshots and its account-file parsers
// serve COPY and the executor too.
use rbuild_sandbox as sandbox;
use rbuild_sandbox::{fsview, passwd};

pub use dockerfile;
pub use layer_cache;
pub use registry_client;
