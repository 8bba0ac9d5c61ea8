//! The sandbox init: what `/proc/self/exe __rbuild-sandbox-init` runs.
//!
//! Process tree of a run with namespaces:
//!
//! ```text
//! host process (rbuild, any number of threads)
//!  └─ init "A"      single-threaded, host namespaces; PDEATHSIG=KILL, own session
//!      └─ "B"       PID 1 of the new PID namespace; sets up the mounts, pivots, reaps
//!          └─ "C"   drops credentials and capabilities, execs the command
//! ```
//!
//! A unshares the namespaces and forks B, then waits for B or for the host to cancel (EOF on
//! the control socket) and kills B. When B, PID 1, dies the kernel kills every process of
//! the namespace, and the mount namespace with all its mounts goes with its last process:
//! nothing is ever mounted in the host's namespace. Without namespaces (chroot mode) A is a
//! child subreaper that forks C directly and kills every descendant when C ends.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use super::proto::{
    INIT_MARKER, InitFailure, InitMount, InitMountKind, InitMsg, InitPlan, InitRequest, InitRoot,
    ProbeResult,
};
use super::spec::ExitStatus;
use super::sys::{self, Forked};

/// Exit code of A when the host cancelled the run.
pub(crate) const EXIT_CANCELLED: i32 = 3;

/// The default PATH for the `argv[0]` lookup when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities a RUN step keeps: BuildKit's (containerd's) default set.
fn default_capabilities() -> CapabilitySet {
    CapabilitySet::CHOWN
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::FSETID
        | CapabilitySet::FOWNER
        | CapabilitySet::MKNOD
        | CapabilitySet::NET_RAW
        | CapabilitySet::SETGID
        | CapabilitySet::SETUID
        | CapabilitySet::SETFCAP
        | CapabilitySet::SETPCAP
        | CapabilitySet::NET_BIND_SERVICE
        | CapabilitySet::SYS_CHROOT
        | CapabilitySet::KILL
        | CapabilitySet::AUDIT_WRITE
}

/// Files under /proc and /sys hidden from a step (containerd's default masked paths).
const MASKED_PATHS: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Paths under /proc made read-only (containerd's default).
const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Device nodes bind-mounted from the host into the fresh /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The device numbers of the host nodes in [`DEVICES`] (Linux's `devices.txt`).
fn device_number(name: &str) -> (u32, u32) {
    match name {
        "null" => (1, 3),
        "zero" => (1, 5),
        "full" => (1, 7),
        "random" => (1, 8),
        "urandom" => (1, 9),
        _ => (5, 0), // tty
    }
}

/// Refuses `fd` unless it is the character device `name` of [`DEVICES`]: a host (or an
/// outer container's) `/dev/null` swapped for a file or a symlink would otherwise be bound
/// into the step, or over a masked path, as a writable file (runc CVE-2025-31133).
fn check_device(fd: &OwnedFd, name: &str, what: &str) -> Result<(), Fail> {
    let path = Path::new("/dev").join(name);
    let st = rustix::fs::fstat(fd).map_err(|e| fail(what, Some(&path), e))?;
    let dev = st.st_rdev;
    let is_char =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    if is_char && (rustix::fs::major(dev), rustix::fs::minor(dev)) == device_number(name) {
        return Ok(());
    }
    Err(fail(
        what,
        Some(&path),
        io::Error::other(format!(
            "not the {name} device (a {} {}:{}); refusing to bind it into the step",
            if is_char {
                "character device"
            } else {
                "non-device file"
            },
            rustix::fs::major(dev),
            rustix::fs::minor(dev)
        )),
    ))
}

/// Set by [`maybe_run_init`]: whether this program dispatches the re-executed init. Without
/// it, `/proc/self/exe __rbuild-sandbox-init` would run the program's own `main` again (a
/// doctest or an embedder that forgot the call), which would start another build and
/// another init, without end.
static INIT_HOOK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`maybe_run_init`] was called in this process.
pub(crate) fn init_hook_installed() -> bool {
    INIT_HOOK.load(std::sync::atomic::Ordering::SeqCst)
}

/// Runs the sandbox init when this process was started as one (`argv[1]` is the hidden
/// marker), and never returns then. Otherwise it does nothing.
///
/// Every binary that runs sandboxed steps (rbuild's `main`, test binaries, embedders) must
/// call it first thing in `main`, before starting threads or an async runtime: the sandbox
/// re-executes `/proc/self/exe` to get a single-threaded process it may fork and unshare.
///
/// ```no_run
/// fn main() {
///     rbuild_sandbox::maybe_run_init();
///     // ... the program proper
/// }
/// ```
#[allow(clippy::needless_doctest_main)] // main is the point of the example
pub fn maybe_run_init() {
    INIT_HOOK.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut args = std::env::args_os();
    let _ = args.next();
    match args.next() {
        Some(a) if a == OsStr::new(INIT_MARKER) => std::process::exit(init_main()),
        Some(a) if a == OsStr::new(super::userns::MAP_HELPER_MARKER) => {
            std::process::exit(super::userns::map_helper_main(args.collect()))
        }
        _ => {}
    }
}

type Fail = InitFailure;

mod syscall;
use syscall::{LinuxSyscall, setup_root_with};

fn fail(step: &str, path: Option<&Path>, e: impl Into<io::Error>) -> Fail {
    InitFailure::new(step, path.map(Path::to_path_buf), &e.into())
}

fn send(ctrl: &UnixStream, msg: &InitMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        // The host may be gone already; nothing else to tell it then.
        let _ = (&*ctrl).write_all(&line);
    }
}

