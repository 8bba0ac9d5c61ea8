//! Engine behaviours beyond the checklist: the cache, failures, cancellation, hostile base
//! images, the exporters read by real tools.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use builder_core::{Build, Error, ExportSpec, ProgressEvent, registry_client};
use serde_json::{Value, json};
use sha2::Digest as _;

use libtest_mimic::Failed;

use crate::util::{Case, R, REGISTRY, docker_available, expect_err, ok, run_build, sh, unique};

const CHAIN: &str = "FROM {BUSYBOX}\nRUN echo one > /one\nWORKDIR /w\nRUN echo two > two\nENV X=1\nRUN echo three > /three\n";

pub(crate) fn warm_rebuild_runs_nothing_and_gives_the_same_digest() -> R {
    let c = Case::new();
    let cold = ok(c.build(CHAIN))?;
    ensure_eq!(cold.report.steps_run, 4, "RUN, WORKDIR, RUN, RUN");
    let warm = ok(c.build(CHAIN))?;
    ensure_eq!(warm.report.steps_run, 0);
    ensure_eq!(warm.report.steps_cached, 4);
    ensure_eq!(warm.digest()?, cold.digest()?);
    ensure_eq!(warm.report.config_digests, cold.report.config_digests);
    let cached = warm
        .events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::StepCached { .. }))
        .count();
    ensure_eq!(cached, 4);
    ensure!(
        !warm
            .events
            .iter()
            .any(|e| matches!(e, ProgressEvent::StepLog { .. })),
        "a cached step printed output"
    );
    ensure_eq!(warm.read("/w/two")?, "two\n");
    Ok(())
}

pub(crate) fn changed_run_reruns_from_there() -> R {
    let c = Case::new();
    ok(c.build(CHAIN))?;
    let img = ok(c.build(&CHAIN.replace("echo two", "echo TWO")))?;
    ensure_eq!(
        img.report.steps_run,
        2,
        "the changed RUN and the one after it"
    );
    ensure_eq!(img.report.steps_cached, 2, "the first RUN and the WORKDIR");
    ensure_eq!(img.read("/w/two")?, "TWO\n");
    ensure_eq!(img.read("/three")?, "three\n");
    // An ENV change re-runs the RUN after it only.
    let img = ok(c.build(&CHAIN.replace("ENV X=1", "ENV X=2")))?;
    ensure_eq!(img.report.steps_run, 1);
    Ok(())
}

pub(crate) fn no_cache_reruns_everything() -> R {
    let c = Case::new();
    let cold = ok(c.build(CHAIN))?;
    let again = ok(c.build_with(CHAIN, |b| Ok(b.no_cache(true))))?;
    ensure_eq!(again.report.steps_run, cold.report.steps_run);
    ensure_eq!(again.report.steps_cached, 0);
    Ok(())
}

pub(crate) fn failed_run_reports_location_and_output() -> R {
    let c = Case::new();
    let e = expect_err(
        c.build(
            "FROM {BUSYBOX}\nENV A=1\nRUN echo to-stdout; echo to-stderr >&2; \\\n    exit 3\n",
        ),
        "did not complete successfully",
    )?;
    let Error::Step {
        location,
        instruction,
        reason,
        output_tail,
        ..
    } = &e
    else {
        return Err(format!("not a step error: {e:?}").into());
    };
    ensure!(location.ends_with("Dockerfile:3"), "location {location:?}");
    ensure!(
        instruction.starts_with("RUN echo to-stdout"),
        "instruction {instruction:?}"
    );
    ensure!(reason.contains('3'), "no exit code in {reason:?}");
    ensure!(
        output_tail.iter().any(|l| l.contains("to-stdout"))
            && output_tail.iter().any(|l| l.contains("to-stderr")),
        "output tail {output_tail:?}"
    );
    // Nothing of the failed step is cached: fixing the line runs it.
    let img = ok(c.build("FROM {BUSYBOX}\nENV A=1\nRUN echo fixed > /f\n"))?;
    ensure_eq!(img.report.steps_run, 1);
    Ok(())
}

