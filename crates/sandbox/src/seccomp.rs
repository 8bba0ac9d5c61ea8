//! The system-call filter a RUN step runs under (seccomp-bpf).
//!
//! BuildKit runs steps under the container runtime's default seccomp profile; ours denies
//! the same dangerous calls that a step could still make with the capabilities it keeps:
//! new namespaces (a user namespace gives a process every capability over the mounts it
//! then makes), the kernel keyring, BPF, perf events, userfaultfd and io_uring (kernel
//! attack surface, blocked by Docker and containerd), and, for depth, the mount, module,
//! kexec, swap and reboot calls that the dropped capabilities already forbid. A denied
//! call fails with `EPERM`, as in Docker; `clone3` fails with `ENOSYS`, since its flags
//! cannot be inspected, and the C library then falls back to `clone`, whose namespace
//! flags are checked.
//!
//! The filter is a deny list, not Docker's allow list: a call it does not name is allowed.
//! It covers the host's own ABI and its 32-bit compat ABI (i386 on x86_64, AArch32 on
//! arm64), since a step may run a 32-bit binary natively to reach the kernel through the
//! other table; on x86_64 the x32 ABI is refused whole (`ENOSYS`). Emulated steps (QEMU
//! user mode) make the host's calls, so the same filter applies to them.

use libc::sock_filter;

/// The host's `AUDIT_ARCH_*` (`<linux/audit.h>`; not in the libc crate).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// The namespace flags of `clone`'s first argument (`CLONE_NEWNS` ... `CLONE_NEWNET`;
/// `CLONE_NEWTIME` is 0x80, the exit-signal byte of `clone`, so only `clone3` and
/// `unshare` take it).
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// The x32 ABI's bit in the system-call number on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `offsetof(struct seccomp_data, ...)`; the low half of `args[0]` on a little-endian host.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const DATA_ARG0_LOW: u32 = 16;
#[cfg(target_endian = "big")]
const DATA_ARG0_LOW: u32 = 20;

/// One ABI's numbers for the calls the filter treats specially.
struct Table {
    arch: u32,
    /// Fail with `EPERM`.
    denied: &'static [u32],
    clone: u32,
    clone3: u32,
    /// Refuse numbers with the x32 bit (x86_64's native table).
    x32: bool,
}

/// Calls numbered alike on every architecture (the generic table since Linux 5.1):
/// io_uring_setup, _enter, _register, open_tree, move_mount, fsopen, fsconfig, fsmount,
/// fspick, mount_setattr, quotactl_fd. Part of each compat table.
const UNIFIED_DENIED: &[u32] = &[425, 426, 427, 428, 429, 430, 431, 432, 433, 442, 443];
const CLONE3: u32 = 435;

macro_rules! native {
    ($($name:ident),* $(,)?) => { &[$(libc::$name as u32),*] };
}

/// The host's own table, from the C library's numbers.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const NATIVE_DENIED: &[u32] = {
    const COMMON: &[u32] = native![
        SYS_unshare,
        SYS_setns,
        SYS_add_key,
        SYS_request_key,
        SYS_keyctl,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_syslog,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_open_tree,
        SYS_move_mount,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_open_by_handle_at,
        SYS_swapon,
        SYS_swapoff,
        SYS_reboot,
        SYS_acct,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_lookup_dcookie,
    ];
    #[cfg(target_arch = "x86_64")]
    const ARCH: &[u32] = native![SYS_iopl, SYS_ioperm, SYS_uselib];
    #[cfg(target_arch = "aarch64")]
    const ARCH: &[u32] = &[];
    &concat::<{ COMMON.len() + ARCH.len() }>(COMMON, ARCH)
};

/// i386 (`arch/x86/entry/syscalls/syscall_32.tbl`).
#[cfg(target_arch = "x86_64")]
const COMPAT_OWN: &[u32] = &[
    310, // unshare
    346, // setns
    286, // add_key
    287, // request_key
    288, // keyctl
    357, // bpf
    336, // perf_event_open
    374, // userfaultfd
    283, // kexec_load
    128, // init_module
    350, // finit_module
    129, // delete_module
    103, // syslog
    21,  // mount
    22,  // umount
    52,  // umount2
    217, // pivot_root
    342, // open_by_handle_at
    87,  // swapon
    115, // swapoff
    88,  // reboot
    51,  // acct
    131, // quotactl
    253, // lookup_dcookie
    110, // iopl
    101, // ioperm
    86,  // uselib
    166, // vm86
    113, // vm86old
];