fn init_main() -> i32 {
    // Nothing the host process leaked may reach the command.
    let _ = sys::cloexec_from_3();
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        return 1;
    }
    // Not dumpable: a step's processes cannot read this one's memory, environment (the
    // host's) or descriptors through /proc, whatever capabilities they keep.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    // Our own session: a terminal's Ctrl-C goes to the host, which cancels cleanly.
    let _ = rustix::process::setsid();
    let ctrl = match rustix::io::fcntl_dupfd_cloexec(io::stdin().as_fd(), 3) {
        Ok(fd) => UnixStream::from(fd),
        Err(_) => return 1,
    };
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&ctrl).read(&mut byte) {
            Ok(0) => return 1,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return 1,
        }
    }
    let req: InitRequest = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            send(
                &ctrl,
                &InitMsg::Failed(fail("read request", None, io::Error::other(e))),
            );
            return 1;
        }
    };
    match req {
        InitRequest::Probe(dir) => probe(&ctrl, &dir),
        InitRequest::Run(plan) => run(&ctrl, &plan),
    }
}

fn status_of(st: rustix::process::WaitStatus) -> ExitStatus {
    match (st.exit_status(), st.terminating_signal()) {
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(sig)) => ExitStatus::Signaled(sig),
        _ => ExitStatus::Exited(255),
    }
}

fn wait_for(pid: Pid) -> io::Result<rustix::process::WaitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, st))) => return Ok(st),
            Ok(None) => continue,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn run(ctrl: &UnixStream, plan: &InitPlan) -> i32 {
    if plan.namespaces {
        let mut flags = UnshareFlags::NEWNS
            | UnshareFlags::NEWPID
            | UnshareFlags::NEWIPC
            | UnshareFlags::NEWUTS;
        if plan.network_none {
            flags |= UnshareFlags::NEWNET;
        }
        if let Err(e) = sys::unshare(flags) {
            send(ctrl, &InitMsg::Failed(fail("unshare namespaces", None, e)));
            return 1;
        }
    } else if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        send(
            ctrl,
            &InitMsg::Failed(fail("become child subreaper", None, e)),
        );
        return 1;
    }
    let devnull = match rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
    {
        Ok(fd) => fd,
        Err(e) => {
            send(
                ctrl,
                &InitMsg::Failed(fail("open", Some(Path::new("/dev/null")), e)),
            );
            return 1;
        }
    };
    let (life_r, life_w) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            send(ctrl, &InitMsg::Failed(fail("pipe", None, e)));
            return 1;
        }
    };
    match sys::fork() {
        Err(e) => {
            send(ctrl, &InitMsg::Failed(fail("fork", None, e)));
            1
        }
        Ok(Forked::Child) => {
            drop(life_w);
            let code = if plan.namespaces {
                pid1_main(ctrl, plan, life_r, devnull)
            } else {
                drop(life_r);
                command_main(ctrl, plan, devnull)
            };
            std::process::exit(code)
        }
        Ok(Forked::Parent(pid)) => {
            drop(life_r);
            let code = supervise(ctrl, pid, plan.namespaces);
            drop(life_w);
            code
        }
    }
}

