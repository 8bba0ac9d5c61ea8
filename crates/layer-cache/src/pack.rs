//! The deterministic tar writer: a directory or an overlay upper directory in, one
//! streaming pass out: tar → sha256 (diffID) → compression (parallel) → sha256 (digest).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, openat, readlinkat, statat};

use crate::compress::{BlockSink, Compression, Compressor, GZIP_BLOCK};
use crate::digest::{Digest, Sha256Hasher};
use crate::error::{Error, Result, io_at};
use crate::plan::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::tar::{EntryHeader, EntryKind, encode_header, padding};

/// What kind of directory is being packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SourceKind {
    /// A plain directory: every file is content.
    #[default]
    Directory,
    /// An overlayfs upper directory (or a snapshot in the same format): character devices
    /// 0/0 become `.wh.NAME` whiteouts and directories marked opaque
    /// (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a `.wh..wh..opq` entry.
    OverlayUpper,
}

/// How to pack a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackOptions {
    /// Output compression.
    pub compression: Compression,
    /// Compression level; `None` for the format's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Compression threads; 0 means one per available core. Never changes the output.
    pub threads: usize,
    /// SOURCE_DATE_EPOCH: when set, every mtime later than this is clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Plain directory or overlay upper directory.
    pub source: SourceKind,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 0,
            source_date_epoch: None,
            source: SourceKind::Directory,
        }
    }
}

impl PackOptions {
    /// Reads `SOURCE_DATE_EPOCH` from the environment (an invalid value is an error).
    pub fn source_date_epoch_from_env() -> Result<Option<i64>> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some).map_err(|_| Error::InvalidArgument {
                reason: format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds"),
            }),
            Err(_) => Ok(None),
        }
    }

    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The result of packing a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackedLayer {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// The blob's compression.
    pub compression: Compression,
    /// Number of tar entries written (PAX headers not counted).
    pub entries: u64,
}

impl PackedLayer {
    /// The OCI media type of the blob.
    pub fn media_type(&self) -> &'static str {
        self.compression.oci_media_type()
    }
}

/// Fills fixed-size blocks with the tar stream, hashes them (diffID) and hands them on.
struct Chunker<'s> {
    buf: Vec<u8>,
    len: usize,
    diff: Sha256Hasher,
    total: u64,
    sink: &'s mut dyn BlockSink,
    /// Told the tar stream's length so far after each block.
    progress: &'s dyn Fn(u64),
}

