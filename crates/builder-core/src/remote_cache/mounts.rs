//! The content of `RUN --mount=type=cache` directories in a cache artifact: a directory is
//! packed as a set of content-addressed gzip tar "packs". Entries are walked in path order
//! and a pack ends at an entry whose path hashes to a boundary (once the pack holds at
//! least [`MIN_PACK`] bytes), so the boundaries depend on the paths, not on offsets: a
//! file added or changed changes the pack it falls in and leaves the others byte for byte
//! the same. A registry then has every pack but the changed ones, and only those are
//! uploaded again.
//!
//! Packs are written with fixed headers (mode, owner, mtime of the file; no user names; a
//! gzip header without time), so the same directory packs to the same digests on any
//! machine.

use std::fs::File;
use std::io::{BufWriter, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use layer_cache::Digest;
use sha2::Digest as _;

use crate::engine::Error;

/// The media type of a pack (an ordinary gzip tar layer).
pub(crate) const PACK_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A pack ends only after this many bytes of file content.
const MIN_PACK: u64 = 4 << 20;

/// One in this many paths is a boundary.
const BOUNDARY_ONE_IN: u8 = 32;

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::from(layer_cache::Error::Io {
        path: path.to_owned(),
        source: e,
    })
}

/// A pack written to a file.
#[derive(Debug)]
pub(crate) struct Pack {
    /// Its file.
    pub(crate) path: PathBuf,
    /// Its digest.
    pub(crate) digest: Digest,
    /// Its size.
    pub(crate) size: u64,
}

/// Every entry of `root` (relative paths, sorted), directories before their content.
fn walk(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| io(&dir, e))?;
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let r = rel.join(&n);
            let meta = std::fs::symlink_metadata(root.join(&r)).map_err(|e| io(&r, e))?;
            if meta.is_dir() {
                subdirs.push(r.clone());
            }
            if meta.is_dir() || meta.is_file() || meta.file_type().is_symlink() {
                out.push(r);
            }
        }
        // Popped in path order.
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

fn is_boundary(rel: &Path) -> bool {
    let h = sha2::Sha256::digest(rel.as_os_str().as_encoded_bytes());
    h[0] % BOUNDARY_ONE_IN == 0
}

struct Writer {
    tar: tar::Builder<flate2::write::GzEncoder<BufWriter<File>>>,
    path: PathBuf,
    content: u64,
}

fn start(tmp: &Path, n: usize) -> Result<Writer, Error> {
    let path = tmp.join(format!("pack-{n}"));
    let f = File::create(&path).map_err(|e| io(&path, e))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(f), flate2::Compression::fast());
    Ok(Writer {
        tar: tar::Builder::new(gz),
        path,
        content: 0,
    })
}

fn finish(w: Writer) -> Result<Pack, Error> {
    let path = w.path.clone();
    let gz = w.tar.into_inner().map_err(|e| io(&path, e))?;
    let mut buf = gz.finish().map_err(|e| io(&path, e))?;
    buf.flush().map_err(|e| io(&path, e))?;
    drop(buf);
    let mut f = File::open(&path).map_err(|e| io(&path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut chunk).map_err(|e| io(&path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&chunk[..n]);
    }
    let digest: Digest = format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .map_err(|e: layer_cache::Error| Error::from(e))?;
    Ok(Pack { path, digest, size })
}

/// Packs the directory `root` into packs written under `tmp`.
pub(crate) fn pack_dir(root: &Path, tmp: &Path) -> Result<Vec<Pack>, Error> {
    let mut packs = Vec::new();
    let mut w = start(tmp, 0)?;
    let entries = walk(root)?;
    let total = entries.len();
    for (i, rel) in entries.into_iter().enumerate() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).map_err(|e| io(&full, e))?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(meta.mtime().max(0) as u64);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            w.tar
                .append_data(&mut h, &rel, std::io::empty())
                .map_err(|e| io(&full, e))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| io(&full, e))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            w.tar
                .append_link(&mut h, &rel, &target)
                .map_err(|e| io(&full, e))?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = File::open(&full).map_err(|e| io(&full, e))?;
            w.tar
                .append_data(&mut h, &rel, f)
                .map_err(|e| io(&full, e))?;
            w.content += meta.len();
        }
        if w.content >= MIN_PACK && is_boundary(&rel) && i + 1 < total {
            packs.push(finish(w)?);
            w = start(tmp, packs.len())?;
        }
    }
    packs.push(finish(w)?);
    Ok(packs)
}

/// Unpacks the packs (files, verified already) into the new directory `dest`.
pub(crate) fn unpack_into(packs: &[PathBuf], dest: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))?;
    let root = rustix::process::geteuid().is_root();
    for p in packs {
        let f = File::open(p).map_err(|e| io(p, e))?;
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
        a.set_preserve_permissions(true);
        a.set_preserve_mtime(true);
        a.set_preserve_ownerships(root);
        a.set_overwrite(true);
        a.set_unpack_xattrs(false);
        // `unpack` refuses entries that would land outside `dest`.
        a.unpack(dest).map_err(|e| io(p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_stable_and_a_change_touches_few() {
        let src = tempfile::tempdir().unwrap();
        for i in 0..400 {
            let d = src.path().join(format!("d{}", i % 7));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), vec![i as u8; 40_000]).unwrap();
        }
        std::os::unix::fs::symlink("d1/f1", src.path().join("link")).unwrap();
        let t1 = tempfile::tempdir().unwrap();
        let a = pack_dir(src.path(), t1.path()).unwrap();
        assert!(a.len() > 1, "{} packs", a.len());
        let t2 = tempfile::tempdir().unwrap();
        let b = pack_dir(src.path(), t2.path()).unwrap();
        let da: Vec<_> = a.iter().map(|p| p.digest.clone()).collect();
        let db: Vec<_> = b.iter().map(|p| p.digest.clone()).collect();
        assert_eq!(da, db, "the same directory packs to the same digests");

        std::fs::write(src.path().join("d3/new-file"), b"new").unwrap();
        let t3 = tempfile::tempdir().unwrap();
        let c = pack_dir(src.path(), t3.path()).unwrap();
        let changed = c.iter().filter(|p| !da.contains(&p.digest)).count();
        assert!(changed <= 2, "{changed} of {} packs changed", c.len());

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        let paths: Vec<_> = c.iter().map(|p| p.path.clone()).collect();
        unpack_into(&paths, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("d3/new-file")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dest.join("d2/f2")).unwrap(),
            vec![2u8; 40_000]
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("d1/f1")
        );
    }
}
