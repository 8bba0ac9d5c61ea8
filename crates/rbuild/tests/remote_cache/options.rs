//! The rest of buildx's cache options against the real registry: several `--cache-from`
//! searched in order (a missing one a warning), `mode=min`, `compression=zstd`,
//! `ignore-error=true`, and a cache for another platform or base never matching.

use std::process::Command;

use test_support::{Fault, FaultProxy, LocalRegistry, Rule, describe, output};

use super::{cache_dir, context, nonce, pack_bytes, ran, rbuild, skopeo_raw};

/// A missing cache is a warning; the next `--cache-from` is searched. `mode=min` exports
/// the final image's steps only (the build stage runs again on a fresh runner, the final
/// stage's steps are hits), here with zstd layers; progress gives the sizes read and sent.
#[test]
fn cache_from_in_order_missing_is_a_warning_and_min_mode_with_zstd() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-min");
    let cache_ref = format!("{}/{repo}:min", reg.host());
    let missing = format!("{}/{repo}:missing", reg.host());
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=min,compression=zstd"),
        ],
        ctx.path(),
    );
    assert!(log.contains("layers uploaded "), "{log}");
    let manifest = skopeo_raw(&cache_ref);
    let layers = manifest["layers"].as_array().expect("layers");
    // The final stage's COPY --from and RUN; not the build stage's three steps.
    assert_eq!(layers.len(), 2, "{manifest}");
    for l in layers {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
    }

    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--cache-from",
            &format!("type=registry,ref={missing}"),
            "--cache-from",
            &format!("type=registry,ref={cache_ref}"),
        ],
        ctx.path(),
    );
    assert!(
        log.contains(&format!("cache {missing} not found: building without it")),
        "{log}"
    );
    assert!(log.contains("of metadata read"), "{log}");
    assert_eq!(
        ran(&log),
        ["RAN-first", "RAN-second"],
        "mode=min: the final stage's step is a hit:\n{log}"
    );
}

/// `ignore-error=true`: an export the registry refuses is a warning and the build
/// succeeds; without it the build fails, saying why.
#[test]
fn ignore_error_makes_a_failed_export_a_warning() {
    let reg = LocalRegistry::ensure();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(reg.host()));
    proxy.add(Rule::new("/manifests/refused", Fault::status(403)).times(1000));
    let repo = reg.unique_repo("cache-helper-ignore");
    let refused = format!("{}/{repo}:refused", proxy.host());
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={refused},ignore-error=true"),
        ],
        ctx.path(),
    );
    assert!(log.contains("failed (ignore-error=true)"), "{log}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["build", "--progress=plain", "--cache-dir"])
        .arg(cache_dir(root.path(), "b"))
        .args(["--cache-to", &format!("type=registry,ref={refused}")])
        .arg(ctx.path());
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") || err.contains("denied"), "{err}");
}

/// A cache exported for linux/amd64 never matches a linux/arm64 build (run under QEMU),
/// nor a build on another base image: every step runs.
#[test]
fn cache_for_another_platform_or_base_never_matches() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-platform");
    let cache_ref = format!("{}/{repo}:cache", reg.host());
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");
    rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--platform",
            "linux/amd64",
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        ctx.path(),
    );
    let from = format!("type=registry,ref={cache_ref}");
    // The same commit and platform: the control, all hits.
    let log = rbuild(
        &cache_dir(root.path(), "same"),
        &["--platform", "linux/amd64", "--cache-from", &from],
        ctx.path(),
    );
    assert_eq!(ran(&log), Vec::<&str>::new(), "{log}");
    let log = rbuild(
        &cache_dir(root.path(), "arm64"),
        &["--platform", "linux/arm64", "--cache-from", &from],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");
    // Another base: the same Dockerfile on the node image.
    let df = std::fs::read_to_string(ctx.path().join("Dockerfile")).expect("Dockerfile");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        df.replace(&reg.busybox(), &reg.node()),
    )
    .expect("Dockerfile");
    let log = rbuild(
        &cache_dir(root.path(), "base"),
        &["--platform", "linux/amd64", "--cache-from", &from],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");
}

/// A cache mount's content is packed by path: a runner that restored it, added one file
/// and exports again into the same repository sends only the pack the file fell in (of
/// about 12 MB of random content in 40 files, several packs).
#[test]
fn cache_mount_reexport_sends_only_the_changed_pack() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-packs");
    let n = nonce();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nARG V=1\n\
             RUN --mount=type=cache,target=/c,id=packs-{n} i=0; \
             while [ $i -lt 40 ]; do [ -f /c/f$i ] || head -c 300000 /dev/urandom > /c/f$i; \
             i=$((i+1)); done; echo $V > /c/zz-$V; echo RAN-packs\n",
            reg.busybox()
        ),
    )
    .expect("Dockerfile");
    let root = tempfile::tempdir().expect("tempdir");
    let one = format!("{}/{repo}:one", reg.host());
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &["--cache-to", &format!("type=registry,ref={one},mode=max")],
        dir.path(),
    );
    let (first, _) = pack_bytes(&log);
    assert!(first > 10_000_000, "{log}");
    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--build-arg",
            "V=2",
            "--cache-from",
            &format!("type=registry,ref={one}"),
            "--cache-to",
            &format!("type=registry,ref={}/{repo}:two,mode=max", reg.host()),
        ],
        dir.path(),
    );
    assert!(log.contains("cache mount restored from"), "{log}");
    let (sent, had) = pack_bytes(&log);
    assert!(
        had > 0 && sent < first / 2,
        "packs sent {sent} B, already there {had} B (first export {first} B):\n{log}"
    );
    eprintln!(
        "cache mount re-export after one file added: sent {sent} B, had {had} B of {first} B"
    );
}
