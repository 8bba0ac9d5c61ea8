//! Image references with Docker's normalisation: `node` is
//! `docker.io/library/node:latest`, `localhost:5000/app@sha256:…` keeps its port and digest.
//!
//! The grammar is the distribution project's (`reference/regexp.go`): a domain is the first
//! path component when it contains a `.` or a `:`, is `localhost`, or has an uppercase
//! letter; otherwise the image lives on Docker Hub, where one-component names are under
//! `library/`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

/// Docker Hub's name in references.
pub(crate) const DOCKER_HUB: &str = "docker.io";
/// Another name of Docker Hub that Docker rewrites to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
const DEFAULT_TAG: &str = "latest";

/// A repository on a registry: `registry/path`, for example `docker.io/library/node`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Repository {
    registry: String,
    path: String,
}

impl Repository {
    /// A repository from a registry host (with optional port) and a path, both validated.
    pub fn new(registry: &str, path: &str) -> Result<Self, Error> {
        let input = format!("{registry}/{path}");
        let bad = |reason: &str| Error::InvalidReference {
            input: input.clone(),
            reason: reason.to_owned(),
        };
        check_domain(registry).map_err(bad)?;
        check_path(path).map_err(bad)?;
        if input.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            registry
        };
        Ok(Self {
            registry: registry.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The registry host as written in references, with its port (`127.0.0.1:5000`,
    /// `docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path on the registry (`library/node`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

impl FromStr for Repository {
    type Err = Error;

    /// Parses a name without tag or digest, normalised as Docker does (`node` is
    /// `docker.io/library/node`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let r = parse(s, false)?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(Error::InvalidReference {
                input: s.to_owned(),
                reason: "a repository name has no tag or digest".to_owned(),
            });
        }
        Ok(r.repository)
    }
}

/// A validated, normalised image reference: repository plus a tag, a digest, or both.
///
/// `Display` prints the full normalised form (`docker.io/library/node:20-slim`);
/// [`Reference::familiar`] prints the short form Docker shows (`node:20-slim`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    repository: Repository,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// A reference to `repository` by tag.
    pub fn with_tag(repository: Repository, tag: &str) -> Result<Self, Error> {
        check_tag(tag).map_err(|reason| Error::InvalidReference {
            input: format!("{repository}:{tag}"),
            reason: reason.to_owned(),
        })?;
        Ok(Self {
            repository,
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// A reference to `repository` by digest.
    pub fn with_digest(repository: Repository, digest: Digest) -> Self {
        Self {
            repository,
            tag: None,
            digest: Some(digest),
        }
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.repository.registry()
    }

    /// The tag, if the reference names one (`latest` when it named neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository and tag, pinned to `digest` (`name:tag@digest`).
    pub fn pinned(&self, digest: Digest) -> Self {
        Self {
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest),
        }
    }

    /// What the registry API is asked for: the digest when there is one, else the tag.
    pub fn target(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => DEFAULT_TAG,
        }
    }

    /// Docker's short form: `node:20-slim` for `docker.io/library/node:20-slim`.
    pub fn familiar(&self) -> String {
        let mut name = if self.repository.registry == DOCKER_HUB {
            self.repository
                .path
                .strip_prefix("library/")
                .unwrap_or(&self.repository.path)
                .to_owned()
        } else {
            self.repository.to_string()
        };
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(d.as_str());
        }
        name
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    /// Parses and normalises like `docker pull`: the Docker Hub domain and `library/` are
    /// filled in, and `latest` when neither tag nor digest is given.
    fn from_str(s: &str) -> Result<Self, Error> {
        parse(s, true)
    }
}

impl TryFrom<&str> for Reference {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn parse(input: &str, default_tag: bool) -> Result<Reference, Error> {
    let bad = |reason: &str| Error::InvalidReference {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if input.is_empty() {
        return Err(bad("empty reference"));
    }
    // name[:tag][@digest]
    let (rest, digest) = match input.split_once('@') {
        Some((rest, d)) => (
            rest,
            Some(
                d.parse::<Digest>()
                    .map_err(|e| bad(&format!("bad digest: {e}")))?,
            ),
        ),
        None => (input, None),
    };
    // a tag is after the last ':' that comes after the last '/' (a ':' before it is a port)
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t).map_err(bad)?;
    }
    if name.is_empty() {
        return Err(bad("empty repository name"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest.to_owned())
        }
        _ => (DOCKER_HUB, name.to_owned()),
    };
    let domain = if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        domain
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("repository name must be lowercase"));
    }
    check_domain(domain).map_err(bad)?;
    check_path(&path).map_err(bad)?;
    if domain.len() + 1 + path.len() > MAX_NAME_LEN {
        return Err(bad("repository name longer than 255 characters"));
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_owned()),
        (None, None) if default_tag => Some(DEFAULT_TAG.to_owned()),
        (None, _) => None,
    };
    Ok(Reference {
        repository: Repository {
            registry: domain.to_owned(),
            path,
        },
        tag,
        digest,
    })
}

