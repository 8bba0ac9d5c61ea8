//! Writing a COPY/ADD diff in overlay format: fsutil's copy semantics (what goes where,
//! which metadata wins) carried out in an empty upper directory, with the parent image's
//! directories copied up as overlayfs would.
//!
//! Paths are always resolved logically (through the merged view of `out` over the parent
//! layers) before anything is created, and `out` is only ever walked with `lstat`: no
//! symlink, from the image or from a source, is followed on the host.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timestamps};

use super::archive::{self, Sniffed};
use super::error::CopyError;
use super::params::CopyParams;
use super::tree::{self, Entry, Tree};
use super::{CopySource, CopyStats, Item, copy_filter};
use crate::fsview::LayeredView;

/// Owner, mode and mtime to give an entry.
#[derive(Debug, Clone, Copy)]
struct Attrs {
    uid: u32,
    gid: u32,
    /// Permission bits (07777).
    mode: u32,
    /// Seconds and nanoseconds since the epoch.
    mtime: (i64, i64),
}

/// An entry of the merged destination (`out` over the parent layers).
#[derive(Debug)]
struct Existing {
    meta: Metadata,
    /// Whether it is in `out` already (else only in the parent).
    in_out: bool,
}

pub(super) struct Writer<'a> {
    params: &'a CopyParams,
    source: &'a CopySource<'a>,
    lower: Option<&'a LayeredView>,
    /// `out` over the parent layers: where the destination is resolved.
    merged: LayeredView,
    out: PathBuf,
    owner: Option<(u32, u32)>,
    /// Directories whose mtime is set once everything is written (writing into a
    /// directory changes its mtime).
    dir_times: BTreeMap<PathBuf, (i64, i64)>,
    /// Paths known not to exist in the parent layers (created by this step).
    fresh: HashSet<Vec<OsString>>,
    /// Source inodes already written, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

fn mtime_of(m: &Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

fn ts(t: (i64, i64)) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    }
}

fn set_times(path: &Path, t: (i64, i64)) -> Result<(), CopyError> {
    let times = Timestamps {
        last_access: ts(t),
        last_modification: ts(t),
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| CopyError::io("set times on", path)(e.into()))
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(CopyError::io("chown", path))
}

fn chmod(path: &Path, mode: u32) -> Result<(), CopyError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(CopyError::io("chmod", path))
}