impl Chunker<'_> {
    fn flush_block(&mut self) -> Result<()> {
        let mut block = std::mem::replace(&mut self.buf, vec![0; GZIP_BLOCK]);
        block.truncate(self.len);
        self.diff.update(&block);
        self.total += self.len as u64;
        self.len = 0;
        (self.progress)(self.total);
        self.sink.push(block)
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let k = bytes.len().min(GZIP_BLOCK - self.len);
            self.buf[self.len..self.len + k].copy_from_slice(&bytes[..k]);
            self.len += k;
            bytes = &bytes[k..];
            if self.len == GZIP_BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, n: u64) -> Result<()> {
        const Z: [u8; 512] = [0; 512];
        let mut n = n as usize;
        while n > 0 {
            let k = n.min(Z.len());
            self.write(&Z[..k])?;
            n -= k;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` into the stream, reading straight into the
    /// block buffer.
    fn copy_file(&mut self, file: &mut File, size: u64, path: &Path) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let room = (GZIP_BLOCK - self.len).min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read(&mut self.buf[self.len..self.len + room]) {
                Ok(0) => {
                    return Err(Error::FileChanged {
                        path: path.to_owned(),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at(path)(e)),
            };
            self.len += n;
            left -= n as u64;
            if self.len == GZIP_BLOCK {
                self.flush_block()?;
            }
        }
        self.zeros(padding(size))
    }
}

/// Writes a deterministic tar of `dir` to `out`, compressed as asked, in one pass.
///
/// Entries are in sorted depth-first order (parents first, names compared as bytes), with
/// mode, uid, gid, mtime (whole seconds, clamped to SOURCE_DATE_EPOCH when set) and the
/// `security.capability` xattr (no other: containerd's archive writer keeps only that one); no user or group names, no atime or
/// ctime. A file with several links is written once, later paths become hard links. Sockets
/// are skipped. A name starting with `.wh.` is an error: it would read back as a whiteout.
pub fn pack_dir<W: Write + Send>(
    dir: &Path,
    opts: &PackOptions,
    out: W,
) -> Result<(W, PackedLayer)> {
    pack_dir_with_progress(dir, opts, out, &|_| {})
}

/// [`pack_dir`], calling `progress` with the length of the tar stream written so far
/// after every block (128 KiB), on the calling thread.
pub fn pack_dir_with_progress<W: Write + Send>(
    dir: &Path,
    opts: &PackOptions,
    out: W,
    progress: &dyn Fn(u64),
) -> Result<(W, PackedLayer)> {
    let root = openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(dir)(e.into()))?;
    std::thread::scope(|scope| {
        let mut comp = Compressor::start(scope, opts.compression, opts.level, opts.threads(), out)?;
        let (total, diff_id, entries) = {
            let mut chunker = Chunker {
                buf: vec![0; GZIP_BLOCK],
                len: 0,
                diff: Sha256Hasher::default(),
                total: 0,
                sink: &mut comp,
                progress,
            };
            let mut walker = Walker {
                opts,
                links: HashMap::new(),
                entries: 0,
                header: Vec::with_capacity(1024),
                fs_root: dir,
            };
            let root_stat = rustix::fs::fstat(&root).map_err(|e| io_at(dir)(e.into()))?;
            let root_xattrs = read_xattrs(XattrSource::Fd(&root), dir)?;
            if walker.is_opaque(&root_xattrs, dir)? {
                walker.emit_marker(&mut chunker, b"", OPAQUE_MARKER, &root_stat, None)?;
            }
            walker.walk(&mut chunker, root, &[])?;
            chunker.zeros(1024)?;
            if chunker.len > 0 {
                chunker.flush_block()?;
            }
            let Chunker { diff, total, .. } = chunker;
            (total, diff.finish(), walker.entries)
        };
        let (out, digest, size) = comp.finish()?;
        Ok((
            out,
            PackedLayer {
                diff_id,
                digest,
                size,
                uncompressed_size: total,
                compression: opts.compression,
                entries,
            },
        ))
    })
}

struct Walker<'a> {
    opts: &'a PackOptions,
    /// (dev, ino) of files with several links → the path written first.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    header: Vec<u8>,
    fs_root: &'a Path,
}

enum XattrSource<'a> {
    Fd(&'a OwnedFd),
    /// A symlink, device or fifo: through `/proc/self/fd/<dir>/<name>`, not followed.
    At(&'a OwnedFd, &'a [u8]),
}

fn proc_path(dir: &OwnedFd, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

fn read_xattrs(src: XattrSource<'_>, path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let unsupported =
        |e: rustix::io::Errno| e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::NOSYS;
    let mut names = vec![0u8; 4096];
    let n = loop {
        let r = match &src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, &mut names[..]),
            XattrSource::At(dir, name) => {
                rustix::fs::llistxattr(proc_path(dir, name), &mut names[..])
            }
        };
        match r {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(e) if unsupported(e) => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_at(path)(e.into())),
        }
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(Error::UnpackableFile {
                path: path.to_owned(),
                reason: "an xattr name is not UTF-8",
            });
        };
        if name == "security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 256];
        loop {
            let r = match &src {
                XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut value[..]),
                XattrSource::At(dir, n) => {
                    rustix::fs::lgetxattr(proc_path(dir, n), name, &mut value[..])
                }
            };
            match r {
                Ok(len) => {
                    value.truncate(len);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => value.resize(value.len().max(256) * 4, 0),
                Err(rustix::io::Errno::NODATA) => {
                    value.clear();
                    break;
                }
                Err(e) => return Err(io_at(path)(e.into())),
            }
        }
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

impl Walker<'_> {
    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) if mtime > epoch => epoch,
            _ => mtime,
        }
        .max(0)
    }

    fn header_from(&self, path: Vec<u8>, kind: EntryKind, st: &Stat) -> EntryHeader {
        let mut h = EntryHeader::new(path, kind);
        h.mode = st.st_mode & 0o7777;
        h.uid = u64::from(st.st_uid);
        h.gid = u64::from(st.st_gid);
        h.mtime = self.clamp(st.st_mtime);
        h
    }

    fn emit(&mut self, chunker: &mut Chunker<'_>, h: &EntryHeader) -> Result<()> {
        self.header.clear();
        encode_header(h, &mut self.header);
        self.entries += 1;
        chunker.write(&self.header)
    }

    /// Writes a whiteout or opaque marker: an empty regular file, mode 0, owned by root,
    /// with the (clamped) mtime of what it stands for, or `mtime` when given.
    fn emit_marker(
        &mut self,
        chunker: &mut Chunker<'_>,
        dir: &[u8],
        name: &[u8],
        st: &Stat,
        mtime: Option<i64>,
    ) -> Result<()> {
        let mut path = dir.to_vec();
        path.extend_from_slice(name);
        let mut h = EntryHeader::new(path, EntryKind::Regular);
        h.mtime = mtime.unwrap_or_else(|| self.clamp(st.st_mtime));
        self.emit(chunker, &h)
    }

    /// Removes overlayfs metadata from `xattrs` and says whether the directory is opaque.
    fn is_opaque(&self, xattrs: &BTreeMap<String, Vec<u8>>, path: &Path) -> Result<bool> {
        let overlay = self.opts.source == SourceKind::OverlayUpper;
        let mut opaque = false;
        for (k, v) in xattrs {
            let Some(key) = k
                .strip_prefix("trusted.overlay.")
                .or_else(|| k.strip_prefix("user.overlay."))
            else {
                continue;
            };
            match key {
                "opaque" => opaque |= overlay && v == b"y",
                "redirect" | "metacopy" if overlay => {
                    return Err(Error::UnpackableFile {
                        path: path.to_owned(),
                        reason: "overlayfs redirect/metacopy: the upper directory is not self-contained (mount with redirect_dir=off,metacopy=off)",
                    });
                }
                _ => {}
            }
        }
        Ok(opaque)
    }

    fn walk(&mut self, chunker: &mut Chunker<'_>, dirfd: OwnedFd, prefix: &[u8]) -> Result<()> {
        let fs_path = |name: &[u8]| {
            let mut p = self.fs_root.to_path_buf();
            p.push(OsStr::from_bytes(prefix));
            p.push(OsStr::from_bytes(name));
            p
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in Dir::read_from(&dirfd).map_err(|e| io_at(&fs_path(b""))(e.into()))? {
            let entry = entry.map_err(|e| io_at(&fs_path(b""))(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            let path = fs_path(&name);
            let st = statat(&dirfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_at(&path)(e.into()))?;
            let ftype = FileType::from_raw_mode(st.st_mode);
            let overlay = self.opts.source == SourceKind::OverlayUpper;
            if ftype == FileType::CharacterDevice && overlay && st.st_rdev == 0 {
                let mut wh = WHITEOUT_PREFIX.to_vec();
                wh.extend_from_slice(&name);
                // As BuildKit's differ: a whiteout's mtime is the epoch (0), whenever the
                // file was deleted, so that deletions do not make layers differ by clock.
                self.emit_marker(chunker, prefix, &wh, &st, Some(0))?;
                continue;
            }
            if name.starts_with(WHITEOUT_PREFIX) {
                return Err(Error::UnpackableFile {
                    path,
                    reason: "names starting with `.wh.` are reserved for whiteouts in layers",
                });
            }
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(&name);
            match ftype {
                FileType::Directory => {
                    let fd = openat(
                        &dirfd,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_at(&path)(e.into()))?;
                    let mut xattrs = read_xattrs(XattrSource::Fd(&fd), &path)?;
                    let opaque = self.is_opaque(&xattrs, &path)?;
                    xattrs.retain(|k, _| is_layer_xattr(k));
                    let mut h = self.header_from(rel.clone(), EntryKind::Directory, &st);
                    h.xattrs = xattrs;
                    self.emit(chunker, &h)?;
                    rel.push(b'/');
                    if opaque {
                        self.emit_marker(chunker, &rel, OPAQUE_MARKER, &st, None)?;
                    }
                    self.walk(chunker, fd, &rel)?;
                }
                FileType::RegularFile => {
                    if st.st_nlink > 1 {
                        let key = (st.st_dev, st.st_ino);
                        if let Some(first) = self.links.get(&key) {
                            let mut h = self.header_from(rel, EntryKind::HardLink, &st);
                            h.link_target = first.clone();
                            self.emit(chunker, &h)?;
                            continue;
                        }
                        self.links.insert(key, rel.clone());
                    }
                    let fd = openat(
                        &dirfd,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_at(&path)(e.into()))?;
                    let mut xattrs = read_xattrs(XattrSource::Fd(&fd), &path)?;
                    self.is_opaque(&xattrs, &path)?;
                    xattrs.retain(|k, _| is_layer_xattr(k));
                    let size = st.st_size as u64;
                    let mut h = self.header_from(rel, EntryKind::Regular, &st);
                    h.size = size;
                    h.xattrs = xattrs;
                    self.emit(chunker, &h)?;
                    let mut file = File::from(fd);
                    chunker.copy_file(&mut file, size, &path)?;
                }
                FileType::Symlink => {
                    let target = readlinkat(&dirfd, name.as_slice(), Vec::new())
                        .map_err(|e| io_at(&path)(e.into()))?;
                    let mut h = self.header_from(rel, EntryKind::Symlink, &st);
                    h.link_target = target.into_bytes();
                    h.xattrs = read_xattrs(XattrSource::At(&dirfd, &name), &path)?;
                    h.xattrs.retain(|k, _| is_layer_xattr(k));
                    self.emit(chunker, &h)?;
                }
                FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                    let kind = match ftype {
                        FileType::CharacterDevice => EntryKind::CharDevice,
                        FileType::BlockDevice => EntryKind::BlockDevice,
                        _ => EntryKind::Fifo,
                    };
                    let mut h = self.header_from(rel, kind, &st);
                    if kind != EntryKind::Fifo {
                        h.dev_major = rustix::fs::major(st.st_rdev);
                        h.dev_minor = rustix::fs::minor(st.st_rdev);
                    }
                    h.xattrs = read_xattrs(XattrSource::At(&dirfd, &name), &path)?;
                    h.xattrs.retain(|k, _| is_layer_xattr(k));
                    self.emit(chunker, &h)?;
                }
                // Sockets cannot be archived (tar skips them too).
                _ => {}
            }
        }
        Ok(())
    }
}

/// The one xattr a layer carries, as containerd's archive writer (and so BuildKit) does:
/// file capabilities. Others (`user.*` from an ADD'ed tar, SELinux labels, overlayfs
/// metadata) stay out of the tar.
fn is_layer_xattr(k: &str) -> bool {
    k == "security.capability"
}

/// Packs `dir` and discards the output: only the digests and sizes (used to check
/// snapshots and for tests).
pub fn layer_digests(dir: &Path, opts: &PackOptions) -> Result<PackedLayer> {
    pack_dir(dir, opts, std::io::sink()).map(|(_, p)| p)
}
