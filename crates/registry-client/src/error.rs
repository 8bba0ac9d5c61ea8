//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;

/// Everything that can go wrong talking to a registry.
///
/// Errors about a registry name the registry and the repository; those from an HTTP
/// exchange carry the status and the registry's error code (`MANIFEST_UNKNOWN`, …) when it
/// sent one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference or repository name that does not parse.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A digest string that does not parse or whose algorithm we cannot verify.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A platform string that does not parse.
    #[error("invalid platform {input:?}: {reason}")]
    InvalidPlatform {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The registry answered with an error status.
    #[error("{registry}/{repository}: {operation}: HTTP {status}{}{}", fmt_code(code.as_deref()), fmt_message(message))]
    Registry {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What we asked for (`GET manifest 20-slim`, `PUT blob sha256:…`).
        operation: String,
        /// HTTP status code.
        status: u16,
        /// The first error code of the registry's JSON error body (`BLOB_UNKNOWN`).
        code: Option<String>,
        /// The registry's message for that code, or the start of a non-JSON body.
        message: String,
    },

    /// No response at all: connection refused or reset, DNS, TLS, timeout.
    #[error("{registry}/{repository}: {operation}: {source}")]
    Transport {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What we asked for.
        operation: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Getting a token or a credential failed, or the registry refused them.
    #[error("{registry}: authentication failed: {reason}")]
    Auth {
        /// Registry host.
        registry: String,
        /// What went wrong.
        reason: String,
    },

    /// Content whose digest is not the one asked for. Nothing of it was kept.
    #[error("{registry}/{repository}: {expected}: content has digest {actual}")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
    },

    /// Content whose length is not the size its descriptor gives. Nothing of it was kept.
    #[error("{registry}/{repository}: {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob or manifest.
        digest: Digest,
        /// The size the descriptor gives.
        expected: u64,
        /// What was received (at least).
        actual: u64,
    },

    /// The registry broke the distribution protocol (no `Location` on a 202, a manifest
    /// that is not JSON, an unknown media type, …).
    #[error("{registry}/{repository}: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What was wrong.
        reason: String,
    },

    /// Something a registry sent (a manifest, an index, an image config, a token
    /// response, a JSON body) is larger than rbuild reads into memory.
    #[error(
        "{registry}/{repository}: {what} is larger than {limit} bytes, the most rbuild accepts"
    )]
    TooLarge {
        /// Registry host (or the token service's address).
        registry: String,
        /// Repository path.
        repository: String,
        /// What it was (`manifest 20-slim`, `blob sha256:…`, `token response`).
        what: String,
        /// The cap, in bytes.
        limit: u64,
    },

    /// A manifest that cannot be read: not JSON, an unknown media type, Docker schema 1.
    #[error("manifest {digest}: {reason}")]
    InvalidManifest {
        /// The digest of its bytes.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },

    /// An index has no manifest for the platform asked for.
    #[error("{reference}: no manifest for platform {platform} (the index has: {})", available.join(", "))]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Writing to a caller's destination failed.
    #[error("writing blob {digest}: {source}")]
    Write {
        /// The blob being written.
        digest: Digest,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A Docker configuration file that does not parse.
    #[error("{}: {reason}", path.display())]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A `docker-credential-*` helper failed.
    #[error("credential helper docker-credential-{helper} for {server}: {reason}")]
    CredentialHelper {
        /// The helper's name (the suffix after `docker-credential-`).
        helper: String,
        /// The server it was asked about.
        server: String,
        /// What went wrong (its stderr, or why it could not run).
        reason: String,
    },
}

fn fmt_code(code: Option<&str>) -> String {
    code.map(|c| format!(" {c}")).unwrap_or_default()
}

fn fmt_message(message: &str) -> impl fmt::Display + '_ {
    struct M<'a>(&'a str);
    impl fmt::Display for M<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.0.is_empty() {
                Ok(())
            } else {
                write!(f, ": {}", self.0)
            }
        }
    }
    M(message)
}

