#![doc = include_str!("README.md")]
#![deny(unsafe_code)]

pub mod fsview;
pub mod passwd;

mod binfmt;
pub use binfmt::run_platforms;
mod copy;
mod diff;
pub use diff::prune_unchanged;
mod error;
mod hostinfo;
mod init;
mod limits;
mod plan;
mod proto;
mod seccomp;
mod spec;
mod sys;
mod user;
mod userns;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::event::{PollFd, PollFlags, poll};

pub use error::SandboxError;
pub use hostinfo::{HostCheck, HostReport, ModeStatus};
pub use init::maybe_run_init;
pub use limits::{RunLimits, SizeError, Ulimit, parse_mem_bytes, parse_ram_in_bytes};
pub use spec::{
    BindAccess, ExitStatus, Mount, MountKind, MountSource, NetworkMode, Rootfs, RunSpec, User,
};
pub use user::resolve_user;
pub use userns::{IdRange, Privilege, ROOTLESS_ENV, enter_rootless};

use error::IoContext;
use proto::{INIT_MARKER, InitMsg, InitRequest, ProbeResult};

/// Which output stream of a RUN step a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// The environment variable that chooses the sandbox mode: `auto` (default), `overlay` or
/// `chroot`.
pub const SANDBOX_MODE_ENV: &str = "RBUILD_SANDBOX";

/// How RUN steps are isolated and diffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Mount, PID, IPC and UTS namespaces (NET for `--network=none`) and overlayfs: the
    /// parent snapshots are the lowers and the upper directory is the diff.
    Overlay,
    /// The fallback: the layers are copied into a directory, the step runs `chroot`-style in
    /// it (inside namespaces when the host allows them), and a walking differ writes the
    /// diff in the same overlay format.
    Chroot,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Overlay => "namespaces+overlayfs",
            Mode::Chroot => "chroot",
        })
    }
}

/// Which mode the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ModeRequest {
    /// The overlay mode when the host allows it, else the chroot mode.
    #[default]
    Auto,
    /// The overlay mode, or an error.
    Overlay,
    /// The chroot mode, even where the overlay mode would work.
    Chroot,
}

impl FromStr for ModeRequest {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, SandboxError> {
        match s {
            "" | "auto" => Ok(ModeRequest::Auto),
            "overlay" | "overlayfs" => Ok(ModeRequest::Overlay),
            "chroot" => Ok(ModeRequest::Chroot),
            other => Err(SandboxError::BadModeRequest {
                value: other.to_owned(),
            }),
        }
    }
}

/// What the host allows, and the mode chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The mode runs use.
    pub mode: Mode,
    /// Whether namespaces (and the new mount API) are usable; the chroot mode uses them too
    /// when they are (`--mount`, `--network=none`, /proc and /dev need them).
    pub namespaces: bool,
    /// Whether overlayfs works with the probe directory as upper.
    pub overlay: bool,
    /// What was asked for.
    pub requested: ModeRequest,
    /// Why the overlay mode is not used, when it is not.
    pub reason: Option<String>,
}

impl Capabilities {
    /// A one-line description for progress output: `namespaces+overlayfs`,
    /// `chroot+namespaces (requested)`, `chroot (cannot create namespaces: ...)`.
    pub fn describe(&self) -> String {
        let mut s = self.mode.to_string();
        if self.mode == Mode::Chroot && self.namespaces {
            s.push_str("+namespaces");
        }
        match (&self.requested, &self.reason) {
            (ModeRequest::Chroot, _) => s.push_str(" (requested)"),
            (_, Some(r)) if self.mode == Mode::Chroot => s.push_str(&format!(" ({r})")),
            _ => {}
        }
        s
    }
}

/// Cancels runs from another thread (or a signal handler task): every run given this handle
/// is torn down, its processes killed and its mounts gone, and returns
/// [`SandboxError::Cancelled`]. One handle may serve many concurrent runs (a whole build).
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    next: AtomicU64,
    sockets: Mutex<Vec<(u64, UnixStream)>>,
}

