//! `rbuild bake` (issue 18): the examples' compose file (and bake HCL) built in one process
//! and pushed to the local registry, `--print`, `--list`, `--metadata-file`, the first
//! failure stopping the other targets unless `--keep-going`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use test_support::{describe, output, run_stdout, workspace_root};

fn state_dir() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/rbuild-tests");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The e2e tests' cache: the example services' steps are shared with them.
fn cache_dir() -> PathBuf {
    std::env::var_os("RBUILD_E2E_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join("cache-e2e"))
}

fn unique() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("t{}-{}", std::process::id(), n % 1_000_000_000)
}

/// `rbuild bake ARGS` in `cwd` with `env`.
fn bake(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Command, Output) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("bake").args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in ["REGISTRY", "TAG", "BASE_IMAGE", "SOURCE_DATE_EPOCH"] {
        if !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    let t = Instant::now();
    let out = output(&mut cmd);
    eprintln!("{cmd:?}: {:?} in {:.1?}", out.status, t.elapsed());
    (cmd, out)
}

#[track_caller]
fn ok(cmd: &Command, out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(cmd, out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn registry_digest(reference: &str) -> String {
    let text = run_stdout(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let v: Value = serde_json::from_str(&text).expect("skopeo JSON");
    v["Digest"].as_str().expect("Digest").to_owned()
}

/// Both services of the examples' compose file, built by one `rbuild bake --push` and
/// pushed where `REGISTRY`/`TAG` say; the metadata file has one entry per target with
/// the digest the registry serves; every progress line names its target.
#[test]
fn compose_example_pushes_both_services() {
    let root = workspace_root();
    let tag = unique();
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = dir.path().join("metadata.json");
    let cache = cache_dir();
    let (cmd, out) = bake(
        &root,
        &[
            "-f",
            "examples/docker-compose.core-services.yml",
            "--push",
            "--progress=plain",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
        &[("REGISTRY", "127.0.0.1:5000/bake"), ("TAG", &tag)],
    );
    ok(&cmd, &out);
    let log = String::from_utf8_lossy(&out.stderr);
    for svc in ["auth-service", "user-service"] {
        assert!(
            log.contains(&format!("[{svc} ")),
            "no progress line names {svc}:\n{log}"
        );
    }
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata file"))
        .expect("metadata JSON");
    for svc in ["auth-service", "user-service"] {
        let reference = format!("127.0.0.1:5000/bake/examples/{svc}:{tag}");
        let entry = &m[svc];
        assert_eq!(entry["image.name"], json!(reference), "{m:#}");
        let digest = entry["containerimage.digest"]
            .as_str()
            .unwrap_or_else(|| panic!("no digest for {svc}: {m:#}"));
        assert_eq!(registry_digest(&reference), digest, "{svc}");
    }
    assert_eq!(m.as_object().map(|o| o.len()), Some(2), "{m:#}");
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// A compose project: `bad` fails at once, `slow` sleeps `secs` seconds then succeeds.
fn failing_project(secs: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "compose.yaml",
        "services:\n  bad:\n    build: ./bad\n  slow:\n    build: ./slow\n",
    );
    write(d, "bad/Dockerfile", "FROM scratch\nCOPY missing-file /x\n");
    write(
        d,
        "slow/Dockerfile",
        &format!(
            "FROM 127.0.0.1:5000/library/busybox:latest\nRUN echo {} && sleep {secs}\n",
            unique()
        ),
    );
    dir
}

/// The first failure stops the other targets: `slow` (a minute of sleep) is cancelled,
/// the error names the failed target, and the exit status is 1.
#[test]
fn first_failure_cancels_the_other_targets() {
    let dir = failing_project(60);
    let cache = dir.path().join("cache");
    let t = Instant::now();
    let (cmd, out) = bake(
        dir.path(),
        &["--progress=plain", "--cache-dir", cache.to_str().unwrap()],
        &[],
    );
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&cmd, &out));
    assert!(err.contains("target bad:"), "{err}");
    assert!(err.contains("slow: cancelled"), "{err}");
    assert!(
        took.as_secs() < 50,
        "slow was not cancelled: {took:?}\n{err}"
    );
}

/// `--keep-going`: the other targets finish (and are in the metadata file) although one
/// failed; the exit status is still 1.
#[test]
fn keep_going_finishes_the_other_targets() {
    let dir = failing_project(1);
    let cache = dir.path().join("cache");
    let meta = dir.path().join("m.json");
    let (cmd, out) = bake(
        dir.path(),
        &[
            "--keep-going",
            "--progress=plain",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&cmd, &out));
    assert!(err.contains("target bad:"), "{err}");
    assert!(err.contains("slow: build complete"), "{err}");
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).unwrap();
    assert!(
        m["slow"]["containerimage.config.digest"].is_string(),
        "{m:#}"
    );
    assert!(m.get("bad").is_none(), "{m:#}");
}

/// `--print` of the examples' compose file with `--set`: buildx's shape, written out.
#[test]
fn print_compose_example_with_set() {
    let root = workspace_root();
    let (cmd, out) = bake(
        &root,
        &[
            "-f",
            "examples/docker-compose.core-services.yml",
            "--print",
            "--set",
            "*.platform=linux/amd64,linux/arm64",
            "--set",
            "auth-*.args.EXTRA=1",
            "auth-service",
        ],
        &[("TAG", "v1")],
    );
    let v: Value = serde_json::from_str(&ok(&cmd, &out)).expect("--print is JSON");
    let want = json!({
        "group": {"default": {"targets": ["auth-service"]}},
        "target": {"auth-service": {
            "context": "examples/auth-service",
            "dockerfile": "Dockerfile",
            "args": {"BASE_IMAGE": "127.0.0.1:5000/library/node:20-slim", "EXTRA": "1"},
            "tags": ["127.0.0.1:5000/examples/auth-service:v1"],
            "platforms": ["linux/amd64", "linux/arm64"]
        }}
    });
    assert_eq!(v, want);
}

/// `--list targets`, `--load` refused with the reason, unknown targets and files named.
#[test]
fn list_load_and_errors() {
    let root = workspace_root();
    let f = "examples/docker-compose.core-services.yml";
    let (cmd, out) = bake(&root, &["-f", f, "--list", "targets"], &[]);
    let text = ok(&cmd, &out);
    assert!(text.starts_with("TARGET\tDESCRIPTION\n"), "{text}");
    for t in ["default", "auth-service", "user-service"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{t}\t"))),
            "{text}"
        );
    }
    let (cmd, out) = bake(&root, &["-f", f, "--load"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&cmd, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--load is not supported"));
    let (cmd, out) = bake(&root, &["-f", f, "nope"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&cmd, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to find target \"nope\""));
    let empty = tempfile::tempdir().unwrap();
    let (cmd, out) = bake(empty.path(), &["--print"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&cmd, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("docker-bake.hcl"));
}

/// A target's configuration is judged by builder-core before anything is built (exit
/// status 2, the target named): a push needs a name, a docker archive one platform, a
/// platform must exist.
#[test]
fn targets_are_validated_by_the_library() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "docker-bake.hcl",
        r#"
target "push" {
  dockerfile-inline = "FROM scratch\nLABEL a=b\n"
  output = ["type=registry"]
}
target "arch" {
  dockerfile-inline = "FROM scratch\nLABEL a=b\n"
  platforms = ["linux/amd64", "linux/arm64"]
  output = ["type=docker,dest=x.tar"]
}
target "typo" {
  dockerfile-inline = "FROM scratch\nLABEL a=b\n"
  platforms = ["linux/amd65"]
}
"#,
    );
    for (target, needle) in [
        ("push", "tag is needed when pushing to registry"),
        (
            "arch",
            "docker exporter does not currently support exporting manifest lists",
        ),
        ("typo", "unknown architecture \"amd65\""),
    ] {
        let (cmd, out) = bake(dir.path(), &[target], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&cmd, &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{target}: {err}");
        assert!(
            err.contains(&format!("{target}.")),
            "{target} not named: {err}"
        );
    }
    assert!(!dir.path().join("x.tar").exists());
}

/// The examples' bake HCL (group, variables, inheritance, matrix): `--print` as written
/// here from buildx's documented shape, `--list variables`, and `--push` building both
/// services.
#[test]
fn example_bake_hcl_prints_lists_and_pushes() {
    let root = workspace_root();
    let f = "examples/docker-bake.hcl";
    let (cmd, out) = bake(&root, &["-f", f, "--print"], &[("TAG", "v3")]);
    let v: Value = serde_json::from_str(&ok(&cmd, &out)).expect("--print is JSON");
    let target = |svc: &str| {
        json!({
            "context": format!("examples/{svc}"),
            "dockerfile": "Dockerfile",
            "args": {"BASE_IMAGE": "127.0.0.1:5000/library/node:20-slim"},
            "tags": [format!("127.0.0.1:5000/examples/{svc}:v3")]
        })
    };
    let want = json!({
        "group": {
            "default": {"description": "Both services", "targets": ["services"]},
            "services": {"targets": ["auth-service", "user-service"]}
        },
        "target": {"auth-service": target("auth-service"), "user-service": target("user-service")}
    });
    assert_eq!(v, want);

    let (cmd, out) = bake(&root, &["-f", f, "--list=variables"], &[("TAG", "v3")]);
    let text = ok(&cmd, &out);
    assert!(text.lines().any(|l| l == "TAG\tstring\tv3\t"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("REGISTRY\tstring\t127.0.0.1:5000\tWhere")),
        "{text}"
    );

    let tag = unique();
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = dir.path().join("metadata.json");
    let cache = cache_dir();
    let (cmd, out) = bake(
        &root,
        &[
            "-f",
            f,
            "--push",
            "--progress=plain",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
        &[("REGISTRY", "127.0.0.1:5000/bake-hcl"), ("TAG", &tag)],
    );
    ok(&cmd, &out);
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).unwrap();
    for svc in ["auth-service", "user-service"] {
        let reference = format!("127.0.0.1:5000/bake-hcl/examples/{svc}:{tag}");
        assert_eq!(m[svc]["image.name"], json!(reference), "{m:#}");
        assert_eq!(
            Some(registry_digest(&reference).as_str()),
            m[svc]["containerimage.digest"].as_str(),
            "{svc}"
        );
    }
}

/// A definition error names the file, line and column and the key, exit status 1.
#[test]
fn hcl_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "docker-bake.hcl",
        "target \"default\" {\n  dockerfile-inline = \"FROM ${BASE}\"\n}\n",
    );
    let (cmd, out) = bake(dir.path(), &["--print"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker-bake.hcl:2:3: target.default.dockerfile-inline: there is no variable named \"BASE\""),
        "{err}"
    );
}
