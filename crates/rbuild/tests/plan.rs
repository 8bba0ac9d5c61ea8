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

/// The repository root (the examples' bake file names its contexts from there).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `--call plan,format=...` prints the build graph: the text form for one example, and for
/// both examples (`bake --call plan`) one graph in which the steps their builder stages
/// share (the base image, the apt step, `WORKDIR`) are one vertex each.
#[test]
fn plan_prints_the_graph_and_bake_merges_both_examples() {
    let root = repo_root();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let out = rbuild(
        &root,
        &[
            "build",
            "--call",
            "plan,format=text",
            "--cache-dir",
            cache_dir,
            "examples/auth-service",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("exec") && l.contains("RUN npm ci")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("result runtime ")),
        "{text}"
    );

    // format=json: the CI plan, with the graph as its `graph` member.
    let out = rbuild(
        &root,
        &[
            "build",
            "--call",
            "plan,format=json",
            "--cache-dir",
            cache_dir,
            "examples/auth-service",
        ],
    );
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(plan["target"], "runtime");
    let one = plan["graph"]["vertices"]
        .as_array()
        .expect("vertices")
        .len();

    let out = rbuild(
        &root,
        &[
            "bake",
            "-f",
            "examples/docker-bake.hcl",
            "--call",
            "plan,format=json",
            "--cache-dir",
            cache_dir,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let vertices = graph["vertices"].as_array().expect("vertices");
    let named = |needle: &str| {
        vertices
            .iter()
            .filter(|v| v["name"].as_str().unwrap().contains(needle))
            .count()
    };
    // Shared: once. Different (other package files, other runtime packages): twice.
    assert_eq!(named("python3 make g++"), 1, "{graph:#}");
    assert_eq!(named("FROM 127.0.0.1:5000/library/node:20-slim"), 1);
    assert_eq!(named("[builder 3/8] WORKDIR /app"), 1);
    assert_eq!(named("RUN npm ci"), 2);
    assert_eq!(named("--no-install-recommends dumb-init"), 2);
    assert_eq!(graph["results"].as_array().unwrap().len(), 2);
    assert!(
        vertices.len() < 2 * one,
        "{} vertices, {one} for one service",
        vertices.len()
    );
    // Every key is unique, and every input is a vertex listed before the one reading it.
    let mut seen = std::collections::HashSet::new();
    for v in vertices {
        for e in v["inputs"].as_array().into_iter().flatten() {
            assert!(seen.contains(e["key"].as_str().unwrap()), "{v:#}");
        }
        assert!(seen.insert(v["key"].as_str().unwrap()), "duplicate {v:#}");
    }
}
