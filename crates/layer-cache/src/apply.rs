//! The safe applier: carries out [`EntryAction`]s through file descriptors, every path
//! resolved inside the root.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid, XattrFlags, chmodat,
    chownat, fchmod, fchown, fsetxattr, futimens, linkat, mkdirat, mknodat, openat, openat2,
    readlinkat, statat, symlinkat, unlinkat, utimensat,
};
use rustix::io::Errno;

use crate::compress::{Compression, decoder};
use crate::digest::{Digest, Sha256Hasher};
use crate::error::{Error, Result, io_at, sys};
use crate::plan::{DeviceKind, EntryAction, Meta, plan_entry};
use crate::relpath::RelPath;
use crate::tar::{Source, TarReader};

/// Where the layer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ApplyMode {
    /// Apply on top of what `dest` already holds: whiteouts and opaque directories delete
    /// from it. Applying layers in order gives the flattened file system (type=local
    /// export, the fallback mode without overlayfs).
    #[default]
    Flatten,
    /// `dest` is an empty directory that becomes one overlayfs lower layer: whiteouts are
    /// kept as overlay whiteouts (character device 0/0) and opaque directories get the
    /// overlay opaque xattr.
    OverlayLayer,
}

/// Which xattr namespace overlayfs reads its metadata from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverlayXattr {
    /// `trusted.overlay.*` (overlayfs mounted by real root).
    #[default]
    Trusted,
    /// `user.overlay.*` (overlayfs mounted with `userxattr` in a user namespace).
    User,
}

impl OverlayXattr {
    fn opaque(self) -> &'static str {
        match self {
            OverlayXattr::Trusted => "trusted.overlay.opaque",
            OverlayXattr::User => "user.overlay.opaque",
        }
    }
}

/// Whose files they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Ownership {
    /// uid and gid from the archive (needs root or a user namespace mapping them).
    #[default]
    Preserve,
    /// Leave files owned by the current user.
    Current,
}

/// What to do with device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DevicePolicy {
    /// Fail with [`Error::DevicesNotPermitted`] naming the entry.
    #[default]
    Reject,
    /// Leave them out (counted in [`ApplyStats::skipped`]).
    Skip,
    /// Create them (needs CAP_MKNOD).
    Create,
}

/// What to do when an entry's parent path goes through a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ParentSymlinks {
    /// Reject the entry (layers written from a directory never need it).
    #[default]
    Reject,
    /// Follow it as if the root were `/` (`RESOLVE_IN_ROOT`): absolute targets and `..`
    /// stay inside the root. For extracting archives onto an existing tree (`ADD x.tar`).
    FollowInRoot,
}

/// How paths are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resolve {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (or `RESOLVE_IN_ROOT`), falling
    /// back to [`Resolve::Walk`] where the kernel lacks it.
    #[default]
    Auto,
    /// One `openat(O_NOFOLLOW)` per component (for kernels or seccomp filters without
    /// openat2).
    Walk,
}

/// How to apply a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Flatten onto `dest` or build one overlay lower directory.
    pub mode: ApplyMode,
    /// The xattr namespace for overlay opaque markers in [`ApplyMode::OverlayLayer`].
    pub overlay_xattr: OverlayXattr,
    /// File ownership.
    pub ownership: Ownership,
    /// Device nodes.
    pub devices: DevicePolicy,
    /// Symlinks in parent paths.
    pub parent_symlinks: ParentSymlinks,
    /// Apply xattrs from the archive (including `security.capability`).
    pub xattrs: bool,
    /// Cap on the uncompressed stream (decompression bombs).
    pub max_bytes: u64,
    /// Cap on the number of entries.
    pub max_entries: u64,
    /// When set, the uncompressed stream must hash to this diffID.
    pub expected_diff_id: Option<Digest>,
    /// Path resolution strategy.
    pub resolve: Resolve,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            mode: ApplyMode::Flatten,
            overlay_xattr: OverlayXattr::Trusted,
            ownership: Ownership::Preserve,
            devices: DevicePolicy::Reject,
            parent_symlinks: ParentSymlinks::Reject,
            xattrs: true,
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
            expected_diff_id: None,
            resolve: Resolve::Auto,
        }
    }
}

