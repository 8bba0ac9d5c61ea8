//! The RUN sandbox against a real busybox root (the local registry's image, or the test
//! environment's copy of its layer), real overlayfs, real namespaces and QEMU.
//!
//! This binary is its own sandbox init: `main` calls `maybe_run_init` first. It is also its
//! own "rbuild-like" host process for the signal tests (`SANDBOX_TEST_CHILD`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use builder_core::{
    BindAccess, CancelHandle, ExitStatus, Mode, ModeRequest, Mount, MountSource, NetworkMode,
    Rootfs, RunSpec, Sandbox, SandboxError, Stream, resolve_user,
};
use libtest_mimic::{Arguments, Failed, Trial};

// Base images and steps that plant symlinks and nodes where the sandbox mounts or writes.
#[path = "sandbox/hostile.rs"]
mod hostile;

type R = Result<(), Failed>;

const REGISTRY_IMAGE: &str = "127.0.0.1:5000/library/busybox:latest";
const TESTENV: &str = "/var/tmp/rbuild-testenv/base/busybox";

fn main() {
    builder_core::maybe_run_init();
    if let Ok(mode) = std::env::var("SANDBOX_TEST_CHILD") {
        std::process::exit(child_main(&mode));
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test(
            "output_streams_and_exit_codes",
            output_streams_and_exit_codes,
        ),
        Trial::test("killed_by_a_signal", killed_by_a_signal),
        Trial::test(
            "exec_not_found_is_a_clear_error",
            exec_not_found_is_a_clear_error,
        ),
        Trial::test("upper_is_the_exact_diff", || {
            upper_is_the_exact_diff(ModeRequest::Overlay)
        }),
        Trial::test(
            "chroot_mode_gives_the_same_diff",
            chroot_mode_gives_the_same_diff,
        ),
        Trial::test(
            "chroot_mode_without_namespaces_gives_the_same_diff",
            chroot_without_namespaces,
        ),
        Trial::test("chroot_mode_forced_by_env", chroot_mode_forced_by_env),
        Trial::test("the_host_umask_does_not_leak", the_host_umask_does_not_leak),
        Trial::test(
            "resolv_conf_and_hosts_never_captured",
            resolv_conf_and_hosts_never_captured,
        ),
        Trial::test(
            "user_resolution_and_credentials",
            user_resolution_and_credentials,
        ),
        Trial::test("workdir_created_and_owned", workdir_created_and_owned),
        Trial::test("writable_overlay_is_volatile", writable_overlay_is_volatile),
        Trial::test("network_none_has_only_lo", network_none_has_only_lo),
        Trial::test("proc_dev_sys_and_masks", proc_dev_sys_and_masks),
        Trial::test(
            "seccomp_denies_namespaces_keys_and_kernel_interfaces",
            seccomp_denies_namespaces_keys_and_kernel_interfaces,
        ),
        Trial::test("the_init_is_out_of_reach", the_init_is_out_of_reach),
        Trial::test(
            "device_nodes_made_by_a_step_do_not_open",
            device_nodes_made_by_a_step_do_not_open,
        ),
        Trial::test("extra_mounts", extra_mounts),
        Trial::test("mount_targets_cannot_escape", mount_targets_cannot_escape),
        Trial::test(
            "nothing_left_after_success_and_failure",
            nothing_left_after_success_and_failure,
        ),
        Trial::test("cancel_tears_everything_down", cancel_tears_everything_down),
        Trial::test("sigint_to_the_host_process_tears_down", || {
            host_process_killed("INT")
        }),
        Trial::test("sigkill_to_the_host_process_tears_down", || {
            host_process_killed("KILL")
        }),
        Trial::test("arm64_runs_under_qemu", arm64_runs_under_qemu),
        Trial::test(
            "hostile_undo_does_not_follow_symlinks_a_step_planted",
            hostile::undo_does_not_follow_symlinks_a_step_planted,
        ),
        Trial::test(
            "hostile_symlinked_system_dirs_are_refused",
            hostile::symlinked_system_dirs_are_refused,
        ),
        Trial::test(
            "hostile_planted_etc_files_cannot_redirect_writes",
            hostile::planted_etc_files_cannot_redirect_writes,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

// ---------------------------------------------------------------- fixtures

/// A work area under /var/tmp (the cache lives on a disk, not on tmpfs).
fn workdir() -> tempfile::TempDir {
    fs::create_dir_all("/var/tmp/rbuild-sandbox-tests").unwrap();
    tempfile::tempdir_in("/var/tmp/rbuild-sandbox-tests").unwrap()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The busybox image's layer for `arch`, unpacked once into
/// /var/tmp/rbuild-sandbox-tests/base and shared by test processes.
fn base_layer(arch: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let base = Path::new("/var/tmp/rbuild-sandbox-tests/base");
    let root = base.join(format!("busybox-{arch}"));
    if root.join("bin/busybox").exists() {
        return root;
    }
    fs::create_dir_all(base).unwrap();
    let tmp = tempfile::tempdir_in(base).unwrap();
    let fresh = tmp.path().join("root");
    fs::create_dir(&fresh).unwrap();
    let tar = Path::new(TESTENV).join(format!("rootfs-{arch}.tar"));
    if tar.exists() {
        sh(Command::new("tar")
            .arg("-xpf")
            .arg(&tar)
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&fresh));
    } else {
        // From the local registry: skopeo to an OCI layout, then the single layer.
        let layout = tmp.path().join("oci");
        sh(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--override-arch", arch])
            .arg(format!("docker://{REGISTRY_IMAGE}"))
            .arg(format!("oci:{}", layout.display())));
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            sh(Command::new("tar")
                .arg("-xpzf")
                .arg(blob(layer["digest"].as_str().unwrap()))
                .arg("--numeric-owner")
                .arg("-C")
                .arg(&fresh));
        }
    }
    // Another test process may have won the race: then use its copy.
    let _ = fs::rename(&fresh, &root);
    root
}

fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    }
}

fn sandbox(req: ModeRequest) -> Sandbox {
    fs::create_dir_all("/var/tmp/rbuild-sandbox-tests").unwrap();
    Sandbox::detect_with(Path::new("/var/tmp/rbuild-sandbox-tests"), req).unwrap()
}

fn overlay() -> Sandbox {
    let s = sandbox(ModeRequest::Overlay);
    assert_eq!(s.capabilities().mode, Mode::Overlay);
    s
}

/// One run's directories.
struct Run {
    _tmp: tempfile::TempDir,
    upper: PathBuf,
    scratch: PathBuf,
}

