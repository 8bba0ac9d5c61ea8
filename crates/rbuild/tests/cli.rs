//! The command line: flags and values are validated (exit 2, one line naming them),
//! `--call outline|targets` print what buildx prints, Dockerfile errors name the file,
//! line and column (exit 1), and a build without `--call` builds.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs rbuild with `args` in `cwd`, feeding `stdin`.
fn rbuild_in(cwd: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn rbuild");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for rbuild")
}

fn rbuild(cwd: &Path, args: &[&str]) -> Output {
    rbuild_in(cwd, args, None, &[])
}

/// Fails with everything needed to understand why.
#[track_caller]
fn expect_status(out: &Output, code: i32, args: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "rbuild {args:?}: status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A context directory with a Dockerfile.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}

const MULTI: &str = "\
# syntax=docker/dockerfile:1
# GO_VERSION selects the toolchain
ARG GO_VERSION=1.22
ARG UNUSED=x

# build compiles the service
FROM golang:${GO_VERSION} AS build
# VERSION is stamped into the binary
ARG VERSION=dev
RUN --mount=type=secret,id=token,required --mount=type=ssh go build

# release is the shipped image
FROM scratch AS release
COPY --from=build /out /

FROM release
";

/// Usage errors: status 2 and exactly one line on stderr that names the culprit.
#[track_caller]
fn usage_error(args: &[&str], names: &str) {
    let dir = context(MULTI);
    let out = rbuild(dir.path(), args);
    expect_status(&out, 2, args);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(names), "{err:?} does not name {names:?}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn version() {
    let out = rbuild(Path::new("."), &["--version"]);
    expect_status(&out, 0, &["--version"]);
    assert_eq!(
        stdout(&out),
        format!("rbuild {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn build_help_reads_like_buildx() {
    let out = rbuild(Path::new("."), &["build", "--help"]);
    expect_status(&out, 0, &["build", "--help"]);
    let help = stdout(&out);
    assert!(
        help.starts_with("Usage:  rbuild build [OPTIONS] PATH\n\nStart a build\n\nOptions:\n"),
        "{help}"
    );
    for flag in [
        "--allow",
        "--build-arg",
        "--cache-dir",
        "--call",
        "-f, --file",
        "--iidfile",
        "--insecure-registry",
        "--label",
        "--metadata-file",
        "--network",
        "--no-cache",
        "-o, --output",
        "--platform",
        "--progress",
        "--push",
        "--secret",
        "--ssh",
        "-t, --tag",
        "--target",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    assert!(help.contains("Set build-time variables"));
}

#[test]
fn top_level_help_lists_build() {
    let out = rbuild(Path::new("."), &["--help"]);
    expect_status(&out, 0, &["--help"]);
    assert!(stdout(&out).contains("Start a build"), "{}", stdout(&out));
}

#[test]
fn invalid_flags_and_values_exit_2_with_one_line() {
    usage_error(&["build", "--bogus", "."], "--bogus");
    usage_error(&["build", "--platform", "linux/amd65", "."], "--platform");
    usage_error(&["build", "--output", "type=cloud,dest=x", "."], "--output");
    usage_error(&["build", "-o", "type=oci", "."], "--output");
    usage_error(&["build", "--network", "bridge", "."], "--network");
    usage_error(&["build", "--progress", "fancy", "."], "--progress");
    usage_error(&["build", "-t", "Not/Lowercase", "."], "--tag");
    usage_error(&["build", "--secret", "src=/x", "."], "--secret");
    usage_error(&["build", "--ssh", "=x", "."], "--ssh");
    usage_error(&["build", "--allow", "root", "."], "--allow");
    usage_error(&["build", "--call", "lint2", "."], "--call");
    usage_error(&["build", "--build-arg", "=x", "."], "--build-arg");
    usage_error(
        &["build", "--insecure-registry", "http://x", "."],
        "--insecure-registry",
    );
    usage_error(&["build"], "PATH");
    usage_error(&["build", "a", "b"], "'b'");
    usage_error(&["frobnicate"], "frobnicate");
}

#[test]
fn inconsistent_options_exit_2() {
    usage_error(
        &["build", "--push", "."],
        "tag is needed when pushing to registry",
    );
    usage_error(
        &["build", "--call", "outline", "no-such-dir"],
        "no-such-dir",
    );
    usage_error(
        &["build", "-f", "nope.Dockerfile", "--call", "targets", "."],
        "--file",
    );
    usage_error(&["build", "--check", "--call", "outline", "."], "--call");
}

/// The grammars of `--output`, `--platform` and `-t` and the checks of the whole
/// configuration are the library's: its reasons, exit status 2, nothing built.
#[test]
fn outputs_platforms_and_names_are_judged_by_the_library() {
    let push_by_digest = [
        "build",
        "-o",
        "type=registry,push-by-digest=true",
        "-t",
        "r/app:1",
        ".",
    ];
    let cases: [(&[&str], &str); 7] = [
        (
            &["build", "--platform", "linux/amd65", "."],
            "unknown architecture \"amd65\"",
        ),
        (
            &["build", "--platform", "linux/amd64,,linux/arm64", "."],
            "--platform",
        ),
        (
            &["build", "-o", "-", "."],
            "standard output is not supported yet",
        ),
        (
            &["build", "-o", "type=oci,dest=-", "."],
            "standard output is not supported yet",
        ),
        (
            &["build", "-o", "type=oci,dest=o.tar,name=Bad/Name", "."],
            "invalid reference format",
        ),
        (&["build", "-o", r#"type=oci,"dest=o.tar"#, "."], "CSV"),
        (&push_by_digest, "can't push tagged ref"),
    ];
    for (args, names) in cases {
        usage_error(args, names);
    }
    // Checked before the Dockerfile is read, for every --call.
    usage_error(
        &[
            "build",
            "--call",
            "outline",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=docker,dest=o.tar",
            ".",
        ],
        "does not currently support exporting manifest lists",
    );
    // buildx's CSV: a quoted field holds the names; keys are case-blind.
    let dir = context(MULTI);
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--call",
            "outline",
            "-o",
            r#"TYPE=oci,dest=o.tar,"name=r/a:1,r/a:2""#,
            ".",
        ],
    );
    expect_status(&out, 0, &["build", "-o", "(quoted names)"]);
}

#[test]
fn call_targets_prints_like_buildx() {
    let dir = context(MULTI);
    let args = ["build", "--call", "targets", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    assert_eq!(
        stdout(&out),
        "TARGET    DESCRIPTION\n\
         build     compiles the service\n\
         release   is the shipped image\n\
         (default) \n"
    );
}

#[test]
fn call_outline_prints_args_secrets_and_ssh() {
    let dir = context(MULTI);
    let args = [
        "build",
        "--call",
        "outline",
        "--target",
        "release",
        "--build-arg",
        "VERSION=1.2",
        ".",
    ];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    assert_eq!(
        stdout(&out),
        "TARGET:      release\n\
         DESCRIPTION: is the shipped image\n\
         \n\
         BUILD ARG    VALUE   DESCRIPTION\n\
         GO_VERSION   1.22    selects the toolchain\n\
         VERSION      1.2     is stamped into the binary\n\
         \n\
         SECRET   REQUIRED\n\
         token    true\n\
         \n\
         SSH       REQUIRED\n\
         default   \n\
         \n"
    );
}

#[test]
fn call_outline_json() {
    let dir = context(MULTI);
    let args = ["build", "--call", "outline,format=json", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    // The default target (unnamed) needs release and build.
    assert!(v.get("name").is_none(), "{v}");
    assert_eq!(v["args"][0]["name"], "GO_VERSION");
    assert_eq!(v["args"][0]["value"], "1.22");
    assert_eq!(v["args"][0]["location"]["ranges"][0]["start"]["line"], 3);
    assert_eq!(v["secrets"][0]["name"], "token");
    assert_eq!(v["secrets"][0]["required"], true);
    assert!(v["sources"][0].is_string());
}

#[test]
fn build_arg_without_value_comes_from_the_environment() {
    let dir = context(MULTI);
    let args = [
        "build",
        "--call",
        "outline",
        "--build-arg",
        "GO_VERSION",
        ".",
    ];
    let out = rbuild_in(dir.path(), &args, None, &[("GO_VERSION", "1.23")]);
    expect_status(&out, 0, &args);
    assert!(
        stdout(&out).contains("GO_VERSION   1.23 "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dockerfile_from_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["build", "-f", "-", "--call", "targets", "."];
    let out = rbuild_in(dir.path(), &args, Some("FROM scratch AS only\n"), &[]);
    expect_status(&out, 0, &args);
    assert_eq!(
        stdout(&out),
        "TARGET         DESCRIPTION\nonly (default) \n"
    );
}

#[test]
fn dockerfile_errors_name_file_line_and_column() {
    let dir = context("FROM alpine\nRUN true\nFORM x\n");
    let args = ["build", "--call", "outline", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 1, &args);
    let err = stderr(&out);
    assert!(err.contains("unknown instruction: FORM"), "{err}");
    assert!(
        err.contains("./Dockerfile:3:1") || err.contains("Dockerfile:3:1"),
        "{err}"
    );
    assert!(err.contains("3 | FORM x"), "{err}");
}

#[test]
fn stage_errors_name_file_line_and_column() {
    let dir =
        context("FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n");
    let args = ["build", "--call", "outline", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 1, &args);
    let err = stderr(&out);
    assert!(
        err.contains("circular dependency detected on stage: a"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:"), "{err}");

    let dir = context(MULTI);
    let args = ["build", "--call", "outline", "--target", "bulid", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 1, &args);
    assert!(
        stderr(&out).contains("target stage \"bulid\" could not be found (did you mean build?)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_from_scratch_writes_an_oci_layout() {
    // No network: FROM scratch and a context file only.
    let dir = context("FROM scratch\nCOPY Dockerfile /df\nCMD [\"/df\"]\n");
    let cache = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let cache_arg = cache.path().to_str().unwrap().to_owned();
    let dest = format!("type=oci,dest={},tar=false", out_dir.display());
    let args = [
        "build",
        "--progress=plain",
        "--cache-dir",
        &cache_arg,
        "-t",
        "app:dev",
        "-o",
        &dest,
        ".",
    ];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    let index = std::fs::read_to_string(out_dir.join("index.json")).unwrap();
    assert!(
        index.contains("application/vnd.oci.image.manifest.v1+json"),
        "{index}"
    );
    assert!(
        stderr(&out).contains("COPY Dockerfile /df"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unused_build_args_are_reported() {
    let dir = context(MULTI);
    let args = ["build", "--call", "outline", "--build-arg", "NOPE=1", "."];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    assert!(
        stderr(&out).contains("one or more build-args [NOPE] were not consumed"),
        "{}",
        stderr(&out)
    );
}

/// The seed's services: the first thing a user runs works on them.
#[test]
fn seed_examples_outline_and_targets() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for service in ["auth-service", "user-service"] {
        let ctx = root.join("examples").join(service);
        if !ctx.join("Dockerfile").exists() {
            panic!("missing example {}", ctx.display());
        }
        let ctx = ctx.to_string_lossy().into_owned();
        let args = ["build", "--call", "targets", ctx.as_str()];
        let out = rbuild(&root, &args);
        expect_status(&out, 0, &args);
        assert!(
            stdout(&out).contains("runtime (default)"),
            "{}",
            stdout(&out)
        );
        let args = ["build", "--call", "outline", ctx.as_str()];
        let out = rbuild(&root, &args);
        expect_status(&out, 0, &args);
        assert!(stdout(&out).contains("BASE_IMAGE"), "{}", stdout(&out));
    }
}

/// Relative `--cache-dir`, context and output paths work: RUN mounts the cache's snapshots
/// as overlay lower directories, which must be absolute whatever the working directory.
#[test]
fn relative_paths_for_cache_context_and_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("app");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM 127.0.0.1:5000/library/busybox:latest\nRUN echo built > /built\nRUN cat /built\n",
    )
    .expect("write Dockerfile");
    let args = [
        "build",
        "--progress=plain",
        "--cache-dir",
        "cache",
        "-o",
        "type=local,dest=out",
        "app",
    ];
    let out = rbuild(dir.path(), &args);
    expect_status(&out, 0, &args);
    let built = std::fs::read_to_string(dir.path().join("out/built")).expect("out/built");
    assert_eq!(built, "built\n");
    assert!(dir.path().join("cache/snapshots").is_dir());
}

/// `RBUILD_SANDBOX` is read by the CLI and handed to `Build::sandbox_mode`: a bad value is
/// a usage error naming it, before anything is built.
#[test]
fn bad_sandbox_mode_is_a_usage_error() {
    let dir = context("FROM scratch\nCOPY Dockerfile /df\n");
    let cache = tempfile::tempdir().unwrap();
    let args = ["build", "--cache-dir", cache.path().to_str().unwrap(), "."];
    let out = rbuild_in(dir.path(), &args, None, &[("RBUILD_SANDBOX", "bogus")]);
    expect_status(&out, 2, &args);
    assert!(
        stderr(&out).contains("RBUILD_SANDBOX=\"bogus\""),
        "{}",
        stderr(&out)
    );
}
