//! The cache index: cache key → layer record, one small JSON file per key, written
//! atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compress::Compression;
use crate::digest::{ChainId, Digest};
use crate::error::Result;
use crate::fsutil::{LockFile, list_dir, mkdirs, now_unix, read_json, write_json};

/// One compressed form of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlobRef {
    /// The blob's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
}

impl BlobRef {
    /// A blob reference.
    pub fn new(digest: Digest, media_type: impl Into<String>, size: u64) -> BlobRef {
        BlobRef {
            digest,
            media_type: media_type.into(),
            size,
        }
    }
}

/// What a cache key produced: a layer, in one or more compressions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LayerRecord {
    /// The layer's diffID; `None` for a build step's layer not hashed yet (see
    /// [`LayerRecord::unhashed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// Size of the uncompressed tar stream (0 while the diffID is unknown).
    pub uncompressed_size: u64,
    /// The blobs, by compression.
    pub blobs: BTreeMap<Compression, BlobRef>,
    /// The snapshot holding this layer unpacked, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<ChainId>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Last use, seconds since the epoch (see [`CacheIndex::touch`]).
    pub last_used: u64,
    /// Free-form data for the build engine (sorted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl LayerRecord {
    /// A record created and used now, without blobs yet.
    pub fn new(diff_id: Digest, uncompressed_size: u64) -> LayerRecord {
        let now = now_unix();
        LayerRecord {
            diff_id: Some(diff_id),
            uncompressed_size,
            blobs: BTreeMap::new(),
            chain_id: None,
            created: now,
            last_used: now,
            annotations: BTreeMap::new(),
        }
    }

    /// A record of a build step's layer that lives only in the snapshot `chain_id`, not
    /// hashed or packed yet: [`Cache::pack_snapshot`](crate::Cache::pack_snapshot) or
    /// [`Cache::hash_snapshot`](crate::Cache::hash_snapshot) give its diffID when needed.
    pub fn unhashed(chain_id: ChainId) -> LayerRecord {
        let now = now_unix();
        LayerRecord {
            diff_id: None,
            uncompressed_size: 0,
            blobs: BTreeMap::new(),
            chain_id: Some(chain_id),
            created: now,
            last_used: now,
            annotations: BTreeMap::new(),
        }
    }
}

/// Cache key → [`LayerRecord`], under `<cache>/index`.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    root: PathBuf,
}

impl CacheIndex {
    /// The index inside the cache directory `root` (created when missing).
    pub fn open(root: &Path) -> Result<CacheIndex> {
        let s = CacheIndex {
            root: root.to_owned(),
        };
        mkdirs(&s.dir())?;
        mkdirs(&s.root.join("locks"))?;
        Ok(s)
    }

    fn dir(&self) -> PathBuf {
        self.root.join("index")
    }

    pub(crate) fn record_path(&self, key: &Digest) -> PathBuf {
        self.dir().join(format!("{}.json", key.file_stem()))
    }

    pub(crate) fn lock_path(&self, key: &Digest) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("index-{}.lock", key.file_stem()))
    }

    /// The record for `key`.
    pub fn get(&self, key: &Digest) -> Result<Option<LayerRecord>> {
        read_json(&self.record_path(key))
    }

    /// Stores the record for `key` (replacing any), atomically.
    pub fn put(&self, key: &Digest, record: &LayerRecord) -> Result<()> {
        write_json(&self.record_path(key), record)
    }

    /// Read-modify-write under the key's lock: `f` gets the current record (if any) and
    /// returns the new one (`None` deletes it). Safe against concurrent updaters in other
    /// processes, such as two builds adding a gzip and a zstd blob to one record.
    pub fn update(
        &self,
        key: &Digest,
        f: impl FnOnce(Option<LayerRecord>) -> Option<LayerRecord>,
    ) -> Result<Option<LayerRecord>> {
        let lock = LockFile::wait(&self.lock_path(key), true)?;
        let new = f(self.get(key)?);
        match &new {
            Some(r) => self.put(key, r)?,
            None => self.remove_record(key)?,
        }
        drop(lock);
        Ok(new)
    }

    /// Sets a record's last use to now (a cache hit).
    pub fn touch(&self, key: &Digest) -> Result<()> {
        self.update(key, |r| {
            r.map(|mut r| {
                r.last_used = now_unix();
                r
            })
        })
        .map(drop)
    }

    /// Deletes a record.
    pub fn remove(&self, key: &Digest) -> Result<()> {
        self.update(key, |_| None).map(drop)
    }

    fn remove_record(&self, key: &Digest) -> Result<()> {
        crate::fsutil::remove_tree(&self.record_path(key))
    }

    /// Every record, sorted by key.
    pub fn list(&self) -> Result<Vec<(Digest, LayerRecord)>> {
        let mut out = Vec::new();
        for name in list_dir(&self.dir())? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Some(key) = Digest::from_file_stem(stem) else {
                continue;
            };
            if let Some(r) = self.get(&key)? {
                out.push((key, r));
            }
        }
        Ok(out)
    }
}
