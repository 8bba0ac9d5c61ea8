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
use registry_client::oci_spec::image::ImageManifest;
use registry_client::{
    BlobSource, Client, Manifest, NoProgress, RawManifest, Reference, Repository,
};
use serde::{Deserialize, Serialize};

use crate::engine::Error;

/// The media type of the cache artifact's config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

const UNCOMPRESSED_ANNOTATION: &str = "containerd.io/uncompressed";
const MOUNT_PACK_ANNOTATION: &str = "dev.rbuild.cache-mount-pack";

/// The config of a cache artifact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CacheConfig {
    /// The format version (1).
    version: u32,
    /// One record per cache key.
    records: Vec<CacheRecord>,
    /// The content of cache mounts, by their directory name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MountRecord {
    /// The cache mount's directory name (a digest of its id and how it starts).
    dir: String,
    /// Indexes of its packs in the manifest's layers.
    packs: Vec<usize>,
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
    /// Or the OCI layout directory they are read from (`type=local`).
    pub dir: Option<std::path::PathBuf>,
    /// The records, by key.
    pub records: HashMap<Digest, LayerRecord>,
    /// Bytes of the manifest and config read.
    pub metadata_bytes: u64,
    /// Bytes of all the layers the artifact references.
    pub layer_bytes: u64,
    /// The packs of each cache mount's content, by the mount's directory name.
    pub mounts: BTreeMap<String, Vec<BlobRef>>,
}

fn bad(name: &dyn std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::BadCache {
        reference: name.to_string(),
        reason: reason.into(),
    }
}

pub(super) fn compression_of(media_type: &str) -> Compression {
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
    let repo = reference.repository().clone();
    let manifest = match raw.parse()? {
        Manifest::Image(m) => m,
        // An image index: the inline caches of its images (`--cache-to type=inline`).
        Manifest::Index(index) => {
            let mut out = ImportedCache::default();
            let buildkit = super::inline::fetch_index(client, reference, &index, &mut out).await?;
            out.metadata_bytes += raw.size();
            return inline_result(reference, out, buildkit).map(Some);
        }
    };
    if super::inline::is_image_config(manifest.config().media_type().as_ref()) {
        let config_bytes = client.fetch_blob(&repo, manifest.config()).await?;
        let mut out = ImportedCache {
            metadata_bytes: raw.size() + config_bytes.len() as u64,
            ..ImportedCache::default()
        };
        let buildkit = super::inline::decode_image(reference, &manifest, &config_bytes, &mut out)?;
        out.repo = Some(repo);
        return inline_result(reference, out, buildkit).map(Some);
    }
    check_config(reference, &manifest)?;
    // Verified against its digest by the client.
    let config_bytes = client.fetch_blob(&repo, manifest.config()).await?;
    let mut out = decode(reference, &manifest, &config_bytes)?;
    out.repo = Some(repo);
    out.metadata_bytes = raw.size() + config_bytes.len() as u64;
    Ok(Some(out))
}

/// An image read as an inline cache: refused when it has none (saying so when it has
/// BuildKit's, whose keys rbuild cannot use).
fn inline_result(
    reference: &Reference,
    mut out: ImportedCache,
    buildkit: bool,
) -> Result<ImportedCache, Error> {
    if out.records.is_empty() {
        let reason = if buildkit {
            format!(
                "is an image with BuildKit's inline cache ({}), whose keys rbuild cannot use; \
                 export one with rbuild --cache-to type=inline",
                super::inline::BUILDKIT_INLINE_FIELD
            )
        } else {
            format!(
                "is an image without an inline cache (no {} in its config)",
                super::inline::INLINE_CACHE_FIELD
            )
        };
        return Err(bad(reference, reason));
    }
    out.repo = Some(reference.repository().clone());
    Ok(out)
}

/// Refuses a manifest whose config is not an rbuild cache config.
pub(super) fn check_config(
    name: &dyn std::fmt::Display,
    manifest: &ImageManifest,
) -> Result<(), Error> {
    let config_desc = manifest.config();
    if config_desc.media_type().to_string() != CACHE_CONFIG_MEDIA_TYPE {
        return Err(bad(
            name,
            format!(
                "its config is {}, not an rbuild cache ({CACHE_CONFIG_MEDIA_TYPE})",
                config_desc.media_type()
            ),
        ));
    }
    Ok(())
}

