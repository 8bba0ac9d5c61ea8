//! Where a step's key is looked up before the step runs: the [`CacheSource`]s of a build,
//! the local cache first, then the caches `--cache-from` imported. A source answers with
//! the step's record (its blob not fetched) and fetches the blob when something needs its
//! bytes (a step that runs on it, an exporter, the image ID).

use std::path::PathBuf;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use layer_cache::{BlobRef as CacheBlobRef, LayerRecord};
use registry_client::Repository;

use super::remote::RemoteCaches;
use super::{Ctx, EPOCH_ANNOTATION, Error, Layer, cache_digest, pick_blob};
use crate::cachekey::CacheKey;
use crate::progress::StepId;

/// A step found in a cache: its record and where its blob is when it is not in the local
/// content store.
pub(super) struct CacheHit {
    pub(super) rec: LayerRecord,
    /// The repository of an imported registry cache.
    pub(super) repo: Option<Repository>,
    /// The OCI layout directory of an imported `type=local` cache.
    pub(super) dir: Option<PathBuf>,
    /// The name of an imported cache, for progress (`None` for the local cache).
    pub(super) source: Option<String>,
}

/// A cache a build asks for a step's key before running the step.
pub(super) trait CacheSource: Send + Sync {
    /// The step with `key`: its record, the blob not fetched. `None` is a miss.
    fn lookup(&self, ctx: &Ctx, key: &CacheKey) -> Result<Option<CacheHit>, Error>;

    /// Puts `blob` of `layer` (a layer this source found) into the local content store;
    /// the caller holds the blob's pull lock.
    fn fetch<'a>(
        &'a self,
        ctx: &'a Ctx,
        layer: &'a Layer,
        blob: &'a CacheBlobRef,
        step: StepId,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// Asks the build's sources for `key` in order (the local cache, then the imported ones);
/// the first hit.
pub(super) fn lookup(ctx: &Ctx, key: &CacheKey) -> Result<Option<CacheHit>, Error> {
    let sources: [&dyn CacheSource; 2] = [&LocalCache, &ctx.remote];
    for s in sources {
        if let Some(hit) = s.lookup(ctx, key)? {
            return Ok(Some(hit));
        }
    }
    Ok(None)
}

/// The local cache (index, content store and snapshots under the cache directory).
pub(super) struct LocalCache;

impl CacheSource for LocalCache {
    fn lookup(&self, ctx: &Ctx, key: &CacheKey) -> Result<Option<CacheHit>, Error> {
        let d = cache_digest(key);
        let Some(rec) = ctx.cache.index().get(&d)? else {
            return Ok(None);
        };
        // A layer packed with another SOURCE_DATE_EPOCH clamp (or none) has other bytes:
        // the step runs again rather than export mtimes this build did not ask for.
        let rec_epoch = rec
            .annotations
            .get(EPOCH_ANNOTATION)
            .and_then(|v| v.parse::<i64>().ok());
        if rec_epoch != ctx.pack.source_date_epoch {
            return Ok(None);
        }
        // A record whose layer is gone (pruned) is a miss: it needs its blob or, for a layer
        // never compressed, its snapshot.
        match pick_blob(&rec, ctx.pack.compression) {
            Some(blob) if ctx.cache.content().contains(&blob.digest) => {
                ctx.lease
                    .hold(layer_cache::EntryRef::Blob(blob.digest.clone()))?;
            }
            _ => {
                let Some(chain) = &rec.chain_id else {
                    return Ok(None);
                };
                ctx.lease
                    .hold(layer_cache::EntryRef::Snapshot(chain.clone()))?;
                if ctx.cache.snapshots().get(chain)?.is_none() {
                    return Ok(None);
                }
            }
        }
        let _ = ctx.cache.index().touch(&d);
        Ok(Some(CacheHit {
            rec,
            repo: None,
            dir: None,
            source: None,
        }))
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a Ctx,
        _layer: &'a Layer,
        blob: &'a CacheBlobRef,
        _step: StepId,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            if ctx.cache.content().contains(&blob.digest) {
                return Ok(());
            }
            Err(Error::from(layer_cache::Error::NotFound {
                what: format!(
                    "blob {} (it was pruned while the build used it)",
                    blob.digest
                ),
            }))
        }
        .boxed()
    }
}

impl CacheSource for RemoteCaches {
    /// The record is added to the local index too, where it becomes a local hit once its
    /// blob is fetched.
    fn lookup(&self, ctx: &Ctx, key: &CacheKey) -> Result<Option<CacheHit>, Error> {
        let d = cache_digest(key);
        let Some((source, rec, cache)) = self.find(&d) else {
            return Ok(None);
        };
        if rec.diff_id.is_none() || pick_blob(rec, ctx.pack.compression).is_none() {
            return Ok(None);
        }
        let rec = rec.clone();
        let hit = CacheHit {
            rec: rec.clone(),
            repo: cache.repo.clone(),
            dir: cache.dir.clone(),
            source: Some(source.to_owned()),
        };
        ctx.cache.index().update(&d, |old| match old {
            Some(o) if o.diff_id.is_some() => Some(o),
            _ => Some(rec.clone()),
        })?;
        Ok(Some(hit))
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a Ctx,
        layer: &'a Layer,
        blob: &'a CacheBlobRef,
        step: StepId,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            match (&layer.origin, &layer.dir_origin) {
                (Some(repo), _) => ctx.pull_from(repo, layer, blob, step).await,
                (None, Some(dir)) => ctx.copy_from_dir(dir, blob).await,
                (None, None) => LocalCache.fetch(ctx, layer, blob, step).await,
            }
        }
        .boxed()
    }
}
