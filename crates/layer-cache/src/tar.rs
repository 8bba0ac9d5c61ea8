//! The tar format: our own PAX header encoder (exact, deterministic bytes) and a strict
//! streaming reader that rejects ambiguous archives instead of guessing.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Tar block size.
pub(crate) const BLOCK: usize = 512;
/// Largest PAX extended header we read.
const MAX_PAX_LEN: u64 = 1 << 20;
/// Largest GNU long name we read.
const MAX_LONGNAME_LEN: u64 = 64 << 10;

/// The type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file (`0`, NUL or `7`).
    Regular,
    /// A directory (`5`).
    Directory,
    /// A symbolic link (`2`).
    Symlink,
    /// A hard link to an earlier entry (`1`).
    HardLink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A named pipe (`6`).
    Fifo,
}

impl EntryKind {
    fn typeflag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
        }
    }

    /// Whether entries of this kind carry data.
    pub fn has_data(self) -> bool {
        self == EntryKind::Regular
    }
}

/// One tar entry's metadata after PAX and GNU extensions have been merged in. This is the
/// input of [`plan_entry`](crate::plan_entry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryHeader {
    /// The path as written in the archive (not yet validated).
    pub path: Vec<u8>,
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Data size in bytes (0 for entries without data).
    pub size: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Symlink target or hard link target.
    pub link_target: Vec<u8>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes (`SCHILY.xattr.*`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryHeader {
    /// A header with the given path and kind and everything else zero or empty.
    pub fn new(path: impl Into<Vec<u8>>, kind: EntryKind) -> EntryHeader {
        EntryHeader {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link_target: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

const NAME_LEN: usize = 100;
const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `len` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = 1 + key.len() + 1 + value.len() + 1; // " key=value\n"
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The numeric fields of a ustar header: mode, uid, gid, size, mtime.
#[derive(Clone, Copy)]
struct Numbers {
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
}

fn ustar_block(
    name: &[u8],
    typeflag: u8,
    n: &Numbers,
    linkname: &[u8],
    dev: (u32, u32),
) -> [u8; BLOCK] {
    let Numbers {
        mode,
        uid,
        gid,
        size,
        mtime,
    } = *n;
    let mut b = [0u8; BLOCK];
    let n = name.len().min(NAME_LEN);
    b[..n].copy_from_slice(&name[..n]);
    put_octal(&mut b[100..108], u64::from(mode & 0o7777));
    put_octal(&mut b[108..116], uid);
    put_octal(&mut b[116..124], gid);
    put_octal(&mut b[124..136], size);
    put_octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    let l = linkname.len().min(NAME_LEN);
    b[157..157 + l].copy_from_slice(&linkname[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    put_octal(&mut b[329..337], u64::from(dev.0));
    put_octal(&mut b[337..345], u64::from(dev.1));
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Appends the header block(s) for `h` to `out`: a PAX extended header when some field does
/// not fit ustar (long names, large ids or sizes, xattrs), then the ustar block. Equal headers
/// always give equal bytes: PAX records are sorted by key, and user and group names, atime and
/// ctime are never written. Directory names get a trailing `/`.
pub(crate) fn encode_header(h: &EntryHeader, out: &mut Vec<u8>) {
    let mut name = h.path.clone();
    if h.kind == EntryKind::Directory && name.last() != Some(&b'/') {
        name.push(b'/');
    }
    let mtime = u64::try_from(h.mtime).unwrap_or(0);
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    if name.len() > NAME_LEN {
        pax.insert(b"path".to_vec(), name.clone());
    }
    if h.link_target.len() > NAME_LEN {
        pax.insert(b"linkpath".to_vec(), h.link_target.clone());
    }
    let mut field = |key: &str, v: u64, max: u64| {
        if v > max {
            pax.insert(key.as_bytes().to_vec(), v.to_string().into_bytes());
            0
        } else {
            v
        }
    };
    let uid = field("uid", h.uid, MAX_OCTAL_7);
    let gid = field("gid", h.gid, MAX_OCTAL_7);
    let size = field("size", h.size, MAX_OCTAL_11);
    let mtime = field("mtime", mtime, MAX_OCTAL_11);
    for (k, v) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k.as_bytes());
        pax.insert(key, v.clone());
    }
    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in &pax {
            pax_record(&mut records, k, v);
        }
        let base = name
            .strip_suffix(b"/")
            .unwrap_or(&name)
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or_default();
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(NAME_LEN - pax_name.len())]);
        let n = Numbers {
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
        };
        out.extend_from_slice(&ustar_block(&pax_name, b'x', &n, b"", (0, 0)));
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }
    let n = Numbers {
        mode: h.mode,
        uid,
        gid,
        size,
        mtime,
    };
    out.extend_from_slice(&ustar_block(
        &name,
        h.kind.typeflag(),
        &n,
        &h.link_target,
        (h.dev_major, h.dev_minor),
    ));
}

/// Zero bytes needed after `size` bytes of data to reach a block boundary.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A byte source with zero-copy access to its buffered bytes.
pub(crate) trait Source {
    /// The buffered bytes; empty at end of input.
    fn fill(&mut self) -> Result<&[u8]>;
    /// Marks `n` buffered bytes as used.
    fn consume(&mut self, n: usize);
}

/// A [`Source`] over any reader (used for uncompressed input in tests).
#[cfg(test)]
pub(crate) struct ReadSource<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

#[cfg(test)]
impl<R: std::io::Read> ReadSource<R> {
    pub(crate) fn new(inner: R) -> Self {
        ReadSource {
            inner,
            buf: vec![0; 64 << 10],
            pos: 0,
            len: 0,
        }
    }
}

#[cfg(test)]
impl<R: std::io::Read> Source for ReadSource<R> {
    fn fill(&mut self) -> Result<&[u8]> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::Sys {
                            op: "read",
                            source: e,
                        });
                    }
                }
            };
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A strict, streaming tar reader.
pub(crate) struct TarReader<S> {
    src: S,
    /// Bytes consumed so far.
    offset: u64,
    /// Data bytes left in the current entry.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    done: bool,
}

