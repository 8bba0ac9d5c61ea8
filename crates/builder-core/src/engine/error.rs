//! The build's error type, and the typed cause of a failed step.
//!
//! [`Error`] is `Clone`: a stage's result is shared by every stage that waits on it, and
//! each waiter gets the same typed error (its sources are reference-counted).

use std::path::PathBuf;
use std::sync::Arc;

use crate::sandbox::{ExitStatus, SandboxError};

/// Everything that can stop a build.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A build option is invalid (a usage error).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidOption {
        /// The option.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An `--output` specification is invalid (a usage error).
    #[error("invalid output {spec:?}: {reason}")]
    InvalidOutput {
        /// The specification.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A `--cache-to` / `--cache-from` specification is invalid (a usage error).
    #[error("invalid cache {spec:?}: {reason}")]
    InvalidCache {
        /// The specification.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A blob of an imported cache is not what its descriptor says (wrong bytes for its
    /// digest or diffID). [`Build::run`](crate::Build::run) never returns it: the build runs again without
    /// that blob, rebuilding the steps it held.
    #[error("cache blob {digest} is corrupt: {reason}")]
    RejectedCacheBlob {
        /// The blob's digest.
        digest: String,
        /// What did not match.
        reason: String,
    },
    /// The local cache was written by a process with another id mapping (root vs
    /// rootless, or another user): its files' owners would be wrong here.
    #[error("cache {}: {reason}", dir.display())]
    CacheOwners {
        /// The cache directory.
        dir: PathBuf,
        /// The mappings, or the I/O error recording ours.
        reason: String,
    },
    /// A remote cache is not usable.
    #[error("cache {reference}: {reason}")]
    BadCache {
        /// The cache reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The Dockerfile could not be read.
    #[error("{}: {source}", path.display())]
    ReadDockerfile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// The Dockerfile does not parse.
    #[error("{file}:{source}")]
    Parse {
        /// The Dockerfile's name.
        file: String,
        /// The parse error (with line and column).
        source: Arc<dockerfile::Error>,
    },
    /// `# check=error=true` (or `BUILDKIT_DOCKERFILE_CHECK`) and build checks failed.
    #[error("{location}: lint violation found for rules: {}", .rules.join(", "))]
    LintViolations {
        /// `file:line` of the first violation.
        location: String,
        /// The rules violated, in order of first violation.
        rules: Vec<String>,
    },
    /// The `syntax` directive names a frontend other than the Dockerfile frontend.
    #[error(
        "{file}:{line}: the syntax directive asks for the frontend {reference:?}: rbuild builds \
         with its own Dockerfile frontend (the syntax of docker/dockerfile:1.26) and cannot run \
         frontend images; remove the directive or name docker/dockerfile"
    )]
    UnsupportedFrontend {
        /// The Dockerfile's name.
        file: String,
        /// The directive's line.
        line: usize,
        /// The frontend image named.
        reference: String,
    },
    /// SOURCE_DATE_EPOCH names a stage that cannot give the epoch, or its source failed.
    #[error("{file}:{line}: {reason}")]
    SourceDateEpoch {
        /// The Dockerfile's name.
        file: String,
        /// The line of the stage's FROM.
        line: usize,
        /// What is wrong (BuildKit's words).
        reason: String,
    },
    /// The stages do not make a valid build (unknown target, cycle, bad expansion...).
    #[error("{file}:{}: {}", .source.span().map_or_else(String::new, |s| s.to_string()), .source.message())]
    Stages {
        /// The Dockerfile's name.
        file: String,
        /// The error.
        source: Arc<dockerfile::StageError>,
    },
    /// A step failed: where, and why ([`StepError`] tells a registry's refusal from a
    /// command that failed).
    ///
    /// ```
    /// # fn f(e: builder_core::Error) {
    /// use builder_core::{Error, StepError};
    /// match e {
    ///     Error::Step { source: StepError::Exit(status), location, .. } => {
    ///         eprintln!("{location}: the command failed ({status})");
    ///     }
    ///     Error::Step { source: StepError::Registry(e), .. } if e.status() == Some(401) => {
    ///         eprintln!("the registry wants credentials: {e}");
    ///     }
    ///     other => eprintln!("{other}"),
    /// }
    /// # }
    /// ```
    #[error("{location}: {instruction}: {reason}")]
    Step {
        /// `file:line`, empty when the failure is not (yet) tied to an instruction.
        location: String,
        /// The instruction text.
        instruction: String,
        /// What went wrong, as the message says it.
        reason: String,
        /// The last lines of a RUN step's output.
        output_tail: Vec<String>,
        /// The typed cause.
        source: StepError,
    },
    /// A registry operation failed.
    #[error(transparent)]
    Registry(Arc<registry_client::Error>),
    /// The cache failed.
    #[error(transparent)]
    Cache(Arc<layer_cache::Error>),
    /// The sandbox failed.
    #[error(transparent)]
    Sandbox(Arc<SandboxError>),
    /// Writing an output failed.
    #[error("writing {}: {source}", path.display())]
    Export {
        /// The output path.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// An image from a registry is not usable.
    #[error("image {reference}: {reason}")]
    BadImage {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A remote build context (git, HTTP, standard input) could not be fetched or is
    /// not valid.
    #[error("context {context}: {reason}")]
    Context {
        /// The context as given (credentials redacted).
        context: String,
        /// What went wrong.
        reason: String,
    },
    /// Loading the image into a local image store (`--load`) failed, or there is none.
    #[error("--load into {target}: {reason}")]
    Load {
        /// `docker` or `containerd`.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The build was cancelled.
    #[error("build cancelled")]
    Cancelled,
    /// The file system of the cache directory ran out of space (or quota) during the
    /// build. What was being written is discarded (blobs and snapshots become visible only
    /// once complete), so the same cache builds correctly once space is freed.
    #[error(
        "the cache directory {} is out of space: {source}\nfree space there (or run `rbuild \
         cache prune`) and build again: nothing partly written is kept",
        .dir.display()
    )]
    CacheFull {
        /// The cache directory.
        dir: PathBuf,
        /// The failure the full disk caused.
        source: Box<Error>,
    },
}

impl From<registry_client::Error> for Error {
    fn from(e: registry_client::Error) -> Self {
        Error::Registry(Arc::new(e))
    }
}

impl From<layer_cache::Error> for Error {
    fn from(e: layer_cache::Error) -> Self {
        Error::Cache(Arc::new(e))
    }
}

impl From<SandboxError> for Error {
    fn from(e: SandboxError) -> Self {
        Error::Sandbox(Arc::new(e))
    }
}

impl Error {
    /// True for errors in what the user asked (exit status 2), false for a failed build.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidOption { .. } | Error::InvalidOutput { .. } | Error::InvalidCache { .. }
        )
    }
}

