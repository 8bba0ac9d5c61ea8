//! The four build modes of issue 16, each with the real binary:
//!
//! 1. root on the host;
//! 2. rootless on the host: the non-root user `rbuild-test` (subordinate ranges from
//!    scripts/testenv/up.sh), switched to with `setpriv`;
//! 3. root in `docker run` with the default seccomp profile and capabilities (no
//!    `--privileged`): unshare and mount are refused, steps run chroot-style;
//! 4. the image's non-root user in `docker run --security-opt seccomp=unconfined
//!    --security-opt apparmor=unconfined`: rbuild maps its own user namespace with the
//!    image's newuidmap/newgidmap.
//!
//! Modes 3 and 4 run rbuild's own image (images/rbuild, built by rbuild from this test's
//! binary and pushed to the local registry once per test process): it is what a CI job
//! would run. The auth example is built in modes 2-4 and served (mode 1: e2e.rs); a
//! RUN step that tries every way out of its root runs in all four; the digests of a
//! deterministic Dockerfile are compared across all four by scripts/modes/compare.sh.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use test_support::{LocalRegistry, describe, output, run, run_stdout, workspace_root};

const DOCKER: &str = "/usr/bin/docker";
const USER: &str = "rbuild-test";
/// The image's default user (images/rbuild/Dockerfile).
const IMAGE_UID: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuildMode {
    RootHost,
    RootlessHost,
    RootContainer,
    UserContainer,
}

const ALL: [BuildMode; 4] = [
    BuildMode::RootHost,
    BuildMode::RootlessHost,
    BuildMode::RootContainer,
    BuildMode::UserContainer,
];

impl BuildMode {
    fn name(self) -> &'static str {
        match self {
            BuildMode::RootHost => "root-host",
            BuildMode::RootlessHost => "rootless-host",
            BuildMode::RootContainer => "root-container",
            BuildMode::UserContainer => "user-container",
        }
    }

    /// The uid that must own the cache and output directories.
    fn owner(self) -> u32 {
        match self {
            BuildMode::RootHost | BuildMode::RootContainer => 0,
            BuildMode::RootlessHost => uid_of(USER),
            BuildMode::UserContainer => IMAGE_UID,
        }
    }

    /// What the first progress line must say of the mode.
    fn banner(self) -> &'static str {
        match self {
            BuildMode::RootHost => "(sandbox: namespaces+overlayfs) as root\n",
            BuildMode::RootlessHost => "(sandbox: namespaces+overlayfs) as rootless (uid ",
            BuildMode::RootContainer => "(sandbox: chroot (cannot create namespaces: unshare",
            BuildMode::UserContainer => "(sandbox: chroot (mount proc (fsopen)",
        }
    }
}

fn uid_of(user: &str) -> u32 {
    let out = run_stdout(Command::new("id").args(["-u", user]));
    out.trim().parse().expect("uid")
}

fn state_dir() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/rbuild-tests");
    std::fs::create_dir_all(&dir).expect("state dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A scratch directory every user may enter, on disk.
fn scratch(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(&format!("modes-{prefix}-"))
        .tempdir_in(state_dir())
        .expect("scratch");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn owned_dir(path: &Path, uid: u32) -> PathBuf {
    std::fs::create_dir_all(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    path.to_owned()
}

/// rbuild's own image, built by rbuild from this test's binary (images/rbuild/build.sh)
/// and pushed once per test process.
fn ci_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let registry = LocalRegistry::ensure();
        let reference = format!(
            "{}/{}:ci",
            registry.host(),
            registry.unique_repo("modes-rbuild-image")
        );
        let mut cmd = Command::new(workspace_root().join("images/rbuild/build.sh"));
        cmd.args([
            "--push",
            "-t",
            &reference,
            "--rbuild",
            env!("CARGO_BIN_EXE_rbuild"),
        ])
        .arg("--")
        .arg("--cache-dir")
        .arg(state_dir().join("cache-modes-image"));
        run(&mut cmd);
        run(Command::new(DOCKER).args(["pull", "-q", &reference]));
        reference
    })
}

