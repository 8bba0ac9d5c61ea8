use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{LocalRegistry, run, run_stdout};

use super::{mounts_below, nonce, processes_with, rbuild_ok, read_json, scratch};

/// A small xorshift generator: the kill points, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The pushed image's files `/n` and `/r.sum`, and whether `/r` hashes to `/r.sum`.
fn pushed(name: &str, dir: &Path) -> (String, bool) {
    let layout = dir.join("pulled");
    let _ = fs::remove_dir_all(&layout);
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:latest", layout.display())));
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir(&rootfs).expect("rootfs");
    let index = read_json(&layout.join("index.json"));
    let m = read_json(&super::blob_path(
        &layout,
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ));
    for l in m["layers"].as_array().expect("layers") {
        let blob = super::blob_path(&layout, l["digest"].as_str().expect("digest"));
        let sum = run_stdout(Command::new("sha256sum").arg(&blob));
        assert!(
            sum.starts_with(blob.file_name().unwrap().to_str().unwrap()),
            "a pushed blob does not hash to its name: {sum}"
        );
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&rootfs));
    }
    let n = fs::read_to_string(rootfs.join("n")).expect("/n");
    let recorded = fs::read_to_string(rootfs.join("r.sum")).expect("/r.sum");
    let actual = run_stdout(Command::new("sha256sum").arg("r").current_dir(&rootfs));
    (
        n.trim().to_owned(),
        recorded.split_whitespace().next() == actual.split_whitespace().next(),
    )
}

/// Waits (up to 10 s: PDEATHSIG is delivered asynchronously) until no process carries the
/// marker and nothing is mounted below `cache`.
fn nothing_left(marker: &str, cache: &Path, what: &str) {
    let start = Instant::now();
    loop {
        let procs = processes_with(marker);
        let mounts = mounts_below(cache);
        if procs.is_empty() && mounts.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: left behind: processes {procs:#?}, mounts {mounts:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 of `rbuild build` at random points of builds that pull, run a step, commit and
/// compress its layer and push (each iteration a new build argument, so the step runs
/// again; the base image is pulled until a build gets past the pull; each kill at a random
/// point of the last measured build time), `RBUILD_CRASH_ITERATIONS`
/// times (default 30; `scripts/crash-loop.sh` runs more). After each kill no process of
/// the build and no mount is left; every fifth iteration, and at the end, a build from
/// the same cache runs to completion and the image in the registry is that build's (its
/// `/n` the argument, its `/r` the bytes its step hashed).
#[test]
fn kill_9_at_random_points_then_the_cache_builds() {
    let reg = LocalRegistry::ensure();
    let iterations: u64 = std::env::var("RBUILD_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = scratch("crash");
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).expect("ctx");
    let marker = format!("crash-marker-{}", nonce());
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nARG N\n\
             RUN echo {marker} >/dev/null && echo \"$N\" > /n && \
             head -c 1500000 /dev/urandom > /r && sha256sum /r > /r.sum\n",
            reg.busybox()
        ),
    )
    .expect("Dockerfile");
    let cache = dir.path().join("cache");
    let name = format!("{}/{}:latest", reg.host(), reg.unique_repo("harden-crash"));
    let push = format!("type=image,name={name},push=true");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    let mut rng = Rng(seed);
    eprintln!("seed {seed}, {iterations} iterations");
    // A whole build first, with a fresh cache: how long the kill window is.
    let t = Instant::now();
    let warm = dir.path().join("warm-cache");
    rbuild_ok(&warm, &["--build-arg", "N=warm", "-o", &push], &ctx);
    // After each check, the window is that check's build time (the same cache, warm): the
    // kills before the first check fall in builds that also pull.
    let mut window = t.elapsed().as_millis() as u64;
    let _ = fs::remove_dir_all(&warm);
    let check = |n: &str| -> u64 {
        let t = Instant::now();
        rbuild_ok(
            &cache,
            &["--build-arg", &format!("N={n}"), "-o", &push],
            &ctx,
        );
        let took = t.elapsed().as_millis() as u64;
        nothing_left(&marker, &cache, "a finished build");
        let (got, intact) = pushed(&name, dir.path());
        assert_eq!(got, n, "the pushed image is not the last build's");
        assert!(
            intact,
            "the pushed /r does not hash to the /r.sum its step wrote"
        );
        took
    };
    let mut killed = 0;
    for i in 0..iterations {
        let delay = rng.below(window);
        let mut child = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["build", "--progress=plain", "--cache-dir"])
            .arg(&cache)
            .args(["--build-arg", &format!("N=kill-{i}"), "-o", &push])
            .arg(&ctx)
            .env("RBUILD_TEST_MARKER", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rbuild");
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("try_wait").is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        nothing_left(
            &marker,
            &cache,
            &format!("iteration {i}, killed after {delay} ms"),
        );
        if i % 5 == 4 {
            window = check(&format!("check-{i}"));
        }
    }
    let _ = check("final");
    eprintln!("{killed} of {iterations} builds killed mid-way (last window {window} ms)");
    assert!(
        killed * 3 >= iterations,
        "a third of the kills at least should land mid-build: {killed} of {iterations}"
    );
}
