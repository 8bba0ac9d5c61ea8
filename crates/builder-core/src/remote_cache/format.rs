//! The cache artifact: an OCI image manifest whose config maps rbuild's cache keys to the
//! manifest's layers, stored in any OCI registry.
//!
//! The config has its own media type ([`CACHE_CONFIG_MEDIA_TYPE`]): its keys are rbuild's
//! content-addressed step keys, not BuildKit's, so BuildKit's
//! `application/vnd.buildkit.cacheconfig.v0` would promise a meaning it does not have. The
//! layers keep the standard OCI layer media types (and the `containerd.io/uncompressed`
//! annotation BuildKit uses for the diffID), so a registry's garbage collector, mounts and
//! tools see ordinary blobs.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use layer_cache::{BlobRef, Compression, Digest, LayerRecord};
use registry_client::{
    BlobSource, Client, Manifest, NoProgress, RawManifest, Reference, Repository,
};
use serde::{Deserialize, Serialize};

use crate::engine::Error;

/// The media type of the cache artifact's config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

const UNCOMPRESSED_ANNOTATION: &str = "containerd.io/uncompressed";

/// The config of a cache artifact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CacheConfig {
    /// The format version (1).
    version: u32,
    /// One record per cache key.
    records: Vec<CacheRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheRecord {
    /// The step's cache key (`sha256:…`).
    key: String,
    /// Index of the step's layer in the manifest's layers.
    layer: usize,
    /// The layer's diffID.
    diff_id: String,
    /// Size of its uncompressed tar stream.
    uncompressed_size: u64,
    /// When the step's result was made (seconds since the epoch; the image history's time).
    created: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// One step's result to export: its key, and its record with the blob to reference.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// The step's cache key.
    pub key: Digest,
    /// The layer record; its diffID must be known.
    pub record: LayerRecord,
    /// The compressed blob the artifact points at (pushed already).
    pub blob: BlobRef,
}

/// A cache artifact read from a registry: cache key → record (with the one blob it has).
#[derive(Debug, Clone, Default)]
pub struct ImportedCache {
    /// The repository the blobs are pulled (or mounted) from.
    pub repo: Option<Repository>,
    /// The records, by key.
    pub records: HashMap<Digest, LayerRecord>,
    /// Bytes of the manifest and config read.
    pub metadata_bytes: u64,
    /// Bytes of all the layers the artifact references.
    pub layer_bytes: u64,
}

fn bad(reference: &Reference, reason: impl Into<String>) -> Error {
    Error::BadCache {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Compression::Zstd
    } else if media_type.ends_with("+gzip")
        || media_type.ends_with(".gzip")
        || media_type.ends_with("tar.gzip")
    {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// Reads the cache artifact `reference` names: its manifest and config only, no layer.
/// `Ok(None)` when the registry does not have it.
pub async fn fetch_registry_cache(
    client: &Client,
    reference: &Reference,
) -> Result<Option<ImportedCache>, Error> {
    let raw = match client.resolve(reference).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Manifest::Image(manifest) = raw.parse()? else {
        return Err(bad(reference, "is an index, not an rbuild cache manifest"));
    };
    let config_desc = manifest.config();
    if config_desc.media_type().to_string() != CACHE_CONFIG_MEDIA_TYPE {
        return Err(bad(
            reference,
            format!(
                "its config is {}, not an rbuild cache ({CACHE_CONFIG_MEDIA_TYPE})",
                config_desc.media_type()
            ),
        ));
    }
    let repo = reference.repository().clone();
    // Verified against its digest by the client.
    let config_bytes = client.fetch_blob(&repo, config_desc).await?;
    let config: CacheConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(reference, format!("cache config: {e}")))?;
    if config.version != 1 {
        return Err(bad(
            reference,
            format!("cache format version {} is not supported", config.version),
        ));
    }
    let mut out = ImportedCache {
        repo: Some(repo),
        metadata_bytes: raw.size() + config_bytes.len() as u64,
        ..ImportedCache::default()
    };
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let digest: Digest = l
            .digest()
            .to_string()
            .parse()
            .map_err(|e| bad(reference, format!("layer digest: {e}")))?;
        out.layer_bytes += l.size();
        layers.push(BlobRef::new(digest, l.media_type().to_string(), l.size()));
    }
    for r in config.records {
        let key: Digest = r
            .key
            .parse()
            .map_err(|e| bad(reference, format!("record key {:?}: {e}", r.key)))?;
        let diff_id: Digest = r
            .diff_id
            .parse()
            .map_err(|e| bad(reference, format!("diffID {:?}: {e}", r.diff_id)))?;
        let blob = layers
            .get(r.layer)
            .ok_or_else(|| {
                bad(
                    reference,
                    format!("record {key} names layer {} of {}", r.layer, layers.len()),
                )
            })?
            .clone();
        let mut rec = LayerRecord::new(diff_id, r.uncompressed_size);
        rec.created = r.created;
        rec.annotations = r.annotations;
        rec.blobs.insert(compression_of(&blob.media_type), blob);
        out.records.entry(key).or_insert(rec);
    }
    Ok(Some(out))
}

/// Writes the cache artifact for `entries` (whose blobs are in `reference`'s repository
/// already) under `reference`'s tag: the config blob, then the manifest, so a reader
/// never sees a manifest whose parts are missing. Two writers of one tag each leave a
/// complete artifact; the last manifest written wins. Returns the bytes written.
pub async fn push_registry_cache(
    client: &Client,
    reference: &Reference,
    entries: &[CacheEntry],
) -> Result<u64, Error> {
    let mut layers: Vec<&BlobRef> = Vec::new();
    let mut diff_ids: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for e in entries {
        let diff_id = e
            .record
            .diff_id
            .as_ref()
            .ok_or_else(|| bad(reference, format!("record {} has no diffID", e.key)))?;
        let layer = match layers.iter().position(|b| b.digest == e.blob.digest) {
            Some(i) => i,
            None => {
                layers.push(&e.blob);
                diff_ids.push(diff_id.to_string());
                layers.len() - 1
            }
        };
        records.push(CacheRecord {
            key: e.key.to_string(),
            layer,
            diff_id: diff_id.to_string(),
            uncompressed_size: e.record.uncompressed_size,
            created: e.record.created,
            annotations: e.record.annotations.clone(),
        });
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let config = serde_json::to_vec(&CacheConfig {
        version: 1,
        records,
    })
    .map_err(|e| bad(reference, e.to_string()))?;
    let config_digest = registry_client::Digest::sha256_of(&config);
    let repo = reference.repository();
    client
        .push_blob(
            repo,
            &config_digest,
            config.len() as u64,
            &BlobSource::Bytes(Bytes::from(config.clone())),
            None,
            &NoProgress,
        )
        .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": registry_client::OCI_MANIFEST,
        "artifactType": CACHE_CONFIG_MEDIA_TYPE,
        "config": {
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().zip(&diff_ids).map(|(b, d)| serde_json::json!({
            "mediaType": b.media_type,
            "digest": b.digest.to_string(),
            "size": b.size,
            "annotations": { UNCOMPRESSED_ANNOTATION: d },
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(reference, e.to_string()))?;
    let len = bytes.len() as u64;
    let raw = RawManifest::new(Bytes::from(bytes), Some(registry_client::OCI_MANIFEST))?;
    let tag = reference.tag().unwrap_or("latest");
    client.push_manifest(repo, Some(tag), &raw).await?;
    Ok(config.len() as u64 + len)
}
