//! Rootless operation: a non-root process becomes root of a user namespace of its own.
//!
//! [`enter_rootless`] is called first thing in `main` (single-threaded: `unshare` of a user
//! namespace is refused to a multi-threaded process). As root it does nothing. As a
//! non-root user it
//!
//! 1. reads the user's subordinate ranges from `/etc/subuid` and `/etc/subgid` (by name or
//!    by number, as shadow's `newuidmap` does);
//! 2. starts a helper (this binary again, `__rbuild-userns-map`) that stays in the host's
//!    user namespace and waits on a pipe;
//! 3. `unshare(CLONE_NEWUSER)`, then tells the helper, which runs
//!    `newuidmap PID 0 UID 1 1 START COUNT` (and `newgidmap` alike): namespace uid 0 is the
//!    user, 1..=COUNT are the subordinate ids, so the image's uids can own files;
//! 4. becomes uid/gid 0 of the namespace with no supplementary groups.
//!
//! Without subordinate ranges (or without `newuidmap`) the process maps only itself
//! (`0 UID 1`, written directly, `setgroups` denied): steps still run as root of the
//! namespace, but no other uid exists, so every file is root-owned ([`Privilege::describe`]
//! says so and the engine unpacks layers without their owners).
//!
//! The process keeps its pid and its descriptors; only its credentials change. Files the
//! user owns on the host are root's in the namespace, other host files show as `nobody`.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rustix::process::{Gid, Uid};
use rustix::thread::UnshareFlags;

use super::SandboxError;
use super::sys;

/// `argv[1]` of the mapping helper (see [`maybe_run_init`](super::maybe_run_init)).
pub(crate) const MAP_HELPER_MARKER: &str = "__rbuild-userns-map";

/// A subordinate id range: ids `start..start+count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// Under which privileges this process builds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Privilege {
    /// Root of the host's (initial) user namespace.
    Root,
    /// Root of a user namespace that existed before rbuild started (a container with user
    /// namespaces, a `hostUsers: false` pod, `unshare -r`...).
    NamespaceRoot {
        /// How many uids the namespace maps.
        uids: u64,
    },
    /// A non-root user that rbuild made root of a user namespace of its own.
    Rootless {
        /// The user's host uid (namespace uid 0).
        uid: u32,
        /// The user's host gid (namespace gid 0).
        gid: u32,
        /// The subordinate uids mapped to 1..; `None`: a single-id mapping.
        subuids: Option<IdRange>,
        /// The subordinate gids mapped to 1..; `None`: a single-id mapping.
        subgids: Option<IdRange>,
    },
    /// A non-root user that stayed so ([`enter_rootless`] was not called, or
    /// `RBUILD_ROOTLESS=0`): RUN steps are refused.
    User {
        /// The uid.
        uid: u32,
    },
}

impl Privilege {
    /// What this process is now, without changing anything.
    pub fn current() -> Privilege {
        if let Some(p) = ENTERED.get() {
            return p.clone();
        }
        let euid = rustix::process::geteuid();
        if FAILED.get().is_some() {
            return Privilege::User {
                uid: original_ids().0,
            };
        }
        if !euid.is_root() {
            return Privilege::User { uid: euid.as_raw() };
        }
        match mapped_ids(Path::new("/proc/self/uid_map")) {
            Some(n) if n < u64::from(u32::MAX) => Privilege::NamespaceRoot { uids: n },
            _ => Privilege::Root,
        }
    }

    /// Whether this process is in a user namespace other than the host's: overlayfs must
    /// then be mounted with `userxattr` and its metadata is in `user.overlay.*`.
    pub fn in_user_namespace(&self) -> bool {
        matches!(
            self,
            Privilege::NamespaceRoot { .. } | Privilege::Rootless { .. }
        )
    }

    /// Whether only one uid exists (a single-id mapping): files cannot be given to other
    /// owners, layers are unpacked root-owned.
    pub fn single_id(&self) -> bool {
        match self {
            Privilege::Rootless {
                subuids, subgids, ..
            } => subuids.is_none() || subgids.is_none(),
            Privilege::NamespaceRoot { uids } => *uids <= 1,
            _ => false,
        }
    }

