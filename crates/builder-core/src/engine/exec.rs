//! The executor: stages become tasks, instructions become cached steps.
//!
//! Each reachable stage of each platform is a tokio task that waits for the stages it reads
//! (its base, `COPY --from`) and then walks its instructions. Every step that changes the
//! filesystem has a [`CacheKey`] derived from its parent's key and its inputs; a key found in
//! the cache index reuses the stored layer without materialising anything. Identical steps
//! (the same key, for example a `FROM --platform=$BUILDPLATFORM` stage built for two target
//! platforms) run once: a per-key lock makes the second one find the first one's result.

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
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use super::export_spec::ExportKind;
use super::{Build, DockerfileSource, Error, history};
use crate::cachekey::CacheKey;
use crate::fsview::LayeredView;
use crate::image::{Healthcheck as ConfigHealthcheck, HistoryEntry, ImageConfig, rfc3339};
use crate::oci::{BlobRef, BuiltImage, PlatformImage};
use crate::progress::{Phase, ProgressEvent, ProgressSink, StepId, Stream};
use crate::sandbox::{self, CancelHandle, NetworkMode, Rootfs, RunSpec, Sandbox};

mod ahead;
mod attest;
mod remote;
mod remote_mounts;

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

/// A unique build id of 25 lowercase letters and digits, like BuildKit's build refs: a hash
/// of the time, the process and a counter.
fn new_build_ref() -> String {
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

type StageFuture = Shared<BoxFuture<'static, Result<Arc<StageState>, Arc<Error>>>>;

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
    network: NetworkMode,
    allow_insecure: bool,
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

impl Ctx {
    /// Aborts the background pulls still running; returns their FROM steps.
    fn stop_prefetches(&self) -> Vec<(StepId, Instant)> {
        let tasks = std::mem::take(&mut *self.prefetches.lock().unwrap_or_else(|e| e.into_inner()));
        tasks
            .into_iter()
            .filter(|(_, _, task)| !task.is_finished())
            .map(|(id, t0, task)| {
                task.abort();
                (id, t0)
            })
            .collect()
    }

    fn emit(&self, ev: ProgressEvent) {
        let _ = self.events.send(ev);
    }

    /// Times `phase` of step `id` until the timer is dropped (the timeline's events).
    fn timer(
        &self,
        id: impl Into<Option<StepId>>,
        phase: Phase,
        label: impl Into<String>,
    ) -> crate::progress::PhaseTimer<'_> {
        self.clock.timer(&self.events, id.into(), phase, label)
    }

    /// A stage failed: remember the first failure and cancel the rest of the build, so
    /// that steps running in parallel stop at once instead of finishing first.
    fn fail(&self, e: &Error) {
        if matches!(e, Error::Cancelled) {
            return;
        }
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(clone_error(e));
        }
        drop(first);
        // A rejected cache blob ends this attempt, not the build: the handle is the
        // caller's, shared with the next attempt, and the steps running now finish into
        // the local cache (the next attempt waits on their key locks).
        if !matches!(e, Error::RejectedCacheBlob { .. }) {
            self.cancel.cancel();
        }
    }

    fn step_id(&self) -> StepId {
        StepId(self.next_step.fetch_add(1, Ordering::Relaxed))
    }

    fn location(&self, span: dockerfile::Span) -> String {
        format!("{}:{}", self.dockerfile_name, span.start_line)
    }

    /// The instruction's source text, continuation lines joined, for step names.
    fn source_text(&self, span: dockerfile::Span) -> String {
        source_text(&self.text, span)
    }

    fn created_now(&self) -> u64 {
        match self.source_date_epoch {
            Some(t) => t.max(0) as u64,
            None => now_secs(),
        }
    }

    async fn key_lock(&self, key: &CacheKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.key_locks.0.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn lookup(&self, key: &CacheKey) -> Result<Option<LayerRecord>, Error> {
        if self.no_cache {
            return Ok(None);
        }
        let d = cache_digest(key);
        let Some(rec) = self.cache.index().get(&d)? else {
            return Ok(None);
        };
        // A layer packed with another SOURCE_DATE_EPOCH clamp (or none) has other bytes:
        // the step runs again rather than export mtimes this build did not ask for.
        let rec_epoch = rec
            .annotations
            .get(EPOCH_ANNOTATION)
            .and_then(|v| v.parse::<i64>().ok());
        if rec_epoch != self.pack.source_date_epoch {
            return Ok(None);
        }
        // A record whose layer is gone (pruned) is a miss: it needs its blob or, for a layer
        // never compressed, its snapshot.
        {
            match pick_blob(&rec, self.pack.compression) {
                Some(blob) if self.cache.content().contains(&blob.digest) => {
                    self.lease
                        .hold(layer_cache::EntryRef::Blob(blob.digest.clone()))?;
                }
                _ => {
                    let Some(chain) = &rec.chain_id else {
                        return Ok(None);
                    };
                    self.lease
                        .hold(layer_cache::EntryRef::Snapshot(chain.clone()))?;
                    if self.cache.snapshots().get(chain)?.is_none() {
                        return Ok(None);
                    }
                }
            }
        }
        let _ = self.cache.index().touch(&d);
        Ok(Some(rec))
    }

    /// Makes sure the blob of `stack[i]` is in the content store, pulling it (a base
    /// image's layer) or packing it from its snapshot (a step's layer never compressed),
    /// and returns it.
    async fn ensure_blob(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
        step: StepId,
    ) -> Result<(CacheBlobRef, Digest), Error> {
        let layer = &stack[i];
        let (Some(blob), Some(diff_id)) = (&layer.blob, &layer.diff_id) else {
            return self.pack_layer(stack, i, step).await;
        };
        let done = || Ok((blob.clone(), diff_id.clone()));
        self.lease
            .hold(layer_cache::EntryRef::Blob(blob.digest.clone()))?;
        if self.cache.content().contains(&blob.digest) {
            return done();
        }
        // Stages of this build that need the same blob wait here, without blocking a
        // runtime thread; the content store's own lock (a blocking flock, taken on the
        // blocking pool) then keeps other processes out.
        let _guard = self.pull_lock(blob).await;
        self.pull_locked(layer, blob, step).await?;
        done()
    }

    /// The lock one task of this build holds while it pulls `blob`.
    async fn pull_lock(&self, blob: &CacheBlobRef) -> tokio::sync::OwnedMutexGuard<()> {
        self.key_lock(&CacheKey::derive(None, "pull", &blob.digest.to_string()))
            .await
    }

    /// Pulls `blob` of `layer` into the content store unless it is there; the caller
    /// holds its [`Ctx::pull_lock`].
    async fn pull_locked(
        &self,
        layer: &Layer,
        blob: &CacheBlobRef,
        step: StepId,
    ) -> Result<(), Error> {
        if self.cache.content().contains(&blob.digest) {
            return Ok(());
        }
        if let (None, Some(dir)) = (&layer.origin, &layer.dir_origin) {
            return self.copy_from_dir(dir, blob).await;
        }
        let Some(repo) = &layer.origin else {
            return Err(Error::from(layer_cache::Error::NotFound {
                what: format!(
                    "blob {} (it was pruned while the build used it)",
                    blob.digest
                ),
            }));
        };
        let mut timer = self.timer(step, Phase::Pull, short(&blob.digest.to_string()));
        timer.bytes(blob.size);
        let (store, digest, size) = (self.cache.content().clone(), blob.digest.clone(), blob.size);
        let ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, Some(size)))
            .await
            .map_err(|e| join_error(&e))??;
        let mut w = match ingest {
            Ingest::Present(_) => return Ok(()),
            Ingest::Writer(w) => w,
        };
        w.restart()?;
        let desc = descriptor(blob)?;
        let progress = PullProgress {
            ctx: self,
            step,
            label: short(&blob.digest.to_string()),
        };
        let mut sink = SyncWriter(&mut w);
        let pulled = self
            .client
            .pull_blob(repo, &desc, &mut sink, &progress)
            .await;
        // A step's layer with an origin comes from an imported cache: bytes that are not
        // its blob reject it (the build runs again without it) rather than fail the build.
        let from_cache = layer.key.is_some();
        match pulled {
            Err(
                e @ (registry_client::Error::DigestMismatch { .. }
                | registry_client::Error::SizeMismatch { .. }),
            ) if from_cache => return Err(remote::rejected(blob, &e.to_string())),
            r => r?,
        }
        match w.commit(&blob.digest) {
            Err(
                e @ (layer_cache::Error::DigestMismatch { .. }
                | layer_cache::Error::SizeMismatch { .. }),
            ) if from_cache => Err(remote::rejected(blob, &e.to_string())),
            r => r.map(|_| ()).map_err(Error::from),
        }
    }

    /// The cache record of a step's layer, when it still describes that layer's snapshot
    /// (another build may have replaced it, under `--no-cache` for example).
    /// [`Ctx::layer_record`] under the lock of the layer's cache key, for work that
    /// completes the record (hashing, packing) once. A step's layer always has a key; a
    /// base layer has its diffID and blob and never comes here.
    async fn locked_layer_record(
        &self,
        layer: &Layer,
    ) -> Result<
        (
            tokio::sync::OwnedMutexGuard<()>,
            Option<(Digest, LayerRecord)>,
        ),
        Error,
    > {
        let key = layer
            .key
            .as_ref()
            .ok_or_else(|| inner_error("a layer without a diffID or blob has no cache record"))?;
        let guard = self.key_lock(key).await;
        Ok((guard, self.layer_record(layer)?))
    }

    fn layer_record(&self, layer: &Layer) -> Result<Option<(Digest, LayerRecord)>, Error> {
        let Some(key) = &layer.key else {
            return Ok(None);
        };
        let record_key = cache_digest(key);
        Ok(self
            .cache
            .index()
            .get(&record_key)?
            .filter(|r| r.chain_id.as_ref() == Some(&layer.chain))
            .map(|r| (record_key, r)))
    }

    /// Pack options for a step's layer: the SOURCE_DATE_EPOCH clamp it was made with.
    fn layer_pack_options(&self, rec: Option<&LayerRecord>) -> PackOptions {
        let mut opts = self.pack.clone();
        opts.source_date_epoch = rec
            .and_then(|r| r.annotations.get(EPOCH_ANNOTATION))
            .and_then(|v| v.parse().ok());
        opts
    }

    /// A compression progress event of `step` for the layer `label`.
    fn emit_compress(&self, step: StepId, label: &str, current: u64, total: Option<u64>) {
        self.emit(ProgressEvent::StepProgress {
            id: step,
            activity: crate::progress::Activity::Compress,
            label: label.to_string(),
            current,
            total,
        });
    }

    /// Compresses the layer `stack[i]` from its snapshot (once: another task or process
    /// may have done it already) and records the blob and diffID in its step's cache
    /// record.
    async fn pack_layer(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
        step: StepId,
    ) -> Result<(CacheBlobRef, Digest), Error> {
        let layer = &stack[i];
        let (_guard, rec) = self.locked_layer_record(layer).await?;
        if let Some((_, r)) = &rec {
            if let (Some(b), Some(d)) = (pick_blob(r, self.pack.compression), &r.diff_id) {
                self.lease
                    .hold(layer_cache::EntryRef::Blob(b.digest.clone()))?;
                if self.cache.content().contains(&b.digest) {
                    return Ok((b.clone(), d.clone()));
                }
            }
        }
        let expected = layer
            .diff_id
            .clone()
            .or_else(|| rec.as_ref().and_then(|(_, r)| r.diff_id.clone()));
        let opts = self.layer_pack_options(rec.as_ref().map(|(_, r)| r));
        let label = short(&layer.chain.to_string());
        let total = rec
            .as_ref()
            .map(|(_, r)| r.uncompressed_size)
            .filter(|n| *n > 0);
        self.emit_compress(step, &label, 0, total);
        let me = self.clone();
        let chain = layer.chain.clone();
        let tick = label.clone();
        let packed = tokio::task::spawn_blocking(move || {
            let mut timer = me.timer(step, Phase::Compress, tick.clone());
            // A progress event per 4 MiB of tar stream.
            let last = std::cell::Cell::new(0u64);
            let progress = |n: u64| {
                if n >= last.get() + (4 << 20) {
                    last.set(n);
                    me.emit_compress(step, &tick, n, total);
                }
            };
            let packed = me.cache.pack_snapshot(
                &chain,
                expected.as_ref(),
                &opts,
                Some(&me.lease),
                &progress,
            );
            if let Ok(p) = &packed {
                timer.bytes(p.uncompressed_size);
            }
            packed
        })
        .await
        .map_err(|e| join_error(&e))??;
        let done = packed.uncompressed_size;
        self.emit_compress(step, &label, done, Some(done));
        let blob = CacheBlobRef::new(packed.digest.clone(), packed.media_type(), packed.size);
        if let Some((record_key, _)) = &rec {
            self.record_layer(record_key, layer, &packed, Some(&blob))?;
        }
        Ok((blob, packed.diff_id))
    }

    /// The diffID of `stack[i]`, hashing its snapshot when it was never hashed (nothing
    /// is stored but the diffID in its cache record).
    async fn ensure_diff_id(self: &Arc<Self>, stack: &[Layer], i: usize) -> Result<Digest, Error> {
        let layer = &stack[i];
        if let Some(d) = &layer.diff_id {
            return Ok(d.clone());
        }
        let (_guard, rec) = self.locked_layer_record(layer).await?;
        if let Some(d) = rec.as_ref().and_then(|(_, r)| r.diff_id.clone()) {
            return Ok(d);
        }
        let opts = self.layer_pack_options(rec.as_ref().map(|(_, r)| r));
        let me = self.clone();
        let chain = layer.chain.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let mut timer = me.timer(None, Phase::Hash, short(&chain.to_string()));
            let hashed = me.cache.hash_snapshot(&chain, &opts);
            if let Ok(h) = &hashed {
                timer.bytes(h.uncompressed_size);
            }
            hashed
        })
        .await
        .map_err(|e| join_error(&e))??;
        if let Some((record_key, _)) = &rec {
            self.record_layer(record_key, layer, &hashed, None)?;
        }
        Ok(hashed.diff_id)
    }

    /// Adds what hashing or packing a step's layer found to its cache record.
    fn record_layer(
        &self,
        record_key: &Digest,
        layer: &Layer,
        packed: &PackedLayer,
        blob: Option<&CacheBlobRef>,
    ) -> Result<(), Error> {
        self.cache.index().update(record_key, |r| {
            r.map(|mut r| {
                if r.chain_id.as_ref() == Some(&layer.chain) {
                    if r.diff_id.is_none() {
                        r.diff_id = Some(packed.diff_id.clone());
                        r.uncompressed_size = packed.uncompressed_size;
                    }
                    if let (Some(b), true) = (blob, r.diff_id.as_ref() == Some(&packed.diff_id)) {
                        r.blobs.insert(packed.compression, b.clone());
                    }
                }
                r
            })
        })?;
        Ok(())
    }

    /// The snapshot directories (topmost first) of a stack of layers, unpacking as needed.
    async fn materialize(
        self: &Arc<Self>,
        layers: &[Layer],
        step: StepId,
    ) -> Result<Vec<PathBuf>, Error> {
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        // A chain already unpacked needs no blob.
        let top = &layers[layers.len() - 1].chain;
        let me = self.clone();
        let chain = top.clone();
        let found = tokio::task::spawn_blocking(move || me.lowerdirs(&chain))
            .await
            .map_err(|e| join_error(&e))?;
        if let Ok(dirs) = found {
            if dirs.len() == layers.len() {
                self.lease
                    .hold(layer_cache::EntryRef::Snapshot(top.clone()))?;
                return Ok(dirs);
            }
        }
        // Otherwise from the blobs (pulled at once), as the chain of their diffIDs.
        let refs: Vec<LayerRef> = futures_util::future::try_join_all(
            (0..layers.len()).map(|i| self.ensure_blob(layers, i, step)),
        )
        .await?
        .into_iter()
        .map(|(blob, diff_id)| LayerRef::new(blob.digest, diff_id))
        .collect();
        let me = self.clone();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>, Error> {
            let _timer = me.timer(step, Phase::Unpack, format!("{} layers", refs.len()));
            let opts = overlay_apply_options();
            let top = me.cache.unpack_chain(&refs, &opts, Some(&me.lease))?;
            Ok(me.lowerdirs(&top.chain_id)?)
        })
        .await
        .map_err(|e| join_error(&e))?;
        unpacked.map_err(|e| remote::reject_diff_id(e, layers))
    }

    /// The snapshot directories of `chain`, topmost first. Each snapshot is verified (its
    /// files' metadata against the fingerprint of its commit) the first time this build
    /// uses it; one this build committed is not.
    fn lowerdirs(&self, chain: &ChainId) -> layer_cache::Result<Vec<PathBuf>> {
        let verified = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        // The set is not held while a snapshot's files are walked: stages verify at once.
        let mut marked = Vec::new();
        let dirs = self.cache.snapshots().lowerdirs_verifying(chain, &mut |c| {
            let first = verified().insert(c.clone());
            if first {
                marked.push(c.clone());
            }
            first
        });
        if dirs.is_err() {
            let mut set = verified();
            for c in &marked {
                set.remove(c);
            }
        }
        dirs
    }

    /// A fresh private directory under the cache's temporary area.
    fn tempdir(&self, prefix: &str) -> Result<tempfile::TempDir, Error> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.tmp)
            .map_err(|e| {
                Error::from(layer_cache::Error::Io {
                    path: self.tmp.clone(),
                    source: e,
                })
            })
    }

    /// Packs an overlay-format diff directory as the layer of `key` on top of `parent`. A
    /// diff that changed nothing is a layer too (the empty tar), as in BuildKit: the step
    /// keeps its place in `rootfs.diff_ids`, with `empty_layer` unset in the history.
    fn commit_diff(
        &self,
        key: &CacheKey,
        dir: &Path,
        parent: &[Layer],
    ) -> Result<LayerRecord, Error> {
        let parent_chain = parent.last().map(|l| l.chain.clone());
        // Not read now: hashed and compressed when an exporter needs the layer.
        let snap = self.cache.commit_upperdir_unhashed(
            dir,
            parent_chain.as_ref(),
            &unique_snapshot_id(key),
            Some(&self.lease),
        )?;
        // Just written and fingerprinted: not verified again by this build.
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(snap.chain_id.clone());
        let mut rec = LayerRecord::unhashed(snap.chain_id);
        if let Some(t) = self.pack.source_date_epoch {
            rec.annotations
                .insert(EPOCH_ANNOTATION.into(), t.to_string());
        }
        rec.created = self.created_now();
        self.cache.index().put(&cache_digest(key), &rec)?;
        Ok(rec)
    }
}