/// A registry on 127.0.0.1 that refuses every request with 401 and a Basic challenge, as
/// one does without credentials; its `HOST:PORT`.
fn refusing_registry() -> Result<String, Failed> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let host = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"rbuild-test\"\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(host)
}

/// An embedder tells a registry's refusal from a failed command by the typed cause of
/// `Error::Step`, also when the failure reaches the build through a stage another stage
/// waits on (`COPY --from`).
pub(crate) fn step_error_tells_a_refused_pull_from_a_failed_command() -> R {
    use builder_core::StepError;
    let c = Case::new();
    let host = refusing_registry()?;
    let e = expect_err(
        c.build(&format!(
            "FROM {host}/solver/locked:1 AS base\nRUN true\nFROM {{BUSYBOX}}\nCOPY --from=base /x /x\n"
        )),
        "401",
    )?;
    match &e {
        Error::Step {
            source: StepError::Registry(r),
            ..
        } => ensure!(
            r.status() == Some(401) || matches!(**r, registry_client::Error::Auth { .. }),
            "not a refusal: {r:?}"
        ),
        other => return Err(format!("not a typed registry failure: {other:?}").into()),
    }
    let e = expect_err(
        c.build("FROM {BUSYBOX} AS base\nRUN exit 3\nFROM {BUSYBOX}\nCOPY --from=base /x /x\n"),
        "did not complete successfully",
    )?;
    match &e {
        Error::Step {
            source: StepError::Exit(status),
            location,
            ..
        } => {
            ensure!(location.ends_with("Dockerfile:2"), "location {location:?}");
            ensure_eq!(*status, builder_core::ExitStatus::Exited(3));
        }
        other => return Err(format!("not a typed command failure: {other:?}").into()),
    }
    Ok(())
}

/// Processes whose environment holds `marker`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = fs::read(e.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// Mount table lines (of this process and every other) that mention `path`.
fn mounts_under(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let mut tables = vec![PathBuf::from("/proc/self/mountinfo")];
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
            {
                tables.push(e.path().join("mountinfo"));
            }
        }
    }
    for t in tables {
        if let Ok(text) = fs::read_to_string(&t) {
            for l in text.lines().filter(|l| l.contains(&needle)) {
                found.push(format!("{}: {l}", t.display()));
            }
        }
    }
    found
}

pub(crate) fn cancel_during_run_tears_everything_down() -> R {
    let c = Case::new();
    let marker = format!("ENGINE_CANCEL_MARK={}", unique("m"));
    c.dockerfile(&format!("FROM {{BUSYBOX}}\nENV {marker}\nRUN sleep 30\n"));
    let spec = format!("type=oci,dest={}", c.path().join("out.tar").display());
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(spec.parse()?);
    let handle = b.cancel_handle();
    let worker = std::thread::spawn(move || run_build(b));
    let t0 = Instant::now();
    let pids = loop {
        let p = marked_processes(&marker);
        if !p.is_empty() {
            break p;
        }
        if worker.is_finished() || t0.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the RUN never started: {:?}",
                worker.join().map(|r| r.map(|_| ()))
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the sleep settle, then cancel.
    std::thread::sleep(Duration::from_millis(300));
    let t1 = Instant::now();
    handle.cancel();
    let res = worker.join().map_err(|_| "the build thread panicked")?;
    let took = t1.elapsed();
    ensure!(
        matches!(res, Err(Error::Cancelled)),
        "expected Error::Cancelled, got {:?}",
        res.map(|_| ())
    );
    ensure!(took < Duration::from_secs(5), "cancel took {took:?}");
    let left = marked_processes(&marker);
    ensure!(left.is_empty(), "processes left: {left:?} (were {pids:?})");
    let mounts = mounts_under(c.cache());
    ensure!(mounts.is_empty(), "mounts left: {mounts:#?}");
    ensure!(!c.path().join("out.tar").exists(), "an output was written");
    Ok(())
}

/// A failed step cancels a long one running in parallel in another stage.
pub(crate) fn failed_step_cancels_parallel_stage() -> R {
    let c = Case::new();
    let marker = format!("ENGINE_PAR_MARK={}", unique("m"));
    let t0 = Instant::now();
    let e = expect_err(
        c.build(&format!(
            "FROM {{BUSYBOX}} AS slow\nENV {marker}\nRUN sleep 30 && echo > /x\nFROM {{BUSYBOX}} AS broken\nRUN sleep 1; exit 7\nFROM scratch\nCOPY --from=slow /x /x\nCOPY --from=broken /etc/hostname /y\n"
        )),
        "",
    )?;
    let took = t0.elapsed();
    ensure!(
        e.to_string().contains("Dockerfile:5"),
        "the error is not the failed step's: {e}"
    );
    ensure!(
        took < Duration::from_secs(25),
        "the build waited for the slow stage: {took:?}"
    );
    let left = marked_processes(&marker);
    ensure!(left.is_empty(), "processes left: {left:?}");
    let mounts = mounts_under(c.cache());
    ensure!(mounts.is_empty(), "mounts left: {mounts:#?}");
    Ok(())
}

// ---------------------------------------------------------------- images made by hand

/// One raw tar entry, written without any path checks (the point is to write bad ones).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, if kind == b'5' { 0o755 } else { 0o644 });
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_600_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_tar(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    }
}

