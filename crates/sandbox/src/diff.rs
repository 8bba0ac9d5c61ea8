//! The walking differ of the chroot mode: compares a root directory after a step with the
//! layers it was copied from and writes the difference as overlayfs would have left it in
//! an upper directory.
//!
//! - a new or changed non-directory is copied (hard links among new files are kept);
//! - a deleted entry becomes a whiteout (character device 0/0);
//! - a directory that replaces something (a file, or a directory that was removed and made
//!   again) is copied whole and marked opaque (`trusted.overlay.opaque=y`, or
//!   `user.overlay.opaque=y` where trusted xattrs are not allowed);
//! - a directory whose metadata changed, or with any change below it, is written with its
//!   metadata (overlayfs copies such directories up).
//!
//! "Changed" uses the copy's baseline when there is one (inode and ctime: exact and cheap),
//! otherwise type, mode, owner, size, mtime, xattrs and link target, and the content when
//! the mtime has no sub-second part (containerd's rule).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode};

use super::copy::{Baseline, InodeKey, apply_metadata, copy_leaf, xattrs};
use super::error::{IoContext, SandboxError};
use crate::fsview::{LayeredView, Node};

/// Writes the difference between `root` and `lowers` into the empty directory `out`.
/// Paths in `excluded` (relative, canonical) and everything below them are ignored on both
/// sides: they were mounts during the step.
pub(crate) fn diff(
    lowers: &LayeredView,
    root: &Path,
    out: &Path,
    baseline: Option<&Baseline>,
    excluded: &BTreeSet<PathBuf>,
) -> Result<(), SandboxError> {
    let mut d = Differ {
        lowers,
        root,
        out,
        baseline,
        excluded,
        links: HashMap::new(),
        dirs: BTreeSet::new(),
    };
    let root_layers = lowers.root();
    d.walk(
        Path::new(""),
        (!root_layers.is_empty()).then_some(&root_layers[..]),
    )?;
    // Directory metadata last (writing children moves mtimes), deepest first.
    let mut dirs: Vec<&PathBuf> = d.dirs.iter().collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in dirs {
        let src = root.join(rel);
        let meta = fs::symlink_metadata(&src).at("stat", &src)?;
        apply_metadata(&src, &meta, &out.join(rel))?;
    }
    Ok(())
}

struct Differ<'a> {
    lowers: &'a LayeredView,
    root: &'a Path,
    out: &'a Path,
    baseline: Option<&'a Baseline>,
    excluded: &'a BTreeSet<PathBuf>,
    links: HashMap<InodeKey, PathBuf>,
    /// Directories created in `out` (relative).
    dirs: BTreeSet<PathBuf>,
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, SandboxError> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .at("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .at("read directory", dir)?;
    v.sort();
    Ok(v)
}

