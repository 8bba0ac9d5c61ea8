//! `--cache-to` / `--cache-from` specifications in buildx's syntax
//! (`type=registry,ref=REF,mode=max`), parsed and validated when they are given.

use std::path::PathBuf;
use std::str::FromStr;

use layer_cache::Compression;
use registry_client::Reference;

use crate::engine::Error;

/// Which steps an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the final image only (buildx's default).
    #[default]
    Min,
    /// Every step of every stage that was built.
    Max,
}

/// Where a remote cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheLocation {
    /// A cache artifact in a registry, under a tag (`type=registry,ref=REF`).
    Registry(Reference),
    /// A cache artifact in an OCI layout directory, as buildx writes it
    /// (`type=local,dest=DIR` / `type=local,src=DIR`): `index.json` names the cache
    /// manifest by its tag, the blobs are under `blobs/sha256`.
    Local {
        /// The directory.
        dir: PathBuf,
        /// The tag in `index.json` (`tag=`, default `latest`).
        tag: String,
        /// On import, the manifest's digest when given (`digest=`): it wins over the tag.
        digest: Option<String>,
    },
    /// On export only (`type=inline`): the records of the image's own steps in the config
    /// of each image the build writes. It is imported with
    /// `type=registry,ref=IMAGE`.
    Inline,
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local { dir, tag, .. } => write!(f, "{}:{tag}", dir.display()),
            CacheLocation::Inline => write!(f, "the image config (inline)"),
        }
    }
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheExportSpec {
    /// Where the cache goes.
    pub location: CacheLocation,
    /// Which steps.
    pub mode: CacheMode,
    /// Compression of the layers, when given (it must agree with the build's outputs).
    pub compression: Option<Compression>,
    /// Compression level, when given.
    pub compression_level: Option<i32>,
    /// A failed export is a warning, not a failed build (`ignore-error=true`).
    pub ignore_error: bool,
    /// The content of `RUN --mount=type=cache` directories travels too (on unless
    /// `cache-mounts=false`).
    pub cache_mounts: bool,
    /// Every layer of the cache is in [`CacheExportSpec::compression`] (gzip when not
    /// given): one made or imported in another compression is recompressed for the cache
    /// (`force-compression=true`). Without it a layer keeps the compression it has.
    pub force_compression: bool,
    /// The cache is an OCI image manifest whose config is the cache config (true, the
    /// default since BuildKit 0.21), or an index listing the layers and the config
    /// (`image-manifest=false`, the form older BuildKit wrote by default).
    pub image_manifest: bool,
    /// OCI media types (the default), or Docker's (`oci-mediatypes=false`: a Docker
    /// manifest list with Docker layer types; it implies `image-manifest=false`).
    pub oci_mediatypes: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheImportSpec {
    /// Where the cache is read from.
    pub location: CacheLocation,
}

fn bad(spec: &str, reason: impl Into<String>) -> Error {
    Error::InvalidCache {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool, Error> {
    crate::engine::export_spec::bool_field(key, v).map_err(|reason| bad(spec, reason))
}

/// The `key=value` fields of a spec; a bare value is buildx's shorthand for
/// `type=registry,ref=VALUE`.
fn fields(spec: &str) -> Result<Vec<(&str, &str)>, Error> {
    if spec.is_empty() {
        return Err(bad(spec, "empty cache specification"));
    }
    if !spec.contains('=') {
        return Ok(vec![("type", "registry"), ("ref", spec)]);
    }
    spec.split(',')
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| bad(spec, format!("{f:?} is not key=value")))
        })
        .collect()
}

/// The fields that name where a cache is.
#[derive(Default)]
struct Where<'a> {
    kind: Option<&'a str>,
    reference: Option<&'a str>,
    /// `dest=` on export, `src=` on import.
    dir: Option<&'a str>,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Where<'a> {
    /// Takes field `k`, or returns false when it is not one of these.
    fn take(&mut self, k: &str, v: &'a str, dir_key: &str) -> bool {
        match k {
            "type" => self.kind = Some(v),
            "ref" => self.reference = Some(v),
            "tag" => self.tag = Some(v),
            "digest" if dir_key == "src" => self.digest = Some(v),
            _ if k == dir_key => self.dir = Some(v),
            _ => return false,
        }
        true
    }
}