/// Pushes a one-platform image made of `layers` (uncompressed tars) with `config` (rootfs
/// filled in) to `repo:latest` on the local registry, through an OCI layout and skopeo.
fn push_handmade(dir: &Path, repo: &str, layers: &[Vec<u8>], mut config: Value) -> R {
    let layout = dir.join("handmade");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let put = |b: &[u8]| -> Result<String, std::io::Error> {
        let d = sha256(b);
        fs::write(blobs.join(&d[7..]), b)?;
        Ok(d)
    };
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in layers {
        diff_ids.push(sha256(l));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l)?;
        let gz = gz.finish()?;
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(&gz)?,
            "size": gz.len(),
        }));
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let cfg = serde_json::to_vec(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&cfg)?, "size": cfg.len()},
        "layers": descs,
    }))?;
    let md = put(&manifest)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        }))?,
    )?;
    sh(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{repo}:latest")))?;
    fs::remove_dir_all(&layout)?;
    Ok(())
}

fn base_config(extra_config: Value) -> Value {
    json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": extra_config,
        "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "handmade"}],
    })
}

/// Everything below `dir` (relative paths with a type letter), for before/after checks.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = p.symlink_metadata() else {
                continue;
            };
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            let kind = if md.is_dir() {
                "d"
            } else if md.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            out.push(format!("{kind} {rel} {}", md.len()));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A hostile base image fails the build with an error naming the entry, and nothing
/// outside the cache changes.
pub(crate) fn hostile_base_image_is_refused() -> R {
    let c = Case::new();
    let victim = c.path().join("victim");
    fs::create_dir_all(victim.join("dir"))?;
    fs::write(victim.join("file"), "original")?;
    let victim_rel = victim.strip_prefix("/")?.display().to_string();
    let up = "../".repeat(24);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        {
            let name = format!("{up}{victim_rel}/escaped");
            let mut t = Vec::new();
            raw_entry(&mut t, "etc/", b'5', "", b"");
            raw_entry(&mut t, &name, b'0', "", b"pwned");
            ("dotdot", finish_tar(t), name)
        },
        {
            let mut t = Vec::new();
            raw_entry(&mut t, "evil", b'2', &format!("/{victim_rel}/dir"), b"");
            raw_entry(&mut t, "evil/pwned", b'0', "", b"pwned");
            ("symlink", finish_tar(t), "evil/pwned".to_owned())
        },
        {
            let mut t = Vec::new();
            raw_entry(&mut t, "hl", b'1', &format!("{up}{victim_rel}/file"), b"");
            ("hardlink", finish_tar(t), "hl".to_owned())
        },
    ];
    for (what, layer, entry) in cases {
        let repo = format!(
            "{REGISTRY}/enginetests/{}",
            unique(&format!("hostile-{what}"))
        );
        push_handmade(c.path(), &repo, &[layer], base_config(json!({})))?;
        c.dockerfile(&format!("FROM {repo}\nRUN true\n"));
        let before = tree(c.path());
        let res = c.run(Ok);
        let e = expect_err(res, "")?;
        let text = e.to_string();
        // The error names the entry (or, for `..`, the part of it that is refused).
        let head: String = entry.chars().take(40).collect();
        ensure!(
            text.contains("tar entry") && text.contains(&head),
            "{what}: the error does not name the entry {entry:?}: {text}"
        );
        let mut after = tree(c.path());
        // The build may add its output directory and whatever lies under the cache.
        after.retain(|l| !l.contains(" cache") && !l.contains(" out-"));
        let mut before_f = before.clone();
        before_f.retain(|l| !l.contains(" cache") && !l.contains(" out-"));
        ensure_eq!(after, before_f, "{what}: the outside changed");
        ensure_eq!(fs::read_to_string(victim.join("file"))?, "original");
        ensure!(
            fs::read_dir(victim.join("dir"))?.next().is_none(),
            "{what}: wrote into the victim directory"
        );
        let mounts = mounts_under(c.cache());
        ensure!(mounts.is_empty(), "{what}: mounts left: {mounts:#?}");
    }
    Ok(())
}

