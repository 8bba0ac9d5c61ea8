//! `--attest` specifications (`type=provenance,mode=max`, `type=sbom`, `type=none`) and the
//! buildx shorthands `--provenance` / `--sbom`, parsed and validated when they are given.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::engine::Error;
use crate::engine::export_spec::bool_field;

/// How much a provenance attestation records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProvenanceMode {
    /// `mode=min`: the request without build arguments, labels, secrets or SSH ids, and the
    /// resolved dependencies (buildx's default).
    Min,
    /// `mode=max`: also the build arguments, the build steps, the Dockerfile and each
    /// step's layers.
    Max,
}

/// A provenance attestation's options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvenanceOptions {
    /// `mode=` (default `max` for an explicit `--attest type=provenance`, as BuildKit).
    pub mode: ProvenanceMode,
    /// `builder-id=`: `runDetails.builder.id` (default empty).
    pub builder_id: String,
    /// `reproducible=true`: marks the provenance `buildkit_reproducible`.
    pub reproducible: bool,
}

/// An SBOM attestation's options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SbomOptions {}

/// One `--attest` (or `--provenance` / `--sbom`) flag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestSpec {
    /// `type=provenance,...`; `None` for `disabled=true` (`--provenance=false`).
    Provenance(Option<ProvenanceOptions>),
    /// `type=sbom,...`; `None` for `disabled=true` (`--sbom=false`).
    Sbom(Option<SbomOptions>),
    /// `type=none`: no attestation at all, not even buildx's default provenance.
    None,
}

fn bad(spec: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        what: "attest",
        value: spec.to_owned(),
        reason: reason.into(),
    }
}

impl AttestSpec {
    /// buildx's `--provenance VALUE` / `--sbom VALUE` shorthand for `--attest`: a boolean
    /// switches the attestation on or off, anything else is its options
    /// (`--provenance=mode=max` is `--attest type=provenance,mode=max`).
    pub fn shorthand(kind: &str, value: &str) -> Result<Self, Error> {
        let spec = match value {
            "true" | "1" => format!("type={kind}"),
            "false" | "0" => format!("type={kind},disabled=true"),
            "" => format!("type={kind}"),
            v => format!("type={kind},{v}"),
        };
        spec.parse()
    }

    /// buildx's default when no provenance is asked for and `BUILDX_NO_DEFAULT_ATTESTATIONS`
    /// is not set: `mode=min` provenance.
    pub fn buildx_default() -> Self {
        AttestSpec::Provenance(Some(ProvenanceOptions {
            mode: ProvenanceMode::Min,
            builder_id: String::new(),
            reproducible: false,
        }))
    }
}

impl FromStr for AttestSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let mut fields = BTreeMap::new();
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(spec, format!("{field:?} is not key=value")))?;
            if fields.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(bad(spec, format!("{k} is given twice")));
            }
        }
        let kind = fields
            .remove("type")
            .ok_or_else(|| bad(spec, "missing type= (provenance, sbom or none)"))?;
        let disabled = match fields.remove("disabled") {
            Some(v) => bool_field("disabled", &v).map_err(|r| bad(spec, r))?,
            None => false,
        };
        let unknown = |fields: &BTreeMap<String, String>| -> Result<(), Error> {
            match fields.keys().next() {
                Some(k) => Err(bad(spec, format!("unknown or unsupported option {k:?}"))),
                None => Ok(()),
            }
        };
        match kind.as_str() {
            "provenance" => {
                if disabled {
                    return Ok(AttestSpec::Provenance(None));
                }
                let mode = match fields.remove("mode").as_deref() {
                    None | Some("max") | Some("full") => ProvenanceMode::Max,
                    Some("min") => ProvenanceMode::Min,
                    Some(m) => return Err(bad(spec, format!("mode={m:?}: expected min or max"))),
                };
                match fields.remove("version").as_deref() {
                    None | Some("v1") => {}
                    Some(v) => {
                        return Err(bad(
                            spec,
                            format!("version={v:?}: only SLSA v1 provenance is supported"),
                        ));
                    }
                }
                let reproducible = match fields.remove("reproducible") {
                    Some(v) => bool_field("reproducible", &v).map_err(|r| bad(spec, r))?,
                    None => false,
                };
                let builder_id = fields.remove("builder-id").unwrap_or_default();
                // buildx's own default carries inline-only=true: attestations only go
                // into images, which is all rbuild attaches them to.
                if let Some(v) = fields.remove("inline-only") {
                    bool_field("inline-only", &v).map_err(|r| bad(spec, r))?;
                }
                unknown(&fields)?;
                Ok(AttestSpec::Provenance(Some(ProvenanceOptions {
                    mode,
                    builder_id,
                    reproducible,
                })))
            }
            "sbom" => {
                if disabled {
                    return Ok(AttestSpec::Sbom(None));
                }
                if let Some(g) = fields.remove("generator") {
                    if !g.contains("buildkit-syft-scanner") {
                        return Err(bad(
                            spec,
                            format!(
                                "generator={g:?}: rbuild generates the SBOM itself and runs no \
                                 scanner image; leave generator= out"
                            ),
                        ));
                    }
                }
                for k in ["scan-stage", "scan-context"] {
                    if let Some(v) = fields.remove(k) {
                        if bool_field(k, &v).map_err(|r| bad(spec, r))? {
                            return Err(bad(spec, format!("{k}=true is not supported yet")));
                        }
                    }
                }
                unknown(&fields)?;
                Ok(AttestSpec::Sbom(Some(SbomOptions {})))
            }
            "none" => {
                unknown(&fields)?;
                Ok(AttestSpec::None)
            }
            other => Err(bad(
                spec,
                format!("unknown attestation type {other:?} (provenance, sbom or none)"),
            )),
        }
    }
}