/// A: waits for the child, or kills it when the host cancels or goes away.
fn supervise(ctrl: &UnixStream, pid: Pid, namespaces: bool) -> i32 {
    // Without pidfds (Linux < 5.3) poll the control socket with a timeout instead.
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok();
    let tick = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    let mut cancelled = false;
    loop {
        let mut fds = vec![PollFd::new(ctrl, PollFlags::IN)];
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        match poll(&mut fds, if pidfd.is_some() { None } else { Some(&tick) }) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
        let ctrl_ready = !fds[0].revents().is_empty();
        let exited = match fds.get(1) {
            Some(p) => !p.revents().is_empty(),
            None => matches!(
                rustix::process::waitid(
                    rustix::process::WaitId::Pid(pid),
                    rustix::process::WaitIdOptions::EXITED
                        | rustix::process::WaitIdOptions::NOHANG
                        | rustix::process::WaitIdOptions::NOWAIT,
                ),
                Ok(Some(_))
            ),
        };
        if exited {
            break;
        }
        if ctrl_ready {
            let mut buf = [0u8; 64];
            match (&*ctrl).read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    cancelled = true;
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                    break;
                }
            }
        }
    }
    let status = wait_for(pid);
    if !namespaces {
        if let (false, Ok(st)) = (cancelled, &status) {
            send(ctrl, &InitMsg::Status(status_of(*st)));
        }
        kill_descendants();
    }
    if cancelled {
        return EXIT_CANCELLED;
    }
    match status {
        Ok(st) => st.exit_status().unwrap_or(1),
        Err(_) => 1,
    }
}

/// Kills every remaining descendant of this (subreaper) process and reaps them.
fn kill_descendants() {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        let pids: Vec<Pid> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(Pid::from_raw)
            .collect();
        for &p in &pids {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
        let mut reaped = false;
        loop {
            match rustix::process::waitpid(None, WaitOptions::NOHANG) {
                Ok(Some(_)) => reaped = true,
                Err(Errno::INTR) => {}
                _ => break,
            }
        }
        if pids.is_empty() && !reaped {
            match rustix::process::waitpid(None, WaitOptions::empty()) {
                Ok(Some(_)) | Err(Errno::INTR) => continue,
                _ => return,
            }
        }
    }
}

/// B: PID 1 of the new PID namespace.
fn pid1_main(ctrl: &UnixStream, plan: &InitPlan, life: OwnedFd, devnull: OwnedFd) -> i32 {
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        return 1;
    }
    // A may have died before PDEATHSIG was armed: then its end of the pipe is closed.
    let mut fds = [PollFd::new(&life, PollFlags::IN)];
    if poll(
        &mut fds,
        Some(&rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    )
    .is_ok()
        && !fds[0].revents().is_empty()
    {
        return 1;
    }
    drop(life);
    if let Err(f) = setup_namespaced_root(plan) {
        send(ctrl, &InitMsg::Failed(f));
        return 1;
    }
    match sys::fork() {
        Err(e) => {
            send(ctrl, &InitMsg::Failed(fail("fork", None, e)));
            1
        }
        Ok(Forked::Child) => std::process::exit(command_main(ctrl, plan, devnull)),
        Ok(Forked::Parent(cmd)) => loop {
            match rustix::process::waitpid(None, WaitOptions::empty()) {
                Ok(Some((pid, st))) if pid == cmd => {
                    send(ctrl, &InitMsg::Status(status_of(st)));
                    // Exiting as PID 1 kills whatever the command left running.
                    return 0;
                }
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    send(ctrl, &InitMsg::Failed(fail("wait", None, e)));
                    return 1;
                }
            }
        },
    }
}

fn open_dir_path(path: &Path) -> Result<OwnedFd, Fail> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open", Some(path), e))
}