impl Error {
    /// The HTTP status, for an error the registry answered with.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry's error code (`MANIFEST_UNKNOWN`), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Registry { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Is this "the thing asked for does not exist" (404)?
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant renders with what a user needs to act on it.
    #[test]
    fn every_variant_renders() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let d2 = Digest::sha256_of(b"x");
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::InvalidReference {
                    input: "A".into(),
                    reason: "r".into(),
                },
                "invalid reference \"A\": r",
            ),
            (
                Error::InvalidDigest {
                    input: "x".into(),
                    reason: "r".into(),
                },
                "invalid digest \"x\": r",
            ),
            (
                Error::InvalidPlatform {
                    input: "x".into(),
                    reason: "r".into(),
                },
                "invalid platform \"x\": r",
            ),
            (
                Error::Registry {
                    registry: "127.0.0.1:5000".into(),
                    repository: "library/node".into(),
                    operation: "GET manifest 20".into(),
                    status: 404,
                    code: Some("MANIFEST_UNKNOWN".into()),
                    message: "manifest unknown".into(),
                },
                "127.0.0.1:5000/library/node: GET manifest 20: HTTP 404 MANIFEST_UNKNOWN: manifest unknown",
            ),
            (
                Error::Registry {
                    registry: "r".into(),
                    repository: "p".into(),
                    operation: "op".into(),
                    status: 502,
                    code: None,
                    message: String::new(),
                },
                "r/p: op: HTTP 502",
            ),
            (
                Error::Transport {
                    registry: "r".into(),
                    repository: "p".into(),
                    operation: "op".into(),
                    source: "connection refused".into(),
                },
                "r/p: op: connection refused",
            ),
            (
                Error::Auth {
                    registry: "r".into(),
                    reason: "bad".into(),
                },
                "r: authentication failed: bad",
            ),
            (
                Error::DigestMismatch {
                    registry: "r".into(),
                    repository: "p".into(),
                    expected: d.clone(),
                    actual: d2.clone(),
                },
                "r/p: sha256:e3b0",
            ),
            (
                Error::SizeMismatch {
                    registry: "r".into(),
                    repository: "p".into(),
                    digest: d.clone(),
                    expected: 3,
                    actual: 4,
                },
                "expected 3 bytes, got 4",
            ),
            (
                Error::Protocol {
                    registry: "r".into(),
                    repository: "p".into(),
                    reason: "no Location".into(),
                },
                "r/p: no Location",
            ),
            (
                Error::TooLarge {
                    registry: "r".into(),
                    repository: "p".into(),
                    what: "manifest 1".into(),
                    limit: 4,
                },
                "r/p: manifest 1 is larger than 4 bytes, the most rbuild accepts",
            ),
            (
                Error::PlatformNotFound {
                    reference: "x".into(),
                    platform: "linux/s390x".into(),
                    available: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
                },
                "x: no manifest for platform linux/s390x (the index has: linux/amd64, linux/arm64/v8)",
            ),
            (
                Error::InvalidManifest {
                    digest: d.clone(),
                    reason: "not JSON".into(),
                },
                "manifest sha256:e3b0",
            ),
            (
                Error::Io {
                    path: "/tmp/f".into(),
                    source: std::io::Error::other("boom"),
                },
                "/tmp/f: boom",
            ),
            (
                Error::Write {
                    digest: d.clone(),
                    source: std::io::Error::other("full"),
                },
                "writing blob sha256:e3b0",
            ),
            (
                Error::DockerConfig {
                    path: "/c.json".into(),
                    reason: "bad".into(),
                },
                "/c.json: bad",
            ),
            (
                Error::CredentialHelper {
                    helper: "pass".into(),
                    server: "s".into(),
                    reason: "x".into(),
                },
                "credential helper docker-credential-pass for s: x",
            ),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            assert!(shown.contains(want), "{shown:?} lacks {want:?}");
        }
    }
}
