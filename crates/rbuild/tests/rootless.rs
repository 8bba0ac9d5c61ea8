//! Rootless builds (issue 16, mode 2): the real binary run as the non-root user
//! `rbuild-test` (ranges in /etc/subuid and /etc/subgid, set up by scripts/testenv/up.sh)
//! builds the same image, to the digest, as root does; without subordinate ids it falls
//! back to a single-id mapping and says so; with `RBUILD_ROOTLESS=0` a RUN step fails
//! naming why. The tests run as root (they switch users with `setpriv`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::{LocalRegistry, describe, output, run_stdout};

const USER: &str = "rbuild-test";
/// A uid with no passwd entry and no subordinate ranges: the single-id fallback.
const LONE_UID: u32 = 54_321;

/// A directory every user may read and enter (tempdirs are 0700).
fn open_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("rbuild-rootless-{prefix}-"))
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn uid_of(user: &str) -> u32 {
    let out = run_stdout(Command::new("id").args(["-u", user]));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("id -u {user}: {out:?}: {e}"))
}

/// A directory owned by `uid`, for its home, cache and outputs.
fn owned_dir(parent: &Path, name: &str, uid: u32) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::os::unix::fs::chown(&d, Some(uid), Some(uid)).expect("chown");
    d
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = open_dir("ctx");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    std::fs::write(dir.path().join("app.txt"), "app\n").expect("app.txt");
    for f in ["Dockerfile", "app.txt"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    dir
}

/// `rbuild build --progress=plain --no-cache -o type=oci,...` of `ctx`, as root when
/// `who` is `None` (cache in `out_dir`), else with `setpriv` as (user, its home; cache in
/// `$XDG_CACHE_HOME`). The image and its metadata file go to `out_dir`.
fn build(ctx: &Path, out_dir: &Path, who: Option<(&str, &Path)>, env: &[(&str, &str)]) -> Output {
    let rbuild = env!("CARGO_BIN_EXE_rbuild");
    let mut cmd = match who {
        None => Command::new(rbuild),
        Some((user, _)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(rbuild);
            c
        }
    };
    cmd.arg("build");
    if let Some((_, home)) = who {
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", home)
            .env("XDG_CACHE_HOME", home.join("xdg-cache"));
    } else {
        cmd.arg("--cache-dir").arg(out_dir.join("root-cache"));
    }
    let cmd = cmd
        .args(["--progress=plain", "--no-cache"])
        .args(["--build-arg", "SOURCE_DATE_EPOCH=0"])
        .arg("-o")
        .arg(format!(
            "type=oci,dest={}",
            out_dir.join("image.tar").display()
        ))
        .arg("--metadata-file")
        .arg(out_dir.join("meta.json"))
        .arg(ctx)
        .envs(env.iter().copied());
    output(cmd)
}

fn digest(out_dir: &Path, cmd_out: &Output) -> String {
    let meta = out_dir.join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n{}",
            meta.display(),
            String::from_utf8_lossy(&cmd_out.stderr)
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).expect("metadata JSON");
    let d = v["containerimage.digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no containerimage.digest in {text}"))
        .to_owned();
    assert!(d.starts_with("sha256:"), "{d}");
    d
}

fn must_succeed(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n{err}",
        out.status
    );
    err
}

/// Owners other than root (a RUN chown, COPY --chown, USER), a whiteout, a directory
/// removed and made again (opaque), a RUN in its own network namespace.
fn ownership_dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN echo 'u:x:1234:2345::/home/u:/bin/sh' >> /etc/passwd && mkdir -p /home/u \\\n\
         \x20&& echo hi > /hi && chown 1234:2345 /hi /home/u && mkdir -m 0750 /d && chown 65534:1 /d \\\n\
         \x20&& rm /bin/sed && rm -rf /etc/network && mkdir /etc/network && ln -s hi /hi.link\n\
         COPY --chown=1234:2345 app.txt /home/u/app.txt\n\
         USER 1234\n\
         RUN --network=none echo mine > /home/u/mine && ls -ln /home/u\n"
    )
}

#[test]
fn rootless_build_has_the_digest_of_a_root_build() {
    let registry = LocalRegistry::ensure();
    let uid = uid_of(USER);
    let ctx = context(&ownership_dockerfile(&registry.busybox()));
    let work = open_dir("own");

    let root_out = owned_dir(work.path(), "root", 0);
    let out = build(ctx.path(), &root_out, None, &[]);
    let root_log = must_succeed(&out, "root build");
    assert!(root_log.contains(") as root\n"), "{root_log}");
    let root_digest = digest(&root_out, &out);

    let home = owned_dir(work.path(), "home", uid);
    let user_out = owned_dir(work.path(), "user-out", uid);
    let out = build(ctx.path(), &user_out, Some((USER, &home)), &[]);
    let log = must_succeed(&out, "rootless build");
    assert!(
        log.contains(&format!(
            "as rootless (uid {uid}; user namespace: 0 -> {uid}, 1.."
        )),
        "the first line must name the rootless mode and its mapping:\n{log}"
    );
    // overlayfs works in the user namespace (userxattr): no fallback to the copying mode.
    assert!(
        log.contains("(sandbox: namespaces+overlayfs) as rootless"),
        "{log}"
    );
    assert_eq!(
        digest(&user_out, &out),
        root_digest,
        "rootless and root builds differ\n{log}"
    );
    // The outputs belong to the user; the cache is in $XDG_CACHE_HOME.
    let tar = std::fs::metadata(user_out.join("image.tar")).expect("image.tar");
    assert_eq!(tar.uid(), uid, "the OCI archive must be the user's");
    let cache = home.join("xdg-cache/rbuild");
    assert!(
        cache.is_dir(),
        "no cache at {} (XDG_CACHE_HOME)",
        cache.display()
    );
}