fn malformed(offset: u64, reason: impl Into<String>) -> Error {
    Error::MalformedTar {
        offset,
        reason: reason.into(),
    }
}

fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // GNU base-256; a leading 0xff is a negative number.
        if field[0] == 0xff {
            return None;
        }
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let mut it = field.iter().skip_while(|&&b| b == b' ').peekable();
    let mut v: u64 = 0;
    while let Some(&&b) = it.peek() {
        if !(b'0'..=b'7').contains(&b) {
            break;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        it.next();
    }
    // Whatever follows the digits must be terminators.
    if it.all(|&b| b == b' ' || b == 0) {
        Some(v)
    } else {
        None
    }
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

fn parse_pax_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[derive(Default)]
struct Pax {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Pax {
    fn parse(data: &[u8], offset: u64) -> Result<Pax> {
        let mut records = BTreeMap::new();
        let mut rest = data;
        while !rest.is_empty() {
            // A block may end with NUL padding written by some tools.
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| malformed(offset, "PAX record without a length"))?;
            let len = parse_pax_decimal(&rest[..sp])
                .ok_or_else(|| malformed(offset, "PAX record length is not a number"))?
                as usize;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(malformed(
                    offset,
                    "PAX record length does not match its contents",
                ));
            }
            let rec = &rest[sp + 1..len - 1];
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| malformed(offset, "PAX record without `=`"))?;
            let (k, v) = (rec[..eq].to_vec(), rec[eq + 1..].to_vec());
            let critical = matches!(k.as_slice(), b"path" | b"linkpath" | b"size");
            if records.insert(k, v).is_some() && critical {
                return Err(malformed(
                    offset,
                    "PAX header repeats a path, linkpath or size record",
                ));
            }
            rest = &rest[len..];
        }
        Ok(Pax { records })
    }
}

