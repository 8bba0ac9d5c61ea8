//! A fresh CI runner builds from a shared cache (issue 15): `--cache-to` / `--cache-from`
//! against the real local registry, each runner with its own empty `--cache-dir`.
//!
//! The Dockerfiles write a nonce into every layer, so no other test (or run) shares their
//! blobs: the corruption test overwrites one in the registry's storage. Each RUN step
//! prints a marker, so a log says which steps ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use test_support::{FaultProxy, LocalRegistry, describe, output, run_stdout};

/// `--cache-to type=inline`.
mod inline;

/// Several `--cache-from`, `mode=min`, `compression=`, `ignore-error=`, platforms, bases.
mod options;

/// `image-manifest=false`, `oci-mediatypes=false`, `force-compression=true`, and cache
/// mounts of a multi-platform build.
mod forms;

/// Where the test registry keeps its blobs (`scripts/testenv/up.sh`).
const REGISTRY_BLOBS: &str = "/var/lib/rbuild-testenv/registry/docker/registry/v2/blobs/sha256";

fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{t}", std::process::id())
}

/// A build context: a two-stage Dockerfile on busybox whose steps print `RAN-<name>`.
fn context(reg: &LocalRegistry, nonce: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let df = format!(
        "FROM {base} AS build\n\
         RUN echo RAN-first && echo {nonce} > /first\n\
         COPY src.txt /src.txt\n\
         RUN echo RAN-second && cat /first /src.txt > /out\n\
         FROM {base}\n\
         COPY --from=build /out /out\n\
         RUN echo RAN-final && cat /out > /final\n",
        base = reg.busybox()
    );
    std::fs::write(dir.path().join("Dockerfile"), df).expect("Dockerfile");
    std::fs::write(dir.path().join("src.txt"), format!("source {nonce}\n")).expect("src");
    dir
}

/// `rbuild build --progress=plain --cache-dir CACHE ARGS CONTEXT`; panics unless it exits
/// 0. Returns stderr (the progress log).
fn rbuild(cache: &Path, args: &[&str], ctx: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("build")
        .arg("--progress=plain")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .arg(ctx);
    let out: Output = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ran(log: &str) -> Vec<&'static str> {
    ["RAN-first", "RAN-second", "RAN-final"]
        .into_iter()
        .filter(|m| log.lines().any(|l| l.ends_with(m)))
        .collect()
}

fn skopeo_raw(reference: &str) -> Value {
    let text = run_stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{reference}: {e}: {text}"))
}

/// The image manifest of `reference` (for linux/amd64 when it is an index).
fn image_manifest(reference: &str) -> Value {
    let m = skopeo_raw(reference);
    let Some(list) = m["manifests"].as_array() else {
        return m;
    };
    let d = list
        .iter()
        .find(|d| d["platform"]["architecture"] == "amd64")
        .and_then(|d| d["digest"].as_str())
        .unwrap_or_else(|| panic!("no linux/amd64 image in {m}"));
    let repo = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    skopeo_raw(&format!("{repo}@{d}"))
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers: {manifest}"))
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// Every blob file under an OCI layout's `blobs/sha256` hashes to its name.
fn verify_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).unwrap_or_else(|e| panic!("{}: {e}", blobs.display())) {
        let p = e.expect("entry").path();
        let sum = run_stdout(Command::new("sha256sum").arg(&p));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(sum.starts_with(&name), "{} hashes to {sum}", p.display());
        n += 1;
    }
    assert!(n > 0, "no blobs in {}", blobs.display());
}

fn cache_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    assert!(!d.exists());
    d
}

