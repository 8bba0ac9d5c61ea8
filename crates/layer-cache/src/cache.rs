//! `Cache`: the whole on-disk cache, and the operations that span its stores.

use std::path::{Path, PathBuf};

use crate::apply::{ApplyMode, ApplyOptions, ApplyStats, apply_layer};
use crate::content::ContentStore;
use crate::digest::{ChainId, Digest};
use crate::error::{Error, Result};
use crate::fsutil::mkdirs;
use crate::gc::{Gc, PruneReport, Usage};
use crate::index::CacheIndex;
use crate::lease::{EntryRef, Lease};
use crate::pack::{PackOptions, PackedLayer, SourceKind, pack_dir};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::statcache::StatCache;

/// One layer of an image, as a manifest lists it plus its diffID from the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LayerRef {
    /// The (compressed) blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
}

impl LayerRef {
    /// A layer reference.
    pub fn new(digest: Digest, diff_id: Digest) -> LayerRef {
        LayerRef { digest, diff_id }
    }
}

/// The on-disk cache: one directory shared safely by several processes.
///
/// ```text
/// <root>/blobs/sha256/<hex>        verified blobs
/// <root>/ingest/                   staged downloads and writes (flocked by their writer)
/// <root>/snapshots/<alg>-<hex>/    unpacked layers: fs/ + meta.json
/// <root>/index/<alg>-<hex>.json    cache key → layer record
/// <root>/statcache/<hex>.json      stat caches
/// <root>/leases/, locks/, gc.lock  coordination
/// <root>/other/<name>/             other data (cache mounts)
/// ```
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    index: CacheIndex,
}

impl Cache {
    /// Opens (creating when needed) the cache at `root`. A relative `root` is made absolute
    /// against the current directory: the paths the cache hands out (snapshot directories
    /// used as overlay lower directories, blob files) must not depend on it.
    pub fn open(root: impl AsRef<Path>) -> Result<Cache> {
        let root = std::path::absolute(root.as_ref()).map_err(|e| Error::Io {
            path: root.as_ref().to_owned(),
            source: e,
        })?;
        mkdirs(&root)?;
        for d in ["statcache", "leases", "locks", "other"] {
            mkdirs(&root.join(d))?;
        }
        Ok(Cache {
            content: ContentStore::open(&root)?,
            snapshots: SnapshotStore::open(&root)?,
            index: CacheIndex::open(&root)?,
            root,
        })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// The cache index.
    pub fn index(&self) -> &CacheIndex {
        &self.index
    }

    /// The stat cache named `name` (for example the build context's absolute path).
    pub fn stat_cache(&self, name: &str) -> Result<StatCache> {
        StatCache::open(&self.root, name)
    }

    /// A new lease for a running build.
    pub fn lease(&self) -> Result<Lease> {
        Lease::new(&self.root)
    }

    /// A directory under `other/` (created when missing), counted by [`Cache::du`] as
    /// [`UsageKind::Other`](crate::UsageKind) and pruned only with `all`.
    pub fn other_dir(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
            return Err(Error::InvalidArgument {
                reason: format!("{name:?} is not a plain directory name"),
            });
        }
        let p = self.root.join("other").join(name);
        mkdirs(&p)?;
        Ok(p)
    }

