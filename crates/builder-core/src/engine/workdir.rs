//! WORKDIR's directory creation, written as an overlay-format diff.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;

use crate::fsview::LayeredView;

/// Writes into the empty directory `out` the diff that `mkdir -p dir` (new directories owned
/// by `owner`) makes on top of `view`: nothing when `dir` already exists; otherwise the new
/// directories, and their existing parents copied up with their metadata, as overlayfs does.
pub(super) fn make_workdir(
    view: &LayeredView,
    dir: &str,
    owner: (u32, u32),
    out: &Path,
) -> io::Result<()> {
    let rel = view.resolve(Path::new(dir), true)?;
    match view.lookup(&rel)? {
        Some(e) if e.meta.is_dir() => return Ok(()),
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{dir} exists and is not a directory"),
            ));
        }
        None => {}
    }
    let mut copied_up = Vec::new();
    for depth in 1..=rel.len() {
        let prefix = &rel[..depth];
        let target = out.join(prefix.iter().collect::<std::path::PathBuf>());
        match view.lookup(prefix)? {
            Some(e) if e.meta.is_dir() => {
                fs::create_dir(&target)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(e.meta.mode() & 0o7777))?;
                lchown(&target, Some(e.meta.uid()), Some(e.meta.gid()))?;
                copied_up.push((target, e.meta));
            }
            Some(_) => {
                let shown: Vec<_> = prefix.iter().map(|c| c.to_string_lossy()).collect();
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("/{} is not a directory", shown.join("/")),
                ));
            }
            None => {
                fs::create_dir(&target)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
                lchown(&target, Some(owner.0), Some(owner.1))?;
            }
        }
    }
    // Parents keep their mtimes (set last: creating children touched them).
    for (target, meta) in copied_up.iter().rev() {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                meta.mtime().max(0) as u64,
                meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            );
        File::open(target)?.set_modified(t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_directories_give_an_empty_diff_and_new_ones_are_owned() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        fs::create_dir_all(lower.join("usr/src")).unwrap();
        std::os::unix::fs::symlink("usr/src", lower.join("src")).unwrap();
        let view = LayeredView::new(vec![lower]);
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        make_workdir(&view, "/usr/src", (0, 0), &out).unwrap();
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        // Through a symlink, into the real place; the parent is copied up.
        make_workdir(&view, "/src/app/x", (1001, 1001), &out).unwrap();
        let app = out.join("usr/src/app/x");
        assert!(app.is_dir());
        if rustix::process::geteuid().is_root() {
            assert_eq!(fs::metadata(&app).unwrap().uid(), 1001);
            assert_eq!(fs::metadata(out.join("usr")).unwrap().uid(), 0);
        }
    }
}