/// Runner A exports `mode=max` to the registry; runner B (empty cache) imports it, runs
/// no RUN step and pushes to the same registry without downloading a layer blob (all
/// its requests pass a recording proxy); after a one-line source change B runs only the
/// steps after it.
#[test]
fn registry_cache_fresh_runner_runs_nothing_and_downloads_no_layer() {
    let reg = LocalRegistry::ensure();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(reg.host()));
    let host = proxy.host();
    let repo = reg.unique_repo("cache-helper-reg");
    let cache_ref = format!("{host}/{repo}:cache");
    let ctx = context(&reg, &nonce());
    let root = tempfile::tempdir().expect("tempdir");

    let a = cache_dir(root.path(), "runner-a");
    let log = rbuild(
        &a,
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
            "-t",
            &format!("{host}/{repo}:a"),
            "--push",
            // Compares the pushed manifests' layers: no default provenance index.
            "--provenance=false",
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");
    assert!(log.contains("exporting cache to"), "{log}");

    let b = cache_dir(root.path(), "runner-b");
    let before = proxy.seen().len();
    let log = rbuild(
        &b,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache_ref}"),
            "-t",
            &format!("{host}/{repo}:b"),
            "--push",
            // Compares the pushed manifests' layers: no default provenance index.
            "--provenance=false",
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), Vec::<&str>::new(), "runner B ran steps:\n{log}");
    assert!(log.contains("from remote cache"), "{log}");
    let pushed = image_manifest(&format!("{}/{repo}:b", reg.host()));
    let layers = layer_digests(&pushed);
    assert_eq!(
        layers,
        layer_digests(&image_manifest(&format!("{}/{repo}:a", reg.host()))),
        "B's image differs from A's"
    );
    let pulled: Vec<String> = proxy.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET" && s.uri.contains("/blobs/sha256:"))
        .map(|s| s.uri.clone())
        .filter(|u| layers.iter().any(|l| u.contains(l.as_str())))
        .collect();
    assert!(pulled.is_empty(), "runner B downloaded layers: {pulled:?}");
    // Nothing of the layers is in B's content store either, and the pushed image is whole.
    for l in &layers {
        let hex = l.trim_start_matches("sha256:");
        assert!(!b.join("content/blobs/sha256").join(hex).exists());
    }
    let oci = root.path().join("copy");
    run_stdout(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:b", reg.host()),
        &format!("oci:{}:b", oci.display()),
    ]));
    verify_layout(&oci);

    // A one-line source change on another fresh runner: only the steps after it run, and
    // the import is lazy: it read the manifest and config only, and of the cache's layers
    // the build pulls just the one the first step that runs sits on (RAN-first's, under
    // RAN-second).
    std::fs::write(ctx.path().join("src.txt"), "changed\n").expect("src");
    let cache_layers = layer_digests(&skopeo_raw(&format!("{}/{repo}:cache", reg.host())));
    assert!(cache_layers.len() >= 4, "mode=max: {cache_layers:?}");
    let c = cache_dir(root.path(), "runner-c");
    let before = proxy.seen().len();
    let log = rbuild(
        &c,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache_ref}"),
            "-t",
            &format!("{host}/{repo}:c"),
            "--push",
            // Compares the pushed manifests' layers: no default provenance index.
            "--provenance=false",
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-second", "RAN-final"], "{log}");
    assert!(log.contains("(pulled only when needed)"), "{log}");
    let seen = &proxy.seen()[before..];
    let pulled: Vec<&str> = cache_layers
        .iter()
        .filter(|l| {
            seen.iter()
                .any(|s| s.method == "GET" && s.uri.ends_with(&format!("/blobs/{l}")))
        })
        .map(String::as_str)
        .collect();
    assert_eq!(
        pulled.len(),
        1,
        "cache layers pulled: {pulled:?} of {cache_layers:?}"
    );
    // The cache's manifest was read before that layer.
    let at = |f: &dyn Fn(&str) -> bool| seen.iter().position(|s| f(&s.uri));
    let manifest = at(&|u| u.ends_with("/manifests/cache")).expect("the cache manifest read");
    let layer = at(&|u| u.ends_with(&format!("/blobs/{}", pulled[0]))).expect("layer");
    assert!(manifest < layer);
}