impl Differ<'_> {
    /// Compares the directory `rel`; `lower` is its layers when the lowers have it.
    fn walk(&mut self, rel: &Path, lower: Option<&[usize]>) -> Result<bool, SandboxError> {
        let cur = names(&self.root.join(rel))?;
        let lower_entries = match lower {
            Some(l) => self.lowers.list(l, rel)?,
            None => Default::default(),
        };
        let mut changed = false;
        for name in &cur {
            let child = rel.join(name);
            if self.excluded.contains(&child) {
                continue;
            }
            let path = self.root.join(&child);
            let meta = fs::symlink_metadata(&path).at("stat", &path)?;
            match lower_entries.get(name) {
                None => self.emit(&child, &meta, false)?,
                Some(Node::Other { layer, meta: lmeta }) => {
                    if meta.is_dir() {
                        self.emit(&child, &meta, true)?;
                    } else if !self.same_leaf(
                        &child,
                        &meta,
                        &self.lowers.host(*layer, &child),
                        lmeta,
                    )? {
                        self.emit(&child, &meta, false)?;
                    } else {
                        continue;
                    }
                }
                Some(Node::Dir(layers)) => {
                    if !meta.is_dir() {
                        self.emit(&child, &meta, false)?;
                    } else if self.baseline.is_some_and(|b| !b.same_dir(&child, &meta)) {
                        self.emit(&child, &meta, true)?;
                    } else {
                        let below = self.walk(&child, Some(layers))?;
                        let lmeta = self.lowers.dir_meta(layers, &child)?;
                        let lpath = self.lowers.host(layers[0], &child);
                        if !below && !dir_differs(&path, &meta, &lpath, &lmeta)? {
                            continue;
                        }
                        self.ensure_dir(&child)?;
                    }
                }
            }
            changed = true;
        }
        for name in lower_entries.keys() {
            let child = rel.join(name);
            if cur.contains(name) || self.excluded.contains(&child) {
                continue;
            }
            self.ensure_parent(&child)?;
            let p = self.out.join(&child);
            rustix::fs::mknodat(CWD, &p, FileType::CharacterDevice, Mode::empty(), 0)
                .at("create whiteout", &p)?;
            changed = true;
        }
        Ok(changed)
    }

    fn ensure_dir(&mut self, rel: &Path) -> Result<(), SandboxError> {
        if rel.as_os_str().is_empty() || self.dirs.contains(rel) {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let p = self.out.join(rel);
        fs::create_dir(&p).at("mkdir", &p)?;
        self.dirs.insert(rel.to_path_buf());
        Ok(())
    }

    fn ensure_parent(&mut self, rel: &Path) -> Result<(), SandboxError> {
        match rel.parent() {
            Some(p) => self.ensure_dir(p),
            None => Ok(()),
        }
    }

    /// Writes `rel` (a whole tree for a directory) into `out`.
    fn emit(&mut self, rel: &Path, meta: &Metadata, opaque: bool) -> Result<(), SandboxError> {
        self.ensure_parent(rel)?;
        let src = self.root.join(rel);
        if !meta.is_dir() {
            return copy_leaf(&src, meta, &self.out.join(rel), &mut self.links);
        }
        self.ensure_dir(rel)?;
        if opaque {
            let p = self.out.join(rel);
            match rustix::fs::lsetxattr(
                &p,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) => {
                    rustix::fs::lsetxattr(
                        &p,
                        "user.overlay.opaque",
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )
                    .at("mark directory opaque", &p)?;
                }
                Err(e) => return Err(SandboxError::io("mark directory opaque", p, e.into())),
            }
        }
        for name in names(&src)? {
            let child = rel.join(name);
            if self.excluded.contains(&child) {
                continue;
            }
            let p = self.root.join(&child);
            let m = fs::symlink_metadata(&p).at("stat", &p)?;
            self.emit(&child, &m, false)?;
        }
        Ok(())
    }

    fn same_leaf(
        &self,
        rel: &Path,
        meta: &Metadata,
        lpath: &Path,
        lmeta: &Metadata,
    ) -> Result<bool, SandboxError> {
        if let Some(b) = self.baseline {
            return Ok(b.unchanged(rel, meta));
        }
        let path = self.root.join(rel);
        if meta.mode() != lmeta.mode()
            || meta.uid() != lmeta.uid()
            || meta.gid() != lmeta.gid()
            || meta.size() != lmeta.size()
            || meta.rdev() != lmeta.rdev()
            || (meta.mtime(), meta.mtime_nsec()) != (lmeta.mtime(), lmeta.mtime_nsec())
            || xattrs(&path)? != xattrs(lpath)?
        {
            return Ok(false);
        }
        if meta.file_type().is_symlink() {
            return Ok(fs::read_link(&path).at("readlink", &path)?
                == fs::read_link(lpath).at("readlink", lpath)?);
        }
        if meta.is_file() && meta.mtime_nsec() == 0 {
            return same_content(&path, lpath);
        }
        Ok(true)
    }
}

fn dir_differs(
    path: &Path,
    meta: &Metadata,
    lpath: &Path,
    lmeta: &Metadata,
) -> Result<bool, SandboxError> {
    Ok(meta.mode() != lmeta.mode()
        || meta.uid() != lmeta.uid()
        || meta.gid() != lmeta.gid()
        || (meta.mtime(), meta.mtime_nsec()) != (lmeta.mtime(), lmeta.mtime_nsec())
        || xattrs(path)? != xattrs(lpath)?)
}

fn same_content(a: &Path, b: &Path) -> Result<bool, SandboxError> {
    let mut fa = fs::File::open(a).at("open", a)?;
    let mut fb = fs::File::open(b).at("open", b)?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).at("read", a)?;
        let nb = read_full(&mut fb, &mut bb).at("read", b)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Rewrites the opaque directories of the overlay-format diff `upper` (over `lowers`) as
/// explicit whiteouts, the form BuildKit's layers have: containerd's differ compares the
/// merged trees, so a directory that was removed and made again lists a `.wh.NAME` for each
/// entry of the lower directory it no longer has, never `.wh..wh..opq`. Below such a
/// directory the same holds for every directory the lowers also have. The diff keeps its
/// meaning as an overlay upper directory (the whiteouts hide what the opaque mark hid).
pub(crate) fn expand_opaque_dirs(lowers: &LayeredView, upper: &Path) -> Result<(), SandboxError> {
    let root = lowers.root();
    expand_in(
        lowers,
        upper,
        Path::new(""),
        (!root.is_empty()).then_some(&root[..]),
        false,
    )
}

