//! The stat cache: (path, size, mtime, ctime, inode) → content digest, so that hashing a
//! build context does not re-read unchanged files.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Sha256Hasher};
use crate::error::{Error, Result, io_at};
use crate::fsutil::{mkdirs, read_json, write_json_as};

/// What the stat cache remembers about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatEntry {
    /// Size in bytes.
    pub size: u64,
    /// mtime, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// ctime, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// sha256 of the contents.
    pub digest: Digest,
}

impl StatEntry {
    fn matches(&self, md: &Metadata) -> bool {
        let (m, c) = times(md);
        self.size == md.len() && self.mtime_ns == m && self.ctime_ns == c && self.ino == md.ino()
    }
}

fn times(md: &Metadata) -> (i128, i128) {
    (
        i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
    )
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    entries: BTreeMap<String, StatEntry>,
}

/// One build context's stat cache, loaded in memory; [`StatCache::save`] writes it back
/// atomically. Entries for files changed within the last two seconds are not saved: such a
/// file could change again within the same timestamp tick (git's "racily clean" problem).
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    entries: BTreeMap<String, StatEntry>,
    dirty: bool,
}

const RACY_SECS: i128 = 2;

impl StatCache {
    /// Loads (or starts) the stat cache named `name` (any string, typically the build
    /// context's absolute path) in the cache directory `root`. An unreadable cache file is
    /// treated as empty: it only ever costs re-hashing.
    pub fn open(root: &Path, name: &str) -> Result<StatCache> {
        let dir = root.join("statcache");
        mkdirs(&dir)?;
        let path = dir.join(format!("{}.json", Digest::sha256_of(name.as_bytes()).hex()));
        let entries = match read_json::<Stored>(&path) {
            Ok(Some(s)) => s.entries,
            Ok(None) | Err(Error::Json { .. }) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(StatCache {
            path,
            entries,
            dirty: false,
        })
    }

    /// The digest recorded for `rel` if the file still has the same size, mtime, ctime and
    /// inode as `md` says.
    pub fn lookup(&self, rel: &str, md: &Metadata) -> Option<&Digest> {
        self.entries
            .get(rel)
            .filter(|e| e.matches(md))
            .map(|e| &e.digest)
    }

    /// Records the digest of `rel`, whose metadata (taken before reading it) is `md`.
    pub fn insert(&mut self, rel: &str, md: &Metadata, digest: Digest) {
        let (mtime_ns, ctime_ns) = times(md);
        self.entries.insert(
            rel.to_owned(),
            StatEntry {
                size: md.len(),
                mtime_ns,
                ctime_ns,
                ino: md.ino(),
                digest,
            },
        );
        self.dirty = true;
    }

    /// The sha256 of the regular file `root/rel`, from the cache when the file is
    /// unchanged, else by reading it (and recording the result). A symlink at `rel` is an
    /// error (`O_NOFOLLOW`); hash symlinks by their target instead.
    pub fn digest_file(&mut self, root: &Path, rel: &str) -> Result<Digest> {
        let path = root.join(rel);
        let mut f = File::options()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_at(&path))?;
        let md = f.metadata().map_err(io_at(&path))?;
        if let Some(d) = self.lookup(rel, &md) {
            return Ok(d.clone());
        }
        let mut h = Sha256Hasher::default();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f.read(&mut buf).map_err(io_at(&path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d = h.finish();
        self.insert(rel, &md, d.clone());
        Ok(d)
    }

    /// Keeps only the entries for which `keep` returns true (drop deleted files).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, _| keep(k));
        self.dirty |= self.entries.len() != before;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cache back (temp file + rename) when it changed.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let horizon = now_ns - RACY_SECS * 1_000_000_000;
        let stored = Stored {
            entries: self
                .entries
                .iter()
                .filter(|(_, e)| e.mtime_ns < horizon && e.ctime_ns < horizon)
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
        };
        write_json_as(&self.path, &stored, false)?;
        self.dirty = false;
        Ok(())
    }
}