    /// Makes sure every layer of `layers` (bottom first) is unpacked as a snapshot and
    /// returns the top one; [`SnapshotStore::lowerdirs`] then gives the overlay lower
    /// directories. Blobs must be in the content store. Layers already unpacked are reused;
    /// concurrent callers unpack each layer once. With a lease, blobs and snapshots are
    /// held before they are used.
    pub fn unpack_chain(
        &self,
        layers: &[LayerRef],
        opts: &ApplyOptions,
        lease: Option<&Lease>,
    ) -> Result<Snapshot> {
        let mut chains = Vec::with_capacity(layers.len());
        let mut parent: Option<ChainId> = None;
        for l in layers {
            let chain = ChainId::child(parent.as_ref(), &l.diff_id);
            if let Some(lease) = lease {
                lease.hold_all([
                    EntryRef::Blob(l.digest.clone()),
                    EntryRef::Snapshot(chain.clone()),
                ])?;
            }
            parent = Some(chain.clone());
            chains.push(chain);
        }
        // Under a lease, layers missing from the store are unpacked at the same time (one
        // thread each, at most one per core at once): in overlay-layer form a layer's files
        // do not depend on its parent's, and the lease keeps prune from judging a child
        // whose parent is still being unpacked.
        let mut missing = Vec::new();
        for (i, c) in chains.iter().enumerate() {
            if self.snapshots.get(c)?.is_none() {
                missing.push(i);
            }
        }
        if lease.is_some() && missing.len() > 1 {
            let width = std::thread::available_parallelism().map_or(2, |n| n.get());
            for group in missing.chunks(width) {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = group
                        .iter()
                        .map(|&i| {
                            let parent = i.checked_sub(1).map(|p| &chains[p]);
                            let l = &layers[i];
                            scope.spawn(move || {
                                self.snapshots.unpack_with(
                                    parent,
                                    &l.diff_id,
                                    || self.content.open_blob(&l.digest),
                                    opts,
                                    false,
                                )
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(Error::InvalidArgument {
                                    reason: "a layer unpacking thread panicked".into(),
                                })
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
            }
        }
        let mut top = None;
        for (i, l) in layers.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &chains[p]);
            let (s, created) = self.snapshots.unpack(
                parent,
                &l.diff_id,
                || self.content.open_blob(&l.digest),
                opts,
            )?;
            if !created {
                self.snapshots.touch(&chains[i])?;
            }
            top = Some(s);
        }
        top.ok_or_else(|| Error::InvalidArgument {
            reason: "unpack_chain needs at least one layer".into(),
        })
    }

    /// Applies `layers` in order into `dest` ([`ApplyMode::Flatten`]): the image's file
    /// system as one directory (type=local export, the mode without overlayfs). Each
    /// layer's diffID is verified.
    pub fn flatten_chain(
        &self,
        layers: &[LayerRef],
        dest: &Path,
        opts: &ApplyOptions,
    ) -> Result<Vec<ApplyStats>> {
        let mut out = Vec::new();
        for l in layers {
            let mut o = opts.clone();
            o.mode = ApplyMode::Flatten;
            o.expected_diff_id = Some(l.diff_id.clone());
            let f = self.content.open_blob(&l.digest)?;
            out.push(apply_layer(f, dest, &o)?);
        }
        Ok(out)
    }

    /// Packs `dir` into a layer blob in the content store.
    pub fn pack_dir(
        &self,
        dir: &Path,
        opts: &PackOptions,
        lease: Option<&Lease>,
    ) -> Result<PackedLayer> {
        let w = self.content.writer()?;
        let (w, packed) = pack_dir(dir, opts, w)?;
        if let Some(lease) = lease {
            lease.hold(EntryRef::Blob(packed.digest.clone()))?;
        }
        w.commit(&packed.digest)?;
        Ok(packed)
    }

    /// A build step's result: packs the overlay upper directory `upper` (whiteouts and
    /// opaque directories converted) into a blob, then registers `upper` itself as the
    /// snapshot on top of `parent` (renamed into the store, no second unpack). When
    /// `upper` is on another file system, the snapshot is unpacked from the blob instead
    /// (with `apply`) and `upper` is left alone.
    pub fn commit_upperdir(
        &self,
        upper: &Path,
        parent: Option<&ChainId>,
        opts: &PackOptions,
        apply: &ApplyOptions,
        lease: Option<&Lease>,
    ) -> Result<(PackedLayer, Snapshot)> {
        let mut o = opts.clone();
        o.source = SourceKind::OverlayUpper;
        let packed = self.pack_dir(upper, &o, lease)?;
        let chain = ChainId::child(parent, &packed.diff_id);
        if let Some(lease) = lease {
            lease.hold(EntryRef::Snapshot(chain.clone()))?;
        }
        let snap = match self.snapshots.import_dir(parent, &packed.diff_id, upper) {
            Ok((s, _)) => s,
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(18) => {
                // EXDEV: not on the cache's file system.
                self.snapshots
                    .unpack(
                        parent,
                        &packed.diff_id,
                        || self.content.open_blob(&packed.digest),
                        apply,
                    )?
                    .0
            }
            Err(e) => return Err(e),
        };
        Ok((packed, snap))
    }

    /// A build step's result, registered without reading it: the overlay upper directory
    /// `upper` is renamed into the snapshot store as the child of `parent` under `id`, an
    /// identifier the caller makes unique (it stands in for the diffID, which is computed
    /// only when needed, by [`Cache::hash_snapshot`] or [`Cache::pack_snapshot`], as
    /// BuildKit computes diffs only at export). `upper` must be on the cache's file system.
    pub fn commit_upperdir_unhashed(
        &self,
        upper: &Path,
        parent: Option<&ChainId>,
        id: &Digest,
        lease: Option<&Lease>,
    ) -> Result<Snapshot> {
        if let Some(lease) = lease {
            lease.hold(EntryRef::Snapshot(ChainId::child(parent, id)))?;
        }
        Ok(self.snapshots.import_dir(parent, id, upper)?.0)
    }

    /// The diffID and size of the snapshot `chain` as a layer (overlay-layer form: the
    /// result of [`Cache::commit_upperdir_unhashed`] or an unpacked layer), without
    /// storing anything. `opts` gives the timestamp clamp; compression is ignored.
    pub fn hash_snapshot(&self, chain: &ChainId, opts: &PackOptions) -> Result<PackedLayer> {
        let snap = self.existing_snapshot(chain)?;
        crate::pack::layer_digests(&snap.path, &plain_tar(opts))
    }

    /// Packs the snapshot `chain` (see [`Cache::commit_upperdir_unhashed`]; any snapshot
    /// in overlay-layer form) into a blob in the content store. With `expected_diff_id`
    /// the tar stream must hash to it, else nothing is stored and the error is
    /// [`Error::DiffIdMismatch`]: the snapshot changed since it was hashed. `progress`
    /// is told the tar stream's length so far (see [`pack_dir_with_progress`]).
    ///
    /// [`pack_dir_with_progress`]: crate::pack_dir_with_progress
    pub fn pack_snapshot(
        &self,
        chain: &ChainId,
        expected_diff_id: Option<&Digest>,
        opts: &PackOptions,
        lease: Option<&Lease>,
        progress: &dyn Fn(u64),
    ) -> Result<PackedLayer> {
        let snap = self.existing_snapshot(chain)?;
        let mut o = opts.clone();
        o.source = SourceKind::OverlayUpper;
        let w = self.content.writer()?;
        let (w, packed) = crate::pack::pack_dir_with_progress(&snap.path, &o, w, progress)?;
        if let Some(expected) = expected_diff_id {
            if packed.diff_id != *expected {
                return Err(Error::DiffIdMismatch {
                    expected: expected.clone(),
                    actual: packed.diff_id,
                });
            }
        }
        if let Some(lease) = lease {
            lease.hold(EntryRef::Blob(packed.digest.clone()))?;
        }
        w.commit(&packed.digest)?;
        Ok(packed)
    }

    fn existing_snapshot(&self, chain: &ChainId) -> Result<Snapshot> {
        self.snapshots.get(chain)?.ok_or_else(|| Error::NotFound {
            what: format!("snapshot {chain}"),
        })
    }

    /// Disk usage by kind.
    pub fn du(&self) -> Result<Usage> {
        self.gc().du()
    }

    /// Removes cache entries, least recently used first, never one a live [`Lease`] holds
    /// (nor what it implies: a held snapshot's parents, a held record's blobs).
    ///
    /// * `keep_storage: Some(n)`: stop once the cache uses at most `n` bytes.
    /// * `keep_storage: None`: remove every candidate.
    /// * `all == false`: candidates are blobs, snapshots and index records (build cache);
    ///   `all == true` adds stat caches and `other/` directories.
    ///
    /// Always removes leftovers of crashed processes, dead leases, index records whose
    /// blobs are gone and snapshots whose parent is gone.
    pub fn prune(&self, keep_storage: Option<u64>, all: bool) -> Result<PruneReport> {
        self.gc().prune(keep_storage, all)
    }

    fn gc(&self) -> Gc<'_> {
        Gc {
            root: &self.root,
            content: &self.content,
            snapshots: &self.snapshots,
            index: &self.index,
        }
    }
}

/// The writing end of a tar stream handed between threads in chunks.
struct ChunkSender(std::sync::mpsc::SyncSender<Vec<u8>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end: the chunks in order, then end of stream when the sender is gone.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies a layer directory in overlay-layer form (a snapshot's files, an overlay upper)
/// into `dest` as [`Cache::flatten_chain`] applies a blob, without compressing: the
/// directory is packed as a plain tar stream on another thread and applied as it comes.
/// `pack` gives the timestamp clamp the layer was made with.
pub fn flatten_layer_dir(
    dir: &Path,
    dest: &Path,
    opts: &ApplyOptions,
    pack: &PackOptions,
) -> Result<ApplyStats> {
    let p = plain_tar(pack);
    let mut o = opts.clone();
    o.mode = ApplyMode::Flatten;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || pack_dir(dir, &p, ChunkSender(tx)).map(|_| ()));
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let applied = apply_layer(&mut reader, dest, &o);
        if applied.is_ok() {
            // The applier may stop at the end-of-archive marker: take the rest (padding)
            // so that the writer finishes.
            while reader.rx.recv().is_ok() {}
        }
        drop(reader);
        let written = writer.join().unwrap_or_else(|_| {
            Err(Error::InvalidArgument {
                reason: "the snapshot packing thread panicked".into(),
            })
        });
        // The applier's error first: once it stops reading, the writer only sees the
        // stream closed.
        let stats = applied?;
        written?;
        Ok(stats)
    })
}

/// `opts` for an overlay-form directory written as a plain tar stream (hashing, or
/// flattening without compression): one thread, no compressor.
fn plain_tar(opts: &PackOptions) -> PackOptions {
    let mut o = opts.clone();
    o.source = SourceKind::OverlayUpper;
    o.compression = crate::compress::Compression::None;
    o.threads = 1;
    o
}
