//! A read-only merged view of a stack of overlay-format snapshot directories, as overlayfs
//! would show it, without mounting anything.
//!
//! Each layer is a directory in overlayfs's upper format: a character device 0/0 is a
//! whiteout, a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`, written
//! where trusted xattrs are not allowed) hides the layers below it. A directory is merged
//! only from the layers where it is a real directory, so no symlink of any layer is ever
//! followed on the host.
//!
//! Paths are resolved inside the root by one walk, [`resolve_in_root`]: symlinks are
//! followed in the merged namespace, absolute ones from its root, under one of two
//! [`Policy`]s. COPY, WORKDIR, `--chown` and cache mounts clamp `..` at the root (BuildKit's
//! rule); the sandbox refuses a path that climbs above it, as `openat2(RESOLVE_IN_ROOT)`
//! would contain it. COPY also walks the build context with it (`copy::tree`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Symlink hops allowed while resolving one path (Linux's MAXSYMLINKS is 40).
const MAX_HOPS: usize = 40;

/// The opaque-directory xattrs we honour, in the order we check them.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether `meta` is an overlay whiteout (a character device 0/0).
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque.
pub fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 8];
        matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

/// Why the view could not answer. The sandbox turns it into [`crate::SandboxError`]
/// variant for variant; the path-based calls COPY uses give the bare I/O error.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A file operation on a layer failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The path climbs above the root ([`Policy::Strict`]).
    #[error("{path}: resolves outside the root filesystem")]
    Escapes {
        /// The path as given.
        path: String,
    },
    /// The path cannot be resolved ([`Policy::Strict`]).
    #[error("{path}: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file read into memory is larger than the caller's cap.
    #[error("{path} in the image is larger than {limit} bytes, the most rbuild reads")]
    TooLarge {
        /// The path as given.
        path: String,
        /// The cap, in bytes.
        limit: u64,
    },
}

impl ViewError {
    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ViewError {
        let path = path.into();
        move |source| ViewError::Io { op, path, source }
    }
}

impl From<ViewError> for io::Error {
    fn from(e: ViewError) -> io::Error {
        match e {
            ViewError::Io { source, .. } => source,
            e @ ViewError::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// An entry of the merged view, found by path.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the entry lives on the host (inside one snapshot directory; for a directory,
    /// the topmost one that has it).
    pub host: PathBuf,
    /// Its metadata (not following a final symlink).
    pub meta: Metadata,
}

/// An entry of the merged view, by the layers that make it.
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory, merged from these layers (indices, topmost first).
    Dir(Vec<usize>),
    /// Anything else, taken from one layer.
    Other {
        /// The layer index.
        layer: usize,
        /// Its metadata (a symlink is not followed).
        meta: Metadata,
    },
}

/// What a path is in the view.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The existing directories from the root down (not including the root), each with the
    /// layers that make it.
    pub dirs: Vec<(OsString, Vec<usize>)>,
    /// What follows them.
    pub tail: Tail,
}

/// The end of a [`Resolution`].
#[derive(Debug, Clone)]
pub enum Tail {
    /// The path is the last of `dirs` (or the root when `dirs` is empty).
    Dir,
    /// The path is a non-directory (a symlink when not followed).
    Other {
        /// Its name.
        name: OsString,
        /// The layer it comes from.
        layer: usize,
        /// Its metadata.
        meta: Metadata,
    },
    /// These components do not exist (the first is missing from the last of `dirs`).
    Missing(Vec<OsString>),
}

impl Resolution {
    /// The canonical path of the existing part, relative to the root.
    pub fn existing_rel(&self) -> PathBuf {
        let mut p: PathBuf = self.dirs.iter().map(|(n, _)| n.as_os_str()).collect();
        if let Tail::Other { name, .. } = &self.tail {
            p.push(name);
        }
        p
    }

    /// The canonical path of the whole target, relative to the root.
    pub fn full_rel(&self) -> PathBuf {
        let mut p = self.existing_rel();
        if let Tail::Missing(rest) = &self.tail {
            p.extend(rest);
        }
        p
    }
}