    /// The mode's name: `root`, `rootless` or `user`.
    pub fn name(&self) -> &'static str {
        match self {
            Privilege::Root => "root",
            Privilege::NamespaceRoot { .. } => "userns-root",
            Privilege::Rootless { .. } => "rootless",
            Privilege::User { .. } => "user",
        }
    }

    /// One line for progress output: the mode and why.
    pub fn describe(&self) -> String {
        match self {
            Privilege::Root => "root".into(),
            Privilege::NamespaceRoot { uids } => {
                format!("root of an existing user namespace ({uids} uids mapped)")
            }
            Privilege::Rootless {
                uid,
                subuids: Some(u),
                subgids: Some(g),
                ..
            } => format!(
                "rootless (uid {uid}; user namespace: 0 -> {uid}, 1..{} -> subuids {}.., subgids {}..)",
                u.count.min(g.count),
                u.start,
                g.start
            ),
            Privilege::Rootless { uid, .. } => format!(
                "rootless, SINGLE-ID MAPPING (uid {uid} only: no /etc/subuid+/etc/subgid range or no newuidmap/newgidmap): every file in the image will be owned by root"
            ),
            Privilege::User { uid } => format!("non-root user {uid} without a user namespace"),
        }
    }
}

static ENTERED: OnceLock<Privilege> = OnceLock::new();
/// Why [`enter_rootless`] failed, for [`HostReport`](super::HostReport).
static FAILED: OnceLock<String> = OnceLock::new();
/// The real uid and gid before [`enter_rootless`] (a failed mapping leaves the process in
/// a namespace where it shows as `nobody`).
static ORIGINAL: OnceLock<(u32, u32)> = OnceLock::new();

/// The real uid and gid this process started with.
pub(crate) fn original_ids() -> (u32, u32) {
    ORIGINAL.get().copied().unwrap_or_else(|| {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    })
}

/// Why [`enter_rootless`] failed in this process, if it did.
pub(crate) fn rootless_failure() -> Option<&'static str> {
    FAILED.get().map(String::as_str)
}

/// Environment variable: `0` keeps a non-root process as it is (no user namespace).
pub const ROOTLESS_ENV: &str = "RBUILD_ROOTLESS";

/// Makes a non-root process root of a user namespace of its own (see the module docs) and
/// returns the [`Privilege`] it builds with; as root, or with `RBUILD_ROOTLESS=0`, it
/// changes nothing. Call it once, first thing in `main` after
/// [`maybe_run_init`](super::maybe_run_init), before any thread or async runtime starts.
///
/// ```no_run
/// fn main() {
///     rbuild_sandbox::maybe_run_init();
///     let privilege = rbuild_sandbox::enter_rootless().expect("user namespace");
///     eprintln!("building as {}", privilege.describe());
/// }
/// ```
#[allow(clippy::needless_doctest_main)] // main is the point of the example
pub fn enter_rootless() -> Result<Privilege, SandboxError> {
    enter_rootless_inner().inspect_err(|e| {
        let _ = FAILED.set(e.to_string());
    })
}

fn enter_rootless_inner() -> Result<Privilege, SandboxError> {
    if let Some(p) = ENTERED.get() {
        return Ok(p.clone());
    }
    let _ = ORIGINAL.set((
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    ));
    let current = Privilege::current();
    let Privilege::User { uid } = current else {
        return Ok(current);
    };
    if std::env::var_os(ROOTLESS_ENV).as_deref() == Some(OsStr::new("0")) {
        return Ok(current);
    }
    let gid = rustix::process::getegid().as_raw();
    let name = user_name(uid);
    let subuids = find_range(Path::new("/etc/subuid"), name.as_deref(), uid);
    let subgids = find_range(Path::new("/etc/subgid"), name.as_deref(), gid);
    let tools = (find_in_path("newuidmap"), find_in_path("newgidmap"));
    let p = match (subuids, subgids, tools) {
        (Some(u), Some(g), (Some(nu), Some(ng))) => {
            enter_mapped(uid, gid, u, g, &nu, &ng)?;
            Privilege::Rootless {
                uid,
                gid,
                subuids: Some(u),
                subgids: Some(g),
            }
        }
        _ => {
            enter_single(uid, gid)?;
            Privilege::Rootless {
                uid,
                gid,
                subuids: None,
                subgids: None,
            }
        }
    };
    become_root()?;
    let _ = ENTERED.set(p.clone());
    Ok(p)
}

fn err(step: &str, reason: impl Into<String>) -> SandboxError {
    SandboxError::Rootless {
        step: step.into(),
        reason: reason.into(),
    }
}

