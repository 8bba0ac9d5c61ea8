//! Manifests and indexes as fetched: the exact bytes (digests are over them), the media
//! type, and the parsed oci-spec view. Docker's schema 2 types are read as their OCI
//! equivalents; schema 1 is refused.

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::digest::Digest;
use crate::error::Error;

/// `application/vnd.oci.image.index.v1+json`
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.docker.distribution.manifest.list.v2+json`
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// `application/vnd.docker.distribution.manifest.v2+json`
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header for manifest requests: every type we read, indexes first.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest we accept (containerd's limit).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Whether a manifest is an index (several platforms) or an image manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManifestKind {
    /// An OCI image index or a Docker manifest list.
    Index,
    /// An OCI image manifest or a Docker schema 2 manifest.
    Image,
}

impl ManifestKind {
    /// The kind a media type names, if it names a manifest type we read.
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Self::Index),
            OCI_MANIFEST | DOCKER_MANIFEST => Some(Self::Image),
            _ => None,
        }
    }
}

/// A manifest or index exactly as the registry served it (or as it will be pushed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawManifest {
    media_type: String,
    kind: ManifestKind,
    digest: Digest,
    bytes: Bytes,
}

impl RawManifest {
    /// Wrap serialised manifest bytes. The media type is the JSON's `mediaType`, else
    /// `content_type` (a response's `Content-Type`), else guessed from the shape
    /// (`manifests` means an index). The digest is the SHA-256 of the bytes.
    pub fn new(bytes: Bytes, content_type: Option<&str>) -> Result<Self, Error> {
        Self::with_digest(bytes, content_type, None)
    }

    /// Like [`RawManifest::new`], hashing with `expected`'s algorithm and failing unless the
    /// bytes have that digest.
    pub(crate) fn with_digest(
        bytes: Bytes,
        content_type: Option<&str>,
        expected: Option<&Digest>,
    ) -> Result<Self, Error> {
        let digest = match expected {
            Some(e) => {
                let mut h = e.hasher();
                h.update(&bytes);
                h.finish()
            }
            None => Digest::sha256_of(&bytes),
        };
        let invalid = |reason: String| Error::InvalidManifest {
            digest: digest.clone(),
            reason,
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            schema_version: Option<u64>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
            #[serde(default)]
            config: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        let declared = probe.media_type.as_deref().or(header);
        if probe.schema_version == Some(1) || declared.is_some_and(|m| DOCKER_SCHEMA1.contains(&m))
        {
            return Err(invalid("Docker schema 1 manifests are not supported (push the image again with a current client)".into()));
        }
        let (media_type, kind) =
            match declared.and_then(|m| ManifestKind::of_media_type(m).map(|k| (m, k))) {
                Some((m, k)) => (m.to_owned(), k),
                None if probe.media_type.is_some() => {
                    return Err(invalid(format!(
                        "unsupported media type {}",
                        probe.media_type.unwrap_or_default()
                    )));
                }
                None if probe.manifests.is_some() => (OCI_INDEX.to_owned(), ManifestKind::Index),
                None if probe.config.is_some() => (OCI_MANIFEST.to_owned(), ManifestKind::Image),
                None => {
                    return Err(invalid(format!(
                        "neither an index nor a manifest (Content-Type {header:?})"
                    )));
                }
            };
        let raw = Self {
            media_type,
            kind,
            digest,
            bytes,
        };
        raw.parse()?; // refuse what callers could not read later
        Ok(raw)
    }

    /// The media type.
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// Index or image manifest.
    pub fn kind(&self) -> ManifestKind {
        self.kind
    }

    /// The digest of the bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The length of the bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A descriptor pointing at this manifest (for an index entry, say).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.size(),
            self.digest.to_oci(),
        )
    }

    /// The parsed manifest.
    pub fn parse(&self) -> Result<Manifest, Error> {
        let invalid = |e: serde_json::Error| Error::InvalidManifest {
            digest: self.digest.clone(),
            reason: e.to_string(),
        };
        Ok(match self.kind {
            ManifestKind::Index => {
                Manifest::Index(serde_json::from_slice(&self.bytes).map_err(invalid)?)
            }
            ManifestKind::Image => {
                Manifest::Image(serde_json::from_slice(&self.bytes).map_err(invalid)?)
            }
        })
    }
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Manifest {
    /// An index or manifest list.
    Index(ImageIndex),
    /// An image manifest.
    Image(ImageManifest),
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image_json(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[]}}"#
        )
    }

    #[test]
    fn media_types() {
        let m = RawManifest::new(
            Bytes::from(image_json(Some(DOCKER_MANIFEST))),
            Some(OCI_INDEX),
        )
        .unwrap();
        assert_eq!(
            (m.media_type(), m.kind()),
            (DOCKER_MANIFEST, ManifestKind::Image)
        );
        let m = RawManifest::new(
            Bytes::from(image_json(None)),
            Some("application/vnd.oci.image.manifest.v1+json; charset=x"),
        )
        .unwrap();
        assert_eq!(m.media_type(), OCI_MANIFEST);
        let m = RawManifest::new(Bytes::from(image_json(None)), Some("application/json")).unwrap();
        assert_eq!(m.kind(), ManifestKind::Image);
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        let m = RawManifest::new(Bytes::from(idx), None).unwrap();
        assert_eq!((m.media_type(), m.kind()), (OCI_INDEX, ManifestKind::Index));
        assert!(matches!(m.parse().unwrap(), Manifest::Index(_)));
        let list =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[]}}"#);
        assert_eq!(
            RawManifest::new(Bytes::from(list), None).unwrap().kind(),
            ManifestKind::Index
        );
    }

    #[test]
    fn keeps_exact_bytes() {
        let text = format!("{}\n  ", image_json(Some(OCI_MANIFEST)));
        let m = RawManifest::new(Bytes::from(text.clone()), None).unwrap();
        assert_eq!(m.bytes(), text.as_bytes());
        assert_eq!(m.digest(), &Digest::sha256_of(text.as_bytes()));
        assert_eq!(m.size(), text.len() as u64);
        assert_eq!(m.descriptor().digest().to_string(), m.digest().to_string());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (body, ct) in [
            ("not json", None),
            (r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, None),
            (r#"{"schemaVersion":2}"#, Some("application/json")),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json","manifests":[]}"#,
                None,
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":"x"}"#,
                None,
            ),
        ] {
            assert!(
                RawManifest::new(Bytes::from(body), ct).is_err(),
                "{body} accepted"
            );
        }
    }
}
