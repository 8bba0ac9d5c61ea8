//! `--cache-to type=inline`: the cache of the image's own steps in the pushed image's config,
//! read back with `--cache-from type=registry,ref=IMAGE`; and what each tool does with the
//! other's inline cache.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test_support::{FaultProxy, LocalRegistry, describe, output, run_stdout};

use super::{cache_dir, context, image_manifest, layer_digests, nonce, ran, rbuild};

const BUILDCTL: &str = "/var/tmp/reference-buildkit/bin/buildctl";
const BUILDKIT_HOST: &str = "unix:///run/reference-buildkitd.sock";
const FIELD: &str = "rbuild.cache.v1";

/// The config of `reference`'s linux/amd64 image.
fn image_config(host: &str, repo: &str, reference: &str) -> Value {
    let m = image_manifest(reference);
    let d = m["config"]["digest"].as_str().expect("config digest");
    let text = run_stdout(
        Command::new("curl")
            .arg("-fsS")
            .arg(format!("http://{host}/v2/{repo}/blobs/{d}")),
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{reference} config: {e}: {text}"))
}

/// The reference BuildKit builds `ctx` with `args`.
fn buildkit(ctx: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(BUILDCTL);
    cmd.args([
        "--addr",
        BUILDKIT_HOST,
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        "context=.",
        "--local",
        "dockerfile=.",
    ])
    .args(args)
    .current_dir(ctx);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runner A pushes its image (an index, with the default provenance) with `--cache-to
/// type=inline`: the image's config carries a record per step of the final stage. Runner
/// B, empty, imports the image as its cache: the final stage's steps are hits (mode=min:
/// the build stage, not in the image, runs again), and pushing to the same registry
/// downloads none of the cached layers (every request passes a recording proxy).
#[test]
fn inline_cache_round_trips_through_the_pushed_image() {
    let reg = LocalRegistry::ensure();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(reg.host()));
    let host = proxy.host();
    let repo = reg.unique_repo("cache-helper-inline");
    let image_a = format!("{host}/{repo}:a");
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");

    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &["--cache-to", "type=inline", "-t", &image_a, "--push"],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");
    assert!(
        log.contains("2 records written into the image config"),
        "{log}"
    );
    let stored_a = format!("{}/{repo}:a", reg.host());
    let config = image_config(reg.host(), &repo, &stored_a);
    let records = config[FIELD]["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no {FIELD} records in {config}"));
    // COPY --from=build and RUN on top of busybox's one layer: layers 1 and 2.
    let layers: Vec<u64> = records.iter().filter_map(|r| r["layer"].as_u64()).collect();
    assert_eq!(layers, [1, 2], "{config}");
    let a_layers = layer_digests(&image_manifest(&stored_a));

    let before = proxy.seen().len();
    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--cache-from",
            &format!("type=registry,ref={image_a}"),
            "-t",
            &format!("{host}/{repo}:b"),
            "--push",
            "--provenance=false",
        ],
        ctx.path(),
    );
    assert_eq!(
        ran(&log),
        ["RAN-first", "RAN-second"],
        "only the build stage (not in the image) runs:\n{log}"
    );
    assert!(log.contains("from remote cache"), "{log}");
    let stored_b = format!("{}/{repo}:b", reg.host());
    assert_eq!(layer_digests(&image_manifest(&stored_b)), a_layers);
    // Without --cache-to type=inline, B's config has no inline cache.
    assert!(
        image_config(reg.host(), &repo, &stored_b)
            .get(FIELD)
            .is_none()
    );
    let pulled: Vec<String> = proxy.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET" && s.uri.contains("/blobs/sha256:"))
        .map(|s| s.uri.clone())
        .filter(|u| a_layers[1..].iter().any(|l| u.contains(l.as_str())))
        .collect();
    assert!(
        pulled.is_empty(),
        "runner B downloaded cached layers: {pulled:?}"
    );
}

/// Each tool's inline cache means nothing to the other (the keys differ: interop of keys
/// is not a goal), and neither fails on it: rbuild imports BuildKit's inline-cached image
/// with a warning saying why it is not used and builds everything; BuildKit imports
/// rbuild's inline-cached image and builds. An image built on either does not inherit it.
#[test]
fn inline_cache_of_the_other_tool_is_not_used_and_breaks_nothing() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-inline-x");
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    let bk_image = format!("{}/{repo}:buildkit", reg.host());
    let rb_image = format!("{}/{repo}:rbuild", reg.host());

    buildkit(
        ctx.path(),
        &[
            "--export-cache",
            "type=inline",
            "--output",
            &format!("type=image,name={bk_image},push=true"),
        ],
    );
    let config = image_config(reg.host(), &repo, &bk_image);
    assert!(
        config.get("moby.buildkit.cache.v0").is_some(),
        "BuildKit wrote no inline cache: {config}"
    );
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-from",
            &format!("type=registry,ref={bk_image}"),
            "--cache-to",
            "type=inline",
            "-t",
            &rb_image,
            "--push",
            "--provenance=false",
        ],
        ctx.path(),
    );
    assert!(
        log.contains(
            "BuildKit's inline cache (moby.buildkit.cache.v0), whose keys rbuild cannot use"
        ),
        "{log}"
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");

    // An image built FROM either one does not inherit its base's inline cache.
    for (n, base) in [("child-bk", &bk_image), ("child-rb", &rb_image)] {
        let child = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            child.path().join("Dockerfile"),
            format!("FROM {base}\nRUN echo child > /child\n"),
        )
        .expect("Dockerfile");
        let image = format!("{}/{repo}:{n}", reg.host());
        rbuild(
            &cache_dir(root.path(), n),
            &["-t", &image, "--push", "--provenance=false"],
            child.path(),
        );
        let config = image_config(reg.host(), &repo, &image);
        assert!(config.get(FIELD).is_none(), "{n}: {config}");
        assert!(
            config.get("moby.buildkit.cache.v0").is_none(),
            "{n}: {config}"
        );
    }

    // BuildKit reads rbuild's inline-cached image as a cache without failing.
    let log = buildkit(
        ctx.path(),
        &["--import-cache", &format!("type=registry,ref={rb_image}")],
    );
    assert!(log.contains("importing cache manifest from"), "{log}");
}

/// `type=inline` without an image output, or with options it cannot honour, is a clear
/// usage error before anything is built.
#[test]
fn inline_cache_without_an_image_output_is_refused() {
    let reg = LocalRegistry::ensure();
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    let dest = root.path().join("files");
    for (args, want) in [
        (
            vec!["--cache-to", "type=inline"],
            "type=inline needs an image output",
        ),
        (
            vec![
                "--cache-to",
                "type=inline",
                "--output",
                &format!("type=local,dest={}", dest.display()),
            ],
            "type=inline needs an image output",
        ),
        (
            vec!["--cache-to", "type=inline,mode=max", "--push"],
            "only the image's own steps (mode=min)",
        ),
        (
            vec!["--cache-from", "type=inline"],
            "--cache-from type=registry,ref=IMAGE",
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.args(["build", "--progress=plain", "--cache-dir"])
            .arg(root.path().join("c"))
            .args(&args)
            .arg(ctx.path());
        let out = output(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", describe(&cmd, &out));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("RAN-"), "{args:?} built:\n{err}");
    }
}