/// Every field of a base image's config survives, including those oci-spec lacks.
pub(crate) fn unknown_base_config_fields_survive() -> R {
    let c = Case::new();
    let repo = format!("{REGISTRY}/enginetests/{}", unique("fields"));
    let mut t = Vec::new();
    raw_entry(&mut t, "hello", b'0', "", b"hi");
    let mut cfg = base_config(json!({
        "Env": ["PATH=/bin", "KEEP=1"],
        "OnBuild": null,
        "Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 5000000000u64},
        "X-Vendor": {"nested": [1, 2]},
    }));
    cfg["docker_version"] = json!("20.10.24");
    cfg["container_config"] = json!({"Hostname": "abc"});
    cfg["x-top-level"] = json!("kept");
    push_handmade(c.path(), &repo, &[finish_tar(t)], cfg)?;
    let img = ok(c.build(&format!("FROM {repo}\nENV a=1\nLABEL l=v\n")))?;
    let out = img.config()?;
    ensure_eq!(out["docker_version"], "20.10.24");
    ensure_eq!(out["container_config"], json!({"Hostname": "abc"}));
    ensure_eq!(out["x-top-level"], "kept");
    ensure_eq!(out["config"]["X-Vendor"], json!({"nested": [1, 2]}));
    ensure_eq!(out["config"]["Healthcheck"]["StartInterval"], 5000000000u64);
    ensure_eq!(
        crate::util::strings(&out["config"]["Env"]),
        ["PATH=/bin", "KEEP=1", "a=1"]
    );
    ensure_eq!(img.read("/hello")?, "hi");
    Ok(())
}

pub(crate) fn oci_tar_and_dir_outputs_agree() -> R {
    let c = Case::new();
    c.dockerfile("FROM {BUSYBOX}\nRUN echo x > /x\n");
    let tar = c.path().join("image.tar");
    let img = ok(c.run(|b| Ok(b.output(format!("type=oci,dest={}", tar.display()).parse()?))))?;
    let digest = |r: String| -> Result<String, Failed> {
        let v: Value = serde_json::from_str(&sh(Command::new("skopeo").args(["inspect", &r]))?)
            .map_err(|e| e.to_string())?;
        Ok(v["Digest"].as_str().unwrap_or_default().to_owned())
    };
    let from_tar = digest(format!("oci-archive:{}:latest", tar.display()))?;
    let from_dir = digest(format!("oci:{}:latest", img.layout.display()))?;
    ensure_eq!(from_tar, from_dir);
    ensure_eq!(from_dir, img.digest()?);
    Ok(())
}

