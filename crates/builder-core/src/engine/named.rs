//! Named build contexts (`docker buildx build --build-context NAME=VALUE`): what a
//! `FROM NAME`, `COPY --from=NAME` or `RUN --mount from=NAME` reads instead of the image
//! or stage of that name, as BuildKit's Dockerfile frontend replaces them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Error;
use crate::remote_context::{self, ContextSpec, FetchedContext, GitAuth};

/// What a named context holds; see [`crate::Build::build_context`].
///
/// ```
/// use builder_core::NamedContext;
/// assert!(matches!(
///     NamedContext::parse("docker-image://alpine:3.20").unwrap(),
///     NamedContext::Image(r) if r == "alpine:3.20"
/// ));
/// let NamedContext::OciLayout { tag, digest, .. } =
///     NamedContext::parse("oci-layout://./layout:v1").unwrap() else { panic!() };
/// assert_eq!((tag.as_str(), digest), ("v1", None));
/// assert!(matches!(NamedContext::parse("./src").unwrap(), NamedContext::Local(_)));
/// // `target:` names another bake target: only `rbuild bake` (as buildx bake) has one.
/// assert!(NamedContext::parse("target:base").is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NamedContext {
    /// `docker-image://REF`: an image, as `FROM REF` would resolve it.
    Image(String),
    /// `oci-layout://DIR[:TAG][@DIGEST]`: an image of an OCI image layout directory, by
    /// digest or by its `org.opencontainers.image.ref.name` tag (`latest` when none is
    /// given; the layout's only image when no entry carries the tag).
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag to look up when there is no digest.
        tag: String,
        /// The manifest or index digest, when given.
        digest: Option<String>,
    },
    /// A local directory (its own `.dockerignore` applies).
    Local(PathBuf),
    /// A git repository or an HTTP(S) tarball, fetched into a temporary directory (kept
    /// as long as the build).
    Fetched(Arc<FetchedContext>),
}

impl NamedContext {
    /// Reads a `--build-context` value as buildx does; a git or HTTP(S) URL is fetched at
    /// once (without credentials: see [`NamedContext::parse_with`]).
    ///
    /// # Errors
    /// [`Error::Context`] for a value rbuild cannot use (`target:` outside bake, a bad
    /// URL, a fetch that failed).
    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::parse_with(value, &GitAuth::default(), false)
    }

    /// [`NamedContext::parse`] with the credentials for git over HTTP(S) and BuildKit's
    /// `--keep-git-dir`.
    ///
    /// # Errors
    /// As [`NamedContext::parse`].
    pub fn parse_with(value: &str, auth: &GitAuth, keep_git_dir: bool) -> Result<Self, Error> {
        let bad = |reason: String| remote_context::context_error(value, reason);
        if let Some(r) = value.strip_prefix("docker-image://") {
            if r.is_empty() {
                return Err(bad("docker-image:// needs an image reference".into()));
            }
            r.parse::<registry_client::Reference>()
                .map_err(|e| bad(e.to_string()))?;
            return Ok(NamedContext::Image(r.to_owned()));
        }
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            // buildx: the digest after `@`, then the tag after the last `:` of the path.
            let (path, digest) = match rest.split_once('@') {
                Some((p, d)) => (p, Some(d)),
                None => (rest, None),
            };
            if let Some(d) = digest {
                d.parse::<registry_client::Digest>()
                    .map_err(|e| bad(format!("invalid digest {d}: {e}")))?;
            }
            let (dir, tag) = match path.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') => (d, t),
                _ => (path, "latest"),
            };
            if dir.is_empty() {
                return Err(bad("oci-layout:// needs a directory".into()));
            }
            return Ok(NamedContext::OciLayout {
                dir: PathBuf::from(dir),
                tag: tag.to_owned(),
                digest: digest.map(str::to_owned),
            });
        }
        if let Some(stage) = value.strip_prefix("target:") {
            // buildx passes `target:` to the frontend, which refuses it outside bake.
            return Err(bad(format!(
                "unsupported context source target (target:{stage} names a bake target: use it in a bake file)"
            )));
        }
        match ContextSpec::parse(value)? {
            ContextSpec::Local(p) => Ok(NamedContext::Local(p)),
            ContextSpec::Stdin => Err(bad(
                "standard input cannot be a named context (buildx reads it only for the main context)".into(),
            )),
            spec => {
                let fetched = remote_context::fetch(&spec, auth, keep_git_dir, None)?;
                if fetched.dockerfile_text().is_some() {
                    return Err(bad(
                        "the URL is a Dockerfile, not an archive: a named context is a directory"
                            .into(),
                    ));
                }
                Ok(NamedContext::Fetched(Arc::new(fetched)))
            }
        }
    }

    /// The directory of a local or fetched context.
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        match self {
            NamedContext::Local(p) => Some(p),
            NamedContext::Fetched(f) => Some(f.path()),
            _ => None,
        }
    }
}

/// The key a name is looked up by, as BuildKit's `NamedContext`: the reference's familiar
/// form without `:latest` (`docker.io/library/alpine:latest` is `alpine`); `None` for a
/// name that is no image reference (it names no context).
pub(crate) fn context_key(name: &str) -> Option<String> {
    let r: registry_client::Reference = name.parse().ok()?;
    let f = r.familiar();
    Some(f.strip_suffix(":latest").unwrap_or(&f).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_as_buildkits() {
        assert_eq!(context_key("alpine").as_deref(), Some("alpine"));
        assert_eq!(
            context_key("docker.io/library/alpine:latest").as_deref(),
            Some("alpine")
        );
        assert_eq!(context_key("alpine:3.20").as_deref(), Some("alpine:3.20"));
        assert_eq!(
            context_key("127.0.0.1:5000/x/y:latest").as_deref(),
            Some("127.0.0.1:5000/x/y")
        );
        assert_eq!(context_key("Bad Name"), None);
    }

    #[test]
    fn oci_layout_forms() {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        let NamedContext::OciLayout { dir, tag, digest } =
            NamedContext::parse(&format!("oci-layout:///tmp/l:v2@{d}")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (dir, tag, digest),
            ("/tmp/l".into(), "v2".into(), Some(d.clone()))
        );
        let NamedContext::OciLayout { tag, digest, .. } =
            NamedContext::parse(&format!("oci-layout://l@{d}")).unwrap()
        else {
            panic!()
        };
        assert_eq!((tag.as_str(), digest.is_some()), ("latest", true));
        assert!(NamedContext::parse("oci-layout://l@sha256:bad").is_err());
        assert!(NamedContext::parse("docker-image://").is_err());
        assert!(NamedContext::parse("-").is_err());
    }
}
