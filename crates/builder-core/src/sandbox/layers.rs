//! A read-only merged view of overlay-format layer directories, resolved inside its root.
//!
//! Each layer is a directory in overlayfs's upper format: a character device 0/0 is a
//! whiteout, a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`, written
//! where trusted xattrs are not allowed) hides the layers below it. Paths are resolved the way
//! the kernel does inside a root (`openat2(RESOLVE_IN_ROOT)`): symlinks are followed in the
//! merged namespace, absolute ones from its root. A `..` that would climb above the root is
//! reported as an escape instead of being clamped, so callers can refuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::SandboxError;

/// Symlink hops allowed while resolving one path (Linux's limit).
const MAX_HOPS: usize = 40;

/// The opaque-directory xattrs we honour, in the order we check them.
pub(crate) const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether `meta` is an overlay whiteout (a character device 0/0).
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 8];
        matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

/// An entry of the merged view.
#[derive(Debug, Clone)]
pub(crate) enum Node {
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

/// What a path resolves to.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    /// The existing directories from the root down (not including the root), each with the
    /// layers that make it.
    pub(crate) dirs: Vec<(OsString, Vec<usize>)>,
    /// What follows them.
    pub(crate) tail: Tail,
}

/// The end of a [`Resolution`].
#[derive(Debug, Clone)]
pub(crate) enum Tail {
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
    pub(crate) fn existing_rel(&self) -> PathBuf {
        let mut p: PathBuf = self.dirs.iter().map(|(n, _)| n.as_os_str()).collect();
        if let Tail::Other { name, .. } = &self.tail {
            p.push(name);
        }
        p
    }

    /// The canonical path of the whole target, relative to the root.
    pub(crate) fn full_rel(&self) -> PathBuf {
        let mut p = self.existing_rel();
        if let Tail::Missing(rest) = &self.tail {
            p.extend(rest);
        }
        p
    }
}

/// Splits an absolute path into components, resolving `.` and `..` lexically (as Docker's
/// `filepath.Clean` does). Climbing above the root is an escape.
pub(crate) fn clean_path(path: &str) -> Result<Vec<OsString>, SandboxError> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(SandboxError::PathEscapes {
                        path: path.to_owned(),
                    });
                }
            }
            c => out.push(c.into()),
        }
    }
    Ok(out)
}

/// A merged view of layer directories, topmost first.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    layers: Vec<PathBuf>,
}

impl Layers {
    pub(crate) fn new(layers: Vec<PathBuf>) -> Self {
        Layers { layers }
    }

    pub(crate) fn root(&self) -> Vec<usize> {
        (0..self.layers.len()).collect()
    }

    /// The host path of `rel` in layer `layer`.
    pub(crate) fn host(&self, layer: usize, rel: &Path) -> PathBuf {
        self.layers[layer].join(rel)
    }