fn run_dirs() -> Run {
    let tmp = workdir();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let scratch = tmp.path().join("scratch");
    Run {
        upper,
        scratch,
        _tmp: tmp,
    }
}

fn spec(lowers: impl Into<Vec<PathBuf>>, run: &Run, script: &str) -> RunSpec {
    RunSpec::new(
        Rootfs::Layers {
            lowers: lowers.into(),
            upper: run.upper.clone(),
        },
        &run.scratch,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    )
    .unwrap()
    .with_env(BTreeMap::from([(
        "PATH".into(),
        "/usr/sbin:/usr/bin:/sbin:/bin".into(),
    )]))
    .unwrap()
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn exec(sb: &Sandbox, spec: &RunSpec) -> Result<Output, SandboxError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = sb.run(spec, &CancelHandle::new(), &mut |s, b| match s {
        Stream::Stdout => out.extend_from_slice(b),
        Stream::Stderr => err.extend_from_slice(b),
    })?;
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

/// Runs and requires exit 0.
fn ok(sb: &Sandbox, spec: &RunSpec) -> Result<String, Failed> {
    let o = exec(sb, spec).map_err(|e| format!("run failed: {e}"))?;
    if !o.status.success() {
        return Err(format!("{}\nstdout: {}\nstderr: {}", o.status, o.stdout, o.stderr).into());
    }
    Ok(o.stdout)
}

/// The runtime's mount points that a run adds to the upper when the lowers lack them (as
/// runc's `/dev`, `/proc`, `/sys` reach BuildKit's layers).
const RUNTIME_MOUNT_POINTS: [&str; 3] = ["dev dir 755 0:0", "proc dir 755 0:0", "sys dir 755 0:0"];

/// [`listing`] of an upper directory without the [`RUNTIME_MOUNT_POINTS`] (the test
/// images lack them; `proc_dev_sys_and_masks` checks that they are there).
fn upper_listing(upper: &Path) -> Vec<String> {
    let mut l = listing(upper);
    l.retain(|e| !RUNTIME_MOUNT_POINTS.contains(&e.as_str()));
    l
}

/// A tree as a sorted listing: path, type, mode, owner, content or target, opaque flag.
/// Times are left out (two runs of the same commands differ there).
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                let opaque = ["trusted.overlay.opaque", "user.overlay.opaque"]
                    .iter()
                    .any(|x| {
                        let mut b = [0u8; 4];
                        matches!(rustix::fs::lgetxattr(&p, *x, &mut b), Ok(1) if b[0] == b'y')
                    });
                format!("dir{}", if opaque { " opaque" } else { "" })
            } else if ft.is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_char_device() && m.rdev() == 0 {
                "whiteout".into()
            } else if ft.is_file() {
                format!(
                    "file {:?} nlink={}",
                    String::from_utf8_lossy(&fs::read(&p).unwrap()),
                    m.nlink()
                )
            } else {
                format!("special {:o} {}", m.mode(), m.rdev())
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.push(format!(
                "{} {what} {mode:o} {}:{}",
                r.display(),
                m.uid(),
                m.gid()
            ));
            if ft.is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> R {
    if cond { Ok(()) } else { Err(msg().into()) }
}

fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> R {
    check(got == want, || {
        format!("{what}:\n got: {got:#?}\nwant: {want:#?}")
    })
}

/// Every process whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(marker)
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Processes whose mount table mentions `path`.
fn mounts_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(mi) = fs::read_to_string(e.path().join("mountinfo")) {
            if mi.contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Nothing is left: no process with `marker`, no mount table mentioning `path` (anywhere).
fn assert_nothing_left(marker: &str, path: &Path, wait: Duration) -> R {
    let start = Instant::now();
    loop {
        let procs = processes_with(marker);
        let mounts = mounts_mentioning(path);
        if procs.is_empty() && mounts.is_empty() {
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(format!(
                "left behind: processes {procs:?} with {marker:?}, mount tables of {mounts:?} \
                 mentioning {}",
                path.display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- tests

fn output_streams_and_exit_codes() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let o = exec(
        &sb,
        &spec(
            [base.clone()],
            &run,
            "echo out; echo err >&2; echo more; exit 3",
        ),
    )?;
    eq(o.status, ExitStatus::Exited(3), "status")?;
    eq(o.stdout.as_str(), "out\nmore\n", "stdout")?;
    eq(o.stderr.as_str(), "err\n", "stderr")?;
    // Large output arrives whole.
    let run = run_dirs();
    let o = exec(&sb, &spec([base], &run, "seq 1 100000"))?;
    eq(o.status, ExitStatus::Exited(0), "status")?;
    eq(o.stdout.lines().count(), 100000, "lines")?;
    check(o.stdout.ends_with("99999\n100000\n"), || "tail".into())?;
    eq(
        fs::read_dir(&run.scratch).unwrap().count(),
        0,
        "scratch emptied",
    )
}

fn killed_by_a_signal() -> R {
    let sb = overlay();
    let run = run_dirs();
    let o = exec(
        &sb,
        &spec([base_layer(host_arch())], &run, "kill -TERM $$; sleep 5"),
    )?;
    eq(o.status, ExitStatus::Signaled(15), "status")
}

fn exec_not_found_is_a_clear_error() -> R {
    let sb = overlay();
    let run = run_dirs();
    let mut s = spec([base_layer(host_arch())], &run, "");
    s.argv = vec!["no-such-command".into(), "x".into()];
    match exec(&sb, &s) {
        Err(e @ SandboxError::Exec { .. }) => {
            let msg = e.to_string();
            check(
                msg.contains("\"no-such-command\"")
                    && msg.contains("executable file not found in $PATH"),
                || msg,
            )
        }
        Err(e) => Err(format!("wrong error: {e}").into()),
        Ok(o) => Err(format!("ran: {}", o.status).into()),
    }
}

const STEP1: &str = "set -e
echo hello > /new.txt
ln /new.txt /hard.txt
ln -s /new.txt /sym
rm /bin/arch
mkdir -p /a/b && echo x > /a/b/c
rm -rf /home && mkdir /home && touch /home/x
rm /etc/group && mkdir /etc/group && touch /etc/group/y
chmod 700 /tmp
echo ok";

const STEP2: &str = "set -e
test ! -e /bin/arch
test \"$(ls /home)\" = x
test -f /etc/group/y
rm /a/b/c
echo 2 >> /new.txt
rm /hard.txt
echo ok";

/// The listings of both steps' uppers under `req`.
fn two_steps(req: ModeRequest) -> Result<(Vec<String>, Vec<String>), Failed> {
    let sb = sandbox(req);
    let base = base_layer(host_arch());
    let r1 = run_dirs();
    eq(
        ok(&sb, &spec([base.clone()], &r1, STEP1))?.as_str(),
        "ok\n",
        "step 1",
    )?;
    let r2 = run_dirs();
    eq(
        ok(&sb, &spec([r1.upper.clone(), base], &r2, STEP2))?.as_str(),
        "ok\n",
        "step 2",
    )?;
    Ok((upper_listing(&r1.upper), upper_listing(&r2.upper)))
}

fn upper_is_the_exact_diff(req: ModeRequest) -> R {
    let (one, two) = two_steps(req)?;
    let want1 = [
        "a dir 755 0:0",
        "a/b dir 755 0:0",
        "a/b/c file \"x\\n\" nlink=1 644 0:0",
        "bin dir 755 0:0",
        "bin/arch whiteout 0 0:0",
        "etc dir 755 0:0",
        "etc/group dir 755 0:0",
        "etc/group/y file \"\" nlink=1 644 0:0",
        "hard.txt file \"hello\\n\" nlink=2 644 0:0",
        "home dir 755 0:0",
        "home/x file \"\" nlink=1 644 0:0",
        "new.txt file \"hello\\n\" nlink=2 644 0:0",
        "sym link -> /new.txt 0 0:0",
        "tmp dir 700 0:0",
    ];
    eq(one, want1.map(String::from).to_vec(), "upper of step 1")?;
    let want2 = [
        "a dir 755 0:0",
        "a/b dir 755 0:0",
        "a/b/c whiteout 0 0:0",
        "hard.txt whiteout 0 0:0",
        "new.txt file \"hello\\n2\\n\" nlink=1 644 0:0",
    ];
    eq(two, want2.map(String::from).to_vec(), "upper of step 2")
}

fn chroot_mode_gives_the_same_diff() -> R {
    let sb = sandbox(ModeRequest::Chroot);
    eq(sb.capabilities().mode, Mode::Chroot, "mode")?;
    check(
        sb.capabilities()
            .describe()
            .starts_with("chroot+namespaces"),
        || sb.capabilities().describe(),
    )?;
    let overlay = two_steps(ModeRequest::Overlay)?;
    let chroot = two_steps(ModeRequest::Chroot)?;
    eq(chroot, overlay, "chroot vs overlay diffs")
}

/// The test binary itself as a host process, with `env` and under `prefix` (e.g. setpriv).
fn child(mode: &str, prefix: &[&str], env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if let Some((first, rest)) = prefix.split_first() {
        let mut c = Command::new(first);
        c.args(rest).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.env("SANDBOX_TEST_CHILD", mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn chroot_without_namespaces() -> R {
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Err("setpriv (util-linux) is needed to drop CAP_SYS_ADMIN".into());
    }
    let base = base_layer(host_arch());
    let out = sh(child(
        "diff",
        &[
            "setpriv",
            "--bounding-set",
            "-sys_admin",
            "--inh-caps",
            "-sys_admin",
        ],
        &[],
    )
    .env("SANDBOX_TEST_BASE", &base));
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let describe = v["describe"].as_str().unwrap_or_default();
    check(
        describe.starts_with("chroot (cannot create namespaces"),
        || describe.to_owned(),
    )?;
    let got: (Vec<String>, Vec<String>) = serde_json::from_value(v["listings"].clone())?;
    eq(
        got,
        two_steps(ModeRequest::Overlay)?,
        "unprivileged chroot vs overlay diffs",
    )?;
    let mounts: (String, Vec<String>) = serde_json::from_value(v["mounts"].clone())?;
    eq(
        mounts,
        ("exit code: 0\ncontext\nx\nt\n".to_owned(), Vec::new()),
        "mounts as copies",
    )?;
    eq(v["cache"].as_u64(), Some(0), "the cache stays cold")
}

/// Uses the mounts of [`with_test_mounts`].
const MOUNTS_SCRIPT: &str = "set -e; cat /src/f; echo x > /root/.cache/x; cat /root/.cache/x
echo t > /t/t; cat /t/t; cat /dev/pipes/EOF > /dev/null";

fn with_test_mounts(s: RunSpec, src: &Path, cache: &Path) -> RunSpec {
    s.with_mount(Mount::bind(
        MountSource::Host(src.into()),
        "/src",
        BindAccess::ReadOnly,
    ))
    .unwrap()
    .with_mount(Mount::bind(
        MountSource::Host(cache.into()),
        "/root/.cache",
        BindAccess::ReadWrite,
    ))
    .unwrap()
    .with_mount(Mount::tmpfs("/t", None, 0o1777))
    .unwrap()
    .with_mount(Mount::bind(
        MountSource::Host(src.join("f")),
        "/dev/pipes/EOF",
        BindAccess::ReadOnly,
    ))
    .unwrap()
}

fn chroot_mode_forced_by_env() -> R {
    let out = sh(&mut child("describe", &[], &[("RBUILD_SANDBOX", "chroot")]));
    eq(
        out.trim(),
        "chroot+namespaces (requested)",
        "RBUILD_SANDBOX=chroot",
    )?;
    let out = sh(&mut child(
        "describe",
        &[],
        &[("RBUILD_SANDBOX", "overlay")],
    ));
    eq(out.trim(), "namespaces+overlayfs", "RBUILD_SANDBOX=overlay")?;
    let o = child("describe", &[], &[("RBUILD_SANDBOX", "bogus")]).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success() && err.contains("RBUILD_SANDBOX=\"bogus\""),
        || err.into_owned(),
    )
}

fn the_host_umask_does_not_leak() -> R {
    let base = base_layer(host_arch());
    for mode in ["overlay", "chroot"] {
        let run = run_dirs();
        let out = sh(child(
            "umask",
            &["sh", "-c", "umask 077 && exec \"$0\""],
            &[("RBUILD_SANDBOX", mode)],
        )
        .env("SANDBOX_TEST_BASE", &base)
        .env("SANDBOX_TEST_UPPER", &run.upper)
        .env("SANDBOX_TEST_SCRATCH", &run.scratch));
        eq(
            out.as_str(),
            "0022\n644 755\n",
            "umask and modes in the step",
        )?;
        eq(
            upper_listing(&run.upper),
            [
                "d dir 755 0:0",
                "f file \"\" nlink=1 644 0:0",
                "new dir 755 0:0",
                "new/x file \"\" nlink=1 644 0:0",
            ]
            .map(String::from)
            .to_vec(),
            &format!("upper ({mode})"),
        )?;
    }
    Ok(())
}

fn resolv_conf_and_hosts_never_captured() -> R {
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let extra: Vec<(String, std::net::IpAddr)> = vec![
        ("db".into(), "10.1.2.3".parse().unwrap()),
        ("v6".into(), "::2".parse().unwrap()),
    ];
    let base = base_layer(host_arch());
    for req in [ModeRequest::Overlay, ModeRequest::Chroot] {
        let sb = sandbox(req);
        // busybox has neither file: stubs are needed, and must not reach the upper.
        let run = run_dirs();
        let s = spec(
            [base.clone()],
            &run,
            "cat /etc/resolv.conf; echo ---; cat /etc/hosts; \
             echo written >> /etc/hosts; echo x > /etc/resolv.conf; hostname",
        )
        .with_hostname("buildbox")?
        .with_extra_hosts(&extra)?;
        let out = ok(&sb, &s)?;
        let (resolv, rest) = out.split_once("---\n").ok_or("no separator")?;
        eq(resolv, host_resolv.as_str(), "resolv.conf")?;
        // BuildKit's file, not the host's: localhost with the hostname, ::1, extra hosts.
        check(
            rest.starts_with(
                "127.0.0.1\tlocalhost buildbox\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 10.1.2.3\tdb\n::2\tv6\n",
            ),
            || rest.into(),
        )?;
        check(rest.ends_with("buildbox\n"), || format!("hostname: {rest}"))?;
        eq(upper_listing(&run.upper), Vec::<String>::new(), "upper")?;
        eq(
            fs::read_to_string("/etc/hosts").unwrap_or_default(),
            host_hosts.clone(),
            "host's hosts",
        )?;

        // An image whose resolv.conf is a dangling symlink and whose hosts is a file.
        let img = workdir();
        fs::create_dir_all(img.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            img.path().join("etc/resolv.conf"),
        )
        .unwrap();
        fs::write(img.path().join("etc/hosts"), "image hosts\n").unwrap();
        let run = run_dirs();
        let lowers = [img.path().to_path_buf(), base.clone()];
        let out = ok(
            &sb,
            &spec(
                lowers.clone(),
                &run,
                "cat /etc/resolv.conf; cat /etc/hosts; echo new > /etc/new",
            ),
        )?;
        check(
            out.starts_with(&host_resolv) && !out.contains("image hosts"),
            || out.clone(),
        )?;
        eq(
            upper_listing(&run.upper),
            vec![
                "etc dir 755 0:0".to_string(),
                "etc/new file \"new\\n\" nlink=1 644 0:0".into(),
            ],
            "upper",
        )?;
        eq(
            fs::read_to_string(img.path().join("etc/hosts")).unwrap(),
            "image hosts\n".into(),
            "image untouched",
        )?;
    }
    Ok(())
}

fn user_resolution_and_credentials() -> R {
    let base = base_layer(host_arch());
    let nobody = resolve_user(std::slice::from_ref(&base), "nobody")?;
    eq(
        (nobody.uid, nobody.gid, nobody.additional_gids.clone()),
        (65534, 65534, vec![65534]),
        "nobody",
    )?;
    eq(nobody.home.as_deref(), Some("/nonexistent"), "home")?;
    check(
        matches!(
            resolve_user(std::slice::from_ref(&base), "nodejs"),
            Err(SandboxError::UserNotFound { .. })
        ),
        || "nodejs".into(),
    )?;
    let odd = resolve_user(std::slice::from_ref(&base), "1001:nogroup")?;
    eq((odd.uid, odd.gid), (1001, 65534), "1001:nogroup")?;

    let sb = overlay();
    let run = run_dirs();
    let s = spec(
        [base.clone()],
        &run,
        "id; grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status; echo $HOME",
    )
    .with_user(nobody);
    let out = ok(&sb, &s)?;
    check(
        out.starts_with("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"),
        || out.clone(),
    )?;
    check(
        out.contains("CapEff:\t0000000000000000") && out.contains("CapInh:\t0000000000000000"),
        || out.clone(),
    )?;
    check(
        out.contains("CapBnd:\t00000000a80425fb") && out.ends_with("/nonexistent\n"),
        || out.clone(),
    )?;

    // root keeps BuildKit's default capabilities, and gets every one with insecure.
    let run = run_dirs();
    let out = ok(
        &sb,
        &spec(
            [base.clone()],
            &run,
            "id -u; grep CapEff /proc/self/status; echo $HOME",
        ),
    )?;
    eq(
        out.as_str(),
        "0\nCapEff:\t00000000a80425fb\n/root\n",
        "root",
    )?;
    let run = run_dirs();
    let out = ok(
        &sb,
        &spec(
            [base],
            &run,
            "grep CapEff /proc/self/status; touch /sys/kernel/x 2>&1 | grep -c Read-only || true",
        )
        .with_insecure(true),
    )?;
    let own = fs::read_to_string("/proc/self/status")?;
    let own_eff = own
        .lines()
        .find(|l| l.starts_with("CapEff"))
        .unwrap_or_default();
    check(out.starts_with(own_eff) && out.ends_with("0\n"), || {
        format!("insecure: {out} (host {own_eff})")
    })
}

fn workdir_created_and_owned() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let user = resolve_user(std::slice::from_ref(&base), "1001:1001")?;
    let s = spec(
        [base],
        &run,
        "pwd; stat -c '%u:%g %a' /app /app/src; touch f",
    )
    .with_user(user)
    .with_cwd("/app/src")?;
    eq(
        ok(&sb, &s)?.as_str(),
        "/app/src\n1001:1001 755\n1001:1001 755\n",
        "output",
    )?;
    eq(
        upper_listing(&run.upper),
        [
            "app dir 755 1001:1001",
            "app/src dir 755 1001:1001",
            "app/src/f file \"\" nlink=1 644 1001:1001",
        ]
        .map(String::from)
        .to_vec(),
        "upper",
    )
}

fn network_none_has_only_lo() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags";
    let run = run_dirs();
    let out = ok(
        &sb,
        &spec([base.clone()], &run, script).with_network(NetworkMode::None),
    )?;
    eq(
        out.as_str(),
        "lo\n0x9\n",
        "interfaces with --network=none (lo, up)",
    )?;
    let host: Vec<String> = fs::read_to_string("/proc/net/dev")?
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_owned()))
        .collect();
    let run = run_dirs();
    let out = ok(
        &sb,
        &spec(
            [base],
            &run,
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        ),
    )?;
    eq(
        out.lines().map(String::from).collect::<Vec<_>>(),
        host,
        "interfaces with the host network",
    )
}

fn proc_dev_sys_and_masks() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let script = "ls /proc | grep -cE '^[0-9]+$'; echo $$; ls /dev | tr '\\n' ' '; echo; \
        head -c 1 /proc/kcore | wc -c; touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; \
        echo 1 > /proc/sys/kernel/ostype 2>/dev/null && echo procsys-rw || echo procsys-ro; \
        echo data > /dev/shm/f && cat /dev/shm/f; test -c /dev/pts/ptmx && echo pts; \
        readlink /dev/fd; grep -E '^Sig(Blk|Ign)' /proc/self/status; hostname";
    let out = ok(&sb, &spec([base], &run, script))?;
    let lines: Vec<&str> = out.lines().collect();
    eq(
        lines.get(1).copied(),
        Some("2"),
        "the command is PID 2 (the init is PID 1)",
    )?;
    check(lines[0].parse::<u32>().is_ok_and(|n| n <= 4), || {
        format!("processes in /proc: {}", lines[0])
    })?;
    eq(
        lines.get(2).copied(),
        Some("core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero "),
        "/dev",
    )?;
    eq(
        &lines[3..],
        &[
            "0",
            "sys-ro",
            "procsys-ro",
            "data",
            "pts",
            "/proc/self/fd",
            // Default signal dispositions and mask, whatever the host process had.
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            // No hostname asked for: the host's, in a UTS namespace of our own.
            &rustix::system::uname().nodename().to_string_lossy(),
        ],
        "masks and mounts",
    )?;
    // The base has no /dev, /proc or /sys: the upper holds them as empty directories (the
    // mount points runc leaves in BuildKit's layer), and nothing of what was mounted there.
    eq(
        listing(&run.upper),
        RUNTIME_MOUNT_POINTS.map(String::from).to_vec(),
        "upper",
    )
}

/// A step keeps CAP_MKNOD (packages make device nodes), but a node it makes does not open:
/// not in the root, not in /dev, not in a writable bind mount. Otherwise, with no device
/// cgroup, `mknod` of the host disk's numbers would give the step the host's disk. /dev's own
/// nodes still work, and with `insecure` (a privileged step) a made node opens.
fn device_nodes_made_by_a_step_do_not_open() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let host = workdir();
    let cache = host.path().join("cache");
    fs::create_dir(&cache)?;
    // The block device holding this test's files: reading one byte of it is harmless, and
    // is what the sandbox must refuse. Some hosts refuse it to root anyway (a VM whose disk
    // is off limits even to the host's root); the character nodes below, /dev/null's
    // numbers, are what shows the hole on any host.
    let st = rustix::fs::stat(host.path()).map_err(|e| e.to_string())?;
    let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let script = format!(
        "try() {{ if head -c 1 \"$1\" > /dev/null 2>&1; then echo \"$2 opens\"; else echo \"$2 refused\"; fi; }}
mknod /blk b {major} {minor} && echo made
try /blk root-block
mknod /chr c 1 3 && try /chr root-char
mknod /dev/mine c 1 3 && try /dev/mine dev-char
mknod /cache/n c 1 3 && try /cache/n bind-char
try /dev/zero dev-zero
echo x > /dev/null && echo dev-null-writes"
    );
    let run = run_dirs();
    let s = spec([base.clone()], &run, &script).with_mount(Mount::bind(
        MountSource::Host(cache.clone()),
        "/cache",
        BindAccess::ReadWrite,
    ))?;
    eq(
        ok(&sb, &s)?.lines().collect::<Vec<_>>(),
        vec![
            "made",
            "root-block refused",
            "root-char refused",
            "dev-char refused",
            "bind-char refused",
            "dev-zero opens",
            "dev-null-writes",
        ],
        "device nodes",
    )?;
    // The nodes are made, and the one in the root is part of the step's diff.
    let blk = fs::symlink_metadata(run.upper.join("blk"))?;
    check(blk.file_type().is_block_device(), || {
        format!("/blk in the upper: {:?}", blk.file_type())
    })?;

    let run = run_dirs();
    let script = "mknod /chr c 1 3 && echo x > /chr && echo root-char opens";
    let s = spec([base], &run, script).with_insecure(true);
    eq(
        ok(&sb, &s)?.trim(),
        "root-char opens",
        "insecure step and a made node",
    )
}

/// PID 1 of the step's namespace is rbuild's init, running the host's binary with the
/// host's environment: the step cannot read its environment, memory, executable or
/// descriptors.
fn the_init_is_out_of_reach() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let script = "for f in environ mem; do head -c 1 /proc/1/$f > /dev/null 2>&1 && echo $f readable || echo $f refused; done
readlink /proc/1/exe > /dev/null 2>&1 && echo exe readable || echo exe refused
readlink /proc/1/fd/0 > /dev/null 2>&1 && echo fd readable || echo fd refused";
    eq(
        ok(&sb, &spec([base], &run, script))?
            .lines()
            .collect::<Vec<_>>(),
        vec![
            "environ refused",
            "mem refused",
            "exe refused",
            "fd refused",
        ],
        "/proc/1 from the step",
    )
}

