//! A snapshot's fingerprint: what is recorded when a snapshot is committed and checked
//! before it is used, so that a snapshot changed on disk afterwards is noticed.
//!
//! It is the sha256 of one record per entry of the tree, in sorted order: the relative
//! path, the file type, mode, owner, size, device number, symlink target, and the
//! modification and **change** times in nanoseconds, from `lstat` (never following a
//! symlink). The change time (ctime) is set by the kernel on every write, chmod, chown,
//! xattr change, link or rename of an inode and cannot be set from userspace, so even an
//! edit that puts the size and mtime back changes the fingerprint. File contents are not
//! read: the cost is one `lstat` and, for symlinks, one `readlink` per entry (about a
//! millisecond per thousand files on a warm cache), not a read of the data.

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Result, io_at};

/// The fingerprint of the tree at `root` (`sha256:<hex>`).
pub(crate) fn fingerprint(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io_at(&dir))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let m = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
            h.update(rel.as_os_str().as_bytes());
            h.update([0]);
            for v in [
                u64::from(m.mode()),
                u64::from(m.uid()),
                u64::from(m.gid()),
                m.size(),
                m.rdev(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ] {
                h.update(v.to_le_bytes());
            }
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&path).map_err(io_at(&path))?;
                h.update(t.as_os_str().as_bytes());
                h.update([0]);
            } else if m.is_dir() {
                subdirs.push(rel);
            }
        }
        // depth first in name order (reversed for the stack)
        stack.extend(subdirs.into_iter().rev());
    }
    // the root directory's own metadata, but not its times: renaming the snapshot into
    // place changes them
    let m = std::fs::symlink_metadata(root).map_err(io_at(root))?;
    for v in [u64::from(m.mode()), u64::from(m.uid()), u64::from(m.gid())] {
        h.update(v.to_le_bytes());
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
