//! `rbuild build --call plan`: the CI planner's JSON (platforms and the stages the build
//! needs), usable to generate one CI job per platform.

use std::process::{Command, Output};

fn rbuild(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run rbuild")
}

const DOCKERFILE: &str = "\
ARG BASE=busybox
FROM ${BASE} AS deps
RUN true
FROM deps AS build
RUN true
FROM alpine AS lint
FROM scratch AS release
COPY --from=build /x /x
";

#[test]
fn plan_lists_platforms_and_needed_stages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let args = [
        "build",
        "--call",
        "plan",
        "--platform",
        "linux/amd64,linux/arm64",
        "--platform",
        "linux/amd64",
        "--build-arg",
        "BASE=127.0.0.1:5000/library/busybox:latest",
        ".",
    ];
    let out = rbuild(dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        plan["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(plan["target"], "release");
    let names: Vec<&str> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deps", "build", "release"]);
    assert_eq!(
        plan["targets"][0]["base"],
        "127.0.0.1:5000/library/busybox:latest"
    );
    assert_eq!(plan["targets"][1]["base"], "stage:deps");
    assert!(
        plan["host_platform"]
            .as_str()
            .unwrap()
            .starts_with("linux/")
    );

    // --target narrows the stages.
    let out = rbuild(
        dir.path(),
        &["build", "--call=plan", "--target", "lint", "."],
    );
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["targets"].as_array().unwrap().len(), 1);
    assert_eq!(plan["platforms"][0], plan["host_platform"]);

    // An unknown target is a build error naming it.
    let out = rbuild(
        dir.path(),
        &["build", "--call=plan", "--target", "nope", "."],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert!(out.stdout.is_empty());
}