/// Mounts overlayfs at `mountpoint`. Layers are passed as `/proc/self/fd/N` so that any
/// path (with `:` or `,`) works and the option string stays short.
fn mount_overlay(
    lowers: &[PathBuf],
    upper_work: Option<&(PathBuf, PathBuf)>,
    mountpoint: &Path,
    readonly: bool,
) -> Result<(), Fail> {
    let mut fds = Vec::new();
    let mut lowerdir = Vec::new();
    for l in lowers {
        let fd = open_dir_path(l)?;
        lowerdir.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        fds.push(fd);
    }
    let mut data = format!("lowerdir={}", lowerdir.join(":"));
    if let Some((upper, work)) = upper_work {
        let u = open_dir_path(upper)?;
        let w = open_dir_path(work)?;
        data.push_str(&format!(
            ",upperdir=/proc/self/fd/{},workdir=/proc/self/fd/{}",
            u.as_raw_fd(),
            w.as_raw_fd()
        ));
        fds.push(u);
        fds.push(w);
    }
    // Keep the upper a faithful diff: no metadata-only copy-ups, no redirects for renamed
    // directories (rename gives EXDEV and tools copy), no index, no inode-number xattrs.
    data.push_str(",index=off,metacopy=off,xino=off");
    // In a user namespace trusted.* xattrs are out of reach: overlayfs keeps its metadata
    // in user.overlay.* (`userxattr`, Linux 5.11+), where `redirect_dir=off` (which may
    // follow redirects) is refused and `nofollow` is the same for a fresh upper.
    if super::Privilege::current().in_user_namespace() {
        data.push_str(",userxattr,redirect_dir=nofollow");
    } else {
        data.push_str(",redirect_dir=off");
    }
    if data.len() >= 4000 {
        return Err(fail(
            "mount overlay",
            Some(mountpoint),
            io::Error::other(format!("too many layers ({})", lowers.len())),
        ));
    }
    let flags = if readonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let mount = |data: &str| {
        let data = std::ffi::CString::new(data)
            .map_err(|e| fail("mount overlay", Some(mountpoint), io::Error::other(e)))?;
        rustix::mount::mount("overlay", mountpoint, "overlay", flags, data.as_c_str())
            .map_err(|e| fail("mount overlay", Some(mountpoint), e))
    };
    // A writable step's mount is `volatile` (Linux 5.10+): the step's fsync calls (dpkg
    // makes one per file) do not reach the disk. Nothing is lost: the upper directory is
    // published only after the snapshot store syncs the file system, and a step whose
    // machine crashed is simply run again. Kernels without the option mount as before.
    if upper_work.is_some() && mount(&format!("{data},volatile")).is_ok() {
        drop(fds);
        return Ok(());
    }
    mount(&data)?;
    drop(fds);
    Ok(())
}

fn in_root(
    root: &OwnedFd,
    rel: &str,
    flags: OFlags,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve | ResolveFlags::IN_ROOT,
    )
}

/// Creates the missing components of `rel` inside the root, the last one a directory or an
/// empty file.
fn create_in_root(root: &OwnedFd, rel: &str, last_is_dir: bool) -> Result<(), Fail> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for i in 0..comps.len() {
        let prefix = comps[..=i].join("/");
        match in_root(root, &prefix, OFlags::PATH, ResolveFlags::NO_MAGICLINKS) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail("resolve", Some(&Path::new("/").join(&prefix)), e)),
        }
        let parent = in_root(
            root,
            &comps[..i].join("/"),
            OFlags::PATH | OFlags::DIRECTORY,
            ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| fail("resolve", Some(&Path::new("/").join(&prefix)), e))?;
        let r = if i + 1 == comps.len() && !last_is_dir {
            rustix::fs::openat(
                &parent,
                comps[i],
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&parent, comps[i], Mode::from_raw_mode(0o755))
        };
        r.map_err(|e| fail("create mount point", Some(&Path::new("/").join(&prefix)), e))?;
    }
    Ok(())
}

fn attach(mnt: &OwnedFd, target: &OwnedFd, what: &str, path: &str) -> Result<(), Fail> {
    rustix::mount::move_mount(
        mnt,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| fail(what, Some(Path::new("/").join(path).as_path()), e))
}