pub(crate) fn docker_output_loads_and_runs() -> R {
    if !docker_available() {
        eprintln!(
            "docker_output_loads_and_runs: no docker daemon reachable through /usr/bin/docker; skipped"
        );
        return Ok(());
    }
    let c = Case::new();
    let name = format!("enginetests/{}:v1", unique("dockerload"));
    c.dockerfile("FROM {BUSYBOX}\nRUN echo -n loaded > /out\nENV WHO=engine\nCMD [\"sh\", \"-c\", \"cat /out; echo \\\" $WHO\\\"\"]\n");
    let tar = c.path().join("docker.tar");
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(format!("type=docker,dest={}", tar.display()).parse()?)
        .tag(&name)?;
    ok(run_build(b))?;
    let out = sh(Command::new("/usr/bin/docker")
        .arg("load")
        .arg("-i")
        .arg(&tar))?;
    let result = (|| -> R {
        ensure!(out.contains(&name), "docker load said {out:?}");
        let run =
            sh(Command::new("/usr/bin/docker").args(["run", "--rm", "--network", "host", &name]))?;
        ensure_eq!(run.trim_end(), "loaded engine");
        let inspect: Value = serde_json::from_str(&sh(
            Command::new("/usr/bin/docker").args(["image", "inspect", &name])
        )?)
        .map_err(|e| e.to_string())?;
        ensure!(
            crate::util::strings(&inspect[0]["Config"]["Env"]).contains(&"WHO=engine".to_owned()),
            "{}",
            inspect[0]["Config"]
        );
        Ok(())
    })();
    let _ = Command::new("/usr/bin/docker")
        .args(["rmi", "-f", &name])
        .output();
    result
}

/// The registry output pushes an image skopeo can read back, with the same digest.
pub(crate) fn registry_output_round_trips() -> R {
    let c = Case::new();
    let repo = format!("{REGISTRY}/enginetests/{}", unique("push"));
    c.dockerfile("FROM {BUSYBOX}\nRUN echo pushed > /p\n");
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(ExportSpec::registry())
        .tag(&format!("{repo}:latest"))?;
    let (report, _) = ok(run_build(b))?;
    let v: Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{repo}:latest"),
    ]))?)
    .map_err(|e| e.to_string())?;
    let pushed = report
        .digest
        .clone()
        .ok_or("a push reported no image digest")?;
    ensure_eq!(v["Digest"], pushed.as_str());
    // And it is a usable base.
    let img = ok(c.build(&format!("FROM {repo}\nRUN cat /p > /q\n")))?;
    ensure_eq!(img.read("/q")?, "pushed\n");
    Ok(())
}

// ---------------------------------------------------------------- cache and scheduling

/// A TCP forwarder to the local registry that can be switched off, to take the network
/// away between two builds.
struct Forwarder {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Forwarder {
    fn start() -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, conns2) = (stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = std::net::TcpStream::connect(REGISTRY) else {
                    continue;
                };
                let pair = (client.try_clone(), upstream.try_clone());
                let (Ok(c2), Ok(u2)) = pair else { continue };
                if let Ok(mut list) = conns2.lock() {
                    list.extend(client.try_clone());
                    list.extend(upstream.try_clone());
                }
                let (mut c1, mut u1) = (client, upstream);
                let (mut c2, mut u2) = (c2, u2);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self { port, stop, conns })
    }

    /// Refuses new connections and cuts the open ones.
    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(list) = self.conns.lock() {
            for s in list.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A warm rebuild from a digest-pinned base needs no registry at all.
pub(crate) fn pinned_base_warm_rebuild_needs_no_network() -> R {
    let v: Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}", crate::util::BUSYBOX),
    ]))?)
    .map_err(|e| e.to_string())?;
    let digest = v["Digest"].as_str().ok_or("no digest")?.to_owned();
    let fwd = Forwarder::start()?;
    let text = format!(
        "FROM 127.0.0.1:{}/library/busybox@{digest}\nRUN echo pinned > /p\nWORKDIR /w\n",
        fwd.port
    );
    let c = Case::new();
    let cold = ok(c.build(&text))?;
    fwd.stop();
    let warm = ok(c.build(&text))?;
    ensure_eq!(warm.report.steps_run, 0);
    ensure_eq!(warm.digest()?, cold.digest()?);
    ensure_eq!(warm.read("/p")?, "pinned\n");
    Ok(())
}

