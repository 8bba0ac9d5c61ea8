//! `type=inline`: the cache metadata of an image's own steps, carried in the pushed image's
//! config, as BuildKit's inline cache carries its `moby.buildkit.cache.v0` field.
//!
//! The records name the image's own layers by their index (BuildKit's inline records do
//! the same), so an inline cache costs no blob of its own: importing it
//! (`--cache-from type=registry,ref=IMAGE`) reads the image's manifest and config, and a
//! layer is pulled (or mounted) only when a step needs it, as with a cache artifact. The
//! field is rbuild's own ([`INLINE_CACHE_FIELD`]): its keys are rbuild's step keys, which
//! BuildKit could not use, and BuildKit's keys mean nothing to rbuild. An image that only
//! has BuildKit's field imports as no records, with a warning saying why.

use layer_cache::{BlobRef, Digest, LayerRecord};
use registry_client::oci_spec::image::ImageManifest;
use registry_client::{Client, Manifest, Reference};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::format::compression_of;
use super::{CacheEntry, ImportedCache};
use crate::engine::Error;

/// The image config field that holds rbuild's inline cache.
pub const INLINE_CACHE_FIELD: &str = "rbuild.cache.v1";

/// BuildKit's inline cache field (read only to say why it is not used).
pub(crate) const BUILDKIT_INLINE_FIELD: &str = "moby.buildkit.cache.v0";

/// What an inline cache holds: one record per step of the image, by layer index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InlineCache {
    version: u32,
    records: Vec<InlineRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct InlineRecord {
    /// The step's cache key.
    key: String,
    /// Index of its layer in the image's layers (and `rootfs.diff_ids`).
    layer: usize,
    uncompressed_size: u64,
    created: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The inline cache value for an image whose layer `i` was made by the step of
/// `entries[n]` when `entries[n].0 == i`. `None` when no layer has a step (an image of
/// base layers only).
pub(crate) fn inline_value(entries: &[(usize, CacheEntry)]) -> Option<Value> {
    if entries.is_empty() {
        return None;
    }
    let mut records: Vec<InlineRecord> = entries
        .iter()
        .map(|(i, e)| InlineRecord {
            key: e.key.to_string(),
            layer: *i,
            uncompressed_size: e.record.uncompressed_size,
            created: e.record.created,
            annotations: e.record.annotations.clone(),
        })
        .collect();
    records.sort_by(|a, b| (a.layer, &a.key).cmp(&(b.layer, &b.key)));
    serde_json::to_value(InlineCache {
        version: 1,
        records,
    })
    .ok()
}

fn bad(name: &dyn std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::BadCache {
        reference: name.to_string(),
        reason: reason.into(),
    }
}

/// What the inline cache of one image (its manifest and config bytes) adds to `out`.
/// Returns whether the config had BuildKit's inline field (and not rbuild's).
pub(super) fn decode_image(
    name: &dyn std::fmt::Display,
    manifest: &ImageManifest,
    config_bytes: &[u8],
    out: &mut ImportedCache,
) -> Result<bool, Error> {
    let config: Value = serde_json::from_slice(config_bytes)
        .map_err(|e| bad(name, format!("image config: {e}")))?;
    let Some(field) = config.get(INLINE_CACHE_FIELD) else {
        return Ok(config.get(BUILDKIT_INLINE_FIELD).is_some());
    };
    let cache: InlineCache = serde_json::from_value(field.clone())
        .map_err(|e| bad(name, format!("{INLINE_CACHE_FIELD}: {e}")))?;
    if cache.version != 1 {
        return Err(bad(
            name,
            format!("inline cache version {} is not supported", cache.version),
        ));
    }
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let layers = manifest.layers();
    if diff_ids.len() != layers.len() {
        return Err(bad(
            name,
            format!(
                "the image has {} layers but {} diffIDs",
                layers.len(),
                diff_ids.len()
            ),
        ));
    }
    for l in layers {
        out.layer_bytes += l.size();
    }
    for r in cache.records {
        let key: Digest = r
            .key
            .parse()
            .map_err(|e| bad(name, format!("record key {:?}: {e}", r.key)))?;
        let (Some(l), Some(d)) = (layers.get(r.layer), diff_ids.get(r.layer)) else {
            return Err(bad(
                name,
                format!("record {key} names layer {} of {}", r.layer, layers.len()),
            ));
        };
        let digest: Digest = l
            .digest()
            .to_string()
            .parse()
            .map_err(|e| bad(name, format!("layer digest: {e}")))?;
        let diff_id: Digest = d
            .parse()
            .map_err(|e| bad(name, format!("diffID {d:?}: {e}")))?;
        let blob = BlobRef::new(digest, l.media_type().to_string(), l.size());
        let mut rec = LayerRecord::new(diff_id, r.uncompressed_size);
        rec.created = r.created;
        rec.annotations = r.annotations;
        rec.blobs.insert(compression_of(&blob.media_type), blob);
        out.records.entry(key).or_insert(rec);
    }
    Ok(false)
}

/// Whether `media_type` is an image config's (OCI or Docker), where an inline cache is.
pub(super) fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

/// The inline cache of every image of the index `reference` names: each manifest and
/// config is read (attestation manifests are skipped), no layer.
pub(super) async fn fetch_index(
    client: &Client,
    reference: &Reference,
    index: &registry_client::oci_spec::image::ImageIndex,
    out: &mut ImportedCache,
) -> Result<bool, Error> {
    let repo = reference.repository();
    let mut buildkit_only = false;
    for desc in index.manifests() {
        let attestation = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get("vnd.docker.reference.type"))
            .is_some_and(|t| t == "attestation-manifest");
        if attestation {
            continue;
        }
        let digest: registry_client::Digest = desc.digest().to_string().parse()?;
        let raw = client.fetch_manifest(repo, &digest).await?;
        let Manifest::Image(m) = raw.parse()? else {
            continue;
        };
        if !is_image_config(m.config().media_type().as_ref()) {
            continue;
        }
        let config = client.fetch_blob(repo, m.config()).await?;
        out.metadata_bytes += raw.size() + config.len() as u64;
        buildkit_only |= decode_image(reference, &m, &config, out)?;
    }
    Ok(buildkit_only)
}
