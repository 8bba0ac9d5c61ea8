//! The calls the init's namespaced setup makes, behind a [`Syscall`] trait so that their
//! order is unit-tested without root (as youki's `Syscall`): [`LinuxSyscall`] makes them;
//! the tests record them.

use super::*;

/// The order of B's setup, through `sys` (the unit tests record it): mounts private, the
/// root, `nodev` on it, the system mounts (without /dev/shm when the step mounts its own),
/// the step's mounts in the plan's order, the hostname, `lo`, then `pivot_root`.
pub(crate) fn setup_root_with<S: Syscall>(sys: &S, plan: &InitPlan) -> Result<(), Fail> {
    sys.make_mounts_private()?;
    let mountpoint = match &plan.root {
        InitRoot::Overlay {
            lowers,
            upper,
            work,
            mountpoint,
        } => {
            sys.mount_overlay(
                lowers,
                Some(&(upper.clone(), work.clone())),
                mountpoint,
                false,
            )?;
            mountpoint
        }
        InitRoot::Bind { dir, mountpoint } => {
            sys.bind_root(dir, mountpoint)?;
            mountpoint
        }
        InitRoot::Chroot { dir } => {
            return Err(fail(
                "prepare root",
                Some(dir),
                io::Error::other("chroot root with namespaces"),
            ));
        }
    };
    let root = sys.open_root(mountpoint)?;
    // Device nodes in the root cannot be opened (`nodev`): a step keeps CAP_MKNOD, as in
    // BuildKit, so that packages can create nodes, but without a device cgroup nothing else
    // would stop it from making `/dev/sda`'s node and writing the host's disk. The devices
    // a step may use are the host's own nodes bound into /dev (their own mounts).
    if !plan.insecure {
        sys.make_nodev(&root, mountpoint)?;
    }
    // The system mounts first: a step's mounts may go below /dev (heredoc files).
    // A step's own mount on /dev/shm replaces the default one (BuildKit's runtime lists one).
    let own_shm = plan
        .mounts
        .iter()
        .any(|m| m.target.trim_matches('/') == "dev/shm");
    sys.mount_system(&root, plan.insecure, !own_shm, plan.limits.shm_size)?;
    for m in &plan.mounts {
        sys.mount(&root, m, plan.insecure)?;
    }
    if let Some(h) = &plan.hostname {
        sys.set_hostname(h)?;
    }
    if plan.network_none {
        sys.loopback_up()?;
    }
    sys.pivot_root(&root, mountpoint)
}

/// The calls B's setup makes, so that their order is testable without root (as youki's
/// `Syscall`): [`LinuxSyscall`] makes them, the unit tests record them.
pub(crate) trait Syscall {
    /// An open directory of the new root.
    type Dir;
    /// Makes every mount of the new namespace private (nothing propagates to the host).
    fn make_mounts_private(&self) -> Result<(), Fail>;
    /// Mounts overlayfs of `lowers` (with an upper and work directory) at `mountpoint`.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper_work: Option<&(PathBuf, PathBuf)>,
        mountpoint: &Path,
        readonly: bool,
    ) -> Result<(), Fail>;
    /// Binds the directory root `dir` at `mountpoint`.
    fn bind_root(&self, dir: &Path, mountpoint: &Path) -> Result<(), Fail>;
    /// Opens the mounted root.
    fn open_root(&self, mountpoint: &Path) -> Result<Self::Dir, Fail>;
    /// Makes the root's mount `nodev`.
    fn make_nodev(&self, root: &Self::Dir, mountpoint: &Path) -> Result<(), Fail>;
    /// /proc, /dev (and /dev/shm when `shm`), /sys, the masked and read-only paths.
    fn mount_system(
        &self,
        root: &Self::Dir,
        insecure: bool,
        shm: bool,
        shm_size: Option<u64>,
    ) -> Result<(), Fail>;
    /// One of the step's mounts.
    fn mount(&self, root: &Self::Dir, m: &InitMount, insecure: bool) -> Result<(), Fail>;
    /// Sets the UTS namespace's hostname.
    fn set_hostname(&self, name: &str) -> Result<(), Fail>;
    /// Brings `lo` up in a new network namespace.
    fn loopback_up(&self) -> Result<(), Fail>;
    /// Makes the root `/` and detaches the old one.
    fn pivot_root(&self, root: &Self::Dir, mountpoint: &Path) -> Result<(), Fail>;
}

