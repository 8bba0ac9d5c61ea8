//! ADD's local archive detection and extraction. An archive is recognised by content, as
//! BuildKit does it: after decompression the first 512 bytes must be a valid tar header.
//! Extraction goes through the layer cache's applier, which never writes outside its root.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use layer_cache::{ApplyMode, ApplyOptions, Compression, DevicePolicy, Ownership, ParentSymlinks};

use super::error::CopyError;

/// What a local ADD source turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A tar archive, plain or compressed (gzip, zstd, bzip2, xz).
    Tar,
    /// Anything else: copied as a file.
    NotArchive,
}

/// The compressions of an ADD archive, by magic number (Docker's `DecompressStream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Format {
    fn sniff(head: &[u8]) -> Format {
        if head.starts_with(b"BZh") {
            return Format::Bzip2;
        }
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            return Format::Xz;
        }
        match Compression::sniff(head) {
            Compression::Gzip => Format::Gzip,
            Compression::Zstd => Format::Zstd,
            _ => Format::Plain,
        }
    }
}

/// The file at `path`, decompressed. `None` when the decompressor rejects the stream's
/// header (zstd checks it at once; the others fail on the first read).
fn open_decompressed(path: &Path) -> Result<Option<Box<dyn Read + Send>>, CopyError> {
    let mut f = File::open(path).map_err(CopyError::io("open", path))?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut f, &mut head).map_err(CopyError::io("read", path))?;
    f.seek(io::SeekFrom::Start(0))
        .map_err(CopyError::io("seek", path))?;
    let f = io::BufReader::new(f);
    Ok(Some(match Format::sniff(&head[..n]) {
        Format::Plain => Box::new(f),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(f)),
        Format::Zstd => match zstd::stream::read::Decoder::with_buffer(f) {
            Ok(d) => Box::new(d),
            Err(_) => return Ok(None),
        },
        Format::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(f)),
        Format::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(f)),
    }))
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `block` is a tar header whose checksum is right (Go's `tar.Reader.Next` would
/// accept it): not all zeros, the checksum field equal to the sum of the header bytes with
/// that field read as spaces (unsigned or signed, as old tars used either).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(want) = i64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

/// The latest mtime of the regular files of the (possibly compressed) tar at `path`, as
/// BuildKit reads a SOURCE_DATE_EPOCH source: `None` when it is not an archive, holds no
/// regular file, or does not read to its end.
pub(crate) fn max_regular_mtime(path: &Path) -> Result<Option<i64>, CopyError> {
    if !matches!(sniff(path)?, Sniffed::Tar) {
        return Ok(None);
    }
    let Some(reader) = open_decompressed(path)? else {
        return Ok(None);
    };
    let mut ar = tar::Archive::new(reader);
    let Ok(entries) = ar.entries() else {
        return Ok(None);
    };
    let mut max = None;
    for e in entries {
        let Ok(e) = e else { return Ok(None) };
        let h = e.header();
        if !matches!(
            h.entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let Ok(t) = h.mtime() else { return Ok(None) };
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        max = Some(max.map_or(t, |m: i64| m.max(t)));
    }
    Ok(max)
}

/// Looks at the file's content: compression magic, then a tar header.
pub(crate) fn sniff(path: &Path) -> Result<Sniffed, CopyError> {
    let Some(mut reader) = open_decompressed(path)? else {
        return Ok(Sniffed::NotArchive);
    };
    let mut block = [0u8; 512];
    // A stream that fails to decompress is not an archive (BuildKit copies it as is).
    let n = read_up_to(&mut *reader, &mut block).unwrap_or(0);
    Ok(if n == 512 && is_tar_header(&block) {
        Sniffed::Tar
    } else {
        Sniffed::NotArchive
    })
}

/// Extracts the archive at `archive` into the existing directory `dest`. Paths resolve
/// inside `dest` (symlinks in the archive are followed as if `dest` were the root);
/// `..`, absolute paths and links leaving `dest` are rejected by the applier.
pub(crate) fn unpack(source: &str, archive: &Path, dest: &Path) -> Result<(), CopyError> {
    let Some(tar) = open_decompressed(archive)? else {
        let bad = io::Error::new(io::ErrorKind::InvalidData, "not a zstd stream");
        return Err(CopyError::io("decompress", archive)(bad));
    };
    let root = rustix::process::geteuid().is_root();
    let mut opts = ApplyOptions::default();
    opts.mode = ApplyMode::Flatten;
    opts.parent_symlinks = ParentSymlinks::FollowInRoot;
    opts.ownership = if root {
        Ownership::Preserve
    } else {
        Ownership::Current
    };
    opts.devices = if root {
        DevicePolicy::Create
    } else {
        DevicePolicy::Skip
    };
    opts.xattrs = root;
    layer_cache::apply_layer(tar, dest, &opts).map_err(|e| CopyError::Unpack {
        path: source.to_owned(),
        source: e,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_01_archives_are_detected_by_content() {
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "foo", &b"foo"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        std::fs::write(t.path().join("t.tar"), &tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        std::fs::write(t.path().join("x.bin"), gz.finish().unwrap()).unwrap();
        std::fs::write(t.path().join("fake.tar.gz"), b"not an archive").unwrap();
        std::fs::write(t.path().join("zeros.tar"), [0u8; 1024]).unwrap();
        std::fs::write(t.path().join("fake.bz2"), b"BZh91AY&SY").unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        io::Write::write_all(&mut bz, &tar).unwrap();
        std::fs::write(t.path().join("t.bz2"), bz.finish().unwrap()).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        io::Write::write_all(&mut xz, &tar).unwrap();
        std::fs::write(t.path().join("t.xz"), xz.finish().unwrap()).unwrap();
        let s = |n: &str| sniff(&t.path().join(n)).unwrap();
        assert_eq!(s("t.tar"), Sniffed::Tar);
        assert_eq!(s("x.bin"), Sniffed::Tar);
        assert_eq!(s("fake.tar.gz"), Sniffed::NotArchive);
        assert_eq!(s("zeros.tar"), Sniffed::NotArchive);
        assert_eq!(s("t.bz2"), Sniffed::Tar);
        assert_eq!(s("t.xz"), Sniffed::Tar);
        assert_eq!(s("fake.bz2"), Sniffed::NotArchive);
    }
}
