//! Supply-chain attestations attached to built images: SLSA v1 provenance and SPDX SBOMs
//! in in-toto statements, laid out as BuildKit 0.32 lays them out.
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{AttestSpec, Build, ExportSpec, NullSink};
//! let report = Build::new("services/auth")?
//!     .tag("127.0.0.1:5000/team/auth:1")?
//!     .output(ExportSpec::registry())
//!     .attest(AttestSpec::shorthand("provenance", "mode=max")?)
//!     .attest("type=sbom".parse()?)
//!     .run(&mut NullSink)
//!     .await?;
//! // The index lists the image and, as `unknown/unknown`, its attestation manifest.
//! let image = report.image.expect("an output was given");
//! assert_eq!(image.attestations.len(), 1);
//! # Ok(()) }
//! ```

pub(crate) mod layout;
pub(crate) mod provenance;
pub(crate) mod sbom;
pub mod scan;
mod spec;

pub use layout::{
    ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE,
    ARTIFACT_TYPE_ATTESTATION, AttestationManifest, MEDIA_TYPE_IN_TOTO,
};
pub use spec::{AttestSpec, Attestations, ProvenanceMode, ProvenanceOptions, SbomOptions};

/// The predicate type of SLSA v1 provenance statements.
pub const PREDICATE_PROVENANCE: &str = provenance::PREDICATE_SLSA1;
/// The predicate type of SPDX SBOM statements.
pub const PREDICATE_SPDX: &str = sbom::PREDICATE_SPDX;

/// The SPDX 2.3 document of the packages in a filesystem (`name` names it, `created` is
/// its RFC 3339 creation time): what an SBOM attestation carries.
pub fn spdx_document(
    tree: &dyn scan::Tree,
    name: &str,
    created: &str,
) -> std::io::Result<serde_json::Value> {
    let packages = scan::scan(tree)?;
    Ok(sbom::document(name, created, &packages))
}

/// The predicate of every statement of a kind in an attestation manifest's statements.
pub fn predicates(statements: &[Vec<u8>], predicate_type: &str) -> Vec<serde_json::Value> {
    statements
        .iter()
        .filter_map(|s| serde_json::from_slice::<serde_json::Value>(s).ok())
        .filter(|v| v["predicateType"] == predicate_type)
        .map(|v| v["predicate"].clone())
        .collect()
}