fn enter_mapped(
    uid: u32,
    gid: u32,
    u: IdRange,
    g: IdRange,
    newuidmap: &Path,
    newgidmap: &Path,
) -> Result<(), SandboxError> {
    if !crate::init::init_hook_installed() {
        return Err(SandboxError::InitHookMissing);
    }
    let exe = std::env::current_exe().map_err(|e| err("find this executable", e.to_string()))?;
    let pid = rustix::process::getpid().as_raw_nonzero().get().to_string();
    let mut helper = Command::new(exe)
        .arg(MAP_HELPER_MARKER)
        .arg(&pid)
        .arg(newuidmap)
        .args(["0", &uid.to_string(), "1", "1"])
        .args([u.start.to_string(), u.count.to_string()])
        .arg(newgidmap)
        .args(["0", &gid.to_string(), "1", "1"])
        .args([g.start.to_string(), g.count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err("start the id-mapping helper", e.to_string()))?;
    let mut go = helper.stdin.take().expect("piped stdin");
    let unshared = sys::unshare(UnshareFlags::NEWUSER);
    if unshared.is_ok() {
        // The helper maps this process's namespace when it reads the byte; EOF tells it
        // to give up.
        let _ = go.write_all(b"m");
    }
    drop(go);
    let out = helper
        .wait_with_output()
        .map_err(|e| err("wait for the id-mapping helper", e.to_string()))?;
    unshared.map_err(|e| err("unshare(CLONE_NEWUSER)", e.to_string()))?;
    if !out.status.success() {
        return Err(err(
            "newuidmap/newgidmap",
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

fn enter_single(uid: u32, gid: u32) -> Result<(), SandboxError> {
    sys::unshare(UnshareFlags::NEWUSER)
        .map_err(|e| err("unshare(CLONE_NEWUSER)", e.to_string()))?;
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| err(&format!("write {path}"), e.to_string()))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

fn become_root() -> Result<(), SandboxError> {
    let root_g = Gid::from_raw(0);
    let root_u = Uid::from_raw(0);
    rustix::thread::set_thread_res_gid(root_g, root_g, root_g)
        .map_err(|e| err("setresgid(0)", e.to_string()))?;
    // Denied with a single-id mapping (setgroups is "deny"); the groups are unmapped then.
    let _ = rustix::thread::set_thread_groups(&[]);
    rustix::thread::set_thread_res_uid(root_u, root_u, root_u)
        .map_err(|e| err("setresuid(0)", e.to_string()))
}

/// The mapping helper's `main`: waits for the byte, runs newuidmap then newgidmap.
/// Arguments: PID NEWUIDMAP 6×ARG NEWGIDMAP 6×ARG.
pub(crate) fn map_helper_main(args: Vec<std::ffi::OsString>) -> i32 {
    if args.len() != 15 {
        eprintln!("{MAP_HELPER_MARKER}: expected 15 arguments");
        return 2;
    }
    let mut b = [0u8; 1];
    if !matches!(io::stdin().read(&mut b), Ok(1)) {
        return 1;
    }
    for cmd in [&args[1..8], &args[8..15]] {
        let status = Command::new(&cmd[0])
            .arg(&args[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("{} failed: {s}", Path::new(&cmd[0]).display());
                return 1;
            }
            Err(e) => {
                eprintln!("{}: {e}", Path::new(&cmd[0]).display());
                return 1;
            }
        }
    }
    0
}

/// The number of ids a `/proc/PID/uid_map` maps.
fn mapped_ids(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .sum(),
    )
}

pub(crate) fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _ = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The first `NAME:START:COUNT` line of a subordinate-id file naming the user (by name
/// or by number).
pub(crate) fn find_range(path: &Path, name: Option<&str>, id: u32) -> Option<IdRange> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_ranges(&text, name, id)
}

fn parse_ranges(text: &str, name: Option<&str>, id: u32) -> Option<IdRange> {
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if Some(who) != name && who != id {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some(IdRange { start, count })
    })
}

pub(crate) fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_number() {
        let text = "other:1:5\nalice:100000:65536\n1001:200000:10\n";
        assert_eq!(
            parse_ranges(text, Some("alice"), 5),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_ranges(text, Some("bob"), 1001),
            Some(IdRange {
                start: 200000,
                count: 10
            })
        );
        assert_eq!(parse_ranges(text, Some("bob"), 7), None);
        assert_eq!(parse_ranges("bob:1:0\n", Some("bob"), 7), None);
    }

    #[test]
    fn the_host_namespace_maps_every_id() {
        let n = mapped_ids(Path::new("/proc/self/uid_map")).expect("uid_map");
        assert!(n >= 1);
    }
}
