//! `--output` specifications (`type=oci,dest=out.tar,compression=zstd`), parsed and
//! validated when they are given.

use std::path::PathBuf;
use std::str::FromStr;

use layer_cache::Compression;

use super::Error;

/// Where a build's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportKind {
    /// Push to the registry of each `--tag` (`type=registry`, `type=image,push=true`).
    Registry,
    /// An OCI image layout, as a tar file (`tar=true`, the default) or a directory.
    Oci {
        /// The tar file or directory.
        dest: PathBuf,
        /// A tar file rather than a directory.
        tar: bool,
    },
    /// A docker-archive for `docker load` (one platform).
    Docker {
        /// The tar file.
        dest: PathBuf,
    },
    /// The final filesystem as plain files.
    Local {
        /// The directory.
        dest: PathBuf,
        /// `platform-split=`: one directory per platform (`os_arch[_variant]`); the default
        /// (`None`) splits when there are several platforms, as BuildKit.
        platform_split: Option<bool>,
    },
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSpec {
    /// The exporter.
    pub kind: ExportKind,
    /// Layer compression for new layers.
    pub compression: Compression,
    /// Compression level, when given.
    pub compression_level: Option<i32>,
    /// Extra image names (`name=a,b`), besides the `--tag`s.
    pub names: Vec<String>,
    /// `rewrite-timestamp=`: `Some(true)` clamps the new layers' mtimes to
    /// SOURCE_DATE_EPOCH and marks them with BuildKit's `buildkit/rewritten-timestamp`
    /// layer annotation (a manifest identical to BuildKit's); `Some(false)` keeps the files'
    /// own mtimes (BuildKit's default); `None` (not given) clamps without the annotation,
    /// so that a build with SOURCE_DATE_EPOCH is reproducible by default.
    pub rewrite_timestamp: Option<bool>,
    /// `source-date-epoch=`: the epoch the exporter clamps and marks layers with, in place
    /// of the build's SOURCE_DATE_EPOCH: `Some(Some(t))` another epoch, `Some(None)` (an
    /// empty value) none at all, as BuildKit's exporter attribute; `None` keeps the build's.
    pub source_date_epoch: Option<Option<i64>>,
    /// `push-by-digest=true`: push the manifest (or index) by its digest alone, no tag
    /// (the names must not carry a tag, as in BuildKit). One runner per platform pushes so;
    /// `imagetools create` then merges the digests into one tagged index.
    pub push_by_digest: bool,
    /// `name-canonical=true`: BuildKit's image store also names the image `name@digest`.
    /// rbuild has no image store, and a push is the same with or without it (as it is in
    /// BuildKit): accepted for the buildx recipe.
    pub name_canonical: bool,
}

impl ExportSpec {
    /// `type=registry`.
    pub fn registry() -> Self {
        Self::of_kind(ExportKind::Registry)
    }

    /// `type=docker,dest=PATH`: a docker-archive for `docker load`.
    ///
    /// ```
    /// use builder_core::{ExportKind, ExportSpec};
    /// let spec = ExportSpec::docker("/tmp/image.tar");
    /// assert_eq!(spec, "type=docker,dest=/tmp/image.tar".parse().unwrap());
    /// assert!(matches!(spec.kind, ExportKind::Docker { .. }));
    /// ```
    pub fn docker(dest: impl Into<PathBuf>) -> Self {
        Self::of_kind(ExportKind::Docker { dest: dest.into() })
    }

    fn of_kind(kind: ExportKind) -> Self {
        Self {
            kind,
            compression: Compression::Gzip,
            compression_level: None,
            names: Vec::new(),
            rewrite_timestamp: None,
            source_date_epoch: None,
            push_by_digest: false,
            name_canonical: false,
        }
    }

    /// Whether this output pushes to a registry (`type=registry`,
    /// `type=image,push=true`): such an output needs a name (a `--tag` or `name=`).
    ///
    /// ```
    /// use builder_core::ExportSpec;
    /// let push: ExportSpec = "type=image,push=true".parse().unwrap();
    /// let oci: ExportSpec = "type=oci,dest=out.tar".parse().unwrap();
    /// assert!(push.pushes() && !oci.pushes());
    /// ```
    pub fn pushes(&self) -> bool {
        self.kind == ExportKind::Registry
    }