/// A cache layer whose bytes in the registry no longer match its digest is rejected (a
/// warning) and its step rebuilt: the build succeeds with the right files.
#[test]
fn registry_cache_corrupt_blob_is_rejected_and_rebuilt() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-corrupt");
    let cache_ref = format!("{}/{repo}:cache", reg.host());
    let n = nonce();
    let ctx = context(&reg, &n);
    let root = tempfile::tempdir().expect("tempdir");
    rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        ctx.path(),
    );
    // The layer of the final stage's `RUN ... > /final` (the local export reads it).
    let manifest = skopeo_raw(&cache_ref);
    let corrupt = layer_digests(&manifest)
        .into_iter()
        .find(|d| {
            let list = run_stdout(Command::new("sh").arg("-c").arg(format!(
                "curl -fsS http://{}/v2/{repo}/blobs/{d} | gzip -dc | tar -t",
                reg.host()
            )));
            list.lines().any(|l| l == "final")
        })
        .expect("the layer of the final RUN step in the cache");
    let data = Path::new(REGISTRY_BLOBS)
        .join(&corrupt[7..9])
        .join(&corrupt[7..])
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let last = bytes.len() - 1;
    for b in &mut bytes[last / 2..] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bytes).unwrap_or_else(|e| panic!("{}: {e}", data.display()));

    let out = root.path().join("out");
    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--cache-from",
            &format!("type=registry,ref={cache_ref}"),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
        ctx.path(),
    );
    assert!(
        log.contains(&format!("cache blob {corrupt} rejected")),
        "no rejection of {corrupt}:\n{log}"
    );
    assert_eq!(
        ran(&log),
        ["RAN-final"],
        "only the final step is rebuilt:\n{log}"
    );
    let built = std::fs::read_to_string(out.join("final")).expect("final");
    assert_eq!(built, format!("{n}\nsource {n}\n"));
}

/// `type=local`: runner A writes the cache as an OCI layout (read back by skopeo's `oci:`
/// transport); runner B, empty, reads it and runs no RUN step; after a source change only
/// the steps after it; a blob of the layout overwritten with other bytes is rejected and
/// its step rebuilt.
#[test]
fn local_cache_fresh_runner_round_trip_and_corrupt_blob() {
    let reg = LocalRegistry::ensure();
    let n = nonce();
    let ctx = context(&reg, &n);
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("cache");
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-first", "RAN-second", "RAN-final"], "{log}");
    assert!(dir.join("oci-layout").is_file());
    let text = run_stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:latest", dir.display()),
    ]));
    let manifest: Value = serde_json::from_str(&text).expect("manifest");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    let layers = layer_digests(&manifest);
    assert!(layers.len() >= 4, "mode=max has every step: {manifest}");
    verify_layout(&dir);

    let out = root.path().join("out-b");
    let log = rbuild(
        &cache_dir(root.path(), "b"),
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), Vec::<&str>::new(), "runner B ran steps:\n{log}");
    assert_eq!(
        std::fs::read_to_string(out.join("final")).expect("final"),
        format!("{n}\nsource {n}\n")
    );

    // The final RUN step's layer, overwritten with other bytes of the same size.
    let corrupt = layers
        .iter()
        .find(|d| {
            let list = run_stdout(Command::new("sh").arg("-c").arg(format!(
                "gzip -dc {}/blobs/sha256/{} | tar -t",
                dir.display(),
                &d[7..]
            )));
            list.lines().any(|l| l == "final")
        })
        .expect("the final step's layer");
    let path = dir.join("blobs/sha256").join(&corrupt[7..]);
    let mut bytes = std::fs::read(&path).expect("blob");
    let last = bytes.len() - 1;
    for b in &mut bytes[last / 2..] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("write blob");
    std::fs::write(ctx.path().join("src.txt"), "changed\n").expect("src");
    let out = root.path().join("out-c");
    let log = rbuild(
        &cache_dir(root.path(), "c"),
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
        ctx.path(),
    );
    assert_eq!(ran(&log), ["RAN-second", "RAN-final"], "{log}");
    assert_eq!(
        std::fs::read_to_string(out.join("final")).expect("final"),
        format!("{n}\nchanged\n")
    );
    // With the source back, the corrupt layer is needed: rejected, its step rebuilt.
    std::fs::write(ctx.path().join("src.txt"), format!("source {n}\n")).expect("src");
    let out = root.path().join("out-d");
    let log = rbuild(
        &cache_dir(root.path(), "d"),
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
        ctx.path(),
    );
    assert!(
        log.contains(&format!("cache blob {corrupt} rejected")),
        "{log}"
    );
    assert_eq!(ran(&log), ["RAN-final"], "{log}");
    assert_eq!(
        std::fs::read_to_string(out.join("final")).expect("final"),
        format!("{n}\nsource {n}\n")
    );
}

