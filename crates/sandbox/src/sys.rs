//! The raw system calls of the sandbox init: the only module of builder-core with `unsafe`.
//!
//! Each wrapper is safe to call: it checks the condition that makes its call sound (for
//! `fork`, that the process has one thread) or needs none beyond valid arguments.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use rustix::mount::MountAttrFlags;
use rustix::process::Pid;
use rustix::thread::UnshareFlags;

/// The side of a [`fork`] we are on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The original process; the child's pid.
    Parent(Pid),
}

/// The number of threads of this process, from `/proc/self/stat`.
fn thread_count() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Field 20 (num_threads); the command name (field 2) may hold spaces, so count from
    // the closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    after
        .split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read num_threads from /proc/self/stat"))
}

/// `fork(2)`, refused unless this process has exactly one thread.
pub(crate) fn fork() -> io::Result<Forked> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    // SAFETY: the process has a single thread (checked just above, and only this thread
    // could start another one), so the child's copy of the address space holds no lock or
    // half-updated state owned by a thread that does not exist in the child. The child only
    // makes system calls and then execs or exits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // `pid` is positive here.
        pid => Ok(Forked::Parent(
            Pid::from_raw(pid).ok_or_else(|| io::Error::other("fork: bad pid"))?,
        )),
    }
}

/// `unshare(2)` of namespaces. `flags` must not hold `CLONE_FILES`.
pub(crate) fn unshare(flags: UnshareFlags) -> io::Result<()> {
    if flags.contains(UnshareFlags::FILES) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the only hazard of unshare is CLONE_FILES giving this thread a file table
    // that other threads do not share; it is excluded above. Namespace flags change what
    // later system calls see, not the memory safety of this process.
    unsafe { rustix::thread::unshare_unsafe(flags) }?;
    Ok(())
}

/// The kernel's `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], ...)`: sets and clears mount
/// attributes of the mount `fd` refers to (typically a detached tree from `open_tree`).
pub(crate) fn mount_setattr(
    fd: impl AsFd,
    set: MountAttrFlags,
    clear: MountAttrFlags,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: u64::from(set.bits()),
        attr_clr: u64::from(clear.bits()),
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` is a live, properly
    // laid out `struct mount_attr` whose size we pass, and the fd is borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Installs a seccomp-bpf filter on this (single-threaded) process; it stays for every
/// process it executes or forks. Without CAP_SYS_ADMIN (a chroot-mode step of an
/// unprivileged rbuild) the kernel wants `no_new_privs` first, which is then set.
pub(crate) fn install_seccomp_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::other("seccomp program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    let install = || {
        // SAFETY: `prog` points to `len` valid instructions that outlive the call (the
        // kernel copies them); the remaining arguments are ignored for this operation.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog,
                0,
                0,
            )
        };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    match install() {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            rustix::thread::set_no_new_privs(true)?;
            install()
        }
        r => r,
    }
}

/// Marks every file descriptor from 3 up close-on-exec, so nothing the host process leaked
/// reaches the sandboxed command.
pub(crate) fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only sets a flag on
    // descriptors, so no owned fd of this process is invalidated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags into the
    // ifreq we own; the socket fd is valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags member.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resets every signal's disposition to the default, as runc does before exec: ignored
/// dispositions survive exec, and glibc's `posix_spawn` (which `std::process::Command`
/// uses to start the init) leaves its internal signals 32 and 33 ignored. glibc's own
/// `sigaction` refuses those two, so this is the raw system call.
pub(crate) fn reset_signal_dispositions() {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, no restorer, empty mask.
    // 32 bytes cover its size on every architecture.
    let act = [0u64; 4];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `act` is a live, zeroed buffer at least as large as the kernel's struct
        // sigaction, the old-action pointer is null (not written), and the sigset size is
        // the kernel's (8 bytes). Installing SIG_DFL runs no code of ours in signal context;
        // a signal number the kernel refuses only makes the call fail.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                act.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            )
        };
    }
}

/// `wait4(2)` for the child `pid`: its raw wait status and the CPU time (user and system)
/// of it and of the descendants it waited for. The sandbox init waits for every process of
/// a step, so this is the CPU time of the whole step.
pub(crate) fn wait4(pid: u32) -> io::Result<(i32, std::time::Duration)> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("wait4: bad pid"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data: all zeroes is a valid value, and wait4 only
    // writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types, valid for the
        // call; wait4 keeps neither.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok((status, tv(usage.ru_utime) + tv(usage.ru_stime)))
}