/// The real calls.
pub(crate) struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    type Dir = OwnedFd;

    fn make_mounts_private(&self) -> Result<(), Fail> {
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        )
        .map_err(|e| fail("make mounts private", Some(Path::new("/")), e))
    }

    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper_work: Option<&(PathBuf, PathBuf)>,
        mountpoint: &Path,
        readonly: bool,
    ) -> Result<(), Fail> {
        mount_overlay(lowers, upper_work, mountpoint, readonly)
    }

    fn bind_root(&self, dir: &Path, mountpoint: &Path) -> Result<(), Fail> {
        rustix::mount::mount_bind(dir, mountpoint).map_err(|e| fail("bind root", Some(dir), e))
    }

    fn open_root(&self, mountpoint: &Path) -> Result<OwnedFd, Fail> {
        open_dir_path(mountpoint)
    }

    fn make_nodev(&self, root: &OwnedFd, mountpoint: &Path) -> Result<(), Fail> {
        sys::mount_setattr(
            root,
            MountAttrFlags::MOUNT_ATTR_NODEV,
            MountAttrFlags::empty(),
            false,
        )
        .map_err(|e| fail("make root nodev", Some(mountpoint), e))
    }

    fn mount_system(
        &self,
        root: &OwnedFd,
        insecure: bool,
        shm: bool,
        shm_size: Option<u64>,
    ) -> Result<(), Fail> {
        mount_system(root, insecure, shm, shm_size)
    }

    fn mount(&self, root: &OwnedFd, m: &InitMount, insecure: bool) -> Result<(), Fail> {
        mount_one(root, m, insecure)
    }

    fn set_hostname(&self, name: &str) -> Result<(), Fail> {
        rustix::system::sethostname(name.as_bytes()).map_err(|e| fail("sethostname", None, e))
    }

    fn loopback_up(&self) -> Result<(), Fail> {
        sys::loopback_up().map_err(|e| fail("bring lo up", None, e))
    }

    fn pivot_root(&self, root: &OwnedFd, mountpoint: &Path) -> Result<(), Fail> {
        rustix::process::fchdir(root).map_err(|e| fail("chdir", Some(mountpoint), e))?;
        rustix::process::pivot_root(".", ".")
            .map_err(|e| fail("pivot_root", Some(mountpoint), e))?;
        rustix::mount::unmount(".", UnmountFlags::DETACH)
            .map_err(|e| fail("detach the old root", None, e))?;
        rustix::process::chdir("/").map_err(|e| fail("chdir", Some(Path::new("/")), e))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records the calls; fails the mount of `fail_at`.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
        fail_at: Option<&'static str>,
    }

    impl Recorder {
        fn note(&self, call: String) {
            self.calls.borrow_mut().push(call);
        }
    }

    impl Syscall for Recorder {
        type Dir = PathBuf;

        fn make_mounts_private(&self) -> Result<(), Fail> {
            self.note("private".into());
            Ok(())
        }

        fn mount_overlay(
            &self,
            lowers: &[PathBuf],
            upper_work: Option<&(PathBuf, PathBuf)>,
            mountpoint: &Path,
            readonly: bool,
        ) -> Result<(), Fail> {
            self.note(format!(
                "overlay {} lowers={} upper={} ro={readonly}",
                mountpoint.display(),
                lowers.len(),
                upper_work.is_some()
            ));
            Ok(())
        }

        fn bind_root(&self, dir: &Path, mountpoint: &Path) -> Result<(), Fail> {
            self.note(format!("bind {} {}", dir.display(), mountpoint.display()));
            Ok(())
        }

        fn open_root(&self, mountpoint: &Path) -> Result<PathBuf, Fail> {
            self.note(format!("open {}", mountpoint.display()));
            Ok(mountpoint.to_owned())
        }

        fn make_nodev(&self, root: &PathBuf, _: &Path) -> Result<(), Fail> {
            self.note(format!("nodev {}", root.display()));
            Ok(())
        }

        fn mount_system(
            &self,
            _: &PathBuf,
            insecure: bool,
            shm: bool,
            shm_size: Option<u64>,
        ) -> Result<(), Fail> {
            self.note(format!(
                "system insecure={insecure} shm={shm} size={shm_size:?}"
            ));
            Ok(())
        }

        fn mount(&self, _: &PathBuf, m: &InitMount, insecure: bool) -> Result<(), Fail> {
            if self.fail_at == Some(m.target.as_str()) {
                return Err(fail(
                    "mount",
                    Some(Path::new(&m.target)),
                    io::Error::from_raw_os_error(1),
                ));
            }
            self.note(format!("mount {} insecure={insecure}", m.target));
            Ok(())
        }

        fn set_hostname(&self, name: &str) -> Result<(), Fail> {
            self.note(format!("hostname {name}"));
            Ok(())
        }

        fn loopback_up(&self) -> Result<(), Fail> {
            self.note("lo".into());
            Ok(())
        }

        fn pivot_root(&self, root: &PathBuf, _: &Path) -> Result<(), Fail> {
            self.note(format!("pivot {}", root.display()));
            Ok(())
        }
    }

    fn tmpfs(target: &str) -> InitMount {
        InitMount {
            target: target.to_owned(),
            create: None,
            kind: InitMountKind::Tmpfs {
                size: None,
                mode: 0o1777,
            },
        }
    }

    fn plan(root: InitRoot, mounts: Vec<InitMount>) -> InitPlan {
        InitPlan {
            namespaces: true,
            root,
            mounts,
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            user: crate::User::root(),
            hostname: None,
            network_none: false,
            insecure: false,
            limits: crate::RunLimits::default(),
        }
    }

    fn overlay() -> InitRoot {
        InitRoot::Overlay {
            lowers: vec!["/s/stubs".into(), "/s/l1".into()],
            upper: "/s/upper".into(),
            work: "/s/work".into(),
            mountpoint: "/s/root".into(),
        }
    }

    #[test]
    fn the_root_then_nodev_then_system_mounts_then_the_steps_then_pivot() {
        let mut p = plan(
            overlay(),
            vec![tmpfs("etc/hosts"), tmpfs("dev/shm"), tmpfs("tmp")],
        );
        p.hostname = Some("buildkitsandbox".into());
        p.network_none = true;
        let rec = Recorder::default();
        setup_root_with(&rec, &p).unwrap();
        assert_eq!(
            rec.calls.into_inner(),
            [
                "private",
                "overlay /s/root lowers=2 upper=true ro=false",
                "open /s/root",
                "nodev /s/root",
                // The step mounts its own /dev/shm: the default one is left out.
                "system insecure=false shm=false size=None",
                "mount etc/hosts insecure=false",
                "mount dev/shm insecure=false",
                "mount tmp insecure=false",
                "hostname buildkitsandbox",
                "lo",
                "pivot /s/root",
            ]
        );
    }

    #[test]
    fn an_insecure_bind_root_keeps_devices_and_gets_the_default_shm() {
        let mut p = plan(
            InitRoot::Bind {
                dir: "/s/rootfs".into(),
                mountpoint: "/s/root".into(),
            },
            vec![tmpfs("tmp")],
        );
        p.insecure = true;
        p.limits.shm_size = Some(128 << 20);
        let rec = Recorder::default();
        setup_root_with(&rec, &p).unwrap();
        assert_eq!(
            rec.calls.into_inner(),
            [
                "private",
                "bind /s/rootfs /s/root",
                "open /s/root",
                "system insecure=true shm=true size=Some(134217728)",
                "mount tmp insecure=true",
                "pivot /s/root",
            ]
        );
    }

    #[test]
    fn a_failed_mount_stops_the_setup_before_pivot() {
        let p = plan(overlay(), vec![tmpfs("a"), tmpfs("b"), tmpfs("c")]);
        let rec = Recorder {
            fail_at: Some("b"),
            ..Recorder::default()
        };
        let err = setup_root_with(&rec, &p).unwrap_err();
        assert_eq!(err.step, "mount");
        let calls = rec.calls.into_inner();
        assert_eq!(
            calls.last().map(String::as_str),
            Some("mount a insecure=false")
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("pivot") || c.contains("mount c"))
        );
    }

    #[test]
    fn a_chroot_root_is_refused_with_namespaces() {
        let p = plan(
            InitRoot::Chroot {
                dir: "/s/rootfs".into(),
            },
            Vec::new(),
        );
        let rec = Recorder::default();
        let err = setup_root_with(&rec, &p).unwrap_err();
        assert_eq!(err.step, "prepare root");
        assert_eq!(rec.calls.into_inner(), ["private"]);
    }
}
