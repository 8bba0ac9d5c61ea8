//! The engine's side of the remote cache (`--cache-from` / `--cache-to`): the caches
//! imported before solving (a [`super::cache_source::CacheSource`] a step asks after a
//! local miss), and the export after the build. A step notes its stack for `mode=max`
//! ([`Ctx::note_stack`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use layer_cache::{BlobRef as CacheBlobRef, Digest, LayerRecord};
use registry_client::{BlobSource, PushedBlob, Repository};

use super::remote_mounts::PackDest;
use super::{Ctx, Error, Layer, StageState, cache_digest};
use crate::progress::{ProgressEvent, ProgressSink, StepId, Stream};
use crate::remote_cache::{
    CacheEntry, CacheExportSpec, CacheForm, CacheImportSpec, CacheLocation, CacheMode,
    ImportedCache, fetch_registry_cache, inline_value, push_registry_cache, put_blob,
    read_local_cache, write_local_cache,
};

/// A cache mount's content in an imported cache: the cache's name, the packs, and the
/// repository or directory they are in.
pub(super) type MountSource = (
    String,
    Vec<CacheBlobRef>,
    Option<Repository>,
    Option<PathBuf>,
);

/// The caches imported for a build, searched in order.
#[derive(Debug, Default)]
pub(super) struct RemoteCaches {
    caches: Vec<(String, ImportedCache)>,
    /// Blobs found corrupt by an earlier attempt of the build: their records never match.
    rejected: BTreeSet<String>,
}

impl RemoteCaches {
    /// These caches, never matching a record whose blob is in `rejected`.
    pub(super) fn rejecting(mut self, rejected: &BTreeSet<String>) -> Self {
        self.rejected = rejected.clone();
        self
    }

    pub(super) fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// The first imported cache with content for the cache mount `dir`: its name, the
    /// packs, and where they are.
    pub(super) fn find_mount(&self, dir: &str) -> Option<MountSource> {
        self.caches.iter().find_map(|(name, c)| {
            let packs = c.mounts.get(dir)?;
            Some((name.clone(), packs.clone(), c.repo.clone(), c.dir.clone()))
        })
    }

    /// Every cache mount of the imported caches (the first cache's for each), with its
    /// directory name in place of the cache's name.
    pub(super) fn all_mounts(&self) -> Vec<MountSource> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (_, c) in &self.caches {
            for (dir, packs) in &c.mounts {
                if seen.insert(dir.clone()) {
                    out.push((dir.clone(), packs.clone(), c.repo.clone(), c.dir.clone()));
                }
            }
        }
        out
    }

    pub(super) fn find(&self, key: &Digest) -> Option<(&str, &LayerRecord, &ImportedCache)> {
        self.caches.iter().find_map(|(name, c)| {
            let rec = c.records.get(key)?;
            if rec
                .blobs
                .values()
                .any(|b| self.rejected.contains(&b.digest.to_string()))
            {
                return None;
            }
            Some((name.as_str(), rec, c))
        })
    }
}

/// The error that rejects an imported cache's `blob` (its bytes are not what its
/// descriptor says): the build runs again without it.
pub(super) fn rejected(blob: &CacheBlobRef, reason: &str) -> Error {
    Error::RejectedCacheBlob {
        digest: blob.digest.to_string(),
        reason: reason.to_owned(),
    }
}

/// An unpack error of `layers`: a diffID mismatch on a layer from an imported cache
/// rejects its blob; anything else is returned as it is.
pub(super) fn reject_diff_id(e: Error, layers: &[Layer]) -> Error {
    if let Error::Cache(c) = &e {
        if let layer_cache::Error::DiffIdMismatch { expected, .. } = c.as_ref() {
            let culprit = layers.iter().find(|l| {
                l.key.is_some() && l.origin.is_some() && l.diff_id.as_ref() == Some(expected)
            });
            if let Some(b) = culprit.and_then(|l| l.blob.as_ref()) {
                return rejected(b, &e.to_string());
            }
        }
    }
    e
}

pub(super) fn human(n: u64) -> String {
    match crate::progress::human_bytes(n) {
        s if s.unit == "B" => format!("{n} B"),
        s => format!("{:.2} {}", s.value, s.unit),
    }
}

fn log(sink: &mut dyn ProgressSink, id: StepId, line: String) {
    sink.event(&ProgressEvent::StepLog {
        id,
        stream: Stream::Stdout,
        data: format!("{line}\n").into_bytes(),
    });
}