/// A C probe making raw system calls, built static (the base image has no C library of
/// ours) with the host's `cc`.
const SECCOMP_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r, int err) {
    if (r >= 0) printf("%s ok\n", name);
    else printf("%s %s\n", name, err == EPERM ? "EPERM" : err == ENOSYS ? "ENOSYS" : strerror(err));
}
#define CALL(name, ...) do { long r_ = syscall(__VA_ARGS__); report(name, r_, errno); } while (0)

#ifdef __x86_64__
/* The i386 table, through int 0x80; the kernel's result comes back negated. */
static long int80(long nr, long arg) {
    long r;
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(nr), "b"(arg) : "memory");
    return r;
}
static void report80(const char *name, long r) {
    printf("%s %s\n", name, r == -EPERM ? "EPERM" : r == -ENOSYS ? "ENOSYS" : "allowed");
}
#endif

static void clone_with(const char *name, unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    int err = errno;
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, 0, 0);
    report(name, pid, err);
}

int main(void) {
    CALL("unshare-user", SYS_unshare, CLONE_NEWUSER);
    CALL("unshare-files", SYS_unshare, CLONE_FILES);
    clone_with("clone-newuser", CLONE_NEWUSER);
    clone_with("clone-newns", CLONE_NEWNS);
    clone_with("clone-plain", 0);
    CALL("clone3", SYS_clone3, 0, 0);
    CALL("keyctl", SYS_keyctl, 0, -3, 0);
    CALL("add_key", SYS_add_key, "user", "k", "v", 1, -3);
    CALL("bpf", SYS_bpf, 0, 0, 0);
    CALL("perf_event_open", SYS_perf_event_open, 0, 0, -1, -1, 0);
    CALL("io_uring_setup", SYS_io_uring_setup, 1, 0);
    CALL("userfaultfd", SYS_userfaultfd, 0);
    CALL("setns", SYS_setns, -1, 0);
#ifdef __x86_64__
    CALL("x32-getpid", SYS_getpid | 0x40000000);
    report80("i386-unshare", int80(310, 0x10000000)); /* CLONE_NEWUSER */
    report80("i386-io_uring_setup", int80(425, 1));
#endif
    CALL("getpid", SYS_getpid);
    return 0;
}
"#;

