//! The sandbox's error type.

use std::io;
use std::path::PathBuf;

use super::Mode;
use crate::fsview::ViewError;

/// Why a sandboxed run (or its preparation) failed. A command that runs and exits non-zero
/// is not an error: [`Sandbox::run`](super::Sandbox::run) returns its
/// [`ExitStatus`](super::ExitStatus).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Setting up the rootless user namespace failed.
    #[error("rootless mode: {step}: {reason}")]
    Rootless {
        /// The step (`newuidmap/newgidmap`, `unshare(CLONE_NEWUSER)`, ...).
        step: String,
        /// What went wrong.
        reason: String,
    },
    /// The program never called [`maybe_run_init`](super::maybe_run_init), so the sandbox
    /// cannot re-execute it as its init.
    #[error(
        "this program cannot run sandboxed steps: it must call maybe_run_init() first thing in main (the sandbox re-executes /proc/self/exe as its init)"
    )]
    InitHookMissing,
    /// A field of the [`RunSpec`](super::RunSpec) is unusable.
    #[error("invalid run spec: {field}: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation on the host failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`copy`, `create whiteout`, ...).
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A system call without a path failed in the calling process.
    #[error("{op}: {source}")]
    Sys {
        /// The call.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting the sandbox up failed inside the init (mounts, namespaces, credentials).
    #[error("sandbox setup: {step}{}: {source}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Setup {
        /// The step that failed (`mount overlay`, `pivot_root`, `setgroups`, ...).
        step: String,
        /// The path involved, if any (inside the root after the pivot).
        path: Option<PathBuf>,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("exec {argv0:?}: {}", exec_reason(.argv0, .source))]
    Exec {
        /// The command name as given.
        argv0: String,
        /// The cause (`NotFound` when the `PATH` lookup found nothing).
        #[source]
        source: io::Error,
    },
    /// A `USER` name is not in the root's `/etc/passwd`.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UserNotFound {
        /// The name.
        name: String,
    },
    /// A group name is not in the root's `/etc/group`.
    #[error("unable to find group {name}: no matching entries in group file")]
    GroupNotFound {
        /// The name.
        name: String,
    },
    /// A path inside the root resolves (through `..` or a symlink) to somewhere outside it.
    #[error("{path}: resolves outside the root filesystem")]
    PathEscapes {
        /// The path as given.
        path: String,
    },
    /// A mount target or working directory cannot be used.
    #[error("{path}: {reason}")]
    BadPath {
        /// The path inside the root.
        path: String,
        /// What is wrong (`not a directory`, ...).
        reason: String,
    },
    /// A file of the image rbuild reads into memory (`/etc/passwd`, `/etc/group`) is
    /// larger than it accepts.
    #[error("{path} in the image is larger than {limit} bytes, the most rbuild reads")]
    FileTooLarge {
        /// The path inside the root.
        path: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// The root is for a foreign architecture and no usable QEMU emulator is registered.
    #[error("cannot run {platform} binaries on this host: {detail}")]
    Emulator {
        /// The platform (`linux/arm64`).
        platform: String,
        /// What is missing and how to register it.
        detail: String,
    },
    /// A feature the spec asks for is impossible in the sandbox mode in use.
    #[error("{feature} is not available in {mode} sandbox mode: {reason}")]
    Unsupported {
        /// The feature (`--network=none`, `RUN --mount`).
        feature: String,
        /// The mode in use.
        mode: Mode,
        /// Why.
        reason: String,
    },
    /// `RBUILD_SANDBOX` has a value we do not know.
    #[error("RBUILD_SANDBOX={value:?}: expected auto, overlay or chroot")]
    BadModeRequest {
        /// The value.
        value: String,
    },
    /// The overlay mode was requested but this host cannot provide it.
    #[error("the overlay sandbox mode is unavailable here: {reason}")]
    ModeUnavailable {
        /// What the probe found.
        reason: String,
    },
    /// The run was cancelled through its [`CancelHandle`](super::CancelHandle); everything
    /// was torn down.
    #[error("the run was cancelled")]
    Cancelled,
    /// The init process misbehaved (crashed, or broke the protocol).
    #[error("sandbox init: {detail}")]
    Init {
        /// What happened.
        detail: String,
    },
    /// An error, and a second one while cleaning up after it.
    #[error("{error} (cleaning up also failed: {cleanup})")]
    WithCleanup {
        /// The first error.
        error: Box<SandboxError>,
        /// The cleanup error.
        cleanup: Box<SandboxError>,
    },
}

fn exec_reason(argv0: &str, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound && !argv0.contains('/') {
        "executable file not found in $PATH".to_owned()
    } else {
        source.to_string()
    }
}

impl SandboxError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SandboxError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, source: impl Into<io::Error>) -> Self {
        SandboxError::Sys {
            op,
            source: source.into(),
        }
    }
}

/// The merged layer view's errors are the sandbox's, variant for variant.
impl From<ViewError> for SandboxError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Io { op, path, source } => SandboxError::Io { op, path, source },
            ViewError::Escapes { path } => SandboxError::PathEscapes { path },
            ViewError::BadPath { path, reason } => SandboxError::BadPath { path, reason },
            ViewError::TooLarge { path, limit } => SandboxError::FileTooLarge { path, limit },
        }
    }
}

/// Adds a host path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, SandboxError>;
}

impl<T, E: Into<io::Error>> IoContext<T> for Result<T, E> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, SandboxError> {
        self.map_err(|e| SandboxError::io(op, path, e.into()))
    }
}