/// What applying a layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// sha256 of the whole uncompressed stream.
    pub diff_id: Digest,
    /// The input's compression (sniffed).
    pub compression: Compression,
    /// Size of the uncompressed stream.
    pub uncompressed_size: u64,
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file data written.
    pub data_bytes: u64,
    /// Entries left out (device nodes under [`DevicePolicy::Skip`], aufs metadata).
    pub skipped: u64,
}

const CHUNK: usize = 256 << 10;

enum Msg {
    Data(Vec<u8>),
    End {
        diff_id: Digest,
        total: u64,
        compression: Compression,
    },
    Fail(Error),
}

/// Reads, decompresses, hashes and counts the input on its own thread.
fn produce<R: Read>(input: R, max_bytes: u64, tx: &SyncSender<Msg>, recycle: &Receiver<Vec<u8>>) {
    let fail = |e: Error| {
        let _ = tx.send(Msg::Fail(e));
    };
    let (compression, mut rd) = match decoder(input) {
        Ok(x) => x,
        Err(e) => return fail(sys("read layer")(e)),
    };
    let op = match compression {
        Compression::Gzip => "gzip decompression",
        Compression::Zstd => "zstd decompression",
        Compression::None => "read layer",
    };
    let mut hasher = Sha256Hasher::default();
    let mut total: u64 = 0;
    loop {
        let mut buf = recycle.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match rd.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return fail(sys(op)(e)),
            }
        }
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return fail(Error::LimitExceeded {
                what: "uncompressed layer size",
                limit: max_bytes,
            });
        }
        hasher.update(&buf[..n]);
        buf.truncate(n);
        if tx.send(Msg::Data(buf)).is_err() {
            return;
        }
    }
    let _ = tx.send(Msg::End {
        diff_id: hasher.finish(),
        total,
        compression,
    });
}

struct ChunkSource {
    rx: Receiver<Msg>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    end: Option<(Digest, u64, Compression)>,
}