/// Why a step failed, typed, so that an embedder can tell a registry's refusal from a
/// command that failed. The sources are reference-counted: the error is shared by every
/// stage waiting on the failed one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A registry request failed (an image, a `--mount from=` image, a cache).
    #[error(transparent)]
    Registry(Arc<registry_client::Error>),
    /// The local cache failed.
    #[error(transparent)]
    Cache(Arc<layer_cache::Error>),
    /// The sandbox could not run the step.
    #[error(transparent)]
    Sandbox(Arc<SandboxError>),
    /// A `COPY` or `ADD` failed (a source not found, a destination it cannot write...).
    #[error("{0}")]
    Copy(Arc<str>),
    /// The command of a `RUN` exited unsuccessfully.
    #[error("{0}")]
    Exit(ExitStatus),
    /// The step is invalid, or another failure (its message says which).
    #[error("{0}")]
    Invalid(Arc<str>),
}

impl Error {
    /// A step failure not yet tied to an instruction: the step that raised it adds its
    /// location and text.
    pub(crate) fn unlocated(source: StepError, reason: impl Into<String>) -> Error {
        Error::Step {
            location: String::new(),
            instruction: String::new(),
            reason: reason.into(),
            output_tail: Vec::new(),
            source,
        }
    }

    /// [`Error::unlocated`] with an [`StepError::Invalid`] cause saying `reason`.
    pub(crate) fn invalid_step(reason: impl Into<String>) -> Error {
        let reason = reason.into();
        Error::unlocated(StepError::Invalid(reason.as_str().into()), reason)
    }

    /// This error as the failure of the step at `location` (`file:line`) with text
    /// `instruction`: an unlocated step failure gets the location, any other error of a
    /// step becomes a step failure with its typed cause. A located step failure, a
    /// cancellation and a rejected cache blob (which restarts the build, so it must reach
    /// `Build::run` as it is) stay as they are.
    pub(crate) fn at_step(self, location: &str, instruction: &str) -> Error {
        let reason = self.to_string();
        let located = |source: StepError| Error::Step {
            location: location.to_owned(),
            instruction: instruction.to_owned(),
            reason: reason.clone(),
            output_tail: Vec::new(),
            source,
        };
        match self {
            Error::Step {
                location: l,
                reason,
                output_tail,
                source,
                ..
            } if l.is_empty() => Error::Step {
                location: location.to_owned(),
                instruction: instruction.to_owned(),
                reason,
                output_tail,
                source,
            },
            Error::Step { .. } | Error::Cancelled | Error::RejectedCacheBlob { .. } => self,
            Error::Registry(e) => located(StepError::Registry(e)),
            Error::Cache(e) => located(StepError::Cache(e)),
            Error::Sandbox(e) => located(StepError::Sandbox(e)),
            _ => located(StepError::Invalid(reason.as_str().into())),
        }
    }
}