/// The record annotation keeping the SOURCE_DATE_EPOCH a layer's diffID was computed
/// with (its blob must be packed with the same clamp).
const EPOCH_ANNOTATION: &str = "rbuild.source-date-epoch";

/// What the ONBUILD trigger number `t` of the stage's base reads with `COPY --from`: the
/// stage the plan found for it when the base is a stage of this Dockerfile, else an image
/// (a base image's trigger cannot name a stage of this build, which its author never saw).
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

fn trigger_dep(
    plan: &BuildPlan,
    stage: &dockerfile::Stage,
    t: usize,
    ins: &Spanned<Instruction>,
) -> Result<Option<DepSource>, String> {
    let Instruction::Copy(c) = &ins.value else {
        return Ok(None);
    };
    let Some(from) = &c.from else {
        return Ok(None);
    };
    if let Some(d) = stage
        .deps
        .iter()
        .find(|d| d.kind == dockerfile::DepKind::Onbuild && d.instruction == t)
    {
        return Ok(Some(d.source.clone()));
    }
    if from.value.parse::<i64>().is_ok() || names_stage(plan, &from.value) {
        return Err(format!(
            "COPY --from={} in an ONBUILD trigger of a base image names a stage of this \
             Dockerfile: not supported (a trigger can read stages only when its base is a \
             stage of the same Dockerfile)",
            from.value
        ));
    }
    Ok(Some(DepSource::Image(from.value.clone())))
}