/// The records of a cache artifact, from its manifest and (verified) config bytes.
pub(super) fn decode(
    name: &dyn std::fmt::Display,
    manifest: &ImageManifest,
    config_bytes: &[u8],
) -> Result<ImportedCache, Error> {
    let config: CacheConfig = serde_json::from_slice(config_bytes)
        .map_err(|e| bad(name, format!("cache config: {e}")))?;
    if config.version != 1 {
        return Err(bad(
            name,
            format!("cache format version {} is not supported", config.version),
        ));
    }
    let mut out = ImportedCache::default();
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let digest: Digest = l
            .digest()
            .to_string()
            .parse()
            .map_err(|e| bad(name, format!("layer digest: {e}")))?;
        out.layer_bytes += l.size();
        layers.push(BlobRef::new(digest, l.media_type().to_string(), l.size()));
    }
    for r in config.records {
        let key: Digest = r
            .key
            .parse()
            .map_err(|e| bad(name, format!("record key {:?}: {e}", r.key)))?;
        let diff_id: Digest = r
            .diff_id
            .parse()
            .map_err(|e| bad(name, format!("diffID {:?}: {e}", r.diff_id)))?;
        let blob = layers
            .get(r.layer)
            .ok_or_else(|| {
                bad(
                    name,
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
    for m in config.mounts {
        let packs = m
            .packs
            .iter()
            .map(|&i| {
                layers.get(i).cloned().ok_or_else(|| {
                    bad(
                        name,
                        format!("mount {} names layer {i} of {}", m.dir, layers.len()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.mounts.insert(m.dir, packs);
    }
    Ok(out)
}

/// The config and manifest documents of the cache artifact for `entries`.
pub(super) fn encode(
    name: &dyn std::fmt::Display,
    entries: &[CacheEntry],
    mounts: &BTreeMap<String, Vec<BlobRef>>,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut layers: Vec<&BlobRef> = Vec::new();
    let mut diff_ids: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for e in entries {
        let diff_id = e
            .record
            .diff_id
            .as_ref()
            .ok_or_else(|| bad(name, format!("record {} has no diffID", e.key)))?;
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
    let mut mount_records = Vec::new();
    for (dir, packs) in mounts {
        let mut idx = Vec::new();
        for b in packs {
            let i = match layers.iter().position(|l| l.digest == b.digest) {
                Some(i) => i,
                None => {
                    layers.push(b);
                    diff_ids.push(String::new());
                    layers.len() - 1
                }
            };
            idx.push(i);
        }
        mount_records.push(MountRecord {
            dir: dir.clone(),
            packs: idx,
        });
    }
    let config = serde_json::to_vec(&CacheConfig {
        version: 1,
        records,
        mounts: mount_records,
    })
    .map_err(|e| bad(name, e.to_string()))?;
    let config_digest = registry_client::Digest::sha256_of(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": registry_client::OCI_MANIFEST,
        "artifactType": CACHE_CONFIG_MEDIA_TYPE,
        "config": {
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().zip(&diff_ids).map(|(b, d)| if d.is_empty() {
            // A cache mount's pack: no diffID (it is never a layer of an image).
            serde_json::json!({
                "mediaType": b.media_type,
                "digest": b.digest.to_string(),
                "size": b.size,
                "annotations": { MOUNT_PACK_ANNOTATION: "true" },
            })
        } else {
            serde_json::json!({
                "mediaType": b.media_type,
                "digest": b.digest.to_string(),
                "size": b.size,
                "annotations": { UNCOMPRESSED_ANNOTATION: d },
            })
        }).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| bad(name, e.to_string()))?;
    Ok((config, manifest))
}

/// Writes the cache artifact for `entries` (whose blobs are in `reference`'s repository
/// already) under `reference`'s tag: the config blob, then the manifest, so a reader
/// never sees a manifest whose parts are missing. Two writers of one tag each leave a
/// complete artifact; the last manifest written wins. Returns the bytes written.
pub async fn push_registry_cache(
    client: &Client,
    reference: &Reference,
    entries: &[CacheEntry],
    mounts: &BTreeMap<String, Vec<BlobRef>>,
) -> Result<u64, Error> {
    let (config, manifest) = encode(reference, entries, mounts)?;
    let config_digest = registry_client::Digest::sha256_of(&config);
    let repo = reference.repository();
    let written = (config.len() + manifest.len()) as u64;
    client
        .push_blob(
            repo,
            &config_digest,
            config.len() as u64,
            &BlobSource::Bytes(Bytes::from(config)),
            None,
            &NoProgress,
        )
        .await?;
    let raw = RawManifest::new(Bytes::from(manifest), Some(registry_client::OCI_MANIFEST))?;
    let tag = reference.tag().unwrap_or("latest");
    client.push_manifest(repo, Some(tag), &raw).await?;
    Ok(written)
}