/// A new detached filesystem mount.
fn new_fs(
    fstype: &str,
    options: &[(&str, &str)],
    flags: &[&str],
    attrs: MountAttrFlags,
) -> rustix::io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for f in flags {
        rustix::mount::fsconfig_set_flag(&fs, *f)?;
    }
    for (k, v) in options {
        rustix::mount::fsconfig_set_string(&fs, *k, *v)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// A detached copy of the mount at a host path (a bind mount to be).
fn clone_tree(dir: impl AsFd, path: &str, recursive: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if path.is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(dir, path, flags)
}

fn mount_one(root: &OwnedFd, m: &InitMount, insecure: bool) -> Result<(), Fail> {
    let target = match in_root(root, &m.target, OFlags::PATH, ResolveFlags::NO_MAGICLINKS) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if m.create.is_some() => {
            create_in_root(root, &m.target, m.create == Some(true))?;
            in_root(root, &m.target, OFlags::PATH, ResolveFlags::NO_MAGICLINKS)
                .map_err(|e| fail("resolve mount target", Some(Path::new(&m.target)), e))?
        }
        Err(e) => {
            return Err(fail(
                "resolve mount target",
                Some(&Path::new("/").join(&m.target)),
                e,
            ));
        }
    };
    let tree = match &m.kind {
        InitMountKind::Bind { source, readonly } => {
            let tree = clone_tree(CWD, &source.to_string_lossy(), false)
                .map_err(|e| fail("bind mount source", Some(source), e))?;
            if *readonly {
                sys::mount_setattr(
                    &tree,
                    MountAttrFlags::MOUNT_ATTR_RDONLY,
                    MountAttrFlags::empty(),
                    false,
                )
                .map_err(|e| fail("make bind mount read-only", Some(source), e))?;
            }
            tree
        }
        InitMountKind::Overlay {
            lowers,
            upper_work,
            mountpoint,
            subpath,
            readonly,
        } => {
            mount_overlay(lowers, upper_work.as_ref(), mountpoint, *readonly)?;
            let mp = open_dir_path(mountpoint)?;
            let src = in_root(
                &mp,
                subpath.trim_start_matches('/'),
                OFlags::PATH,
                ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|e| fail("resolve mount source", Some(Path::new(subpath)), e))?;
            let tree = clone_tree(&src, "", false)
                .map_err(|e| fail("bind mount source", Some(Path::new(subpath)), e))?;
            if *readonly {
                sys::mount_setattr(
                    &tree,
                    MountAttrFlags::MOUNT_ATTR_RDONLY,
                    MountAttrFlags::empty(),
                    false,
                )
                .map_err(|e| fail("make bind mount read-only", Some(Path::new(subpath)), e))?;
            }
            tree
        }
        InitMountKind::Tmpfs { size, mode } => {
            let mode = format!("{mode:o}");
            let size = size.map(|s| s.to_string());
            // `tmpfs` as the source, as runc names the tmpfs mounts BuildKit asks for.
            let mut opts = vec![("source", "tmpfs"), ("mode", mode.as_str())];
            if let Some(s) = &size {
                opts.push(("size", s.as_str()));
            }
            new_fs(
                "tmpfs",
                &opts,
                &[],
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
            )
            .map_err(|e| fail("mount tmpfs", Some(&Path::new("/").join(&m.target)), e))?
        }
    };
    if !insecure {
        sys::mount_setattr(
            &tree,
            MountAttrFlags::MOUNT_ATTR_NODEV,
            MountAttrFlags::empty(),
            true,
        )
        .map_err(|e| fail("make mount nodev", Some(&Path::new("/").join(&m.target)), e))?;
    }
    attach(&tree, &target, "mount", &m.target)
}