/// Splits a path into normal components, resolving `.` and clamping `..` at the root.
pub fn clean_components(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Splits an absolute path into components, resolving `.` and `..` lexically (as Docker's
/// `filepath.Clean` does). Climbing above the root is an escape.
pub fn clean_path(path: &str) -> Result<Vec<OsString>, ViewError> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(ViewError::Escapes {
                        path: path.to_owned(),
                    });
                }
            }
            c => out.push(c.into()),
        }
    }
    Ok(out)
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// How [`resolve_in_root`] treats a path that climbs above the root or goes on below
/// something that is not a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// BuildKit's (continuity's `RootPath`): `..` stops at the root; a missing or
    /// non-directory component is a plain name and `..` after it is lexical.
    Clamp,
    /// The sandbox's: `..` above the root is an escape, and `..` below a missing directory
    /// or a name below a non-directory is an error.
    Strict,
}

/// What [`resolve_in_root`] finds at a path it asks about.
#[derive(Debug)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// A non-directory that is not a symlink.
    Other,
    /// A symlink, with its target.
    Symlink(PathBuf),
}

/// Why [`resolve_in_root`] failed.
#[derive(Debug)]
pub enum WalkError<E> {
    /// Looking a path up failed.
    Lookup(E),
    /// `..` climbed above the root ([`Policy::Strict`]).
    Escapes,
    /// `..` follows this missing directory ([`Policy::Strict`]).
    ThroughMissing(Vec<OsString>),
    /// A name follows this non-directory ([`Policy::Strict`]).
    NotADirectory(Vec<OsString>),
    /// More than [`MAX_HOPS`] symlinks.
    TooManyLinks,
}

/// Resolves the cleaned components `parts` inside a root that `find` looks paths up in,
/// following symlinks in every component, and in the last one too when `follow_last` is
/// set. Returns the components of the resolved path, which may not exist (and never holds
/// `.` or `..`).
pub fn resolve_in_root<E>(
    parts: &[OsString],
    follow_last: bool,
    policy: Policy,
    mut find: impl FnMut(&[OsString]) -> Result<Found, E>,
) -> Result<Vec<OsString>, WalkError<E>> {
    let strict = policy == Policy::Strict;
    let mut pending: Vec<OsString> = parts.iter().rev().cloned().collect();
    let mut done: Vec<OsString> = Vec::new();
    // `done.len()` when its last component was found missing: nothing below it exists.
    let mut missing: Option<usize> = None;
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name.is_empty() || name == "." {
            continue;
        }
        if name == ".." {
            if let Some(m) = missing {
                if strict {
                    return Err(WalkError::ThroughMissing(done[..m].to_vec()));
                }
                if done.len() == m {
                    missing = None;
                }
            }
            if done.pop().is_none() && strict {
                return Err(WalkError::Escapes);
            }
            continue;
        }
        done.push(name);
        if missing.is_some() || (pending.is_empty() && !follow_last) {
            continue;
        }
        match find(&done).map_err(WalkError::Lookup)? {
            Found::Dir => {}
            Found::Missing => missing = Some(done.len()),
            Found::Other if strict && !pending.is_empty() => {
                return Err(WalkError::NotADirectory(done));
            }
            Found::Other => {}
            Found::Symlink(target) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(WalkError::TooManyLinks);
                }
                done.pop();
                if target.is_absolute() {
                    done.clear();
                }
                // The target's components (`..` included) go in front of the rest.
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(done)
}

/// A merged view of snapshot directories, topmost first.
#[derive(Debug, Clone, Default)]
pub struct LayeredView {
    layers: Vec<PathBuf>,
}

impl LayeredView {
    /// A view of `layers`, topmost first.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// The snapshot directories, topmost first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The layers that make the root directory (all of them).
    pub fn root(&self) -> Vec<usize> {
        (0..self.layers.len()).collect()
    }

    /// The host path of `rel` in layer `layer`.
    pub fn host(&self, layer: usize, rel: &Path) -> PathBuf {
        self.layers[layer].join(rel)
    }

