//! The snapshot store: unpacked layers by chain ID, each one overlayfs lower directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::apply::{ApplyMode, ApplyOptions, apply_layer};
use crate::digest::{ChainId, Digest};
use crate::error::{Error, Result, io_at};
use crate::fingerprint::fingerprint;
use crate::fsutil::{
    LockFile, fsync_dir, list_dir, mkdirs, read_json, remove_tree, touch, tree_size, unique_suffix,
    write_json,
};

/// An unpacked layer: `path` holds only this layer's files (with overlay whiteouts), ready
/// to be one `lowerdir`; [`SnapshotStore::lowerdirs`] gives the whole stack.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The chain ID of this layer and everything below it.
    pub chain_id: ChainId,
    /// The chain below, `None` for a base layer.
    pub parent: Option<ChainId>,
    /// This layer's diffID, or for a build step's layer registered before it was hashed
    /// ([`Cache::commit_upperdir_unhashed`](crate::Cache::commit_upperdir_unhashed)) the
    /// unique id it was registered under.
    pub diff_id: Digest,
    /// The directory with this layer's files.
    pub path: PathBuf,
    /// Bytes of file data in the directory.
    pub size: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Last use (mtime of the snapshot's metadata file; see [`SnapshotStore::touch`]).
    pub last_used: SystemTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    chain_id: ChainId,
    parent: Option<ChainId>,
    diff_id: Digest,
    size: u64,
    created: u64,
    /// The tree's fingerprint at commit (`fingerprint.rs`); absent in snapshots written
    /// before it was recorded, which are not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

/// Unpacked layers by chain ID under `<cache>/snapshots`.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    /// The store inside the cache directory `root` (created when missing).
    pub fn open(root: &Path) -> Result<SnapshotStore> {
        let s = SnapshotStore {
            root: root.to_owned(),
        };
        mkdirs(&s.dir())?;
        mkdirs(&s.root.join("locks"))?;
        Ok(s)
    }

    fn dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn entry_dir(&self, chain: &ChainId) -> PathBuf {
        self.dir().join(chain.digest().file_stem())
    }

    pub(crate) fn lock_path(&self, chain: &ChainId) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("snapshot-{}.lock", chain.digest().file_stem()))
    }

    /// The snapshot, `None` when it is not (completely) there.
    pub fn get(&self, chain: &ChainId) -> Result<Option<Snapshot>> {
        let dir = self.entry_dir(chain);
        let meta_path = dir.join("meta.json");
        let Some(meta) = read_json::<Meta>(&meta_path)? else {
            return Ok(None);
        };
        if meta.chain_id != *chain {
            return Err(Error::InvalidArgument {
                reason: format!("{}: names another chain", meta_path.display()),
            });
        }
        let last_used = std::fs::metadata(&meta_path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(Snapshot {
            chain_id: meta.chain_id,
            parent: meta.parent,
            diff_id: meta.diff_id,
            path: dir.join("fs"),
            size: meta.size,
            created: meta.created,
            last_used,
        }))
    }

    /// Checks that the snapshot of `chain` is as it was committed: its tree's fingerprint
    /// (paths, types, modes, owners, sizes, symlink targets, modification and change times
    /// of every entry, from `lstat`; no file data is read) against the one recorded then.
    /// [`Error::Tampered`] when it differs; snapshots from before fingerprints were
    /// recorded pass.
    ///
    /// ```no_run
    /// # fn demo(store: &layer_cache::SnapshotStore, chain: &layer_cache::ChainId) -> layer_cache::Result<()> {
    /// match store.verify(chain) {
    ///     Err(layer_cache::Error::Tampered { path, .. }) => eprintln!("{} was modified", path.display()),
    ///     other => other?,
    /// }
    /// # Ok(()) }
    /// ```
    pub fn verify(&self, chain: &ChainId) -> Result<()> {
        let dir = self.entry_dir(chain);
        let Some(meta) = read_json::<Meta>(&dir.join("meta.json"))? else {
            return Err(Error::NotFound {
                what: format!("snapshot {chain}"),
            });
        };
        let Some(recorded) = meta.fingerprint else {
            return Ok(());
        };
        let fs = dir.join("fs");
        let actual = fingerprint(&fs)?;
        if actual != recorded {
            return Err(Error::Tampered {
                chain: chain.clone(),
                path: fs,
                recorded,
                actual,
            });
        }
        Ok(())
    }

    /// Marks a snapshot as used now.
    pub fn touch(&self, chain: &ChainId) -> Result<()> {
        touch(&self.entry_dir(chain).join("meta.json"))
    }

    /// Every complete snapshot, sorted by chain ID.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for name in list_dir(&self.dir())? {
            let Some(d) = Digest::from_file_stem(&name) else {
                continue;
            };
            if let Some(s) = self.get(&ChainId::base(&d))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The overlayfs lower directories for `chain`, top layer first (the order of
    /// `lowerdir=`). Each is [verified](SnapshotStore::verify) first: a snapshot changed
    /// on disk is [`Error::Tampered`], never a lower.
    pub fn lowerdirs(&self, chain: &ChainId) -> Result<Vec<PathBuf>> {
        self.lowerdirs_verifying(chain, &mut |_| true)
    }

    /// [`SnapshotStore::lowerdirs`], verifying only the snapshots `verify_first` says yes
    /// to (it is asked once per snapshot of the chain): a build verifies each snapshot the
    /// first time it uses it, not at every step, and not those it wrote itself. Verifying
    /// reads the metadata of every file of the snapshot.
    ///
    /// ```no_run
    /// # fn f(store: &layer_cache::SnapshotStore, chain: &layer_cache::ChainId) -> layer_cache::Result<()> {
    /// let mut verified = std::collections::HashSet::new();
    /// let dirs = store.lowerdirs_verifying(chain, &mut |c| verified.insert(c.clone()))?;
    /// // Again: nothing is verified this time.
    /// let again = store.lowerdirs_verifying(chain, &mut |c| verified.insert(c.clone()))?;
    /// assert_eq!(dirs, again);
    /// # Ok(()) }
    /// ```
    pub fn lowerdirs_verifying(
        &self,
        chain: &ChainId,
        verify_first: &mut dyn FnMut(&ChainId) -> bool,
    ) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut next = Some(chain.clone());
        let mut child: Option<ChainId> = None;
        while let Some(c) = next {
            let s = self.get(&c)?.ok_or_else(|| match &child {
                Some(ch) => Error::MissingParent {
                    chain: ch.clone(),
                    parent: c.clone(),
                },
                None => Error::NotFound {
                    what: format!("snapshot {c}"),
                },
            })?;
            if verify_first(&c) {
                self.verify(&c)?;
            }
            out.push(s.path);
            child = Some(c);
            next = s.parent;
        }
        Ok(out)
    }

    /// Returns the snapshot of `diff_id` on top of `parent`, unpacking it from the reader
    /// `open_layer` gives when it is not there yet. Several processes asking for the same
    /// chain at once unpack it once: the others wait on its lock and find it done. The
    /// layer is applied in [`ApplyMode::OverlayLayer`] into a temporary directory, its
    /// diffID verified, synced, then renamed into place. The bool says whether this call
    /// unpacked it.
    pub fn unpack<R: Read + Send>(
        &self,
        parent: Option<&ChainId>,
        diff_id: &Digest,
        open_layer: impl FnOnce() -> Result<R>,
        opts: &ApplyOptions,
    ) -> Result<(Snapshot, bool)> {
        self.unpack_with(parent, diff_id, open_layer, opts, true)
    }

    /// [`SnapshotStore::unpack`]; with `parent_first` false it does not wait for the parent
    /// snapshot to exist, so that the layers of a chain can be unpacked at once (in
    /// overlay-layer form a layer's files do not depend on its parent's). The caller must
    /// then hold a lease on the whole chain, so that no prune sees the child without its
    /// parent, and must make sure the parents are created too.
    pub(crate) fn unpack_with<R: Read + Send>(
        &self,
        parent: Option<&ChainId>,
        diff_id: &Digest,
        open_layer: impl FnOnce() -> Result<R>,
        opts: &ApplyOptions,
        parent_first: bool,
    ) -> Result<(Snapshot, bool)> {
        let chain = ChainId::child(parent, diff_id);
        self.create(&chain, parent, diff_id, parent_first, |fs_dir| {
            let mut o = opts.clone();
            o.mode = ApplyMode::OverlayLayer;
            o.expected_diff_id = Some(diff_id.clone());
            let stats = apply_layer(open_layer()?, fs_dir, &o)?;
            Ok(stats.data_bytes)
        })
    }

    /// Registers `dir` (for example a build step's overlay upper directory, already packed
    /// into the layer `diff_id`) as the snapshot of `diff_id` on top of `parent`, by
    /// renaming it into the store: it must be on the cache's file system and no longer
    /// mounted. When the snapshot already exists, `dir` is removed. The bool says whether
    /// `dir` became the snapshot.
    pub fn import_dir(
        &self,
        parent: Option<&ChainId>,
        diff_id: &Digest,
        dir: &Path,
    ) -> Result<(Snapshot, bool)> {
        let chain = ChainId::child(parent, diff_id);
        let res = self.create(&chain, parent, diff_id, true, |fs_dir| {
            std::fs::remove_dir(fs_dir).map_err(io_at(fs_dir))?;
            std::fs::rename(dir, fs_dir).map_err(io_at(dir))?;
            tree_size(fs_dir)
        });
        if let Ok((_, false)) = res {
            remove_tree(dir)?;
        }
        res
    }

    fn create(
        &self,
        chain: &ChainId,
        parent: Option<&ChainId>,
        diff_id: &Digest,
        parent_first: bool,
        fill: impl FnOnce(&Path) -> Result<u64>,
    ) -> Result<(Snapshot, bool)> {
        if let Some(s) = self.get(chain)? {
            match self.verify(chain) {
                Ok(()) => return Ok((s, false)),
                // changed on disk: made again from the layer
                Err(Error::Tampered { .. }) => {
                    self.remove(chain)?;
                }
                Err(e) => return Err(e),
            }
        }
        if let (Some(p), true) = (parent, parent_first) {
            if self.get(p)?.is_none() {
                return Err(Error::MissingParent {
                    chain: chain.clone(),
                    parent: p.clone(),
                });
            }
        }
        let lock = LockFile::wait(&self.lock_path(chain), true)?;
        if let Some(s) = self.get(chain)? {
            return Ok((s, false));
        }
        let stem = chain.digest().file_stem();
        // Leftovers of a process that died while holding this lock.
        for name in list_dir(&self.dir())? {
            if name.starts_with(&format!(".tmp-{stem}-")) {
                remove_tree(&self.dir().join(name))?;
            }
        }
        let tmp = self.dir().join(format!(".tmp-{stem}-{}", unique_suffix()));
        let fs_dir = tmp.join("fs");
        mkdirs(&fs_dir)?;
        let result = (|| {
            let size = fill(&fs_dir)?;
            let meta = Meta {
                chain_id: chain.clone(),
                parent: parent.cloned(),
                diff_id: diff_id.clone(),
                size,
                created: crate::fsutil::now_unix(),
                fingerprint: Some(fingerprint(&fs_dir)?),
            };
            // Make the files durable before the rename publishes them.
            let d = std::fs::File::open(&tmp).map_err(io_at(&tmp))?;
            rustix::fs::syncfs(&d).map_err(|e| io_at(&tmp)(e.into()))?;
            write_json(&tmp.join("meta.json"), &meta)?;
            let dest = self.entry_dir(chain);
            std::fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
            fsync_dir(&self.dir())
        })();
        if let Err(e) = result {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        drop(lock);
        let s = self.get(chain)?.ok_or_else(|| Error::NotFound {
            what: format!("snapshot {chain}"),
        })?;
        Ok((s, true))
    }

    /// Removes a snapshot unless someone is creating or removing it right now. Returns
    /// whether it was removed.
    pub(crate) fn remove(&self, chain: &ChainId) -> Result<bool> {
        let Some(lock) = LockFile::acquire(&self.lock_path(chain), true, false)? else {
            return Ok(false);
        };
        let dir = self.entry_dir(chain);
        if !dir.exists() {
            lock.remove()?;
            return Ok(false);
        }
        let doomed = self.dir().join(format!(
            ".del-{}-{}",
            chain.digest().file_stem(),
            unique_suffix()
        ));
        std::fs::rename(&dir, &doomed).map_err(io_at(&dir))?;
        lock.remove()?;
        remove_tree(&doomed)?;
        Ok(true)
    }

    /// Removes leftovers of crashed processes: temporary directories whose chain lock is
    /// free and half-deleted snapshots. Returns the bytes freed.
    pub(crate) fn clean_junk(&self) -> Result<u64> {
        let mut freed = 0;
        for name in list_dir(&self.dir())? {
            let path = self.dir().join(&name);
            if name.starts_with(".del-") {
                freed += tree_size(&path)?;
                remove_tree(&path)?;
            } else if let Some(rest) = name.strip_prefix(".tmp-") {
                let stem: String = rest.chars().take("sha256-".len() + 64).collect();
                let Some(d) = Digest::from_file_stem(&stem) else {
                    continue;
                };
                let chain = ChainId::base(&d);
                if let Some(lock) = LockFile::acquire(&self.lock_path(&chain), true, false)? {
                    freed += tree_size(&path)?;
                    remove_tree(&path)?;
                    drop(lock);
                }
            }
        }
        Ok(freed)
    }
}