/// Whether `name` is the name of a stage of the plan (stage names are case-insensitive).
fn names_stage(plan: &BuildPlan, name: &str) -> bool {
    let name = name.to_lowercase();
    plan.stages()
        .iter()
        .any(|s| s.name.as_deref() == Some(name.as_str()))
}

/// A new id for a step's snapshot: unique to this run of the step (a re-run under
/// `--no-cache` must not find the previous run's files).
fn unique_snapshot_id(key: &CacheKey) -> Digest {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    Digest::sha256_of(format!("rbuild step {key} {} {nanos} {n}", std::process::id()).as_bytes())
}

/// How base and step layers are unpacked as overlay lower directories.
fn overlay_apply_options() -> ApplyOptions {
    let mut o = ApplyOptions::default();
    o.mode = ApplyMode::OverlayLayer;
    o.devices = layer_cache::DevicePolicy::Create;
    let privilege = crate::Privilege::current();
    if privilege.in_user_namespace() {
        // overlayfs mounted with `userxattr` reads user.overlay.opaque.
        o.overlay_xattr = layer_cache::OverlayXattr::User;
        // mknod of a real device is refused there; the nodes stay out of the lowers.
        o.devices = layer_cache::DevicePolicy::Skip;
    }
    if privilege.single_id() {
        // No uid but 0 exists: the files stay root-owned (said at build start).
        o.ownership = layer_cache::Ownership::Current;
    }
    o
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
    Error::Step {
        location: String::new(),
        instruction: String::new(),
        reason: format!("internal task failed: {e}"),
        output_tail: Vec::new(),
    }
}

fn descriptor(blob: &CacheBlobRef) -> Result<registry_client::oci_spec::image::Descriptor, Error> {
    let digest: registry_client::Digest = blob.digest.to_string().parse()?;
    Ok(registry_client::oci_spec::image::Descriptor::new(
        blob.media_type.as_str().into(),
        blob.size,
        digest.to_oci(),
    ))
}

/// Adapts the content store's synchronous writer for the registry client's async pull.
struct SyncWriter<'a>(&'a mut layer_cache::BlobWriter);

impl tokio::io::AsyncWrite for SyncWriter<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        std::task::Poll::Ready(self.0.write(buf))
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Write;
        std::task::Poll::Ready(self.0.flush())
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

struct PullProgress<'a> {
    ctx: &'a Ctx,
    step: StepId,
    label: String,
}

impl registry_client::TransferProgress for PullProgress<'_> {
    fn event(&self, ev: &registry_client::TransferEvent<'_>) {
        if let registry_client::TransferEvent::Progress { done, total, .. } = ev {
            self.ctx.emit(ProgressEvent::StepProgress {
                id: self.step,
                activity: crate::progress::Activity::Pull,
                label: self.label.clone(),
                current: *done,
                total: Some(*total),
            });
        }
    }
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

fn step_failed(
    ctx: &Ctx,
    span: dockerfile::Span,
    instruction: &str,
    reason: impl Into<String>,
) -> Error {
    Error::Step {
        location: ctx.location(span),
        instruction: instruction.to_owned(),
        reason: reason.into(),
        output_tail: Vec::new(),
    }
}

/// Whether a `syntax` directive's image is the Dockerfile frontend (`docker/dockerfile`
/// or `docker/dockerfile-upstream`, from Docker Hub under any of its spellings, any tag or
/// digest), whose syntax rbuild implements itself.
fn is_dockerfile_frontend(reference: &str) -> bool {
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
            let p = super::default_dockerfile(&b.context);
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
        source: Box::new(source),
    })?;
    Ok((name, text, df))
}

