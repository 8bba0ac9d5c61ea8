//! What a RUN step asks of the sandbox: the root, the process, the mounts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::SandboxError;

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rootfs {
    /// The parent snapshots (overlay-format layer directories, topmost first) and an empty
    /// `upper` directory. After the run `upper` holds the step's diff in overlay format
    /// (see the module documentation), in every mode.
    Layers {
        /// Parent snapshot directories, topmost first. May be empty (`FROM scratch`).
        lowers: Vec<PathBuf>,
        /// An empty directory that receives the diff.
        upper: PathBuf,
    },
    /// A plain directory used as the root as it is: writes land in it and no diff is made.
    Dir(PathBuf),
}

/// How the sandbox sees the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NetworkMode {
    /// The host's network namespace (BuildKit's default for RUN).
    #[default]
    Host,
    /// A new, empty network namespace with only `lo`, brought up.
    None,
}

/// Where the bytes of a bind mount come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MountSource {
    /// A host path: a directory, a file or a socket (build context, cache directory, secret
    /// file, SSH agent socket).
    Host(PathBuf),
    /// A path inside a stack of snapshots (topmost first), for example another stage's
    /// filesystem for `RUN --mount=from=stage`. The path is resolved inside that root.
    Layers {
        /// Snapshot directories, topmost first.
        lowers: Vec<PathBuf>,
        /// Absolute path inside the merged root.
        path: String,
    },
}

/// What a bind mount lets the step do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BindAccess {
    /// Read-only.
    ReadOnly,
    /// Writes reach the source (a cache mount). Only for [`MountSource::Host`].
    ReadWrite,
    /// Writable inside the step, but the writes are discarded after it: an overlay (or, for a
    /// single file, a private copy) over the source. The source is never modified.
    Discard,
}

/// The kind of an extra mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MountKind {
    /// A bind mount of a directory, file or socket.
    Bind {
        /// Where it comes from.
        source: MountSource,
        /// What the step may do with it.
        access: BindAccess,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes (the kernel's default, half of RAM, when `None`).
        size: Option<u64>,
        /// Permission bits of its root (`0o1777` is what BuildKit uses).
        mode: u32,
    },
}

/// An extra mount of a run (`RUN --mount`), mounted in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the root. It is resolved inside the root (symlinks are followed
    /// in the root's namespace); a path that climbs out of the root is refused. Missing
    /// components are created as mount points that never reach the diff.
    pub target: String,
    /// What is mounted.
    pub kind: MountKind,
}

impl Mount {
    /// A bind mount of `source` at `target`.
    pub fn bind(source: MountSource, target: impl Into<String>, access: BindAccess) -> Self {
        Mount {
            target: target.into(),
            kind: MountKind::Bind { source, access },
        }
    }

    /// A tmpfs at `target`.
    pub fn tmpfs(target: impl Into<String>, size: Option<u64>, mode: u32) -> Self {
        Mount {
            target: target.into(),
            kind: MountKind::Tmpfs { size, mode },
        }
    }
}

/// The identity the process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (set with `setgroups`, in this order).
    pub additional_gids: Vec<u32>,
    /// Home directory, used for `HOME` when the environment has none (`/` when `None`).
    pub home: Option<String>,
}

impl User {
    /// root, as a step without `USER` runs.
    pub fn root() -> Self {
        User {
            uid: 0,
            gid: 0,
            additional_gids: vec![0],
            home: Some("/root".into()),
        }
    }
}

/// Everything a sandboxed run needs. Build it with [`RunSpec::new`] and the `with_*` methods,
/// which validate their input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunSpec {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// A directory the sandbox owns during the run (created if missing, must be empty; on
    /// the same filesystem as the upper directory, as overlayfs requires of its work
    /// directory). The sandbox empties it again before returning; the caller removes it.
    pub scratch: PathBuf,
    /// The command: `argv[0]` is looked up in the environment's `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// The environment, exactly (plus `HOME` from [`User::home`] when missing).
    pub env: BTreeMap<String, String>,
    /// The working directory inside the root, created (owned by the user) when missing.
    pub cwd: String,
    /// Who the process runs as.
    pub user: User,
    /// The UTS hostname; `None` keeps the host's.
    pub hostname: Option<String>,
    /// Lines added to the generated `/etc/hosts` (`--add-host`), in order.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// The network.
    pub network: NetworkMode,
    /// Extra mounts, in order.
    pub mounts: Vec<Mount>,
    /// `--security=insecure`: every capability, no masked paths, a writable /sys.
    pub insecure: bool,
    /// The architecture of the root (`arm64`, `amd64`, `arm`, ...: the platform's
    /// architecture); a foreign one runs under QEMU from binfmt_misc. `None` means the host's.
    pub arch: Option<String>,
    /// `--ulimit` and `--shm-size`.
    pub limits: super::RunLimits,
}