/// Outside `insecure`, a step runs under the seccomp filter: no new namespaces (unshare,
/// setns, clone with namespace flags; clone3 says ENOSYS so the C library falls back to
/// clone), no keyring, BPF, perf events, io_uring or userfaultfd, and neither the x32 ABI
/// nor the i386 table gets around it; ordinary calls and a plain clone work. An insecure
/// step has no filter.
fn seccomp_denies_namespaces_keys_and_kernel_interfaces() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let tools = workdir();
    let layer = tools.path().join("layer");
    fs::create_dir(&layer)?;
    fs::write(tools.path().join("probe.c"), SECCOMP_PROBE)?;
    let cc = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(layer.join("probe"))
        .arg(tools.path().join("probe.c"))
        .output()?;
    check(cc.status.success(), || {
        format!("cc: {}", String::from_utf8_lossy(&cc.stderr))
    })?;

    let run = run_dirs();
    let out = ok(&sb, &spec([layer.clone(), base.clone()], &run, "/probe"))?;
    let mut expected = vec![
        "unshare-user EPERM",
        "unshare-files EPERM",
        "clone-newuser EPERM",
        "clone-newns EPERM",
        "clone-plain ok",
        "clone3 ENOSYS",
        "keyctl EPERM",
        "add_key EPERM",
        "bpf EPERM",
        "perf_event_open EPERM",
        "io_uring_setup EPERM",
        "userfaultfd EPERM",
        "setns EPERM",
    ];
    let lines: Vec<&str> = out.lines().collect();
    if cfg!(target_arch = "x86_64") {
        expected.push("x32-getpid ENOSYS");
        // ENOSYS where the kernel runs no i386 code at all (ia32_emulation=0).
        for call in ["i386-unshare", "i386-io_uring_setup"] {
            let line = lines.iter().find(|l| l.split(' ').next() == Some(call));
            check(
                line.is_some_and(|l| l.ends_with(" EPERM") || l.ends_with(" ENOSYS")),
                || format!("the i386 table: {line:?}"),
            )?;
            expected.push(line.copied().unwrap_or_default());
        }
    }
    expected.push("getpid ok");
    eq(lines, expected, "system calls under the filter")?;

    let run = run_dirs();
    let s = spec([layer, base], &run, "/probe").with_insecure(true);
    let out = ok(&sb, &s)?;
    check(out.lines().any(|l| l == "unshare-user ok"), || {
        format!("an insecure step has no filter:\n{out}")
    })
}