/// A package.json (and its lockfile, made by the host's npm) with `deps`.
fn npm_context(reg: &LocalRegistry, deps: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let deps: serde_json::Map<String, Value> = deps
        .iter()
        .map(|(n, v)| ((*n).to_owned(), Value::from(*v)))
        .collect();
    let pkg =
        serde_json::json!({"name": "cache-mount-test", "version": "1.0.0", "dependencies": deps});
    std::fs::write(dir.path().join("package.json"), pkg.to_string()).expect("package.json");
    run_stdout(
        Command::new("npm")
            .args(["install", "--package-lock-only", "--no-audit", "--no-fund"])
            .current_dir(dir.path()),
    );
    let df = format!(
        "FROM {}\n\
         WORKDIR /app\n\
         COPY package*.json ./\n\
         RUN --mount=type=cache,target=/root/.npm \
         if [ -d /root/.npm/_cacache ]; then echo NPM-CACHE-RESTORED; else echo NPM-CACHE-EMPTY; fi \
         && npm ci --no-audit --no-fund && echo RAN-npm\n",
        reg.node()
    );
    std::fs::write(dir.path().join("Dockerfile"), df).expect("Dockerfile");
    dir
}

/// The bytes of a cache export's `packs sent N, already there M` (kB and MB read too).
pub(super) fn pack_bytes(log: &str) -> (u64, u64) {
    let bytes = |s: &str| -> u64 {
        let mut it = s.split_whitespace();
        let v: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let unit = match it.next() {
            Some("kB") => 1e3,
            Some("MB") => 1e6,
            Some("GB") => 1e9,
            _ => 1.0,
        };
        (v * unit) as u64
    };
    let line = log
        .lines()
        .find(|l| l.contains("packs sent "))
        .unwrap_or_else(|| panic!("no cache mount export in:\n{log}"));
    let after = line.split("packs sent ").nth(1).unwrap_or("");
    let (sent, rest) = after.split_once(", already there ").unwrap_or((after, ""));
    let had = rest.split(';').next().unwrap_or("");
    (bytes(sent), bytes(had))
}

/// Whether a step printed `marker` (a log line ending with it that is not the step's
/// title, which holds the command).
fn printed(log: &str, marker: &str) -> bool {
    log.lines()
        .any(|l| l.ends_with(marker) && !l.contains("RUN --mount"))
}