    /// Looks `name` up in the directory `dir` (relative path) made of `dir_layers`.
    pub(crate) fn child(
        &self,
        dir_layers: &[usize],
        dir: &Path,
        name: &OsStr,
    ) -> Result<Option<Node>, SandboxError> {
        let mut dirs = Vec::new();
        for &i in dir_layers {
            let p = self.layers[i].join(dir).join(name);
            let meta = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(SandboxError::io("stat", p, e)),
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
    pub(crate) fn list(
        &self,
        dir_layers: &[usize],
        dir: &Path,
    ) -> Result<BTreeMap<OsString, Node>, SandboxError> {
        let mut names = BTreeSet::new();
        for &i in dir_layers {
            let p = self.layers[i].join(dir);
            for entry in fs::read_dir(&p).map_err(|e| SandboxError::io("read directory", &p, e))? {
                let entry = entry.map_err(|e| SandboxError::io("read directory", &p, e))?;
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
    pub(crate) fn dir_meta(
        &self,
        dir_layers: &[usize],
        dir: &Path,
    ) -> Result<Metadata, SandboxError> {
        let p = self.host(dir_layers[0], dir);
        fs::symlink_metadata(&p).map_err(|e| SandboxError::io("stat", p, e))
    }

    /// Resolves the absolute `path` inside the root. With `follow_final` a final symlink is
    /// followed too. `..` that climbs above the root, lexically or through a symlink, is an
    /// escape; a symlink loop or a non-directory in the middle is an error.
    pub(crate) fn resolve(
        &self,
        path: &str,
        follow_final: bool,
    ) -> Result<Resolution, SandboxError> {
        let mut todo: std::collections::VecDeque<OsString> = clean_path(path)?.into();
        let mut dirs: Vec<(OsString, Vec<usize>)> = Vec::new();
        let mut hops = 0;
        let root = self.root();
        while let Some(c) = todo.pop_front() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if dirs.pop().is_none() {
                    return Err(SandboxError::PathEscapes {
                        path: path.to_owned(),
                    });
                }
                continue;
            }
            let (dir_rel, dir_layers): (PathBuf, &[usize]) = (
                dirs.iter().map(|(n, _)| n.as_os_str()).collect(),
                dirs.last().map_or(&root[..], |(_, l)| &l[..]),
            );
            match self.child(dir_layers, &dir_rel, &c)? {
                None => {
                    let mut missing = vec![c];
                    for rest in todo.drain(..) {
                        match rest.as_bytes() {
                            b"." => {}
                            b".." => {
                                return Err(SandboxError::BadPath {
                                    path: path.to_owned(),
                                    reason: format!(
                                        "a symlink leads through the missing directory {}",
                                        dir_rel.join(&missing[0]).display()
                                    ),
                                });
                            }
                            _ => missing.push(rest),
                        }
                    }
                    return Ok(Resolution {
                        dirs,
                        tail: Tail::Missing(missing),
                    });
                }
                Some(Node::Dir(layers)) => dirs.push((c, layers)),
                Some(Node::Other { layer, meta }) => {
                    if meta.file_type().is_symlink() && (!todo.is_empty() || follow_final) {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(SandboxError::BadPath {
                                path: path.to_owned(),
                                reason: "too many levels of symbolic links".into(),
                            });
                        }
                        let host = self.layers[layer].join(&dir_rel).join(&c);
                        let target = fs::read_link(&host)
                            .map_err(|e| SandboxError::io("readlink", &host, e))?;
                        let target = target.as_os_str().as_bytes();
                        if target.starts_with(b"/") {
                            dirs.clear();
                        }
                        for comp in target.split(|b| *b == b'/').rev() {
                            if !comp.is_empty() {
                                todo.push_front(OsStr::from_bytes(comp).to_owned());
                            }
                        }
                        continue;
                    }
                    if !todo.is_empty() {
                        return Err(SandboxError::BadPath {
                            path: path.to_owned(),
                            reason: format!("{} is not a directory", dir_rel.join(&c).display()),
                        });
                    }
                    return Ok(Resolution {
                        dirs,
                        tail: Tail::Other {
                            name: c,
                            layer,
                            meta,
                        },
                    });
                }
            }
        }
        Ok(Resolution {
            dirs,
            tail: Tail::Dir,
        })
    }

    /// Reads a regular file of the merged root, following symlinks inside it. `None` when
    /// it does not exist.
    pub(crate) fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, SandboxError> {
        let res = match self.resolve(path, true) {
            Ok(r) => r,
            Err(SandboxError::BadPath { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Tail::Other { layer, meta, .. } = &res.tail else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let host = self.host(*layer, &res.existing_rel());
        let file = rustix::fs::open(
            &host,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| SandboxError::io("open", &host, e.into()))?;
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut fs::File::from(file), &mut buf)
            .map_err(|e| SandboxError::io("read", &host, e))?;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layers() -> (tempfile::TempDir, Layers) {
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
        (t, Layers::new(vec![top, bottom]))
    }

    #[test]
    fn lookups_whiteouts_and_symlinks() {
        let (_t, l) = layers();
        let names: Vec<_> = l
            .list(&l.root(), Path::new("etc"))
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(names, ["link", "new", "out", "passwd"]);
        assert!(l.read_file("/etc/passwd").unwrap().is_some());
        assert!(l.read_file("/etc/gone").unwrap().is_none());
        let r = l.resolve("/etc/link/x", true).unwrap();
        assert_eq!(r.full_rel(), Path::new("run/real/x"));
        assert!(matches!(
            l.resolve("/etc/out", true),
            Err(SandboxError::PathEscapes { .. })
        ));
        assert!(matches!(
            l.resolve("/../etc", true),
            Err(SandboxError::PathEscapes { .. })
        ));
        assert!(matches!(
            l.resolve("/etc/passwd/x", true),
            Err(SandboxError::BadPath { .. })
        ));
    }
}