pub(super) async fn run(b: Build, sink: &mut dyn ProgressSink) -> Result<BuildReport, Error> {
    let started = Instant::now();
    let wall_start = attest::Started::now();
    let (name, text, df) = load_dockerfile(&b)?;
    let host = Platform::host();
    let platforms = if b.platforms.is_empty() {
        vec![host.clone()]
    } else {
        b.platforms.clone()
    };
    if platforms.len() > 1
        && b.outputs
            .iter()
            .any(|o| matches!(o.kind, ExportKind::Docker { .. }))
    {
        return Err(Error::InvalidOutput {
            spec: "type=docker".into(),
            reason: "docker exporter does not currently support exporting manifest lists; build one platform".into(),
        });
    }
    // Every registry output's names, checked before anything runs.
    let mut push_repos: Vec<Repository> = Vec::new();
    for o in b.outputs.iter().filter(|o| o.kind == ExportKind::Registry) {
        for t in super::export::push_targets(o, &b.tag_names)? {
            if !push_repos.contains(&t.repo) {
                push_repos.push(t.repo);
            }
        }
    }

    let image_outputs = b
        .outputs
        .iter()
        .any(|o| !matches!(o.kind, ExportKind::Local { .. }));
    if b.attestations.any() && !image_outputs {
        return Err(super::invalid(
            "attest",
            "type=local",
            "attestations are attached to images: give a registry, oci or docker output \
             (writing them as files of a local output is not supported yet)",
        ));
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
                source: Box::new(source),
            })?;
            plans.push(Arc::new(plan));
        }
        Ok::<_, Error>(plans)
    };
    let mut plans = make_plans(&b.build_args)?;
    let epoch = super::epoch::resolve(&b, &plans[0], &name)?;
    // `context` or a stage name: the steps see the seconds it resolved to (or nothing).
    if let Some(v) = epoch.replaced() {
        let mut args = b.build_args.clone();
        args.insert("SOURCE_DATE_EPOCH".to_owned(), v);
        plans = make_plans(&args)?;
    }
    let source_date_epoch = epoch.seconds;

    let cache_dir = b.cache_dir.clone().unwrap_or_else(super::default_cache_dir);
    let cache = Cache::open(&cache_dir)?;
    super::cache_owner::check(cache.root())?;
    let lease = cache.lease()?;
    let tmp = cache.other_dir("tmp")?;
    let sandbox = Sandbox::detect(&tmp)?;
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
            (Some(cc), Some(o)) if cc != o.compression => {
                return Err(Error::InvalidCache {
                    spec: c.location.to_string(),
                    reason: format!(
                        "compression {cc:?} differs from the output's {:?}: rbuild exports the \
                         layers it made, in one compression (recompressing is not supported yet)",
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
                super::invalid("context", &b.context.display().to_string(), e.to_string())
            })?;
    let checks = super::check::config(&text, &b.build_args)?;
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
        network: b.network,
        allow_insecure: b.allow_insecure,
        build_platform: host.clone(),
        explicit_platform: !b.platforms.is_empty(),
        source_date_epoch,
        rewritten_timestamp: export_epoch.filter(|_| rewrite_timestamp == Some(true)),
        first_error: Mutex::new(None),
        images: tokio::sync::Mutex::new(HashMap::new()),
        tmp,
        labels: b.labels.clone(),
        copy_context: Arc::new(copy_context),
        run_opts: super::mounts::RunOptions::new(&b),
        multi_platform: platforms.len() > 1,
        prefetches: Mutex::new(Vec::new()),
        ahead_stages: if packs_layers && ahead::enabled() {
            ahead::image_stages(&plans[0])
        } else {
            Default::default()
        },
        packing: Mutex::new(Vec::new()),
        verified: Mutex::default(),
        sandbox_hostname: b
            .build_args
            .get("BUILDKIT_SANDBOX_HOSTNAME")
            .filter(|h| !h.is_empty())
            .cloned()
            .unwrap_or_else(|| "buildkitsandbox".to_owned()),
        extra_hosts: b.extra_hosts.clone(),
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
    super::check::report(
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
        let e = Arc::try_unwrap(e).unwrap_or_else(|e| clone_error(&e));
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

    // Assemble the images and export them.
    let export_step = ctx.step_id();
    // Without an output nothing needs compressed layers: only the configs are made.
    // Files only (`type=local`): copied from the snapshots, nothing compressed either.
    let local_only = !b.outputs.is_empty()
        && b.outputs
            .iter()
            .all(|o| matches!(o.kind, ExportKind::Local { .. }));
    let built = if b.outputs.is_empty() || local_only {
        None
    } else {
        let assembled = futures_util::future::try_join_all(
            states
                .iter()
                .zip(&platforms)
                .map(|(state, platform)| assemble(&ctx, state, platform, export_step)),
        );
        let images = forwarding(assembled, &mut rx, sink).await?;
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
        Some(BuiltImage::with_attestations(
            images,
            attestations,
            b.attestations.referrers,
        ))
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
        for n in super::export::output_names(o, &b.tag_names) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    if b.outputs.is_empty() {
        names.clone_from(&b.tag_names);
    }
    let base_repos = states_layers(&states);
    if local_only {
        let export = export_files(&ctx, &states, &platforms, &b.outputs, export_step);
        forwarding(export, &mut rx, sink).await?;
    }
    if let Some(built) = &built {
        let export = super::export::export_all(
            &ctx.client,
            &ctx.cache,
            built,
            &base_repos,
            &b.outputs,
            &b.tags,
            &b.tag_names,
            ctx.source_date_epoch,
            &ctx.events,
            ctx.clock,
            export_step,
        );
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
        .map_err(|e| inner_error(e.to_string()))?;
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
async fn forwarding<T>(
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
fn provenance_request(b: &Build, name: &str, text: &str) -> crate::attest::provenance::Request {
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
fn states_layers(states: &[Arc<StageState>]) -> Vec<Option<Repository>> {
    states.iter().map(|s| s.base_repo.clone()).collect()
}

fn clone_error(e: &Error) -> Error {
    // Shared futures hand out one error to several waiters; rebuild an owned one.
    match e {
        Error::Step {
            location,
            instruction,
            reason,
            output_tail,
        } => Error::Step {
            location: location.clone(),
            instruction: instruction.clone(),
            reason: reason.clone(),
            output_tail: output_tail.clone(),
        },
        Error::Cancelled => Error::Cancelled,
        Error::RejectedCacheBlob { digest, reason } => Error::RejectedCacheBlob {
            digest: digest.clone(),
            reason: reason.clone(),
        },
        other => Error::Step {
            location: String::new(),
            instruction: String::new(),
            reason: other.to_string(),
            output_tail: Vec::new(),
        },
    }
}

pub(super) fn read_dockerfile(p: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(p).map_err(|source| Error::ReadDockerfile {
        path: p.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| Error::ReadDockerfile {
        path: p.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the Dockerfile is not valid UTF-8",
        ),
    })
}

/// Starts a task per reachable stage; returns the target stage's future.
fn spawn_stages(ctx: &Arc<Ctx>, plan: Arc<BuildPlan>, platform: Platform) -> StageFuture {
    let mut futures: HashMap<usize, StageFuture> = HashMap::new();
    let mut reachable: Vec<usize> = plan.reachable().to_vec();
    reachable.sort_unstable();
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
        let fut: BoxFuture<'static, Result<Arc<StageState>, Arc<Error>>> = async move {
            match handle.await {
                Ok(r) => r.map_err(Arc::new),
                Err(e) => Err(Arc::new(join_error(&e))),
            }
        }
        .boxed();
        futures.insert(idx, fut.shared());
    }
    futures
        .remove(&plan.target())
        .expect("the target stage is reachable")
}

async fn wait_stage(
    deps: &HashMap<usize, StageFuture>,
    j: usize,
) -> Result<Arc<StageState>, Error> {
    match deps.get(&j) {
        Some(f) => f.clone().await.map_err(|e| clone_error(&e)),
        None => Err(Error::Step {
            location: String::new(),
            instruction: String::new(),
            reason: format!("stage {j} is not part of this build"),
            output_tail: Vec::new(),
        }),
    }
}

async fn build_stage(
    ctx: Arc<Ctx>,
    plan: Arc<BuildPlan>,
    platform: Platform,
    idx: usize,
    deps: HashMap<usize, StageFuture>,
) -> Result<StageState, Error> {
    let stage = &plan.stages()[idx];
    let total = stage.instructions.len() + 1;
    let stage_name = stage.display_name();
    let label = |n: usize, text: &str| format!("[{stage_name} {n}/{total}] {text}");
    let plat_label = ctx.multi_platform.then(|| platform.to_string());

    // FROM
    let id = ctx.step_id();
    let from_text = ctx.source_text(stage.span);
    ctx.emit(ProgressEvent::StepStarted {
        id,
        name: label(1, &from_text),
        platform: plat_label.clone(),
        location: Some(ctx.location(stage.span)),
    });
    let t0 = Instant::now();
    let mut state = match &stage.base {
        StageBase::Scratch => {
            let target = stage_platform(&plan, stage, &platform)
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            let config =
                ImageConfig::scratch(target.os(), target.architecture(), oci_variant(&target));
            StageState {
                key: CacheKey::derive(None, "scratch", &target.to_string()),
                scope: plan.image_scope(
                    idx,
                    &config
                        .env()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>(),
                ),
                config,
                layers: Vec::new(),
                base_repo: None,
                cmd_set: false,
                platform: target,
                build_target: platform.clone(),
            }
        }
        StageBase::Image(r) => {
            let target = stage_platform(&plan, stage, &platform)
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            let base = resolve_image(&ctx, r, &target, id)
                .await
                .map_err(|e| step_failed(&ctx, stage.span, &from_text, e.to_string()))?;
            note_image(&ctx, &platform, r, &base, &target);
            if let Some(rec) = &ctx.recorder {
                rec.step(
                    &platform.to_string(),
                    idx,
                    0,
                    crate::attest::provenance::StepRecord {
                        op: serde_json::json!({"source": {
                            "identifier": format!("docker-image://{}@{}", r.split('@').next().unwrap_or(r), base.resolved_digest),
                        }}),
                        platform: Some((target.os().to_owned(), target.architecture().to_owned())),
                        lines: (stage.span.start_line, stage.span.end_line),
                        extra_inputs: Vec::new(),
                        chain: base.layers.last().map(|l| l.chain.to_string()),
                        key: CacheKey::derive(None, "image", &base.manifest_digest).as_str().to_owned(),
                    },
                );
            }
            let config = ImageConfig::from_slice(&base.config).map_err(|e| Error::BadImage {
                reference: r.clone(),
                reason: e.to_string(),
            })?;
            let env: Vec<String> = config
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            StageState {
                key: CacheKey::derive(None, "image", &base.manifest_digest),
                scope: plan.image_scope(idx, &env),
                config,
                layers: base.layers.clone(),
                base_repo: Some(base.repo.clone()),
                cmd_set: false,
                platform: target,
                build_target: platform.clone(),
            }
        }
        StageBase::Stage(j) => {
            let parent = wait_stage(&deps, *j).await?;
            let mut s = (*parent).clone();
            s.scope = plan.stage_scope(idx, &parent.scope);
            s.cmd_set = false;
            s
        }
        _ => {
            return Err(step_failed(
                &ctx,
                stage.span,
                &from_text,
                "unsupported stage base",
            ));
        }
    };
    let missing = matches!(stage.base, StageBase::Image(_))
        && !ctx.lazy_base(&state.layers)
        && state.layers.iter().any(|l| {
            l.blob
                .as_ref()
                .is_some_and(|b| !ctx.cache.content().contains(&b.digest))
        });
    if missing {
        // The base's blobs are fetched in the background, under this FROM step, as
        // BuildKit shows them: the first step that needs the files waits for them (one
        // pull per blob), and a build whose steps are all cached does not wait. A failure
        // here is not reported: the step that needs the blob reports it.
        // The pull locks are taken here, before any step of this stage can ask.
        let mut locked = Vec::new();
        for l in &state.layers {
            if let Some(b) = &l.blob {
                ctx.lease
                    .hold(layer_cache::EntryRef::Blob(b.digest.clone()))?;
                locked.push((l.clone(), b.clone(), ctx.pull_lock(b).await));
            }
        }
        let me = ctx.clone();
        let task = tokio::spawn(async move {
            for (layer, blob, guard) in locked {
                let pulled = me.pull_locked(&layer, &blob, id).await;
                drop(guard);
                if pulled.is_err() {
                    break;
                }
            }
            me.emit(ProgressEvent::StepDone {
                id,
                elapsed: t0.elapsed(),
            });
        });
        ctx.prefetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, t0, task));
    } else {
        ctx.emit(ProgressEvent::StepDone {
            id,
            elapsed: t0.elapsed(),
        });
    }

    // ONBUILD triggers of the base run first, then are cleared.
    let triggers = state.config.onbuild();
    if !triggers.is_empty() {
        state.config.clear_onbuild();
        for (t, trigger) in triggers.into_iter().enumerate() {
            let df: Dockerfile = dockerfile::parse(&trigger).map_err(|e| {
                step_failed(
                    &ctx,
                    stage.span,
                    &format!("ONBUILD {trigger}"),
                    e.to_string(),
                )
            })?;
            for ins in &df.instructions {
                let step = state.scope.step(ins).map_err(|source| Error::Stages {
                    file: ctx.dockerfile_name.clone(),
                    source: Box::new(source),
                })?;
                let text = format!("ONBUILD {trigger}");
                let dep = trigger_dep(&plan, stage, t, &step.instruction)
                    .map_err(|reason| step_failed(&ctx, stage.span, &text, reason))?;
                let sid = ctx.step_id();
                ctx.emit(ProgressEvent::StepStarted {
                    id: sid,
                    name: format!("[{stage_name}] {text}"),
                    platform: plat_label.clone(),
                    location: Some(ctx.location(stage.span)),
                });
                let t = Instant::now();
                dispatch(
                    &ctx,
                    &plan,
                    &deps,
                    &mut state,
                    &step.instruction,
                    dep,
                    sid,
                    stage.span,
                    &text,
                )
                .await?;
                ctx.emit(ProgressEvent::StepDone {
                    id: sid,
                    elapsed: t.elapsed(),
                });
            }
        }
    }

    for (i, ins) in stage.instructions.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let text = ctx.source_text(ins.span);
        let id = ctx.step_id();
        let step = state.scope.step(ins).map_err(|source| Error::Stages {
            file: ctx.dockerfile_name.clone(),
            source: Box::new(source),
        })?;
        for w in step
            .warnings
            .iter()
            .filter(|w| ctx.checks.enabled_name(w.rule))
        {
            let location = w.span.map(|s| ctx.location(s));
            ctx.emit(ProgressEvent::Warning {
                message: format!("{}: {}", w.rule, w.message),
                location: location.clone(),
            });
            if ctx.checks.error {
                return Err(Error::LintViolations {
                    location: location.unwrap_or_default(),
                    rules: vec![w.rule.to_owned()],
                });
            }
        }
        let dep = stage
            .deps
            .iter()
            .find(|d| d.instruction == i && d.kind != dockerfile::DepKind::Onbuild)
            .map(|d| d.source.clone());
        ctx.emit(ProgressEvent::StepStarted {
            id,
            name: label(i + 2, &text),
            platform: plat_label.clone(),
            location: Some(ctx.location(ins.span)),
        });
        let t = Instant::now();
        let before = ctx
            .recorder
            .as_ref()
            .and_then(|_| provenance_op(&state, &step.instruction.value, dep.as_ref()));
        match dispatch(
            &ctx,
            &plan,
            &deps,
            &mut state,
            &step.instruction,
            dep,
            id,
            ins.span,
            &text,
        )
        .await
        {
            Ok(()) => {
                if let (Some(rec), Some((op, extra, exec))) = (&ctx.recorder, before) {
                    rec.step(
                        &platform.to_string(),
                        idx,
                        i + 1,
                        crate::attest::provenance::StepRecord {
                            op,
                            platform: exec.then(|| {
                                (
                                    state.platform.os().to_owned(),
                                    state.platform.architecture().to_owned(),
                                )
                            }),
                            lines: (ins.span.start_line, ins.span.end_line),
                            extra_inputs: extra,
                            chain: state.layers.last().map(|l| l.chain.to_string()),
                            key: state.key.as_str().to_owned(),
                        },
                    );
                }
                ctx.emit(ProgressEvent::StepDone {
                    id,
                    elapsed: t.elapsed(),
                })
            }
            Err(e) => {
                ctx.emit(ProgressEvent::StepFailed {
                    id,
                    error: e.to_string(),
                });
                return Err(e);
            }
        }
    }
    Ok(state)
}

pub(crate) fn stage_platform(
    plan: &BuildPlan,
    stage: &dockerfile::Stage,
    platform: &Platform,
) -> Result<Platform, Error> {
    let _ = plan;
    match &stage.platform {
        Some(p) if !p.is_empty() => p.parse().map_err(|e: registry_client::Error| {
            super::invalid("FROM --platform", p, e.to_string())
        }),
        _ => Ok(platform.clone()),
    }
}

async fn resolve_image(
    ctx: &Ctx,
    r: &str,
    platform: &Platform,
    step: StepId,
) -> Result<Arc<BaseImage>, Error> {
    let mut memo = ctx.images.lock().await;
    let memo_key = (r.to_owned(), platform.to_string());
    if let Some(b) = memo.get(&memo_key) {
        return Ok(b.clone());
    }
    let reference: Reference = r.parse()?;
    let _timer = ctx.timer(step, Phase::Resolve, r);
    // A digest-pinned base resolved before needs no registry: its manifests are kept in
    // the content store, like its config below.
    let (platform_manifest, resolved_digest) = match pinned_from_store(ctx, &reference, platform) {
        Some(m) => (
            m,
            reference
                .digest()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        None => {
            let resolved = ctx.client.resolve_platform(&reference, platform).await?;
            if reference.digest().is_some() {
                if let Some(index) = &resolved.index {
                    ctx.cache.content().put_bytes(index.bytes())?;
                }
                ctx.cache.content().put_bytes(resolved.manifest.bytes())?;
            }
            let top = match &resolved.index {
                Some(ix) => ix.digest().to_string(),
                None => resolved.manifest.digest().to_string(),
            };
            (resolved.manifest, top)
        }
    };
    let repo = reference.repository().clone();
    let manifest = match platform_manifest.parse()? {
        registry_client::Manifest::Image(m) => m,
        _ => {
            return Err(Error::BadImage {
                reference: r.to_owned(),
                reason: "the platform's manifest is not an image manifest".into(),
            });
        }
    };
    // The config is small: keep it in the content store for offline rebuilds of pinned bases.
    let cfg_desc = manifest.config();
    let cfg_digest: Digest = cfg_desc.digest().to_string().parse()?;
    let config = if ctx.cache.content().contains(&cfg_digest) {
        std::fs::read(ctx.cache.content().path(&cfg_digest)).map_err(|e| {
            Error::from(layer_cache::Error::Io {
                path: ctx.cache.content().path(&cfg_digest),
                source: e,
            })
        })?
    } else {
        let bytes = ctx.client.fetch_blob(&repo, cfg_desc).await?.to_vec();
        ctx.cache.content().put_bytes(&bytes)?;
        bytes
    };
    let parsed = ImageConfig::from_slice(&config).map_err(|e| Error::BadImage {
        reference: r.to_owned(),
        reason: e.to_string(),
    })?;
    let diff_ids = parsed.diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::BadImage {
            reference: r.to_owned(),
            reason: format!(
                "the manifest lists {} layers but the config {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers: Vec<Layer> = Vec::new();
    for (d, diff) in manifest.layers().iter().zip(&diff_ids) {
        let mt = d.media_type().to_string();
        if !(mt.contains("tar") || mt.contains("layer")) {
            return Err(Error::BadImage {
                reference: r.to_owned(),
                reason: format!("layer media type {mt} is not supported"),
            });
        }
        let diff_id: Digest = diff.parse()?;
        let chain = ChainId::child(layers.last().map(|l| &l.chain), &diff_id);
        layers.push(Layer {
            diff_id: Some(diff_id),
            chain,
            blob: Some(CacheBlobRef::new(
                d.digest().to_string().parse()?,
                mt,
                d.size(),
            )),
            origin: Some(repo.clone()),
            dir_origin: None,
            key: None,
        });
    }
    let base = Arc::new(BaseImage {
        repo,
        resolved_digest,
        manifest_digest: platform_manifest.digest().to_string(),
        config,
        layers,
    });
    memo.insert(memo_key, base.clone());
    Ok(base)
}

/// The image manifest for `platform` of a digest-pinned reference, from the content store
/// where an earlier build kept it; `None` when it is not pinned or anything is missing.
fn pinned_from_store(
    ctx: &Ctx,
    reference: &Reference,
    platform: &Platform,
) -> Option<registry_client::RawManifest> {
    let read = |d: &str| {
        let digest: Digest = d.parse().ok()?;
        let bytes = std::fs::read(ctx.cache.content().path(&digest)).ok()?;
        let m = registry_client::RawManifest::new(bytes.into(), None).ok()?;
        (m.digest().as_str() == d).then_some(m)
    };
    let top = read(reference.digest()?.as_str())?;
    match top.parse().ok()? {
        registry_client::Manifest::Image(_) => Some(top),
        registry_client::Manifest::Index(index) => {
            let m = read(platform.select(&index)?.digest().as_ref())?;
            (m.kind() == registry_client::ManifestKind::Image).then_some(m)
        }
    }
}

/// Inputs of a RUN step's cache key.
#[derive(Serialize)]
pub(crate) struct RunKey<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) user: &'a str,
    pub(crate) cwd: &'a str,
    pub(crate) network: &'a str,
    pub(crate) insecure: bool,
    pub(crate) files: &'a [(String, String)],
    /// RUN --mount definitions (left out when there are none, so older keys still match).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) mounts: &'a [serde_json::Value],
    /// `--add-host` entries, `HOST=IP` (left out when there are none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) extra_hosts: &'a [String],
}

/// The stage or image each `RUN --mount` names with `from` (`None` for the others): its
/// layers and its cache key.
async fn mount_froms(
    ctx: &Arc<Ctx>,
    plan: &BuildPlan,
    platform: &Platform,
    deps: &HashMap<usize, StageFuture>,
    state: &StageState,
    r: &dockerfile::RunInstruction,
    id: StepId,
) -> Result<Vec<Option<(Vec<Layer>, CacheKey)>>, Error> {
    let stage_deps = &plan.stages()[state.scope.stage()].deps;
    let mut out = Vec::new();
    for m in &r.mounts {
        let Some(from) = super::mounts::mount_from(m) else {
            out.push(None);
            continue;
        };
        let source = stage_deps
            .iter()
            .find(|d| {
                matches!(
                    d.kind,
                    dockerfile::DepKind::Mount | dockerfile::DepKind::Onbuild
                ) && d.from == from
            })
            .map(|d| d.source.clone());
        let source = match source {
            Some(s) => s,
            // Every mount of the Dockerfile's own RUNs naming a stage is a dep; one that is
            // not comes from an ONBUILD trigger of a base image.
            None if names_stage(plan, from) => {
                return Err(inner_error(format!(
                    "RUN --mount from={from} in an ONBUILD trigger of a base image names a \
                     stage of this Dockerfile: not supported (a trigger can read stages only \
                     when its base is a stage of the same Dockerfile)"
                )));
            }
            None => DepSource::Image(from.to_owned()),
        };
        out.push(Some(match source {
            DepSource::Stage(j) => {
                let s = wait_stage(deps, j).await?;
                (s.layers.clone(), s.key.clone())
            }
            DepSource::Image(r) => {
                let b = resolve_image(ctx, &r, platform, id).await?;
                note_image(ctx, &state.build_target, &r, &b, platform);
                let key = CacheKey::derive(None, "image", &b.manifest_digest);
                (b.layers.clone(), key)
            }
            _ => {
                return Err(inner_error(format!(
                    "mount from {from}: unsupported source"
                )));
            }
        }));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
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
            let key = CacheKey::derive(Some(&state.key), "workdir", &(&dir, &user));
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
                        super::workdir::make_workdir(&LayeredView::new(lowers), &dir, owner, &out)
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| join_error(&e))?
                    .map_err(|r| Error::Step {
                        location: String::new(),
                        instruction: String::new(),
                        reason: r,
                        output_tail: Vec::new(),
                    })
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
            copy_step(ctx, &stage_platform, deps, state, ins, dep, id, span, text).await?;
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
fn fs_workdir(state: &StageState) -> String {
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
fn locate(ctx: &Ctx, span: dockerfile::Span, text: &str, e: Error) -> Error {
    match e {
        Error::Step {
            location,
            reason,
            output_tail,
            ..
        } if location.is_empty() => Error::Step {
            location: ctx.location(span),
            instruction: text.to_owned(),
            reason,
            output_tail,
        },
        // A rejected cache blob restarts the build: it must reach `Build::run` as it is.
        Error::Step { .. } | Error::Cancelled | Error::RejectedCacheBlob { .. } => e,
        other => Error::Step {
            location: ctx.location(span),
            instruction: text.to_owned(),
            reason: other.to_string(),
            output_tail: Vec::new(),
        },
    }
}

pub(crate) fn inner_error(reason: impl Into<String>) -> Error {
    Error::Step {
        location: String::new(),
        instruction: String::new(),
        reason: reason.into(),
        output_tail: Vec::new(),
    }
}

/// Looks the step up in the cache; on a miss runs `work` to fill a fresh diff directory
/// (`<dir>/diff`, with `<dir>` free for scratch space) and stores the result. Either way the
/// layer (the empty tar when nothing changed) and a history entry are added to the stage.
/// The stages `--no-cache-filter` names (stage names compare case-insensitively, as
/// BuildKit's do).
fn no_cache_stages(
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
                super::invalid(
                    "no-cache-filter",
                    n,
                    "the Dockerfile has no stage of that name",
                )
            })?;
        out.insert(found.index);
    }
    Ok(out)
}

async fn cached_or_run<F, Fut>(
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
    let filtered = ctx.no_cache_stages.contains(&state.scope.stage());
    let local = if filtered { None } else { ctx.lookup(&key)? };
    let remote = match local {
        Some(_) => None,
        None if filtered => None,
        None => ctx.remote_lookup(&key)?,
    };
    let rec = match local.or_else(|| {
        remote.map(|hit| {
            (origin, dir_origin, source) = (hit.repo, hit.dir, Some(hit.source));
            hit.rec
        })
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
                return Err(inner_error(format!(
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
fn resolve_owner(lowers: &[PathBuf], user: &str) -> Result<(u32, u32), Error> {
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

/// `path` (absolute) with `.`, `..` and repeated or trailing slashes cleaned away.
pub(crate) fn clean_path(path: &str) -> String {
    let parts = crate::fsview::clean_components(Path::new(path));
    let mut out = String::new();
    for p in parts {
        out.push('/');
        out.push_str(&p.to_string_lossy());
    }
    if out.is_empty() { "/".into() } else { out }
}

fn command_argv(config: &ImageConfig, c: &Command) -> Vec<String> {
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

fn healthcheck(config: &ImageConfig, h: &dockerfile::Healthcheck) -> ConfigHealthcheck {
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
fn expand_ports(spec: &str) -> Result<Vec<String>, String> {
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

fn validate_signal(s: &str) -> Result<(), String> {
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
async fn run_step(
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
    if !r.devices.is_empty() {
        return Err(step_failed(
            ctx,
            span,
            text,
            "RUN --device is not supported",
        ));
    }
    // Images of other systems (a `darwin` or `windows` scratch stage holding binaries that
    // linux stages built) are assembled like any other; only their RUN steps cannot run.
    if platform.os() != "linux" {
        return Err(step_failed(
            ctx,
            span,
            text,
            format!(
                "RUN for platform {platform} is not supported: rbuild runs linux steps only \
                 (build such a stage with FROM --platform=$BUILDPLATFORM)"
            ),
        ));
    }
    let insecure = matches!(
        r.security.as_ref().map(|s| s.value),
        Some(dockerfile::SecurityMode::Insecure)
    );
    if insecure && !ctx.allow_insecure {
        return Err(step_failed(
            ctx,
            span,
            text,
            "security.insecure is not allowed: pass --allow security.insecure",
        ));
    }
    let network = match r.network.as_ref().map(|n| n.value) {
        None | Some(dockerfile::NetworkMode::Default) => ctx.network,
        Some(dockerfile::NetworkMode::None) => NetworkMode::None,
        Some(dockerfile::NetworkMode::Host) if ctx.run_opts.allow_network_host => NetworkMode::Host,
        Some(dockerfile::NetworkMode::Host) => {
            return Err(step_failed(
                ctx,
                span,
                text,
                "network.host is not allowed: pass --allow network.host",
            ));
        }
        Some(_) => return Err(step_failed(ctx, span, text, "unsupported --network mode")),
    };
    let (argv, files) = run_argv(&state.config, r);
    if argv.is_empty() {
        return Err(step_failed(ctx, span, text, "RUN needs a command"));
    }
    let mut env: BTreeMap<String, String> = state
        .scope
        .env()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    // Proxy variables reach the step but not its cache key (ARG-14).
    let key_env = env.clone();
    for (k, v) in plan.proxy_env() {
        env.insert(k, v);
    }
    let user = state.config.user().unwrap_or_default();
    let cwd = fs_workdir(state);
    let network_name = match network {
        NetworkMode::None => "none",
        _ => "host",
    };
    // RUN --mount: the `from` stages and images, then the mounts' part of the key.
    let froms = mount_froms(ctx, plan, platform, deps, state, r, id)
        .await
        .map_err(|e| locate(ctx, span, text, e))?;
    let from_keys: Vec<Option<CacheKey>> = froms
        .iter()
        .map(|f| f.as_ref().map(|(_, k)| k.clone()))
        .collect();
    let mounts = super::mounts::prepare(&r.mounts, &from_keys, &cwd, &ctx.copy_context)
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
    let extra_hosts: Vec<String> = ctx
        .extra_hosts
        .iter()
        .map(|(h, ip)| format!("{h}={ip}"))
        .collect();
    let key = CacheKey::derive(
        Some(&state.key),
        "run",
        &RunKey {
            argv: &argv,
            env: &key_env,
            user: &user,
            cwd: &cwd,
            network: network_name,
            insecure,
            files: &files,
            mounts: mounts.key(),
            extra_hosts: &extra_hosts,
        },
    );
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
                .activate(&super::mounts::Sources {
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
            .with_insecure(insecure);
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
                return Err(Error::Step {
                    location: String::new(),
                    instruction: String::new(),
                    reason,
                    output_tail,
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
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    const KEEP: usize = 16 * 1024;

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * Self::KEEP {
            self.buf.drain(..self.buf.len() - Self::KEEP);
        }
    }

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }
}

/// The image config of a stage's final state for one platform, with its layers' diffIDs.
fn final_config(
    ctx: &Ctx,
    state: &StageState,
    platform: &Platform,
    diff_ids: &[Digest],
) -> ImageConfig {
    let mut config = state.config.clone();
    // A base image's inline cache (rbuild's or BuildKit's) is not this image's.
    config.set_field(crate::remote_cache::INLINE_CACHE_FIELD, None);
    config.set_field(crate::remote_cache::BUILDKIT_INLINE_FIELD, None);
    let ids: Vec<String> = diff_ids.iter().map(ToString::to_string).collect();
    config.set_diff_ids(&ids);
    for (k, v) in &ctx.labels {
        config.set_label(k, v);
    }
    config.fill_history_times(&rfc3339(ctx.created_now() as i64, 0));
    let created = match ctx.source_date_epoch {
        Some(t) => rfc3339(t, 0),
        None => config
            .latest_history_created()
            .unwrap_or_else(|| rfc3339(ctx.created_now() as i64, 0)),
    };
    config.set_created(&created);
    let doc = config.as_json();
    let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
    if arch.is_none() {
        config.set_platform(
            platform.os(),
            platform.architecture(),
            oci_variant(platform),
        );
    } else if ctx.explicit_platform {
        // As BuildKit: with `--platform`, the image is the target's whatever its base
        // says; the base's variant stays only when os and architecture already matched
        // and the target names none, normalised as containerd does (arm64's default `v8`
        // is no variant: BuildKit 0.32 writes a linux/arm64 image over an arm64/v8 base
        // without one).
        let same = os.as_deref() == Some(platform.os())
            && arch.as_deref() == Some(platform.architecture());
        let variant = match oci_variant(platform) {
            Some(v) => Some(v.to_owned()),
            None if same => variant.filter(|v| !(platform.architecture() == "arm64" && v == "v8")),
            None => None,
        };
        config.set_platform(platform.os(), platform.architecture(), variant.as_deref());
    }
    config
}

/// Turns a stage's final state into one platform's image, with every blob local: layers
/// are pulled or compressed as needed, several at once.
async fn assemble(
    ctx: &Arc<Ctx>,
    state: &StageState,
    platform: &Platform,
    step: StepId,
) -> Result<PlatformImage, Error> {
    let stack = &state.layers;
    let blobs = futures_util::future::try_join_all((0..stack.len()).map(|i| async move {
        let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
        ctx.blob_for_export(stack, i, step).await
    }))
    .await?;
    let diff_ids: Vec<Digest> = blobs.iter().map(|(_, d)| d.clone()).collect();
    let mut config = final_config(ctx, state, platform, &diff_ids);
    if ctx.inline_cache {
        ctx.set_inline_cache(&mut config, stack, &blobs)?;
    }
    let layers = blobs
        .into_iter()
        .zip(stack)
        .map(|((b, _), layer)| {
            let mut annotations = BTreeMap::new();
            // As BuildKit's rewrite-timestamp: every layer but the base image's.
            if let (Some(t), Some(_)) = (ctx.rewritten_timestamp, &layer.key) {
                annotations.insert("buildkit/rewritten-timestamp".to_owned(), t.to_string());
            }
            BlobRef {
                digest: b.digest.to_string(),
                size: b.size,
                media_type: b.media_type.clone(),
                path: ctx.cache.content().path(&b.digest),
                annotations,
            }
        })
        .collect();
    let p = (
        platform.os().to_owned(),
        platform.architecture().to_owned(),
        oci_variant(platform).map(str::to_owned),
    );
    Ok(PlatformImage::new(p, config.to_vec(), layers))
}

/// The image ID (config digest) of a stage's final state without an output: the layers
/// are hashed where they never were, nothing is compressed.
async fn image_id(
    ctx: &Arc<Ctx>,
    state: &StageState,
    platform: &Platform,
) -> Result<String, Error> {
    let stack = &state.layers;
    let diff_ids = futures_util::future::try_join_all((0..stack.len()).map(|i| async move {
        let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
        ctx.ensure_diff_id(stack, i).await
    }))
    .await?;
    let config = final_config(ctx, state, platform, &diff_ids);
    Ok(crate::oci::sha256_digest(&config.to_vec()))
}

/// `type=local` outputs written from the final stages' snapshots (unpacked where needed),
/// without compressing any layer.
async fn export_files(
    ctx: &Arc<Ctx>,
    states: &[Arc<StageState>],
    platforms: &[Platform],
    outputs: &[super::ExportSpec],
    step: StepId,
) -> Result<(), Error> {
    for out in outputs {
        let ExportKind::Local { dest } = &out.kind else {
            continue;
        };
        ctx.emit(ProgressEvent::StepStarted {
            id: step,
            name: format!("exporting files to {}", dest.display()),
            platform: None,
            location: None,
        });
        let t = Instant::now();
        for (state, platform) in states.iter().zip(platforms) {
            let p = (
                platform.os().to_owned(),
                platform.architecture().to_owned(),
                oci_variant(platform).map(str::to_owned),
            );
            let dir = super::export::local_dir(dest, &p, platforms.len());
            let lowers = ctx.materialize(&state.layers, step).await?;
            // The build's options carry its SOURCE_DATE_EPOCH clamp.
            let pack = ctx.pack.clone();
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                std::fs::create_dir_all(&dir).map_err(|source| Error::Export {
                    path: dir.clone(),
                    source,
                })?;
                let mut opts = ApplyOptions::default();
                opts.devices = layer_cache::DevicePolicy::Skip;
                for layer in lowers.iter().rev() {
                    layer_cache::flatten_layer_dir(layer, &dir, &opts, &pack)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| join_error(&e))??;
        }
        ctx.emit(ProgressEvent::StepDone {
            id: step,
            elapsed: t.elapsed(),
        });
    }
    Ok(())
}

/// What a COPY reads from, before it is materialised.
enum CopyFrom {
    Context,
    Layers { layers: Vec<Layer>, key: CacheKey },
}

#[allow(clippy::too_many_arguments)]
async fn copy_step(
    ctx: &Arc<Ctx>,
    platform: &Platform,
    deps: &HashMap<usize, StageFuture>,
    state: &mut StageState,
    ins: &Spanned<Instruction>,
    dep: Option<DepSource>,
    id: StepId,
    span: dockerfile::Span,
    text: &str,
) -> Result<(), Error> {
    let workdir = fs_workdir(state);
    let fail = |e: crate::copy::CopyError| step_failed(ctx, span, text, e.to_string());
    let (params, keyword, flags, shown) = match &ins.value {
        Instruction::Copy(c) => {
            let mut flags = Vec::new();
            if let Some(v) = &c.chown {
                flags.push(format!("--chown={}", v.value));
            }
            if let Some(v) = &c.chmod {
                flags.push(format!("--chmod={}", v.value));
            }
            if c.parents {
                flags.push("--parents".to_owned());
            }
            (
                crate::copy::CopyParams::from_copy(c, &workdir).map_err(fail)?,
                "COPY",
                flags,
                source_names(&c.sources, &c.dest.value),
            )
        }
        Instruction::Add(a) => {
            let mut flags = Vec::new();
            if let Some(v) = &a.chown {
                flags.push(format!("--chown={}", v.value));
            }
            if let Some(v) = &a.chmod {
                flags.push(format!("--chmod={}", v.value));
            }
            (
                crate::copy::CopyParams::from_add(a, &workdir).map_err(fail)?,
                "ADD",
                flags,
                source_names(&a.sources, &a.dest.value),
            )
        }
        _ => unreachable!("copy_step is only called for COPY and ADD"),
    };
    let from = match dep {
        Some(DepSource::Stage(j)) => {
            let s = wait_stage(deps, j).await?;
            CopyFrom::Layers {
                layers: s.layers.clone(),
                key: s.key.clone(),
            }
        }
        Some(DepSource::Image(r)) => {
            let b = resolve_image(ctx, &r, platform, id)
                .await
                .map_err(|e| step_failed(ctx, span, text, e.to_string()))?;
            note_image(ctx, &state.build_target, &r, &b, platform);
            CopyFrom::Layers {
                layers: b.layers.clone(),
                key: CacheKey::derive(None, "image", &b.manifest_digest),
            }
        }
        _ => CopyFrom::Context,
    };
    let params = Arc::new(params);
    let inputs = match &from {
        CopyFrom::Context => {
            let (ctx2, p2) = (ctx.clone(), params.clone());
            tokio::task::spawn_blocking(move || {
                let _timer = ctx2.timer(id, Phase::Context, "");
                crate::copy::cache_inputs(
                    &p2,
                    &crate::copy::CopySource::Context(&ctx2.copy_context),
                )
            })
            .await
            .map_err(|e| join_error(&e))?
            .map_err(fail)?
        }
        CopyFrom::Layers { key, .. } => {
            let empty = LayeredView::default();
            crate::copy::cache_inputs(
                &params,
                &crate::copy::CopySource::Layers { view: &empty, key },
            )
            .map_err(fail)?
        }
    };
    if let Some(rec) = &ctx.recorder {
        let downloads = params
            .downloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (url, d) in downloads.iter() {
            rec.url(&state.build_target.to_string(), url, &d.digest);
        }
    }
    let key = CacheKey::derive(Some(&state.key), "copy", &inputs);
    let (sources, dest) = shown;
    let created_by = history::copy(keyword, &flags, &sources, &dest);
    let link = params.link;
    cached_or_run(ctx, state, key, id, created_by, |ctx, state, dir| {
        let ctx = ctx.clone();
        let parent = state.layers.clone();
        let out = dir.join("diff");
        async move {
            let dest_lowers = if link {
                Vec::new()
            } else {
                ctx.materialize(&parent, id).await?
            };
            let src_lowers = match &from {
                CopyFrom::Layers { layers, .. } => Some(ctx.materialize(layers, id).await?),
                CopyFrom::Context => None,
            };
            let ctx2 = ctx.clone();
            tokio::task::spawn_blocking(move || {
                let _timer = ctx2.timer(id, Phase::Copy, "");
                let dest_view = (!link).then(|| LayeredView::new(dest_lowers));
                let src_view = src_lowers.map(LayeredView::new);
                let dummy = CacheKey::derive(None, "unused", "");
                let source = match &src_view {
                    Some(v) => crate::copy::CopySource::Layers {
                        view: v,
                        key: &dummy,
                    },
                    None => crate::copy::CopySource::Context(&ctx2.copy_context),
                };
                crate::copy::execute(&params, &source, dest_view.as_ref(), &out)
                    .map_err(|e| inner_error(e.to_string()))?;
                // What the copy rewrote unchanged is not part of the layer (BuildKit's differ).
                match &dest_view {
                    Some(v) => {
                        sandbox::prune_unchanged(v, &out).map_err(|e| inner_error(e.to_string()))
                    }
                    None => Ok(()),
                }
            })
            .await
            .map_err(|e| join_error(&e))?
        }
    })
    .await
    .map_err(|e| locate(ctx, span, text, e))
}

/// The sources and destination as history shows them (heredocs by their marker).
/// Notes a base image (FROM, COPY --from, RUN --mount from) as a resolved dependency of
/// `build_target`'s provenance.
fn note_image(
    ctx: &Ctx,
    build_target: &Platform,
    reference: &str,
    base: &BaseImage,
    image_platform: &Platform,
) {
    if let Some(rec) = &ctx.recorder {
        rec.image(
            &build_target.to_string(),
            reference,
            &base.resolved_digest,
            &image_platform.to_string(),
        );
    }
}

/// A step's op for `mode=max` provenance, in LLB's shape, from the stage's state before it
/// runs; with the stages it also reads and whether it is an exec (platform-bound) op.
/// `None` for instructions that make no filesystem step.
fn provenance_op(
    state: &StageState,
    ins: &Instruction,
    dep: Option<&DepSource>,
) -> Option<(serde_json::Value, Vec<usize>, bool)> {
    use serde_json::json;
    let extra: Vec<usize> = match dep {
        Some(DepSource::Stage(j)) => vec![*j],
        _ => Vec::new(),
    };
    match ins {
        Instruction::Run(r) => {
            let (argv, _) = run_argv(&state.config, r);
            let env: Vec<String> = state
                .scope
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut meta = serde_json::Map::new();
            meta.insert("args".into(), json!(argv));
            meta.insert("cwd".into(), json!(fs_workdir(state)));
            meta.insert("env".into(), json!(env));
            if let Some(u) = state.config.user().filter(|u| !u.is_empty()) {
                meta.insert("user".into(), json!(u));
            }
            let mut mounts = vec![json!({"dest": "/"})];
            for m in &r.mounts {
                mounts.push(provenance_mount(&m.fields));
            }
            let mut exec = serde_json::Map::new();
            exec.insert("meta".into(), serde_json::Value::Object(meta));
            exec.insert("mounts".into(), json!(mounts));
            if let Some(n) = &r.network {
                exec.insert(
                    "network".into(),
                    json!(format!("{:?}", n.value).to_lowercase()),
                );
            }
            Some((json!({ "exec": exec }), extra, true))
        }
        Instruction::Copy(c) => {
            let src: Vec<String> = c.sources.iter().map(source_label).collect();
            Some((
                json!({"file": {"actions": [{"copy": {"src": src, "dest": c.dest.value}}]}}),
                extra,
                false,
            ))
        }
        Instruction::Add(a) => {
            let src: Vec<String> = a.sources.iter().map(source_label).collect();
            Some((
                json!({"file": {"actions": [{"copy": {"src": src, "dest": a.dest.value}}]}}),
                extra,
                false,
            ))
        }
        Instruction::Workdir(w) => {
            let dir = clean_path(&join_workdir(
                state.config.working_dir().as_deref(),
                &w.value,
            ));
            (dir != "/").then(|| {
                (
                    json!({"file": {"actions": [{"mkdir": {"path": dir, "makeParents": true}}]}}),
                    extra,
                    false,
                )
            })
        }
        _ => None,
    }
}

/// A `RUN --mount` in LLB's mount shape (`dest`, `mountType`, the type's options by id),
/// from its options as written: ids and paths, never a secret's value (which is not in
/// the Dockerfile).
fn provenance_mount(fields: &[(String, Option<String>)]) -> serde_json::Value {
    use serde_json::json;
    let get = |keys: &[&str]| {
        fields
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .and_then(|(_, v)| v.clone())
    };
    let kind = get(&["type"]).unwrap_or_else(|| "bind".to_owned());
    let id = get(&["id"]);
    let mut m = serde_json::Map::new();
    let dest = get(&["target", "dst", "destination"]).or_else(|| match kind.as_str() {
        "secret" => Some(format!("/run/secrets/{}", id.clone().unwrap_or_default())),
        // The first agent socket, as BuildKit numbers them.
        "ssh" => Some("/run/buildkit/ssh_agent.0".to_owned()),
        _ => None,
    });
    if let Some(d) = dest {
        m.insert("dest".into(), json!(d));
    }
    let number = match kind.as_str() {
        "secret" => 1,
        "ssh" => 2,
        "cache" => 3,
        "tmpfs" => 4,
        _ => 0,
    };
    if number != 0 {
        m.insert("mountType".into(), json!(number));
    }
    match kind.as_str() {
        "secret" => {
            m.insert("secretOpt".into(), json!({"ID": id.unwrap_or_default()}));
        }
        "ssh" => {
            m.insert(
                "SSHOpt".into(),
                json!({"ID": id.unwrap_or_else(|| "default".into())}),
            );
        }
        "cache" => {
            m.insert("cacheOpt".into(), json!({"ID": id.or_else(|| get(&["target", "dst", "destination"])).unwrap_or_default()}));
        }
        "bind" => {
            if let Some(src) = get(&["source", "src"]) {
                m.insert("selector".into(), json!(src));
            }
            if let Some(from) = get(&["from"]) {
                m.insert("from".into(), json!(from));
            }
        }
        _ => {}
    }
    serde_json::Value::Object(m)
}

fn source_label(s: &dockerfile::Source) -> String {
    match s {
        dockerfile::Source::Path(p) => p.value.clone(),
        dockerfile::Source::Heredoc(h) => format!("<<{}", h.name),
    }
}

fn source_names(sources: &[dockerfile::Source], dest: &str) -> (Vec<String>, String) {
    let names = sources
        .iter()
        .map(|s| match s {
            dockerfile::Source::Path(p) => p.value.clone(),
            dockerfile::Source::Heredoc(h) => format!("<<{}", h.name),
        })
        .collect();
    (names, dest.to_owned())
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