impl Source for ChunkSource {
    fn fill(&mut self) -> Result<&[u8]> {
        if self.pos == self.cur.len() && self.end.is_none() {
            match self.rx.recv() {
                Ok(Msg::Data(v)) => {
                    let old = std::mem::replace(&mut self.cur, v);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Msg::End {
                    diff_id,
                    total,
                    compression,
                }) => self.end = Some((diff_id, total, compression)),
                Ok(Msg::Fail(e)) => return Err(e),
                Err(_) => {
                    return Err(sys("read layer")(std::io::Error::other(
                        "the decompression thread stopped",
                    )));
                }
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Applies one layer (gzip, zstd or plain tar, sniffed from its first bytes) to `dest`,
/// which must exist.
///
/// Never uses `tar::Archive::unpack`: each entry goes through [`plan_entry`] and is then
/// created relative to a directory file descriptor obtained inside `dest` (openat2
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or `RESOLVE_IN_ROOT` with
/// [`ParentSymlinks::FollowInRoot`]). Final components are never followed (`O_NOFOLLOW`,
/// `O_EXCL`, `AT_SYMLINK_NOFOLLOW`). Ownership, mode, xattrs and times are set through the
/// new file's descriptor. A path that appears twice is rejected. Any error names the entry
/// ([`Error::entry`]). Decompression runs on a second thread, in parallel with the writes.
pub fn apply_layer<R: Read + Send>(
    input: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    let root = openat(
        rustix::fs::CWD,
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(dest)(e.into()))?;
    let root_path = openat(
        &root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(dest)(e.into()))?;
    let (tx, rx) = sync_channel(8);
    let (recycle_tx, recycle_rx) = sync_channel(8);
    std::thread::scope(|scope| {
        let max = opts.max_bytes;
        scope.spawn(move || produce(input, max, &tx, &recycle_rx));
        let src = ChunkSource {
            rx,
            recycle: recycle_tx,
            cur: Vec::new(),
            pos: 0,
            end: None,
        };
        let mut applier = Applier {
            opts,
            res: Resolver {
                root: Rc::new(root_path),
                follow: opts.parent_symlinks == ParentSymlinks::FollowInRoot,
                openat2: opts.resolve == Resolve::Auto,
                cache: Vec::new(),
            },
            root_rd: root,
            seen: BTreeSet::new(),
            whited: BTreeSet::new(),
            dirs: Vec::new(),
            entries: 0,
            files: 0,
            data_bytes: 0,
            skipped: 0,
        };
        let mut tar = TarReader::new(src);
        applier.run(&mut tar)?;
        // Drain whatever follows the end-of-archive marker: the diffID covers it all.
        let src = tar.source();
        loop {
            let n = src.fill()?.len();
            if n == 0 {
                break;
            }
            src.consume(n);
        }
        let (diff_id, total, compression) = src.end.clone().ok_or_else(|| {
            sys("read layer")(std::io::Error::other("the layer stream ended early"))
        })?;
        if let Some(expected) = &opts.expected_diff_id {
            if *expected != diff_id {
                return Err(Error::DiffIdMismatch {
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
        }
        Ok(ApplyStats {
            diff_id,
            compression,
            uncompressed_size: total,
            entries: applier.entries,
            files: applier.files,
            data_bytes: applier.data_bytes,
            skipped: applier.skipped,
        })
    })
}

/// Resolves directories inside the root; keeps a few recently used directory fds.
struct Resolver {
    root: Rc<OwnedFd>,
    follow: bool,
    openat2: bool,
    cache: Vec<(Vec<u8>, Rc<OwnedFd>)>,
}

const DIR_CACHE: usize = 16;
const MAX_SYMLINK_HOPS: usize = 40;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Resolver {
    fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// The directory at `path`, created (mode 0755) when missing and `create` is set;
    /// `None` when missing otherwise.
    fn dir(&mut self, path: &RelPath, create: bool) -> Result<Option<Rc<OwnedFd>>> {
        if path.is_root() {
            return Ok(Some(Rc::clone(&self.root)));
        }
        if let Some(i) = self.cache.iter().position(|(p, _)| p == path.as_bytes()) {
            let hit = self.cache.remove(i);
            let fd = Rc::clone(&hit.1);
            self.cache.push(hit);
            return Ok(Some(fd));
        }
        let mut fd = None;
        if self.openat2 {
            let resolve = if self.follow {
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
            } else {
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
            };
            match openat2(
                &*self.root,
                path.as_path(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                Ok(f) => fd = Some(f),
                Err(Errno::NOSYS) => self.openat2 = false,
                // Missing, a symlink, not a directory: the walk creates or says exactly what.
                Err(_) => {}
            }
        }
        let fd = match fd {
            Some(fd) => fd,
            None => match self.walk(path, create)? {
                Some(fd) => fd,
                None => return Ok(None),
            },
        };
        let fd = Rc::new(fd);
        if self.cache.len() == DIR_CACHE {
            self.cache.remove(0);
        }
        self.cache.push((path.as_bytes().to_vec(), Rc::clone(&fd)));
        Ok(Some(fd))
    }

    fn walk(&self, path: &RelPath, create: bool) -> Result<Option<OwnedFd>> {
        let open_dir = |at: &OwnedFd, name: &[u8]| {
            openat(
                at,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let reopen_root = || open_dir(&self.root, b".").map_err(sys("openat"));
        let mut pending: VecDeque<Vec<u8>> = path.components().map(<[u8]>::to_vec).collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut cur = reopen_root()?;
        let mut hops = 0;
        let mut creations = 0;
        while let Some(comp) = pending.pop_front() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    // Only from symlink targets (FollowInRoot); `..` at the root stays there.
                    if done.pop().is_some() {
                        cur = open_dir(&cur, b"..").map_err(sys("openat"))?;
                    }
                    continue;
                }
                _ => {}
            }
            let shown = || {
                let mut v = done.join(&b'/');
                if !v.is_empty() {
                    v.push(b'/');
                }
                v.extend_from_slice(&comp);
                lossy(&v)
            };
            match open_dir(&cur, &comp) {
                Ok(fd) => {
                    cur = fd;
                    done.push(comp);
                }
                Err(Errno::NOENT) => {
                    if !create {
                        return Ok(None);
                    }
                    creations += 1;
                    if creations > 2 * path.components().count() + MAX_SYMLINK_HOPS {
                        return Err(sys("mkdirat")(std::io::Error::other(
                            "directory keeps disappearing",
                        )));
                    }
                    match mkdirat(&cur, comp.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => pending.push_front(comp),
                        Err(e) => return Err(sys("mkdirat")(e)),
                    }
                }
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    let st = statat(&cur, comp.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(sys("fstatat"))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        return Err(Error::NotADirectory { component: shown() });
                    }
                    if !self.follow {
                        return Err(Error::TraversesSymlink { component: shown() });
                    }
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Error::Sys {
                            op: "resolve",
                            source: Errno::LOOP.into(),
                        });
                    }
                    let target = readlinkat(&cur, comp.as_slice(), Vec::new())
                        .map_err(sys("readlinkat"))?
                        .into_bytes();
                    if target.first() == Some(&b'/') {
                        done.clear();
                        cur = reopen_root()?;
                    }
                    for c in target.split(|&b| b == b'/').rev() {
                        if !c.is_empty() {
                            pending.push_front(c.to_vec());
                        }
                    }
                }
                Err(e) => return Err(sys("openat")(e)),
            }
        }
        Ok(Some(cur))
    }
}

struct Applier<'o> {
    opts: &'o ApplyOptions,
    res: Resolver,
    root_rd: OwnedFd,
    /// Paths created by this layer (duplicates are rejected; whiteouts do not apply to them).
    seen: BTreeSet<Vec<u8>>,
    /// Whiteout and opaque markers seen in this layer.
    whited: BTreeSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end.
    dirs: Vec<(RelPath, u32, i64)>,
    entries: u64,
    files: u64,
    data_bytes: u64,
    skipped: u64,
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

fn is_dir(mode: u32) -> bool {
    FileType::from_raw_mode(mode) == FileType::Directory
}

/// Removes `name` in `parent`, recursively when it is a directory; never follows symlinks.
fn remove_all_at(parent: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    match unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(sys("unlinkat")(e)),
    }
    let fd = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("openat"))?;
    for child in list_names(&fd)? {
        remove_all_at(fd.as_fd(), &child)?;
    }
    match unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(sys("rmdir")(e)),
    }
}

fn list_names(dir: &OwnedFd) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in Dir::read_from(dir).map_err(sys("opendir"))? {
        let e = e.map_err(sys("readdir"))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

impl Applier<'_> {
    fn run<S: Source>(&mut self, tar: &mut TarReader<S>) -> Result<()> {
        while let Some(h) = tar.next_header()? {
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(Error::LimitExceeded {
                    what: "number of entries",
                    limit: self.opts.max_entries,
                }
                .in_entry(&h.path));
            }
            plan_entry(&h)
                .and_then(|action| self.apply(action, tar))
                .map_err(|e| e.in_entry(&h.path))?;
        }
        self.finish_dirs()
    }

