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
use registry_client::oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use registry_client::{
    BlobSource, Client, Manifest, NoProgress, RawManifest, Reference, Repository,
};
use serde::{Deserialize, Serialize};

use crate::engine::Error;

/// The media type of the cache artifact's config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

const UNCOMPRESSED_ANNOTATION: &str = "containerd.io/uncompressed";
const MOUNT_PACK_ANNOTATION: &str = "dev.rbuild.cache-mount-pack";

/// BuildKit's cache config media type (read only to say why such a cache is not used).
const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";

/// How the cache artifact is written: an OCI image manifest whose config is the cache
/// config, or an index (OCI, or a Docker manifest list with Docker layer media types)
/// listing the layers and then the config, as BuildKit's `image-manifest=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheForm {
    /// An image manifest (else an index).
    pub image_manifest: bool,
    /// OCI media types (else Docker's; only with the index form).
    pub oci_mediatypes: bool,
}

impl Default for CacheForm {
    fn default() -> Self {
        Self {
            image_manifest: true,
            oci_mediatypes: true,
        }
    }
}

impl CacheForm {
    /// The form a `--cache-to` asks for.
    pub fn of(spec: &super::CacheExportSpec) -> Self {
        Self {
            image_manifest: spec.image_manifest,
            oci_mediatypes: spec.oci_mediatypes,
        }
    }

    /// The media type of the document that is the cache's tag.
    pub fn media_type(&self) -> &'static str {
        match (self.image_manifest, self.oci_mediatypes) {
            (true, _) => registry_client::OCI_MANIFEST,
            (false, true) => registry_client::OCI_INDEX,
            (false, false) => registry_client::DOCKER_MANIFEST_LIST,
        }
    }

    /// A layer media type as this form writes it.
    fn layer_media_type<'a>(&self, oci: &'a str) -> &'a str {
        if self.oci_mediatypes {
            return oci;
        }
        match oci {
            "application/vnd.oci.image.layer.v1.tar" => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => {
                "application/vnd.docker.image.rootfs.diff.tar.zstd"
            }
            other => other,
        }
    }
}

/// A layer media type read from a cache, as rbuild records it (OCI's).
fn oci_layer_media_type(t: &str) -> String {
    match t {
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        other => other,
    }
    .to_owned()
}

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

pub(crate) fn compression_of(media_type: &str) -> Compression {
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
        // An index holding the cache config (`image-manifest=false`).
        Manifest::Index(index) if index_config(reference, &index)?.is_some() => {
            let config_desc = index_config(reference, &index)?
                .cloned()
                .ok_or_else(|| bad(reference, "the cache index has no config"))?;
            // Verified against its digest by the client.
            let config_bytes = client.fetch_blob(&repo, &config_desc).await?;
            let layers = index_layers(&index);
            let mut out = decode(reference, &layers, &config_bytes)?;
            out.repo = Some(repo);
            out.metadata_bytes = raw.size() + config_bytes.len() as u64;
            return Ok(Some(out));
        }
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
    let mut out = decode(reference, manifest.layers(), &config_bytes)?;
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
    if config_desc.media_type().to_string() == BUILDKIT_CACHE_CONFIG {
        return Err(bad(name, buildkit_cache_reason()));
    }
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

fn buildkit_cache_reason() -> String {
    format!(
        "it is a BuildKit cache ({BUILDKIT_CACHE_CONFIG}), whose keys rbuild cannot use; \
         export one with rbuild --cache-to"
    )
}

/// The config entry of a cache written as an index (`image-manifest=false`): `None` when
/// the index holds none (an image index); BuildKit's cache config is refused.
pub(super) fn index_config<'a>(
    name: &dyn std::fmt::Display,
    index: &'a ImageIndex,
) -> Result<Option<&'a Descriptor>, Error> {
    let media = |d: &Descriptor| d.media_type().to_string();
    if index
        .manifests()
        .iter()
        .any(|d| media(d) == BUILDKIT_CACHE_CONFIG)
    {
        return Err(bad(name, buildkit_cache_reason()));
    }
    let mut configs = index
        .manifests()
        .iter()
        .filter(|d| media(d) == CACHE_CONFIG_MEDIA_TYPE);
    let first = configs.next();
    if configs.next().is_some() {
        return Err(bad(name, "the cache index has more than one config"));
    }
    Ok(first)
}

/// The layers of a cache written as an index: every entry but the config, in order.
pub(super) fn index_layers(index: &ImageIndex) -> Vec<Descriptor> {
    index
        .manifests()
        .iter()
        .filter(|d| d.media_type().to_string() != CACHE_CONFIG_MEDIA_TYPE)
        .cloned()
        .collect()
}

/// The records of a cache artifact, from its layer descriptors (the manifest's layers, or
/// the index's entries but the config) and (verified) config bytes.
pub(super) fn decode(
    name: &dyn std::fmt::Display,
    manifest_layers: &[Descriptor],
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
    for l in manifest_layers {
        let digest: Digest = l
            .digest()
            .to_string()
            .parse()
            .map_err(|e| bad(name, format!("layer digest: {e}")))?;
        out.layer_bytes += l.size();
        let media_type = oci_layer_media_type(l.media_type().as_ref());
        layers.push(BlobRef::new(digest, media_type, l.size()));
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

/// The config and manifest (or index) documents of the cache artifact for `entries`, in
/// `form`.
pub(super) fn encode(
    name: &dyn std::fmt::Display,
    entries: &[CacheEntry],
    mounts: &BTreeMap<String, Vec<BlobRef>>,
    form: CacheForm,
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
    let config_desc = serde_json::json!({
        "mediaType": CACHE_CONFIG_MEDIA_TYPE,
        "digest": config_digest.to_string(),
        "size": config.len(),
    });
    let layers = layers.iter().zip(&diff_ids).map(|(b, d)| {
        let media_type = form.layer_media_type(&b.media_type);
        if d.is_empty() {
            // A cache mount's pack: no diffID (it is never a layer of an image).
            serde_json::json!({
                "mediaType": media_type,
                "digest": b.digest.to_string(),
                "size": b.size,
                "annotations": { MOUNT_PACK_ANNOTATION: "true" },
            })
        } else {
            serde_json::json!({
                "mediaType": media_type,
                "digest": b.digest.to_string(),
                "size": b.size,
                "annotations": { UNCOMPRESSED_ANNOTATION: d },
            })
        }
    });
    let manifest = if form.image_manifest {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": registry_client::OCI_MANIFEST,
            "artifactType": CACHE_CONFIG_MEDIA_TYPE,
            "config": config_desc,
            "layers": layers.collect::<Vec<_>>(),
        })
    } else {
        // As BuildKit's index form: the layers in order, then the config.
        let mut manifests: Vec<_> = layers.collect();
        manifests.push(config_desc);
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": form.media_type(),
            "manifests": manifests,
        })
    };
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
    form: CacheForm,
) -> Result<u64, Error> {
    let (config, manifest) = encode(reference, entries, mounts, form)?;
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
    let raw = RawManifest::new(Bytes::from(manifest), Some(form.media_type()))?;
    let tag = reference.tag().unwrap_or("latest");
    client.push_manifest(repo, Some(tag), &raw).await?;
    Ok(written)
}
