//! Copying files with all their metadata: the chroot mode's snapshotter (a merged copy of
//! the layers) and the differ's writer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use super::error::{IoContext, SandboxError};
use crate::fsview::{LayeredView, Node};

/// Xattrs that belong to overlayfs's own bookkeeping and are never copied.
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// The xattrs of `path` (not following symlinks), without overlay's own.
pub(crate) fn xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, SandboxError> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(SandboxError::io("list xattrs", path, e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if is_overlay_xattr(name) {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(SandboxError::io("read xattr", path, e.into())),
            }
        };
        if len != usize::MAX {
            value.truncate(len);
            out.push((name.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn set_xattrs(path: &Path, attrs: &[(OsString, Vec<u8>)]) -> Result<(), SandboxError> {
    for (name, value) in attrs {
        match rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // trusted.* needs CAP_SYS_ADMIN, which the unprivileged fallback may lack.
            Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP)
                if name.as_bytes().starts_with(b"trusted.") => {}
            Err(e) => return Err(SandboxError::io("set xattr", path, e.into())),
        }
    }
    Ok(())
}

/// The access and modification times of `meta`, for `utimensat`.
pub(crate) fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    }
}

/// Gives `dst` the owner, mode, xattrs and times of `src` (whose metadata is `meta`).
pub(crate) fn apply_metadata(src: &Path, meta: &Metadata, dst: &Path) -> Result<(), SandboxError> {
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .at("chown", dst)?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("chmod", dst)?;
    }
    set_xattrs(dst, &xattrs(src)?)?;
    rustix::fs::utimensat(CWD, dst, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)
        .at("set times", dst)?;
    Ok(())
}

/// Identity of an inode.
pub(crate) type InodeKey = (u64, u64);

/// Copies one non-directory entry. Hard links among copied files are kept: `links` maps a
/// source inode to the first destination written for it.
pub(crate) fn copy_leaf(
    src: &Path,
    meta: &Metadata,
    dst: &Path,
    links: &mut HashMap<InodeKey, PathBuf>,
) -> Result<(), SandboxError> {
    let key = (meta.dev(), meta.ino());
    if meta.nlink() > 1 && !meta.is_dir() {
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, dst).at("hard link", dst);
        }
    }
    let ft = meta.file_type();
    if ft.is_file() {
        let mut from = File::open(src).at("open", src)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .at("create", dst)?;
        io::copy(&mut from, &mut to).at("copy", dst)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).at("readlink", src)?;
        std::os::unix::fs::symlink(&target, dst).at("symlink", dst)?;
    } else {
        let kind = FileType::from_raw_mode(meta.mode());
        rustix::fs::mknodat(
            CWD,
            dst,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .at("mknod", dst)?;
    }
    apply_metadata(src, meta, dst)?;
    if meta.nlink() > 1 {
        links.insert(key, dst.to_path_buf());
    }
    Ok(())
}

/// Where each inode of a fresh copy came from, with its birth time (inode numbers are
/// reused at once by some filesystems) and its ctime right after the copy: any later
/// change to the inode (content, mode, owner, xattrs, times, links) moves its ctime.
#[derive(Debug, Default)]
pub(crate) struct Baseline {
    inodes: HashMap<InodeKey, Recorded>,
}

#[derive(Debug)]
struct Recorded {
    ctime: (i64, i64),
    born: Option<std::time::SystemTime>,
    paths: Vec<PathBuf>,
}

impl Baseline {
    fn same_inode(&self, rel: &Path, meta: &Metadata) -> Option<&Recorded> {
        self.inodes
            .get(&(meta.dev(), meta.ino()))
            .filter(|r| r.born == meta.created().ok() && r.paths.iter().any(|p| p == rel))
    }

    /// Whether `rel` is still the untouched copy of the lower entry at the same path.
    pub(crate) fn unchanged(&self, rel: &Path, meta: &Metadata) -> bool {
        self.same_inode(rel, meta)
            .is_some_and(|r| r.ctime == (meta.ctime(), meta.ctime_nsec()))
    }

    /// Whether the directory at `rel` is the copy made for it (not removed and recreated).
    pub(crate) fn same_dir(&self, rel: &Path, meta: &Metadata) -> bool {
        self.same_inode(rel, meta).is_some()
    }

    fn record(&mut self, root: &Path, rel: &Path) -> Result<(), SandboxError> {
        let p = root.join(rel);
        let meta = fs::symlink_metadata(&p).at("stat", &p)?;
        let entry = self
            .inodes
            .entry((meta.dev(), meta.ino()))
            .or_insert(Recorded {
                ctime: (0, 0),
                born: meta.created().ok(),
                paths: Vec::new(),
            });
        entry.ctime = (meta.ctime(), meta.ctime_nsec());
        entry.paths.push(rel.to_path_buf());
        if meta.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .at("read directory", &p)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .at("read directory", &p)?;
            names.sort();
            for n in names {
                self.record(root, &rel.join(n))?;
            }
        }
        Ok(())
    }
}

/// Copies the merged view of `layers` into the empty directory `dest` and returns the
/// baseline of the copy.
pub(crate) fn materialize(layers: &LayeredView, dest: &Path) -> Result<Baseline, SandboxError> {
    let mut links = HashMap::new();
    if !layers.root().is_empty() {
        copy_dir(layers, &layers.root(), Path::new(""), dest, &mut links)?;
        let meta = layers.dir_meta(&layers.root(), Path::new(""))?;
        apply_metadata(&layers.host(0, Path::new("")), &meta, dest)?;
    }
    let mut baseline = Baseline::default();
    baseline.record(dest, Path::new(""))?;
    Ok(baseline)
}

fn copy_dir(
    layers: &LayeredView,
    dir_layers: &[usize],
    rel: &Path,
    dest: &Path,
    links: &mut HashMap<InodeKey, PathBuf>,
) -> Result<(), SandboxError> {
    for (name, node) in layers.list(dir_layers, rel)? {
        let child = rel.join(&name);
        let to = dest.join(&child);
        match node {
            Node::Dir(sub) => {
                fs::create_dir(&to).at("mkdir", &to)?;
                copy_dir(layers, &sub, &child, dest, links)?;
                let meta = layers.dir_meta(&sub, &child)?;
                apply_metadata(&layers.host(sub[0], &child), &meta, &to)?;
            }
            Node::Other { layer, meta } => {
                copy_leaf(&layers.host(layer, &child), &meta, &to, links)?
            }
        }
    }
    Ok(())
}