impl RunSpec {
    /// A run of `argv` in `rootfs` as root, in `/`, with an empty environment, the host
    /// network and no extra mounts.
    pub fn new(
        rootfs: Rootfs,
        scratch: impl Into<PathBuf>,
        argv: Vec<String>,
    ) -> Result<Self, SandboxError> {
        let spec = RunSpec {
            rootfs,
            scratch: scratch.into(),
            argv,
            env: BTreeMap::new(),
            cwd: "/".into(),
            user: User::root(),
            hostname: None,
            extra_hosts: Vec::new(),
            network: NetworkMode::Host,
            mounts: Vec::new(),
            insecure: false,
            arch: None,
            limits: super::RunLimits::default(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Replaces the environment.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Result<Self, SandboxError> {
        for key in env.keys() {
            check_env_key(key)?;
        }
        self.env = env;
        Ok(self)
    }

    /// Sets the working directory (absolute).
    pub fn with_cwd(mut self, cwd: impl Into<String>) -> Result<Self, SandboxError> {
        let cwd = cwd.into();
        check_abs("cwd", &cwd)?;
        self.cwd = cwd;
        Ok(self)
    }

    /// Sets the user (see [`resolve_user`](super::resolve_user)).
    pub fn with_user(mut self, user: User) -> Self {
        self.user = user;
        self
    }

    /// Sets the UTS hostname.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Result<Self, SandboxError> {
        let hostname = hostname.into();
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['\0', '/']) {
            return Err(SandboxError::InvalidSpec {
                field: "hostname",
                reason: format!("{hostname:?} is not a valid hostname"),
            });
        }
        self.hostname = Some(hostname);
        Ok(self)
    }

    /// Adds `IP<TAB>HOST` lines to `/etc/hosts` (after BuildKit's two lines).
    pub fn with_extra_hosts(
        mut self,
        hosts: &[(String, std::net::IpAddr)],
    ) -> Result<Self, SandboxError> {
        for (h, _) in hosts {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '\0') {
                return Err(SandboxError::InvalidSpec {
                    field: "extra_hosts",
                    reason: format!("{h:?} is not a valid host name"),
                });
            }
        }
        self.extra_hosts = hosts.to_vec();
        Ok(self)
    }

    /// Sets the network mode.
    pub fn with_network(mut self, network: NetworkMode) -> Self {
        self.network = network;
        self
    }

    /// Adds a mount.
    pub fn with_mount(mut self, mount: Mount) -> Result<Self, SandboxError> {
        check_mount(&mount)?;
        self.mounts.push(mount);
        Ok(self)
    }

    /// Grants every capability and drops the masked paths (`--security=insecure`).
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Sets the resource limits and the size of `/dev/shm`.
    pub fn with_limits(mut self, limits: super::RunLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the platform of the root: `linux/arm64`, `linux/arm/v7`, or a bare architecture.
    pub fn with_platform(mut self, platform: &str) -> Result<Self, SandboxError> {
        let mut parts = platform.split('/');
        let first = parts.next().unwrap_or_default();
        let arch = if first == "linux" {
            parts.next().unwrap_or_default()
        } else {
            first
        };
        if super::binfmt::elf_machine(arch).is_none() {
            return Err(SandboxError::InvalidSpec {
                field: "platform",
                reason: format!("unknown or unsupported platform {platform:?}"),
            });
        }
        self.arch = Some(arch.to_owned());
        Ok(self)
    }

    /// Checks the whole spec (the builder methods check as they go; fields are public, so
    /// [`Sandbox::run`](super::Sandbox::run) checks again).
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(SandboxError::InvalidSpec {
                field: "argv",
                reason: "the command is empty".into(),
            });
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(SandboxError::InvalidSpec {
                field: "argv",
                reason: "an argument contains a NUL byte".into(),
            });
        }
        for (k, v) in &self.env {
            check_env_key(k)?;
            if v.contains('\0') {
                return Err(SandboxError::InvalidSpec {
                    field: "env",
                    reason: format!("the value of {k} contains a NUL byte"),
                });
            }
        }
        check_abs("cwd", &self.cwd)?;
        check_host_path("scratch", &self.scratch)?;
        match &self.rootfs {
            Rootfs::Layers { lowers, upper } => {
                for l in lowers {
                    check_host_path("lowers", l)?;
                }
                check_host_path("upper", upper)?;
            }
            Rootfs::Dir(dir) => check_host_path("rootfs", dir)?,
        }
        for m in &self.mounts {
            check_mount(m)?;
        }
        Ok(())
    }
}

fn check_env_key(key: &str) -> Result<(), SandboxError> {
    if key.is_empty() || key.contains(['=', '\0']) {
        return Err(SandboxError::InvalidSpec {
            field: "env",
            reason: format!("{key:?} is not a valid variable name"),
        });
    }
    Ok(())
}

fn check_abs(field: &'static str, path: &str) -> Result<(), SandboxError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(SandboxError::InvalidSpec {
            field,
            reason: format!("{path:?} is not an absolute path"),
        });
    }
    Ok(())
}

fn check_host_path(field: &'static str, path: &Path) -> Result<(), SandboxError> {
    if !path.is_absolute() {
        return Err(SandboxError::InvalidSpec {
            field,
            reason: format!("{} is not an absolute path", path.display()),
        });
    }
    Ok(())
}

fn check_mount(m: &Mount) -> Result<(), SandboxError> {
    check_abs("mounts", &m.target)?;
    match &m.kind {
        MountKind::Bind {
            source: MountSource::Host(p),
            ..
        } => check_host_path("mounts", p),
        MountKind::Bind {
            source: MountSource::Layers { lowers, path },
            access,
        } => {
            for l in lowers {
                check_host_path("mounts", l)?;
            }
            check_abs("mounts", path)?;
            if *access == BindAccess::ReadWrite {
                return Err(SandboxError::InvalidSpec {
                    field: "mounts",
                    reason: format!(
                        "{}: a mount from snapshots cannot be written through; use Discard",
                        m.target
                    ),
                });
            }
            Ok(())
        }
        MountKind::Tmpfs { mode, .. } => {
            if *mode > 0o7777 {
                return Err(SandboxError::InvalidSpec {
                    field: "mounts",
                    reason: format!("{}: mode {mode:o} is not a permission mode", m.target),
                });
            }
            Ok(())
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code: {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}