    /// Looks `name` up in the directory `dir` (relative path) made of `dir_layers`.
    pub fn child(
        &self,
        dir_layers: &[usize],
        dir: &Path,
        name: &OsStr,
    ) -> Result<Option<Node>, ViewError> {
        let mut dirs = Vec::new();
        for &i in dir_layers {
            let p = self.layers[i].join(dir).join(name);
            let meta = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(ViewError::io("stat", p)(e)),
            };
            if is_whiteout(&meta) {
                break;
            }
            if meta.is_dir() {
                dirs.push(i);
                if is_opaque(&p) {
                    break;
                }
                continue;
            }
            if dirs.is_empty() {
                return Ok(Some(Node::Other { layer: i, meta }));
            }
            // A non-directory below a directory is hidden by it and ends the merge.
            break;
        }
        Ok(if dirs.is_empty() {
            None
        } else {
            Some(Node::Dir(dirs))
        })
    }

    /// Lists the merged directory `dir` made of `dir_layers`, sorted by name.
    pub fn list(
        &self,
        dir_layers: &[usize],
        dir: &Path,
    ) -> Result<BTreeMap<OsString, Node>, ViewError> {
        let mut names = BTreeSet::new();
        for &i in dir_layers {
            let p = self.layers[i].join(dir);
            for entry in fs::read_dir(&p).map_err(ViewError::io("read directory", &p))? {
                let entry = entry.map_err(ViewError::io("read directory", &p))?;
                names.insert(entry.file_name());
            }
        }
        let mut out = BTreeMap::new();
        for name in names {
            if let Some(node) = self.child(dir_layers, dir, &name)? {
                out.insert(name, node);
            }
        }
        Ok(out)
    }

    /// The metadata of a directory made of `dir_layers` (from its topmost layer).
    pub fn dir_meta(&self, dir_layers: &[usize], dir: &Path) -> Result<Metadata, ViewError> {
        let p = self.host(dir_layers[0], dir);
        fs::symlink_metadata(&p).map_err(ViewError::io("stat", p))
    }

    /// Walks the cleaned relative path `rel` down from the root without following symlinks.
    /// `None` when a non-directory stands before its end.
    fn locate(&self, rel: &[OsString]) -> Result<Option<Resolution>, ViewError> {
        let root = self.root();
        let mut dirs: Vec<(OsString, Vec<usize>)> = Vec::new();
        for (i, name) in rel.iter().enumerate() {
            // Only plain names: `..` or a `/` would reach outside a layer on the host.
            if name == ".." || name.as_bytes().contains(&b'/') {
                return Ok(None);
            }
            let dir_layers = dirs.last().map_or(&root[..], |(_, l)| &l[..]);
            match self.child(dir_layers, &join(&rel[..i]), name)? {
                Some(Node::Dir(layers)) => dirs.push((name.clone(), layers)),
                Some(Node::Other { layer, meta }) if i + 1 == rel.len() => {
                    let name = name.clone();
                    let tail = Tail::Other { name, layer, meta };
                    return Ok(Some(Resolution { dirs, tail }));
                }
                Some(Node::Other { .. }) => return Ok(None),
                None => {
                    let tail = Tail::Missing(rel[i..].to_vec());
                    return Ok(Some(Resolution { dirs, tail }));
                }
            }
        }
        Ok(Some(Resolution {
            dirs,
            tail: Tail::Dir,
        }))
    }

    /// What [`resolve_in_root`] needs to know about `rel`.
    fn find(&self, rel: &[OsString]) -> Result<Found, ViewError> {
        let Some(res) = self.locate(rel)? else {
            return Ok(Found::Missing);
        };
        Ok(match res.tail {
            Tail::Dir => Found::Dir,
            Tail::Missing(_) => Found::Missing,
            Tail::Other { layer, meta, .. } if meta.file_type().is_symlink() => {
                let host = self.host(layer, &join(rel));
                Found::Symlink(fs::read_link(&host).map_err(ViewError::io("readlink", &host))?)
            }
            Tail::Other { .. } => Found::Other,
        })
    }

    /// Looks up a cleaned relative path without following symlinks in it.
    pub fn lookup(&self, rel: &[OsString]) -> io::Result<Option<Entry>> {
        if self.layers.is_empty() {
            return Ok(None);
        }
        let Some(res) = self.locate(rel)? else {
            return Ok(None);
        };
        let top = match &res.tail {
            Tail::Missing(_) => return Ok(None),
            Tail::Other { layer, meta, .. } => {
                let host = self.host(*layer, &join(rel));
                return Ok(Some(Entry {
                    host,
                    meta: meta.clone(),
                }));
            }
            Tail::Dir => res.dirs.last().map_or(0, |(_, layers)| layers[0]),
        };
        let host = self.host(top, &join(rel));
        let meta = fs::symlink_metadata(&host)?;
        Ok(Some(Entry { host, meta }))
    }

    /// Resolves `path` (absolute or relative to the root) inside the root with
    /// [`Policy::Clamp`], following symlinks in every component, and in the last one too
    /// when `follow_last` is set. Returns the cleaned components of the resolved path; it
    /// may not exist.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<Vec<OsString>> {
        let parts = clean_components(path);
        resolve_in_root(&parts, follow_last, Policy::Clamp, |rel| self.find(rel)).map_err(|e| {
            match e {
                WalkError::Lookup(e) => e.into(),
                // The other errors are [`Policy::Strict`]'s.
                _ => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "too many levels of symbolic links resolving {}",
                        path.display()
                    ),
                ),
            }
        })
    }

    /// Looks up `path` after resolving it inside the root.
    pub fn stat(
        &self,
        path: &Path,
        follow_last: bool,
    ) -> io::Result<Option<(Vec<OsString>, Entry)>> {
        let rel = self.resolve(path, follow_last)?;
        Ok(self.lookup(&rel)?.map(|e| (rel, e)))
    }

    /// Lists a directory of the merged view (by cleaned relative path, not resolving
    /// symlinks), in name order; empty when it is not a directory.
    pub fn read_dir(&self, rel: &[OsString]) -> io::Result<BTreeMap<OsString, Entry>> {
        let mut out = BTreeMap::new();
        let Some(Resolution {
            dirs,
            tail: Tail::Dir,
        }) = self.locate(rel)?
        else {
            return Ok(out);
        };
        let root = self.root();
        let dir_layers = dirs.last().map_or(&root[..], |(_, l)| &l[..]);
        let dir = join(rel);
        for (name, node) in self.list(dir_layers, &dir)? {
            let child = dir.join(&name);
            let entry = match node {
                Node::Dir(layers) => {
                    let host = self.host(layers[0], &child);
                    let meta = fs::symlink_metadata(&host)?;
                    Entry { host, meta }
                }
                Node::Other { layer, meta } => Entry {
                    host: self.host(layer, &child),
                    meta,
                },
            };
            out.insert(name, entry);
        }
        Ok(out)
    }

    /// Reads a whole small file of the merged view (resolving symlinks inside the root with
    /// [`Policy::Clamp`]). `None` when it is not a regular file.
    /// More than `limit` bytes is an error ([`ViewError::TooLarge`] as `InvalidData`).
    pub fn read_file(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let rel = self.resolve(path, true)?;
        match self.locate(&rel)? {
            Some(res) => Ok(self.read_regular(&res, &path.to_string_lossy(), limit)?),
            None => Ok(None),
        }
    }

    /// Resolves the absolute `path` inside the root with [`Policy::Strict`]. With
    /// `follow_final` a final symlink is followed too. `..` that climbs above the root,
    /// lexically or through a symlink, is an escape; a symlink loop or a non-directory in
    /// the middle is an error.
    pub fn resolve_strict(&self, path: &str, follow_final: bool) -> Result<Resolution, ViewError> {
        let bad = |reason: String| ViewError::BadPath {
            path: path.to_owned(),
            reason,
        };
        let parts = clean_path(path)?;
        let rel = resolve_in_root(&parts, follow_final, Policy::Strict, |rel| self.find(rel))
            .map_err(|e| match e {
                WalkError::Lookup(e) => e,
                WalkError::Escapes => ViewError::Escapes {
                    path: path.to_owned(),
                },
                WalkError::ThroughMissing(dir) => bad(format!(
                    "a symlink leads through the missing directory {}",
                    join(&dir).display()
                )),
                WalkError::NotADirectory(p) => {
                    bad(format!("{} is not a directory", join(&p).display()))
                }
                WalkError::TooManyLinks => bad("too many levels of symbolic links".into()),
            })?;
        // `None` only when a directory was replaced while we looked.
        self.locate(&rel)?
            .ok_or_else(|| bad("a component is not a directory".into()))
    }

    /// Reads a regular file of the merged root, resolved with [`Policy::Strict`]. `None`
    /// when it does not exist or cannot be reached; more than `limit` bytes is
    /// [`ViewError::TooLarge`].
    pub fn read_file_strict(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ViewError> {
        match self.resolve_strict(path, true) {
            Ok(res) => self.read_regular(&res, path, limit),
            Err(ViewError::BadPath { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The content of a resolved regular file (opened without following a symlink on the
    /// host), `None` for anything else. The size is checked before reading, and the read
    /// stops past `limit` in case the file grows meanwhile.
    fn read_regular(
        &self,
        res: &Resolution,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ViewError> {
        let Tail::Other { layer, meta, .. } = &res.tail else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let too_large = || ViewError::TooLarge {
            path: path.to_owned(),
            limit,
        };
        if meta.len() > limit {
            return Err(too_large());
        }
        let host = self.host(*layer, &res.existing_rel());
        let file = rustix::fs::open(
            &host,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| ViewError::io("open", &host)(e.into()))?;
        let mut buf = Vec::new();
        fs::File::from(file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(ViewError::io("read", &host))?;
        if buf.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(Some(buf))
    }
}
#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::SandboxError;

    fn comps(p: &str) -> Vec<OsString> {
        clean_components(Path::new(p))
    }

    #[test]
    fn upper_layers_shadow_and_symlinks_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("usr/bin/a"), "lower").unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("usr/bin", lower.join("bin")).unwrap();
        symlink("../../../../etc/passwd", lower.join("usr/bin/escape")).unwrap();
        fs::create_dir_all(upper.join("usr/bin")).unwrap();
        fs::write(upper.join("usr/bin/a"), "upper").unwrap();
        let v = LayeredView::new(vec![upper.clone(), lower.clone()]);

        // /bin/a resolves through the symlink to the upper's usr/bin/a.
        let (rel, e) = v.stat(Path::new("/bin/a"), true).unwrap().unwrap();
        assert_eq!(rel, comps("usr/bin/a"));
        assert_eq!(fs::read_to_string(e.host).unwrap(), "upper");
        // `..` past the root clamps at the root: the link reaches the view's own /etc/passwd.
        let (rel, _) = v.stat(Path::new("/bin/escape"), true).unwrap().unwrap();
        assert_eq!(rel, comps("etc/passwd"));
        assert!(
            v.read_file(Path::new("/etc/passwd"), 1 << 20)
                .unwrap()
                .is_some()
        );
        assert!(v.lookup(&comps("missing/x")).unwrap().is_none());
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_entries() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("d/sub")).unwrap();
        fs::write(lower.join("d/a"), "").unwrap();
        fs::write(lower.join("gone"), "").unwrap();
        fs::create_dir_all(upper.join("d")).unwrap();
        fs::write(upper.join("d/only"), "").unwrap();
        fs::write(upper.join("notdir"), "").unwrap();
        fs::create_dir_all(lower.join("notdir")).unwrap();
        fs::write(lower.join("notdir/child"), "").unwrap();
        let v = LayeredView::new(vec![upper.clone(), lower.clone()]);
        let names: Vec<_> = v.read_dir(&comps("d")).unwrap().into_keys().collect();
        assert_eq!(names, ["a", "only", "sub"]);
        // A file in the upper hides a lower directory of the same name and its children.
        assert!(v.lookup(&comps("notdir/child")).unwrap().is_none());

        // Whiteouts need mknod (root); opaque needs trusted.* xattrs (root).
        if rustix::process::geteuid().is_root() {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                upper.join("gone"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
            assert!(v.lookup(&comps("gone")).unwrap().is_none());
            rustix::fs::lsetxattr(
                upper.join("d"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
            let names: Vec<_> = v.read_dir(&comps("d")).unwrap().into_keys().collect();
            assert_eq!(names, ["only"]);
            assert!(v.lookup(&comps("d/a")).unwrap().is_none());
        }
    }

    /// The sandbox's stack: a whiteout, symlinks that stay inside and ones that escape.
    fn strict_layers() -> (tempfile::TempDir, LayeredView) {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("top");
        let bottom = t.path().join("bottom");
        for d in ["etc", "usr/lib", "run/real"] {
            fs::create_dir_all(bottom.join(d)).unwrap();
        }
        fs::write(bottom.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(bottom.join("etc/gone"), "x").unwrap();
        fs::write(bottom.join("usr/lib/a"), "a").unwrap();
        symlink("../run/real", bottom.join("etc/link")).unwrap();
        symlink("/../../..", bottom.join("etc/out")).unwrap();
        fs::create_dir_all(top.join("etc")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        fs::write(top.join("etc/new"), "n").unwrap();
        (t, LayeredView::new(vec![top, bottom]))
    }

    #[test]
    fn strict_lookups_whiteouts_and_symlinks() {
        let (_t, l) = strict_layers();
        let resolve = |p: &str| l.resolve_strict(p, true).map_err(SandboxError::from);
        let names: Vec<_> = l
            .list(&l.root(), Path::new("etc"))
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(names, ["link", "new", "out", "passwd"]);
        assert!(
            l.read_file_strict("/etc/passwd", 1 << 20)
                .unwrap()
                .is_some()
        );
        assert!(l.read_file_strict("/etc/gone", 1 << 20).unwrap().is_none());
        let r = resolve("/etc/link/x").unwrap();
        assert_eq!(r.full_rel(), Path::new("run/real/x"));
        assert!(matches!(
            resolve("/etc/out"),
            Err(SandboxError::PathEscapes { .. })
        ));
        assert!(matches!(
            resolve("/../etc"),
            Err(SandboxError::PathEscapes { .. })
        ));
        assert!(matches!(
            resolve("/etc/passwd/x"),
            Err(SandboxError::BadPath { .. })
        ));
    }

    /// After a missing component, `..` is lexical under both policies' rules: clamped
    /// resolution never hands back a `..` (which a caller would apply on the host), strict
    /// resolution refuses it.
    #[test]
    fn dotdot_after_a_missing_component() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("l");
        fs::create_dir_all(l.join("usr/bin")).unwrap();
        symlink("missing/../../../usr/bin/../x", l.join("link")).unwrap();
        symlink("missing/../bin", l.join("usr/rel")).unwrap();
        let v = LayeredView::new(vec![l]);
        assert_eq!(v.resolve(Path::new("/link"), true).unwrap(), comps("usr/x"));
        assert_eq!(
            v.resolve(Path::new("/usr/rel/sh"), true).unwrap(),
            comps("usr/bin/sh")
        );
        assert!(matches!(
            v.resolve_strict("/link", true),
            Err(ViewError::BadPath { .. })
        ));
    }

    /// A directory is merged only from layers where it is a directory: a lower layer's
    /// symlink of the same name (here to a host directory) is hidden, never followed.
    #[test]
    fn lower_symlinks_under_an_upper_directory_are_not_followed_on_the_host() {
        let t = tempfile::tempdir().unwrap();
        let host_dir = t.path().join("host");
        fs::create_dir_all(&host_dir).unwrap();
        fs::write(host_dir.join("secret"), "host").unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(&lower).unwrap();
        symlink(&host_dir, lower.join("a")).unwrap();
        fs::create_dir_all(upper.join("a")).unwrap();
        let v = LayeredView::new(vec![upper, lower]);
        assert!(v.lookup(&comps("a/secret")).unwrap().is_none());
        assert!(v.read_dir(&comps("a")).unwrap().is_empty());
        assert!(
            v.read_file(Path::new("/a/secret"), 1 << 20)
                .unwrap()
                .is_none()
        );
    }

    /// An opaque directory hides the lower layers' contents at every depth below it.
    #[test]
    fn an_opaque_ancestor_hides_lower_subdirectories() {
        if !rustix::process::geteuid().is_root() {
            return; // trusted.* xattrs need root.
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("d/sub")).unwrap();
        fs::write(lower.join("d/sub/x"), "").unwrap();
        fs::create_dir_all(upper.join("d")).unwrap();
        rustix::fs::lsetxattr(
            upper.join("d"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let v = LayeredView::new(vec![upper, lower]);
        assert!(v.lookup(&comps("d/sub")).unwrap().is_none());
        assert!(v.read_dir(&comps("d/sub")).unwrap().is_empty());
    }
}
