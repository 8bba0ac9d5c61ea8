//! Turning a [`RunSpec`] into an [`InitPlan`]: the root, the mount points, the private copies
//! of resolv.conf and hosts, and what to undo afterwards.
//!
//! Mount points that the image lacks must exist before anything can be mounted on them, and
//! must never reach the diff:
//!
//! - overlay mode: they are created in a *stub layer*, an extra topmost lower directory in
//!   the scratch directory. The upper stays untouched by them; the merged view shows them, with the existing directories on their way replicated
//!   with the image's exact metadata (owner, mode, xattrs, times) so that the merge looks the
//!   same. A directory the step really writes into is copied up from that replica, as it
//!   would be from the image.
//! - directory roots (chroot mode, [`Rootfs::Dir`]): they are created in the root, recorded,
//!   and removed again after the run when they are still empty stubs; their parents' times
//!   are restored. The differ ignores every mount target in any case.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, OFlags, ResolveFlags, Timestamps};

use super::Mode;
use super::copy::{Baseline, apply_metadata, copy_leaf, materialize, timestamps};
use super::error::{IoContext, SandboxError};
use super::proto::{InitMount, InitMountKind, InitPlan, InitRoot};
use super::spec::{BindAccess, MountKind, MountSource, NetworkMode, Rootfs, RunSpec};
use crate::fsview::{LayeredView, Tail, clean_path};

/// What the run needs besides the plan.
pub(crate) struct Prepared {
    pub(crate) plan: InitPlan,
    /// Canonical relative paths the differ ignores (mount targets).
    pub(crate) excluded: BTreeSet<PathBuf>,
    /// Chroot mode over layers: the copy to diff after the run.
    pub(crate) copy: Option<CopyRoot>,
}

/// The chroot mode's copy of the layers.
pub(crate) struct CopyRoot {
    pub(crate) lowers: LayeredView,
    pub(crate) dir: PathBuf,
    pub(crate) baseline: Baseline,
    pub(crate) upper: PathBuf,
}

/// Changes made to a directory root that are reverted after the run.
///
/// The run may have replaced any directory of the root with a symlink (`mv /etc /x && ln
/// -s /etc /etc`), and a host path followed now would lead out of the root onto the host.
/// So the undo walks from the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` to
/// each parent directory and acts on the name in it; a path whose parent is no longer a
/// plain directory inside the root is left alone.
#[derive(Default)]
pub(crate) struct Undo {
    /// The directory root the paths below are in.
    root: Option<PathBuf>,
    /// Stubs we created, in creation order: (host path, is a directory).
    created: Vec<(PathBuf, bool)>,
    /// Directories whose times to restore, with their times before we touched them.
    parents: Vec<(PathBuf, Timestamps)>,
    /// Files we replaced: (saved copy, original place).
    saved: Vec<(PathBuf, PathBuf)>,
}