fn extra_mounts() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let host = workdir();
    let (ctx, cache, rw, secret) = (
        host.path().join("ctx"),
        host.path().join("cache"),
        host.path().join("rw"),
        host.path().join("secret"),
    );
    for d in [&ctx, &cache, &rw] {
        fs::create_dir(d)?;
    }
    fs::write(ctx.join("f"), "context\n")?;
    fs::write(rw.join("keep"), "keep\n")?;
    fs::write(&secret, "s3cret\n")?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o400))?;
    // A stage to mount from: step 1's result over the base.
    let stage = run_dirs();
    ok(
        &sb,
        &spec(
            [base.clone()],
            &stage,
            "mkdir -p /out && echo built > /out/app",
        ),
    )?;

    let run = run_dirs();
    let script = "set -e
cat /src/f; touch /src/new 2>/dev/null && echo src-rw || echo src-ro
echo cached > /root/.cache/x/entry
echo scribble > /scratch/keep; cat /scratch/keep
cat /run/secrets/token
cat /from/app; touch /from/y 2>/dev/null && echo from-rw || echo from-ro
grep -c ' /tmp/t tmpfs ' /proc/mounts
head -c 2000000 /dev/zero > /tmp/t/big 2>/dev/null && echo fits || echo full
ls /tmp/t/nested
cat /dev/pipes/EOF";
    let s = spec([base], &run, script)
        .with_mount(Mount::bind(
            MountSource::Host(ctx.clone()),
            "/src",
            BindAccess::ReadOnly,
        ))?
        .with_mount(Mount::bind(
            MountSource::Host(cache.clone()),
            "/root/.cache/x",
            BindAccess::ReadWrite,
        ))?
        .with_mount(Mount::bind(
            MountSource::Host(rw.clone()),
            "/scratch",
            BindAccess::Discard,
        ))?
        .with_mount(Mount::bind(
            MountSource::Host(secret.clone()),
            "/run/secrets/token",
            BindAccess::ReadOnly,
        ))?
        .with_mount(Mount::bind(
            MountSource::Layers {
                lowers: vec![stage.upper.clone(), base_layer(host_arch())],
                path: "/out".into(),
            },
            "/from",
            BindAccess::ReadOnly,
        ))?
        .with_mount(Mount::tmpfs("/tmp/t", Some(1 << 20), 0o1777))?
        .with_mount(Mount::bind(
            MountSource::Host(ctx.clone()),
            "/tmp/t/nested",
            BindAccess::ReadOnly,
        ))?
        .with_mount(Mount::bind(
            MountSource::Host(secret.clone()),
            "/dev/pipes/EOF",
            BindAccess::ReadOnly,
        ))?;
    let out = ok(&sb, &s)?;
    eq(
        out.as_str(),
        "context\nsrc-ro\nscribble\ns3cret\nbuilt\nfrom-ro\n1\nfull\nf\ns3cret\n",
        "output",
    )?;
    eq(
        fs::read_to_string(cache.join("entry"))?,
        "cached\n".into(),
        "cache mount written",
    )?;
    eq(
        fs::read_to_string(rw.join("keep"))?,
        "keep\n".into(),
        "discarded writes",
    )?;
    check(!ctx.join("new").exists(), || {
        "read-only source written".into()
    })?;
    // Only /root (copied up for nothing? no: untouched) — mount points never reach the upper.
    eq(upper_listing(&run.upper), Vec::<String>::new(), "upper")
}

