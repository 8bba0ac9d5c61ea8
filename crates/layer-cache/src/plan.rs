//! The sans-IO core of the applier: one tar header in, one validated action out.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::relpath::RelPath;
use crate::tar::{EntryHeader, EntryKind};

/// The prefix of a whiteout file name.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of an opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Names with this prefix are aufs metadata, ignored like Docker does.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";

/// Ownership, permissions, time and xattrs of a new file-system object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds; also used as access time).
    pub mtime: i64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
}

/// What applying one tar entry means, decided from its header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryAction {
    /// Nothing to do (the root directory's own entry, aufs metadata).
    Skip,
    /// Create (or update) a directory.
    Dir {
        /// Where.
        path: RelPath,
        /// Its metadata.
        meta: Meta,
    },
    /// Create a regular file from the entry's `size` bytes of data.
    File {
        /// Where.
        path: RelPath,
        /// Its metadata.
        meta: Meta,
        /// Data size.
        size: u64,
    },
    /// Create a symlink. The target is stored as is and never followed by the applier.
    Symlink {
        /// Where.
        path: RelPath,
        /// The link's contents.
        target: Vec<u8>,
        /// Its metadata (permission bits are ignored by Linux).
        meta: Meta,
    },
    /// Create a hard link to an existing file inside the root.
    HardLink {
        /// Where.
        path: RelPath,
        /// The existing file.
        target: RelPath,
    },
    /// Create a device node.
    Device {
        /// Where.
        path: RelPath,
        /// Character or block.
        kind: DeviceKind,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
        /// Its metadata.
        meta: Meta,
    },
    /// Create a named pipe.
    Fifo {
        /// Where.
        path: RelPath,
        /// Its metadata.
        meta: Meta,
    },
    /// `.wh.NAME`: `path` is deleted from the layers below.
    Whiteout {
        /// The deleted path.
        path: RelPath,
        /// The whiteout entry's own metadata (kept for overlay whiteouts).
        meta: Meta,
    },
    /// `.wh..wh..opq`: the directory hides everything below it from lower layers.
    Opaque {
        /// The opaque directory (possibly the root).
        dir: RelPath,
    },
}

fn meta(h: &EntryHeader) -> Result<Meta, Error> {
    let id = |v: u64, what: &str| {
        // 2^32 - 1 is (uid_t)-1, "no change" to chown: not a valid id.
        u32::try_from(v)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| Error::Unsupported {
                what: format!("{what} {v} is not a valid 32-bit id"),
            })
    };
    for name in h.xattrs.keys() {
        if name.is_empty() || name.contains('\0') {
            return Err(Error::UnsafePath {
                reason: "invalid xattr name",
            });
        }
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            return Err(Error::UnsafePath {
                reason: "overlayfs metadata xattrs (trusted.overlay.*, user.overlay.*) are not allowed in a layer",
            });
        }
    }
    Ok(Meta {
        mode: h.mode & 0o7777,
        uid: id(h.uid, "uid")?,
        gid: id(h.gid, "gid")?,
        mtime: h.mtime,
        xattrs: h.xattrs.clone(),
    })
}