/// The attestations a build attaches, from its `--attest` flags in order (a later flag of
/// a type replaces an earlier one; `type=none` switches every type off).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Attestations {
    /// The provenance attestation, if any.
    pub provenance: Option<ProvenanceOptions>,
    /// The SBOM attestation, if any.
    pub sbom: Option<SbomOptions>,
    /// Attach them as OCI 1.1 referrers (manifests whose `subject` is the image, found
    /// through the referrers API or its tag fallback) instead of entries of the image's
    /// index.
    pub referrers: bool,
    /// Some flag named provenance (on or off): buildx's default does not apply.
    pub(crate) provenance_given: bool,
    /// `type=none` was given.
    pub(crate) none: bool,
}

impl Attestations {
    /// Applies one flag.
    pub fn apply(&mut self, spec: AttestSpec) {
        match spec {
            AttestSpec::Provenance(p) => {
                self.provenance = p;
                self.provenance_given = true;
            }
            AttestSpec::Sbom(s) => self.sbom = s,
            AttestSpec::None => {
                self.provenance = None;
                self.sbom = None;
                self.none = true;
            }
        }
    }

    /// Whether anything is attached.
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom.is_some()
    }

    /// buildx's default (`mode=min` provenance) unless a provenance flag or `type=none`
    /// was given.
    pub fn with_buildx_default(mut self) -> Self {
        if !self.provenance_given && !self.none {
            if let AttestSpec::Provenance(p) = AttestSpec::buildx_default() {
                self.provenance = p;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_attest_flags() {
        let max = AttestSpec::shorthand("provenance", "mode=max").unwrap();
        assert!(matches!(
            max,
            AttestSpec::Provenance(Some(ProvenanceOptions {
                mode: ProvenanceMode::Max,
                ..
            }))
        ));
        assert_eq!(
            AttestSpec::shorthand("provenance", "false").unwrap(),
            AttestSpec::Provenance(None)
        );
        let p: AttestSpec = "type=provenance,mode=min,builder-id=https://ci/run/1"
            .parse()
            .unwrap();
        let AttestSpec::Provenance(Some(o)) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            (o.mode, o.builder_id.as_str()),
            (ProvenanceMode::Min, "https://ci/run/1")
        );
        assert_eq!(
            AttestSpec::shorthand("sbom", "true").unwrap(),
            AttestSpec::Sbom(Some(SbomOptions {}))
        );
        assert_eq!("type=none".parse::<AttestSpec>().unwrap(), AttestSpec::None);

        let mut a = Attestations::default();
        a.apply(AttestSpec::Sbom(Some(SbomOptions {})));
        let a = a.with_buildx_default();
        assert_eq!(
            a.provenance.as_ref().map(|p| p.mode),
            Some(ProvenanceMode::Min)
        );
        let mut off = Attestations::default();
        off.apply(AttestSpec::None);
        assert!(!off.with_buildx_default().any());
        let mut off = Attestations::default();
        off.apply(AttestSpec::Provenance(None));
        assert!(!off.with_buildx_default().any());
    }

    #[test]
    fn rejects_bad_attest_flags_naming_the_problem() {
        for (spec, needle) in [
            ("mode=max", "missing type"),
            ("type=vex", "unknown attestation type"),
            ("type=provenance,mode=huge", "mode="),
            ("type=provenance,version=v0.2", "SLSA v1"),
            ("type=provenance,colour=red", "colour"),
            ("type=sbom,generator=example/scanner", "generator"),
            ("type=sbom,scan-stage=true", "scan-stage"),
            ("type=provenance,disabled=maybe", "disabled"),
            ("type=provenance,mode", "key=value"),
        ] {
            let e = spec.parse::<AttestSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
