//! `type=local`: the cache artifact in an OCI image layout directory, as buildx writes
//! it (`oci-layout`, `index.json` naming the cache manifest by its tag in
//! `org.opencontainers.image.ref.name`, the blobs under `blobs/sha256`).
//!
//! Blobs are written under a temporary name and renamed, and `index.json` is replaced by
//! a rename under a lock, so a reader never sees a manifest whose parts are missing and
//! two writers each leave a complete cache (the last one's manifest is the tag's).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use layer_cache::Digest;
use registry_client::{Manifest, RawManifest};
use serde_json::{Value, json};

use super::format::{
    CacheEntry, CacheForm, ImportedCache, check_config, decode, encode, index_config, index_layers,
};
use crate::engine::Error;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::from(layer_cache::Error::Io {
        path: path.to_owned(),
        source: e,
    })
}

fn bad(dir: &Path, reason: impl Into<String>) -> Error {
    Error::BadCache {
        reference: dir.display().to_string(),
        reason: reason.into(),
    }
}

/// Where the layout keeps blob `digest`.
pub(crate) fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join("blobs/sha256").join(hex)
}

/// Reads blob `digest` of the layout whole, verified against its digest.
fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, Error> {
    let path = blob_path(dir, digest);
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let actual = registry_client::Digest::sha256_of(&bytes).to_string();
    if actual != digest {
        return Err(bad(
            dir,
            format!("blob {digest} holds bytes of digest {actual}"),
        ));
    }
    Ok(bytes)
}

/// Reads the cache `tag` (or the manifest `digest`) of the layout `dir`: its manifest and
/// config only. `Ok(None)` when the directory has no layout or not that tag.
pub fn read_local_cache(
    dir: &Path,
    tag: &str,
    digest: Option<&str>,
) -> Result<Option<ImportedCache>, Error> {
    let index_path = dir.join("index.json");
    let text = match std::fs::read(&index_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&index_path, e)),
    };
    let index: Value = serde_json::from_slice(&text)
        .map_err(|e| bad(dir, format!("index.json is not JSON: {e}")))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let found = manifests.iter().find(|m| match digest {
        Some(d) => m["digest"].as_str() == Some(d),
        None => m["annotations"][REF_NAME].as_str() == Some(tag),
    });
    let Some(desc) = found else {
        return Ok(None);
    };
    let mdigest = desc["digest"]
        .as_str()
        .ok_or_else(|| bad(dir, "an index.json entry has no digest"))?;
    let bytes = read_blob(dir, mdigest)?;
    let len = bytes.len() as u64;
    let raw = RawManifest::new(bytes.into(), desc["mediaType"].as_str())?;
    let name = format!("{}:{tag}", dir.display());
    let (config, layers) = match raw.parse()? {
        Manifest::Image(manifest) => {
            check_config(&name, &manifest)?;
            let config = read_blob(dir, manifest.config().digest().as_ref())?;
            (config, manifest.layers().clone())
        }
        // The index form (`image-manifest=false`).
        Manifest::Index(index) => {
            let Some(config_desc) = index_config(&name, &index)? else {
                return Err(bad(
                    dir,
                    format!("{mdigest} is an index without an rbuild cache config"),
                ));
            };
            let config = read_blob(dir, config_desc.digest().as_ref())?;
            (config, index_layers(&index))
        }
    };
    let mut out = decode(&name, &layers, &config)?;
    out.dir = Some(dir.to_owned());
    out.metadata_bytes = len + config.len() as u64;
    Ok(Some(out))
}

/// Puts the file `src` (blob `digest`) into the layout `dir`, unless it has it: a hard
/// link when they share a filesystem, else a copy, under a temporary name then renamed.
/// Returns true when it was not there.
pub(crate) fn put_blob(dir: &Path, digest: &Digest, src: &Path) -> Result<bool, Error> {
    let dst = blob_path(dir, &digest.to_string());
    if dst.exists() {
        return Ok(false);
    }
    let parent = dst.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(parent)
        .map_err(|e| io(parent, e))?;
    let tmp_path = tmp.path().to_owned();
    drop(tmp);
    if std::fs::hard_link(src, &tmp_path).is_err() {
        std::fs::copy(src, &tmp_path).map_err(|e| io(src, e))?;
    }
    std::fs::rename(&tmp_path, &dst).map_err(|e| io(&dst, e))?;
    Ok(true)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(parent)
        .map_err(|e| io(parent, e))?;
    tmp.write_all(bytes).map_err(|e| io(path, e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}

/// Writes the cache artifact for `entries` (whose blobs are in the layout already, see
/// `put_blob`) under `tag` of the layout `dir`. Returns the bytes of metadata written.
pub fn write_local_cache(
    dir: &Path,
    tag: &str,
    entries: &[CacheEntry],
    mounts: &std::collections::BTreeMap<String, Vec<layer_cache::BlobRef>>,
    form: CacheForm,
) -> Result<u64, Error> {
    let name = format!("{}:{tag}", dir.display());
    let (config, manifest) = encode(&name, entries, mounts, form)?;
    // Its own parse: the document must read back as the manifest or index it claims to be.
    let raw = RawManifest::new(manifest.clone().into(), Some(form.media_type()))?;
    raw.parse().map_err(|e| bad(dir, e.to_string()))?;
    let config_digest = registry_client::Digest::sha256_of(&config).to_string();
    let manifest_digest = registry_client::Digest::sha256_of(&manifest).to_string();
    for (d, b) in [(&config_digest, &config), (&manifest_digest, &manifest)] {
        let p = blob_path(dir, d);
        if !p.exists() {
            write_atomic(&p, b)?;
        }
    }
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    // index.json is read, changed and replaced under a lock: concurrent writers of other
    // tags keep theirs.
    let lock_path = dir.join(".index.lock");
    let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(&lock_path, e.into()))?;
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match std::fs::read(&index_path) {
        Ok(t) => serde_json::from_slice::<Value>(&t)
            .ok()
            .and_then(|v| v["manifests"].as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    manifests.push(json!({
        "mediaType": form.media_type(),
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": { REF_NAME: tag },
    }));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec_pretty(&index).map_err(|e| bad(dir, e.to_string()))?;
    write_atomic(&index_path, &bytes)?;
    Ok((config.len() + manifest.len()) as u64)
}
