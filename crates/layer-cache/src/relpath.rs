//! `RelPath`: a normalised path inside a root, validated when built.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Error;

/// Longest path accepted inside a root (Linux `PATH_MAX`).
const PATH_MAX: usize = 4096;
/// Longest single component (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// A relative path inside a root: no `..`, not absolute, no NUL, components of at most 255
/// bytes, `.` components and repeated or trailing slashes removed. The empty path is the
/// root itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates and normalises a path as found in a tar archive. A single leading `./` is
    /// accepted (archives made with `tar -C dir .` have it); a leading `/` is not.
    pub fn parse(raw: &[u8]) -> Result<RelPath, Error> {
        let bad = |reason| Error::UnsafePath { reason };
        if raw.is_empty() {
            return Err(bad("empty path"));
        }
        if raw.contains(&0) {
            return Err(bad("NUL byte in the path"));
        }
        if raw[0] == b'/' {
            return Err(bad("absolute path"));
        }
        if raw.len() > PATH_MAX {
            return Err(bad("path longer than 4096 bytes"));
        }
        let mut out = Vec::with_capacity(raw.len());
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => return Err(bad("path contains a `..` component")),
                c if c.len() > NAME_MAX => {
                    return Err(bad("path component longer than 255 bytes"));
                }
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Ok(RelPath(out))
    }

    /// The root itself.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalised bytes, such as `usr/bin/env`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a relative [`Path`].
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The parent directory (the root for a top-level path), or `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        })
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// This path with one more component. `name` must be a single valid component.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, Error> {
        let bad = |reason| Error::UnsafePath { reason };
        match name {
            b"" | b"." => return Err(bad("empty path component")),
            b".." => return Err(bad("path contains a `..` component")),
            n if n.contains(&b'/') || n.contains(&0) => {
                return Err(bad("a name must be one path component"));
            }
            n if n.len() > NAME_MAX => return Err(bad("path component longer than 255 bytes")),
            _ => {}
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        if v.len() > PATH_MAX {
            return Err(bad("path longer than 4096 bytes"));
        }
        Ok(RelPath(v))
    }

    /// The components, top first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.0))
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}