impl CancelHandle {
    /// A handle that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every current and future run that uses this handle.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let sockets = self.inner.sockets.lock().unwrap_or_else(|e| e.into_inner());
        for (_, s) in sockets.iter() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Whether [`CancelHandle::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn attach(&self, s: UnixStream) -> u64 {
        let id = self.inner.next.fetch_add(1, Ordering::SeqCst);
        let mut sockets = self.inner.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_cancelled() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        sockets.push((id, s));
        id
    }

    fn detach(&self, id: u64) {
        let mut sockets = self.inner.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.retain(|(i, _)| *i != id);
    }
}

/// The daemonless RUN sandbox. Create one per build with [`Sandbox::detect`]; it is cheap
/// to share (`&Sandbox` is all [`Sandbox::run`] needs) and runs may go in parallel.
#[derive(Debug, Clone)]
pub struct Sandbox {
    caps: Capabilities,
}

impl Sandbox {
    /// Probes the host (namespaces, the new mount API, overlayfs with an upper in
    /// `probe_dir`, which should be on the filesystem of the cache) and picks the mode,
    /// honouring `RBUILD_SANDBOX` (`auto`, `overlay`, `chroot`).
    pub fn detect(probe_dir: &Path) -> Result<Sandbox, SandboxError> {
        let request = match std::env::var(SANDBOX_MODE_ENV) {
            Ok(v) => v.parse()?,
            Err(_) => ModeRequest::Auto,
        };
        Self::detect_with(probe_dir, request)
    }

    /// Like [`Sandbox::detect`], with the mode request given instead of read from the
    /// environment.
    pub fn detect_with(probe_dir: &Path, requested: ModeRequest) -> Result<Sandbox, SandboxError> {
        if !init::init_hook_installed() {
            // Nothing can run here; say so at the first RUN, not for builds that have none.
            return Ok(Sandbox {
                caps: Capabilities {
                    mode: Mode::Chroot,
                    namespaces: false,
                    overlay: false,
                    requested,
                    reason: Some(SandboxError::InitHookMissing.to_string()),
                },
            });
        }
        let dir = probe_dir.join(format!(
            ".rbuild-probe-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io("mkdir", &dir, e))?;
        let outcome = call_init(&InitRequest::Probe(dir.clone()), None, &mut |_, _| {})
            .map(|(msgs, exit, _)| (msgs, exit));
        let cleanup =
            std::fs::remove_dir_all(&dir).map_err(|e| SandboxError::io("remove", &dir, e));
        let (msgs, _) = outcome?;
        cleanup?;
        let probe = msgs
            .into_iter()
            .find_map(|m| match m {
                InitMsg::Probe(p) => Some(p),
                _ => None,
            })
            .unwrap_or(ProbeResult {
                namespaces: false,
                overlay: false,
                detail: Some("the probe did not answer".into()),
            });
        let full = probe.namespaces && probe.overlay;
        let mode = match requested {
            ModeRequest::Auto if full => Mode::Overlay,
            ModeRequest::Auto | ModeRequest::Chroot => Mode::Chroot,
            ModeRequest::Overlay if full => Mode::Overlay,
            ModeRequest::Overlay => {
                return Err(SandboxError::ModeUnavailable {
                    reason: probe.detail.unwrap_or_else(|| "unknown".into()),
                });
            }
        };
        Ok(Sandbox {
            caps: Capabilities {
                mode,
                namespaces: probe.namespaces,
                overlay: probe.overlay,
                requested,
                reason: probe.detail,
            },
        })
    }

    /// What the probe found and the mode in use.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The build mode of issue 16 this sandbox and process make: `root`, `rootless` or
    /// `unprivileged` (steps run chroot-style without namespaces).
    pub fn mode_name(&self) -> &'static str {
        if !self.caps.namespaces {
            "unprivileged"
        } else if Privilege::current().in_user_namespace() {
            "rootless"
        } else {
            "root"
        }
    }

    /// Runs `spec`, streaming the command's output to `output` as it comes, and returns how
    /// the command ended (a non-zero exit is not an error). It blocks: from async code, call
    /// it in `spawn_blocking`. With [`Rootfs::Layers`] the upper directory holds the diff
    /// afterwards. Whatever happens (failure, cancel, or the calling process dying) nothing
    /// is left behind: no process, no mount, and the scratch directory is emptied.
    ///
    /// ```no_run
    /// use rbuild_sandbox::{CancelHandle, Rootfs, RunSpec, Sandbox};
    /// # fn main() -> Result<(), rbuild_sandbox::SandboxError> {
    /// let sandbox = Sandbox::detect("/var/cache/rbuild/tmp".as_ref())?;
    /// let spec = RunSpec::new(
    ///     Rootfs::Layers { lowers: vec!["/var/cache/rbuild/snap/1".into()], upper: "/tmp/u".into() },
    ///     "/var/cache/rbuild/tmp/run-1",
    ///     vec!["/bin/sh".into(), "-c".into(), "echo hi > /hello".into()],
    /// )?;
    /// let status = sandbox.run(&spec, &CancelHandle::new(), &mut |_stream, bytes| {
    ///     print!("{}", String::from_utf8_lossy(bytes));
    /// })?;
    /// assert!(status.success());
    /// # Ok(()) }
    /// ```
    pub fn run(
        &self,
        spec: &RunSpec,
        cancel: &CancelHandle,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExitStatus, SandboxError> {
        self.run_measured(spec, cancel, output).map(|(s, _)| s)
    }

    /// [`Sandbox::run`], also giving the CPU time (user and system) that the step's
    /// processes used, all of them (the sandbox's init waits for each).
    ///
    /// ```no_run
    /// use rbuild_sandbox::{CancelHandle, Rootfs, RunSpec, Sandbox};
    /// # fn main() -> Result<(), rbuild_sandbox::SandboxError> {
    /// let sandbox = Sandbox::detect("/var/cache/rbuild/tmp".as_ref())?;
    /// let spec = RunSpec::new(
    ///     Rootfs::Layers { lowers: vec!["/var/cache/rbuild/snap/1".into()], upper: "/tmp/u".into() },
    ///     "/var/cache/rbuild/tmp/run-1",
    ///     vec!["/bin/sh".into(), "-c".into(), "sha256sum /bin/sh".into()],
    /// )?;
    /// let (status, cpu) = sandbox.run_measured(&spec, &CancelHandle::new(), &mut |_, _| {})?;
    /// println!("{status}: {:.2}s of CPU", cpu.as_secs_f64());
    /// # Ok(()) }
    /// ```
    pub fn run_measured(
        &self,
        spec: &RunSpec,
        cancel: &CancelHandle,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<(ExitStatus, std::time::Duration), SandboxError> {
        spec.validate()?;
        if !rustix::process::geteuid().is_root() {
            return Err(SandboxError::Unsupported {
                feature: "running as a non-root user".into(),
                mode: self.caps.mode,
                reason: "this process is not root and not in a user namespace of its own; call \
                         builder_core::enter_rootless() first in main (rbuild does unless \
                         RBUILD_ROOTLESS=0), or run as root"
                    .into(),
            });
        }
        let privilege = Privilege::current();
        if spec.insecure && (privilege != Privilege::Root || !self.caps.namespaces) {
            return Err(SandboxError::Unsupported {
                feature: "RUN --security=insecure".into(),
                mode: self.caps.mode,
                reason: format!(
                    "rbuild runs in the {} mode ({} as {}): a step cannot be given privileges                      this process lacks; run rbuild as root on the host",
                    self.mode_name(),
                    self.caps.describe(),
                    privilege.describe()
                ),
            });
        }
        if let Some(arch) = &spec.arch {
            binfmt::check_emulator(arch)?;
        }
        if cancel.is_cancelled() {
            return Err(SandboxError::Cancelled);
        }
        let mut undo = plan::Undo::default();
        let result = self.run_prepared(spec, cancel, output, &mut undo);
        let undo_result = undo.run();
        let clear_result = clear_dir(&spec.scratch);
        match (result, undo_result.and(clear_result)) {
            (Ok(s), Ok(())) => Ok(s),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(c)) => Err(SandboxError::WithCleanup {
                error: Box::new(e),
                cleanup: Box::new(c),
            }),
        }
    }

    fn run_prepared(
        &self,
        spec: &RunSpec,
        cancel: &CancelHandle,
        output: &mut dyn FnMut(Stream, &[u8]),
        undo: &mut plan::Undo,
    ) -> Result<(ExitStatus, std::time::Duration), SandboxError> {
        let prepared = plan::prepare(spec, self.caps.mode, self.caps.namespaces, undo).map_err(
            |e| match e {
                SandboxError::Unsupported {
                    feature,
                    mode,
                    reason,
                } => SandboxError::Unsupported {
                    feature,
                    mode,
                    reason: format!(
                        "{reason} (rbuild runs in the {} mode: {})",
                        self.mode_name(),
                        self.caps.describe()
                    ),
                },
                other => other,
            },
        )?;
        let (msgs, exit, cpu) = call_init(
            &InitRequest::Run(Box::new(prepared.plan)),
            Some(cancel),
            output,
        )?;
        if cancel.is_cancelled() {
            return Err(SandboxError::Cancelled);
        }
        let mut status = None;
        for m in msgs {
            match m {
                InitMsg::Failed(f) => return Err(f.into_error()),
                InitMsg::Status(s) => status = Some(s),
                InitMsg::Probe(_) => {}
            }
        }
        let status = status.ok_or_else(|| SandboxError::Init {
            detail: format!("the init ended ({exit}) without reporting the command's status"),
        })?;
        if let Some(copy) = prepared.copy {
            undo.run()?;
            diff::diff(
                &copy.lowers,
                &copy.dir,
                &copy.upper,
                Some(&copy.baseline),
                &prepared.excluded,
            )?;
        }
        if let Rootfs::Layers { lowers, upper } = &spec.rootfs {
            diff::expand_opaque_dirs(&fsview::LayeredView::new(lowers.clone()), upper)?;
            add_runtime_mount_points(lowers, upper)?;
        }
        Ok((status, cpu))
    }
}

/// The mount points a container runtime creates in the root when the image lacks them:
/// runc makes `/dev`, `/proc` and `/sys` directories in the rootfs before mounting over
/// them, and BuildKit's layer keeps them. rbuild mounts over stubs outside the diff, so it
/// adds the same three empty directories (0755, root) to the diff of a step whose parent
/// lacks them: in every sandbox mode the layer is the one BuildKit writes.
fn add_runtime_mount_points(lowers: &[PathBuf], upper: &Path) -> Result<(), SandboxError> {
    let view = fsview::LayeredView::new(lowers.to_vec());
    for name in ["dev", "proc", "sys"] {
        let found = view
            .lookup(&[std::ffi::OsString::from(name)])
            .map_err(|e| {
                SandboxError::io(
                    "look up a mount point",
                    lowers.first().cloned().unwrap_or_default().join(name),
                    e,
                )
            })?;
        let p = upper.join(name);
        if found.is_some() || p.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&p).at("create mount point", &p)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .at("chmod", &p)?;
    }
    Ok(())
}

/// Removes everything inside `dir` (not `dir` itself).
fn clear_dir(dir: &Path) -> Result<(), SandboxError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SandboxError::io("read directory", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| SandboxError::io("read directory", dir, e))?;
        let p = entry.path();
        let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| SandboxError::io("remove", &p, e))?;
    }
    Ok(())
}

