//! The content store: blobs by digest. A blob becomes visible (is renamed into
//! `blobs/<alg>/<hex>`) only after its bytes were fsynced and hashed to its digest.
//!
//! Each stored blob has a stamp (`blobs/stamps/<hex>`): its inode, size and change time
//! (ctime, in ns) when its bytes were last hashed to its name. [`ContentStore::check`] (and
//! so [`ContentStore::contains`]) compares the blob file's `lstat` with the stamp and hashes
//! the whole blob again only when they differ: any write, truncation, chmod, rename or link
//! of the file moves its ctime, which userspace cannot set back, so a blob changed after it
//! was stored is always re-hashed, and removed when it no longer matches its name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::{Digest, Sha256Hasher};
use crate::error::{Error, Result, io_at};
use crate::fsutil::{LockFile, fsync_dir, list_dir, mkdirs, touch, write_atomic};

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last used (the blob file's mtime, see [`ContentStore::touch`]).
    pub last_used: SystemTime,
}

/// The result of [`ContentStore::ingest`].
#[derive(Debug)]
pub enum Ingest {
    /// The blob is already in the store.
    Present(BlobInfo),
    /// Write the blob here (from [`BlobWriter::offset`] on, when resuming).
    Writer(BlobWriter),
}

/// Blobs by digest, under `<cache>/blobs`, staged under `<cache>/ingest`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// The store inside the cache directory `root` (created when missing).
    pub fn open(root: &Path) -> Result<ContentStore> {
        let s = ContentStore {
            root: root.to_owned(),
        };
        mkdirs(&s.root.join("blobs/sha256"))?;
        mkdirs(&s.root.join("blobs/stamps"))?;
        mkdirs(&s.ingest_dir())?;
        Ok(s)
    }

    /// Where the stamp of `digest` is kept (see the module documentation).
    fn stamp_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/stamps").join(format!(
            "{}-{}",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    /// Records the blob file's current identity as verified.
    fn record_stamp(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        let md = fs::symlink_metadata(&path).map_err(io_at(&path))?;
        write_atomic(&self.stamp_path(digest), stamp_of(&md).as_bytes())
    }

    /// The blob's information when it is in the store and its bytes still hash to its
    /// name; `None` when it is not there; [`Error::BlobTampered`] (after removing it, so
    /// that it is fetched or made again) when it changed on disk since it was stored.
    ///
    /// Cost: one `lstat` of the blob and a read of its 40-byte stamp, and a full re-hash
    /// (about 1 GB/s) only when the file's inode, size or ctime moved since the stamp: after
    /// a change, or once for a blob stored before stamps existed.
    ///
    /// ```no_run
    /// # fn main() -> layer_cache::Result<()> {
    /// let store = layer_cache::ContentStore::open(std::path::Path::new("/var/cache/rbuild"))?;
    /// let digest: layer_cache::Digest =
    ///     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse()?;
    /// match store.check(&digest) {
    ///     Ok(Some(info)) => println!("{} bytes, intact", info.size),
    ///     Ok(None) => println!("not stored"),
    ///     Err(layer_cache::Error::BlobTampered { path, .. }) => {
    ///         println!("{} was modified and has been removed", path.display())
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn check(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let path = self.path(digest);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let info = BlobInfo {
            digest: digest.clone(),
            size: md.len(),
            last_used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let stamp = fs::read_to_string(self.stamp_path(digest)).unwrap_or_default();
        if md.is_file() && stamp == stamp_of(&md) {
            return Ok(Some(info));
        }
        match self.rehash(digest) {
            Ok(()) => {
                self.record_stamp(digest)?;
                Ok(Some(info))
            }
            Err(Error::DigestMismatch { actual, .. }) => {
                self.remove(digest)?;
                Err(Error::BlobTampered {
                    digest: digest.clone(),
                    path,
                    actual,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a blob and its stamp (a prune, or a blob found changed).
    pub(crate) fn remove(&self, digest: &Digest) -> Result<()> {
        for p in [self.path(digest), self.stamp_path(digest)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&p)(e)),
            }
        }
        Ok(())
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The blob's information, `None` when it is not in the store.
    pub fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(md) => Ok(Some(BlobInfo {
                digest: digest.clone(),
                size: md.len(),
                last_used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Whether the blob is in the store, intact ([`ContentStore::check`]): a blob changed
    /// on disk since it was stored is removed and reported missing, so callers fetch or
    /// make it again rather than use it.
    pub fn contains(&self, digest: &Digest) -> bool {
        matches!(self.check(digest), Ok(Some(_)))
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {digest}"),
                }
            } else {
                io_at(&path)(e)
            }
        })
    }

    /// Marks a blob as used now (for least-recently-used pruning). Setting its times moves
    /// its ctime, so an intact blob is stamped again.
    pub fn touch(&self, digest: &Digest) -> Result<()> {
        let intact = self.check(digest)?.is_some();
        touch(&self.path(digest))?;
        if intact {
            self.record_stamp(digest)?;
        }
        Ok(())
    }

    /// Re-hashes a stored blob; an error when it does not match its name.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        self.rehash(digest)
    }

    fn rehash(&self, digest: &Digest) -> Result<()> {
        let mut f = self.open_blob(digest)?;
        let mut h = Sha256Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io_at(&self.path(digest)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = h.finish();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Every committed blob, sorted by digest.
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for name in list_dir(&self.root.join("blobs/sha256"))? {
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if let Some(info) = self.info(&digest)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Stores `bytes` (a manifest, a config) and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_at(&w.path))?;
        w.finish()
    }

    /// A writer for a blob whose digest is known only at the end (a layer being packed).
    /// Commit it with [`BlobWriter::finish`] or [`BlobWriter::commit`]; dropping it
    /// removes the staged file.
    pub fn writer(&self) -> Result<BlobWriter> {
        let dir = self.ingest_dir();
        loop {
            let tmp = tempfile::Builder::new()
                .prefix("tmp-")
                .tempfile_in(&dir)
                .map_err(io_at(&dir))?;
            let (file, path) = tmp.keep().map_err(|e| io_at(&dir)(e.error))?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| io_at(&path)(e.into()))?;
            // A concurrent prune may have removed the file before we locked it.
            if file.metadata().map_err(io_at(&path))?.nlink() == 0 {
                continue;
            }
            return Ok(BlobWriter {
                file,
                path,
                hasher: Sha256Hasher::default(),
                written: 0,
                expected: None,
                expected_size: None,
                lock: None,
                store: self.clone(),
                keep_partial: false,
            });
        }
    }

    /// Starts (or resumes) fetching the blob `expected`.
    ///
    /// Returns [`Ingest::Present`] when the blob is already stored. Otherwise takes the
    /// blob's ingest lock (waiting while another process or thread fetches the same blob,
    /// which often ends in `Present`) and returns a writer positioned after the bytes a
    /// previous, interrupted fetch left: ask the registry for the rest from
    /// [`BlobWriter::offset`] (or call [`BlobWriter::restart`]). Nothing is trusted before
    /// [`BlobWriter::commit`] has verified the whole blob.
    ///
    /// This blocks (on a file lock) while another writer for the same digest lives, in
    /// this process too: drop or commit a writer before ingesting the same blob again.
    pub fn ingest(&self, expected: &Digest, expected_size: Option<u64>) -> Result<Ingest> {
        if let Some(info) = self.info(expected)? {
            return Ok(Ingest::Present(info));
        }
        let dir = self.ingest_dir();
        let stem = expected.file_stem();
        let lock = LockFile::wait(&dir.join(format!("{stem}.lock")), true)?;
        if let Some(info) = self.info(expected)? {
            return Ok(Ingest::Present(info));
        }
        let path = dir.join(format!("{stem}.partial"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut hasher = Sha256Hasher::default();
        let mut written = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_at(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        let mut w = BlobWriter {
            file,
            path,
            hasher,
            written,
            expected: Some(expected.clone()),
            expected_size,
            lock: Some(lock),
            store: self.clone(),
            keep_partial: true,
        };
        if expected_size.is_some_and(|s| written > s) {
            w.restart()?;
        }
        Ok(Ingest::Writer(w))
    }

    fn commit_file(&self, file: &File, staged: &Path, digest: &Digest) -> Result<BlobInfo> {
        file.sync_all().map_err(io_at(staged))?;
        let dest = self.path(digest);
        if dest.exists() {
            fs::remove_file(staged).map_err(io_at(staged))?;
        } else {
            fs::rename(staged, &dest).map_err(io_at(&dest))?;
            fsync_dir(dest.parent().unwrap_or(&self.root))?;
            // The bytes were just hashed to `digest` (the rename set the ctime recorded).
            self.record_stamp(digest)?;
        }
        self.info(digest)?.ok_or_else(|| Error::NotFound {
            what: format!("blob {digest}"),
        })
    }
}

/// A blob file's identity as a stamp records it: inode, size, ctime in ns.
fn stamp_of(md: &fs::Metadata) -> String {
    format!(
        "{} {} {}.{:09}\n",
        md.ino(),
        md.size(),
        md.ctime(),
        md.ctime_nsec()
    )
}

/// Streams a blob into the store: hashes as it writes, commits atomically after
/// verification. Implements [`Write`].
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Sha256Hasher,
    written: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    lock: Option<LockFile>,
    store: ContentStore,
    /// Keyed ingest: an uncommitted partial stays for resuming.
    keep_partial: bool,
}

impl BlobWriter {
    /// Bytes staged so far; a resumed fetch continues from here (HTTP `Range: bytes=N-`).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Discards the staged bytes (when the server cannot resume).
    pub fn restart(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(io_at(&self.path))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_at(&self.path))?;
        self.hasher = Sha256Hasher::default();
        self.written = 0;
        Ok(())
    }

    fn discard(&mut self) {
        let _ = fs::remove_file(&self.path);
        self.keep_partial = false;
    }

    /// Verifies that the staged bytes hash to `expected` (and match the expected size
    /// given to [`ContentStore::ingest`]), fsyncs them and renames them into the store.
    /// On a mismatch the staged bytes are deleted and nothing is stored.
    pub fn commit(mut self, expected: &Digest) -> Result<BlobInfo> {
        if let Some(e) = &self.expected {
            if e != expected {
                return Err(Error::InvalidArgument {
                    reason: format!("commit({expected}) on a writer ingesting {e}"),
                });
            }
        }
        self.file.flush().map_err(io_at(&self.path))?;
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != *expected {
            self.discard();
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if let Some(size) = self.expected_size {
            if size != self.written {
                self.discard();
                return Err(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: self.written,
                });
            }
        }
        let info = self.store.commit_file(&self.file, &self.path, expected)?;
        self.keep_partial = false;
        if let Some(lock) = self.lock.take() {
            // Still held: removing it cannot strand another waiter (see LockFile).
            lock.remove()?;
        }
        self.path = PathBuf::new();
        Ok(info)
    }

    /// Commits under the digest of what was written (for content produced locally).
    pub fn finish(self) -> Result<BlobInfo> {
        let digest = self
            .expected
            .clone()
            .unwrap_or_else(|| self.hasher.clone().finish());
        self.commit(&digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(size) = self.expected_size {
            if self.written + buf.len() as u64 > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob is larger than the expected {size} bytes"),
                ));
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.keep_partial && !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}