/// A sink that stamps each event with the time it arrived.
#[derive(Default)]
struct TimedSink(Vec<(Instant, ProgressEvent)>);

impl builder_core::ProgressSink for TimedSink {
    fn event(&mut self, e: &ProgressEvent) {
        self.0.push((Instant::now(), e.clone()));
    }
}

/// Start and end times of the steps whose names contain `needle`.
fn step_spans(events: &[(Instant, ProgressEvent)], needle: &str) -> Vec<(Instant, Instant)> {
    let mut out = Vec::new();
    for (t, e) in events {
        if let ProgressEvent::StepStarted { id, name, .. } = e {
            if !name.contains(needle) {
                continue;
            }
            let end = events.iter().find_map(|(t2, e2)| match e2 {
                ProgressEvent::StepDone { id: d, .. } if d == id => Some(*t2),
                _ => None,
            });
            if let Some(end) = end {
                out.push((*t, end));
            }
        }
    }
    out
}

/// Independent stages run at the same time.
pub(crate) fn independent_stages_run_in_parallel() -> R {
    let c = Case::new();
    c.dockerfile(
        "FROM {BUSYBOX} AS a\nRUN sleep 2 && echo a > /a\nFROM {BUSYBOX} AS b\nRUN sleep 2 && echo b > /b\nFROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    );
    let spec = format!("type=oci,dest={},tar=false", c.path().join("out").display());
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(spec.parse()?);
    let mut sink = TimedSink::default();
    ok(crate::util::runtime().block_on(b.run(&mut sink)))?;
    let spans = step_spans(&sink.0, "RUN sleep 2");
    ensure_eq!(spans.len(), 2, "{spans:?}");
    let (a, b) = (spans[0], spans[1]);
    ensure!(
        a.0 < b.1 && b.0 < a.1,
        "the two RUN steps did not overlap: {:?} and {:?}",
        (a.1 - a.0),
        (b.1 - b.0)
    );
    Ok(())
}

/// The same step for two target platforms (a `$BUILDPLATFORM` stage) runs once.
pub(crate) fn identical_steps_run_once_across_platforms() -> R {
    let img = ok(Case::new().build_with(
        "FROM --platform=$BUILDPLATFORM {BUSYBOX} AS build\nRUN echo built-once && echo x > /x\nFROM scratch\nCOPY --from=build /x /x\n",
        |b| b.platforms(["linux/amd64", "linux/arm64"]),
    ))?;
    let runs = img.logs().matches("built-once").count();
    ensure_eq!(runs, 1, "the shared RUN ran {runs} times");
    Ok(())
}

/// COPY's cache key holds content and mode, never the mtime.
pub(crate) fn copy_cache_key_ignores_mtime_but_not_mode() -> R {
    let c = Case::new();
    c.file("f", "content").chmod("f", 0o644);
    let text = "FROM {BUSYBOX}\nCOPY f /f\nRUN stat -c %a /f > /mode\n";
    ok(c.build(text))?;
    let f = c.ctx().join("f");
    let old = filetime_secs(&f)?;
    sh(Command::new("touch").arg("-d").arg("2001-01-01").arg(&f))?;
    ensure!(filetime_secs(&f)? != old, "touch did not change the mtime");
    let img = ok(c.build(text))?;
    ensure_eq!(img.report.steps_run, 0, "an mtime change re-ran the COPY");
    c.chmod("f", 0o600);
    let img = ok(c.build(text))?;
    ensure_eq!(
        img.report.steps_run,
        2,
        "a mode change must re-run COPY and the RUN"
    );
    ensure_eq!(img.read("/mode")?, "600\n");
    c.file("f", "changed");
    let img = ok(c.build(text))?;
    ensure_eq!(img.report.steps_run, 2);
    ensure_eq!(img.read("/f")?, "changed");
    Ok(())
}

fn filetime_secs(p: &Path) -> Result<i64, Failed> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(p)?.mtime())
}

