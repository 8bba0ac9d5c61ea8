//! What the host allows: the facts behind the privilege and sandbox modes (`rbuild info`).
//!
//! [`HostReport::probe`] reads the kernel's switches for user namespaces, looks for
//! `newuidmap`/`newgidmap` and how they get their privilege, reads the subordinate id
//! ranges, the seccomp state and the capabilities of this process, and runs the sandbox's
//! own probe (namespaces, the new mount API, `/proc`, overlayfs with whiteouts). From those
//! it says, for each of the issue's modes (root, rootless, unprivileged), whether it is
//! usable here and, when not, why.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::userns::{find_in_path, find_range, rootless_failure, user_name};
use super::{Capabilities, Mode, ModeRequest, Privilege, Sandbox};

/// One fact about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HostCheck {
    /// What was checked (`user namespaces`, `newuidmap`, `overlayfs`...).
    pub name: &'static str,
    /// Whether it allows what rbuild wants of it.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Whether one of the build modes can be used here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ModeStatus {
    /// `root`, `rootless` or `unprivileged`.
    pub name: &'static str,
    /// Whether this process could build in that mode.
    pub available: bool,
    /// Whether this process builds in that mode now.
    pub in_use: bool,
    /// What the mode needs and what the host gives (why it is unavailable, when it is).
    pub why: String,
}

/// What the host allows, and the mode a build would use. Made by [`HostReport::probe`].
///
/// ```no_run
/// rbuild_sandbox::maybe_run_init();
/// let _ = rbuild_sandbox::enter_rootless(); // a failure is part of the report
/// let report = rbuild_sandbox::HostReport::probe("/var/tmp".as_ref());
/// print!("{}", report.render());
/// for m in &report.modes {
///     println!("{}: {}", m.name, if m.available { "available" } else { "unavailable" });
/// }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HostReport {
    /// The privilege mode's name ([`Privilege::name`]).
    pub privilege: &'static str,
    /// The privilege in words ([`Privilege::describe`]).
    pub privilege_detail: String,
    /// The kernel release.
    pub kernel: String,
    /// The facts, in the order they are printed.
    pub checks: Vec<HostCheck>,
    /// The sandbox mode a build would use (`namespaces+overlayfs`, `chroot (...)`), or why
    /// the probe failed.
    pub sandbox: String,
    /// The issue's three modes, and which is in use.
    pub modes: Vec<ModeStatus>,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> HostCheck {
    HostCheck {
        name,
        ok,
        detail: detail.into(),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// A `Name:\tvalue` line of `/proc/self/status`.
fn status_field(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_owned())
    })
}

/// Whether bit `cap` is set in a hexadecimal capability mask.
fn has_cap(mask: Option<&str>, cap: u32) -> bool {
    mask.and_then(|m| u64::from_str_radix(m, 16).ok())
        .is_some_and(|m| m & (1u64 << cap) != 0)
}

const CAP_SETUID: u32 = 7;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_ADMIN: u32 = 21;

/// How a `newuidmap` binary gets its privilege.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MapTool {
    Missing,
    /// Setuid root: it keeps euid 0, so it needs CAP_SYS_ADMIN (absent in a container).
    SetuidRoot(PathBuf),
    /// File capabilities (`setcap cap_setuid=ep`): works without CAP_SYS_ADMIN.
    FileCaps(PathBuf),
    /// Neither: it cannot map other ids.
    Plain(PathBuf),
}

fn map_tool(name: &str) -> MapTool {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = find_in_path(name) else {
        return MapTool::Missing;
    };
    let meta = std::fs::metadata(&path).ok();
    let mut buf = [0u8; 64];
    let caps = rustix::fs::getxattr(&path, "security.capability", &mut buf).is_ok_and(|n| n > 0);
    match meta {
        Some(m) if m.mode() & 0o4000 != 0 && m.uid() == 0 => MapTool::SetuidRoot(path),
        _ if caps => MapTool::FileCaps(path),
        _ => MapTool::Plain(path),
    }
}

impl MapTool {
    fn check(&self, name: &'static str, bounding_admin: bool) -> HostCheck {
        match self {
            MapTool::Missing => check(
                name,
                false,
                "not found in PATH (Debian: apt-get install uidmap)",
            ),
            MapTool::SetuidRoot(p) if !bounding_admin => check(
                name,
                false,
                format!(
                    "{} is setuid root, but this process may never hold CAP_SYS_ADMIN (a \
                     container): a setuid-root {name} keeps euid 0 and the kernel refuses its \
                     write to uid_map; give it file capabilities instead (chmod u-s; setcap \
                     cap_set{}id=ep)",
                    p.display(),
                    if name == "newuidmap" { "u" } else { "g" }
                ),
            ),
            MapTool::SetuidRoot(p) => check(name, true, format!("{} (setuid root)", p.display())),
            MapTool::FileCaps(p) => {
                check(name, true, format!("{} (file capabilities)", p.display()))
            }
            MapTool::Plain(p) => check(
                name,
                false,
                format!(
                    "{} is neither setuid root nor has file capabilities",
                    p.display()
                ),
            ),
        }
    }
}