fn location(spec: &str, w: &Where<'_>, dir_key: &str) -> Result<CacheLocation, Error> {
    let kind = w.kind.unwrap_or("registry");
    if kind != "local" {
        if let Some(k) = [("tag", w.tag), ("digest", w.digest), (dir_key, w.dir)]
            .iter()
            .find_map(|(k, v)| v.map(|_| k))
        {
            return Err(bad(spec, format!("{k}= is only for type=local")));
        }
    }
    let reference = w.reference;
    match kind {
        "registry" => {
            let r = reference.ok_or_else(|| bad(spec, "type=registry needs ref="))?;
            let r: Reference = r
                .parse()
                .map_err(|e: registry_client::Error| bad(spec, format!("ref={r:?}: {e}")))?;
            if r.digest().is_some() && r.tag().is_none() {
                return Err(bad(spec, "ref= must name a tag, not a digest"));
            }
            Ok(CacheLocation::Registry(r))
        }
        "local" => {
            if reference.is_some() {
                return Err(bad(spec, "ref= is only for type=registry"));
            }
            let dir = w
                .dir
                .filter(|d| !d.is_empty())
                .ok_or_else(|| bad(spec, format!("type=local needs {dir_key}=DIR")))?;
            let tag = w.tag.unwrap_or("latest");
            if tag.is_empty() || tag.contains(['/', ' ', ':']) {
                return Err(bad(spec, format!("tag={tag:?} is not a valid tag")));
            }
            if let Some(d) = w.digest {
                d.parse::<layer_cache::Digest>()
                    .map_err(|e| bad(spec, format!("digest={d:?}: {e}")))?;
            }
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: tag.to_owned(),
                digest: w.digest.map(str::to_owned),
            })
        }
        "inline" if dir_key == "dest" => {
            if reference.is_some() {
                return Err(bad(
                    spec,
                    "ref= is not an option of type=inline (the cache goes into the image)",
                ));
            }
            Ok(CacheLocation::Inline)
        }
        "inline" => Err(bad(
            spec,
            "type=inline is for --cache-to; an inline cache is imported with \
             --cache-from type=registry,ref=IMAGE",
        )),
        k @ ("gha" | "s3" | "azblob") => Err(bad(
            spec,
            format!("type={k} cache is not supported by rbuild; use type=registry"),
        )),
        k => Err(bad(
            spec,
            format!("unknown cache type {k:?} (expected registry, local or inline)"),
        )),
    }
}

impl FromStr for CacheExportSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let mut w = Where::default();
        let mut mode = CacheMode::Min;
        let mut compression = None;
        let mut level = None;
        let mut ignore_error = false;
        let mut cache_mounts = true;
        let mut force_compression = false;
        let mut image_manifest = None;
        let mut oci_mediatypes = true;
        for (k, v) in fields(spec)? {
            if w.take(k, v, "dest") {
                continue;
            }
            match k {
                "mode" => {
                    mode = match v {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        _ => return Err(bad(spec, format!("mode={v:?}: expected min or max"))),
                    }
                }
                "compression" => {
                    compression = Some(match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::None,
                        "estargz" => {
                            return Err(bad(
                                spec,
                                "compression=estargz is not supported by rbuild",
                            ));
                        }
                        _ => {
                            return Err(bad(
                                spec,
                                format!("compression={v:?}: expected gzip, zstd or uncompressed"),
                            ));
                        }
                    })
                }
                "compression-level" => {
                    let n: i32 = v
                        .parse()
                        .map_err(|_| bad(spec, format!("compression-level={v:?}: not a number")))?;
                    level = Some(n);
                }
                "force-compression" => force_compression = parse_bool(spec, k, v)?,
                "oci-mediatypes" => oci_mediatypes = parse_bool(spec, k, v)?,
                "image-manifest" => image_manifest = Some(parse_bool(spec, k, v)?),
                "ignore-error" => ignore_error = parse_bool(spec, k, v)?,
                "cache-mounts" => cache_mounts = parse_bool(spec, k, v)?,
                "src" | "digest" => {
                    return Err(bad(spec, format!("{k}= is an option of --cache-from")));
                }
                _ => return Err(bad(spec, format!("unknown cache option {k:?}"))),
            }
        }
        let location = location(spec, &w, "dest")?;
        // As BuildKit: Docker media types have no image-manifest form, and they make the
        // index form the default.
        let image_manifest = image_manifest.unwrap_or(oci_mediatypes);
        if image_manifest && !oci_mediatypes {
            return Err(bad(
                spec,
                "image-manifest=true needs OCI media types (oci-mediatypes=false writes a \
                 Docker manifest list)",
            ));
        }
        if location == CacheLocation::Inline {
            if mode == CacheMode::Max {
                return Err(bad(
                    spec,
                    "type=inline carries only the image's own steps (mode=min); use \
                     type=registry for mode=max",
                ));
            }
            if compression.is_some()
                || level.is_some()
                || !cache_mounts
                || force_compression
                || !image_manifest
                || !oci_mediatypes
            {
                return Err(bad(
                    spec,
                    "compression, force-compression, image-manifest, oci-mediatypes and \
                     cache-mounts are not options of type=inline (its layers and manifest are \
                     the image's; cache mounts travel with type=registry or type=local)",
                ));
            }
        }
        if let Some(l) = level {
            let ok = match compression.unwrap_or_default() {
                Compression::Gzip => (0..=9).contains(&l),
                Compression::Zstd => (-7..=22).contains(&l),
                _ => false,
            };
            if !ok {
                return Err(bad(spec, format!("compression-level={l} is out of range")));
            }
        }
        Ok(Self {
            location,
            mode,
            compression,
            compression_level: level,
            ignore_error,
            cache_mounts,
            force_compression,
            image_manifest,
            oci_mediatypes,
        })
    }
}