/// `type=local` writes the final tree.
pub(crate) fn local_output_writes_the_tree() -> R {
    let c = Case::new();
    c.dockerfile("FROM {BUSYBOX}\nRUN echo local > /l && rm /bin/vi\n");
    let dest = c.path().join("local");
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(format!("type=local,dest={}", dest.display()).parse()?);
    ok(run_build(b))?;
    ensure_eq!(fs::read_to_string(dest.join("l"))?, "local\n");
    ensure!(
        dest.join("bin/sh").symlink_metadata().is_ok(),
        "/bin/sh missing"
    );
    ensure!(
        dest.join("bin/vi").symlink_metadata().is_err(),
        "a deleted file came back"
    );
    ensure!(
        !dest.join("bin/.wh.vi").exists(),
        "a whiteout file was written out"
    );
    Ok(())
}

/// The blobs in a case's content store.
fn stored_blobs(c: &Case) -> Result<BTreeSet<String>, Failed> {
    let dir = c.cache().join("blobs/sha256");
    let mut out = BTreeSet::new();
    for e in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        out.insert(format!("sha256:{}", e.file_name().to_string_lossy()));
    }
    Ok(out)
}

/// Layers are read back only for an output, and only the exported image's: a build
/// without output stores no layer blob (and hashes nothing unless the image ID is asked
/// for); the same build with an output then packs the cached layers from their snapshots
/// into exactly the image a direct build makes, and the stage it does not export is
/// never compressed.
pub(crate) fn layers_are_compressed_only_for_an_output() -> R {
    let text = "FROM {BUSYBOX} AS build\nRUN seq 1 30000 > /big && echo small > /small\n\
                RUN echo more > /more\n\
                FROM {BUSYBOX}\nCOPY --from=build /small /small\nRUN seq 1 1000 > /f\n";
    let epoch = |b: Build| b.build_arg("SOURCE_DATE_EPOCH", "1445412480");
    let direct = ok(Case::new().build_with(text, epoch))?;

    let c = Case::new();
    c.dockerfile(text);
    let b = epoch(Build::new(c.ctx())?.cache_dir(c.cache()))?;
    let (cold, _) = ok(run_build(b))?;
    ensure!(cold.digest.is_none() && cold.image.is_none(), "{cold:?}");
    ensure!(cold.config_digests.is_empty(), "{cold:?}");
    ensure_eq!(cold.steps_run, 4);
    let after_cold = stored_blobs(&c)?;
    // The image ID, when asked for, hashes the layers but compresses nothing.
    let b = epoch(Build::new(c.ctx())?.cache_dir(c.cache()))?.image_id(true);
    let (id_only, _) = ok(run_build(b))?;
    ensure_eq!(id_only.steps_run, 0);
    ensure_eq!(id_only.config_digests, direct.report.config_digests);
    ensure_eq!(stored_blobs(&c)?, after_cold);

    let warm = ok(c.build_with(text, epoch))?;
    ensure_eq!(warm.report.steps_run, 0);
    ensure_eq!(warm.digest()?, direct.digest()?);
    let layers: Vec<String> = warm
        .layers()?
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect();
    ensure_eq!(layers.len(), 3, "busybox, COPY, RUN");
    for l in &layers[1..] {
        ensure!(
            !after_cold.contains(l),
            "{l} was compressed without an output"
        );
    }
    let new: BTreeSet<String> = stored_blobs(&c)?.difference(&after_cold).cloned().collect();
    let expected: BTreeSet<String> = layers[1..].iter().cloned().collect();
    ensure_eq!(
        new,
        expected,
        "only the exported image's layers are compressed"
    );
    // Each compression is shown, ending at the layer's full size.
    let compressed = warm
        .events
        .iter()
        .filter(|e| {
            matches!(e, ProgressEvent::StepProgress {
                activity: builder_core::Activity::Compress,
                current,
                total: Some(total),
                ..
            } if current == total && *total > 0)
        })
        .count();
    ensure_eq!(compressed, 2, "compression progress: {:?}", warm.events);
    // And the layout is valid for a real client.
    ensure_eq!(warm.read("/small")?, "small\n");
    Ok(())
}