fn expand_in(
    lowers: &LayeredView,
    upper: &Path,
    rel: &Path,
    lower: Option<&[usize]>,
    hidden: bool,
) -> Result<(), SandboxError> {
    for name in names(&upper.join(rel))? {
        let child = rel.join(&name);
        let path = upper.join(&child);
        let meta = fs::symlink_metadata(&path).at("stat", &path)?;
        if !meta.is_dir() {
            continue;
        }
        let opaque = crate::fsview::is_opaque(&path);
        if opaque {
            for x in crate::fsview::OPAQUE_XATTRS {
                match rustix::fs::lremovexattr(&path, x) {
                    Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                    Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM)
                        if x.starts_with("trusted.") => {}
                    Err(e) => {
                        return Err(SandboxError::io("remove the opaque mark", path, e.into()));
                    }
                }
            }
        }
        let lower_dir = match lower {
            Some(l) => match lowers.child(l, rel, &name)? {
                Some(Node::Dir(layers)) => Some(layers),
                _ => None,
            },
            None => None,
        };
        let hide = hidden || opaque;
        if let (true, Some(layers)) = (hide, &lower_dir) {
            for gone in lowers.list(layers, &child)?.keys() {
                let p = path.join(gone);
                if fs::symlink_metadata(&p).is_err() {
                    rustix::fs::mknodat(CWD, &p, FileType::CharacterDevice, Mode::empty(), 0)
                        .at("create whiteout", &p)?;
                }
            }
        }
        expand_in(lowers, upper, &child, lower_dir.as_deref(), hide)?;
    }
    Ok(())
}

/// Removes from `out`, the upper directory a COPY or ADD wrote over `lowers`, every entry
/// the lowers already hold unchanged, as BuildKit's overlayfs differ leaves them out of the
/// layer: a non-directory of the same type, mode, owner, device number, `security.capability`,
/// size and mtime (by the second; when neither has a sub-second part, also the same content
/// or link target, else the same nanoseconds); a directory of the same mode, owner and
/// `security.capability` that nothing below it kept. A COPY rewriting what is there
/// makes an empty layer, as in BuildKit.
pub fn prune_unchanged(lowers: &LayeredView, out: &Path) -> Result<(), SandboxError> {
    let root = lowers.root();
    if root.is_empty() {
        return Ok(());
    }
    prune_in(lowers, out, Path::new(""), &root)?;
    Ok(())
}

/// Prunes the directory `rel` of `out` made of the lower `layers`; whether it is now empty.
fn prune_in(
    lowers: &LayeredView,
    out: &Path,
    rel: &Path,
    layers: &[usize],
) -> Result<bool, SandboxError> {
    let mut empty = true;
    for name in names(&out.join(rel))? {
        let child = rel.join(&name);
        let path = out.join(&child);
        let meta = fs::symlink_metadata(&path).at("stat", &path)?;
        let same = match lowers.child(layers, rel, &name)? {
            Some(Node::Dir(below)) if meta.is_dir() && !crate::fsview::is_opaque(&path) => {
                let lpath = lowers.host(below[0], &child);
                let lmeta = lowers.dir_meta(&below, &child)?;
                prune_in(lowers, out, &child, &below)?
                    && same_stat(&meta, &lmeta)
                    && capability(&path)? == capability(&lpath)?
            }
            Some(Node::Other { layer, meta: lmeta })
                if !meta.is_dir() && !crate::fsview::is_whiteout(&meta) =>
            {
                same_overlay_leaf(&path, &meta, &lowers.host(layer, &child), &lmeta)?
            }
            _ => false,
        };
        if !same {
            empty = false;
        } else if meta.is_dir() {
            fs::remove_dir(&path).at("remove unchanged directory", &path)?;
        } else {
            fs::remove_file(&path).at("remove unchanged file", &path)?;
        }
    }
    Ok(empty)
}

fn same_stat(a: &Metadata, b: &Metadata) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid() && a.rdev() == b.rdev()
}

/// BuildKit's `sameDirent` for non-directories.
fn same_overlay_leaf(
    path: &Path,
    meta: &Metadata,
    lpath: &Path,
    lmeta: &Metadata,
) -> Result<bool, SandboxError> {
    if !same_stat(meta, lmeta)
        || capability(path)? != capability(lpath)?
        || meta.size() != lmeta.size()
        || meta.mtime() != lmeta.mtime()
    {
        return Ok(false);
    }
    if meta.mtime_nsec() != 0 || lmeta.mtime_nsec() != 0 {
        return Ok(meta.mtime_nsec() == lmeta.mtime_nsec());
    }
    if meta.file_type().is_symlink() {
        return Ok(fs::read_link(path).at("readlink", path)?
            == fs::read_link(lpath).at("readlink", lpath)?);
    }
    if meta.is_file() && meta.size() > 0 {
        return same_content(path, lpath);
    }
    Ok(true)
}

/// The `security.capability` xattr of `path` (empty when it has none).
fn capability(path: &Path) -> Result<Vec<u8>, SandboxError> {
    Ok(xattrs(path)?
        .into_iter()
        .find(|(k, _)| k == "security.capability")
        .map(|(_, v)| v)
        .unwrap_or_default())
}