/// Starts the init, sends `req`, streams the output and collects the init's messages.
fn call_init(
    req: &InitRequest,
    cancel: Option<&CancelHandle>,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<(Vec<InitMsg>, std::process::ExitStatus, std::time::Duration), SandboxError> {
    if !init::init_hook_installed() {
        return Err(SandboxError::InitHookMissing);
    }
    let (ours, theirs) = UnixStream::pair().map_err(|e| SandboxError::sys("socketpair", e))?;
    let mut child = Command::new("/proc/self/exe")
        .arg(INIT_MARKER)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SandboxError::sys("start the sandbox init (/proc/self/exe)", e))?;
    let mut line = serde_json::to_vec(req)
        .map_err(|e| SandboxError::sys("encode request", io::Error::other(e)))?;
    line.push(b'\n');
    // The init may already be gone (then its exit says why); never die of SIGPIPE.
    let _ = rustix::net::send(&ours, &line, rustix::net::SendFlags::NOSIGNAL);
    let attached = match (cancel, ours.try_clone()) {
        (Some(c), Ok(s)) => Some((c, c.attach(s))),
        _ => None,
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SandboxError::Init {
            detail: "no output pipes".into(),
        });
    };
    let mut open = [true, true, true];
    let mut msgbuf = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut result = Ok(());
    while open.iter().any(|o| *o) {
        let fds: [&dyn AsFd; 3] = [&stdout, &stderr, &ours];
        let mut idx = Vec::new();
        let mut pfds = Vec::new();
        for (i, fd) in fds.iter().enumerate() {
            if open[i] {
                idx.push(i);
                pfds.push(PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::IN));
            }
        }
        match poll(&mut pfds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                result = Err(SandboxError::sys("poll", e));
                break;
            }
        }
        let ready: Vec<usize> = idx
            .iter()
            .zip(&pfds)
            .filter(|(_, p)| !p.revents().is_empty())
            .map(|(i, _)| *i)
            .collect();
        drop(pfds);
        for i in ready {
            let n = match i {
                0 => io::Read::read(&mut stdout, &mut buf),
                1 => io::Read::read(&mut stderr, &mut buf),
                _ => io::Read::read(&mut &ours, &mut buf),
            };
            match n {
                Ok(0) => open[i] = false,
                Ok(n) => match i {
                    0 => output(Stream::Stdout, &buf[..n]),
                    1 => output(Stream::Stderr, &buf[..n]),
                    _ => msgbuf.extend_from_slice(&buf[..n]),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => open[i] = false,
            }
        }
    }
    if let Some((c, id)) = attached {
        c.detach(id);
    }
    // wait4 rather than `child.wait()`: it also gives the CPU time of the init and of the
    // step's processes it waited for. `child` is not used after (std never waits on drop).
    let (raw, cpu) =
        sys::wait4(child.id()).map_err(|e| SandboxError::sys("wait for the sandbox init", e))?;
    let exit = std::os::unix::process::ExitStatusExt::from_raw(raw);
    result?;
    let mut msgs = Vec::new();
    for l in msgbuf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let msg = serde_json::from_slice(l).map_err(|e| SandboxError::Init {
            detail: format!("unreadable message {:?}: {e}", String::from_utf8_lossy(l)),
        })?;
        msgs.push(msg);
    }
    Ok((msgs, exit, cpu))
}
