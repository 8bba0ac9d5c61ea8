//! Disk usage and pruning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::content::ContentStore;
use crate::digest::{ChainId, Digest};
use crate::error::Result;
use crate::fsutil::{LockFile, list_dir, remove_if_unlocked, remove_tree, tree_size};
use crate::index::CacheIndex;
use crate::lease::{EntryRef, gc_lock_path, live_holds};
use crate::snapshot::SnapshotStore;

/// The kinds of data in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum UsageKind {
    /// Compressed blobs (layers, configs, manifests) and partial downloads.
    Blobs,
    /// Unpacked layers.
    Snapshots,
    /// Cache index records.
    CacheIndex,
    /// Build-context stat caches.
    StatCaches,
    /// Everything else kept under `other/` (cache mounts...).
    Other,
}

impl UsageKind {
    /// Every kind, in display order.
    pub const ALL: [UsageKind; 5] = [
        UsageKind::Blobs,
        UsageKind::Snapshots,
        UsageKind::CacheIndex,
        UsageKind::StatCaches,
        UsageKind::Other,
    ];

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            UsageKind::Blobs => "blobs",
            UsageKind::Snapshots => "snapshots",
            UsageKind::CacheIndex => "cache-index",
            UsageKind::StatCaches => "stat-caches",
            UsageKind::Other => "other",
        }
    }
}

impl fmt::Display for UsageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Usage of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KindUsage {
    /// Number of entries.
    pub entries: u64,
    /// Bytes (apparent sizes of the files).
    pub bytes: u64,
    /// Entries held by running builds.
    pub held_entries: u64,
    /// Bytes held by running builds.
    pub held_bytes: u64,
}

/// What [`Cache::du`](crate::Cache::du) reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Usage {
    /// Per kind; every kind is present.
    pub kinds: BTreeMap<UsageKind, KindUsage>,
    /// Sum over the kinds.
    pub total_bytes: u64,
}

/// One entry removed by a prune.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemovedEntry {
    /// Its kind.
    pub kind: UsageKind,
    /// Its name (digest, chain ID, stat-cache file or directory name).
    pub id: String,
    /// Bytes freed.
    pub bytes: u64,
}

/// What [`Cache::prune`](crate::Cache::prune) did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PruneReport {
    /// Entries removed, in removal order.
    pub removed: Vec<RemovedEntry>,
    /// Bytes freed, including leftovers of crashed processes.
    pub reclaimed_bytes: u64,
    /// Usage after the prune.
    pub remaining_bytes: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: UsageKind,
    id: EntryRef,
    bytes: u64,
    last_used: SystemTime,
}

struct Inventory {
    entries: Vec<Entry>,
    /// Bytes that are not entries (partial downloads, temporary files).
    loose: BTreeMap<UsageKind, u64>,
    snapshot_parent: BTreeMap<ChainId, Option<ChainId>>,
    index_refs: BTreeMap<Digest, (Vec<Digest>, Option<ChainId>)>,
}

fn secs(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH)
}

pub(crate) struct Gc<'a> {
    pub(crate) root: &'a Path,
    pub(crate) content: &'a ContentStore,
    pub(crate) snapshots: &'a SnapshotStore,
    pub(crate) index: &'a CacheIndex,
}

