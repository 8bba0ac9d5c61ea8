//! In-toto statements and the attestation manifests that carry them, as BuildKit 0.32's
//! image exporter lays them out (`exporter/containerimage/writer.go`): one manifest per
//! platform image, `artifactType` `application/vnd.docker.attestation.manifest.v1+json`,
//! the empty config, one `application/vnd.in-toto+json` layer per statement, and the image
//! as its `subject`.

use serde_json::{Map, Value, json};

use crate::oci::{MEDIA_TYPE_MANIFEST, PlatformImage, sha256_digest};

/// The in-toto statement type.
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Media type of an in-toto statement layer.
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
/// `artifactType` of an attestation manifest.
pub const ARTIFACT_TYPE_ATTESTATION: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// Media type of the OCI empty descriptor.
pub(crate) const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON object, the empty descriptor's content.
pub(crate) const EMPTY_JSON: &[u8] = b"{}";
/// The index annotation naming what an attestation manifest is.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The index annotation naming the image an attestation manifest is about.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The layer annotation naming a statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// One statement's predicate before its subjects are known.
#[derive(Debug, Clone)]
pub(crate) struct Predicate {
    pub(crate) predicate_type: &'static str,
    pub(crate) body: Value,
}

/// An attestation manifest of one platform image, and its statements' bytes.
#[derive(Debug, Clone)]
pub struct AttestationManifest {
    /// The index of the platform image it is about in [`BuiltImage::images`](crate::BuiltImage).
    pub subject: usize,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The statements (its layers), in order.
    pub statements: Vec<Vec<u8>>,
}

impl AttestationManifest {
    /// Digest of the manifest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }
}

/// The statement bytes: BuildKit's field order (`_type`, `predicateType`, `subject`,
/// `predicate`), compact.
fn statement(p: &Predicate, subjects: &[(String, String)]) -> Vec<u8> {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(name, digest)| {
            let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
            json!({"name": name, "digest": {alg: hex}})
        })
        .collect();
    let mut m = Map::new();
    m.insert("_type".into(), json!(STATEMENT_V1));
    m.insert("predicateType".into(), json!(p.predicate_type));
    m.insert("subject".into(), Value::Array(subjects));
    m.insert("predicate".into(), p.body.clone());
    serde_json::to_vec(&Value::Object(m)).expect("a JSON map serialises")
}

/// The attestation manifest for `image` (platform `subject`), its statements naming each
/// of `names` (image names, as purls with the platform) with the image's digest.
pub(crate) fn attestation_manifest(
    image: &PlatformImage,
    subject: usize,
    names: &[String],
    predicates: &[Predicate],
) -> AttestationManifest {
    let (os, arch, variant) = &image.platform;
    let mut plat = format!("{os}/{arch}");
    if let Some(v) = variant {
        plat.push('/');
        plat.push_str(v);
    }
    let digest = image.manifest_digest();
    let subjects: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            (
                super::provenance::image_purl(n, Some(&plat)),
                digest.clone(),
            )
        })
        .collect();
    let statements: Vec<Vec<u8>> = predicates.iter().map(|p| statement(p, &subjects)).collect();
    let layers: Vec<Value> = statements
        .iter()
        .zip(predicates)
        .map(|(s, p)| {
            json!({
                "mediaType": MEDIA_TYPE_IN_TOTO,
                "digest": sha256_digest(s),
                "size": s.len(),
                "annotations": {ANNOTATION_PREDICATE_TYPE: p.predicate_type},
            })
        })
        .collect();
    let mut m = Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(MEDIA_TYPE_MANIFEST));
    m.insert("artifactType".into(), json!(ARTIFACT_TYPE_ATTESTATION));
    m.insert(
        "config".into(),
        json!({
            "mediaType": MEDIA_TYPE_EMPTY,
            "digest": sha256_digest(EMPTY_JSON),
            "size": EMPTY_JSON.len(),
            "data": "e30=",
        }),
    );
    m.insert("layers".into(), Value::Array(layers));
    m.insert(
        "subject".into(),
        json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": digest,
            "size": image.manifest.len(),
        }),
    );
    AttestationManifest {
        subject,
        manifest: serde_json::to_vec(&Value::Object(m)).expect("a JSON map serialises"),
        statements,
    }
}

/// The index entry of an attestation manifest: BuildKit's annotations and the
/// `unknown/unknown` platform.
pub(crate) fn index_entry(att: &AttestationManifest, subject_digest: &str) -> Value {
    json!({
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": att.digest(),
        "size": att.manifest.len(),
        "annotations": {
            ANNOTATION_REFERENCE_DIGEST: subject_digest,
            ANNOTATION_REFERENCE_TYPE: "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    })
}

/// The OCI 1.1 referrers entry of an attestation manifest (for the tag fallback's index).
pub(crate) fn referrer_entry(att: &AttestationManifest) -> Value {
    json!({
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": att.digest(),
        "size": att.manifest.len(),
        "artifactType": ARTIFACT_TYPE_ATTESTATION,
    })
}