/// Reads the manifest and config of every `--cache-from` (no layer), before solving. A
/// cache that does not exist or cannot be read is a warning, as in buildx. Spec `n` reports
/// as step `first + n`.
pub(super) async fn import_caches(
    client: &registry_client::Client,
    specs: &[CacheImportSpec],
    sink: &mut dyn ProgressSink,
    first: StepId,
) -> RemoteCaches {
    let mut out = RemoteCaches::default();
    for (n, spec) in specs.iter().enumerate() {
        let id = StepId(first.0 + n as u32);
        let reference = &spec.location;
        let t = Instant::now();
        sink.event(&ProgressEvent::StepStarted {
            id,
            name: format!("importing cache manifest from {reference}"),
            platform: None,
            location: None,
        });
        let fetched = match reference {
            CacheLocation::Registry(r) => fetch_registry_cache(client, r).await,
            CacheLocation::Local { dir, tag, digest } => {
                read_local_cache(dir, tag, digest.as_deref())
            }
            // Refused when the spec is parsed.
            CacheLocation::Inline => Ok(None),
        };
        match fetched {
            Ok(Some(c)) => {
                log(
                    sink,
                    id,
                    format!(
                        "{} records, {} of metadata read; layers referenced: {} (pulled only when needed)",
                        c.records.len(),
                        human(c.metadata_bytes),
                        human(c.layer_bytes)
                    ),
                );
                out.caches.push((reference.to_string(), c));
            }
            Ok(None) => sink.event(&ProgressEvent::Warning {
                message: format!("cache {reference} not found: building without it"),
                location: None,
            }),
            Err(e) => sink.event(&ProgressEvent::Warning {
                message: format!("cannot import cache {reference}: {e}"),
                location: None,
            }),
        }
        sink.event(&ProgressEvent::StepDone {
            id,
            elapsed: t.elapsed(),
        });
    }
    out
}

impl Ctx {
    /// Whether the base layers `layers` are left in the registry (not prefetched): a
    /// build that imports a cache and only pushes to the registry they come from may
    /// need none of them (every step a hit, every blob mounted); a step that runs pulls
    /// the ones it needs.
    pub(super) fn lazy_base(&self, layers: &[Layer]) -> bool {
        !self.remote.is_empty()
            && !self.push_repos.is_empty()
            && layers.iter().all(|l| {
                l.origin
                    .as_ref()
                    .is_some_and(|o| self.push_repos.iter().all(|r| r.registry() == o.registry()))
            })
    }

    /// The blob of `stack[i]` for an image export. When every output is a push and the
    /// layer was never pulled (a cache hit or base layer from the same registry), it is
    /// mounted into each pushed repository, never downloaded; else as
    /// [`Ctx::ensure_blob`].
    pub(super) async fn blob_for_export(
        self: &Arc<Self>,
        stack: &[Layer],
        i: usize,
        step: StepId,
    ) -> Result<(CacheBlobRef, Digest), Error> {
        let layer = &stack[i];
        if let (Some(b), Some(d), Some(origin)) = (&layer.blob, &layer.diff_id, &layer.origin) {
            if !self.push_repos.is_empty() && !self.cache.content().contains(&b.digest) {
                let digest: registry_client::Digest = b.digest.to_string().parse()?;
                let mut all = true;
                for r in &self.push_repos {
                    // An error here is the same as a refused mount: the bytes are pulled.
                    let mounted = self.client.mount_blob(r, &digest, origin).await;
                    if !matches!(mounted, Ok(Some(_))) {
                        all = false;
                        break;
                    }
                }
                if all {
                    return Ok((b.clone(), d.clone()));
                }
            }
        }
        self.ensure_blob(stack, i, step).await
    }

    /// Copies `blob` of a `type=local` cache in `dir` into the content store, verified
    /// (bytes that are not the blob reject it). The caller holds its pull lock.
    pub(super) async fn copy_from_dir(
        &self,
        dir: &std::path::Path,
        blob: &CacheBlobRef,
    ) -> Result<(), Error> {
        let store = self.cache.content().clone();
        let src = crate::remote_cache::blob_path(dir, &blob.digest.to_string());
        let blob = blob.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let mut w = match store.ingest(&blob.digest, Some(blob.size))? {
                layer_cache::Ingest::Present(_) => return Ok(()),
                layer_cache::Ingest::Writer(w) => w,
            };
            w.restart()?;
            let io = |e| {
                Error::from(layer_cache::Error::Io {
                    path: src.clone(),
                    source: e,
                })
            };
            let mut f = std::fs::File::open(&src).map_err(io)?;
            std::io::copy(&mut f, &mut w).map_err(io)?;
            match w.commit(&blob.digest) {
                Err(
                    e @ (layer_cache::Error::DigestMismatch { .. }
                    | layer_cache::Error::SizeMismatch { .. }),
                ) => Err(rejected(&blob, &e.to_string())),
                r => r.map(|_| ()).map_err(Error::from),
            }
        })
        .await
        .map_err(|e| super::join_error(&e))?
    }

    /// Remembers a stage's layers after a step, for a `mode=max` export.
    pub(super) fn note_stack(&self, layers: &[Layer]) {
        if self.note_steps {
            self.noted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(layers.to_vec());
        }
    }
}