impl<S: Source> TarReader<S> {
    pub(crate) fn new(src: S) -> Self {
        TarReader {
            src,
            offset: 0,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    /// The underlying source (for draining after the end of the archive).
    pub(crate) fn source(&mut self) -> &mut S {
        &mut self.src
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let avail = self.src.fill()?.len();
            if avail == 0 {
                return Err(malformed(self.offset, "archive ends inside an entry"));
            }
            let k = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.src.consume(k);
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < out.len() {
            let buf = self.src.fill()?;
            if buf.is_empty() {
                break;
            }
            let k = buf.len().min(out.len() - got);
            out[got..got + k].copy_from_slice(&buf[..k]);
            self.src.consume(k);
            got += k;
        }
        self.offset += got as u64;
        Ok(got)
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        match self.read_exact(&mut b)? {
            0 => Ok(None),
            BLOCK => Ok(Some(b)),
            _ => Err(malformed(self.offset, "archive ends inside a header block")),
        }
    }

    fn read_ext_data(&mut self, size: u64, max: u64, what: &'static str) -> Result<Vec<u8>> {
        if size > max {
            return Err(Error::LimitExceeded { what, limit: max });
        }
        let mut v = vec![0u8; size as usize];
        if self.read_exact(&mut v)? != v.len() {
            return Err(malformed(
                self.offset,
                "archive ends inside an extended header",
            ));
        }
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next entry's header, or `None` at the end of the archive. Unread data of the
    /// previous entry is skipped.
    pub(crate) fn next_header(&mut self) -> Result<Option<EntryHeader>> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.pad)?;
        self.remaining = 0;
        self.pad = 0;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let at = self.offset;
            let Some(b) = self.read_block()? else {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(malformed(at, "archive ends after an extended header"));
                }
                // No end-of-archive marker: accepted, as GNU tar and Go do.
                self.done = true;
                return Ok(None);
            };
            if b.iter().all(|&x| x == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(malformed(at, "end of archive after an extended header"));
                }
                self.done = true;
                return Ok(None);
            }
            let stored = parse_number(&b[148..156])
                .ok_or_else(|| malformed(at, "header checksum is not a number"))?;
            let unsigned: u64 = b
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(x)
                    }
                })
                .sum();
            let signed: i64 = b
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        i64::from(x as i8)
                    }
                })
                .sum();
            if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
                return Err(malformed(
                    at,
                    "header checksum mismatch (not a tar archive?)",
                ));
            }
            let size = parse_number(&b[124..136])
                .ok_or_else(|| malformed(at, "size field is not a number"))?;
            let typeflag = b[156];
            match typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(malformed(at, "two PAX headers for one entry"));
                    }
                    let data = self.read_ext_data(size, MAX_PAX_LEN, "PAX header size")?;
                    pax = Some(Pax::parse(&data, at)?);
                    continue;
                }
                b'g' => {
                    // Global headers only carry defaults such as comments; ignored, as
                    // containerd and Go's archive/tar do.
                    self.read_ext_data(size, MAX_PAX_LEN, "PAX global header size")?;
                    continue;
                }
                b'L' | b'K' => {
                    let data = self.read_ext_data(size, MAX_LONGNAME_LEN, "GNU long name")?;
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(malformed(at, "two GNU long-name headers for one entry"));
                    }
                    *slot = Some(cstr(&data).to_vec());
                    continue;
                }
                _ => {}
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => EntryKind::Regular,
                b'1' => EntryKind::HardLink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::CharDevice,
                b'4' => EntryKind::BlockDevice,
                b'5' => EntryKind::Directory,
                b'6' => EntryKind::Fifo,
                b'S' => {
                    return Err(Error::Unsupported {
                        what: "GNU sparse files".into(),
                    });
                }
                t => {
                    return Err(Error::Unsupported {
                        what: format!("tar entry type {:?}", t as char),
                    });
                }
            };
            let num = |r: std::ops::Range<usize>, what: &str| {
                parse_number(&b[r]).ok_or_else(|| malformed(at, format!("{what} is not a number")))
            };
            let posix = &b[257..263] == b"ustar\0";
            let mut path = match long_name.take() {
                Some(n) => n,
                None => {
                    let name = cstr(&b[0..100]);
                    let prefix = cstr(&b[345..500]);
                    if posix && !prefix.is_empty() {
                        let mut p = prefix.to_vec();
                        p.push(b'/');
                        p.extend_from_slice(name);
                        p
                    } else {
                        name.to_vec()
                    }
                }
            };
            let mut h = EntryHeader::new(Vec::new(), kind);
            h.mode = (num(100..108, "mode")? & 0o7777) as u32;
            h.uid = num(108..116, "uid")?;
            h.gid = num(116..124, "gid")?;
            h.size = size;
            h.mtime = i64::try_from(num(136..148, "mtime")?).unwrap_or(i64::MAX);
            h.link_target = long_link
                .take()
                .unwrap_or_else(|| cstr(&b[157..257]).to_vec());
            if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                h.dev_major = u32::try_from(num(329..337, "devmajor")?)
                    .map_err(|_| malformed(at, "device major out of range"))?;
                h.dev_minor = u32::try_from(num(337..345, "devminor")?)
                    .map_err(|_| malformed(at, "device minor out of range"))?;
            }
            let mut pax_size = None;
            if let Some(pax) = pax.take() {
                for (k, v) in pax.records {
                    let dec = |what: &str| {
                        parse_pax_decimal(&v)
                            .ok_or_else(|| malformed(at, format!("PAX {what} is not a number")))
                    };
                    match k.as_slice() {
                        b"path" => path = v,
                        b"linkpath" => h.link_target = v,
                        b"size" => pax_size = Some(dec("size")?),
                        b"uid" => h.uid = dec("uid")?,
                        b"gid" => h.gid = dec("gid")?,
                        b"mtime" => {
                            let int = v.split(|&c| c == b'.').next().unwrap_or_default();
                            h.mtime = match int.strip_prefix(b"-") {
                                Some(_) => 0,
                                None => {
                                    i64::try_from(parse_pax_decimal(int).ok_or_else(|| {
                                        malformed(at, "PAX mtime is not a number")
                                    })?)
                                    .unwrap_or(i64::MAX)
                                }
                            };
                        }
                        k if k.starts_with(b"GNU.sparse.") => {
                            return Err(Error::Unsupported {
                                what: "GNU sparse files".into(),
                            });
                        }
                        k if k.starts_with(b"SCHILY.xattr.") => {
                            let name = String::from_utf8(k[13..].to_vec())
                                .map_err(|_| malformed(at, "xattr name is not UTF-8"))?;
                            h.xattrs.insert(name, v);
                        }
                        _ => {} // atime, ctime, uname, gname, comment, charset...
                    }
                }
            }
            if let Some(s) = pax_size {
                // Readers that ignore PAX would see other entry boundaries: refuse.
                if size != 0 && s != size {
                    return Err(malformed(
                        at,
                        format!("PAX size {s} contradicts the header's size {size}"),
                    )
                    .in_entry(&path));
                }
                h.size = s;
            }
            if !kind.has_data() && h.size != 0 {
                return Err(malformed(
                    at,
                    format!(
                        "a {kind:?} entry carries {} bytes of data (readers disagree on such archives)",
                        h.size
                    ),
                )
                .in_entry(&path));
            }
            h.path = path;
            self.remaining = h.size;
            self.pad = padding(h.size);
            return Ok(Some(h));
        }
    }

    /// Passes the current entry's data to `f`, chunk by chunk, without copying.
    pub(crate) fn for_each_data_chunk(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while self.remaining > 0 {
            let buf = self.src.fill()?;
            if buf.is_empty() {
                return Err(malformed(
                    self.offset,
                    format!(
                        "archive ends {} bytes before the end of the entry's data",
                        self.remaining
                    ),
                ));
            }
            let k = buf
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            f(&buf[..k])?;
            self.src.consume(k);
            self.offset += k as u64;
            self.remaining -= k as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for vlen in [0usize, 1, 5, 88, 89, 90, 95, 96, 97, 990, 995, 996, 9990] {
            let mut out = Vec::new();
            pax_record(&mut out, b"path", &vec![b'a'; vlen]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, out.len(), "value length {vlen}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"   644 \0"), Some(0o644));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(b"0008\0"), None);
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_number(&[0xff, 0xff]), None);
    }

    #[test]
    fn encode_then_read_back() {
        let mut h = EntryHeader::new(vec![b'd'; 150], EntryKind::Regular);
        h.mode = 0o4755;
        h.uid = 3_000_000;
        h.gid = 7;
        h.size = 3;
        h.mtime = 1_700_000_000;
        h.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2]);
        let mut out = Vec::new();
        encode_header(&h, &mut out);
        out.extend_from_slice(b"abc");
        out.resize(out.len() + padding(3) as usize, 0);
        out.extend_from_slice(&[0; 1024]);
        let mut r = TarReader::new(ReadSource::new(&out[..]));
        let got = r.next_header().unwrap().unwrap();
        assert_eq!(got, h);
        let mut data = Vec::new();
        r.for_each_data_chunk(|c| {
            data.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(data, b"abc");
        assert!(r.next_header().unwrap().is_none());
    }
}
