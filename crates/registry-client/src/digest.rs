//! Content digests: a validating newtype over oci-spec's `Digest` that only admits the
//! algorithms we can verify, and a streaming hasher.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::Error;

/// The hash algorithm of a [`Digest`]: the ones the OCI image spec registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// `sha256`, what every registry uses.
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm's name in a digest string (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified-form content digest, `algorithm:hex` (for example `sha256:6c3c…`).
///
/// Built only from a well-formed string of a known algorithm (lowercase hex of the right
/// length), so every `Digest` can be checked against content. Orders and compares as its
/// string; serialises as a plain string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    value: String,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self::from_hash(DigestAlgorithm::Sha256, &sha2::Sha256::digest(bytes))
    }

    fn from_hash(algorithm: DigestAlgorithm, hash: &[u8]) -> Self {
        Self {
            algorithm,
            value: format!("{}:{}", algorithm.as_str(), hex::encode(hash)),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The hex-encoded hash, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.value[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest string, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// A hasher for content that should have this digest.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }

    /// The same digest as oci-spec's type.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // A valid `Digest` of ours is a valid oci-spec digest: same grammar, stricter.
        oci_spec::image::Digest::from_str(&self.value).unwrap_or_else(|_| {
            unreachable!("validated digest {} rejected by oci-spec", self.value)
        })
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidDigest {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected ALGORITHM:HEX"))?;
        let algorithm = match algo {
            "sha256" => DigestAlgorithm::Sha256,
            "sha384" => DigestAlgorithm::Sha384,
            "sha512" => DigestAlgorithm::Sha512,
            "" => return Err(bad("empty algorithm")),
            _ => return Err(bad("unsupported algorithm (sha256, sha384 and sha512 are)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(bad(&format!(
                "{} hex characters, expected {}",
                hex.len(),
                algorithm.hex_len()
            )));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("not lowercase hexadecimal"));
        }
        Ok(Self {
            algorithm,
            value: s.to_owned(),
        })
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Error> {
        d.as_ref().parse()
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        d.to_oci()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Digest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming hash of content, for the algorithm of an expected [`Digest`].
#[derive(Clone)]
pub struct Hasher {
    inner: HasherInner,
}

#[derive(Clone)]
enum HasherInner {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: DigestAlgorithm) -> Self {
        let inner = match algorithm {
            DigestAlgorithm::Sha256 => HasherInner::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha384 => HasherInner::Sha384(sha2::Sha384::new()),
            DigestAlgorithm::Sha512 => HasherInner::Sha512(sha2::Sha512::new()),
        };
        Self { inner }
    }

    /// Feed more content.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            HasherInner::Sha256(h) => h.update(bytes),
            HasherInner::Sha384(h) => h.update(bytes),
            HasherInner::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self.inner {
            HasherInner::Sha256(h) => Digest::from_hash(DigestAlgorithm::Sha256, &h.finalize()),
            HasherInner::Sha384(h) => Digest::from_hash(DigestAlgorithm::Sha384, &h.finalize()),
            HasherInner::Sha512(h) => Digest::from_hash(DigestAlgorithm::Sha512, &h.finalize()),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algo = match self.inner {
            HasherInner::Sha256(_) => "sha256",
            HasherInner::Sha384(_) => "sha384",
            HasherInner::Sha512(_) => "sha512",
        };
        write!(f, "Hasher({algo})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY);
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), DigestAlgorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_oci().to_string(), EMPTY);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855a",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn streaming_hash_equals_one_shot() {
        let data = b"hello, registry";
        let d = Digest::sha256_of(data);
        let mut h = d.hasher();
        h.update(&data[..5]);
        h.update(&data[5..]);
        assert_eq!(h.finish(), d);
        let mut h = Hasher::new(DigestAlgorithm::Sha512);
        h.update(data);
        let d512 = h.finish();
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(d512.as_str().parse::<Digest>().unwrap(), d512);
    }

    #[test]
    fn serde_is_a_plain_string() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }
}