/// Whether a `--cache-to type=inline` is given; refused when no output writes an image
/// (there is no config to carry it).
pub(super) fn inline_wanted(
    specs: &[CacheExportSpec],
    outputs: &[crate::engine::ExportSpec],
) -> Result<bool, Error> {
    if !specs.iter().any(|s| s.location == CacheLocation::Inline) {
        return Ok(false);
    }
    let image_output = outputs
        .iter()
        .any(|o| !matches!(o.kind, crate::engine::ExportKind::Local { .. }));
    if !image_output {
        return Err(Error::InvalidCache {
            spec: "type=inline".to_owned(),
            reason: "type=inline needs an image output (--push, --load, or --output \
                     type=image|oci|docker): the cache travels in the image's config"
                .to_owned(),
        });
    }
    Ok(true)
}

impl Ctx {
    /// Puts the records of the steps that made `stack`'s layers into `config`
    /// (`type=inline`); `blobs` are the layers' blobs and diffIDs, as in the manifest.
    pub(super) fn set_inline_cache(
        &self,
        config: &mut crate::image::ImageConfig,
        stack: &[Layer],
        blobs: &[(CacheBlobRef, Digest)],
    ) -> Result<(), Error> {
        let mut entries = Vec::new();
        for (i, (layer, (blob, diff_id))) in stack.iter().zip(blobs).enumerate() {
            let Some(key) = &layer.key else { continue };
            let kd = cache_digest(key);
            let mut rec = self
                .cache
                .index()
                .get(&kd)?
                .filter(|r| r.diff_id.as_ref() == Some(diff_id))
                .unwrap_or_else(|| LayerRecord::new(diff_id.clone(), 0));
            rec.diff_id = Some(diff_id.clone());
            entries.push((
                i,
                CacheEntry {
                    key: kd,
                    record: rec,
                    blob: blob.clone(),
                },
            ));
        }
        config.set_field(
            crate::remote_cache::INLINE_CACHE_FIELD,
            inline_value(&entries),
        );
        Ok(())
    }
}

/// Exports the cache of the build to every `--cache-to`. `image_repos` are repositories the
/// image was pushed to (blobs are mounted from there rather than uploaded again).
pub(super) async fn export_caches(
    ctx: &Arc<Ctx>,
    states: &[Arc<StageState>],
    specs: &[CacheExportSpec],
    image_repos: &[Repository],
    step: StepId,
) -> Result<(), Error> {
    for spec in specs {
        let reference = &spec.location;
        let mode = match spec.mode {
            CacheMode::Min => "min",
            CacheMode::Max => "max",
        };
        ctx.emit(ProgressEvent::StepStarted {
            id: step,
            name: format!("exporting cache to {reference} (mode={mode})"),
            platform: None,
            location: None,
        });
        let t = Instant::now();
        match export_one(ctx, states, spec, reference, image_repos, step).await {
            Ok(line) => ctx.emit(ProgressEvent::StepLog {
                id: step,
                stream: Stream::Stdout,
                data: format!("{line}\n").into_bytes(),
            }),
            Err(e) if spec.ignore_error => ctx.emit(ProgressEvent::Warning {
                message: format!("exporting cache to {reference} failed (ignore-error=true): {e}"),
                location: None,
            }),
            Err(e) => return Err(e),
        }
        ctx.emit(ProgressEvent::StepDone {
            id: step,
            elapsed: t.elapsed(),
        });
    }
    Ok(())
}