/// `rbuild build --progress=plain --cache-dir C ARGS CTX` in `mode`; `ctx` is read-only to
/// the build, `out` (owned by the mode's user) is its home. The
/// output ends with a line `roots: ...` listing `/ESCAPED-*` at the root of the host or
/// of the container rbuild ran in, after the build.
fn build_in(mode: BuildMode, ctx: &Path, out: &Path, cache: &Path, args: &[&str]) -> Output {
    owned_dir(out, mode.owner());
    owned_dir(cache, mode.owner());
    let rbuild = env!("CARGO_BIN_EXE_rbuild");
    let script = "rbuild build --progress=plain --cache-dir \"$CACHE\" \"$@\" \"$CTX\"; rc=$?; \
                  echo roots: $(ls -d /ESCAPED-* 2>/dev/null) >&2; exit $rc";
    let mut cmd = match mode {
        BuildMode::RootHost | BuildMode::RootlessHost => {
            let mut c = if mode == BuildMode::RootHost {
                Command::new("sh")
            } else {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={USER}"))
                    .arg(format!("--regid={USER}"))
                    .args(["--clear-groups", "--", "sh"]);
                c
            };
            let bin = Path::new(rbuild).parent().expect("bin dir");
            c.env_clear()
                .env(
                    "PATH",
                    format!(
                        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                        bin.display()
                    ),
                )
                .env("HOME", out)
                .env("CACHE", cache)
                .env("CTX", ctx);
            c
        }
        BuildMode::RootContainer | BuildMode::UserContainer => {
            let mut c = Command::new(DOCKER);
            c.args(["run", "--rm", "--network", "host"]);
            if mode == BuildMode::RootContainer {
                c.args(["--user", "0"]);
            } else {
                c.args(["--security-opt", "seccomp=unconfined"])
                    .args(["--security-opt", "apparmor=unconfined"]);
            }
            c.arg("-v")
                .arg(format!("{}:/ctx:ro", ctx.display()))
                .arg("-v")
                .arg(format!("{}:/out", out.display()))
                .arg("-v")
                .arg(format!("{}:/cache", cache.display()))
                .args(["-e", "CACHE=/cache", "-e", "CTX=/ctx", "-e", "HOME=/out"])
                .arg(ci_image());
            c.arg("sh");
            c
        }
    };
    cmd.args(["-c", script, "sh"]).args(args);
    output(&mut cmd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn must_build(mode: BuildMode, out: &Output) -> String {
    let log = stderr(out);
    assert!(
        out.status.success(),
        "{} build failed ({:?}):\n{}",
        mode.name(),
        out.status,
        tail(&log, 80)
    );
    assert!(
        log.contains(mode.banner()),
        "{}: the first line must name the mode ({:?}):\n{}",
        mode.name(),
        mode.banner(),
        tail(&log, 80)
    );
    log
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn the_ci_image_runs_rbuild_as_a_non_root_user() {
    let image = ci_image();
    let out = run_stdout(Command::new(DOCKER).args([
        "run",
        "--rm",
        "--network",
        "host",
        image,
        "sh",
        "-c",
        "rbuild --version; id -u; test -s /etc/ssl/certs/ca-certificates.crt && echo ca; \
         grep '^rbuild:' /etc/subuid",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            &format!("rbuild {}", env!("CARGO_PKG_VERSION"))[..],
            "1000",
            "ca",
            "rbuild:100000:65536"
        ],
        "{out}"
    );
    // Its default command reports the host: in a default container, the unprivileged mode.
    let info = run_stdout(Command::new(DOCKER).args(["run", "--rm", "--network", "host", image]));
    assert!(
        info.contains("unprivileged  IN USE") && info.contains("[no] user namespaces"),
        "{info}"
    );
}

/// The auth example built in `mode`, pushed, run under docker: /health and the seed's
/// other checks (examples/check-image.sh).
fn auth_service_in(mode: BuildMode) {
    let registry = LocalRegistry::ensure();
    let reference = format!(
        "{}/{}:{}",
        registry.host(),
        registry.unique_repo("modes-auth"),
        mode.name()
    );
    let work = scratch(mode.name());
    let ctx = workspace_root().join("examples/auth-service");
    // A cold build each time (and no cache left on the shared disk afterwards).
    let out = build_in(
        mode,
        &ctx,
        &work.path().join("out"),
        &work.path().join("cache"),
        &["--push", "-t", &reference],
    );
    must_build(mode, &out);
    crate::e2e::check_image("auth-service", &reference, None);
}

#[test]
fn auth_service_builds_and_serves_rootless_on_the_host() {
    auth_service_in(BuildMode::RootlessHost);
}

#[test]
fn auth_service_builds_and_serves_as_root_in_an_unprivileged_container() {
    auth_service_in(BuildMode::RootContainer);
}

#[test]
fn auth_service_builds_and_serves_as_non_root_in_a_container() {
    auth_service_in(BuildMode::UserContainer);
}

/// The C probe of `modes/escape_probe.c`, built static with the host's `cc`.
fn escape_probe(dir: &Path) {
    let src = dir.join("probe.c");
    std::fs::write(&src, include_str!("modes/escape_probe.c")).expect("probe.c");
    run(Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("probe"))
        .arg(&src));
}

#[test]
fn run_steps_cannot_write_outside_their_root_in_any_mode() {
    let registry = LocalRegistry::ensure();
    let ctx = scratch("escape-ctx");
    escape_probe(ctx.path());
    let tag = format!("rbuild-modes-{}", std::process::id());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY probe /probe\nRUN /probe {tag}\nUSER 1234\nRUN /probe {tag}-user\n",
            registry.busybox()
        ),
    )
    .expect("Dockerfile");
    for f in ["Dockerfile", "probe", "probe.c"] {
        std::fs::set_permissions(ctx.path().join(f), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    for mode in ALL {
        let work = scratch(&format!("escape-{}", mode.name()));
        let out = build_in(
            mode,
            ctx.path(),
            &work.path().join("out"),
            &work.path().join("cache"),
            &["--no-cache"],
        );
        let log = must_build(mode, &out);
        let what = format!("{}:\n{}", mode.name(), tail(&log, 60));
        assert_eq!(log.matches("probe done").count(), 2, "{what}");
        assert!(
            log.lines().any(|l| l.trim_end() == "roots:"),
            "a step wrote at the root of {what}"
        );
        for host in [format!("/ESCAPED-{tag}"), format!("/ESCAPED-{tag}-user")] {
            assert!(!Path::new(&host).exists(), "{host} on the host: {what}");
        }
        assert!(!log.contains("ATTACHED"), "{what}");
        assert!(!log.contains("MOUNTED"), "{what}");
        if matches!(mode, BuildMode::RootContainer | BuildMode::UserContainer) {
            // No namespaces: a second chroot would be the way out; it is refused.
            assert!(
                log.contains(" chroot: Operation not permitted"),
                "chroot must be refused without namespaces: {what}"
            );
        }
    }
}

#[test]
fn a_deterministic_dockerfile_has_one_digest_in_every_mode() {
    let mut cmd = Command::new(workspace_root().join("scripts/modes/compare.sh"));
    cmd.args([
        "--rbuild",
        env!("CARGO_BIN_EXE_rbuild"),
        "--image",
        ci_image(),
    ]);
    let out = output(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    for mode in ALL {
        assert!(
            text.lines().any(|l| l.starts_with(mode.name())),
            "{} missing from the comparison:\n{text}",
            mode.name()
        );
    }
    assert!(text.contains("equal: every mode built sha256:"), "{text}");
}

/// A build that must fail with exit code 1 and a message containing each of `want`.
fn must_fail(mode: BuildMode, dockerfile: &str, args: &[&str], want: &[&str]) {
    let ctx = scratch("refused-ctx");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    std::fs::set_permissions(
        ctx.path().join("Dockerfile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let work = scratch(&format!("refused-{}", mode.name()));
    let out = build_in(
        mode,
        ctx.path(),
        &work.path().join("out"),
        &work.path().join("cache"),
        args,
    );
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: {dockerfile}\n{log}",
        mode.name()
    );
    for w in want {
        assert!(
            log.contains(w),
            "{}: {dockerfile}: no {w:?} in:\n{}",
            mode.name(),
            tail(&log, 30)
        );
    }
}

#[test]
fn features_a_mode_cannot_offer_fail_naming_the_mode() {
    let busybox = LocalRegistry::ensure().busybox();
    let no_net = format!("FROM {busybox}\nRUN --network=none true\n");
    for mode in [BuildMode::RootContainer, BuildMode::UserContainer] {
        must_fail(
            mode,
            &no_net,
            &[],
            &[
                "--network=none is not available",
                "rbuild runs in the unprivileged mode",
            ],
        );
        must_fail(
            mode,
            &format!("FROM {busybox}\nRUN mknod /n c 1 3\n"),
            &[],
            &["rbuild runs in the unprivileged mode", "device nodes"],
        );
    }
    must_fail(
        BuildMode::RootlessHost,
        &format!("FROM {busybox}\nRUN --security=insecure true\n"),
        &["--allow", "security.insecure"],
        &[
            "RUN --security=insecure is not available",
            "rbuild runs in the rootless mode",
        ],
    );
    must_fail(
        BuildMode::RootlessHost,
        &format!("FROM {busybox}\nRUN mknod /n c 1 3\n"),
        &[],
        &["rbuild runs in the rootless mode", "device nodes"],
    );
}
