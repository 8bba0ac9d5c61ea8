//! The executor: stages become tasks, instructions become cached steps.
//!
//! Each reachable stage of each platform is a tokio task that waits for the stages it reads
//! (its base, `COPY --from`) and then walks its instructions. Every step that changes the
//! filesystem has a [`CacheKey`] derived from its parent's key and its inputs; a key found in
//! the cache index reuses the stored layer without materialising anything. Identical steps
//! (the same key, for example a `FROM --platform=$BUILDPLATFORM` stage built for two target
//! platforms) run once: a per-key lock makes the second one find the first one's result.
//!
//! The modules, in the order a build meets them:
//! - `solver`: the build's shared context, one task per stage, the exporters at the end;
//! - `stage`: a stage's base and its instructions in order;
//! - `dispatch`: one instruction: metadata, or a step looked up by key before it runs;
//! - `cache_source`: where keys are looked up (the local store, then imported caches);
//! - `run` (`RUN`) and `fileop` (`COPY`, `ADD`): the steps that make layers;
//! - `layers`: cache access: pulls, packing, snapshots, committed diffs;
//! - `ahead`: image layers packed while later steps run;
//! - `image`: a solved stage's configuration, layers and manifest for the exporters;
//! - `remote`, `remote_mounts`: `--cache-from`/`--cache-to`; `attest`: provenance, SBOM.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dockerfile::{
    BuildPlan, Command, DepSource, Dockerfile, Instruction, PlanOptions, PlatformSpec, Scope,
    Spanned, StageBase,
};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use layer_cache::{
    ApplyMode, ApplyOptions, BlobRef as CacheBlobRef, Cache, ChainId, Compression, Digest, Ingest,
    LayerRecord, LayerRef, Lease, PackOptions, PackedLayer,
};
use registry_client::{Client, Platform, Reference, Repository};
use tokio::sync::{Semaphore, mpsc};

use self::cache_source::{CacheSource, LocalCache};
use super::export::{ExportCx, Needs, Solved, SolvedFiles};
use super::export_spec::ExportKind;
use super::{Build, DockerfileSource, Error, StepError, history};
use crate::cachekey::CacheKey;
use crate::fsview::LayeredView;
use crate::image::{Healthcheck as ConfigHealthcheck, HistoryEntry, ImageConfig, rfc3339};
use crate::oci::{BlobRef, BuiltImage, PlatformImage};
use crate::progress::{Phase, ProgressEvent, ProgressSink, StepId, Stream};
use crate::sandbox::{self, CancelHandle, NetworkMode, Rootfs, RunSpec, Sandbox};

mod add_git;
mod ahead;
mod attest;
mod cache_source;
mod dispatch;
mod fileop;
mod image;
mod keycheck;
mod layers;
mod named;
mod remote;
mod remote_mounts;
mod run;
mod solver;
mod stage;

use self::attest::{note_image, provenance_op};
// The modules' items under the executor's paths (the graph frontend uses a few).
pub(crate) use self::{dispatch::*, run::*, solver::*, stage::*};
use self::{fileop::*, image::*, layers::*};

/// What a finished build produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildReport {
    /// The image's digest (the index for several platforms, else the manifest); `None`
    /// when the build had no output (the result stays in the cache, its layers are not
    /// compressed, so there is no manifest).
    pub digest: Option<String>,
    /// The config digest of each platform's image (its image ID), in platform order; empty
    /// for a build without output unless [`Build::image_id`](super::Build::image_id) asked.
    pub config_digests: Vec<String>,
    /// The image documents and layers, when the build had an output.
    pub image: Option<BuiltImage>,
    /// The sandbox mode that ran RUN steps.
    pub sandbox_mode: String,
    /// Steps run and steps found in the cache.
    pub steps_run: u32,
    /// Steps whose result came from the cache.
    pub steps_cached: u32,
    /// The descriptor of the image (for `--metadata-file`), when the build had an output.
    pub descriptor: Option<serde_json::Value>,
    /// The image names written or pushed, as given (BuildKit's `image.name`).
    pub names: Vec<String>,
    /// This build's reference, `rbuild/local/<id>` (a unique id, shaped like buildx's
    /// `buildx.build.ref`, `builder/node/ref`).
    pub build_ref: String,
}

