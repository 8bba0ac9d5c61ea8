//! Tampering: a snapshot changed on disk after it was committed is refused as a lower
//! (`Error::Tampered`) and made again from its layer by the next unpack.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Instant;

use layer_cache::{Cache, Compression, Error, LayerRef, SourceKind, layer_digests};

use crate::ensure;
use crate::roundtrip::{build_tree, full_apply, opts};
use crate::util::{TestResult, scratch};

/// The first regular file under `dir`, depth first in name order.
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for p in &names {
        let m = fs::symlink_metadata(p).ok()?;
        if m.is_file() && m.len() > 0 {
            return Some(p.clone());
        }
    }
    names
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .find_map(|p| first_file(p))
}

/// Each kind of change (same-size rewrite with the mtime put back, chmod, a new file, a
/// file swapped for a symlink) is caught before the snapshot is used, and the next unpack
/// makes it again with the layer's exact content.
pub fn changed_snapshot_is_refused_then_rebuilt() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path().join("cache"))?;
    let tree = s.path().join("tree");
    build_tree(&tree, 21, false);
    let o = opts(Compression::Gzip, SourceKind::Directory);
    let packed = cache.pack_dir(&tree, &o, None)?;
    let layers = [LayerRef::new(packed.digest.clone(), packed.diff_id.clone())];
    let apply = full_apply();
    let kinds = [
        "rewrite-same-size-and-mtime",
        "chmod",
        "new-file",
        "symlink-swap",
    ];
    for kind in kinds {
        let snap = cache.unpack_chain(&layers, &apply, None)?;
        cache.snapshots().lowerdirs(&snap.chain_id)?;
        let victim = first_file(&snap.path).ok_or("no regular file in the test tree")?;
        match kind {
            "rewrite-same-size-and-mtime" => {
                let before = fs::metadata(&victim)?;
                let len = before.len() as usize;
                fs::write(&victim, vec![b'X'; len])?;
                fs::File::options()
                    .write(true)
                    .open(&victim)?
                    .set_modified(before.modified()?)?;
                ensure!(
                    fs::metadata(&victim)?.len() == before.len()
                        && fs::metadata(&victim)?.modified()? == before.modified()?,
                    "the rewrite kept size and mtime"
                );
            }
            "chmod" => fs::set_permissions(&victim, fs::Permissions::from_mode(0o4777))?,
            "new-file" => fs::write(snap.path.join("planted"), "x")?,
            _ => {
                fs::remove_file(&victim)?;
                symlink("/etc/shadow", &victim)?;
            }
        }
        match cache.snapshots().lowerdirs(&snap.chain_id) {
            Err(Error::Tampered { path, .. }) => {
                ensure!(path == snap.path, "{kind}: names {}", path.display())
            }
            Err(e) => return Err(format!("{kind}: wrong error: {e}").into()),
            Ok(_) => return Err(format!("{kind}: a changed snapshot was used as a lower").into()),
        }
        let again = cache.unpack_chain(&layers, &apply, None)?;
        cache.snapshots().lowerdirs(&again.chain_id)?;
        let o_upper = opts(Compression::Gzip, SourceKind::OverlayUpper);
        ensure!(
            layer_digests(&again.path, &o_upper)?.diff_id == packed.diff_id,
            "{kind}: the rebuilt snapshot is not the layer"
        );
    }
    // The cost, for the note: one verification of this tree.
    let snap = cache.unpack_chain(&layers, &apply, None)?;
    let entries = walkdir_count(&snap.path);
    let t = Instant::now();
    cache.snapshots().verify(&snap.chain_id)?;
    eprintln!(
        "verify: {entries} entries in {:?} (this machine, under load)",
        t.elapsed()
    );
    Ok(())
}

fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        n += 1;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += walkdir_count(&e.path());
        }
    }
    n
}
