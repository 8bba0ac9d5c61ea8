//! Shared helpers: scratch directories, an independent raw tar builder for hostile
//! archives, tree listings, a small PRNG and a command runner that explains failures.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Fails the test with a message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A scratch directory, removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("layer-cache-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir")
}

/// Runs a command; on failure the error shows the command, cwd, status, stdout, stderr.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} (cwd {:?}) failed: {}\nstdout:\n{}\nstderr:\n{}",
            std::env::current_dir().ok(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out.stdout)
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Compressible bytes: random words from a small vocabulary.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "layer ", "cache ", "tar ", "gzip ", "node ", "build\n", "0123 ", "x",
        ];
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.below(8) as usize].as_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Every path below `dir` with a description of it (type, mode, owner, size, contents
/// digest, link target). Used to prove that nothing outside a root changed.
pub fn listing(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(base).expect("below base").to_owned();
            let desc = if md.file_type().is_symlink() {
                format!("link -> {:?}", fs::read_link(&p).ok())
            } else if md.is_dir() {
                format!(
                    "dir {:o} {}:{}",
                    md.permissions().mode(),
                    md.uid(),
                    md.gid()
                )
            } else if md.is_file() {
                let data = fs::read(&p).unwrap_or_default();
                format!(
                    "file {:o} {}:{} {} {}",
                    md.permissions().mode(),
                    md.uid(),
                    md.gid(),
                    md.len(),
                    layer_cache::Digest::sha256_of(&data)
                )
            } else {
                format!("other {:o} rdev {}", md.mode(), md.rdev())
            };
            out.insert(rel, desc);
            if md.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// An independent, minimal tar writer for building hostile archives byte by byte
/// (deliberately not the crate's own encoder).
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    /// The ustar size field.
    pub size_field: u64,
    pub linkname: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            typeflag: b'0',
            mode: 0o644,
            size_field: data.len() as u64,
            linkname: b"",
            data,
        }
    }
    pub fn dir(name: &'a str) -> Raw<'a> {
        Raw {
            typeflag: b'5',
            mode: 0o755,
            ..Raw::file(name, b"")
        }
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            typeflag: b'2',
            mode: 0o777,
            linkname: target.as_bytes(),
            ..Raw::file(name, b"")
        }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            typeflag: b'1',
            linkname: target.as_bytes(),
            ..Raw::file(name, b"")
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(s.as_bytes());
}

impl RawTar {
    pub fn header(&mut self, r: &Raw<'_>) {
        let mut b = [0u8; 512];
        b[..r.name.len().min(100)].copy_from_slice(&r.name[..r.name.len().min(100)]);
        octal(&mut b[100..108], u64::from(r.mode));
        octal(&mut b[108..116], 0);
        octal(&mut b[116..124], 0);
        octal(&mut b[124..136], r.size_field);
        octal(&mut b[136..148], 1_600_000_000);
        b[156] = r.typeflag;
        b[157..157 + r.linkname.len().min(100)]
            .copy_from_slice(&r.linkname[..r.linkname.len().min(100)]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&b);
    }

    pub fn data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
    }

    pub fn entry(&mut self, r: Raw<'_>) -> &mut Self {
        self.header(&r);
        self.data(r.data);
        self
    }

    /// A PAX extended header with the given records, for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = 1 + k.len() + 1 + v.len() + 1;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let r = Raw {
            name: b"PaxHeaders/x",
            typeflag: b'x',
            mode: 0o644,
            size_field: body.len() as u64,
            linkname: b"",
            data: &body,
        };
        self.header(&r);
        self.data(&body);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0; 1024]);
        std::mem::take(&mut self.bytes)
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Sets mtime (and atime) of a path without following symlinks.
pub fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// `with!(Type::default(), field = value, ...)`: options structs are `#[non_exhaustive]`,
/// so they are built by mutation.
#[macro_export]
macro_rules! with {
    ($base:expr, $($field:ident = $value:expr),* $(,)?) => {{
        let mut o = $base;
        $(o.$field = $value;)*
        o
    }};
}