#[test]
fn without_subordinate_ids_a_single_id_mapping_builds_root_owned_images() {
    let registry = LocalRegistry::ensure();
    // Only root-owned files (busybox's are root's): the same image as root's.
    let ctx = context(&format!(
        "FROM {}\nRUN echo hi > /hi && rm -rf /home && mkdir /home && rm /bin/sed\nCOPY app.txt /app.txt\n",
        registry.busybox()
    ));
    let work = open_dir("single");
    let root_out = owned_dir(work.path(), "root", 0);
    let out = build(ctx.path(), &root_out, None, &[]);
    must_succeed(&out, "root build");
    let root_digest = digest(&root_out, &out);

    let lone = LONE_UID.to_string();
    let home = owned_dir(work.path(), "home", LONE_UID);
    let lone_out = owned_dir(work.path(), "lone-out", LONE_UID);
    let out = build(ctx.path(), &lone_out, Some((&lone, &home)), &[]);
    let log = must_succeed(&out, "single-id build");
    assert!(
        log.contains("SINGLE-ID MAPPING") && log.contains("owned by root"),
        "the fallback must be said loudly:\n{log}"
    );
    assert_eq!(digest(&lone_out, &out), root_digest, "{log}");

    // Another owner cannot exist there: the step fails, it is not silently root's.
    let ctx = context(&format!(
        "FROM {}\nRUN touch /x && chown 1234 /x\n",
        registry.busybox()
    ));
    let out = build(ctx.path(), &lone_out, Some((&lone, &home)), &[]);
    assert!(
        !out.status.success(),
        "chown to an unmapped uid must fail\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rootless_disabled_refuses_run_steps_naming_why() {
    let registry = LocalRegistry::ensure();
    let uid = uid_of(USER);
    let ctx = context(&format!("FROM {}\nRUN true\n", registry.busybox()));
    let work = open_dir("off");
    let home = owned_dir(work.path(), "home", uid);
    let user_out = owned_dir(work.path(), "out", uid);
    let out = build(
        ctx.path(),
        &user_out,
        Some((USER, &home)),
        &[("RBUILD_ROOTLESS", "0")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("as non-root user {uid} without a user namespace"))
            && err.contains("RBUILD_ROOTLESS=0)"),
        "{}",
        describe(&Command::new("rbuild"), &out)
    );
}

/// `rbuild info` as `who` (root when `None`), its stdout; it must exit 0.
fn info(who: Option<(&str, &Path)>, env: &[(&str, &str)], json: bool) -> String {
    let rbuild = env!("CARGO_BIN_EXE_rbuild");
    let mut cmd = match who {
        None => Command::new(rbuild),
        Some((user, home)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(rbuild)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                .env("HOME", home);
            c
        }
    };
    cmd.arg("info").envs(env.iter().copied());
    if json {
        cmd.args(["--format", "json"]);
    }
    if who.is_none() {
        let dir = open_dir("info-root");
        cmd.arg("--cache-dir").arg(dir.path().join("cache"));
    }
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode_line<'a>(report: &'a str, mode: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{mode} ")))
        .unwrap_or_else(|| panic!("no {mode} line in:\n{report}"))
}

#[test]
fn info_reports_what_the_host_allows_in_each_mode() {
    // Root on this host: namespaces and overlayfs, the root mode in use.
    let root = info(None, &[], false);
    assert!(mode_line(&root, "root").contains("IN USE"), "{root}");
    assert!(root.contains("[ok] overlayfs"), "{root}");
    assert!(root.contains("newuidmap: /usr/bin/newuidmap"), "{root}");
    let v: serde_json::Value = serde_json::from_str(&info(None, &[], true)).expect("JSON");
    assert_eq!(v["privilege"], "root", "{v}");
    let modes: Vec<&str> = v["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(modes, ["root", "rootless", "unprivileged"], "{v}");

    // The test user: rootless with its subordinate ranges, overlayfs in the namespace.
    let uid = uid_of(USER);
    let work = open_dir("info");
    let home = owned_dir(work.path(), "home", uid);
    let user = info(Some((USER, &home)), &[], false);
    assert!(mode_line(&user, "rootless").contains("IN USE"), "{user}");
    assert!(
        mode_line(&user, "root").contains("unavailable: needs root in the host's user namespace"),
        "{user}"
    );
    assert!(
        user.contains("[ok] subordinate ids: rbuild-test: /etc/subuid ")
            && user.contains("[ok] newuidmap: /usr/bin/newuidmap: mapped this user namespace"),
        "{user}"
    );
    assert!(
        user.contains("(userxattr, in the user namespace)"),
        "{user}"
    );

    // Rootless turned off: the report says why the rootless mode is not in use.
    let off = info(Some((USER, &home)), &[("RBUILD_ROOTLESS", "0")], false);
    assert!(
        mode_line(&off, "rootless").contains("unavailable")
            && off.contains("not tried (RBUILD_ROOTLESS=0)"),
        "{off}"
    );
    assert!(off.contains("[no] namespaces and mounts"), "{off}");
}