/// The kernel's switches for user namespaces a non-root user may create.
fn userns_switches() -> (bool, String) {
    let mut notes = Vec::new();
    let mut ok = true;
    match read_trim("/proc/sys/user/max_user_namespaces").as_deref() {
        Some("0") => {
            ok = false;
            notes.push("user.max_user_namespaces=0 (disabled)".to_owned());
        }
        Some(n) => notes.push(format!("user.max_user_namespaces={n}")),
        None => notes.push("no /proc/sys/user/max_user_namespaces".to_owned()),
    }
    if let Some(v) = read_trim("/proc/sys/kernel/unprivileged_userns_clone") {
        if v == "0" {
            ok = false;
        }
        notes.push(format!("kernel.unprivileged_userns_clone={v}"));
    }
    if let Some(v) = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        if v == "1" {
            ok = false;
        }
        notes.push(format!("kernel.apparmor_restrict_unprivileged_userns={v}"));
    }
    (ok, notes.join(", "))
}

impl HostReport {
    /// Probes the host. `probe_dir` is where the sandbox probe may make a scratch directory
    /// (it should be on the cache's file system: overlayfs is tried with an upper there).
    /// Call [`enter_rootless`](crate::enter_rootless) first, as a build would: its outcome
    /// (the mapping, or why it failed) is part of the report.
    pub fn probe(probe_dir: &Path) -> HostReport {
        let privilege = Privilege::current();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let cap_eff = status_field(&status, "CapEff");
        let cap_bnd = status_field(&status, "CapBnd");
        let bounding_admin = has_cap(cap_bnd.as_deref(), CAP_SYS_ADMIN);
        let mut checks = Vec::new();

        let (switches_ok, switches) = userns_switches();
        let userns = match (&privilege, rootless_failure()) {
            (Privilege::Rootless { .. }, _) => check(
                "user namespaces",
                true,
                format!("created by rbuild ({switches})"),
            ),
            (Privilege::NamespaceRoot { uids }, _) => check(
                "user namespaces",
                true,
                format!("rbuild runs in one already ({uids} uids mapped)"),
            ),
            (_, Some(e)) => check("user namespaces", false, format!("{e} ({switches})")),
            _ => check("user namespaces", switches_ok, switches),
        };
        checks.push(userns);

        let uidmap = map_tool("newuidmap");
        let gidmap = map_tool("newgidmap");
        let mapped = matches!(
            privilege,
            Privilege::Rootless {
                subuids: Some(_),
                ..
            }
        );
        for (tool, name) in [(&uidmap, "newuidmap"), (&gidmap, "newgidmap")] {
            checks.push(match tool {
                // Seen from inside the namespace, host root's files belong to `nobody`.
                MapTool::SetuidRoot(p) | MapTool::FileCaps(p) | MapTool::Plain(p) if mapped => {
                    check(
                        name,
                        true,
                        format!("{}: mapped this user namespace", p.display()),
                    )
                }
                _ => tool.check(name, bounding_admin),
            });
        }

        let (uid, gid) = match &privilege {
            Privilege::Rootless { uid, gid, .. } => (*uid, *gid),
            _ => super::userns::original_ids(),
        };
        let name = user_name(uid);
        let who = name.clone().unwrap_or_else(|| uid.to_string());
        let subuid = find_range(Path::new("/etc/subuid"), name.as_deref(), uid);
        let subgid = find_range(Path::new("/etc/subgid"), name.as_deref(), gid);
        let ranges_ok = subuid.is_some() && subgid.is_some();
        let show = |r: Option<super::IdRange>| {
            r.map_or("none".to_owned(), |r| format!("{}..+{}", r.start, r.count))
        };
        checks.push(check(
            "subordinate ids",
            ranges_ok || matches!(privilege, Privilege::Root),
            format!(
                "{who}: /etc/subuid {}, /etc/subgid {}{}",
                show(subuid),
                show(subgid),
                if matches!(privilege, Privilege::Root) {
                    " (not needed as root)"
                } else if ranges_ok {
                    ""
                } else {
                    " (without both, a single-id mapping: every file root-owned)"
                }
            ),
        ));

        let sandbox = Sandbox::detect_with(probe_dir, ModeRequest::Auto);
        let caps: Option<Capabilities> = sandbox.as_ref().ok().map(|s| s.capabilities().clone());
        let reason = caps
            .as_ref()
            .and_then(|c| c.reason.clone())
            .unwrap_or_default();
        let namespaces = caps.as_ref().is_some_and(|c| c.namespaces);
        let overlay = caps.as_ref().is_some_and(|c| c.overlay);
        checks.push(check(
            "namespaces and mounts",
            namespaces,
            if namespaces {
                "mount, PID, IPC, UTS and network namespaces; proc, tmpfs, mount_setattr, openat2"
                    .to_owned()
            } else {
                explain_probe(&reason)
            },
        ));
        checks.push(check(
            "overlayfs",
            overlay,
            if overlay {
                format!(
                    "mounts with whiteouts{}",
                    if privilege.in_user_namespace() {
                        " (userxattr, in the user namespace)"
                    } else {
                        ""
                    }
                )
            } else if namespaces {
                reason.clone()
            } else {
                "not tried (no mount namespace)".to_owned()
            },
        ));
        let seccomp = status_field(&status, "Seccomp").unwrap_or_default();
        let nnp = status_field(&status, "NoNewPrivs").unwrap_or_default();
        checks.push(check(
            "seccomp",
            true,
            format!(
                "{} (NoNewPrivs {nnp}); rbuild adds its own filter to every step{}",
                match seccomp.as_str() {
                    "0" => "this process is not filtered",
                    "2" => "this process runs under a filter (a container's profile)",
                    "1" => "strict mode",
                    _ => "unknown",
                },
                if has_cap(cap_eff.as_deref(), CAP_SYS_ADMIN) {
                    ""
                } else {
                    " (with no_new_privs: setuid programs do not raise privileges in steps)"
                }
            ),
        ));
        checks.push(check(
            "capabilities",
            has_cap(cap_eff.as_deref(), CAP_SYS_CHROOT),
            format!(
                "CAP_SYS_ADMIN {}, CAP_SETUID {}, CAP_SYS_CHROOT {} (effective, in rbuild's user \
                 namespace)",
                yes_no(has_cap(cap_eff.as_deref(), CAP_SYS_ADMIN)),
                yes_no(has_cap(cap_eff.as_deref(), CAP_SETUID)),
                yes_no(has_cap(cap_eff.as_deref(), CAP_SYS_CHROOT)),
            ),
        ));

        let sandbox_text = match &sandbox {
            Ok(s) => s.capabilities().describe(),
            Err(e) => format!("probe failed: {e}"),
        };
        let modes = modes(
            &privilege,
            caps.as_ref(),
            &reason,
            &checks,
            (&uidmap, &gidmap),
            ranges_ok,
        );
        HostReport {
            privilege: privilege.name(),
            privilege_detail: privilege.describe(),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            checks,
            sandbox: sandbox_text,
            modes,
        }
    }

