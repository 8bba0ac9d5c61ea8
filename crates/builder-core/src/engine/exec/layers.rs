//! Cache access for the executor: layers found in the local store or pulled into it,
//! packed and hashed on demand, unpacked into snapshots, and the diffs of steps that ran
//! committed as new layers.

use super::*;

impl Ctx {
    /// Aborts the background pulls still running; returns their FROM steps.
    pub(super) fn stop_prefetches(&self) -> Vec<(StepId, Instant)> {
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

    pub(super) fn emit(&self, ev: ProgressEvent) {
        let _ = self.events.send(ev);
    }

    /// Times `phase` of step `id` until the timer is dropped (the timeline's events).
    pub(super) fn timer(
        &self,
        id: impl Into<Option<StepId>>,
        phase: Phase,
        label: impl Into<String>,
    ) -> crate::progress::PhaseTimer<'_> {
        self.clock.timer(&self.events, id.into(), phase, label)
    }

    /// A stage failed: remember the first failure and cancel the rest of the build, so
    /// that steps running in parallel stop at once instead of finishing first.
    pub(super) fn fail(&self, e: &Error) {
        if matches!(e, Error::Cancelled) {
            return;
        }
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(e.clone());
        }
        drop(first);
        // A rejected cache blob ends this attempt, not the build: the handle is the
        // caller's, shared with the next attempt, and the steps running now finish into
        // the local cache (the next attempt waits on their key locks).
        if !matches!(e, Error::RejectedCacheBlob { .. }) {
            self.cancel.cancel();
        }
    }

    pub(super) fn step_id(&self) -> StepId {
        StepId(self.next_step.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn location(&self, span: dockerfile::Span) -> String {
        format!("{}:{}", self.dockerfile_name, span.start_line)
    }

    /// The instruction's source text, continuation lines joined, for step names.
    pub(super) fn source_text(&self, span: dockerfile::Span) -> String {
        source_text(&self.text, span)
    }

    pub(super) fn created_now(&self) -> u64 {
        match self.source_date_epoch {
            Some(t) => t.max(0) as u64,
            None => now_secs(),
        }
    }

    pub(super) async fn key_lock(&self, key: &CacheKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.key_locks.0.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Makes sure the blob of `stack[i]` is in the content store, pulling it (a base
    /// image's layer) or packing it from its snapshot (a step's layer never compressed),
    /// and returns it.
    pub(super) async fn ensure_blob(
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
    pub(super) async fn pull_lock(&self, blob: &CacheBlobRef) -> tokio::sync::OwnedMutexGuard<()> {
        self.key_lock(&CacheKey::derive(None, "pull", &blob.digest.to_string()))
            .await
    }

    /// Pulls `blob` of `layer` into the content store unless it is there; the caller
    /// holds its [`Ctx::pull_lock`].
    pub(super) async fn pull_locked(
        &self,
        layer: &Layer,
        blob: &CacheBlobRef,
        step: StepId,
    ) -> Result<(), Error> {
        if self.cache.content().contains(&blob.digest) {
            return Ok(());
        }
        // A step's layer with an origin was found in an imported cache, which fetches it;
        // a base image's layer comes from its repository; any other layer's blob is the
        // local cache's.
        match (&layer.key, &layer.origin, &layer.dir_origin) {
            (Some(_), Some(_), _) | (Some(_), None, Some(_)) => {
                self.remote.fetch(self, layer, blob, step).await
            }
            (None, Some(repo), _) => self.pull_from(repo, layer, blob, step).await,
            _ => LocalCache.fetch(self, layer, blob, step).await,
        }
    }

    /// Pulls `blob` of `layer` from `repo` into the content store; the caller holds its
    /// [`Ctx::pull_lock`].
    pub(super) async fn pull_from(
        &self,
        repo: &Repository,
        layer: &Layer,
        blob: &CacheBlobRef,
        step: StepId,
    ) -> Result<(), Error> {
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
    pub(super) async fn locked_layer_record(
        &self,
        layer: &Layer,
    ) -> Result<
        (
            tokio::sync::OwnedMutexGuard<()>,
            Option<(Digest, LayerRecord)>,
        ),
        Error,
    > {
        let key = layer.key.as_ref().ok_or_else(|| {
            Error::invalid_step("a layer without a diffID or blob has no cache record")
        })?;
        let guard = self.key_lock(key).await;
        Ok((guard, self.layer_record(layer)?))
    }

    pub(super) fn layer_record(
        &self,
        layer: &Layer,
    ) -> Result<Option<(Digest, LayerRecord)>, Error> {
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
    pub(super) fn layer_pack_options(&self, rec: Option<&LayerRecord>) -> PackOptions {
        let mut opts = self.pack.clone();
        opts.source_date_epoch = rec
            .and_then(|r| r.annotations.get(EPOCH_ANNOTATION))
            .and_then(|v| v.parse().ok());
        opts
    }

    /// A compression progress event of `step` for the layer `label`.
    pub(super) fn emit_compress(
        &self,
        step: StepId,
        label: &str,
        current: u64,
        total: Option<u64>,
    ) {
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
    pub(super) async fn pack_layer(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
        step: StepId,
    ) -> Result<(CacheBlobRef, Digest), Error> {
        self.pack_layer_in(stack, i, step, None).await
    }

    /// [`Ctx::pack_layer`], in the compression (and level) `forced` when given: a blob in
    /// another compression does not do, the layer is packed again from its snapshot
    /// (unpacked first when only its blob is here or in a cache).
    pub(super) async fn pack_layer_in(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
        step: StepId,
        forced: Option<(Compression, Option<i32>)>,
    ) -> Result<(CacheBlobRef, Digest), Error> {
        let layer = &stack[i];
        if forced.is_some() {
            // The snapshot to pack from: unpacked from the layer's blob when needed.
            self.materialize(&stack[..=i], step).await?;
        }
        let (_guard, rec) = self.locked_layer_record(layer).await?;
        if let Some((_, r)) = &rec {
            let found = match forced {
                Some((c, _)) => r.blobs.get(&c),
                None => pick_blob(r, self.pack.compression),
            };
            if let (Some(b), Some(d)) = (found, &r.diff_id) {
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
        let mut opts = self.layer_pack_options(rec.as_ref().map(|(_, r)| r));
        if let Some((c, level)) = forced {
            opts.compression = c;
            opts.level = level;
        }
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
    pub(super) async fn ensure_diff_id(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
    ) -> Result<Digest, Error> {
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
    pub(super) fn record_layer(
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
    pub(super) async fn materialize(
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
    pub(super) fn tempdir(&self, prefix: &str) -> Result<tempfile::TempDir, Error> {
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
    pub(super) fn commit_diff(
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

/// A new id for a step's snapshot: unique to this run of the step (a re-run under
/// `--no-cache` must not find the previous run's files).
pub(super) fn unique_snapshot_id(key: &CacheKey) -> Digest {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    Digest::sha256_of(format!("rbuild step {key} {} {nanos} {n}", std::process::id()).as_bytes())
}

/// How base and step layers are unpacked as overlay lower directories.
pub(super) fn overlay_apply_options() -> ApplyOptions {
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

pub(super) fn descriptor(
    blob: &CacheBlobRef,
) -> Result<registry_client::oci_spec::image::Descriptor, Error> {
    let digest: registry_client::Digest = blob.digest.to_string().parse()?;
    Ok(registry_client::oci_spec::image::Descriptor::new(
        blob.media_type.as_str().into(),
        blob.size,
        digest.to_oci(),
    ))
}

/// Adapts the content store's synchronous writer for the registry client's async pull.
pub(super) struct SyncWriter<'a>(&'a mut layer_cache::BlobWriter);

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

pub(super) struct PullProgress<'a> {
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