/// Copies extended attributes (BuildKit ignores failures here too), except overlayfs's own.
fn copy_xattrs(src: &Path, dst: &Path) {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(src, &mut names[..]) else {
        return;
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let mut value = vec![0u8; 64 << 10];
        if let Ok(len) = rustix::fs::lgetxattr(src, name, &mut value[..]) {
            let _ =
                rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty());
        }
    }
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        params: &'a CopyParams,
        source: &'a CopySource<'a>,
        lower: Option<&'a LayeredView>,
        out: &Path,
        owner: Option<(u32, u32)>,
    ) -> Self {
        let mut layers = vec![out.to_path_buf()];
        if let Some(l) = lower {
            layers.extend(l.layers().iter().cloned());
        }
        Writer {
            params,
            source,
            lower,
            merged: LayeredView::new(layers),
            out: out.to_path_buf(),
            owner,
            dir_times: BTreeMap::new(),
            fresh: HashSet::new(),
            links: HashMap::new(),
            stats: CopyStats::default(),
        }
    }

    fn instr(&self) -> &'static str {
        self.params.instr
    }

    fn host(&self, rel: &[OsString]) -> PathBuf {
        self.out.join(tree::join(rel))
    }

    fn display(rel: &[OsString]) -> String {
        format!("/{}", tree::rel_str(rel))
    }

    /// The entry at `rel` in `out`, else in the parent layers (not following symlinks).
    fn existing(&self, rel: &[OsString]) -> Result<Option<Existing>, CopyError> {
        let host = self.host(rel);
        match fs::symlink_metadata(&host) {
            Ok(meta) => return Ok(Some(Existing { meta, in_out: true })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                return Ok(None);
            }
            Err(e) => return Err(CopyError::io("stat", host)(e)),
        }
        let Some(lower) = self.lower else {
            return Ok(None);
        };
        if rel.is_empty() {
            return Ok(None);
        }
        if self.fresh.contains(&rel[..rel.len() - 1]) {
            return Ok(None);
        }
        match lower.lookup(rel) {
            Ok(e) => Ok(e.map(|e| Existing {
                meta: e.meta,
                in_out: false,
            })),
            Err(e) => Err(CopyError::io("stat", Self::display(rel))(e)),
        }
    }

    /// Owner for an entry from the source: `--chown`, else the source's own for a stage,
    /// else root (context files, heredocs, downloads).
    fn owner_for(&self, meta: Option<&Metadata>) -> (u32, u32) {
        if let Some(o) = self.owner {
            return o;
        }
        match (self.source, meta) {
            (CopySource::Layers { .. }, Some(m)) => (m.uid(), m.gid()),
            _ => (0, 0),
        }
    }

    fn mode_for(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.params.chmod {
            Some(c) => c.apply(mode & 0o7777, is_dir),
            None => mode & 0o7777,
        }
    }

    /// Creates directory `rel` in `out` with `attrs` (mode and owner now, mtime at the end).
    fn mkdir(&mut self, rel: &[OsString], attrs: Attrs) -> Result<(), CopyError> {
        let host = self.host(rel);
        fs::create_dir(&host).map_err(CopyError::io("create directory", &host))?;
        self.set_dir_attrs(rel, attrs)?;
        self.stats.dirs += 1;
        Ok(())
    }

    fn set_dir_attrs(&mut self, rel: &[OsString], attrs: Attrs) -> Result<(), CopyError> {
        let host = self.host(rel);
        lchown(&host, attrs.uid, attrs.gid)?;
        chmod(&host, attrs.mode)?;
        self.dir_times.insert(host, attrs.mtime);
        Ok(())
    }

    /// fsutil's `MkdirAll`: every missing directory of `rel` is created with the
    /// destination defaults (0755 or the octal `--chmod`, root or `--chown`); existing
    /// parent directories are copied up with their own metadata.
    fn ensure_dir(&mut self, rel: &[OsString]) -> Result<(), CopyError> {
        let mode = self
            .params
            .chmod
            .as_ref()
            .map_or(0o755, |c| c.created_dir_mode());
        self.ensure_dir_mode(rel, mode)
    }

    /// [`Writer::ensure_dir`] with the mode for new directories given.
    fn ensure_dir_mode(&mut self, rel: &[OsString], mode: u32) -> Result<(), CopyError> {
        for i in 1..=rel.len() {
            let p = &rel[..i];
            match self.existing(p)? {
                Some(e) if e.meta.is_dir() => {
                    if !e.in_out {
                        self.copy_up(p, &e.meta)?;
                    }
                }
                Some(_) => {
                    return Err(CopyError::NotADirectory {
                        instr: self.instr(),
                        path: Self::display(p),
                    });
                }
                None => {
                    let (uid, gid) = self.owner.unwrap_or((0, 0));
                    let attrs = Attrs {
                        uid,
                        gid,
                        mode,
                        mtime: (self.params.timestamp, 0),
                    };
                    self.mkdir(p, attrs)?;
                    self.fresh.insert(p.to_vec());
                }
            }
        }
        Ok(())
    }

    /// Reproduces a parent-layer directory in `out` with its mode, owner and mtime.
    fn copy_up(&mut self, rel: &[OsString], meta: &Metadata) -> Result<(), CopyError> {
        let attrs = Attrs {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
            mtime: mtime_of(meta),
        };
        self.mkdir(rel, attrs)
    }

    /// Copies one resolved source to the destination (fsutil's `Copy` for one source:
    /// the destination directory made, the target chosen, then the copy).
    pub(super) fn copy_item(
        &mut self,
        item: &Item,
        dest: &[OsString],
        into: bool,
        several: bool,
    ) -> Result<(), CopyError> {
        let instr = self.instr();
        let merged = Tree::Layers(&self.merged);
        // The directory the destination goes in (the destination itself with a trailing
        // slash) exists first.
        let made = if into {
            dest.to_vec()
        } else {
            dest[..dest.len().saturating_sub(1)].to_vec()
        };
        let made = merged.resolve(instr, &made, true)?;
        self.ensure_dir(&made)?;
        let dst = Tree::Layers(&self.merged).resolve(instr, dest, true)?;

        // ADD: local archives (and downloads with --unpack=true) are extracted into the
        // destination, whatever its trailing slash.
        if let Some((archive, shown)) = self.archive_of(item)? {
            // BuildKit makes the extraction directory 0755 whatever --chmod says.
            self.ensure_dir_mode(&dst, 0o755)?;
            let host = self.host(&dst);
            let before = self.inodes_under(&host);
            archive::unpack(&shown, &archive, &host)?;
            if let Some((uid, gid)) = self.owner {
                self.chown_new(&host, &before, uid, gid)?;
            }
            self.stats.archives += 1;
            return Ok(());
        }

        let dest_entry = self.existing(&dst)?;
        let dest_is_dir = dest_entry.as_ref().is_some_and(|e| e.meta.is_dir());
        let src_is_dir = item.is_dir();
        let name = match item {
            Item::Path { name, .. } => name.clone(),
            Item::Url { name, .. } | Item::Heredoc { name, .. } => OsString::from(name),
        };
        if !src_is_dir && !dest_is_dir && several {
            return Err(CopyError::SeveralSourcesNeedDirectory {
                instr,
                dest: self.params.dest.clone(),
            });
        }
        let mut target = dst.clone();
        if !src_is_dir && dest_is_dir {
            target.push(name);
        }
        if src_is_dir && dest_entry.is_none() {
            self.ensure_dir(&target)?;
        } else {
            self.ensure_dir(&target[..target.len().saturating_sub(1)])?;
        }
        match item {
            Item::Path {
                resolved,
                node,
                include,
                ..
            } => {
                if node.meta.is_dir() {
                    self.copy_dir_item(resolved, node, include.as_ref(), &target)
                } else {
                    self.copy_entry(node, &target)
                }
            }
            Item::Url { download, .. } => {
                let mtime = (download.last_modified.unwrap_or(self.params.timestamp), 0);
                let (uid, gid) = self.owner_for(None);
                let attrs = Attrs {
                    uid,
                    gid,
                    mode: self.mode_for(0o600, false),
                    mtime,
                };
                let existing = self.existing(&target)?;
                self.clear_target(&target, existing)?;
                self.write_file(&target, download.file.path(), None, attrs)
            }
            Item::Heredoc { content, .. } => {
                let (uid, gid) = self.owner_for(None);
                let attrs = Attrs {
                    uid,
                    gid,
                    mode: self.mode_for(0o644, false),
                    mtime: (self.params.timestamp, 0),
                };
                self.write_bytes(&target, content.as_bytes(), attrs)
            }
        }
    }

    /// For ADD: the archive an item stands for, if it is one (and the path to show).
    fn archive_of(&self, item: &Item) -> Result<Option<(PathBuf, String)>, CopyError> {
        let (path, shown) = match item {
            Item::Path { node, source, .. }
                if self.params.unpack_local
                    && self.params.is_add()
                    && matches!(self.source, CopySource::Context(_))
                    && node.meta.is_file() =>
            {
                (node.host.clone(), source.clone())
            }
            Item::Url { download, url, .. } if self.params.unpack_remote => {
                (download.file.path().to_path_buf(), url.clone())
            }
            _ => return Ok(None),
        };
        match archive::sniff(&path)? {
            Sniffed::Tar => Ok(Some((path, shown))),
            Sniffed::NotArchive => Ok(None),
        }
    }

    fn inodes_under(&self, dir: &Path) -> HashSet<(u64, u64)> {
        let mut out = HashSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    out.insert((m.dev(), m.ino()));
                    if m.is_dir() {
                        stack.push(e.path());
                    }
                }
            }
        }
        out
    }

    /// Gives the entries an archive created under `dir` the `--chown` owner.
    fn chown_new(
        &self,
        dir: &Path,
        before: &HashSet<(u64, u64)>,
        uid: u32,
        gid: u32,
    ) -> Result<(), CopyError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d).map_err(CopyError::io("read directory", &d))?;
            for e in rd {
                let e = e.map_err(CopyError::io("read directory", &d))?;
                let m = e.metadata().map_err(CopyError::io("stat", e.path()))?;
                if !before.contains(&(m.dev(), m.ino())) {
                    let mode = m.mode() & 0o7777;
                    lchown(&e.path(), uid, gid)?;
                    // chown clears set-id bits on files: put them back.
                    if m.is_file() && mode & 0o6000 != 0 {
                        chmod(&e.path(), mode)?;
                    }
                }
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        Ok(())
    }

    /// Copies a directory source: its contents go into `target` (created 0755 by the
    /// caller when missing; an existing directory keeps its metadata and takes the
    /// source's mtime), each entry below taking the source's metadata.
    fn copy_dir_item(
        &mut self,
        resolved: &[OsString],
        node: &Entry,
        include: Option<&String>,
        target: &[OsString],
    ) -> Result<(), CopyError> {
        match self.existing(target)? {
            Some(e) if e.meta.is_dir() => {
                if !e.in_out {
                    self.copy_up(target, &e.meta)?;
                }
                self.dir_times
                    .insert(self.host(target), mtime_of(&node.meta));
            }
            Some(_) => {
                return Err(CopyError::CopyToNonDir {
                    instr: self.instr(),
                    path: Self::display(target),
                });
            }
            None => self.ensure_dir(target)?,
        }
        let filter = copy_filter(self.params, include)?;
        let entries = self.source.tree().walk(resolved, Some(&filter))?;
        let mut t = target.to_vec();
        for e in entries {
            t.truncate(target.len());
            t.extend(e.rel.iter().cloned());
            self.copy_entry(&e.node, &t)?;
        }
        Ok(())
    }

    /// Copies one entry (file, directory itself, symlink, device) to `target`, taking the
    /// source's metadata (or `--chown`/`--chmod`).
    fn copy_entry(&mut self, node: &Entry, target: &[OsString]) -> Result<(), CopyError> {
        let instr = self.instr();
        let m = &node.meta;
        let (uid, gid) = self.owner_for(Some(m));
        let attrs = Attrs {
            uid,
            gid,
            mode: self.mode_for(m.mode(), m.is_dir()),
            mtime: mtime_of(m),
        };
        let existing = self.existing(target)?;
        let t = m.file_type();
        if t.is_dir() {
            match existing {
                Some(e) if e.meta.is_dir() => {
                    if e.in_out {
                        self.set_dir_attrs(target, attrs)?;
                    } else {
                        self.mkdir(target, attrs)?;
                    }
                }
                Some(_) => {
                    return Err(CopyError::CopyToNonDir {
                        instr,
                        path: Self::display(target),
                    });
                }
                None => {
                    self.mkdir(target, attrs)?;
                    self.fresh.insert(target.to_vec());
                }
            }
            if matches!(self.source, CopySource::Layers { .. }) {
                copy_xattrs(&node.host, &self.host(target));
            }
            return Ok(());
        }
        self.clear_target(target, existing)?;
        let host = self.host(target);
        if t.is_file() {
            return self.write_file(target, &node.host, Some(m), attrs);
        }
        if t.is_symlink() {
            let link = fs::read_link(&node.host).map_err(CopyError::io("read link", &node.host))?;
            std::os::unix::fs::symlink(&link, &host)
                .map_err(CopyError::io("create symlink", &host))?;
            lchown(&host, attrs.uid, attrs.gid)?;
            set_times(&host, attrs.mtime)?;
            self.stats.symlinks += 1;
            return Ok(());
        }
        // Devices, fifos; a socket becomes an empty file as in fsutil.
        let (kind, rdev) = if t.is_fifo() {
            (FileType::Fifo, 0)
        } else if t.is_char_device() {
            if m.rdev() == 0 {
                // A 0/0 character device is an overlay whiteout: it would delete.
                return Err(CopyError::UnsupportedFile {
                    instr,
                    path: node.host.display().to_string(),
                    what: "a 0/0 character device (an overlay whiteout)",
                });
            }
            (FileType::CharacterDevice, m.rdev())
        } else if t.is_block_device() {
            (FileType::BlockDevice, m.rdev())
        } else {
            (FileType::RegularFile, 0)
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &host,
            kind,
            Mode::from_raw_mode(attrs.mode),
            rdev,
        )
        .map_err(|e| CopyError::io("create node", &host)(e.into()))?;
        lchown(&host, attrs.uid, attrs.gid)?;
        chmod(&host, attrs.mode)?;
        set_times(&host, attrs.mtime)?;
        self.stats.files += 1;
        Ok(())
    }

    /// A file or symlink may replace a file or symlink, never a directory.
    fn clear_target(
        &self,
        target: &[OsString],
        existing: Option<Existing>,
    ) -> Result<(), CopyError> {
        match existing {
            Some(e) if e.meta.is_dir() => Err(CopyError::ReplaceDirWithFile {
                instr: self.instr(),
                path: Self::display(target),
            }),
            Some(e) if e.in_out => {
                let host = self.host(target);
                fs::remove_file(&host).map_err(CopyError::io("replace", &host))
            }
            _ => Ok(()),
        }
    }

    fn create(&self, host: &Path) -> Result<File, CopyError> {
        File::options()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600)
            .open(host)
            .map_err(CopyError::io("create", host))
    }

    fn finish_file(&mut self, f: &File, host: &Path, attrs: Attrs) -> Result<(), CopyError> {
        std::os::unix::fs::fchown(f, Some(attrs.uid), Some(attrs.gid))
            .map_err(CopyError::io("chown", host))?;
        f.set_permissions(fs::Permissions::from_mode(attrs.mode))
            .map_err(CopyError::io("chmod", host))?;
        let times = Timestamps {
            last_access: ts(attrs.mtime),
            last_modification: ts(attrs.mtime),
        };
        rustix::fs::futimens(f, &times)
            .map_err(|e| CopyError::io("set times on", host)(e.into()))?;
        self.stats.files += 1;
        Ok(())
    }

    /// Writes a regular file from `src` (hard-linking to an earlier copy of the same source
    /// inode when `meta` says it has several links).
    fn write_file(
        &mut self,
        target: &[OsString],
        src: &Path,
        meta: Option<&Metadata>,
        attrs: Attrs,
    ) -> Result<(), CopyError> {
        let host = self.host(target);
        if let Some(m) = meta.filter(|m| m.nlink() > 1) {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key) {
                if fs::hard_link(first, &host).is_ok() {
                    self.stats.files += 1;
                    return Ok(());
                }
            }
            self.links.insert(key, host.clone());
        }
        let mut from = File::open(src).map_err(CopyError::io("read", src))?;
        let mut to = self.create(&host)?;
        let n = io::copy(&mut from, &mut to).map_err(CopyError::io("copy to", &host))?;
        self.stats.bytes += n;
        self.finish_file(&to, &host, attrs)?;
        // After the chown: the kernel drops `security.capability` when a file changes
        // owner (or is written), so file capabilities set earlier would be lost.
        if matches!(self.source, CopySource::Layers { .. }) && meta.is_some() {
            copy_xattrs(src, &host);
        }
        Ok(())
    }

    fn write_bytes(
        &mut self,
        target: &[OsString],
        data: &[u8],
        attrs: Attrs,
    ) -> Result<(), CopyError> {
        let existing = self.existing(target)?;
        self.clear_target(target, existing)?;
        let host = self.host(target);
        let mut to = self.create(&host)?;
        to.write_all(data).map_err(CopyError::io("write", &host))?;
        self.stats.bytes += data.len() as u64;
        self.finish_file(&to, &host, attrs)
    }

    /// Sets the directories' mtimes (now that nothing more is written into them).
    pub(super) fn finish(self) -> Result<CopyStats, CopyError> {
        for (path, t) in self.dir_times.iter().rev() {
            set_times(path, *t)?;
        }
        Ok(self.stats)
    }
}
