//! Root and rootless builds must not share a cache silently: the files in its snapshots
//! are owned by the uids of the namespace that wrote them, and a process with another id
//! mapping sees other owners (a rootless user's files look `nobody`-owned to root's
//! image packer, root's files are not writable to the rootless namespace).
//!
//! The first build in a cache records this process's id mapping (`/proc/self/uid_map` and
//! `gid_map`, which say where each namespace id lives on the host) in `<cache>/id-map`;
//! every later build compares, and a different mapping is [`Error::CacheOwners`].

use std::io::Write as _;
use std::path::Path;

use super::Error;

const FILE: &str = "id-map";

/// This process's id mapping, one normalised line per map.
fn current_map() -> String {
    let norm = |path: &str| -> String {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "uid_map: {}\ngid_map: {}\n",
        norm("/proc/self/uid_map"),
        norm("/proc/self/gid_map")
    )
}

/// Checks that `dir` (an opened cache) was written under this process's id mapping, and
/// records it when the cache has no record yet.
pub(crate) fn check(dir: &Path) -> Result<(), Error> {
    let path = dir.join(FILE);
    let this = current_map();
    let io = |e: std::io::Error| Error::CacheOwners {
        dir: dir.to_owned(),
        reason: format!("{}: {e}", path.display()),
    };
    match std::fs::read_to_string(&path) {
        Ok(recorded) if recorded == this => Ok(()),
        Ok(recorded) => Err(Error::CacheOwners {
            dir: dir.to_owned(),
            reason: format!(
                "it was written with another id mapping ({}), this build runs with ({}) as {}: \
                 the owners of its files would be wrong. Give this mode its own --cache-dir \
                 (root and rootless users have their own default, $XDG_CACHE_HOME/rbuild)",
                recorded.trim().replace('\n', "; "),
                this.trim().replace('\n', "; "),
                crate::Privilege::current().name()
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Written aside and renamed: a concurrent build sees all of it or nothing.
            let tmp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(this.as_bytes()).map_err(io)?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_build_records_later_ones_compare() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path()).unwrap();
        let recorded = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(recorded.starts_with("uid_map: "), "{recorded}");
        check(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "uid_map: 0 1001 1\ngid_map: 0 1001 1\n",
        )
        .unwrap();
        let e = check(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("another id mapping (uid_map: 0 1001 1; gid_map: 0 1001 1)")
                && e.contains("its own --cache-dir"),
            "{e}"
        );
    }
}
