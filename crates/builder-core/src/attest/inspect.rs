//! Reading an image's attestations back from a registry, and printing them as
//! `docker buildx imagetools inspect --format '{{json .Provenance}}'` / `'{{json .SBOM}}'`
//! do.

use std::collections::BTreeMap;

use registry_client::{Client, Manifest, RawManifest, Reference};
use serde_json::{Map, Value};

use super::layout::{
    ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE,
    ARTIFACT_TYPE_ATTESTATION,
};
use crate::engine::Error;

/// The attestations of one platform image.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ImageAttestations {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The image manifest's digest.
    pub digest: String,
    /// The SLSA provenance predicate.
    pub provenance: Option<Value>,
    /// The first SPDX document.
    pub sbom: Option<Value>,
    /// Further SPDX documents.
    pub additional_sboms: Vec<Value>,
}

fn bad(reference: &Reference, reason: impl Into<String>) -> Error {
    Error::BadImage {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

fn json_of(reference: &Reference, m: &RawManifest) -> Result<Value, Error> {
    serde_json::from_slice(m.bytes()).map_err(|e| bad(reference, format!("not JSON: {e}")))
}

fn platform_of(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut p = format!("{}/{}", s("os"), s("architecture"));
    if !s("variant").is_empty() {
        p.push('/');
        p.push_str(&s("variant"));
    }
    p
}

/// The attestations of every platform image `reference` names: those the index lists
/// (BuildKit's layout) and, for images without, the OCI 1.1 referrers found through the
/// referrers tag fallback.
pub async fn inspect_attestations(
    client: &Client,
    reference: &Reference,
) -> Result<Vec<ImageAttestations>, Error> {
    let top = client.resolve(reference).await?;
    let repo = reference.repository();
    let mut images: Vec<ImageAttestations> = Vec::new();
    let mut att_manifests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match top.parse()? {
        Manifest::Index(_) => {
            let v = json_of(reference, &top)?;
            for d in v["manifests"].as_array().into_iter().flatten() {
                let digest = d["digest"].as_str().unwrap_or_default().to_owned();
                let ann = &d["annotations"];
                if ann[ANNOTATION_REFERENCE_TYPE] == "attestation-manifest" {
                    let subject = ann[ANNOTATION_REFERENCE_DIGEST]
                        .as_str()
                        .unwrap_or_default();
                    att_manifests
                        .entry(subject.to_owned())
                        .or_default()
                        .push(digest);
                } else {
                    images.push(ImageAttestations {
                        platform: platform_of(&d["platform"]),
                        digest,
                        ..Default::default()
                    });
                }
            }
        }
        Manifest::Image(m) => {
            let cfg = client.fetch_blob(repo, m.config()).await?;
            let cfg: Value = serde_json::from_slice(&cfg)
                .map_err(|e| bad(reference, format!("config is not JSON: {e}")))?;
            images.push(ImageAttestations {
                platform: platform_of(&cfg),
                digest: top.digest().to_string(),
                ..Default::default()
            });
        }
    }
    for img in &mut images {
        let mut list = att_manifests.remove(&img.digest).unwrap_or_default();
        if list.is_empty() {
            list = referrers(client, reference, &img.digest).await?;
        }
        for d in list {
            let digest: registry_client::Digest = d.parse()?;
            let raw = client.fetch_manifest(repo, &digest).await?;
            let Manifest::Image(m) = raw.parse()? else {
                continue;
            };
            for layer in m.layers() {
                let Some(pt) = layer
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_PREDICATE_TYPE))
                    .cloned()
                else {
                    continue;
                };
                let bytes = client.fetch_blob(repo, layer).await?;
                let st: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(reference, format!("statement is not JSON: {e}")))?;
                let pred = st["predicate"].clone();
                if pt == super::PREDICATE_SPDX {
                    if img.sbom.is_none() {
                        img.sbom = Some(pred);
                    } else {
                        img.additional_sboms.push(pred);
                    }
                } else if pt.starts_with("https://slsa.dev/provenance/") && img.provenance.is_none()
                {
                    img.provenance = Some(pred);
                }
            }
        }
    }
    Ok(images)
}

/// The attestation manifests the referrers tag fallback (`sha256-<hex>`) lists for
/// `digest`; none when the tag does not exist.
async fn referrers(
    client: &Client,
    reference: &Reference,
    digest: &str,
) -> Result<Vec<String>, Error> {
    let tag = Reference::with_tag(reference.repository().clone(), &digest.replace(':', "-"))?;
    let raw = match client.resolve(&tag).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let v = json_of(&tag, &raw)?;
    Ok(v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["artifactType"] == ARTIFACT_TYPE_ATTESTATION)
        .filter_map(|d| d["digest"].as_str().map(str::to_owned))
        .collect())
}

/// Go's `encoding/json` of a decoded document: object keys sorted, compact.
fn go_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, go_json(v))).collect();
            let mut out = Map::new();
            for (k, v) in sorted {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(go_json).collect()),
        other => other.clone(),
    }
}

fn provenance_stub(i: &ImageAttestations) -> Value {
    let mut m = Map::new();
    if let Some(p) = &i.provenance {
        m.insert("SLSA".into(), p.clone());
    }
    Value::Object(m)
}

fn sbom_stub(i: &ImageAttestations) -> Value {
    let mut m = Map::new();
    if let Some(s) = &i.sbom {
        m.insert("SPDX".into(), s.clone());
    }
    if !i.additional_sboms.is_empty() {
        m.insert(
            "AdditionalSPDXs".into(),
            Value::Array(i.additional_sboms.clone()),
        );
    }
    Value::Object(m)
}

/// What buildx prints for `--format TEMPLATE`: `{{json .Provenance}}` and
/// `{{json .SBOM}}` (one image: its stub; several: a map by platform), and for one image
/// `{{json .Provenance.SLSA}}` / `{{json .SBOM.SPDX}}`. Other templates are refused.
pub fn format_attestations(images: &[ImageAttestations], template: &str) -> Result<String, Error> {
    let inner = template
        .trim()
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map(str::trim)
        .and_then(|t| t.strip_prefix("json"))
        .map(str::trim);
    let unsupported = || {
        Error::InvalidOption {
        what: "format",
        value: template.to_owned(),
        reason: "rbuild supports {{json .Provenance}}, {{json .SBOM}}, {{json .Provenance.SLSA}} and {{json .SBOM.SPDX}}".into(),
    }
    };
    let path = inner.ok_or_else(unsupported)?;
    let (field, sub) = match path {
        ".Provenance" => (true, None),
        ".SBOM" => (false, None),
        ".Provenance.SLSA" => (true, Some("SLSA")),
        ".SBOM.SPDX" => (false, Some("SPDX")),
        _ => return Err(unsupported()),
    };
    let stub = |i: &ImageAttestations| {
        if field {
            provenance_stub(i)
        } else {
            sbom_stub(i)
        }
    };
    let value = if images.len() == 1 {
        let s = stub(&images[0]);
        match sub {
            Some(k) => s.get(k).cloned().unwrap_or(Value::Null),
            None => s,
        }
    } else {
        if sub.is_some() {
            return Err(Error::InvalidOption {
                what: "format",
                value: template.to_owned(),
                reason: "the image has several platforms: use {{json .Provenance}} or {{json .SBOM}} (a map by platform)".into(),
            });
        }
        let mut m = Map::new();
        for i in images {
            m.insert(i.platform.clone(), stub(i));
        }
        Value::Object(m)
    };
    Ok(serde_json::to_string(&go_json(&value)).expect("JSON serialises"))
}