impl FromStr for CacheImportSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let mut w = Where::default();
        for (k, v) in fields(spec)? {
            if w.take(k, v, "src") {
                continue;
            }
            match k {
                "dest" => return Err(bad(spec, "dest= is an option of --cache-to")),
                "mode" | "compression" | "compression-level" | "force-compression"
                | "oci-mediatypes" | "image-manifest" | "ignore-error" | "cache-mounts" => {
                    return Err(bad(spec, format!("{k}= is an option of --cache-to")));
                }
                _ => return Err(bad(spec, format!("unknown cache option {k:?}"))),
            }
        }
        Ok(Self {
            location: location(spec, &w, "src")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_specs() {
        let e: CacheExportSpec = "type=registry,ref=127.0.0.1:5000/c/app:cache,mode=max"
            .parse()
            .unwrap();
        assert_eq!(e.mode, CacheMode::Max);
        assert_eq!(e.location.to_string(), "127.0.0.1:5000/c/app:cache");
        let i: CacheImportSpec = "127.0.0.1:5000/c/app:cache".parse().unwrap();
        assert_eq!(i.location, e.location);
        let e: CacheExportSpec =
            "type=registry,ref=r:5000/a:b,ignore-error=true,oci-mediatypes=true"
                .parse()
                .unwrap();
        assert!(e.ignore_error);
        assert_eq!(e.mode, CacheMode::Min);
    }

    #[test]
    fn local_specs() {
        let e: CacheExportSpec = "type=local,dest=/tmp/c,mode=max".parse().unwrap();
        assert_eq!(
            e.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into(),
                digest: None
            }
        );
        let i: CacheImportSpec = "type=local,src=/tmp/c,tag=v1".parse().unwrap();
        assert_eq!(i.location.to_string(), "/tmp/c:v1");
        assert!(
            "type=local,src=/tmp/c,digest=sha256:nope"
                .parse::<CacheImportSpec>()
                .is_err()
        );
        assert!("type=local,dest=/tmp/c".parse::<CacheImportSpec>().is_err());
    }

    #[test]
    fn refused_specs() {
        for s in [
            "type=registry",
            "type=registry,ref=a/b,mode=all",
            "type=registry,ref=a/b,force-compression=maybe",
            "type=registry,ref=a/b,oci-mediatypes=false,image-manifest=true",
            "type=inline,image-manifest=false",
            "type=inline,force-compression=true",
            "type=registry,ref=a/b,bogus=1",
            "type=gha",
            "type=local",
            "type=local,dest=/tmp/x,ref=a/b",
            "type=local,dest=/tmp/x,src=/tmp/y",
            "type=registry,ref=a/b,dest=/tmp/x",
            "type=inline,mode=max",
            "type=inline,ref=a/b",
            "type=inline,compression=zstd",
            "type=registry,ref=a/b,cache-mounts=maybe",
        ] {
            let e = s.parse::<CacheExportSpec>().unwrap_err();
            assert!(e.is_usage(), "{s}: {e}");
        }
        assert!(
            "type=registry,ref=a/b,mode=max"
                .parse::<CacheImportSpec>()
                .is_err()
        );
        assert!("type=inline".parse::<CacheImportSpec>().is_err());
        let e: CacheExportSpec = "type=inline".parse().unwrap();
        assert_eq!(e.location, CacheLocation::Inline);
        assert_eq!(e.mode, CacheMode::Min);
        let e: CacheExportSpec = "type=inline,mode=min,ignore-error=true".parse().unwrap();
        assert!(e.ignore_error);
    }

    #[test]
    fn manifest_forms_and_forced_compression() {
        let e: CacheExportSpec = "type=registry,ref=a/b".parse().unwrap();
        assert!(e.image_manifest && e.oci_mediatypes && !e.force_compression);
        let e: CacheExportSpec = "type=registry,ref=a/b,image-manifest=false"
            .parse()
            .unwrap();
        assert!(!e.image_manifest && e.oci_mediatypes);
        // Docker media types imply the index form, as in BuildKit.
        let e: CacheExportSpec = "type=local,dest=/tmp/c,oci-mediatypes=false"
            .parse()
            .unwrap();
        assert!(!e.image_manifest && !e.oci_mediatypes);
        let e: CacheExportSpec = "type=registry,ref=a/b,compression=zstd,force-compression=true"
            .parse()
            .unwrap();
        assert!(e.force_compression);
        assert_eq!(e.compression, Some(Compression::Zstd));
    }
}