    /// The report as text, one line per fact and per mode.
    pub fn render(&self) -> String {
        let mut s = format!(
            "privilege: {}\nkernel: {}\nsandbox: {}\n\nhost:\n",
            self.privilege_detail, self.kernel, self.sandbox
        );
        for c in &self.checks {
            s.push_str(&format!(
                "  [{}] {}: {}\n",
                if c.ok { "ok" } else { "no" },
                c.name,
                c.detail
            ));
        }
        s.push_str("\nmodes:\n");
        for m in &self.modes {
            s.push_str(&format!(
                "  {:<13} {}: {}\n",
                m.name,
                match (m.available, m.in_use) {
                    (_, true) => "IN USE",
                    (true, false) => "available",
                    (false, false) => "unavailable",
                },
                m.why
            ));
        }
        s
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The sandbox probe's failure, with what usually causes it.
fn explain_probe(reason: &str) -> String {
    let hint = if reason.contains("unshare") {
        " (no CAP_SYS_ADMIN and no user namespace: a container with the default seccomp \
         profile; steps run chroot-style)"
    } else if reason.contains("mount proc") {
        " (a user namespace may mount /proc only where a fully visible /proc exists: the \
         container masks parts of it; docker run --security-opt systempaths=unconfined lifts \
         that; steps run chroot-style meanwhile)"
    } else {
        ""
    };
    format!("{reason}{hint}")
}

fn modes(
    privilege: &Privilege,
    caps: Option<&Capabilities>,
    reason: &str,
    checks: &[HostCheck],
    tools: (&MapTool, &MapTool),
    ranges_ok: bool,
) -> Vec<ModeStatus> {
    let full = caps.is_some_and(|c| c.mode == Mode::Overlay);
    let chroot = caps.is_some_and(|c| c.mode == Mode::Chroot);
    let is_root = matches!(privilege, Privilege::Root);
    let root_why = if !is_root {
        format!(
            "needs root in the host's user namespace; this process is {}",
            privilege.name()
        )
    } else if full {
        "root with namespaces and overlayfs".to_owned()
    } else {
        format!("root, but {}", explain_probe(reason))
    };
    let tools_ok = checks
        .iter()
        .filter(|c| c.name == "newuidmap" || c.name == "newgidmap")
        .all(|c| c.ok);
    let rootless_why = match privilege {
        Privilege::Rootless { .. } if full => privilege.describe(),
        Privilege::Rootless { .. } => format!(
            "{}; but the sandbox falls back to chroot: {}",
            privilege.describe(),
            explain_probe(reason)
        ),
        Privilege::NamespaceRoot { .. } => {
            "rbuild runs as root of an existing user namespace (no mapping of its own needed)"
                .to_owned()
        }
        Privilege::User { .. } => {
            let failure = rootless_failure().map_or_else(
                || "not tried (RBUILD_ROOTLESS=0)".to_owned(),
                ToOwned::to_owned,
            );
            format!("this non-root user could not enter a user namespace: {failure}")
        }
        _ => {
            let mut needs = Vec::new();
            if !tools_ok {
                needs.push(format!(
                    "usable newuidmap/newgidmap ({})",
                    [tools.0, tools.1]
                        .iter()
                        .map(|t| format!("{t:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !checks.first().is_some_and(|c| c.ok) {
                needs.push("user namespaces enabled for non-root users".into());
            }
            if needs.is_empty() {
                "for a non-root user with /etc/subuid and /etc/subgid ranges (this process is \
                 root: run rbuild as that user)"
                    .to_owned()
            } else {
                format!("a non-root user would need: {}", needs.join("; "))
            }
        }
    };
    let rootless_available = match privilege {
        Privilege::Rootless { .. } | Privilege::NamespaceRoot { .. } => true,
        Privilege::User { .. } => false,
        _ => tools_ok && checks.first().is_some_and(|c| c.ok),
    };
    let chroot_ok = caps.is_some();
    let unprivileged_why = if chroot {
        format!("in use: {}", explain_probe(reason))
    } else if chroot_ok {
        "the fallback where namespaces or overlayfs are refused (RBUILD_SANDBOX=chroot forces it): \
         a copy of the layers, chroot, a walking differ; weaker isolation"
            .to_owned()
    } else {
        "the sandbox probe failed".to_owned()
    };
    let single = privilege.single_id() && !ranges_ok;
    vec![
        ModeStatus {
            name: "root",
            available: is_root && full,
            in_use: is_root && full,
            why: root_why,
        },
        ModeStatus {
            name: "rootless",
            available: rootless_available,
            in_use: privilege.in_user_namespace() && full,
            why: if single {
                format!("{rootless_why} (single-id mapping)")
            } else {
                rootless_why
            },
        },
        ModeStatus {
            name: "unprivileged",
            available: chroot_ok && !matches!(privilege, Privilege::User { .. }),
            in_use: chroot,
            why: unprivileged_why,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_masks() {
        assert!(has_cap(Some("00000000a80425fb"), CAP_SETUID));
        assert!(has_cap(Some("00000000a80425fb"), CAP_SYS_CHROOT));
        assert!(!has_cap(Some("00000000a80425fb"), CAP_SYS_ADMIN));
        assert!(has_cap(Some("000001ffffffffff"), CAP_SYS_ADMIN));
        assert!(!has_cap(None, CAP_SYS_ADMIN));
        assert!(!has_cap(Some("zz"), CAP_SYS_ADMIN));
    }

    #[test]
    fn status_fields() {
        let s = "Name:\trbuild\nSeccomp:\t2\nNoNewPrivs:\t0\n";
        assert_eq!(status_field(s, "Seccomp").as_deref(), Some("2"));
        assert_eq!(status_field(s, "Missing"), None);
    }

    #[test]
    fn probe_failures_are_explained() {
        assert!(explain_probe("cannot create namespaces: unshare: EPERM").contains("seccomp"));
        assert!(explain_probe("mount proc (fsopen): EPERM").contains("systempaths=unconfined"));
    }
}