/// `domain-name (":" port)?`; a domain name is dot-separated components
/// `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` or a bracketed IPv6 address.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("unclosed '[' in the registry host")?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("invalid IPv6 address in the registry host");
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
            ),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("empty registry host");
        }
        for part in host.split('.') {
            let ok = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-');
            if !ok {
                return Err("invalid registry host name");
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Err("invalid registry port");
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by `/`.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty repository path");
    }
    for comp in path.split('/') {
        if comp.is_empty() {
            return Err("empty path component in the repository name");
        }
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err("repository path components start and end with [a-z0-9]");
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // a separator: ".", "_", "__" or one or more "-"
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => {
                    return Err(
                        "invalid character in the repository name ([a-z0-9._-] are allowed)",
                    );
                }
            }
            if i == start || !b.get(i).copied().is_some_and(alnum) {
                return Err("invalid separator in the repository name");
            }
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), &'static str> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("empty tag");
    }
    if b.len() > MAX_TAG_LEN {
        return Err("tag longer than 128 characters");
    }
    if !word(b[0]) {
        return Err("a tag starts with [A-Za-z0-9_]");
    }
    if !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err("invalid character in the tag ([A-Za-z0-9_.-] are allowed)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("node", "docker.io/library/node:latest", "node:latest"),
            (
                "node:20-slim",
                "docker.io/library/node:20-slim",
                "node:20-slim",
            ),
            (
                "library/node",
                "docker.io/library/node:latest",
                "node:latest",
            ),
            (
                "docker.io/node",
                "docker.io/library/node:latest",
                "node:latest",
            ),
            (
                "index.docker.io/library/node:1",
                "docker.io/library/node:1",
                "node:1",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/app:v1",
                "localhost:5000/app:v1",
                "localhost:5000/app:v1",
            ),
            (
                "127.0.0.1:5000/library/busybox",
                "127.0.0.1:5000/library/busybox:latest",
                "127.0.0.1:5000/library/busybox:latest",
            ),
            (
                "[::1]:5000/a/b/c:t",
                "[::1]:5000/a/b/c:t",
                "[::1]:5000/a/b/c:t",
            ),
            ("Registry/app", "Registry/app:latest", "Registry/app:latest"),
            (
                "example.com/a__b/c-d--e.f:t_1.2-x",
                "example.com/a__b/c-d--e.f:t_1.2-x",
                "example.com/a__b/c-d--e.f:t_1.2-x",
            ),
        ];
        for (input, full, familiar) in cases {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            // the normalised form parses to itself
            assert_eq!(full.parse::<Reference>().unwrap(), r);
        }
    }

    #[test]
    fn digests_and_tags() {
        let r: Reference = format!("node@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.target(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/node@{D}"));

        let r: Reference = format!("localhost:5000/app:v2@{D}").parse().unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository().path(), "app");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.target(), D);

        let r: Reference = "127.0.0.1:5000/x".parse().unwrap();
        assert_eq!(r.target(), "latest");
        let pinned = r.pinned(D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/x:latest@{D}"));
    }

    #[test]
    fn rejects_invalid() {
        let long = "a".repeat(256);
        let long_tag = format!("app:{}", "t".repeat(129));
        for bad in [
            "",
            ":tag",
            "Node",
            "docker.io/Library/node",
            "app:",
            "app:-x",
            "app:t@",
            "app@sha256:abc",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a.-b",
            "host:port/app",
            "host:99999/app",
            "[::1/app",
            "[zz]:5000/app",
            "exa_mple.com/app",
            "app name",
            long.as_str(),
            long_tag.as_str(),
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn repositories() {
        let r: Repository = "node".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/node");
        assert!("node:1".parse::<Repository>().is_err());
        let r = Repository::new("127.0.0.1:5000", "a/b").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert!(Repository::new("127.0.0.1:5000", "A").is_err());
        let t = Reference::with_tag(r.clone(), "v1").unwrap();
        assert_eq!(t.to_string(), "127.0.0.1:5000/a/b:v1");
        assert!(Reference::with_tag(r, ".bad").is_err());
    }
}
