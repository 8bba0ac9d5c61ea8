//! What the host process and the re-executed init say to each other.
//!
//! The host starts `/proc/self/exe __rbuild-sandbox-init` with one end of a Unix socket pair
//! as its standard input. It writes one JSON line (an [`InitRequest`]) and then only keeps
//! the socket open: shutting down its write side (cancel) or dying makes the init kill the
//! sandbox. The init and its children answer with JSON lines ([`InitMsg`]) on the same socket.
//! The command's stdout and stderr are the init's own, two pipes that the host reads.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SandboxError;
use super::spec::{ExitStatus, User};

/// The hidden first argument that turns a host binary into the sandbox init.
pub(crate) const INIT_MARKER: &str = "__rbuild-sandbox-init";

/// A request to the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitRequest {
    /// Check what this host allows, using a scratch directory.
    Probe(PathBuf),
    /// Run a command.
    Run(Box<InitPlan>),
}

/// A fully prepared run: every path exists, every target is resolved.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitPlan {
    /// Unshare mount, PID, IPC and UTS namespaces (and NET for `network_none`).
    pub(crate) namespaces: bool,
    pub(crate) root: InitRoot,
    /// Extra mounts in order (with namespaces only).
    pub(crate) mounts: Vec<InitMount>,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: String,
    pub(crate) user: User,
    pub(crate) hostname: Option<String>,
    pub(crate) network_none: bool,
    pub(crate) insecure: bool,
    /// `--ulimit`, `--shm-size`.
    pub(crate) limits: super::RunLimits,
}

/// How the root is made.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitRoot {
    /// overlayfs at `mountpoint`, then `pivot_root` into it.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        mountpoint: PathBuf,
    },
    /// A bind mount of `dir` at `mountpoint`, then `pivot_root` into it.
    Bind { dir: PathBuf, mountpoint: PathBuf },
    /// `chroot` into `dir` (no namespaces).
    Chroot { dir: PathBuf },
}

/// One mount inside the root.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitMount {
    /// The target, relative to the root (resolved again with `RESOLVE_IN_ROOT`).
    pub(crate) target: String,
    /// Create the target (`Some(true)`: a directory) when it is missing: for targets below
    /// an earlier mount, which the host could not prepare.
    pub(crate) create: Option<bool>,
    pub(crate) kind: InitMountKind,
}

/// What is mounted.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitMountKind {
    /// A bind of a host path.
    Bind { source: PathBuf, readonly: bool },
    /// overlayfs of `lowers` (with an upper and work directory when writable) mounted at the
    /// host path `mountpoint`, of which `subpath` is bound at the target.
    Overlay {
        lowers: Vec<PathBuf>,
        upper_work: Option<(PathBuf, PathBuf)>,
        mountpoint: PathBuf,
        subpath: String,
        readonly: bool,
    },
    /// A tmpfs.
    Tmpfs { size: Option<u64>, mode: u32 },
}

/// What the init found out about the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProbeResult {
    pub(crate) namespaces: bool,
    pub(crate) overlay: bool,
    pub(crate) detail: Option<String>,
}

/// A failure inside the init, with what the host needs to rebuild a [`SandboxError`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitFailure {
    pub(crate) step: String,
    pub(crate) path: Option<PathBuf>,
    pub(crate) errno: Option<i32>,
    pub(crate) message: Option<String>,
    /// Set when exec of this command failed.
    pub(crate) exec: Option<String>,
}

impl InitFailure {
    pub(crate) fn new(step: impl Into<String>, path: Option<PathBuf>, err: &io::Error) -> Self {
        InitFailure {
            step: step.into(),
            path,
            errno: err.raw_os_error(),
            message: err.raw_os_error().is_none().then(|| err.to_string()),
            exec: None,
        }
    }

    pub(crate) fn into_error(self) -> SandboxError {
        let source = match (self.errno, self.message) {
            (Some(e), _) => io::Error::from_raw_os_error(e),
            (None, Some(m)) => io::Error::other(m),
            (None, None) => io::Error::other("unknown error"),
        };
        match self.exec {
            Some(argv0) => SandboxError::Exec { argv0, source },
            None => SandboxError::Setup {
                step: self.step,
                path: self.path,
                source,
            },
        }
    }
}

/// A message from the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitMsg {
    /// The command ended.
    Status(ExitStatus),
    /// Setup or exec failed.
    Failed(InitFailure),
    /// The answer to a probe.
    Probe(ProbeResult),
}
