//! Platforms (`os/arch[/variant]`) normalised as containerd does, and selection of the best
//! manifest for a platform from an image index. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::error::Error;

/// A normalised platform: `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
///
/// Normalisation follows containerd: names are lowercased, `x86_64` is `amd64`, `aarch64`
/// is `arm64`, `armhf` is `arm/v7`, `i386` is `386`; `arm` without a variant is `arm/v7`,
/// `arm64` without one is `arm64/v8` (so `linux/arm64` and `linux/arm64/v8` are equal), and
/// `amd64/v1` is plain `amd64`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// The operating systems Go knows (`GOOS`), as containerd's `isKnownOS` lists them.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// The architectures Go knows (`GOARCH`), as containerd's `isKnownArch` lists them.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn known_os(os: &str) -> bool {
    KNOWN_OS.contains(&os)
}

fn known_arch(arch: &str) -> bool {
    KNOWN_ARCH.contains(&arch)
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Result<Self, Error> {
        let input = match variant {
            Some(v) => format!("{os}/{architecture}/{v}"),
            None => format!("{os}/{architecture}"),
        };
        for part in [Some(os), Some(architecture), variant]
            .into_iter()
            .flatten()
        {
            if part.is_empty()
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(Error::InvalidPlatform {
                    input,
                    reason: "expected OS/ARCH[/VARIANT]".to_owned(),
                });
            }
        }
        let os = normalize_os(os);
        let (architecture, variant) = normalize_arch(architecture, variant.unwrap_or(""));
        Ok(Self {
            os,
            architecture,
            variant: (!variant.is_empty()).then_some(variant),
        })
    }

    /// The platform this program runs on (Linux, with the architecture it was compiled for).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Self::new(std::env::consts::OS, arch, None).unwrap_or_else(|_| Self {
            os: "linux".to_owned(),
            architecture: arch.to_owned(),
            variant: None,
        })
    }

    /// A platform from an OCI descriptor's platform, normalised.
    pub fn from_oci(p: &oci_spec::image::Platform) -> Result<Self, Error> {
        Self::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }

    /// A build's target platform (`--platform`, a bake target's `platforms`): the grammar
    /// of [`str::parse`] (containerd's `platforms.Parse`), and an operating system and
    /// architecture that Go knows, so that a typo (`linux/amd65`) is an error rather than
    /// an image for a platform that does not exist.
    ///
    /// ```
    /// use registry_client::Platform;
    /// assert_eq!(Platform::parse_target("linux/x86_64").unwrap().to_string(), "linux/amd64");
    /// assert_eq!(Platform::parse_target("Linux/aarch64").unwrap().to_string(), "linux/arm64/v8");
    /// assert!(Platform::parse_target("linux/amd65").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPlatform`] naming the unknown part or the bad syntax.
    pub fn parse_target(s: &str) -> Result<Self, Error> {
        let p: Self = s.parse()?;
        let unknown = |what: &str, value: &str| Error::InvalidPlatform {
            input: s.to_owned(),
            reason: format!("unknown {what} {value:?}"),
        };
        if !known_os(&p.os) {
            return Err(unknown("operating system", &p.os));
        }
        if !known_arch(&p.architecture) {
            return Err(unknown("architecture", &p.architecture));
        }
        Ok(p)
    }

    /// A comma-separated list of target platforms, as `--platform linux/amd64,linux/arm64`
    /// takes them: each by [`Platform::parse_target`], in order, duplicates kept.
    ///
    /// ```
    /// use registry_client::Platform;
    /// let list = Platform::parse_list("linux/amd64, linux/arm/v6").unwrap();
    /// assert_eq!(list[1].to_string(), "linux/arm/v6");
    /// assert!(Platform::parse_list("linux/amd64,").is_err());
    /// ```
    ///
    /// # Errors
    /// The first platform's error that does not parse.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, Error> {
        s.split(',').map(|p| Self::parse_target(p.trim())).collect()
    }

    /// Whether Go knows this operating system and architecture (containerd's `isKnownOS`
    /// and `isKnownArch`).
    pub fn is_known(&self) -> bool {
        known_os(&self.os) && known_arch(&self.architecture)
    }

    /// The variant as containerd's `platforms.Normalize` leaves it, and as BuildKit shows
    /// it in `TARGETVARIANT` and in image configs: arm64 without its default `v8` (the
    /// variant this type keeps so that `linux/arm64` and `linux/arm64/v8` are equal).
    ///
    /// ```
    /// use registry_client::Platform;
    /// let p = |s: &str| s.parse::<Platform>().unwrap();
    /// assert_eq!(p("linux/arm64/v8").normalized_variant(), None);
    /// assert_eq!(p("linux/arm64/v9").normalized_variant(), Some("v9"));
    /// assert_eq!(p("linux/arm").normalized_variant(), Some("v7"));
    /// ```
    pub fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v,
        }
    }

    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture (`amd64`, `arm64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The variant (`v8` for arm64, `v7` for arm), if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// How well an image for `candidate` runs here: `Some(0)` for the same platform, a
    /// larger number for an older compatible variant (`arm/v6` on `arm/v7`, `amd64` on
    /// `amd64/v3`), `None` when it does not run.
    pub fn compatibility(&self, candidate: &Platform) -> Option<u32> {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return None;
        }
        if self.variant == candidate.variant {
            return Some(0);
        }
        let level = |v: Option<&str>| -> Option<u32> {
            match v {
                None => Some(1), // amd64 without variant is v1
                Some(v) => v.strip_prefix('v')?.parse().ok(),
            }
        };
        match self.architecture.as_str() {
            "amd64" | "arm" => {
                let want = level(self.variant())?;
                let have = level(candidate.variant())?;
                (have < want).then(|| want - have)
            }
            _ => None,
        }
    }

    /// Does an image for `candidate` run on this platform?
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.compatibility(candidate).is_some()
    }

    /// The best manifest of `index` for this platform: the same platform if listed, else the
    /// closest compatible variant; the first listed wins a tie. Entries without a platform,
    /// or with one that does not parse, are skipped.
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        index
            .manifests()
            .iter()
            .filter_map(|d| {
                let p = Platform::from_oci(d.platform().as_ref()?).ok()?;
                Some((self.compatibility(&p)?, d))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, d)| d)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    /// Parses `os/arch[/variant]` as containerd's `platforms.Parse`: parts normalised
    /// (see [`Platform`]); a lone operating system that Go knows means it on the host's
    /// architecture (`linux`), a lone architecture that Go knows means Linux (`arm64`,
    /// `x86_64`), any other lone word is an error. Two or three parts may name any OS
    /// and architecture (an image index may list them); [`Platform::parse_target`] checks
    /// that Go knows them.
    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.first().is_some_and(|os| os.contains('(')) {
            // containerd's `os(os.version)/arch`: a Windows image field; rbuild builds Linux
            // images and does not match or record OS versions.
            return Err(Error::InvalidPlatform {
                input: s.to_owned(),
                reason: "an OS version (`OS(VERSION)/ARCH`) is not supported by rbuild".to_owned(),
            });
        }
        match parts.as_slice() {
            [one] if known_os(&normalize_os(one)) => {
                let host = Self::host();
                Self::new(one, &host.architecture, host.variant())
            }
            [arch] => match Self::new("linux", arch, None) {
                Ok(p) if known_arch(&p.architecture) => Ok(p),
                Ok(_) => Err(Error::InvalidPlatform {
                    input: s.to_owned(),
                    reason: "unknown operating system or architecture".to_owned(),
                }),
                Err(e) => Err(e),
            },
            [os, arch] => Self::new(os, arch, None),
            [os, arch, variant] => Self::new(os, arch, Some(variant)),
            _ => Err(Error::InvalidPlatform {
                input: s.to_owned(),
                reason: "expected OS/ARCH[/VARIANT]".to_owned(),
            }),
        }
        .map_err(|e| match e {
            Error::InvalidPlatform { reason, .. } => Error::InvalidPlatform {
                input: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_owned(),
        _ => os,
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "i486" | "i586" | "i686" | "386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_owned(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "" | "8" | "v8" | "v8.0" => "v8".to_owned(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            };
            ("arm64".to_owned(), v)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_owned(), v)
        }
        _ => (arch, variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalisation() {
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64/v8"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("Linux/ARM64/V8", "linux/arm64/v8"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/i686", "linux/386"),
            ("arm64", "linux/arm64/v8"),
            ("windows/amd64", "windows/amd64"),
            ("macos/arm64", "darwin/arm64/v8"),
            ("linux/riscv64", "linux/riscv64"),
        ] {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        assert_eq!(p("linux/arm64"), p("linux/arm64/v8"));
        assert_eq!(p("linux").os(), "linux");
        for bad in ["", "/", "linux/", "a/b/c/d", "linux/amd 64", "linux//v7"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn containerd_parse_rules() {
        let host = Platform::host();
        // A lone OS: the host's architecture; a lone architecture: Linux.
        assert_eq!(p("linux").architecture(), host.architecture());
        assert_eq!(p("Windows").os(), "windows");
        assert_eq!(p("windows").architecture(), host.architecture());
        assert_eq!(p("x86_64").to_string(), "linux/amd64");
        assert_eq!(p("aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("armhf").to_string(), "linux/arm/v7");
        let e = "amd65".parse::<Platform>().unwrap_err().to_string();
        assert!(
            e.contains("unknown operating system or architecture"),
            "{e}"
        );
        // Two parts: any names (an index may list them); targets must be known.
        assert_eq!(p("plan10/amd64").os(), "plan10");
        for (bad, needle) in [
            ("linux/amd65", "unknown architecture \"amd65\""),
            ("plan10/amd64", "unknown operating system \"plan10\""),
            ("linux/", "expected OS/ARCH"),
        ] {
            let e = Platform::parse_target(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(
            Platform::parse_target("Linux/x86_64/v1")
                .unwrap()
                .to_string(),
            "linux/amd64"
        );
        assert!(p("linux/riscv64").is_known() && !p("linux/amd65").is_known());
        // Lists: trimmed, in order, duplicates kept; an empty item is an error.
        let list = Platform::parse_list("linux/amd64, linux/arm64,linux/amd64").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64/v8", "linux/amd64"]);
        assert!(Platform::parse_list("").is_err());
        assert!(Platform::parse_list("linux/amd64,,linux/arm64").is_err());
        // The variant BuildKit shows: arm64 without v8, the others kept.
        assert_eq!(p("linux/arm64").normalized_variant(), None);
        assert_eq!(p("linux/arm/v6").normalized_variant(), Some("v6"));
        assert_eq!(p("linux/amd64/v3").normalized_variant(), Some("v3"));
    }

    #[test]
    fn compatibility() {
        assert_eq!(p("linux/arm/v7").compatibility(&p("linux/arm/v6")), Some(1));
        assert_eq!(p("linux/arm/v6").compatibility(&p("linux/arm/v7")), None);
        assert_eq!(
            p("linux/amd64/v3").compatibility(&p("linux/amd64")),
            Some(2)
        );
        assert_eq!(p("linux/amd64").compatibility(&p("linux/amd64/v2")), None);
        assert_eq!(
            p("linux/arm64").compatibility(&p("linux/arm64/v8")),
            Some(0)
        );
        assert!(!p("linux/arm64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
    }

    #[test]
    fn os_version_is_refused_by_name() {
        let e = "windows(10.0.20348.1006)/amd64"
            .parse::<Platform>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("OS version"), "{e}");
        assert!(e.contains("windows(10.0.20348.1006)/amd64"), "{e}");
    }

    #[test]
    fn selection_from_an_index() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
               "platform":{"os":"linux","architecture":"amd64"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",
               "platform":{"os":"linux","architecture":"arm64"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333",
               "platform":{"os":"linux","architecture":"arm","variant":"v6"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444",
               "platform":{"os":"unknown","architecture":"unknown"}}
            ]}"#,
        )
        .unwrap();
        let pick = |s: &str| {
            p(s).select(&index)
                .map(|d| d.digest().to_string()[7..8].to_owned())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("1"));
        assert_eq!(pick("linux/amd64/v2").as_deref(), Some("1"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("3"));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
    }
}
