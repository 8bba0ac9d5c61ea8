//! Tampering: a snapshot changed on disk after it was committed is refused as a lower
//! (`Error::Tampered`) and made again from its layer by the next unpack; a blob changed in
//! the content store is `Error::BlobTampered`, removed, and reported missing.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Instant;

use layer_cache::{Cache, Compression, ContentStore, Error, LayerRef, SourceKind, layer_digests};

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

/// Each kind of change to a stored blob (a same-size rewrite with the mtime put back, a
/// truncation, an append, the file swapped for another blob's bytes by rename) is caught by
/// `check` and `contains` before the blob is used: the blob is removed, the next ingest
/// stores it again, and an untouched blob stays trusted (stamped) without being re-hashed.
pub fn changed_blob_is_removed_not_used() -> TestResult {
    let s = scratch();
    let store = ContentStore::open(&s.path().join("cache"))?;
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let other = store.put_bytes(b"another blob")?;
    for kind in [
        "rewrite-same-size-and-mtime",
        "truncate",
        "append",
        "rename-over",
    ] {
        let info = store.put_bytes(&content)?;
        let path = store.path(&info.digest);
        ensure!(
            store.contains(&info.digest),
            "{kind}: a fresh blob is intact"
        );
        let before = fs::metadata(&path)?;
        match kind {
            "rewrite-same-size-and-mtime" => {
                let mut bytes = fs::read(&path)?;
                bytes[1000] ^= 0xff;
                fs::write(&path, &bytes)?;
                fs::File::options()
                    .write(true)
                    .open(&path)?
                    .set_modified(before.modified()?)?;
                let after = fs::metadata(&path)?;
                ensure!(
                    after.len() == before.len() && after.modified()? == before.modified()?,
                    "the rewrite kept size and mtime"
                );
            }
            "truncate" => fs::File::options()
                .write(true)
                .open(&path)?
                .set_len(before.len() / 2)?,
            "append" => {
                use std::io::Write as _;
                fs::File::options()
                    .append(true)
                    .open(&path)?
                    .write_all(b"x")?;
            }
            _ => {
                let copy = s.path().join("copy");
                fs::copy(store.path(&other.digest), &copy)?;
                fs::rename(&copy, &path)?;
            }
        }
        match store.check(&info.digest) {
            Err(Error::BlobTampered {
                digest, path: p, ..
            }) => {
                ensure!(
                    digest == info.digest && p == path,
                    "{kind}: names {}",
                    p.display()
                )
            }
            Err(e) => return Err(format!("{kind}: wrong error: {e}").into()),
            Ok(_) => return Err(format!("{kind}: a changed blob was reported intact").into()),
        }
        ensure!(
            !path.exists(),
            "{kind}: the changed blob is still in the store"
        );
        ensure!(
            !store.contains(&info.digest),
            "{kind}: contains() after removal"
        );
        let again = store.put_bytes(&content)?;
        ensure!(again.digest == info.digest, "{kind}: stored again");
        store.verify(&again.digest)?;
    }
    // An intact blob is trusted from its stamp: the check costs a stat, not a read.
    let big: Vec<u8> = (0..(64u32 << 20)).map(|i| (i % 253) as u8).collect();
    let info = store.put_bytes(&big)?;
    let t = Instant::now();
    for _ in 0..100 {
        ensure!(store.contains(&info.digest), "a stamped blob is intact");
    }
    let stamped = t.elapsed() / 100;
    let t = Instant::now();
    store.verify(&info.digest)?;
    let full = t.elapsed();
    eprintln!("blob check: {stamped:?} stamped, {full:?} full re-hash of 64 MiB (under load)");
    ensure!(
        stamped * 20 < full,
        "a stamped check ({stamped:?}) should not read the blob ({full:?})"
    );
    // A touch (last-used mark) moves the ctime; the blob stays intact.
    store.touch(&info.digest)?;
    ensure!(store.contains(&info.digest), "a touched blob is intact");
    Ok(())
}