impl Gc<'_> {
    fn inventory(&self) -> Result<Inventory> {
        let mut entries = Vec::new();
        let mut loose = BTreeMap::new();
        for b in self.content.list()? {
            entries.push(Entry {
                kind: UsageKind::Blobs,
                id: EntryRef::Blob(b.digest),
                bytes: b.size,
                last_used: b.last_used,
            });
        }
        *loose.entry(UsageKind::Blobs).or_insert(0) += tree_size(&self.content.ingest_dir())?;
        let mut snapshot_parent = BTreeMap::new();
        for s in self.snapshots.list()? {
            snapshot_parent.insert(s.chain_id.clone(), s.parent.clone());
            entries.push(Entry {
                kind: UsageKind::Snapshots,
                id: EntryRef::Snapshot(s.chain_id),
                bytes: s.size,
                last_used: s.last_used,
            });
        }
        let mut index_refs = BTreeMap::new();
        for (key, r) in self.index.list()? {
            let bytes = std::fs::metadata(self.index.record_path(&key)).map_or(0, |m| m.len());
            index_refs.insert(
                key.clone(),
                (
                    r.blobs.values().map(|b| b.digest.clone()).collect(),
                    r.chain_id.clone(),
                ),
            );
            entries.push(Entry {
                kind: UsageKind::CacheIndex,
                id: EntryRef::Index(key),
                bytes,
                last_used: secs(r.last_used),
            });
        }
        for name in list_dir(&self.root.join("statcache"))? {
            let path = self.root.join("statcache").join(&name);
            let Some(stem) = name.strip_suffix(".json") else {
                *loose.entry(UsageKind::StatCaches).or_insert(0) += tree_size(&path)?;
                continue;
            };
            entries.push(Entry {
                kind: UsageKind::StatCaches,
                id: EntryRef::StatCache(stem.to_owned()),
                bytes: tree_size(&path)?,
                last_used: mtime(&path),
            });
        }
        for name in list_dir(&self.root.join("other"))? {
            let path = self.root.join("other").join(&name);
            entries.push(Entry {
                kind: UsageKind::Other,
                id: EntryRef::Other(name),
                bytes: tree_size(&path)?,
                last_used: mtime(&path),
            });
        }
        Ok(Inventory {
            entries,
            loose,
            snapshot_parent,
            index_refs,
        })
    }

    /// Expands held entries with what they imply: a snapshot holds its ancestors; an
    /// index record holds its blobs and snapshot.
    fn protected(&self, inv: &Inventory, held: &BTreeSet<EntryRef>) -> BTreeSet<EntryRef> {
        let mut out = held.clone();
        let mut chains: Vec<ChainId> = Vec::new();
        for h in held {
            match h {
                EntryRef::Snapshot(c) => chains.push(c.clone()),
                EntryRef::Index(k) => {
                    if let Some((blobs, chain)) = inv.index_refs.get(k) {
                        out.extend(blobs.iter().cloned().map(EntryRef::Blob));
                        chains.extend(chain.iter().cloned());
                    }
                }
                _ => {}
            }
        }
        for mut c in chains {
            loop {
                out.insert(EntryRef::Snapshot(c.clone()));
                match inv.snapshot_parent.get(&c) {
                    Some(Some(p)) => c = p.clone(),
                    _ => break,
                }
            }
        }
        out
    }

    fn stat_cache_name(id: &str) -> String {
        // Held stat caches are named as given to `stat_cache`; files are sha256 of that.
        Digest::sha256_of(id.as_bytes()).hex().to_owned()
    }

    fn normalise_held(held: BTreeSet<EntryRef>) -> BTreeSet<EntryRef> {
        held.into_iter()
            .map(|e| match e {
                EntryRef::StatCache(n) => EntryRef::StatCache(Self::stat_cache_name(&n)),
                e => e,
            })
            .collect()
    }

    pub(crate) fn du(&self) -> Result<Usage> {
        let inv = self.inventory()?;
        let held = {
            let _gc = LockFile::wait(&gc_lock_path(self.root), true)?;
            Self::normalise_held(live_holds(self.root)?)
        };
        let protected = self.protected(&inv, &held);
        let mut usage = Usage::default();
        for k in UsageKind::ALL {
            let u = usage.kinds.entry(k).or_default();
            u.bytes += inv.loose.get(&k).copied().unwrap_or(0);
        }
        for e in &inv.entries {
            let u = usage.kinds.entry(e.kind).or_default();
            u.entries += 1;
            u.bytes += e.bytes;
            if protected.contains(&e.id) {
                u.held_entries += 1;
                u.held_bytes += e.bytes;
            }
        }
        usage.total_bytes = usage.kinds.values().map(|u| u.bytes).sum();
        Ok(usage)
    }

    /// Removes `e` and, when it was removed, counts it in `report`.
    fn remove_reported(&self, e: &Entry, report: &mut PruneReport) -> Result<bool> {
        let removed = self.remove(e)?;
        if removed {
            report.removed.push(RemovedEntry {
                kind: e.kind,
                id: entry_name(&e.id),
                bytes: e.bytes,
            });
            report.reclaimed_bytes += e.bytes;
        }
        Ok(removed)
    }

    fn remove(&self, e: &Entry) -> Result<bool> {
        Ok(match &e.id {
            EntryRef::Blob(d) => {
                let p = self.content.path(d);
                p.exists() && {
                    remove_tree(&p)?;
                    self.content.remove(d)?;
                    true
                }
            }
            EntryRef::Snapshot(c) => self.snapshots.remove(c)?,
            EntryRef::Index(k) => {
                self.index.remove(k)?;
                if let Some(l) = LockFile::acquire(&self.index.lock_path(k), true, false)? {
                    l.remove()?;
                }
                true
            }
            EntryRef::StatCache(name) => {
                remove_tree(&self.root.join("statcache").join(format!("{name}.json")))?;
                true
            }
            EntryRef::Other(name) => {
                remove_tree(&self.root.join("other").join(name))?;
                true
            }
        })
    }

    /// Removes leftovers of crashed processes: staged blobs nobody writes, temporary
    /// directories, half-written records. Returns the bytes freed.
    fn clean_junk(&self) -> Result<u64> {
        let mut freed = self.snapshots.clean_junk()?;
        let ingest = self.content.ingest_dir();
        for name in list_dir(&ingest)? {
            let path = ingest.join(&name);
            if name.starts_with("tmp-") {
                // Each staged file is flocked by its writer.
                freed += remove_if_unlocked(&path)?;
            } else if let Some(stem) = name.strip_suffix(".lock") {
                if let Some(l) = LockFile::acquire(&path, true, false)? {
                    let partial = ingest.join(format!("{stem}.partial"));
                    freed += tree_size(&partial)?;
                    remove_tree(&partial)?;
                    l.remove()?;
                }
            } else if let Some(stem) = name.strip_suffix(".partial") {
                if !ingest.join(format!("{stem}.lock")).exists() {
                    freed += tree_size(&path)?;
                    remove_tree(&path)?;
                }
            }
        }
        // Temporary files of atomic writes (`.tmp-*`), flocked by live writers.
        for dir in ["index", "statcache", "leases", "snapshots", "blobs/stamps"] {
            let dir = self.root.join(dir);
            for name in list_dir(&dir)? {
                let path = dir.join(&name);
                if name.starts_with(".tmp-") && path.is_file() {
                    freed += remove_if_unlocked(&path)?;
                }
            }
        }
        Ok(freed)
    }

    pub(crate) fn prune(&self, keep_storage: Option<u64>, all: bool) -> Result<PruneReport> {
        let _gc = LockFile::wait(&gc_lock_path(self.root), true)?;
        let mut report = PruneReport {
            reclaimed_bytes: self.clean_junk()?,
            ..PruneReport::default()
        };
        let held = Self::normalise_held(live_holds(self.root)?);
        let inv = self.inventory()?;
        let protected = self.protected(&inv, &held);
        let mut total: u64 =
            inv.entries.iter().map(|e| e.bytes).sum::<u64>() + inv.loose.values().sum::<u64>();

        let mut candidates: Vec<&Entry> = inv
            .entries
            .iter()
            .filter(|e| {
                all || matches!(
                    e.kind,
                    UsageKind::Blobs | UsageKind::Snapshots | UsageKind::CacheIndex
                )
            })
            .filter(|e| !protected.contains(&e.id))
            .collect();
        candidates.sort_by(|a, b| {
            a.last_used
                .cmp(&b.last_used)
                .then(a.kind.cmp(&b.kind))
                .then(a.id.cmp(&b.id))
        });

        let mut gone: BTreeSet<EntryRef> = BTreeSet::new();
        let children = |c: &ChainId| -> Vec<ChainId> {
            inv.snapshot_parent
                .iter()
                .filter(|(_, p)| p.as_ref() == Some(c))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let by_id: BTreeMap<&EntryRef, &Entry> = inv.entries.iter().map(|e| (&e.id, e)).collect();
        for e in candidates {
            if keep_storage.is_some_and(|keep| total <= keep) {
                break;
            }
            if gone.contains(&e.id) {
                continue;
            }
            // Removing a snapshot removes the snapshots stacked on it.
            let mut batch = vec![e];
            if let EntryRef::Snapshot(c) = &e.id {
                let mut stack = children(c);
                while let Some(ch) = stack.pop() {
                    stack.extend(children(&ch));
                    if let Some(x) = by_id.get(&EntryRef::Snapshot(ch)) {
                        batch.push(x);
                    }
                }
            }
            for x in batch.into_iter().rev() {
                if gone.contains(&x.id) || protected.contains(&x.id) {
                    continue;
                }
                if self.remove_reported(x, &mut report)? {
                    total = total.saturating_sub(x.bytes);
                }
                gone.insert(x.id.clone());
            }
        }

        // Dangling entries: snapshots whose parent is gone.
        loop {
            let mut changed = false;
            for (chain, parent) in &inv.snapshot_parent {
                let id = EntryRef::Snapshot(chain.clone());
                if gone.contains(&id) || protected.contains(&id) {
                    continue;
                }
                let Some(p) = parent else { continue };
                if gone.contains(&EntryRef::Snapshot(p.clone()))
                    || !inv.snapshot_parent.contains_key(p)
                {
                    if let Some(e) = by_id.get(&id) {
                        self.remove_reported(e, &mut report)?;
                    }
                    gone.insert(id);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Then records whose layer is gone (every blob, and the snapshot when the record has
        // one: a layer not compressed yet lives only in its snapshot).
        for (key, (blobs, chain)) in &inv.index_refs {
            let id = EntryRef::Index(key.clone());
            if gone.contains(&id) || protected.contains(&id) {
                continue;
            }
            let has_layer = !blobs.is_empty() || chain.is_some();
            let blob_left = blobs.iter().any(|b| self.content.contains(b));
            let snapshot_left = chain.as_ref().is_some_and(|c| {
                inv.snapshot_parent.contains_key(c)
                    && !gone.contains(&EntryRef::Snapshot(c.clone()))
            });
            if has_layer && !blob_left && !snapshot_left {
                if let Some(e) = by_id.get(&id) {
                    self.remove_reported(e, &mut report)?;
                    gone.insert(id);
                }
            }
        }
        let after = self.inventory()?;
        report.remaining_bytes =
            after.entries.iter().map(|e| e.bytes).sum::<u64>() + after.loose.values().sum::<u64>();
        Ok(report)
    }
}

fn entry_name(e: &EntryRef) -> String {
    match e {
        EntryRef::Blob(d) | EntryRef::Index(d) => d.to_string(),
        EntryRef::Snapshot(c) => c.to_string(),
        EntryRef::StatCache(n) | EntryRef::Other(n) => n.clone(),
    }
}