/// Cache mounts travel: runner A's npm cache (`RUN --mount=type=cache,target=/root/.npm
/// npm ci`) is exported with the cache; after a dependency change runner B, empty, finds it
/// restored before `npm ci` runs, from the registry and from a local cache, and from the
/// export of a warm build of A whose steps were all cached; exported with
/// `cache-mounts=false` it is not.
#[test]
fn cache_mount_content_travels_with_the_cache() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-mounts");
    let with = format!("{}/{repo}:with", reg.host());
    let without = format!("{}/{repo}:without", reg.host());
    let root = tempfile::tempdir().expect("tempdir");
    let local = root.path().join("local");
    let ctx = npm_context(&reg, &[("ms", "2.1.3")]);
    let log = rbuild(
        &cache_dir(root.path(), "a"),
        &[
            "--cache-to",
            &format!("type=registry,ref={with},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={without},mode=max,cache-mounts=false"),
            "--cache-to",
            &format!("type=local,dest={},mode=max", local.display()),
        ],
        ctx.path(),
    );
    assert!(printed(&log, "NPM-CACHE-EMPTY"), "{log}");
    assert!(log.contains("1 cache mounts: packs sent"), "{log}");
    // Runner A again, every step cached: its copy of the mount is exported all the same.
    let warm = format!("{}/{repo}:warm", reg.host());
    let log = rbuild(
        &root.path().join("a"),
        &["--cache-to", &format!("type=registry,ref={warm},mode=max")],
        ctx.path(),
    );
    assert!(log.contains("(0 steps run, 3 cached)"), "{log}");
    assert!(log.contains("1 cache mounts: packs sent 0 B"), "{log}");

    // A dependency added: npm ci runs again on fresh runners.
    let ctx = npm_context(&reg, &[("ms", "2.1.3"), ("is-number", "7.0.0")]);
    for (n, from) in [
        ("b", format!("type=registry,ref={with}")),
        ("c", format!("type=local,src={}", local.display())),
        ("e", format!("type=registry,ref={warm}")),
    ] {
        let log = rbuild(
            &cache_dir(root.path(), n),
            &["--cache-from", &from],
            ctx.path(),
        );
        assert!(
            printed(&log, "RAN-npm"),
            "{from}: npm ci did not run:\n{log}"
        );
        assert!(printed(&log, "NPM-CACHE-RESTORED"), "{from}:\n{log}");
        assert!(log.contains("cache mount restored from"), "{from}:\n{log}");
    }
    let log = rbuild(
        &cache_dir(root.path(), "d"),
        &["--cache-from", &format!("type=registry,ref={without}")],
        ctx.path(),
    );
    assert!(printed(&log, "RAN-npm"), "{log}");
    assert!(
        printed(&log, "NPM-CACHE-EMPTY"),
        "cache-mounts=false exported it:\n{log}"
    );
}

/// Two runners export to the same ref at once: both finish, and the ref is one complete
/// cache (every blob it names is in the registry; a fresh runner building that runner's
/// commit runs nothing).
#[test]
fn concurrent_exports_to_one_ref_leave_one_complete_cache() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("cache-helper-race");
    let cache_ref = format!("{}/{repo}:cache", reg.host());
    let root = tempfile::tempdir().expect("tempdir");
    let ctxs = [context(&reg, &nonce()), context(&reg, &nonce())];
    std::thread::scope(|s| {
        for (n, ctx) in ctxs.iter().enumerate() {
            let (root, cache_ref) = (root.path(), &cache_ref);
            s.spawn(move || {
                rbuild(
                    &cache_dir(root, &format!("runner-{n}")),
                    &[
                        "--cache-to",
                        &format!("type=registry,ref={cache_ref},mode=max"),
                    ],
                    ctx.path(),
                )
            });
        }
    });
    let oci = root.path().join("copy");
    run_stdout(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{cache_ref}"),
        &format!("oci:{}:c", oci.display()),
    ]));
    verify_layout(&oci);
    let ran_per_commit: Vec<usize> = ctxs
        .iter()
        .enumerate()
        .map(|(n, ctx)| {
            let log = rbuild(
                &cache_dir(root.path(), &format!("fresh-{n}")),
                &["--cache-from", &format!("type=registry,ref={cache_ref}")],
                ctx.path(),
            );
            ran(&log).len()
        })
        .collect();
    assert!(
        ran_per_commit.contains(&0),
        "neither runner's cache is whole: steps run {ran_per_commit:?}"
    );
}
