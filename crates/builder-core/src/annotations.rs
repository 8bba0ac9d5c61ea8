//! `--annotation [TYPE[,TYPE…]:][TYPE[PLATFORM]:]KEY=VALUE`, as buildx parses it and
//! BuildKit's image exporters write it: `manifest` (the default) in each image manifest
//! (only the platform's with `manifest[linux/arm64]:`), `manifest-descriptor` on the
//! manifests' entries in the index, `index` on the index, `index-descriptor` on the entry
//! of an OCI layout's `index.json`. Without an index (one platform, no attestations) only
//! manifest annotations can be written: the others are BuildKit's error.
//!
//! ```
//! use builder_core::annotations::{Annotation, AnnotationKind};
//! let a = Annotation::parse("index,manifest[linux/arm64]:org.opencontainers.image.title=app").unwrap();
//! assert_eq!(a.len(), 2);
//! assert_eq!(a[0].kind, AnnotationKind::Index);
//! assert_eq!(a[1].platform.as_deref(), Some("linux/arm64/v8"));
//! assert_eq!(Annotation::parse("k=v").unwrap()[0].kind, AnnotationKind::Manifest);
//! assert!(Annotation::parse("layer:k=v").is_err());
//! ```

use std::collections::BTreeMap;

use registry_client::Platform;
use serde_json::{Value, json};

use crate::Error;
use crate::oci::{BuiltImage, PlatformImage};

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnotationKind {
    /// The image manifest (each platform's, or one).
    Manifest,
    /// The manifest's descriptor in the image index.
    ManifestDescriptor,
    /// The image index.
    Index,
    /// The index's descriptor in an OCI layout's `index.json`.
    IndexDescriptor,
}

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes.
    pub kind: AnnotationKind,
    /// Only for this platform (normalised, `os/arch[/variant]`), for manifests.
    pub platform: Option<String>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

fn bad(s: &str, reason: impl Into<String>) -> Error {
    crate::engine::invalid_option("annotation", s, reason)
}

impl Annotation {
    /// Parses one `--annotation` (one annotation per type it names).
    pub fn parse(s: &str) -> Result<Vec<Annotation>, Error> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| bad(s, "expected key=value"))?;
        let Some((types, key)) = k.split_once(':') else {
            if k.is_empty() {
                return Err(bad(s, "empty key"));
            }
            return Ok(vec![Annotation {
                kind: AnnotationKind::Manifest,
                platform: None,
                key: k.to_owned(),
                value: v.to_owned(),
            }]);
        };
        if key.is_empty() {
            return Err(bad(s, "empty key"));
        }
        let mut out = Vec::new();
        for t in types.split(',') {
            let (name, platform) = match t.split_once('[') {
                Some((n, rest)) => {
                    let p = rest.strip_suffix(']').ok_or_else(|| {
                        bad(s, format!("invalid annotation type {t:?}, expected type and optional platform in square brackets"))
                    })?;
                    let p: Platform = p
                        .parse()
                        .map_err(|e| bad(s, format!("invalid platform {p:?}: {e}")))?;
                    (n, Some(p.to_string()))
                }
                None => (t, None),
            };
            let kind = match name {
                "manifest" => AnnotationKind::Manifest,
                "manifest-descriptor" => AnnotationKind::ManifestDescriptor,
                "index" => AnnotationKind::Index,
                "index-descriptor" => AnnotationKind::IndexDescriptor,
                other => return Err(bad(s, format!("unknown annotation type {other:?}"))),
            };
            if platform.is_some()
                && matches!(
                    kind,
                    AnnotationKind::Index | AnnotationKind::IndexDescriptor
                )
            {
                return Err(bad(s, format!("{name} annotations take no platform")));
            }
            out.push(Annotation {
                kind,
                platform,
                key: key.to_owned(),
                value: v.to_owned(),
            });
        }
        Ok(out)
    }
}

fn platform_of(img: &PlatformImage) -> String {
    let (os, arch, variant) = &img.platform;
    Platform::new(os, arch, variant.as_deref())
        .map(|p| p.to_string())
        .unwrap_or_default()
}

fn matching(
    list: &[Annotation],
    kind: AnnotationKind,
    platform: Option<&str>,
) -> BTreeMap<String, String> {
    list.iter()
        .filter(|a| a.kind == kind)
        .filter(|a| a.platform.is_none() || a.platform.as_deref() == platform)
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect()
}

/// Writes the manifest annotations into the platform images (before attestations name
/// their digests).
pub(crate) fn annotate_manifests(images: &mut [PlatformImage], list: &[Annotation]) {
    for img in images {
        let p = platform_of(img);
        let m = matching(list, AnnotationKind::Manifest, Some(&p));
        if !m.is_empty() {
            img.annotate(&m);
        }
    }
}

/// Writes the index and descriptor annotations; an error when there is no index to
/// write them in (BuildKit's words).
pub(crate) fn annotate_index(built: &mut BuiltImage, list: &[Annotation]) -> Result<(), Error> {
    let others = list.iter().any(|a| a.kind != AnnotationKind::Manifest);
    if !others {
        return Ok(());
    }
    let Some(index) = &built.index else {
        return Err(bad(
            &list
                .iter()
                .find(|a| a.kind != AnnotationKind::Manifest)
                .map(|a| a.key.clone())
                .unwrap_or_default(),
            "index annotations not supported for single platform export",
        ));
    };
    let mut doc: Value = serde_json::from_slice(index).expect("the index is JSON");
    let platforms: Vec<(String, String)> = built
        .images
        .iter()
        .map(|i| (i.manifest_digest(), platform_of(i)))
        .collect();
    if let Some(entries) = doc["manifests"].as_array_mut() {
        for e in entries {
            let digest = e["digest"].as_str().unwrap_or_default().to_owned();
            let Some((_, p)) = platforms.iter().find(|(d, _)| *d == digest) else {
                continue; // an attestation manifest
            };
            let m = matching(list, AnnotationKind::ManifestDescriptor, Some(p));
            if m.is_empty() {
                continue;
            }
            let obj = e.as_object_mut().expect("an index entry is an object");
            let a = obj.entry("annotations").or_insert_with(|| json!({}));
            for (k, v) in m {
                a[k] = json!(v);
            }
        }
    }
    let ix = matching(list, AnnotationKind::Index, None);
    if !ix.is_empty() {
        doc["annotations"] = json!(ix);
    }
    built.index = Some(serde_json::to_vec(&doc).expect("JSON serialises"));
    built.layout_annotations = matching(list, AnnotationKind::IndexDescriptor, None);
    Ok(())
}