async fn export_one(
    ctx: &Arc<Ctx>,
    states: &[Arc<StageState>],
    spec: &CacheExportSpec,
    location: &CacheLocation,
    image_repos: &[Repository],
    step: StepId,
) -> Result<String, Error> {
    let mut stacks: Vec<Vec<Layer>> = states.iter().map(|s| s.layers.clone()).collect();
    if spec.mode == CacheMode::Max {
        stacks.extend(
            ctx.noted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
    }
    // One entry per step key: the stack it sits on and its place in it.
    let mut seen = HashSet::new();
    let mut wanted: Vec<(Arc<Vec<Layer>>, usize)> = Vec::new();
    for stack in stacks {
        let stack = Arc::new(stack);
        for (i, l) in stack.iter().enumerate() {
            if let Some(k) = &l.key {
                if seen.insert(k.clone()) {
                    wanted.push((stack.clone(), i));
                }
            }
        }
    }
    let reference = match location {
        CacheLocation::Registry(r) => r,
        CacheLocation::Inline => {
            let n: usize = states
                .iter()
                .map(|s| s.layers.iter().filter(|l| l.key.is_some()).count())
                .sum();
            return Ok(format!(
                "{n} records written into the image config ({})",
                crate::remote_cache::INLINE_CACHE_FIELD
            ));
        }
        CacheLocation::Local { dir, tag, .. } => {
            return export_local(ctx, &wanted, dir, tag, spec, step).await;
        }
    };
    let repo = reference.repository();
    let mount_hint = image_repos
        .iter()
        .find(|r| r.registry() == repo.registry() && *r != repo)
        .cloned();
    let forced = forced_compression(spec);
    let results = futures_util::future::try_join_all(
        wanted
            .iter()
            .map(|(stack, i)| push_layer(ctx, stack, *i, repo, mount_hint.as_ref(), forced, step)),
    )
    .await?;
    let (mut uploaded, mut reused) = (0u64, 0u64);
    let mut entries = Vec::new();
    for (entry, pushed) in results {
        match pushed {
            PushedBlob::Uploaded => uploaded += entry.blob.size,
            _ => reused += entry.blob.size,
        }
        entries.push(entry);
    }
    let (mounts, m_sent, m_had) = if spec.cache_mounts {
        ctx.export_cache_mounts(PackDest::Registry { repo }).await?
    } else {
        Default::default()
    };
    let meta = push_registry_cache(
        &ctx.client,
        reference,
        &entries,
        &mounts,
        CacheForm::of(spec),
    )
    .await?;
    Ok(format!(
        "{} records; layers uploaded {}, already there or mounted {}; {}manifest and config {}",
        entries.len(),
        human(uploaded),
        human(reused),
        mounts_line(&mounts, m_sent, m_had),
        human(meta)
    ))
}

/// Writes the cache of `wanted` into the OCI layout `dir` under `tag`: each layer's blob
/// from the content store (pulled or packed first when needed), then the manifest.
fn mounts_line(mounts: &BTreeMap<String, Vec<CacheBlobRef>>, sent: u64, had: u64) -> String {
    if mounts.is_empty() {
        return String::new();
    }
    format!(
        "{} cache mounts: packs sent {}, already there {}; ",
        mounts.len(),
        human(sent),
        human(had)
    )
}

async fn export_local(
    ctx: &Arc<Ctx>,
    wanted: &[(Arc<Vec<Layer>>, usize)],
    dir: &std::path::Path,
    tag: &str,
    spec: &CacheExportSpec,
    step: StepId,
) -> Result<String, Error> {
    let forced = forced_compression(spec);
    let form = CacheForm::of(spec);
    let entries = futures_util::future::try_join_all(wanted.iter().map(|(stack, i)| async {
        let layer = &stack[*i];
        let key = layer
            .key
            .as_ref()
            .ok_or_else(|| Error::invalid_step("a base image layer has no cache key"))?;
        let (blob, diff_id) = {
            let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
            blob_in(ctx, stack, *i, forced, step).await?
        };
        let kd = cache_digest(key);
        let mut rec = ctx
            .cache
            .index()
            .get(&kd)?
            .unwrap_or_else(|| LayerRecord::new(diff_id.clone(), 0));
        rec.diff_id = Some(diff_id);
        Ok::<_, Error>(CacheEntry {
            key: kd,
            record: rec,
            blob,
        })
    }))
    .await?;
    let (mounts, m_sent, m_had) = if spec.cache_mounts {
        ctx.export_cache_mounts(PackDest::Dir(dir)).await?
    } else {
        Default::default()
    };
    let line = mounts_line(&mounts, m_sent, m_had);
    let (ctx2, dir2, tag2) = (ctx.clone(), dir.to_owned(), tag.to_owned());
    let (written, meta) = tokio::task::spawn_blocking(move || -> Result<(u64, u64), Error> {
        let mut written = 0;
        for e in &entries {
            let src = ctx2.cache.content().path(&e.blob.digest);
            if put_blob(&dir2, &e.blob.digest, &src)? {
                written += e.blob.size;
            }
        }
        let meta = write_local_cache(&dir2, &tag2, &entries, &mounts, form)?;
        Ok((written, meta))
    })
    .await
    .map_err(|e| super::join_error(&e))??;
    Ok(format!(
        "{} records; layers written {}; {line}manifest and config {}",
        wanted.len(),
        human(written),
        human(meta)
    ))
}

/// The compression (and level) every layer of a `force-compression=true` export must be in.
type Forced = (layer_cache::Compression, Option<i32>);

fn forced_compression(spec: &CacheExportSpec) -> Option<Forced> {
    spec.force_compression
        .then(|| (spec.compression.unwrap_or_default(), spec.compression_level))
}

fn compression_of_blob(b: &CacheBlobRef) -> layer_cache::Compression {
    crate::remote_cache::compression_of(&b.media_type)
}

/// The blob of `stack[i]` for a cache export ([`Ctx::ensure_blob`]); with `forced`, a
/// blob in another compression is packed again in that one.
async fn blob_in(
    ctx: &Arc<Ctx>,
    stack: &[Layer],
    i: usize,
    forced: Option<Forced>,
    step: StepId,
) -> Result<(CacheBlobRef, Digest), Error> {
    let (blob, diff_id) = ctx.ensure_blob(stack, i, step).await?;
    match forced {
        Some((c, _)) if compression_of_blob(&blob) != c => {
            ctx.pack_layer_in(stack, i, step, forced).await
        }
        _ => Ok((blob, diff_id)),
    }
}

/// Puts the blob of `stack[i]` into `repo`: mounted from where it came from when this
/// build never pulled it, else from the content store (packing it first if needed).
async fn push_layer(
    ctx: &Arc<Ctx>,
    stack: &[Layer],
    i: usize,
    repo: &Repository,
    mount_hint: Option<&Repository>,
    forced: Option<Forced>,
    step: StepId,
) -> Result<(CacheEntry, PushedBlob), Error> {
    let layer = &stack[i];
    let key = layer
        .key
        .as_ref()
        .ok_or_else(|| Error::invalid_step("a base image layer has no cache key"))?;
    let kd = cache_digest(key);
    let progress = crate::engine::export::PushProgress {
        events: &ctx.events,
        step,
    };
    // A layer from an imported cache that was never pulled: mount it, never download it
    // (unless it must be recompressed).
    if let (Some(b), Some(d), Some(origin)) = (&layer.blob, &layer.diff_id, &layer.origin) {
        if !ctx.cache.content().contains(&b.digest)
            && origin.registry() == repo.registry()
            && forced.is_none_or(|(c, _)| compression_of_blob(b) == c)
        {
            let digest: registry_client::Digest = b.digest.to_string().parse()?;
            // A refused mount (or a repository that lost the blob) falls back to pulling
            // the bytes below.
            let pushed = ctx
                .client
                .mount_blob(repo, &digest, origin)
                .await
                .ok()
                .flatten();
            if let Some(pushed) = pushed {
                let mut rec = ctx
                    .cache
                    .index()
                    .get(&kd)?
                    .filter(|r| r.diff_id.as_ref() == Some(d))
                    .unwrap_or_else(|| LayerRecord::new(d.clone(), 0));
                rec.diff_id = Some(d.clone());
                let entry = CacheEntry {
                    key: kd,
                    record: rec,
                    blob: b.clone(),
                };
                return Ok((entry, pushed));
            }
        }
    }
    let (blob, diff_id) = {
        let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
        blob_in(ctx, stack, i, forced, step).await?
    };
    let digest: registry_client::Digest = blob.digest.to_string().parse()?;
    let source = BlobSource::File(ctx.cache.content().path(&blob.digest));
    let pushed = ctx
        .client
        .push_blob(repo, &digest, blob.size, &source, mount_hint, &progress)
        .await?;
    let mut rec = ctx
        .cache
        .index()
        .get(&kd)?
        .unwrap_or_else(|| LayerRecord::new(diff_id.clone(), 0));
    rec.diff_id = Some(diff_id);
    let entry = CacheEntry {
        key: kd,
        record: rec,
        blob,
    };
    Ok((entry, pushed))
}