/// AArch32 EABI (`arch/arm/tools/syscall.tbl`).
#[cfg(target_arch = "aarch64")]
const COMPAT_OWN: &[u32] = &[
    337, // unshare
    375, // setns
    309, // add_key
    310, // request_key
    311, // keyctl
    386, // bpf
    364, // perf_event_open
    388, // userfaultfd
    347, // kexec_load
    401, // kexec_file_load
    128, // init_module
    379, // finit_module
    129, // delete_module
    103, // syslog
    21,  // mount
    52,  // umount2
    218, // pivot_root
    371, // open_by_handle_at
    87,  // swapon
    115, // swapoff
    88,  // reboot
    51,  // acct
    131, // quotactl
    249, // lookup_dcookie
    86,  // uselib
];

/// Denied too where a step runs `chroot`-style without namespaces (the unprivileged mode):
/// there the step shares the PID namespace and the mounts with rbuild and the rest of the
/// container, so a second `chroot` (the classic escape from a chroot jail, as root), and
/// reaching into another process of the same uid (`ptrace`, `process_vm_writev`,
/// `pidfd_getfd`, `kcmp`) would get out of its root.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const NATIVE_NO_NAMESPACES: &[u32] = native![
    SYS_chroot,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_pidfd_getfd,
    SYS_kcmp,
];

/// [`NATIVE_NO_NAMESPACES`] in the compat table.
#[cfg(target_arch = "x86_64")]
const COMPAT_NO_NAMESPACES: &[u32] = &[
    61,  // chroot
    26,  // ptrace
    347, // process_vm_readv
    348, // process_vm_writev
    349, // kcmp
    438, // pidfd_getfd
];

/// [`NATIVE_NO_NAMESPACES`] in the compat table.
#[cfg(target_arch = "aarch64")]
const COMPAT_NO_NAMESPACES: &[u32] = &[
    61,  // chroot
    26,  // ptrace
    376, // process_vm_readv
    377, // process_vm_writev
    378, // kcmp
    438, // pidfd_getfd
];

#[cfg(target_arch = "x86_64")]
const COMPAT_ARCH: u32 = 0x4000_0003; // AUDIT_ARCH_I386
#[cfg(target_arch = "aarch64")]
const COMPAT_ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const COMPAT: Table = Table {
    arch: COMPAT_ARCH,
    denied: &concat::<{ COMPAT_OWN.len() + UNIFIED_DENIED.len() }>(COMPAT_OWN, UNIFIED_DENIED),
    clone: 120, // the same in both compat tables
    clone3: CLONE3,
    x32: false,
};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const NATIVE: Table = Table {
    arch: NATIVE_ARCH,
    denied: NATIVE_DENIED,
    clone: libc::SYS_clone as u32,
    clone3: CLONE3,
    x32: cfg!(target_arch = "x86_64"),
};

const fn concat<const N: usize>(a: &[u32], b: &[u32]) -> [u32; N] {
    let mut out = [0u32; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

// Classic BPF opcodes (`<linux/filter.h>`).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// One ABI's part of the program: entered with the architecture checked, ends in returns.
fn table_block(t: &Table, extra: &[u32]) -> Vec<sock_filter> {
    let mut p = vec![stmt(LD_W_ABS, DATA_NR)];
    if t.x32 {
        p.push(jump(JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(RET_K, errno(libc::ENOSYS)));
    }
    for &nr in t.denied.iter().chain(extra) {
        p.push(jump(JEQ_K, nr, 0, 1));
        p.push(stmt(RET_K, errno(libc::EPERM)));
    }
    p.push(jump(JEQ_K, t.clone3, 0, 1));
    p.push(stmt(RET_K, errno(libc::ENOSYS)));
    // clone: refuse namespace flags in its first argument.
    p.push(jump(JEQ_K, t.clone, 0, 3));
    p.push(stmt(LD_W_ABS, DATA_ARG0_LOW));
    p.push(jump(JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1));
    p.push(stmt(RET_K, errno(libc::EPERM)));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    p
}

/// The whole program: the native table, the compat table, `ENOSYS` for any other ABI.
/// `None` on an architecture without tables here (the step then runs unfiltered).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn default_filter(no_namespaces: bool) -> Option<Vec<sock_filter>> {
    let (native_extra, compat_extra): (&[u32], &[u32]) = if no_namespaces {
        (NATIVE_NO_NAMESPACES, COMPAT_NO_NAMESPACES)
    } else {
        (&[], &[])
    };
    let native = table_block(&NATIVE, native_extra);
    let mut p = vec![stmt(LD_W_ABS, DATA_ARCH)];
    // Not native: over the native block to the compat check.
    let skip = u8::try_from(native.len()).ok()?;
    p.push(jump(JEQ_K, NATIVE.arch, 0, skip));
    p.extend(native);
    p.push(jump(JEQ_K, COMPAT.arch, 1, 0));
    p.push(stmt(RET_K, errno(libc::ENOSYS)));
    p.extend(table_block(&COMPAT, compat_extra));
    Some(p)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn default_filter(_no_namespaces: bool) -> Option<Vec<sock_filter>> {
    None
}
