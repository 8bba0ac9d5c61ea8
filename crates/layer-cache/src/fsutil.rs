//! Small file-system helpers: flock-based lock files, atomic writes, sizes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result, io_at};

/// An advisory lock (flock) on a lock file, released on drop. The lock is taken on the
/// file that the path names *after* locking, so a lock file that another process removed
/// while holding it is never trusted.
#[derive(Debug)]
pub(crate) struct LockFile {
    /// Holds the flock for as long as the value lives.
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock. With `wait == false`, returns `None` when another holder has it.
    pub(crate) fn acquire(path: &Path, exclusive: bool, wait: bool) -> Result<Option<LockFile>> {
        let op = match (exclusive, wait) {
            (true, true) => FlockOperation::LockExclusive,
            (true, false) => FlockOperation::NonBlockingLockExclusive,
            (false, true) => FlockOperation::LockShared,
            (false, false) => FlockOperation::NonBlockingLockShared,
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_at(path))?;
            loop {
                match flock(&file, op) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                    Err(e) => return Err(io_at(path)(e.into())),
                }
            }
            let held = file.metadata().map_err(io_at(path))?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(LockFile {
                        _file: file,
                        path: path.to_owned(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(path)(e)),
            }
        }
    }

    /// Takes the lock, waiting as long as needed.
    pub(crate) fn wait(path: &Path, exclusive: bool) -> Result<LockFile> {
        Self::acquire(path, exclusive, true)?.ok_or_else(|| {
            io_at(path)(io::Error::new(
                io::ErrorKind::WouldBlock,
                "blocking flock did not lock",
            ))
        })
    }

    /// Removes the lock file while still holding the lock.
    pub(crate) fn remove(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&self.path)(e)),
        }
    }
}

/// Makes a directory's entries durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. Readers see the old or the new contents, never a mix.
///
/// The temp file is flocked while it is written, so that a prune (see
/// [`remove_if_unlocked`]) can tell a crashed writer's leftover from a live one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = loop {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io_at(dir))?;
        flock(tmp.as_file(), FlockOperation::LockExclusive)
            .map_err(|e| io_at(tmp.path())(e.into()))?;
        // A prune may have removed it between creation and locking.
        if tmp.as_file().metadata().map_err(io_at(tmp.path()))?.nlink() > 0 {
            break tmp;
        }
    };
    tmp.write_all(bytes).map_err(io_at(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_at(tmp.path()))?;
    tmp.persist(path).map_err(|e| io_at(path)(e.error))?;
    fsync_dir(dir)
}

/// Reads a JSON record, `None` when the file does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Serialises a record as pretty JSON and writes it atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json_as(path, value, true)
}

/// Like [`write_json`], `pretty` or compact (for large records).
pub(crate) fn write_json_as<T: serde::Serialize>(
    path: &Path,
    value: &T,
    pretty: bool,
) -> Result<()> {
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    let mut bytes = bytes.map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Seconds since the epoch, now.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets a file's modification (and access) time to now: the "last used" mark.
pub(crate) fn touch(path: &Path) -> Result<()> {
    let now = SystemTime::now();
    let f = File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .map_err(io_at(path))?;
    f.set_times(fs::FileTimes::new().set_accessed(now).set_modified(now))
        .map_err(io_at(path))
}

/// The sum of the sizes of the regular files below `path` (symlinks not followed).
pub(crate) fn tree_size(path: &Path) -> Result<u64> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_at(path)(e)),
    };
    if !md.is_dir() {
        return Ok(if md.is_file() { md.len() } else { 0 });
    }
    let mut total = 0;
    for entry in fs::read_dir(path).map_err(io_at(path))? {
        let entry = entry.map_err(io_at(path))?;
        total += tree_size(&entry.path())?;
    }
    Ok(total)
}

/// Removes a file or a whole tree; a missing path is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let res = match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Creates a directory and its parents.
pub(crate) fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(io_at(path))
}

/// A name that is unique on this machine for this process: pid, time and a counter.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Lists the names in a directory (empty when it does not exist).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(dir)(e)),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(io_at(dir))?;
        if let Ok(name) = e.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `path` if no process holds a lock on it (a leftover of a crashed writer).
/// Returns the bytes freed.
pub(crate) fn remove_if_unlocked(path: &Path) -> Result<u64> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_at(path)(e)),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(0),
        Err(e) => return Err(io_at(path)(e.into())),
    }
    let size = file.metadata().map_err(io_at(path))?.len();
    match fs::remove_file(path) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_at(path)(e)),
    }
}
