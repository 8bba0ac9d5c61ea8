//! Leases: a running build holds cache entries so that prune never removes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::digest::{ChainId, Digest};
use crate::error::Result;
use crate::fsutil::{LockFile, mkdirs, now_unix, read_json, unique_suffix, write_json};

/// A cache entry a lease can hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryRef {
    /// A blob in the content store.
    Blob(Digest),
    /// A snapshot (and, implicitly, every snapshot below it).
    Snapshot(ChainId),
    /// A cache index record (and, implicitly, its blobs and snapshot).
    Index(Digest),
    /// A stat cache, by the name given to [`Cache::stat_cache`](crate::Cache::stat_cache).
    StatCache(String),
    /// A directory under `other/` (see [`Cache::other_dir`](crate::Cache::other_dir)).
    Other(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LeaseFile {
    pub(crate) pid: u32,
    pub(crate) created: u64,
    pub(crate) holds: BTreeSet<EntryRef>,
}

/// A lease held by this process: while it lives (its lock file is flocked), the entries it
/// holds survive any prune, in this process or another. Dropping it releases everything;
/// a lease left by a process that died is recognised (its lock is free) and removed by
/// the next prune.
///
/// Protocol: hold an entry *before* looking it up or creating it; prune runs under an
/// exclusive GC lock that [`Lease::hold`] also takes (shared), so an entry is either held
/// before a prune decides or looked up after it finished.
#[derive(Debug)]
pub struct Lease {
    id: String,
    file: PathBuf,
    gc_lock: PathBuf,
    lock: Option<LockFile>,
    holds: Mutex<BTreeSet<EntryRef>>,
}

pub(crate) fn leases_dir(root: &Path) -> PathBuf {
    root.join("leases")
}

pub(crate) fn gc_lock_path(root: &Path) -> PathBuf {
    root.join("gc.lock")
}

impl Lease {
    pub(crate) fn new(root: &Path) -> Result<Lease> {
        let dir = leases_dir(root);
        mkdirs(&dir)?;
        let id = unique_suffix();
        let lock = LockFile::wait(&dir.join(format!("{id}.lock")), true)?;
        let lease = Lease {
            file: dir.join(format!("{id}.json")),
            id,
            gc_lock: gc_lock_path(root),
            lock: Some(lock),
            holds: Mutex::new(BTreeSet::new()),
        };
        lease.write(&BTreeSet::new())?;
        Ok(lease)
    }

    fn write(&self, holds: &BTreeSet<EntryRef>) -> Result<()> {
        write_json(
            &self.file,
            &LeaseFile {
                pid: std::process::id(),
                created: now_unix(),
                holds: holds.clone(),
            },
        )
    }

    /// This lease's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Holds `entry` until the lease is dropped.
    pub fn hold(&self, entry: EntryRef) -> Result<()> {
        self.hold_all([entry])
    }

    /// Holds several entries at once.
    pub fn hold_all(&self, entries: impl IntoIterator<Item = EntryRef>) -> Result<()> {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let before = holds.len();
        holds.extend(entries);
        if holds.len() == before {
            return Ok(());
        }
        let gc = LockFile::wait(&self.gc_lock, false)?;
        self.write(&holds)?;
        drop(gc);
        Ok(())
    }

    /// What this lease holds, sorted.
    pub fn holds(&self) -> Vec<EntryRef> {
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.iter().cloned().collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(lock) = self.lock.take() {
            let _ = lock.remove();
        }
    }
}

/// Reads the leases of live holders; removes those whose holder died. Must run under the
/// exclusive GC lock.
pub(crate) fn live_holds(root: &Path) -> Result<BTreeSet<EntryRef>> {
    let dir = leases_dir(root);
    let mut held = BTreeSet::new();
    for name in crate::fsutil::list_dir(&dir)? {
        let Some(id) = name.strip_suffix(".lock") else {
            continue;
        };
        let json = dir.join(format!("{id}.json"));
        match LockFile::acquire(&dir.join(&name), true, false)? {
            Some(lock) => {
                // Nobody holds it: the owner is gone.
                crate::fsutil::remove_tree(&json)?;
                lock.remove()?;
            }
            None => {
                if let Ok(Some(f)) = read_json::<LeaseFile>(&json) {
                    held.extend(f.holds);
                }
            }
        }
    }
    // Lease records without a lock file (a crash between the two removals).
    for name in crate::fsutil::list_dir(&dir)? {
        if let Some(id) = name.strip_suffix(".json") {
            if !dir.join(format!("{id}.lock")).exists() {
                crate::fsutil::remove_tree(&dir.join(&name))?;
            }
        }
    }
    Ok(held)
}
