//! `--build-context NAME=VALUE` (issue 20): named contexts replace `FROM NAME`, a stage
//! named NAME, `COPY --from=NAME` and `RUN --mount from=NAME`, as the reference BuildKit's
//! Dockerfile frontend does (`--opt context:NAME=...`); BuildKit's tests
//! testNamedImageContext, testNamedLocalContext, testNamedOCILayoutContext ported.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";
const NODE: &str = "127.0.0.1:5000/library/node:20-slim";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn rbuild(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rbuild")
}

/// Every file of a tree: path → content (a symlink: `-> target`, a directory: `/`).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()));
            } else if md.is_dir() {
                out.insert(rel, "/".into());
                todo.push(p);
            } else {
                out.insert(rel, text(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// The reference BuildKit's type=local output of `ctx`, with named contexts given as
/// buildctl spells them: `local` ones as `--local NAME=DIR`.
fn reference(ctx: &Path, dest: &Path, locals: &[(&str, &Path)], opts: &[String]) {
    let mut cmd = Command::new("/var/tmp/reference-buildkit/bin/buildctl");
    cmd.args(["--addr", "unix:///run/reference-buildkitd.sock", "build"])
        .args(["--frontend", "dockerfile.v0"])
        .args(["--local", "context=.", "--local", "dockerfile=."]);
    for (name, dir) in locals {
        cmd.arg("--local").arg(format!("{name}={}", dir.display()));
        cmd.arg("--opt").arg(format!("context:{name}=local:{name}"));
    }
    for o in opts {
        cmd.args(["--opt", o]);
    }
    cmd.arg("--output")
        .arg(format!("type=local,dest={}", dest.display()))
        .current_dir(ctx);
    ok(&cmd.output().expect("run buildctl"));
}

fn setup(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ctx")).unwrap();
    std::fs::write(dir.path().join("ctx/Dockerfile"), dockerfile).unwrap();
    dir
}

fn rb_local(
    dir: &Path,
    name: &str,
    contexts: &[String],
    extra: &[&str],
) -> BTreeMap<String, String> {
    let dest = dir.join(name);
    let cache = dir.join("cache");
    let mut args = vec![
        "build".to_owned(),
        "--progress=plain".into(),
        "--cache-dir".into(),
        cache.display().to_string(),
    ];
    for c in contexts {
        args.push("--build-context".into());
        args.push(c.clone());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push("-o".into());
    args.push(format!("type=local,dest={}", dest.display()));
    args.push("ctx".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&rbuild(dir, &a));
    tree(&dest)
}

/// BuildKit's testNamedImageContext: `FROM busybox` reads another image, and a stage
/// named like a context is replaced by it.
#[test]
fn named_image_context_replaces_from_and_stages() {
    let dir = setup(
        "FROM busybox AS base\nRUN cat /etc/os-release | head -n1 > /out\n\
         FROM base AS replaced\nRUN echo never > /never\n\
         FROM scratch\nCOPY --from=base /o* /\nCOPY --from=replaced /etc/os-release /replaced\n",
    );
    let ctxs = [
        format!("busybox=docker-image://{NODE}"),
        format!("replaced=docker-image://{NODE}"),
    ];
    let rb = rb_local(dir.path(), "rb", &ctxs, &[]);
    let bk = dir.path().join("bk");
    let opts: Vec<String> = ctxs.iter().map(|c| format!("context:{c}")).collect();
    reference(&dir.path().join("ctx"), &bk, &[], &opts);
    assert_eq!(rb, tree(&bk));
    assert!(rb["out"].contains("Debian"), "{rb:?}");
    assert!(!rb.contains_key("never"), "{rb:?}");
}

/// BuildKit's testNamedLocalContext: a directory (with its own .dockerignore) as the
/// base of a stage, as a COPY --from source and as a RUN mount; its content is part of
/// the cache keys.
#[test]
fn named_local_context_with_its_dockerignore() {
    let dir = setup(&format!(
        "FROM {BUSYBOX} AS base\nRUN --mount=from=files,target=/m cat /m/a > /from-mount\n\
         FROM files AS rooted\n\
         FROM scratch\nCOPY --from=base /from-mount /\nCOPY --from=files / /copied/\n\
         COPY --from=rooted / /rooted/\n"
    ));
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("a"), "first\n").unwrap();
    std::fs::write(files.join("sub/b"), "b\n").unwrap();
    std::fs::write(files.join("secret.key"), "no\n").unwrap();
    std::fs::write(files.join(".dockerignore"), "*.key\n").unwrap();
    let ctxs = [format!("files={}", files.display())];
    let rb = rb_local(dir.path(), "rb", &ctxs, &[]);
    let bk = dir.path().join("bk");
    reference(&dir.path().join("ctx"), &bk, &[("files", &files)], &[]);
    assert_eq!(rb, tree(&bk));
    assert_eq!(rb["from-mount"], "first\n");
    assert_eq!(rb["copied/sub/b"], "b\n");
    assert!(!rb.contains_key("copied/secret.key"), "{rb:?}");
    assert_eq!(rb["rooted/a"], "first\n");

    // A change in the named context is a new cache key: the steps reading it run again.
    std::fs::write(files.join("a"), "second\n").unwrap();
    let again = rb_local(dir.path(), "rb2", &ctxs, &[]);
    assert_eq!(again["from-mount"], "second\n");
    assert_eq!(again["copied/a"], "second\n");
}

/// BuildKit's testNamedOCILayoutContext: an image of an OCI layout directory, by tag and
/// by digest.
#[test]
fn named_oci_layout_context() {
    let dir = setup(&format!(
        "FROM {BUSYBOX} AS img\nRUN echo from-layout > /marker\n"
    ));
    // The layout: rbuild's own OCI output, unpacked.
    let layout = dir.path().join("layout");
    ok(&rbuild(
        dir.path(),
        &[
            "build",
            "--progress=plain",
            "-o",
            &format!(
                "type=oci,dest={},tar=false,name=layout:v1",
                layout.display()
            ),
            "ctx",
        ],
    ));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    std::fs::write(
        dir.path().join("ctx/Dockerfile"),
        "FROM base\nRUN cat /marker > /seen\nFROM scratch\nCOPY --from=0 /seen /\n",
    )
    .unwrap();
    for value in [
        format!("oci-layout://{}:v1", layout.display()),
        format!("oci-layout://{}@{digest}", layout.display()),
    ] {
        let rb = rb_local(dir.path(), "rb", &[format!("base={value}")], &[]);
        assert_eq!(rb["seen"], "from-layout\n", "{value}");
    }
    // As buildx: an unknown tag falls back to the layout's only image; a missing layout
    // is an error naming it.
    let rb = rb_local(
        dir.path(),
        "rb",
        &[format!("base=oci-layout://{}:other", layout.display())],
        &[],
    );
    assert_eq!(rb["seen"], "from-layout\n");
    let missing = dir.path().join("no-layout");
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--build-context",
            &format!("base=oci-layout://{}", missing.display()),
            "ctx",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("no-layout/index.json"), "{err}");
}

/// What buildx refuses on the command line, refused with its reason.
#[test]
fn named_context_errors() {
    let dir = setup("FROM base\n");
    for (value, needle) in [
        ("base=target:other", "unsupported context source target"),
        ("base", "expected key=value"),
        ("Bad Name=docker-image://busybox", "invalid context name"),
        ("base=./does-not-exist", "not a directory"),
        ("base=docker-image://", "needs an image reference"),
    ] {
        let out = rbuild(dir.path(), &["build", "--build-context", value, "ctx"]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(needle),
            "{value}: {}",
            text(&out.stderr)
        );
    }
}
