//! The cache artifact's other forms and recompression: `image-manifest=false` (an index
//! listing the layers and then the config, the form BuildKit wrote by default before
//! 0.21), `oci-mediatypes=false` (a Docker manifest list with Docker layer types), both
//! read back by a fresh runner; `force-compression=true`; and cache mounts of a
//! multi-platform build whose id differs per platform, each restored for its platform.

use std::path::Path;

use serde_json::Value;
use test_support::LocalRegistry;

use super::{cache_dir, context, nonce, printed, ran, rbuild, skopeo_raw};

const CACHE_CONFIG: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The layer media types of a cache written as an index (every entry but the config,
/// which must be the last one).
fn index_layer_types(index: &Value, media_type: &str) -> Vec<String> {
    assert_eq!(index["mediaType"], media_type, "{index}");
    let entries = index["manifests"].as_array().expect("manifests");
    let (config, layers) = entries.split_last().expect("entries");
    assert_eq!(config["mediaType"], CACHE_CONFIG, "{index}");
    assert!(!layers.is_empty(), "{index}");
    layers
        .iter()
        .map(|l| l["mediaType"].as_str().expect("mediaType").to_owned())
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The document `index.json` of an OCI layout names by `tag`, and its media type there.
fn layout_document(dir: &Path, tag: &str) -> (String, Value) {
    let index = read_json(&dir.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let digest = entry["digest"].as_str().expect("digest");
    let doc = read_json(&dir.join("blobs/sha256").join(&digest[7..]));
    (entry["mediaType"].as_str().unwrap_or("").to_owned(), doc)
}

/// `image-manifest=false` to the registry and `oci-mediatypes=false` to a local layout:
/// each written as the index BuildKit writes (layers, then the config; Docker types for
/// the second), and a fresh runner reading either runs no step; the image manifest form
/// stays the default.
#[test]
fn index_form_and_docker_media_types_read_back() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-forms");
    let index_ref = format!("{}/{repo}:index", reg.host());
    let default_ref = format!("{}/{repo}:default", reg.host());
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    let local = root.path().join("layout");
    rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={index_ref},mode=max,image-manifest=false"),
            "--cache-to",
            &format!("type=registry,ref={default_ref},mode=max"),
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,oci-mediatypes=false",
                local.display()
            ),
        ],
        ctx.path(),
    );
    let default = skopeo_raw(&default_ref);
    assert_eq!(
        default["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{default}"
    );
    assert_eq!(default["config"]["mediaType"], CACHE_CONFIG, "{default}");
    let index = skopeo_raw(&index_ref);
    for t in index_layer_types(&index, "application/vnd.oci.image.index.v1+json") {
        assert_eq!(t, "application/vnd.oci.image.layer.v1.tar+gzip", "{index}");
    }
    let (listed, list) = layout_document(&local, "latest");
    let docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(listed, docker_list);
    for t in index_layer_types(&list, docker_list) {
        assert_eq!(
            t, "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "{list}"
        );
    }

    for (n, from) in [
        ("b", format!("type=registry,ref={index_ref}")),
        ("c", format!("type=local,src={}", local.display())),
    ] {
        let log = rbuild(
            &cache_dir(root.path(), n),
            &["--cache-from", &from],
            ctx.path(),
        );
        assert_eq!(ran(&log), Vec::<&str>::new(), "{from}:\n{log}");
        assert!(log.contains("from remote cache"), "{from}:\n{log}");
    }
    // After a source change the steps after it run on layers pulled from the index form.
    std::fs::write(ctx.path().join("src.txt"), "changed\n").expect("src");
    let log = rbuild(
        &cache_dir(root.path(), "d"),
        &["--cache-from", &format!("type=registry,ref={index_ref}")],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-second", "RAN-final"], "{log}");
}

/// A runner whose steps all came from a gzip cache exports it again with
/// `compression=zstd`: without `force-compression` the layers keep their gzip blobs (as
/// BuildKit), with it every layer is recompressed to zstd; a fresh runner after a change
/// builds on the zstd layers.
#[test]
fn force_compression_recompresses_every_layer() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-force");
    let gzip_ref = format!("{}/{repo}:gzip", reg.host());
    let kept_ref = format!("{}/{repo}:kept", reg.host());
    let zstd_ref = format!("{}/{repo}:zstd", reg.host());
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={gzip_ref},mode=max"),
        ],
        ctx.path(),
    );
    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--cache-from",
            &format!("type=registry,ref={gzip_ref}"),
            "--cache-to",
            &format!("type=registry,ref={kept_ref},mode=max,compression=zstd"),
            "--cache-to",
            &format!(
                "type=registry,ref={zstd_ref},mode=max,compression=zstd,force-compression=true"
            ),
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), Vec::<&str>::new(), "{log}");
    let types = |r: &str| -> Vec<String> {
        let m = skopeo_raw(r);
        m["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{m}"))
            .iter()
            .filter(|l| l["annotations"]["dev.rbuild.cache-mount-pack"].is_null())
            .map(|l| l["mediaType"].as_str().expect("mediaType").to_owned())
            .collect()
    };
    let kept = types(&kept_ref);
    assert!(kept.len() >= 3, "{kept:?}");
    assert!(
        kept.iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "{kept:?}"
    );
    let forced = types(&zstd_ref);
    assert_eq!(forced.len(), kept.len(), "{forced:?}");
    assert!(
        forced
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{forced:?}"
    );
    std::fs::write(ctx.path().join("src.txt"), "changed\n").expect("src");
    let out = root.path().join("out");
    let log = rbuild(
        &cache_dir(root.path(), "c"),
        &[
            "--cache-from",
            &format!("type=registry,ref={zstd_ref}"),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-second", "RAN-final"], "{log}");
    let first = std::fs::read_to_string(out.join("out")).expect("out");
    assert!(first.ends_with("changed\n"), "{first}");
}

/// `--platform linux/amd64,linux/arm64` with a cache mount whose id names the target
/// platform: both mounts travel with the cache, and a fresh runner whose step must run
/// again finds each platform's own content restored (the arm64 step under QEMU); the
/// control exported with `cache-mounts=false` finds both empty.
#[test]
fn multi_platform_cache_mounts_are_restored_per_platform() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-mp-mounts");
    let with = format!("{}/{repo}:with", reg.host());
    let without = format!("{}/{repo}:without", reg.host());
    let n = nonce();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nARG TARGETPLATFORM\nARG V=1\n\
             RUN --mount=type=cache,target=/c,id=mp-{n}-$TARGETPLATFORM \
             if [ -f /c/arch ]; then echo MOUNT-HAD-$(cat /c/arch); else echo MOUNT-EMPTY; fi; \
             uname -m > /c/arch; echo RAN-$V\n",
            reg.busybox()
        ),
    )
    .expect("Dockerfile");
    let root = tempfile::tempdir().expect("tempdir");
    let platforms = ["--platform", "linux/amd64,linux/arm64"];
    let mut args = platforms.to_vec();
    let to_with = format!("type=registry,ref={with},mode=max");
    let to_without = format!("type=registry,ref={without},mode=max,cache-mounts=false");
    args.extend(["--cache-to", &to_with, "--cache-to", &to_without]);
    let log = rbuild(&cache_dir(root.path(), "a"), &args, dir.path());
    assert!(log.contains("2 cache mounts: packs sent"), "{log}");
    assert!(printed(&log, "MOUNT-EMPTY"), "{log}");

    let from_with = format!("type=registry,ref={with}");
    let mut args = platforms.to_vec();
    args.extend(["--build-arg", "V=2", "--cache-from", &from_with]);
    let log = rbuild(&cache_dir(root.path(), "b"), &args, dir.path());
    assert!(printed(&log, "RAN-2"), "{log}");
    assert!(printed(&log, "MOUNT-HAD-x86_64"), "{log}");
    assert!(printed(&log, "MOUNT-HAD-aarch64"), "{log}");
    assert!(!printed(&log, "MOUNT-EMPTY"), "{log}");

    let from_without = format!("type=registry,ref={without}");
    let mut args = platforms.to_vec();
    args.extend(["--build-arg", "V=2", "--cache-from", &from_without]);
    let log = rbuild(&cache_dir(root.path(), "c"), &args, dir.path());
    assert!(printed(&log, "RAN-2"), "{log}");
    assert!(!printed(&log, "MOUNT-HAD-x86_64"), "{log}");
    assert!(!printed(&log, "MOUNT-HAD-aarch64"), "{log}");
}
