//! Hardening (issue 22): the cache survives full disks, blobs changed on disk, and kill -9
//! at any point of a build, with the real binary, the local registry and real mounts.
//!
//! Each Dockerfile writes a nonce, so no other test (or run) shares its layers. The
//! images are checked from their OCI layouts: every blob hashes to its name, and the files
//! the steps wrote have the expected bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use test_support::{describe, output, run_stdout};

/// The cache on a tmpfs that fills mid-step, mid-unpack, mid-compress and mid-push.
mod disk;

/// kill -9 at random points of builds, then a rebuild.
mod crash;

/// Blobs changed in the cache after they were stored.
mod tamper;

/// Device nodes and masks the sandbox binds: only the genuine ones.
mod devices;

fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{t}", std::process::id())
}

/// A directory on the disk (not a tmpfs or overlay: overlayfs uppers live below it).
fn scratch(what: &str) -> tempfile::TempDir {
    let root = Path::new("/var/tmp/rbuild-hardening");
    std::fs::create_dir_all(root).expect("mkdir /var/tmp/rbuild-hardening");
    tempfile::Builder::new()
        .prefix(&format!("{what}-"))
        .tempdir_in(root)
        .expect("tempdir")
}

/// `rbuild build --progress=plain --cache-dir CACHE ARGS CTX`, whatever its status.
fn rbuild(cache: &Path, args: &[&str], ctx: &Path) -> (Command, Output) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("build")
        .arg("--progress=plain")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .arg(ctx);
    let out = output(&mut cmd);
    (cmd, out)
}

/// [`rbuild`], failing unless it exits 0; returns stderr (the progress log).
fn rbuild_ok(cache: &Path, args: &[&str], ctx: &Path) -> String {
    let (cmd, out) = rbuild(cache, args, ctx);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `-o type=oci,dest=DIR,tar=false`.
fn oci_out(dir: &Path) -> String {
    format!("type=oci,dest={},tar=false", dir.display())
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The image manifest of a single-image OCI layout, after checking that every blob of the
/// layout hashes to its name.
fn layout_manifest(layout: &Path) -> Value {
    let blobs = layout.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).unwrap_or_else(|e| panic!("{}: {e}", blobs.display())) {
        let p = e.expect("entry").path();
        let sum = run_stdout(Command::new("sha256sum").arg(&p));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(sum.starts_with(&name), "{} hashes to {sum}", p.display());
        n += 1;
    }
    assert!(n > 0, "no blobs in {}", blobs.display());
    let index = read_json(&layout.join("index.json"));
    let mut desc = index["manifests"][0].clone();
    loop {
        let m = read_json(&blob_path(layout, desc["digest"].as_str().expect("digest")));
        match m["manifests"].as_array() {
            // an index (attestations, platforms): its first image
            Some(list) => desc = list[0].clone(),
            None => return m,
        }
    }
}

/// The layer digests of the layout's image.
fn layers(layout: &Path) -> Vec<String> {
    layout_manifest(layout)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// The sha256 (hex) of the file `member` in the image of the layout (its last layer that
/// has it).
fn file_sum(layout: &Path, member: &str) -> String {
    for l in layers(layout).iter().rev() {
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(blob_path(layout, l))
            .arg(member)
            .output()
            .expect("tar");
        if out.status.success() {
            return sha256_hex(&out.stdout);
        }
    }
    panic!("{member} is in no layer of {}", layout.display());
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("f");
    std::fs::write(&f, bytes).expect("write");
    run_stdout(Command::new("sha256sum").arg(&f))
        .split_whitespace()
        .next()
        .expect("sum")
        .to_owned()
}

/// Mount points below `dir`, not `dir` itself (from /proc/self/mountinfo): what a build
/// must not leave.
fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = format!("{}/", dir.to_string_lossy());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// Processes whose command line or environment mentions `needle` (a test's unique
/// directory or marker).
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if cmd.contains(needle) || String::from_utf8_lossy(&env).contains(needle) {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}
