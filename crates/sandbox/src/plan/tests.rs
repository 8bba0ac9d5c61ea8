//! `prepare` without root: the overlay mode's stub layer, the mount order and targets.

use std::os::unix::fs::symlink;

use super::*;
use crate::{Mount, User};

struct Fixture {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    scratch: PathBuf,
    src: PathBuf,
}

/// An image layer with /etc, /usr/share and a symlink /cache -> /var/cache; an empty upper
/// and scratch on the same file system; a host directory to bind.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    for d in ["etc", "usr/share", "var/cache"] {
        fs::create_dir_all(lower.join(d)).unwrap();
    }
    symlink("/var/cache", lower.join("cache")).unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    Fixture {
        lower,
        upper,
        scratch: dir.path().join("scratch"),
        src,
        _dir: dir,
    }
}

fn spec(f: &Fixture, mounts: Vec<Mount>) -> RunSpec {
    let mut s = RunSpec::new(
        Rootfs::Layers {
            lowers: vec![f.lower.clone()],
            upper: f.upper.clone(),
        },
        f.scratch.clone(),
        vec!["/bin/true".into()],
    )
    .unwrap()
    .with_user(User::root());
    for m in mounts {
        s = s.with_mount(m).unwrap();
    }
    s
}

#[test]
fn overlay_mount_points_go_into_a_stub_layer_and_the_upper_stays_empty() {
    let f = fixture();
    let s = spec(
        &f,
        vec![
            Mount::tmpfs("/cache/apt", None, 0o755),
            Mount::bind(
                MountSource::Host(f.src.clone()),
                "/work/src",
                BindAccess::ReadOnly,
            ),
            // Below /dev: created by the init inside its /dev, once that is mounted.
            Mount::tmpfs("/dev/extra", None, 0o755),
        ],
    );
    let mut undo = Undo::default();
    let p = prepare(&s, Mode::Overlay, true, &mut undo).unwrap();
    let InitRoot::Overlay { lowers, upper, .. } = &p.plan.root else {
        panic!("an overlay root");
    };
    // The stub layer is the topmost lower; the image's layer comes after it.
    let stubs = f.scratch.join("stubs");
    assert_eq!(lowers, &vec![stubs.clone(), f.lower.clone()]);
    assert_eq!(upper, &f.upper);
    assert_eq!(
        fs::read_dir(&f.upper).unwrap().count(),
        0,
        "the upper is untouched"
    );
    // The mount points the image lacks exist in the stubs, not in the image.
    for d in ["proc", "dev", "sys", "var/cache/apt", "work/src"] {
        assert!(stubs.join(d).is_dir(), "{d} is stubbed");
    }
    assert!(!f.lower.join("proc").exists());
    assert!(stubs.join("etc/hosts").is_file() && stubs.join("etc/resolv.conf").is_file());

    // The host's resolv.conf and hosts first, then the step's mounts in their order; a
    // target through the image's symlink lands where the symlink points inside the root.
    let targets: Vec<(&str, Option<bool>)> = p
        .plan
        .mounts
        .iter()
        .map(|m| (m.target.as_str(), m.create))
        .collect();
    assert_eq!(
        targets,
        [
            ("etc/resolv.conf", None),
            ("etc/hosts", None),
            ("var/cache/apt", None),
            ("work/src", None),
            ("dev/extra", Some(true)),
        ]
    );
    assert!(matches!(
        &p.plan.mounts[3].kind,
        InitMountKind::Bind { source, readonly: true } if *source == f.src
    ));
    // The differ leaves every mount target out.
    for t in [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "var/cache/apt",
        "work/src",
    ] {
        assert!(p.excluded.contains(Path::new(t)), "{t} is excluded");
    }
}

#[test]
fn a_target_escaping_the_root_through_a_symlink_is_refused() {
    let f = fixture();
    symlink("../../../../outside", f.lower.join("escape")).unwrap();
    let s = spec(&f, vec![Mount::tmpfs("/escape/x", None, 0o755)]);
    let mut undo = Undo::default();
    let err = prepare(&s, Mode::Overlay, true, &mut undo)
        .err()
        .expect("refused");
    assert!(matches!(err, SandboxError::PathEscapes { .. }), "{err:?}");
}

#[test]
fn a_scratch_directory_in_use_is_refused() {
    let f = fixture();
    fs::create_dir_all(f.scratch.join("left-over")).unwrap();
    let mut undo = Undo::default();
    let err = prepare(&spec(&f, Vec::new()), Mode::Overlay, true, &mut undo)
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            SandboxError::InvalidSpec {
                field: "scratch",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn without_namespaces_network_none_and_extra_mounts_on_a_directory_are_unsupported() {
    let f = fixture();
    let mut undo = Undo::default();
    let s = spec(&f, Vec::new()).with_network(NetworkMode::None);
    let err = prepare(&s, Mode::Chroot, false, &mut undo)
        .err()
        .expect("refused");
    assert!(matches!(err, SandboxError::Unsupported { .. }), "{err:?}");
    let dir = RunSpec::new(
        Rootfs::Dir(f.lower.clone()),
        f.scratch.clone(),
        vec!["/bin/true".into()],
    )
    .unwrap()
    .with_mount(Mount::tmpfs("/tmp", None, 0o1777))
    .unwrap();
    let err = prepare(&dir, Mode::Chroot, false, &mut undo)
        .err()
        .expect("refused");
    assert!(matches!(err, SandboxError::Unsupported { .. }), "{err:?}");
}