/// One layer of a stage's filesystem.
#[derive(Debug, Clone)]
struct Layer {
    /// The diffID. `None` for a step's layer not hashed yet: a step's result is only
    /// renamed into the snapshot store, and hashed (or packed) when an exporter or the
    /// image ID needs it, so stages that are not exported are never read again.
    diff_id: Option<Digest>,
    /// The snapshot chain of the stack up to this layer. A step's layer is registered
    /// before it is hashed, under a unique id, so this is not the chain of the diffIDs.
    chain: ChainId,
    /// The compressed blob. `None` for a step's layer that was never compressed: its
    /// snapshot holds the files, and [`Ctx::ensure_blob`] packs it when an exporter needs
    /// it.
    blob: Option<CacheBlobRef>,
    /// Where to pull the blob from when it is not in the content store.
    origin: Option<Repository>,
    /// Or the OCI layout directory of a `type=local` cache to read it from.
    dir_origin: Option<PathBuf>,
    /// The cache key of the step that made the layer (its record gets the blob once made).
    key: Option<CacheKey>,
}

/// A stage's result (or its state while its instructions run).
#[derive(Debug, Clone)]
struct StageState {
    key: CacheKey,
    config: ImageConfig,
    layers: Vec<Layer>,
    scope: Scope,
    /// The registry repository of the base image (for cross-repository mounts).
    base_repo: Option<Repository>,
    /// A CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// The platform the stage's filesystem is for (`FROM --platform` may differ from the
    /// build's target platform).
    platform: Platform,
    /// The build's target platform this stage is built for (whose provenance records
    /// what it uses).
    build_target: Platform,
}

type StageFuture = Shared<BoxFuture<'static, Result<Arc<StageState>, Error>>>;

/// A base image resolved for one platform.
#[derive(Debug)]
struct BaseImage {
    repo: Repository,
    /// What the reference resolved to: the index's digest if it named one, else the
    /// manifest's (the provenance's dependency digest, as BuildKit's).
    resolved_digest: String,
    manifest_digest: String,
    config: Vec<u8>,
    layers: Vec<Layer>,
}

/// One lock per cache key being computed. Builds of one [`super::BuildGroup`] share the
/// table, so a step (or a pull) that several of them need runs once: the others wait on its
/// lock and then find its result in the cache.
#[derive(Clone, Default)]
pub(super) struct KeyLocks(Arc<Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>>);

impl std::fmt::Debug for KeyLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyLocks")
    }
}