/// /proc, a minimal /dev, /dev/pts, /dev/shm (unless `shm` is false: the step mounts its
/// own), /dev/mqueue, read-only /sys, masked paths.
fn mount_system(
    root: &OwnedFd,
    insecure: bool,
    shm: bool,
    shm_size: Option<u64>,
) -> Result<(), Fail> {
    let dir = |rel: &str| {
        in_root(
            root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY,
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| fail("open mount point", Some(&Path::new("/").join(rel)), e))
    };
    let noexec = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;

    let proc = new_fs("proc", &[], &[], noexec).map_err(|e| fail("mount proc", None, e))?;
    attach(&proc, &dir("proc")?, "mount proc", "proc")?;

    // /dev is `nodev` too: only the host's nodes bound below it (mounts of their own) open.
    let dev_nodev = if insecure {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_NODEV
    };
    let dev = new_fs(
        "tmpfs",
        &[("mode", "755"), ("size", "65536k")],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NOEXEC
            | MountAttrFlags::MOUNT_ATTR_STRICTATIME
            | dev_nodev,
    )
    .map_err(|e| fail("mount /dev tmpfs", None, e))?;
    attach(&dev, &dir("dev")?, "mount /dev", "dev")?;
    for name in DEVICES {
        let host = format!("/dev/{name}");
        rustix::fs::openat(
            &dev,
            *name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| fail("create device mount point", Some(Path::new(&host)), e))?;
        let node = rustix::fs::openat(
            &dev,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", Some(Path::new(&host)), e))?;
        let tree = clone_tree(CWD, &host, false)
            .map_err(|e| fail("bind host device", Some(Path::new(&host)), e))?;
        check_device(&tree, name, "bind host device")?;
        attach(&tree, &node, "bind device", &host[1..])?;
        // Re-checked where the step will open it.
        let now = rustix::fs::openat(
            &dev,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", Some(Path::new(&host)), e))?;
        check_device(&now, name, "check bound device")?;
    }
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
        ("/proc/kcore", "core"),
    ] {
        rustix::fs::symlinkat(target, &dev, name)
            .map_err(|e| fail("symlink", Some(&Path::new("/dev").join(name)), e))?;
    }
    for sub in ["pts", "shm", "mqueue"] {
        rustix::fs::mkdirat(&dev, sub, Mode::from_raw_mode(0o755))
            .map_err(|e| fail("mkdir", Some(&Path::new("/dev").join(sub)), e))?;
    }
    let sub = |name: &str| {
        rustix::fs::openat(
            &dev,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", Some(&Path::new("/dev").join(name)), e))
    };
    // gid 5 (tty) does not exist in a single-id user namespace: the ptys stay gid 0 there.
    let pts_opts: &[(&str, &str)] = if super::Privilege::current().single_id() {
        &[("ptmxmode", "0666"), ("mode", "0620")]
    } else {
        &[("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")]
    };
    let pts = new_fs(
        "devpts",
        pts_opts,
        &["newinstance"],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| fail("mount devpts", None, e))?;
    attach(&pts, &sub("pts")?, "mount devpts", "dev/pts")?;
    if shm {
        // BuildKit's default is 64 MiB; `--shm-size` in bytes.
        let size = shm_size.map_or_else(|| "65536k".to_owned(), |b| b.to_string());
        let shm = new_fs(
            "tmpfs",
            &[("mode", "1777"), ("size", size.as_str())],
            &[],
            noexec,
        )
        .map_err(|e| fail("mount /dev/shm", None, e))?;
        attach(&shm, &sub("shm")?, "mount /dev/shm", "dev/shm")?;
    }
    let mq = new_fs("mqueue", &[], &[], noexec).map_err(|e| fail("mount mqueue", None, e))?;
    attach(&mq, &sub("mqueue")?, "mount mqueue", "dev/mqueue")?;

    let ro = if insecure {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    let sys_target = dir("sys")?;
    let sysfs = match new_fs("sysfs", &[], &[], noexec | ro) {
        Ok(m) => m,
        // Not allowed (a network namespace we do not own): bind the host's, read-only.
        Err(_) => {
            let t = clone_tree(CWD, "/sys", true).map_err(|e| fail("bind /sys", None, e))?;
            sys::mount_setattr(&t, noexec | ro, MountAttrFlags::empty(), true)
                .map_err(|e| fail("make /sys read-only", None, e))?;
            t
        }
    };
    attach(&sysfs, &sys_target, "mount sysfs", "sys")?;

    if insecure {
        return Ok(());
    }
    for rel in MASKED_PATHS {
        let t = match in_root(
            root,
            rel,
            OFlags::PATH,
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(t) => t,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(fail("open masked path", Some(&Path::new("/").join(rel)), e)),
        };
        let st =
            rustix::fs::fstat(&t).map_err(|e| fail("stat", Some(&Path::new("/").join(rel)), e))?;
        let mask =
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                new_fs(
                    "tmpfs",
                    &[("size", "0")],
                    &[],
                    MountAttrFlags::MOUNT_ATTR_RDONLY | noexec,
                )
            } else {
                clone_tree(CWD, "/dev/null", false)
            }
            .map_err(|e| fail("mask", Some(&Path::new("/").join(rel)), e))?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        if !is_dir {
            check_device(&mask, "null", "mask")?;
        }
        attach(&mask, &t, "mask", rel)?;
        // Re-checked by path after mounting: the step sees the mask, not what was there.
        let now = in_root(
            root,
            rel,
            OFlags::PATH,
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| fail("check mask", Some(&Path::new("/").join(rel)), e))?;
        if is_dir {
            let fs = rustix::fs::fstatfs(&now)
                .map_err(|e| fail("check mask", Some(&Path::new("/").join(rel)), e))?;
            if fs.f_type as u64 != 0x0102_1994 {
                // TMPFS_MAGIC
                return Err(fail(
                    "check mask",
                    Some(&Path::new("/").join(rel)),
                    io::Error::other("the masked directory is not the empty tmpfs mounted on it"),
                ));
            }
        } else {
            check_device(&now, "null", "check mask")?;
        }
    }
    for rel in READONLY_PATHS {
        let t = match in_root(
            root,
            rel,
            OFlags::PATH,
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(t) => t,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                return Err(fail(
                    "open read-only path",
                    Some(&Path::new("/").join(rel)),
                    e,
                ));
            }
        };
        let tree = clone_tree(&t, "", true)
            .map_err(|e| fail("bind read-only path", Some(&Path::new("/").join(rel)), e))?;
        sys::mount_setattr(
            &tree,
            MountAttrFlags::MOUNT_ATTR_RDONLY | noexec,
            MountAttrFlags::empty(),
            true,
        )
        .map_err(|e| fail("make read-only", Some(&Path::new("/").join(rel)), e))?;
        attach(&tree, &t, "bind read-only path", rel)?;
    }
    Ok(())
}

/// B's setup: every mount inside the new mount namespace, then `pivot_root`.
fn setup_namespaced_root(plan: &InitPlan) -> Result<(), Fail> {
    setup_root_with(&LinuxSyscall, plan)
}

fn make_cwd(cwd: &str, uid: u32, gid: u32) -> Result<(), Fail> {
    let mut path = PathBuf::from("/");
    for comp in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            path.pop();
            continue;
        }
        path.push(comp);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail("create working directory", Some(&path), Errno::NOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)
                    .map_err(|e| fail("create working directory", Some(&path), e))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| fail("chmod", Some(&path), e))?;
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| fail("chown", Some(&path), e))?;
            }
            Err(e) => return Err(fail("stat", Some(&path), e)),
        }
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Credentials and capabilities: bounding set, groups, gid, uid, then the sets.
fn drop_privileges(plan: &InitPlan) -> Result<(), Fail> {
    // Limits first, while CAP_SYS_RESOURCE may still raise a hard limit.
    for u in &plan.limits.ulimits {
        u.apply()
            .map_err(|e| fail(&format!("setrlimit {}", u.name), None, e))?;
    }
    let current = rustix::thread::capabilities(None).map_err(|e| fail("capget", None, e))?;
    let allowed = if plan.insecure {
        current.permitted
    } else if matches!(plan.root, InitRoot::Chroot { .. }) {
        // A chroot root is the host's file system as it is: it cannot be made `nodev`, so
        // a node made there would open the host's device. No CAP_MKNOD then. Nor
        // CAP_SYS_CHROOT: a second chroot is the way out of the first (the seccomp filter
        // denies the call too), and without a PID namespace no CAP_KILL over other users'
        // processes outside.
        default_capabilities()
            & current.permitted
            & !(CapabilitySet::MKNOD | CapabilitySet::SYS_CHROOT | CapabilitySet::KILL)
    } else {
        default_capabilities() & current.permitted
    };
    if !plan.insecure {
        for bit in 0..=last_cap().min(63) {
            let cap = CapabilitySet::from_bits_retain(1u64 << bit);
            if !allowed.contains(cap) {
                match rustix::thread::remove_capability_from_bounding_set(cap) {
                    Ok(()) | Err(Errno::INVAL) => {}
                    Err(e) => return Err(fail("drop capability from the bounding set", None, e)),
                }
            }
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let u = &plan.user;
    let groups: Vec<rustix::process::Gid> = u
        .additional_gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    // A single-id user namespace denies setgroups (and has no group but 0 to set).
    if !super::Privilege::current().single_id() {
        rustix::thread::set_thread_groups(&groups).map_err(|e| fail("setgroups", None, e))?;
    }
    rustix::thread::set_thread_res_gid(
        rustix::process::Gid::from_raw(u.gid),
        rustix::process::Gid::from_raw(u.gid),
        rustix::process::Gid::from_raw(u.gid),
    )
    .map_err(|e| fail("setgid", None, e))?;
    rustix::thread::set_thread_res_uid(
        rustix::process::Uid::from_raw(u.uid),
        rustix::process::Uid::from_raw(u.uid),
        rustix::process::Uid::from_raw(u.uid),
    )
    .map_err(|e| fail("setuid", None, e))?;
    let keep = if u.uid == 0 {
        allowed
    } else {
        CapabilitySet::empty()
    };
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| fail("capset", None, e))?;
    Ok(())
}

/// Finds `argv0` in `path` as `execvp` would (as the final user).
fn lookup(argv0: &str, path: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        return Some(PathBuf::from(argv0));
    }
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .find_map(|d| {
            let p = Path::new(d).join(argv0);
            let is_file = std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false);
            (is_file && rustix::fs::access(&p, rustix::fs::Access::EXEC_OK).is_ok()).then_some(p)
        })
}

