//! rbuild as the Docker CLI plugin `docker-buildx`, driven through the real `docker` CLI
//! (a `DOCKER_CONFIG` whose `cli-plugins/docker-buildx` links to rbuild) with the command
//! lines `docker/setup-buildx-action` and `docker/build-push-action` run (issue 20),
//! parsed as `docker/actions-toolkit` parses them.

use std::path::Path;
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Docker config directory with rbuild installed as the buildx plugin.
fn docker_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_rbuild"),
        dir.path().join("cli-plugins/docker-buildx"),
    )
    .unwrap();
    dir
}

fn docker(config: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .current_dir(cwd)
        .env("DOCKER_CONFIG", config)
        // As build-push-action runs the build.
        .env("BUILDX_METADATA_WARNINGS", "true")
        .output()
        .expect("run docker")
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// actions-toolkit's `Buildx.parseVersion`: `/\sv?([0-9a-f]{7}|[0-9.]+)/`.
fn parse_version(stdout: &str) -> Option<String> {
    let b = stdout.as_bytes();
    for i in 0..b.len() {
        if !b[i].is_ascii_whitespace() {
            continue;
        }
        let mut j = i + 1;
        if b.get(j) == Some(&b'v') {
            j += 1;
        }
        let hex: String = stdout[j..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        if hex.len() >= 7 {
            return Some(hex[..7].to_owned());
        }
        let num: String = stdout[j..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if !num.is_empty() {
            return Some(num);
        }
    }
    None
}

/// actions-toolkit's `Builder.parseInspect` for the keys the actions read.
fn parse_inspect(stdout: &str) -> Vec<(String, String)> {
    stdout
        .trim()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

#[test]
fn setup_buildx_action_commands() {
    let config = docker_config();
    let cwd = config.path();
    // isAvailable: `docker buildx` exits 0.
    ok(&docker(config.path(), cwd, &["buildx"]));
    let version = ok(&docker(config.path(), cwd, &["buildx", "version"]));
    let v = parse_version(&version).expect("a version actions-toolkit parses");
    assert_eq!(v, "0.23.0", "{version}");
    // The plugin is listed by the CLI itself.
    let help = text(&docker(config.path(), cwd, &["--help"]).stdout);
    assert!(
        help.contains("buildx*") && help.contains("rbuild"),
        "{help}"
    );

    let created = ok(&docker(
        config.path(),
        cwd,
        &[
            "buildx",
            "create",
            "--name",
            "builder-3f2a",
            "--driver",
            "docker-container",
            "--buildkitd-flags",
            "--allow-insecure-entitlement security.insecure",
            "--use",
        ],
    ));
    assert_eq!(created.trim(), "builder-3f2a");
    for args in [
        &[
            "buildx",
            "inspect",
            "--bootstrap",
            "--builder",
            "builder-3f2a",
        ][..],
        &["buildx", "inspect", "builder-3f2a"][..],
        &["buildx", "inspect"][..],
    ] {
        let info = parse_inspect(&ok(&docker(config.path(), cwd, args)));
        let get = |k: &str| {
            info.iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("driver"), ["rbuild"], "{info:?}");
        assert_eq!(get("status"), ["running"]);
        assert_eq!(get("buildkit version"), ["v0.32.2"]);
        assert!(
            get("platforms")[0].split(", ").any(|p| p == "linux/amd64"),
            "{info:?}"
        );
        assert_eq!(get("name").len(), 2, "builder and node names: {info:?}");
    }
    for args in [
        &["buildx", "use", "builder-3f2a"][..],
        &["buildx", "stop", "builder-3f2a"][..],
        &["buildx", "rm", "builder-3f2a"][..],
    ] {
        let out = docker(config.path(), cwd, args);
        ok(&out);
        assert!(
            text(&out.stderr).contains("nothing to do"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn build_push_action_command_line() {
    let config = docker_config();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("repo");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM 127.0.0.1:5000/library/busybox AS Base\nRUN echo hi > /hi\n",
    )
    .unwrap();
    let tmp = dir.path().join("docker-actions-toolkit-x1");
    std::fs::create_dir(&tmp).unwrap();
    let iid = tmp.join("build-iidfile-5c2ab.txt");
    let md = tmp.join("build-metadata-5c2ab.json");
    let tag = format!("127.0.0.1:5000/checks-helper/action:{}", std::process::id());
    // context.getArgs for: context: ., push: true, tags: TAG, a public repository (default
    // provenance mode=max with the run's builder-id).
    let args = [
        "buildx",
        "build",
        "--iidfile",
        iid.to_str().unwrap(),
        "--attest",
        "type=provenance,mode=max,builder-id=https://github.com/o/r/actions/runs/1/attempts/1",
        "--tag",
        &tag,
        "--metadata-file",
        md.to_str().unwrap(),
        "--push",
        ".",
    ];
    let out = docker(config.path(), &ctx, &args);
    ok(&out);
    let image_id = std::fs::read_to_string(&iid).unwrap();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&md).unwrap()).unwrap();
    let digest = meta["containerimage.digest"].as_str().expect("digest");
    assert_eq!(meta["image.name"], tag.as_str());
    // The pushed image is there under that digest.
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .output()
        .unwrap();
    ok(&inspect);
    let raw = inspect.stdout;
    let got = format!("sha256:{}", sha256_hex(&raw));
    assert_eq!(got, digest);
    // The check warning is printed after the build, as buildx prints it.
    assert!(
        text(&out.stderr)
            .contains(" - StageNameCasing: Stage name 'Base' should be lowercase (line 1)"),
        "{}",
        text(&out.stderr)
    );

    // call: check, as the action passes it: findings on stdout, first line the summary.
    let out = docker(
        config.path(),
        &ctx,
        &["buildx", "build", "--call", "check", "."],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().next(),
        Some("Check complete, 1 warning has been found!")
    );

    // The build summary's history export is not available: an error the action warns of.
    let out = docker(
        config.path(),
        &ctx,
        &["buildx", "history", "export", "--ref", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("buildx history is not available with rbuild"));
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