    /// Whether this output is a docker-archive (`type=docker`), which holds one
    /// platform's image.
    pub fn is_docker(&self) -> bool {
        matches!(self.kind, ExportKind::Docker { .. })
    }

    /// An output from its attributes (`("type", "oci")`, `("dest", "out.tar")`, ...), as a
    /// bake file's `output` lists them: the same keys and checks as [`str::parse`], without
    /// the CSV layer (a value may hold commas: `name=a:1,a:2`).
    ///
    /// ```
    /// use builder_core::ExportSpec;
    /// let spec = ExportSpec::from_attrs([("type", "registry"), ("name", "r/a:1,r/a:2")]).unwrap();
    /// assert_eq!(spec.names, ["r/a:1", "r/a:2"]);
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOutput`] naming the problem, as for a spec string.
    pub fn from_attrs<K, V>(attrs: impl IntoIterator<Item = (K, V)>) -> Result<Self, Error>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let pairs: Vec<(String, String)> = attrs
            .into_iter()
            .map(|(k, v)| {
                (
                    k.as_ref().trim().to_ascii_lowercase(),
                    v.as_ref().to_owned(),
                )
            })
            .collect();
        let spec = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Self::from_pairs(&spec, &pairs)
    }
}

fn bad(spec: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOutput {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

/// A boolean field of a buildx `key=value` spec (`--output`, `--cache-to`, ...), read as
/// Go's `strconv.ParseBool` reads it: the reason string on a bad value, for the caller's
/// own error type.
pub(crate) fn bool_field(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{key}={v:?}: expected true or false")),
    }
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool, Error> {
    bool_field(key, v).map_err(|reason| bad(spec, reason))
}

/// What rbuild cannot write yet: buildx's `-` (a tar on standard output).
const STDOUT: &str = "writing to standard output is not supported yet; give dest=PATH";

impl FromStr for ExportSpec {
    type Err = Error;

    /// buildx's `--output` grammar: a CSV list of `key=value` fields (keys case-blind, a
    /// quoted field may hold commas), or a bare path for `type=local,dest=PATH`.
    fn from_str(spec: &str) -> Result<Self, Error> {
        if spec == "-" {
            return Err(bad(spec, STDOUT));
        }
        if spec.is_empty() {
            return Err(bad(spec, "empty output specification"));
        }
        if !spec.contains('=') && !spec.contains(',') {
            return Ok(Self::of_kind(ExportKind::Local {
                dest: spec.into(),
                platform_split: None,
            }));
        }
        let fields = dockerfile::csv_fields(spec)
            .map_err(|e| bad(spec, format!("not a CSV list of key=value fields: {e}")))?;
        let mut pairs = Vec::with_capacity(fields.len());
        for field in fields {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(spec, format!("{field:?} is not key=value")))?;
            pairs.push((k.trim().to_ascii_lowercase(), v.to_owned()));
        }
        Self::from_pairs(spec, &pairs)
    }
}

impl ExportSpec {
    /// The checked output of `pairs` (lower-case keys); `spec` names it in errors.
    fn from_pairs(spec: &str, pairs: &[(String, String)]) -> Result<Self, Error> {
        let mut kind = None;
        let mut dest = None;
        let mut tar = true;
        let mut push = false;
        let mut compression = Compression::Gzip;
        let mut level = None;
        let mut names = Vec::new();
        let mut rewrite_timestamp = None;
        let mut source_date_epoch = None;
        let mut push_by_digest = false;
        let mut platform_split = None;
        let mut name_canonical = false;
        for (k, v) in pairs {
            let (k, v) = (k.as_str(), v.as_str());
            match k {
                "type" => kind = Some(v.to_owned()),
                "dest" => {
                    if v.is_empty() {
                        return Err(bad(spec, "dest is empty"));
                    }
                    if v == "-" {
                        return Err(bad(spec, STDOUT));
                    }
                    dest = Some(PathBuf::from(v));
                }
                "tar" => tar = parse_bool(spec, k, v)?,
                "push" => push = parse_bool(spec, k, v)?,
                "push-by-digest" => push_by_digest = parse_bool(spec, k, v)?,
                "platform-split" => platform_split = Some(parse_bool(spec, k, v)?),
                "name-canonical" => name_canonical = parse_bool(spec, k, v)?,
                "rewrite-timestamp" => rewrite_timestamp = Some(parse_bool(spec, k, v)?),
                "source-date-epoch" if v.is_empty() => source_date_epoch = Some(None),
                "source-date-epoch" => {
                    let t = v.parse::<i64>().map_err(|_| {
                        bad(
                            spec,
                            format!("source-date-epoch={v:?} is not whole seconds"),
                        )
                    })?;
                    source_date_epoch = Some(Some(t));
                }
                // buildx separates names with ',' (in a quoted field); ';' is accepted too.
                "name" => {
                    for n in v.split([',', ';']).filter(|n| !n.is_empty()) {
                        if let Err(e) = n.parse::<registry_client::Reference>() {
                            let reason = match e {
                                registry_client::Error::InvalidReference { reason, .. } => reason,
                                e => e.to_string(),
                            };
                            return Err(bad(
                                spec,
                                format!("name {n:?}: invalid reference format: {reason}"),
                            ));
                        }
                        names.push(n.to_owned());
                    }
                }
                "compression" => {
                    compression = match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::None,
                        _ => {
                            return Err(bad(
                                spec,
                                format!("compression={v:?}: expected gzip, zstd or uncompressed"),
                            ));
                        }
                    }
                }
                "compression-level" => {
                    level = Some(v.parse::<i32>().map_err(|_| {
                        bad(spec, format!("compression-level={v:?} is not a number"))
                    })?)
                }
                // Accepted for buildx compatibility; it changes nothing we write.
                "oci-mediatypes" if parse_bool(spec, k, v)? => {}
                "oci-mediatypes" => {
                    return Err(bad(
                        spec,
                        "oci-mediatypes=false (Docker media types) is not supported for image \
                         outputs yet",
                    ));
                }
                "force-compression" if !parse_bool(spec, k, v)? => {}
                "force-compression" => {
                    return Err(bad(
                        spec,
                        "force-compression=true is not supported for image outputs yet: base \
                         image layers keep the compression they were pulled in (it is \
                         supported in --cache-to)",
                    ));
                }
                _ => return Err(bad(spec, format!("unknown or unsupported option {k:?}"))),
            }
        }
        let kind = match kind.as_deref() {
            Some("registry") => ExportKind::Registry,
            Some("image") if push => ExportKind::Registry,
            Some("image") => {
                return Err(bad(
                    spec,
                    "type=image without push=true needs an image store, which rbuild does not have; use type=registry, oci or docker",
                ));
            }
            Some("oci") => ExportKind::Oci {
                dest: dest
                    .clone()
                    .ok_or_else(|| bad(spec, "type=oci needs dest="))?,
                tar,
            },
            Some("docker") => {
                if !tar {
                    return Err(bad(
                        spec,
                        "type=docker writes a tar; tar=false is not supported",
                    ));
                }
                ExportKind::Docker {
                    dest: dest.clone().ok_or_else(|| {
                        bad(
                            spec,
                            "type=docker needs dest= (rbuild has no daemon to load into)",
                        )
                    })?,
                }
            }
            Some("local") => ExportKind::Local {
                dest: dest
                    .clone()
                    .ok_or_else(|| bad(spec, "type=local needs dest="))?,
                platform_split,
            },
            Some("tar") => return Err(bad(spec, "type=tar is not supported yet; use type=local")),
            Some(other) => return Err(bad(spec, format!("unknown output type {other:?}"))),
            None => return Err(bad(spec, "missing type=")),
        };
        if platform_split.is_some() && !matches!(kind, ExportKind::Local { .. }) {
            return Err(bad(spec, "platform-split= is an option of type=local"));
        }
        if matches!(kind, ExportKind::Registry) && dest.is_some() {
            return Err(bad(spec, "type=registry takes no dest"));
        }
        if push_by_digest && !matches!(kind, ExportKind::Registry) {
            return Err(bad(
                spec,
                "push-by-digest=true needs a push (type=registry, or type=image,push=true)",
            ));
        }
        if let Some(l) = level {
            let ok = match compression {
                Compression::Gzip => (0..=9).contains(&l),
                Compression::Zstd => (-7..=22).contains(&l),
                _ => false,
            };
            if !ok {
                return Err(bad(
                    spec,
                    format!("compression-level={l} is out of range for {compression:?}"),
                ));
            }
        }
        Ok(Self {
            kind,
            compression,
            compression_level: level,
            names,
            rewrite_timestamp,
            source_date_epoch,
            push_by_digest,
            name_canonical,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_output_specs() {
        let s: ExportSpec = "type=oci,dest=out.tar".parse().unwrap();
        assert_eq!(
            s.kind,
            ExportKind::Oci {
                dest: "out.tar".into(),
                tar: true
            }
        );
        let s: ExportSpec = "type=oci,dest=d,tar=false,compression=zstd,compression-level=5"
            .parse()
            .unwrap();
        assert_eq!(
            s.kind,
            ExportKind::Oci {
                dest: "d".into(),
                tar: false
            }
        );
        assert_eq!(
            (s.compression, s.compression_level),
            (Compression::Zstd, Some(5))
        );
        assert_eq!(
            "type=image,push=true".parse::<ExportSpec>().unwrap().kind,
            ExportKind::Registry
        );
        let s: ExportSpec =
            "type=image,name=r/app,push=true,push-by-digest=true,name-canonical=true"
                .parse()
                .unwrap();
        assert_eq!(s.kind, ExportKind::Registry);
        assert!(s.push_by_digest && s.name_canonical);
        assert_eq!(s.names, ["r/app"]);
        assert_eq!(
            "outdir".parse::<ExportSpec>().unwrap().kind,
            ExportKind::Local {
                dest: "outdir".into(),
                platform_split: None,
            }
        );
        let epoch = |spec: &str| spec.parse::<ExportSpec>().unwrap().source_date_epoch;
        assert_eq!(epoch("type=oci,dest=d"), None);
        assert_eq!(epoch("type=oci,dest=d,source-date-epoch="), Some(None));
        assert_eq!(
            epoch("type=oci,dest=d,source-date-epoch=17"),
            Some(Some(17))
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_problem() {
        for (spec, needle) in [
            ("type=oci", "needs dest"),
            ("type=nope,dest=x", "unknown output type"),
            ("type=oci,dest=x,colour=red", "colour"),
            ("type=oci,dest=x,compression=lz4", "lz4"),
            ("type=oci,dest=x,compression-level=99", "out of range"),
            ("type=docker", "needs dest"),
            ("dest=x", "missing type"),
            (
                "type=oci,dest=x,source-date-epoch=yesterday",
                "not whole seconds",
            ),
            ("type=oci,dest=x,push-by-digest=true", "needs a push"),
            (
                "type=oci,dest=x,compression=zstd,force-compression=true",
                "force-compression=true is not supported for image outputs",
            ),
            (
                "type=registry,push-by-digest=maybe",
                "expected true or false",
            ),
        ] {
            let e = spec.parse::<ExportSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn reads_the_spec_as_buildx_does() {
        // CSV: a quoted field holds commas; keys are case-blind; Go's booleans.
        let s: ExportSpec = r#"Type=oci,DEST=o.tar,"name=org/r:1,org/r:2",tar=T"#
            .parse()
            .unwrap();
        assert_eq!(s.names, ["org/r:1", "org/r:2"]);
        assert_eq!(
            s.kind,
            ExportKind::Oci {
                dest: "o.tar".into(),
                tar: true
            }
        );
        // ';' still separates names, as before.
        let s: ExportSpec = "type=registry,name=a;b".parse().unwrap();
        assert_eq!(s.names, ["a", "b"]);
        assert!(s.pushes() && !s.is_docker());
        assert!(ExportSpec::docker("x.tar").is_docker());
        assert!(!"out".parse::<ExportSpec>().unwrap().pushes());
        let a = ExportSpec::from_attrs([("type", "oci"), ("dest", "o.tar"), ("name", "x:1,y:2")])
            .unwrap();
        assert_eq!(a.names, ["x:1", "y:2"]);
        for (spec, needle) in [
            ("-", "standard output"),
            ("type=oci,dest=-", "standard output"),
            ("", "empty"),
            (r#"type=oci,"dest=o.tar"#, "CSV"),
            (
                "type=oci,dest=o.tar,name=Not/Lower",
                "invalid reference format",
            ),
            ("type=oci,dest=o.tar,tar=maybe", "expected true or false"),
            (
                "type=oci,dest=o.tar,oci-mediatypes=false",
                "oci-mediatypes=false",
            ),
            ("type=oci,dest=o.tar,nokey", "is not key=value"),
        ] {
            let e = spec.parse::<ExportSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
