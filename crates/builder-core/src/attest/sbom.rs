//! The SBOM attestation: an SPDX 2.3 JSON document of the packages [`scan`](super::scan)
//! finds in an image's final filesystem, as BuildKit's SBOM statements carry one
//! (predicate type `https://spdx.dev/Document`).

use serde_json::{Value, json};

use super::scan::{Ecosystem, Package};

/// The SPDX predicate type.
pub(crate) const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

fn spdx_id(p: &Package, n: usize) -> String {
    let kind = match p.ecosystem {
        Ecosystem::Deb => "deb",
        Ecosystem::Apk => "apk",
        Ecosystem::Npm => "npm",
        Ecosystem::Python => "python",
        Ecosystem::Go => "go-module",
    };
    let clean: String = format!("{kind}-{}-{}", p.name, p.version)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-{clean}-{n}")
}

/// An SPDX license expression, or `NOASSERTION` for what is not one (free text).
fn license_expression(l: Option<&str>) -> String {
    let Some(l) = l.map(str::trim).filter(|l| !l.is_empty()) else {
        return "NOASSERTION".into();
    };
    // Identifiers and operators alternate (parentheses aside).
    let ok = l
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .enumerate()
        .all(|(i, t)| {
            if i % 2 == 1 {
                matches!(t, "AND" | "OR" | "WITH")
            } else {
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))
            }
        });
    if ok {
        l.to_owned()
    } else {
        "NOASSERTION".into()
    }
}

/// The SPDX document for the packages of one image. `name` names the image (its first
/// tag, or the platform), `created` is RFC 3339 (SOURCE_DATE_EPOCH when set, so equal
/// builds give equal documents); the namespace is derived from the content.
pub(crate) fn document(name: &str, created: &str, packages: &[Package]) -> Value {
    let mut pkgs = Vec::new();
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relatedSpdxElement": "SPDXRef-DocumentRoot-Image",
        "relationshipType": "DESCRIBES",
    })];
    pkgs.push(json!({
        "name": name,
        "SPDXID": "SPDXRef-DocumentRoot-Image",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }));
    for (n, p) in packages.iter().enumerate() {
        let id = spdx_id(p, n);
        let mut v = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("acquired package info from {}", p.location),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_expression(p.license.as_deref()),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        });
        if let Some(s) = &p.supplier {
            v["supplier"] = json!(format!("Person: {s}"));
        }
        if let Some(l) = &p.license {
            if license_expression(Some(l)) == "NOASSERTION" {
                v["licenseComments"] = json!(l);
            }
        }
        pkgs.push(v);
        rels.push(json!({
            "spdxElementId": "SPDXRef-DocumentRoot-Image",
            "relatedSpdxElement": id,
            "relationshipType": "CONTAINS",
        }));
    }
    let body = json!({"packages": pkgs, "relationships": rels});
    let hash = super::provenance::sha256_hex(
        serde_json::to_vec(&body)
            .expect("JSON serialises")
            .as_slice(),
    );
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://spdx.org/spdxdocs/rbuild-{hash}"),
        "creationInfo": {
            "creators": [format!("Tool: rbuild-{}", env!("CARGO_PKG_VERSION"))],
            "created": created,
        },
        "packages": body["packages"],
        "relationships": body["relationships"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_that_are_not_expressions_are_noassertion() {
        assert_eq!(
            license_expression(Some("MIT OR Apache-2.0")),
            "MIT OR Apache-2.0"
        );
        assert_eq!(license_expression(Some("GPL-2+")), "GPL-2+");
        assert_eq!(license_expression(Some("see LICENSE file")), "NOASSERTION");
        assert_eq!(license_expression(None), "NOASSERTION");
    }
}
