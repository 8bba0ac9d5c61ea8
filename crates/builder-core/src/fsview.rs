//! A read-only merged view of a stack of snapshot directories, as overlayfs would show it.
//!
//! Snapshots hold layers in overlay format: a character device 0/0 is a whiteout, a directory
//! with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) hides everything below it. The
//! view resolves paths inside its root (symlinks are followed in the merged namespace and can
//! never lead out of it), looks entries up and lists directories, without mounting anything.
//! COPY uses it to find where a destination really is, `--chown` to read `/etc/passwd`, and
//! `COPY --from` to read a stage's files.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Symlink hops allowed while resolving one path (Linux's MAXSYMLINKS is 40).
const MAX_HOPS: usize = 40;

/// An entry of the merged view.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Where the entry lives on the host (inside one snapshot directory).
    pub(crate) host: PathBuf,
    /// Its metadata (not following a final symlink).
    pub(crate) meta: Metadata,
}

/// A merged view of snapshot directories, topmost first.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayeredView {
    layers: Vec<PathBuf>,
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut buf = [0u8; 4];
            matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf[0] == b'y')
        })
}

/// Splits a path into normal components, resolving `.` and clamping `..` at the root.
pub(crate) fn clean_components(path: &Path) -> Vec<OsString> {
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

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

impl LayeredView {
    /// A view of `layers`, topmost first.
    pub(crate) fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// The snapshot directories, topmost first.
    pub(crate) fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// Looks up a cleaned relative path without following symlinks in it.
    pub(crate) fn lookup(&self, rel: &[OsString]) -> io::Result<Option<Entry>> {
        if rel.is_empty() {
            // The root always exists; report the topmost layer's root directory.
            return match self.layers.first() {
                Some(top) => Ok(Some(Entry {
                    host: top.clone(),
                    meta: fs::symlink_metadata(top)?,
                })),
                None => Ok(None),
            };
        }
        let relpath = join(rel);
        'layers: for layer in &self.layers {
            let host = layer.join(&relpath);
            match fs::symlink_metadata(&host) {
                Ok(meta) if is_whiteout(&meta) => return Ok(None),
                Ok(meta) => return Ok(Some(Entry { host, meta })),
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {}
                Err(e) => return Err(e),
            }
            // Absent here: does this layer hide the path from the layers below?
            for depth in 1..rel.len() {
                let anc = layer.join(join(&rel[..depth]));
                match fs::symlink_metadata(&anc) {
                    Ok(m) if !m.is_dir() => return Ok(None),
                    Ok(_) if is_opaque(&anc) => return Ok(None),
                    Ok(_) => {}
                    Err(_) => continue 'layers,
                }
            }
        }
        Ok(None)
    }

    /// Resolves `path` (absolute or relative to the root) inside the root, following
    /// symlinks in every component, and in the last one too when `follow_last` is set.
    /// Returns the cleaned components of the resolved path; it may not exist.
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<Vec<OsString>> {
        let mut pending: Vec<OsString> = clean_components(path);
        pending.reverse();
        let mut done: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            if name == "." {
                continue;
            }
            done.push(name);
            let last = pending.is_empty();
            if last && !follow_last {
                break;
            }
            let Some(entry) = self.lookup(&done)? else {
                // A missing component: the rest cannot contain symlinks to resolve.
                done.extend(pending.drain(..).rev());
                break;
            };
            if entry.meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "too many levels of symbolic links resolving {}",
                            path.display()
                        ),
                    ));
                }
                let target = fs::read_link(&entry.host)?;
                done.pop();
                if target.is_absolute() {
                    done.clear();
                }
                // Push the target's components (raw, `..` included) in front of the rest.
                let mut parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
        }
        Ok(done)
    }

    /// Looks up `path` after resolving it inside the root.
    pub(crate) fn stat(
        &self,
        path: &Path,
        follow_last: bool,
    ) -> io::Result<Option<(Vec<OsString>, Entry)>> {
        let rel = self.resolve(path, follow_last)?;
        Ok(self.lookup(&rel)?.map(|e| (rel, e)))
    }

    /// Lists a directory of the merged view (by cleaned relative path, not resolving
    /// symlinks), in name order.
    pub(crate) fn read_dir(&self, rel: &[OsString]) -> io::Result<BTreeMap<OsString, Entry>> {
        let mut out: BTreeMap<OsString, Entry> = BTreeMap::new();
        let mut hidden: Vec<OsString> = Vec::new();
        let relpath = join(rel);
        'layers: for layer in &self.layers {
            // Stop at a layer where an ancestor is not a directory or is opaque.
            for depth in 1..=rel.len() {
                let anc = layer.join(join(&rel[..depth]));
                match fs::symlink_metadata(&anc) {
                    Ok(m) if !m.is_dir() => break 'layers,
                    Ok(_) => {}
                    Err(_) => continue 'layers,
                }
            }
            let dir = layer.join(&relpath);
            for ent in fs::read_dir(&dir)? {
                let ent = ent?;
                let name = ent.file_name();
                if out.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                let meta = fs::symlink_metadata(ent.path())?;
                if is_whiteout(&meta) {
                    hidden.push(name);
                } else {
                    out.insert(
                        name,
                        Entry {
                            host: ent.path(),
                            meta,
                        },
                    );
                }
            }
            if is_opaque(&dir) {
                break;
            }
            // Ancestors that are opaque in this layer hide the lower layers too.
            for depth in 1..rel.len() {
                if is_opaque(&layer.join(join(&rel[..depth]))) {
                    break 'layers;
                }
            }
        }
        Ok(out)
    }

    /// Reads a whole small file of the merged view (resolving symlinks inside the root).
    pub(crate) fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.stat(path, true)? {
            Some((_, e)) if e.meta.is_file() => fs::read(&e.host).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

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
        assert!(v.read_file(Path::new("/etc/passwd")).unwrap().is_some());
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
}