fn mount_targets_cannot_escape() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let img = workdir();
    std::os::unix::fs::symlink("../../..", img.path().join("esc"))?;
    std::os::unix::fs::symlink("/tmp", img.path().join("tmplink"))?;
    let lowers = [img.path().to_path_buf(), base];
    let host = workdir();
    for target in ["/../etc/x", "/esc/x", "/tmp/../../x"] {
        let run = run_dirs();
        let s = spec(lowers.clone(), &run, "true").with_mount(Mount::bind(
            MountSource::Host(host.path().into()),
            target,
            BindAccess::ReadOnly,
        ))?;
        match exec(&sb, &s) {
            Err(SandboxError::PathEscapes { path }) => eq(path.as_str(), target, "reported path")?,
            Err(e) => return Err(format!("{target}: wrong error: {e}").into()),
            Ok(o) => return Err(format!("{target}: ran ({})", o.status).into()),
        }
    }
    // A symlink inside the root is followed inside it.
    let run = run_dirs();
    fs::write(host.path().join("marker"), "m\n")?;
    let s = spec(lowers.clone(), &run, "cat /tmp/in/marker").with_mount(Mount::bind(
        MountSource::Host(host.path().into()),
        "/tmplink/in",
        BindAccess::ReadOnly,
    ))?;
    eq(ok(&sb, &s)?.as_str(), "m\n", "symlinked target")?;
    eq(upper_listing(&run.upper), Vec::<String>::new(), "upper")
}