    fn mark_seen(&mut self, path: &RelPath) -> Result<()> {
        if !self.seen.insert(path.as_bytes().to_vec()) {
            return Err(Error::DuplicateEntry);
        }
        Ok(())
    }

    fn parent_of(&mut self, path: &RelPath) -> Result<Rc<OwnedFd>> {
        let parent = path.parent().unwrap_or_default();
        self.res
            .dir(&parent, true)?
            .ok_or_else(|| sys("mkdirat")(std::io::Error::other("parent directory missing")))
    }

    /// Clears `name` in `parent` for a new object. Returns true when an existing
    /// directory was kept (`keep_dir`).
    fn clear_slot(&mut self, parent: &OwnedFd, name: &[u8], keep_dir: bool) -> Result<bool> {
        match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(sys("fstatat")(e)),
            Ok(st) if is_dir(st.st_mode) => {
                if keep_dir {
                    return Ok(true);
                }
                remove_all_at(parent.as_fd(), name)?;
                self.res.invalidate();
                Ok(false)
            }
            Ok(_) => unlinkat(parent, name, AtFlags::empty())
                .map(|()| false)
                .map_err(sys("unlinkat")),
        }
    }

    /// Runs `create` in `parent`; on EEXIST clears the slot and runs it once more.
    fn create_at(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        op: &'static str,
        mut create: impl FnMut() -> rustix::io::Result<()>,
    ) -> Result<()> {
        match create() {
            Err(Errno::EXIST) => {
                self.clear_slot(parent, name, false)?;
                create().map_err(sys(op))
            }
            r => r.map_err(sys(op)),
        }
    }

    fn owner(&self, meta: &Meta) -> Option<(Uid, Gid)> {
        (self.opts.ownership == Ownership::Preserve)
            .then(|| (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid)))
    }

    fn xattrs_fd(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<()> {
        if self.opts.xattrs {
            for (k, v) in &meta.xattrs {
                fsetxattr(fd, k.as_str(), v, XattrFlags::empty()).map_err(sys("fsetxattr"))?;
            }
        }
        Ok(())
    }

    fn xattrs_at(&self, parent: &OwnedFd, name: &[u8], meta: &Meta) -> Result<()> {
        if self.opts.xattrs && !meta.xattrs.is_empty() {
            let p = proc_path(parent.as_fd(), name);
            for (k, v) in &meta.xattrs {
                rustix::fs::lsetxattr(&p, k.as_str(), v, XattrFlags::empty())
                    .map_err(sys("lsetxattr"))?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of a non-directory, non-regular object (no fd).
    fn meta_at(&self, parent: &OwnedFd, name: &[u8], meta: &Meta, chmod: bool) -> Result<()> {
        if let Some((u, g)) = self.owner(meta) {
            chownat(parent, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(sys("fchownat"))?;
        }
        if chmod {
            chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(sys("fchmodat"))?;
        }
        self.xattrs_at(parent, name, meta)?;
        utimensat(
            parent,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(sys("utimensat"))
    }

    fn apply<S: Source>(&mut self, action: EntryAction, tar: &mut TarReader<S>) -> Result<()> {
        match action {
            EntryAction::Skip => {
                self.skipped += 1;
                Ok(())
            }
            EntryAction::File { path, meta, size } => {
                self.mark_seen(&path)?;
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let mode = Mode::from_raw_mode(0o600);
                let fd = match openat(&*parent, name, flags, mode) {
                    Err(Errno::EXIST) => {
                        self.clear_slot(&parent, name, false)?;
                        openat(&*parent, name, flags, mode)
                    }
                    r => r,
                }
                .map_err(sys("openat"))?;
                let mut f = File::from(fd);
                tar.for_each_data_chunk(|c| f.write_all(c).map_err(sys("write")))?;
                if let Some((u, g)) = self.owner(&meta) {
                    fchown(&f, Some(u), Some(g)).map_err(sys("fchown"))?;
                }
                fchmod(&f, Mode::from_raw_mode(meta.mode)).map_err(sys("fchmod"))?;
                self.xattrs_fd(f.as_fd(), &meta)?;
                futimens(&f, &timestamps(meta.mtime)).map_err(sys("futimens"))?;
                self.files += 1;
                self.data_bytes += size;
                Ok(())
            }
            EntryAction::Dir { path, meta } => {
                self.mark_seen(&path)?;
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                match mkdirat(&*parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        if !self.clear_slot(&parent, name, true)? {
                            mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                                .map_err(sys("mkdirat"))?;
                        }
                    }
                    Err(e) => return Err(sys("mkdirat")(e)),
                }
                let fd = openat(
                    &*parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys("openat"))?;
                if let Some((u, g)) = self.owner(&meta) {
                    fchown(&fd, Some(u), Some(g)).map_err(sys("fchown"))?;
                }
                self.xattrs_fd(fd.as_fd(), &meta)?;
                self.dirs.push((path, meta.mode, meta.mtime));
                Ok(())
            }
            EntryAction::Symlink { path, target, meta } => {
                self.mark_seen(&path)?;
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                self.create_at(&parent, name, "symlinkat", || {
                    symlinkat(target.as_slice(), &*parent, name)
                })?;
                self.meta_at(&parent, name, &meta, false)
            }
            EntryAction::HardLink { path, target } => {
                self.mark_seen(&path)?;
                let missing = |reason| Error::HardlinkTarget {
                    target: target.to_string(),
                    reason,
                };
                let tparent = self
                    .res
                    .dir(&target.parent().unwrap_or_default(), false)?
                    .ok_or_else(|| missing("does not exist"))?;
                let tname = target.file_name();
                let tst = match statat(&*tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => return Err(missing("does not exist")),
                    Err(e) => return Err(sys("fstatat")(e)),
                };
                if is_dir(tst.st_mode) {
                    return Err(missing("is a directory"));
                }
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                match linkat(&*tparent, tname, &*parent, name, AtFlags::empty()) {
                    Ok(()) => Ok(()),
                    Err(Errno::EXIST) => {
                        if let Ok(st) = statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                            if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                                return Ok(());
                            }
                        }
                        self.clear_slot(&parent, name, false)?;
                        linkat(&*tparent, tname, &*parent, name, AtFlags::empty())
                            .map_err(sys("linkat"))
                    }
                    Err(e) => Err(sys("linkat")(e)),
                }
            }
            EntryAction::Device {
                path,
                kind,
                major,
                minor,
                meta,
            } => {
                match self.opts.devices {
                    DevicePolicy::Reject => return Err(Error::DevicesNotPermitted),
                    DevicePolicy::Skip => {
                        self.skipped += 1;
                        return Ok(());
                    }
                    DevicePolicy::Create => {}
                }
                self.mark_seen(&path)?;
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                let ftype = match kind {
                    DeviceKind::Char => FileType::CharacterDevice,
                    DeviceKind::Block => FileType::BlockDevice,
                };
                let dev = rustix::fs::makedev(major, minor);
                let mode = Mode::from_raw_mode(meta.mode);
                self.create_at(&parent, name, "mknodat", || {
                    mknodat(&*parent, name, ftype, mode, dev)
                })?;
                self.meta_at(&parent, name, &meta, true)
            }
            EntryAction::Fifo { path, meta } => {
                self.mark_seen(&path)?;
                let parent = self.parent_of(&path)?;
                let name = path.file_name();
                let mode = Mode::from_raw_mode(meta.mode);
                self.create_at(&parent, name, "mkfifoat", || {
                    mknodat(&*parent, name, FileType::Fifo, mode, 0)
                })?;
                self.meta_at(&parent, name, &meta, true)
            }
            EntryAction::Whiteout { path, meta } => {
                if !self.whited.insert(path.as_bytes().to_vec()) {
                    return Err(Error::DuplicateEntry);
                }
                if self.seen.contains(path.as_bytes()) {
                    // A whiteout only hides lower layers, never this layer's own files.
                    return Ok(());
                }
                match self.opts.mode {
                    ApplyMode::Flatten => {
                        let parent = path.parent().unwrap_or_default();
                        if let Some(dir) = self.res.dir(&parent, false)? {
                            remove_all_at(dir.as_fd(), path.file_name())?;
                            self.res.invalidate();
                        }
                        Ok(())
                    }
                    ApplyMode::OverlayLayer => {
                        let parent = self.parent_of(&path)?;
                        let name = path.file_name();
                        match mknodat(
                            &*parent,
                            name,
                            FileType::CharacterDevice,
                            Mode::empty(),
                            rustix::fs::makedev(0, 0),
                        ) {
                            Ok(()) => {}
                            Err(Errno::EXIST) => {
                                return Err(Error::Unsupported {
                                    what: "a whiteout for a path this layer also creates".into(),
                                });
                            }
                            Err(e) => return Err(sys("mknodat (overlay whiteout)")(e)),
                        }
                        self.meta_at(&parent, name, &meta, false)
                    }
                }
            }
            EntryAction::Opaque { dir } => {
                let mut key = dir.as_bytes().to_vec();
                key.extend_from_slice(b"/.wh..wh..opq");
                if !self.whited.insert(key) {
                    return Err(Error::DuplicateEntry);
                }
                let fd = if dir.is_root() {
                    Some(
                        openat(
                            &self.root_rd,
                            ".",
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(sys("openat"))?,
                    )
                } else {
                    let create = self.opts.mode == ApplyMode::OverlayLayer;
                    let parent = dir.parent().unwrap_or_default();
                    match self.res.dir(&parent, create)? {
                        None => None,
                        Some(p) => {
                            let name = dir.file_name();
                            if create {
                                match mkdirat(&*p, name, Mode::from_raw_mode(0o755)) {
                                    Ok(()) | Err(Errno::EXIST) => {}
                                    Err(e) => return Err(sys("mkdirat")(e)),
                                }
                            }
                            match openat(
                                &*p,
                                name,
                                OFlags::RDONLY
                                    | OFlags::DIRECTORY
                                    | OFlags::NOFOLLOW
                                    | OFlags::CLOEXEC,
                                Mode::empty(),
                            ) {
                                Ok(fd) => Some(fd),
                                Err(Errno::NOENT) if !create => None,
                                Err(Errno::NOTDIR | Errno::LOOP) => {
                                    return Err(Error::NotADirectory {
                                        component: dir.to_string(),
                                    });
                                }
                                Err(e) => return Err(sys("openat")(e)),
                            }
                        }
                    }
                };
                let Some(fd) = fd else { return Ok(()) };
                match self.opts.mode {
                    ApplyMode::OverlayLayer => fsetxattr(
                        &fd,
                        self.opts.overlay_xattr.opaque(),
                        b"y",
                        XattrFlags::empty(),
                    )
                    .map_err(sys("fsetxattr (overlay opaque)")),
                    ApplyMode::Flatten => {
                        self.prune_unseen(&fd, &dir)?;
                        self.res.invalidate();
                        Ok(())
                    }
                }
            }
        }
    }

    /// Opaque directory in flatten mode: removes everything below `dir` that this layer
    /// did not create.
    fn prune_unseen(&mut self, fd: &OwnedFd, dir: &RelPath) -> Result<()> {
        for name in list_names(fd)? {
            let child = dir.join(&name)?;
            let mut prefix = child.as_bytes().to_vec();
            prefix.push(b'/');
            let has_descendant = self
                .seen
                .range(prefix.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&prefix));
            if self.seen.contains(child.as_bytes()) || has_descendant {
                if let Ok(sub) = openat(
                    fd,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    self.prune_unseen(&sub, &child)?;
                }
            } else {
                remove_all_at(fd.as_fd(), &name)?;
            }
        }
        Ok(())
    }

    /// Sets directory modes and mtimes last, so that creating their contents neither fails
    /// on read-only directories nor changes the times.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mode, mtime) in dirs.iter().rev() {
            let run = |this: &mut Self| -> Result<()> {
                let Some(parent) = this.res.dir(&path.parent().unwrap_or_default(), false)? else {
                    return Ok(());
                };
                let Ok(fd) = openat(
                    &*parent,
                    path.file_name(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) else {
                    return Ok(());
                };
                fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(sys("fchmod"))?;
                futimens(&fd, &timestamps(*mtime)).map_err(sys("futimens"))
            };
            run(self).map_err(|e| e.in_entry(path.as_bytes()))?;
        }
        Ok(())
    }
}

/// Applies a plain (uncompressed or compressed) layer read from a file path.
pub fn apply_layer_file(layer: &Path, dest: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let f = File::open(layer).map_err(io_at(layer))?;
    apply_layer(f, dest, opts)
}