/// Decides what a tar entry means, rejecting anything unsafe: absolute paths, `..`, NUL
/// bytes, whiteouts naming `.` or `..`, hard links leaving the root, overlayfs xattrs,
/// data on entries that cannot have any. Symlink targets are kept as they are: they are
/// never followed while applying.
pub fn plan_entry(h: &EntryHeader) -> Result<EntryAction, Error> {
    let path = RelPath::parse(&h.path)?;
    if path.is_root() {
        return match h.kind {
            EntryKind::Directory => Ok(EntryAction::Skip),
            _ => Err(Error::UnsafePath {
                reason: "a non-directory entry names the root",
            }),
        };
    }
    if !h.kind.has_data() && h.size != 0 {
        return Err(Error::MalformedTar {
            offset: 0,
            reason: format!("a {:?} entry carries data", h.kind),
        });
    }
    let name = path.file_name();
    if name.starts_with(WHITEOUT_PREFIX) {
        let parent = path.parent().unwrap_or_default();
        if h.kind == EntryKind::Directory {
            return Err(Error::UnsafePath {
                reason: "a whiteout must not be a directory",
            });
        }
        if name == OPAQUE_MARKER {
            return Ok(EntryAction::Opaque { dir: parent });
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(EntryAction::Skip);
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        let path = match target {
            b"" => {
                return Err(Error::UnsafePath {
                    reason: "whiteout with an empty name",
                });
            }
            b"." | b".." => {
                return Err(Error::UnsafePath {
                    reason: "whiteout names `.` or `..`",
                });
            }
            t => parent.join(t)?,
        };
        return Ok(EntryAction::Whiteout {
            path,
            meta: meta(h)?,
        });
    }
    Ok(match h.kind {
        EntryKind::Regular => EntryAction::File {
            path,
            meta: meta(h)?,
            size: h.size,
        },
        EntryKind::Directory => EntryAction::Dir {
            path,
            meta: meta(h)?,
        },
        EntryKind::Symlink => {
            if h.link_target.is_empty() || h.link_target.contains(&0) {
                return Err(Error::UnsafePath {
                    reason: "symlink target is empty or contains NUL",
                });
            }
            EntryAction::Symlink {
                path,
                target: h.link_target.clone(),
                meta: meta(h)?,
            }
        }
        EntryKind::HardLink => {
            let target = RelPath::parse(&h.link_target).map_err(|e| match e {
                Error::UnsafePath { reason } => Error::HardlinkTarget {
                    target: String::from_utf8_lossy(&h.link_target).into_owned(),
                    reason,
                },
                e => e,
            })?;
            if target.is_root() || target == path {
                return Err(Error::HardlinkTarget {
                    target: target.to_string(),
                    reason: "a hard link must point to another file",
                });
            }
            EntryAction::HardLink { path, target }
        }
        EntryKind::CharDevice | EntryKind::BlockDevice => EntryAction::Device {
            path,
            kind: if h.kind == EntryKind::CharDevice {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            },
            major: h.dev_major,
            minor: h.dev_minor,
            meta: meta(h)?,
        },
        EntryKind::Fifo => EntryAction::Fifo {
            path,
            meta: meta(h)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(path: &[u8], kind: EntryKind) -> Result<EntryAction, Error> {
        plan_entry(&EntryHeader::new(path, kind))
    }

    #[test]
    fn rejects_bad_paths() {
        for p in [
            &b"../x"[..],
            b"a/../../x",
            b"/etc/passwd",
            b"a\0b",
            b"",
            b".wh..",
            b"a/.wh..",
            b"a/.wh.",
            b"a/.wh..",
        ] {
            assert!(
                plan(p, EntryKind::Regular).is_err(),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        let mut h = EntryHeader::new("x", EntryKind::HardLink);
        h.link_target = b"../etc/passwd".to_vec();
        assert!(matches!(plan_entry(&h), Err(Error::HardlinkTarget { .. })));
        h.link_target = b"/etc/passwd".to_vec();
        assert!(matches!(plan_entry(&h), Err(Error::HardlinkTarget { .. })));
        let mut h = EntryHeader::new("x", EntryKind::Regular);
        h.xattrs
            .insert("trusted.overlay.opaque".into(), b"y".to_vec());
        assert!(plan_entry(&h).is_err());
    }

    #[test]
    fn whiteouts_and_normalisation() {
        assert_eq!(
            plan(b"./a/.wh.b", EntryKind::Regular).unwrap(),
            EntryAction::Whiteout {
                path: RelPath::parse(b"a/b").unwrap(),
                meta: meta(&EntryHeader::new("", EntryKind::Regular)).unwrap()
            }
        );
        assert_eq!(
            plan(b"a/.wh..wh..opq", EntryKind::Regular).unwrap(),
            EntryAction::Opaque {
                dir: RelPath::parse(b"a").unwrap()
            }
        );
        assert_eq!(
            plan(b"./", EntryKind::Directory).unwrap(),
            EntryAction::Skip
        );
        match plan(b".//a//b/./", EntryKind::Directory).unwrap() {
            EntryAction::Dir { path, .. } => assert_eq!(path.as_bytes(), b"a/b"),
            other => panic!("{other:?}"),
        }
    }
}