fn nothing_left_after_success_and_failure() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    // Success, with a daemon left running in the background.
    let run = run_dirs();
    let marker = "sleep 3331";
    let out = ok(
        &sb,
        &spec(
            [base.clone()],
            &run,
            &format!("({marker} &) ; echo started"),
        ),
    )?;
    eq(out.as_str(), "started\n", "output")?;
    assert_nothing_left(marker, &run.scratch, Duration::ZERO)?;
    // Failure of the command.
    let run = run_dirs();
    let o = exec(
        &sb,
        &spec([base.clone()], &run, &format!("{marker} & exit 7")),
    )?;
    eq(o.status, ExitStatus::Exited(7), "status")?;
    assert_nothing_left(marker, &run.scratch, Duration::ZERO)?;
    // Failure of the preparation (a mount source that is a file, over a directory target).
    let run = run_dirs();
    let f = run.scratch.with_extension("file");
    fs::write(&f, "x")?;
    let s = spec([base.clone()], &run, "true").with_mount(Mount::bind(
        MountSource::Host(f.clone()),
        "/etc",
        BindAccess::ReadOnly,
    ))?;
    check(
        matches!(exec(&sb, &s), Err(SandboxError::BadPath { .. })),
        || "file over directory".into(),
    )?;
    assert_nothing_left(marker, &run.scratch, Duration::ZERO)?;
    eq(fs::read_dir(&run.scratch)?.count(), 0, "scratch emptied")?;
    // Failure inside the init, after the overlay and /proc are mounted: a mount point
    // cannot be made in procfs.
    let run = run_dirs();
    let s = spec([base], &run, "true").with_mount(Mount::bind(
        MountSource::Host(f),
        "/proc/rbuild-test",
        BindAccess::ReadOnly,
    ))?;
    match exec(&sb, &s) {
        Err(e @ SandboxError::Setup { .. }) => check(
            e.to_string()
                .contains("create mount point /proc/rbuild-test")
                || e.to_string().contains("proc/rbuild-test"),
            || e.to_string(),
        )?,
        other => return Err(format!("{:?}", other.map(|o| o.status)).into()),
    }
    assert_nothing_left(marker, &run.scratch, Duration::ZERO)?;
    eq(upper_listing(&run.upper), Vec::<String>::new(), "upper")?;
    eq(fs::read_dir(&run.scratch)?.count(), 0, "scratch emptied")
}

fn cancel_tears_everything_down() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let marker = "sleep 2718";
    let s = spec(
        [base],
        &run,
        &format!("echo ready; {marker} & exec {marker}"),
    );
    let cancel = CancelHandle::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            sb.run(&s, &cancel, &mut |_, b| {
                let _ = tx.send(b.to_vec());
            })
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        let during = (|| -> R {
            eq(got.ok(), Some(b"ready\n".to_vec()), "first output")?;
            let start = Instant::now();
            while processes_with(marker).len() < 2 && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let procs = processes_with(marker);
            eq(procs.len(), 2, "sandboxed processes")?;
            let own = fs::read_to_string("/proc/self/mountinfo")?;
            check(
                !own.contains(&run.scratch.to_string_lossy().into_owned()),
                || "overlay visible on the host".into(),
            )?;
            let theirs = fs::read_to_string(format!("/proc/{}/mountinfo", procs[0]))?;
            check(
                theirs.contains(" / / ") && theirs.contains("overlay"),
                || theirs.clone(),
            )
        })();
        cancel.cancel();
        (during, h.join().unwrap())
    });
    result.0?;
    check(matches!(result.1, Err(SandboxError::Cancelled)), || {
        format!("{:?}", result.1.map(|_| ()))
    })?;
    // Everything is gone by the time run returns.
    assert_nothing_left(marker, &run.scratch, Duration::ZERO)?;
    eq(fs::read_dir(&run.scratch)?.count(), 0, "scratch emptied")
}

fn host_process_killed(signal: &str) -> R {
    let base = base_layer(host_arch());
    let run = run_dirs();
    let marker = if signal == "INT" {
        "sleep 1618"
    } else {
        "sleep 1414"
    };
    // A shell's background job inherits SIGINT ignored (as `cmd &` without job control
    // does): restore the default so the signal is the unhandled one the test means.
    let mut c = child(
        "sleep",
        &["env", "--default-signal=INT"],
        &[("SANDBOX_TEST_MARKER", marker)],
    )
    .env("SANDBOX_TEST_BASE", &base)
    .env("SANDBOX_TEST_UPPER", &run.upper)
    .env("SANDBOX_TEST_SCRATCH", &run.scratch)
    .stdout(Stdio::piped())
    .spawn()?;
    let mut first = String::new();
    BufReader::new(c.stdout.take().ok_or("stdout")?).read_line(&mut first)?;
    eq(first.as_str(), "ready\n", "child output")?;
    check(!processes_with(marker).is_empty(), || {
        "the sandbox is not running".into()
    })?;
    let pid = rustix::process::Pid::from_raw(c.id() as i32).ok_or("pid")?;
    let sig = if signal == "INT" {
        rustix::process::Signal::INT
    } else {
        rustix::process::Signal::KILL
    };
    rustix::process::kill_process(pid, sig)?;
    let st = c.wait()?;
    check(!st.success(), || format!("child: {st}"))?;
    assert_nothing_left(marker, &run.scratch, Duration::from_secs(5))
}