/// Four stages on one (two-layer) base with an empty cache: each blob is pulled once,
/// the other stages wait for it without holding up the runtime (a blocking wait there
/// once stalled a build for two minutes), and the build finishes promptly.
pub(crate) fn stages_sharing_a_base_pull_it_once() -> R {
    let c = Case::new();
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!("FROM {{NODE}} AS s{i}\nRUN echo {i} > /s{i}\n"));
    }
    text.push_str("FROM {BUSYBOX}\n");
    for i in 0..4 {
        text.push_str(&format!("COPY --from=s{i} /s{i} /s{i}\n"));
    }
    let t = Instant::now();
    let img = ok(c.build(&text))?;
    let secs = t.elapsed().as_secs();
    ensure!(secs < 60, "the build took {secs} s");
    for i in 0..4 {
        ensure_eq!(img.read(&format!("/s{i}"))?, format!("{i}\n"));
    }
    // A pull ends with a progress event whose current is its total: one per blob, shown
    // under a FROM step (as BuildKit), which ends once its pulls are done.
    let names: std::collections::HashMap<_, _> = img
        .events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::StepStarted { id, name, .. } => Some((*id, name.clone())),
            _ => None,
        })
        .collect();
    let mut finished: Vec<String> = Vec::new();
    for (i, e) in img.events.iter().enumerate() {
        if let ProgressEvent::StepProgress {
            id,
            activity: builder_core::Activity::Pull,
            label,
            current,
            total: Some(total),
        } = e
        {
            if current != total {
                continue;
            }
            let name = names.get(id).cloned().unwrap_or_default();
            ensure!(name.contains("FROM"), "{label} pulled under {name:?}");
            let done_after = img.events[i..]
                .iter()
                .any(|e| matches!(e, ProgressEvent::StepDone { id: d, .. } if d == id));
            ensure!(done_after, "{name:?} was done before its pull");
            finished.push(label.clone());
        }
    }
    let pulls = finished.len();
    finished.sort();
    finished.dedup();
    ensure!(
        pulls >= 2,
        "the node base's layers were not pulled: {finished:?}"
    );
    ensure_eq!(
        pulls,
        finished.len(),
        "a blob was pulled twice: {finished:?}"
    );
    Ok(())
}

/// `type=local` alone writes the files from the snapshots: deletions applied, owners and
/// modes kept, and no layer compressed.
pub(crate) fn local_output_compresses_nothing() -> R {
    let c = Case::new();
    c.dockerfile(
        "FROM {BUSYBOX}\nRUN mkdir -p /d && echo keep > /d/keep && echo gone > /d/gone \
         && chown 1001:1001 /d/keep && chmod 640 /d/keep\nRUN rm /d/gone /bin/ls\n",
    );
    let before = fs::read_dir(c.cache().join("blobs/sha256")).map_or(0, Iterator::count);
    let dest = c.path().join("files");
    let b = Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(format!("type=local,dest={}", dest.display()).parse()?);
    let (report, _) = ok(run_build(b))?;
    ensure!(report.digest.is_none(), "{report:?}");
    ensure_eq!(fs::read_to_string(dest.join("d/keep"))?, "keep\n");
    ensure!(!dest.join("d/gone").exists(), "a deleted file was exported");
    ensure!(
        !dest.join("bin/ls").exists(),
        "a deleted base file was exported"
    );
    ensure!(
        dest.join("bin/busybox").exists(),
        "the base's files are missing"
    );
    use std::os::unix::fs::MetadataExt as _;
    let md = fs::metadata(dest.join("d/keep"))?;
    ensure_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1001, 1001, 0o640)
    );
    // Only the base image's blob (and config) were stored: no layer was compressed.
    let blobs: Vec<_> = fs::read_dir(c.cache().join("blobs/sha256"))?
        .filter_map(Result::ok)
        .collect();
    ensure!(
        before == 0 && blobs.len() <= 2,
        "{} blobs stored for a files-only build",
        blobs.len()
    );
    Ok(())
}