impl Undo {
    /// Removes the stubs (those still empty), puts saved files back, restores times.
    pub(crate) fn run(&mut self) -> Result<(), SandboxError> {
        let mut first_err = None;
        let root = self.root.take();
        let Some(root) = root else {
            return Ok(());
        };
        let root_fd = match rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => return Err(SandboxError::io("open", root, e.into())),
        };
        for (saved, place) in self.saved.drain(..).rev() {
            let Some((parent, name)) = beneath(&root_fd, &root, &place) else {
                first_err.get_or_insert(SandboxError::BadPath {
                    path: place.display().to_string(),
                    reason: "not restored: the step replaced a directory on its way with a \
                             symlink or something else"
                        .into(),
                });
                continue;
            };
            let r = (|| {
                let _ = rustix::fs::unlinkat(&parent, &name, AtFlags::empty());
                let meta = fs::symlink_metadata(&saved).at("stat", &saved)?;
                // the parent by its fd: nothing on the way is looked up again
                let at = fd_path(&parent).join(&name);
                copy_leaf(&saved, &meta, &at, &mut HashMap::new())
            })();
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        for (path, is_dir) in self.created.drain(..).rev() {
            // A stub the step filled (a directory it wrote into) stays; so does a vanished
            // one, and one whose parent is no longer a directory of the root.
            if let Some((parent, name)) = beneath(&root_fd, &root, &path) {
                let flags = if is_dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                let _ = rustix::fs::unlinkat(&parent, &name, flags);
            }
        }
        for (dir, times) in self.parents.drain(..).rev() {
            let r = match beneath(&root_fd, &root, &dir) {
                Some((parent, name)) => {
                    rustix::fs::utimensat(&parent, &name, &times, AtFlags::SYMLINK_NOFOLLOW)
                }
                // the root itself: its path is ours, not the step's
                None if dir == root => {
                    rustix::fs::utimensat(CWD, &root, &times, AtFlags::SYMLINK_NOFOLLOW)
                }
                None => Ok(()),
            };
            if let Err(e) = r {
                if e != rustix::io::Errno::NOENT {
                    first_err.get_or_insert(SandboxError::io("restore times", dir, e.into()));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The parent directory of `path` (a host path inside `root`) opened from `root_fd` without
/// following any symlink or leaving the root, and the last name; `None` when `path` is the
/// root itself, is not inside it, or its parent is no longer a directory reached that way.
fn beneath(
    root_fd: &rustix::fd::OwnedFd,
    root: &Path,
    path: &Path,
) -> Option<(rustix::fd::OwnedFd, OsString)> {
    let rel = path.strip_prefix(root).ok()?;
    let name = rel.file_name()?.to_owned();
    let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
    let fd = rustix::fs::openat2(
        root_fd,
        parent.unwrap_or(Path::new(".")),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    Some((fd, name))
}

/// `/proc/self/fd/N`: a path that names the directory `fd` is open on.
fn fd_path(fd: &rustix::fd::OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Where mount-point stubs go.
enum Stubs {
    /// The stub layer (overlay mode).
    Layer(PathBuf),
    /// Directly in a root directory (recorded in the undo list).
    Dir(PathBuf),
}

struct Planner<'a> {
    view: LayeredView,
    stubs: Stubs,
    undo: &'a mut Undo,
    /// Replicated directories of the stub layer: (stub path, source path in a layer).
    replicas: Vec<(PathBuf, PathBuf)>,
}

impl Planner<'_> {
    /// Makes sure `path` exists inside the root as a directory (`want_dir`) or a
    /// non-directory, creating stubs as needed, and returns its canonical relative path.
    fn ensure(&mut self, path: &str, want_dir: bool, follow: bool) -> Result<String, SandboxError> {
        let res = self.view.resolve_strict(path, follow)?;
        match &res.tail {
            Tail::Dir if !want_dir => {
                return Err(SandboxError::BadPath {
                    path: path.to_owned(),
                    reason: "is a directory, but a file is mounted there".into(),
                });
            }
            Tail::Other { meta, .. } if want_dir || meta.file_type().is_symlink() => {
                return Err(SandboxError::BadPath {
                    path: path.to_owned(),
                    reason: "is not a directory".into(),
                });
            }
            Tail::Dir | Tail::Other { .. } => {}
            Tail::Missing(missing) => {
                let existing: PathBuf = res.dirs.iter().map(|(n, _)| n.as_os_str()).collect();
                match &self.stubs {
                    Stubs::Layer(stub_root) => {
                        let stub_root = stub_root.clone();
                        let mut prefix = PathBuf::new();
                        for (name, layers) in &res.dirs {
                            prefix.push(name);
                            let p = stub_root.join(&prefix);
                            if !p.exists() {
                                fs::create_dir(&p).at("mkdir", &p)?;
                                self.replicas.push((p, self.view.host(layers[0], &prefix)));
                            }
                        }
                        create_missing(&stub_root.join(&existing), missing, want_dir, None)?;
                    }
                    Stubs::Dir(root) => {
                        let parent = root.join(&existing);
                        let meta = fs::symlink_metadata(&parent).at("stat", &parent)?;
                        self.undo.parents.push((parent.clone(), timestamps(&meta)));
                        create_missing(&parent, missing, want_dir, Some(&mut self.undo.created))?;
                    }
                }
            }
        }
        Ok(res.full_rel().to_string_lossy().into_owned())
    }

    /// Gives replicated stub directories the metadata of what they replicate.
    fn finish(&mut self) -> Result<(), SandboxError> {
        for (stub, src) in self.replicas.drain(..).rev() {
            let meta = fs::symlink_metadata(&src).at("stat", &src)?;
            apply_metadata(&src, &meta, &stub)?;
        }
        Ok(())
    }
}

fn create_missing(
    parent: &Path,
    missing: &[OsString],
    want_dir: bool,
    mut record: Option<&mut Vec<(PathBuf, bool)>>,
) -> Result<(), SandboxError> {
    let mut p = parent.to_path_buf();
    for (i, name) in missing.iter().enumerate() {
        p.push(name);
        let is_dir = want_dir || i + 1 < missing.len();
        if is_dir && record.is_none() && p.is_dir() {
            // The stub layer already holds this directory for an earlier mount point
            // (`/etc` for both resolv.conf and hosts on an image without `/etc`).
            continue;
        }
        if is_dir {
            fs::create_dir(&p).at("create mount point", &p)?;
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .at("create mount point", &p)?;
        }
        // Whatever the caller's umask: a step that writes into a new directory stub copies
        // it up, mode included.
        let mode = if is_dir { 0o755 } else { 0o644 };
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .at("chmod", &p)?;
        if let Some(r) = record.as_deref_mut() {
            r.push((p.clone(), is_dir));
        }
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<PathBuf, SandboxError> {
    fs::create_dir_all(p).at("mkdir", p)?;
    Ok(p.to_path_buf())
}

/// The `/etc/hosts` a RUN step sees, as BuildKit writes it (not the host's): localhost
/// with the hostname, the IPv6 localhost line, then the extra hosts.
fn hosts_file(hostname: Option<&str>, extra: &[(String, std::net::IpAddr)]) -> Vec<u8> {
    let mut text = match hostname {
        Some(h) => format!("127.0.0.1\tlocalhost {h}\n"),
        None => "127.0.0.1\tlocalhost\n".to_owned(),
    };
    text.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        text.push_str(&format!("{ip}\t{host}\n"));
    }
    text.into_bytes()
}

fn host_file(path: &str, default: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|_| default.as_bytes().to_vec())
}

/// Prepares `spec` for `mode` (with or without namespaces). What must be reverted in a
/// directory root is recorded in `undo` as it is done, so the caller can revert it even when
/// preparing fails half-way.
pub(crate) fn prepare(
    spec: &RunSpec,
    mode: Mode,
    namespaces: bool,
    undo: &mut Undo,
) -> Result<Prepared, SandboxError> {
    let scratch = &spec.scratch;
    fs::create_dir_all(scratch).at("mkdir", scratch)?;
    if fs::read_dir(scratch)
        .at("read directory", scratch)?
        .next()
        .is_some()
    {
        return Err(SandboxError::InvalidSpec {
            field: "scratch",
            reason: format!("{} is not empty", scratch.display()),
        });
    }
    if !namespaces && spec.network == NetworkMode::None {
        return Err(SandboxError::Unsupported {
            feature: "--network=none".into(),
            mode,
            reason: "this host allows no namespaces".into(),
        });
    }
    if !namespaces && !spec.mounts.is_empty() && !matches!(spec.rootfs, Rootfs::Layers { .. }) {
        return Err(SandboxError::Unsupported {
            feature: "extra mounts over a directory root".into(),
            mode,
            reason: "this host allows no namespaces, and copying the mount sources in would \
                     change the directory"
                .into(),
        });
    }
    let mut copy = None;
    let (root, view, stubs) = match (&spec.rootfs, mode) {
        (Rootfs::Layers { lowers, upper }, Mode::Overlay) => {
            check_empty_dir(upper)?;
            let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).at("stat", p);
            if dev(upper)? != dev(scratch)? {
                return Err(SandboxError::InvalidSpec {
                    field: "scratch",
                    reason: format!(
                        "{} is not on the filesystem of the upper directory {} (overlayfs needs \
                         its work directory there)",
                        scratch.display(),
                        upper.display()
                    ),
                });
            }
            let stubs = mkdir(&scratch.join("stubs"))?;
            let mut all = vec![stubs.clone()];
            all.extend(lowers.iter().cloned());
            let root = InitRoot::Overlay {
                lowers: all,
                upper: upper.clone(),
                work: mkdir(&scratch.join("work"))?,
                mountpoint: mkdir(&scratch.join("root"))?,
            };
            (root, LayeredView::new(lowers.clone()), Stubs::Layer(stubs))
        }
        (Rootfs::Layers { lowers, upper }, Mode::Chroot) => {
            check_empty_dir(upper)?;
            let dir = mkdir(&scratch.join("rootfs"))?;
            undo.root = Some(dir.clone());
            let lowers = LayeredView::new(lowers.clone());
            let baseline = materialize(&lowers, &dir)?;
            copy = Some(CopyRoot {
                lowers,
                dir: dir.clone(),
                baseline,
                upper: upper.clone(),
            });
            (
                dir_root(&dir, scratch, namespaces)?,
                LayeredView::new(vec![dir.clone()]),
                Stubs::Dir(dir),
            )
        }
        (Rootfs::Dir(dir), _) => (
            {
                undo.root = Some(dir.clone());
                dir_root(dir, scratch, namespaces)?
            },
            LayeredView::new(vec![dir.clone()]),
            Stubs::Dir(dir.clone()),
        ),
    };
    let stub_dir = match &stubs {
        Stubs::Dir(d) => Some(d.clone()),
        Stubs::Layer(_) => None,
    };
    let mut planner = Planner {
        view,
        stubs,
        undo,
        replicas: Vec::new(),
    };
    let mut excluded = BTreeSet::new();
    let mut mounts = Vec::new();

    if namespaces {
        for d in ["proc", "dev", "sys"] {
            let rel = planner.ensure(&format!("/{d}"), true, false)?;
            excluded.insert(PathBuf::from(rel));
        }
    } else if let Some(root) = &stub_dir {
        // No mounts: device nodes go into the root itself, and are removed afterwards.
        let rel = planner.ensure("/dev", true, false)?;
        excluded.insert(PathBuf::from(&rel));
        make_device_nodes(&root.join(&rel), planner.undo)?;
    }

    let hosts = hosts_file(spec.hostname.as_deref(), &spec.extra_hosts);
    for (target, content) in [
        ("/etc/resolv.conf", host_file("/etc/resolv.conf", "")),
        ("/etc/hosts", hosts),
    ] {
        let rel = planner.ensure(target, false, true)?;
        excluded.insert(PathBuf::from(&rel));
        let name = target.rsplit('/').next().unwrap_or("file");
        let src = scratch.join(format!("etc-{name}"));
        fs::write(&src, &content).at("write", &src)?;
        fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .at("chmod", &src)?;
        if namespaces {
            mounts.push(InitMount {
                target: rel,
                create: None,
                kind: InitMountKind::Bind {
                    source: src,
                    readonly: false,
                },
            });
        } else if let Some(root) = &stub_dir {
            // No bind mounts: write the host's file in place, put the image's back after.
            let place = root.join(&rel);
            let created = planner.undo.created.iter().any(|(p, _)| *p == place);
            if !created {
                let saved = scratch.join(format!("saved-{name}"));
                let meta = fs::symlink_metadata(&place).at("stat", &place)?;
                copy_leaf(&place, &meta, &saved, &mut HashMap::new())?;
                planner.undo.saved.push((saved, place.clone()));
            }
            fs::write(&place, &content).at("write", &place)?;
        }
    }

    // Targets below an earlier mount (including /proc, /dev and /sys) are created inside
    // that mount by the init, once it is there.
    let mut mounted: Vec<Vec<OsString>> = Vec::new();
    if namespaces {
        mounted.extend(["proc", "dev", "sys"].map(|d| vec![OsString::from(d)]));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let cleaned = clean_path(&m.target)?;
        let mdir = scratch.join(format!("mount-{i}"));
        let is_dir = source_is_dir(&m.kind, &m.target)?;
        let canonical = match mounted.iter().any(|p| cleaned.starts_with(p)) {
            true => None,
            false => Some(planner.view.resolve_strict(&m.target, true)?.full_rel()),
        };
        let nested = canonical.as_ref().is_none_or(|c| {
            let comps: Vec<OsString> = c.iter().map(OsString::from).collect();
            mounted.iter().any(|p| comps.starts_with(p))
        });
        let (rel, create) = if nested {
            let rel = canonical.unwrap_or_else(|| cleaned.iter().collect());
            (rel.to_string_lossy().into_owned(), Some(is_dir))
        } else {
            (planner.ensure(&m.target, is_dir, true)?, None)
        };
        mounted.push(cleaned);
        mounted.push(Path::new(&rel).iter().map(OsString::from).collect());
        excluded.insert(PathBuf::from(&rel));
        match &stub_dir {
            Some(root) if !namespaces => copy_in(&m.kind, &root.join(&rel), is_dir, &m.target)?,
            _ => mounts.push(InitMount {
                target: rel,
                create,
                kind: mount_kind(&m.kind, &mdir, mode)?,
            }),
        }
    }
    planner.finish()?;

    let plan = InitPlan {
        namespaces,
        root,
        mounts,
        argv: spec.argv.clone(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network_none: spec.network == NetworkMode::None,
        insecure: spec.insecure,
        limits: spec.limits.clone(),
    };
    Ok(Prepared {
        plan,
        excluded,
        copy,
    })
}

fn check_empty_dir(dir: &Path) -> Result<(), SandboxError> {
    let mut rd = fs::read_dir(dir).at("read directory", dir)?;
    if rd.next().is_some() {
        return Err(SandboxError::InvalidSpec {
            field: "upper",
            reason: format!("{} is not empty", dir.display()),
        });
    }
    Ok(())
}

fn dir_root(dir: &Path, scratch: &Path, namespaces: bool) -> Result<InitRoot, SandboxError> {
    Ok(if namespaces {
        InitRoot::Bind {
            dir: dir.to_path_buf(),
            mountpoint: mkdir(&scratch.join("root"))?,
        }
    } else {
        InitRoot::Chroot {
            dir: dir.to_path_buf(),
        }
    })
}

/// Whether a mount's source (and so its target) is a directory.
fn source_is_dir(kind: &MountKind, target: &str) -> Result<bool, SandboxError> {
    Ok(match kind {
        MountKind::Tmpfs { .. } => true,
        MountKind::Bind {
            source: MountSource::Host(src),
            ..
        } => fs::metadata(src).at("stat mount source", src)?.is_dir(),
        MountKind::Bind {
            source: MountSource::Layers { lowers, path },
            ..
        } => match LayeredView::new(lowers.clone())
            .resolve_strict(path, true)?
            .tail
        {
            Tail::Dir => true,
            Tail::Other { .. } => false,
            Tail::Missing(_) => {
                return Err(SandboxError::BadPath {
                    path: path.clone(),
                    reason: format!("mount source for {target} does not exist"),
                });
            }
        },
    })
}

/// The init's view of one mount.
fn mount_kind(kind: &MountKind, mdir: &Path, mode: Mode) -> Result<InitMountKind, SandboxError> {
    Ok(match kind {
        MountKind::Tmpfs { size, mode } => InitMountKind::Tmpfs {
            size: *size,
            mode: *mode,
        },
        MountKind::Bind {
            source: MountSource::Host(src),
            access,
        } => {
            match (
                access,
                fs::metadata(src).at("stat mount source", src)?.is_dir(),
            ) {
                (BindAccess::ReadOnly, _) => InitMountKind::Bind {
                    source: src.clone(),
                    readonly: true,
                },
                (BindAccess::ReadWrite, _) => InitMountKind::Bind {
                    source: src.clone(),
                    readonly: false,
                },
                (BindAccess::Discard, true) if mode == Mode::Overlay => InitMountKind::Overlay {
                    lowers: vec![src.clone()],
                    upper_work: Some((mkdir(&mdir.join("upper"))?, mkdir(&mdir.join("work"))?)),
                    mountpoint: mkdir(&mdir.join("merged"))?,
                    subpath: String::new(),
                    readonly: false,
                },
                (BindAccess::Discard, true) => {
                    let copy = mkdir(&mdir.join("copy"))?;
                    copy_tree(src, &copy)?;
                    InitMountKind::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
                (BindAccess::Discard, false) => {
                    mkdir(mdir)?;
                    let copy = mdir.join("file");
                    fs::copy(src, &copy).at("copy mount source", src)?;
                    InitMountKind::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
            }
        }
        MountKind::Bind {
            source: MountSource::Layers { lowers, path },
            access,
        } => {
            let view = LayeredView::new(lowers.clone());
            let sub = view.resolve_strict(path, true)?.full_rel();
            let readonly = *access == BindAccess::ReadOnly;
            if mode == Mode::Overlay {
                let mut all = lowers.clone();
                let upper_work = if readonly {
                    // A read-only overlay needs two lowers on older kernels.
                    all.push(mkdir(&mdir.join("empty"))?);
                    None
                } else {
                    Some((mkdir(&mdir.join("upper"))?, mkdir(&mdir.join("work"))?))
                };
                InitMountKind::Overlay {
                    lowers: all,
                    upper_work,
                    mountpoint: mkdir(&mdir.join("merged"))?,
                    subpath: sub.to_string_lossy().into_owned(),
                    readonly,
                }
            } else {
                let copy = mkdir(&mdir.join("copy"))?;
                materialize(&view, &copy)?;
                InitMountKind::Bind {
                    source: copy.join(sub),
                    readonly,
                }
            }
        }
    })
}

/// Copies a plain directory tree (no whiteout semantics) into the empty directory `dest`.
fn copy_tree(src: &Path, dest: &Path) -> Result<(), SandboxError> {
    let mut links = HashMap::new();
    let mut dirs = vec![(src.to_path_buf(), dest.to_path_buf())];
    let mut done = Vec::new();
    while let Some((from, to)) = dirs.pop() {
        for entry in fs::read_dir(&from).at("read directory", &from)? {
            let entry = entry.at("read directory", &from)?;
            let (f, t) = (entry.path(), to.join(entry.file_name()));
            let meta = fs::symlink_metadata(&f).at("stat", &f)?;
            if meta.is_dir() {
                fs::create_dir(&t).at("mkdir", &t)?;
                dirs.push((f.clone(), t.clone()));
                done.push((f, meta, t));
            } else {
                copy_leaf(&f, &meta, &t, &mut links)?;
            }
        }
    }
    for (f, meta, t) in done.into_iter().rev() {
        apply_metadata(&f, &meta, &t)?;
    }
    let meta = fs::symlink_metadata(src).at("stat", src)?;
    apply_metadata(src, &meta, dest)
}

/// The chroot mode without namespaces cannot mount: a mount's content is copied into the
/// (private, excluded from the diff) place instead. Writes to it are never kept, so a cache
/// mount works but stays cold, as Kaniko treats them; a tmpfs is an empty directory.
fn copy_in(kind: &MountKind, place: &Path, is_dir: bool, target: &str) -> Result<(), SandboxError> {
    if is_dir {
        let _ = fs::remove_dir(place);
    } else {
        let _ = fs::remove_file(place);
    }
    match kind {
        MountKind::Tmpfs { mode, .. } => {
            fs::create_dir_all(place).at("mkdir", place)?;
            fs::set_permissions(place, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                .at("chmod", place)?;
        }
        MountKind::Bind {
            source: MountSource::Host(src),
            ..
        } => {
            if is_dir {
                fs::create_dir_all(place).at("mkdir", place)?;
                copy_tree(src, place)?;
            } else {
                let meta = fs::metadata(src).at("stat mount source", src)?;
                fs::copy(src, place).at("copy mount source", src)?;
                apply_metadata(src, &meta, place)?;
            }
        }
        MountKind::Bind {
            source: MountSource::Layers { lowers, path },
            ..
        } => {
            let view = LayeredView::new(lowers.clone());
            let res = view.resolve_strict(path, true)?;
            let sub = res.full_rel();
            match &res.tail {
                Tail::Other { layer, meta, .. } => {
                    copy_leaf(&view.host(*layer, &sub), meta, place, &mut HashMap::new())?;
                }
                Tail::Dir => {
                    fs::create_dir_all(place).at("mkdir", place)?;
                    let tmp = place.with_extension("rbuild-copy");
                    mkdir(&tmp)?;
                    materialize(&view, &tmp)?;
                    let r = copy_tree(&tmp.join(&sub), place);
                    let _ = fs::remove_dir_all(&tmp);
                    r?;
                }
                Tail::Missing(_) => {
                    return Err(SandboxError::BadPath {
                        path: path.clone(),
                        reason: format!("mount source for {target} does not exist"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The chroot mode without namespaces cannot mount /dev: it makes the usual nodes (or, for
/// /dev/null where mknod is refused, an empty file).
fn make_device_nodes(dev: &Path, undo: &mut Undo) -> Result<(), SandboxError> {
    let meta = fs::symlink_metadata(dev).at("stat", dev)?;
    if !undo.parents.iter().any(|(p, _)| p == dev) {
        undo.parents.push((dev.to_path_buf(), timestamps(&meta)));
    }
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = dev.join(name);
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        let host = Path::new("/dev").join(name);
        let Ok(hm) = fs::metadata(&host) else {
            continue;
        };
        let made = rustix::fs::mknodat(
            CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            hm.rdev(),
        );
        match made {
            Ok(()) => {
                // Not subject to the umask.
                let _ =
                    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666));
                undo.created.push((p, false));
            }
            Err(_) if name == "null" => {
                fs::write(&p, b"").at("create", &p)?;
                let _ =
                    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666));
                undo.created.push((p, false));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