/// C: becomes the command.
fn command_main(ctrl: &UnixStream, plan: &InitPlan, devnull: OwnedFd) -> i32 {
    if let Err(f) = prepare_command(plan) {
        send(ctrl, &InitMsg::Failed(f));
        return 1;
    }
    let mut env = plan.env.clone();
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push((
            "HOME".into(),
            plan.user.home.clone().unwrap_or_else(|| "/".into()),
        ));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let argv0 = &plan.argv[0];
    let exec_fail = |e: io::Error| {
        let mut f = InitFailure::new("exec", None, &e);
        f.exec = Some(argv0.clone());
        InitMsg::Failed(f)
    };
    let Some(program) = lookup(argv0, path) else {
        send(ctrl, &exec_fail(io::Error::from_raw_os_error(libc::ENOENT)));
        return 127;
    };
    sys::reset_signal_dispositions();
    let err = Command::new(&program)
        .arg0(argv0)
        .args(&plan.argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::from(devnull))
        .exec();
    send(ctrl, &exec_fail(err));
    126
}

fn prepare_command(plan: &InitPlan) -> Result<(), Fail> {
    // runc's umask, not the host process's.
    rustix::process::umask(Mode::from_raw_mode(0o022));
    if let InitRoot::Chroot { dir } = &plan.root {
        rustix::process::chroot(dir).map_err(|e| fail("chroot", Some(dir), e))?;
        rustix::process::chdir("/").map_err(|e| fail("chdir", Some(Path::new("/")), e))?;
    }
    make_cwd(&plan.cwd, plan.user.uid, plan.user.gid)?;
    // The filter goes on while the process still has CAP_SYS_ADMIN (so `no_new_privs` is
    // not needed and setuid programs in the image keep working); it allows every call
    // `drop_privileges` and `exec` make.
    if !plan.insecure {
        let no_namespaces = matches!(plan.root, InitRoot::Chroot { .. });
        if let Some(filter) = super::seccomp::default_filter(no_namespaces) {
            sys::install_seccomp_filter(&filter)
                .map_err(|e| fail("install the seccomp filter", None, e))?;
        }
    }
    drop_privileges(plan)?;
    rustix::process::chdir(plan.cwd.as_str())
        .map_err(|e| fail("chdir", Some(Path::new(&plan.cwd)), e))?;
    Ok(())
}