fn arm64_runs_under_qemu() -> R {
    if host_arch() == "arm64" {
        return Ok(());
    }
    let sb = overlay();
    let base = base_layer("arm64");
    let run = run_dirs();
    let s = spec([base], &run, "uname -m; echo hi > /f").with_platform("linux/arm64")?;
    eq(ok(&sb, &s)?.as_str(), "aarch64\n", "uname -m")?;
    eq(
        upper_listing(&run.upper),
        vec!["f file \"hi\\n\" nlink=1 644 0:0".to_string()],
        "upper",
    )
}

// ---------------------------------------------------------------- child modes

fn child_main(mode: &str) -> i32 {
    match mode {
        "describe" => {
            fs::create_dir_all("/var/tmp/rbuild-sandbox-tests").unwrap();
            match Sandbox::detect(Path::new("/var/tmp/rbuild-sandbox-tests")) {
                Ok(sb) => {
                    println!("{}", sb.capabilities().describe());
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
        "diff" => {
            // Unprivileged: the base comes from the parent, auto mode must fall back.
            let base = PathBuf::from(std::env::var("SANDBOX_TEST_BASE").unwrap());
            let sb = Sandbox::detect(Path::new("/var/tmp/rbuild-sandbox-tests")).unwrap();
            let r1 = run_dirs();
            let o1 = exec(&sb, &spec([base.clone()], &r1, STEP1)).unwrap();
            assert_eq!(
                (o1.status, o1.stdout.as_str()),
                (ExitStatus::Exited(0), "ok\n"),
                "{}",
                o1.stderr
            );
            let r2 = run_dirs();
            let o2 = exec(&sb, &spec([r1.upper.clone(), base.clone()], &r2, STEP2)).unwrap();
            assert_eq!(
                (o2.status, o2.stdout.as_str()),
                (ExitStatus::Exited(0), "ok\n"),
                "{}",
                o2.stderr
            );
            // Mounts become copies: read-only content, a cache that stays cold, a tmpfs
            // that is an empty directory, files below /dev; none reaches the diff.
            let host = workdir();
            let (src, cache) = (host.path().join("src"), host.path().join("cache"));
            fs::create_dir(&src).unwrap();
            fs::create_dir(&cache).unwrap();
            fs::write(src.join("f"), "context\n").unwrap();
            let r3 = run_dirs();
            let s3 = spec([r1.upper.clone(), base.clone()], &r3, MOUNTS_SCRIPT);
            let s3 = with_test_mounts(s3, &src, &cache);
            let o3 = exec(&sb, &s3).unwrap();
            let v = serde_json::json!({
                "describe": sb.capabilities().describe(),
                "listings": [upper_listing(&r1.upper), upper_listing(&r2.upper)],
                "mounts": [format!("{}\n{}{}", o3.status, o3.stdout, o3.stderr), upper_listing(&r3.upper)],
                "cache": fs::read_dir(&cache).unwrap().count(),
            });
            println!("{v}");
            0
        }
        "sleep" => {
            let var = |k: &str| PathBuf::from(std::env::var(k).unwrap());
            let marker = std::env::var("SANDBOX_TEST_MARKER").unwrap();
            let sb = Sandbox::detect_with(
                Path::new("/var/tmp/rbuild-sandbox-tests"),
                ModeRequest::Overlay,
            )
            .unwrap();
            let s = RunSpec::new(
                Rootfs::Layers {
                    lowers: vec![var("SANDBOX_TEST_BASE")],
                    upper: var("SANDBOX_TEST_UPPER"),
                },
                var("SANDBOX_TEST_SCRATCH"),
                vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("echo ready; {marker} & exec {marker}"),
                ],
            )
            .unwrap();
            let mut stdout = std::io::stdout();
            let _ = sb.run(&s, &CancelHandle::new(), &mut |_, b| {
                use std::io::Write;
                let _ = stdout.write_all(b);
                let _ = stdout.flush();
            });
            0
        }
        "umask" => {
            // Started under `umask 077`: the step still gets 022, and the stub of a mount
            // target's missing parent (copied up when written into) is 0755.
            let var = |k: &str| PathBuf::from(std::env::var(k).unwrap());
            let sb = Sandbox::detect(Path::new("/var/tmp/rbuild-sandbox-tests")).unwrap();
            let s = RunSpec::new(
                Rootfs::Layers { lowers: vec![var("SANDBOX_TEST_BASE")], upper: var("SANDBOX_TEST_UPPER") },
                var("SANDBOX_TEST_SCRATCH"),
                vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "umask; touch /f; mkdir /d; touch /new/x; stat -c %a /f /d | tr '\\n' ' ' | sed 's/ $//'; echo".into(),
                ],
            )
            .unwrap()
            .with_mount(Mount::tmpfs("/new/mnt", None, 0o755))
            .unwrap();
            let o = exec(&sb, &s).unwrap();
            print!("{}", o.stdout);
            eprint!("{}", o.stderr);
            i32::from(!o.status.success())
        }
        "bench" => {
            // Not a test: `SANDBOX_TEST_CHILD=bench <this binary>` prints the cost of a run.
            let base = base_layer(host_arch());
            for req in [ModeRequest::Overlay, ModeRequest::Chroot] {
                let sb = sandbox(req);
                let n = 20;
                let start = Instant::now();
                for _ in 0..n {
                    let run = run_dirs();
                    ok(&sb, &spec([base.clone()], &run, "true")).unwrap();
                }
                let per = start.elapsed() / n;
                println!(
                    "{}: {per:?} per `sh -c true` run",
                    sb.capabilities().describe()
                );
            }
            let start = Instant::now();
            sandbox(ModeRequest::Auto);
            println!("detect: {:?}", start.elapsed());
            0
        }
        other => {
            eprintln!("unknown child mode {other}");
            2
        }
    }
}

/// A writable step's overlay is mounted `volatile` (the step's fsyncs do not reach the
/// disk; the snapshot store syncs before publishing), and the scratch directory it used is
/// emptied afterwards all the same.
fn writable_overlay_is_volatile() -> R {
    let sb = overlay();
    let base = base_layer(host_arch());
    let run = run_dirs();
    let out = ok(
        &sb,
        &spec(
            [base],
            &run,
            "grep ' / / ' /proc/self/mountinfo; sync; echo x > /f",
        ),
    )?;
    check(out.contains("overlay") && out.contains("volatile"), || {
        format!("root mount: {out}")
    })?;
    let left: Vec<_> = fs::read_dir(&run.scratch)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    check(left.is_empty(), || format!("scratch not emptied: {left:?}"))?;
    eq(
        upper_listing(&run.upper),
        vec!["f file \"x\\n\" nlink=1 644 0:0".to_owned()],
        "upper",
    )?;
    Ok(())
}
