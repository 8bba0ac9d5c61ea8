//! Validated content digests and OCI chain IDs.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// A digest algorithm this crate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256, the algorithm of every OCI layer in practice.
    Sha256,
}

impl Algorithm {
    /// The name used in the `algorithm:hex` form.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
        }
    }
}

/// A content digest such as `sha256:e3b0…`, validated when built: a known algorithm and an
/// encoded part of exactly the right number of lowercase hex digits. Because of that, the hex
/// part is safe to use as a file name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    /// A SHA-256 digest from its 32 raw bytes.
    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(raw),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A file-name-safe form: `sha256-<hex>`.
    pub(crate) fn file_stem(&self) -> String {
        format!("{}-{}", self.algorithm.as_str(), self.hex)
    }

    /// Parses the `sha256-<hex>` form produced by [`Digest::file_stem`].
    pub(crate) fn from_file_stem(stem: &str) -> Option<Digest> {
        let (alg, hex) = stem.split_once('-')?;
        format!("{alg}:{hex}").parse().ok()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let bad = |reason: &'static str| Error::InvalidDigest {
            input: s.chars().take(100).collect(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected `algorithm:hex`"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            _ => return Err(bad("unsupported algorithm (only sha256)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(bad("wrong length for the algorithm"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("the encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;
    fn try_from(s: &str) -> Result<Digest, Error> {
        s.parse()
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Digest, Error> {
        s.parse()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest, Error> {
        d.to_string().parse()
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> oci_spec::image::Digest {
        oci_spec::image::Sha256Digest::from_str(d.hex())
            .expect("a validated sha256 digest is a valid oci-spec sha256 digest")
            .into()
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An OCI chain ID: identifies a stack of layers by their diffIDs
/// (`ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChainId(Digest);

impl ChainId {
    /// The chain ID of a single bottom layer.
    pub fn base(diff_id: &Digest) -> ChainId {
        ChainId(diff_id.clone())
    }

    /// The chain ID of `diff_id` stacked on `parent` (or alone when `parent` is `None`).
    pub fn child(parent: Option<&ChainId>, diff_id: &Digest) -> ChainId {
        match parent {
            None => ChainId::base(diff_id),
            Some(p) => ChainId(Digest::sha256_of(format!("{} {}", p.0, diff_id).as_bytes())),
        }
    }

    /// The chain ID of a whole stack, bottom first; `None` for an empty stack.
    pub fn of(diff_ids: &[Digest]) -> Option<ChainId> {
        diff_ids
            .iter()
            .fold(None, |parent, d| Some(ChainId::child(parent.as_ref(), d)))
    }

    /// The chain ID as a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ChainId {
    type Err = Error;
    fn from_str(s: &str) -> Result<ChainId, Error> {
        s.parse().map(ChainId)
    }
}

/// A `Write` adapter that hashes (SHA-256) and counts everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_sha256(self.hasher.finalize().into()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An incremental SHA-256 hasher producing a [`Digest`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest::from_sha256(self.0.finalize().into())
    }
}