/// What this host allows: namespaces and the new mount API, overlayfs with whiteouts.
fn probe(ctrl: &UnixStream, dir: &Path) -> i32 {
    let flags = UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWNET;
    if let Err(e) = sys::unshare(flags) {
        send(
            ctrl,
            &InitMsg::Probe(ProbeResult {
                namespaces: false,
                overlay: false,
                detail: Some(format!("cannot create namespaces: unshare: {e}")),
            }),
        );
        return 0;
    }
    match sys::fork() {
        Err(e) => {
            send(ctrl, &InitMsg::Failed(fail("fork", None, e)));
            1
        }
        Ok(Forked::Child) => {
            let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
            let result = match probe_mounts(dir) {
                Ok(()) => ProbeResult {
                    namespaces: true,
                    overlay: true,
                    detail: None,
                },
                Err((namespaces, detail)) => ProbeResult {
                    namespaces,
                    overlay: false,
                    detail: Some(detail),
                },
            };
            send(ctrl, &InitMsg::Probe(result));
            std::process::exit(0)
        }
        Ok(Forked::Parent(pid)) => wait_for(pid)
            .ok()
            .and_then(|s| s.exit_status())
            .unwrap_or(1),
    }
}

fn probe_mounts(dir: &Path) -> Result<(), (bool, String)> {
    let ns = |what: &str, e: io::Error| (false, format!("{what}: {e}"));
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| ns("make mounts private", e.into()))?;
    let noexec = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    new_fs("proc", &[], &[], noexec).map_err(|e| ns("mount proc (fsopen)", e.into()))?;
    let tmp = new_fs("tmpfs", &[("size", "1m")], &[], noexec)
        .map_err(|e| ns("mount tmpfs (fsopen)", e.into()))?;
    sys::mount_setattr(
        &tmp,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
        MountAttrFlags::empty(),
        false,
    )
    .map_err(|e| ns("mount_setattr (Linux 5.12)", e))?;
    let dir_fd = open_dir_path(dir).map_err(|f| ns("open", f.into_error().into_io()))?;
    rustix::fs::openat2(
        &dir_fd,
        ".",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .map_err(|e| ns("openat2 (Linux 5.6)", e.into()))?;
    let ov = |what: &str, e: io::Error| (true, format!("{what}: {e}"));
    let (l, u, w, m) = (dir.join("l"), dir.join("u"), dir.join("w"), dir.join("m"));
    for d in [&l, &u, &w, &m] {
        std::fs::create_dir(d).map_err(|e| ov("mkdir", e))?;
    }
    std::fs::write(l.join("f"), b"x").map_err(|e| ov("write", e))?;
    mount_overlay(&[l], Some(&(u.clone(), w)), &m, false)
        .map_err(|f| ov("mount overlay", f.into_error().into_io()))?;
    std::fs::remove_file(m.join("f")).map_err(|e| ov("delete through overlay", e))?;
    let meta = std::fs::symlink_metadata(u.join("f")).map_err(|e| ov("stat whiteout", e))?;
    if !crate::fsview::is_whiteout(&meta) {
        return Err((
            true,
            "overlayfs upper does not record deletions as 0/0 whiteouts".into(),
        ));
    }
    Ok(())
}

impl super::error::SandboxError {
    fn into_io(self) -> io::Error {
        match self {
            super::error::SandboxError::Setup { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}