/// Shared by every task of a build.
struct Ctx {
    /// The build-check configuration (`UndefinedVar` is found while the stages run).
    checks: dockerfile::LintConfig,
    cache: Cache,
    lease: Lease,
    client: Client,
    sandbox: Sandbox,
    cancel: CancelHandle,
    events: mpsc::UnboundedSender<ProgressEvent>,
    /// The build's start: the timeline's phases are timed from it.
    clock: crate::progress::Clock,
    next_step: AtomicU32,
    cached_steps: AtomicU32,
    run_steps: AtomicU32,
    no_cache: bool,
    /// `--no-cache-filter`: the stages (indexes) whose steps never use cached results.
    no_cache_stages: std::collections::BTreeSet<usize>,
    /// One lock per cache key being computed: identical steps run once.
    key_locks: KeyLocks,
    /// Bounds concurrent layer compression to the cores.
    cpu: Semaphore,
    dockerfile_name: String,
    text: String,
    pack: PackOptions,
    /// The build options that enter step keys or decide whether a step may run.
    key_opts: crate::graph::GraphOptions,
    build_platform: Platform,
    /// `--platform` was given: the images get the target's os and architecture whatever
    /// their base says (BuildKit's `implicitTarget` false).
    explicit_platform: bool,
    source_date_epoch: Option<i64>,
    /// `rewrite-timestamp=true`: the epoch the new layers are marked with
    /// (`buildkit/rewritten-timestamp`).
    rewritten_timestamp: Option<i64>,
    /// The first step failure: it cancels the other stages and is what the build reports.
    first_error: Mutex<Option<Error>>,
    images: tokio::sync::Mutex<HashMap<(String, String), Arc<BaseImage>>>,
    tmp: PathBuf,
    labels: BTreeMap<String, String>,
    copy_context: Arc<crate::copy::BuildContext>,
    /// `--build-context`: by key ([`crate::engine::named`]).
    named: BTreeMap<String, crate::engine::NamedContext>,
    /// Secrets, SSH agents and entitlements for RUN mounts.
    run_opts: super::mounts::RunOptions,
    /// Progress names carry the platform only when there are several.
    multi_platform: bool,
    /// Background pulls of base images' blobs, by FROM step (stopped when the build ends).
    prefetches: Mutex<Vec<(StepId, Instant, tokio::task::JoinHandle<()>)>>,
    /// The hostname RUN steps see (`BUILDKIT_SANDBOX_HOSTNAME`, else BuildKit's default).
    sandbox_hostname: String,
    /// `--add-host` entries for RUN steps' `/etc/hosts`.
    extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--ulimit`, `--shm-size` of RUN steps.
    run_limits: sandbox::RunLimits,
    /// The caches `--cache-from` imported (manifests and configs only).
    remote: remote::RemoteCaches,
    /// The repositories pushed to, when every output is a push (else empty).
    push_repos: Vec<Repository>,
    /// The cache mounts of the RUN steps (run or cached; directory names), for a cache export.
    used_mounts: Mutex<std::collections::BTreeSet<String>>,
    /// A `mode=max` cache export wants every stage's steps: they are noted in `noted`.
    note_steps: bool,
    noted: Mutex<Vec<Vec<Layer>>>,
    /// `--cache-to type=inline`: each image's config carries its steps' records.
    inline_cache: bool,
    /// The stages whose new layers are packed as soon as they are made (see `ahead`):
    /// empty unless an output needs compressed layers.
    ahead_stages: std::collections::BTreeSet<usize>,
    /// The packs started ahead (stopped when the build ends).
    packing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The snapshots verified (or committed) by this build: verified once, not per step.
    verified: Mutex<std::collections::HashSet<ChainId>>,
    /// Each stage's filesystem key after each step, checked against the build's graph in
    /// debug builds (see `keycheck`).
    step_keys: Mutex<Vec<crate::graph::StepKey>>,
    /// What the provenance records (base images, downloads, steps), when one is made.
    recorder: Option<crate::attest::provenance::Recorder>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Stops the build's background pulls when dropped.
struct StopPrefetches(Arc<Ctx>);

impl Drop for StopPrefetches {
    fn drop(&mut self) {
        self.0.stop_prefetches();
        self.0.stop_packing();
    }
}

/// The record annotation keeping the SOURCE_DATE_EPOCH a layer's diffID was computed
/// with (its blob must be packed with the same clamp).
const EPOCH_ANNOTATION: &str = "rbuild.source-date-epoch";

/// The source text of the instruction at `span` of `text`, continuation lines joined, for
/// step names.
pub(crate) fn source_text(text: &str, span: dockerfile::Span) -> String {
    let raw = text.get(span.range()).unwrap_or_default();
    let first = raw.lines().next().unwrap_or_default().trim();
    let mut s: String = raw
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    if s.is_empty() {
        s = first.to_owned();
    }
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn pick_blob(rec: &LayerRecord, preferred: Compression) -> Option<&CacheBlobRef> {
    rec.blobs
        .get(&preferred)
        .or_else(|| rec.blobs.values().next())
}

fn cache_digest(key: &CacheKey) -> Digest {
    key.as_str().parse().expect("cache keys are sha256 digests")
}

fn short(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn join_error(e: &tokio::task::JoinError) -> Error {
    Error::invalid_step(format!("internal task failed: {e}"))
}

/// The platform as the TARGET*/BUILD* args show it: like BuildKit (containerd's
/// `platforms.Normalize`), arm64 without its default `v8` variant.
pub(crate) fn platform_spec(p: &Platform) -> PlatformSpec {
    let variant = match (p.architecture(), p.variant()) {
        ("arm64", Some("v8")) => "",
        (_, v) => v.unwrap_or_default(),
    };
    PlatformSpec::new(p.os(), p.architecture(), variant)
}

/// The variant an image and its index entry carry for the target `p`: containerd's
/// normalisation, arm64 without its default `v8`.
pub(crate) fn oci_variant(p: &Platform) -> Option<&str> {
    match (p.architecture(), p.variant()) {
        ("arm64", Some("v8")) => None,
        (_, v) => v,
    }
}
