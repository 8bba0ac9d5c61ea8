//! The build timeline (issue 21): a real build's `--progress=rawjson` phase events, and
//! `rbuild debug timeline` on them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test_support::{LocalRegistry, output};

fn rbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
}

/// The phase events of a rawjson stream.
fn phases(rawjson: &str) -> Vec<Value> {
    rawjson
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .filter(|v| v["event"] == "phase")
        .collect()
}

fn step_id(rawjson: &str, name_part: &str) -> u64 {
    rawjson
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["event"] == "step_started" && v["name"].as_str().unwrap_or("").contains(name_part)
        })
        .and_then(|v| v["id"].as_u64())
        .unwrap_or_else(|| panic!("no step named like {name_part:?} in\n{rawjson}"))
}

fn secs(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} of {v} is not a number"))
}

#[test]
fn a_cold_pushed_build_times_every_phase_and_the_report_accounts_for_the_wall_time() {
    let reg = LocalRegistry::ensure();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(ctx.join("f.txt"), "file\n").expect("write");
    // A CPU-bound step in one stage, a sleeping one in the other, so the two run at once.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {bb} AS spin\n\
             RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo $i > /spun\n\
             FROM {bb}\n\
             RUN sleep 1.5 && echo slept > /slept\n\
             COPY f.txt /f.txt\n\
             COPY --from=spin /spun /spun\n",
            bb = reg.busybox()
        ),
    )
    .expect("write");
    let tag = format!("{}/{}:t", reg.host(), reg.unique_repo("perf-timeline"));
    let out = output(
        rbuild()
            .args([
                "build",
                "--progress=rawjson",
                "--network=host",
                "--push",
                "--provenance=false",
            ])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["-t", &tag])
            .arg(&ctx),
    );
    let rawjson = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{rawjson}");
    let events = phases(&rawjson);
    let names: Vec<&str> = events.iter().filter_map(|v| v["phase"].as_str()).collect();
    for want in [
        "resolve", "pull", "unpack", "mount", "run", "context", "copy", "snapshot", "compress",
        "upload", "export",
    ] {
        assert!(names.contains(&want), "no {want} phase in {names:?}");
    }
    let wall = rawjson
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "build_done")
        .map(|v| secs(&v, "elapsed"))
        .expect("a build_done event");
    for v in &events {
        let (start, elapsed) = (secs(v, "start"), secs(v, "elapsed"));
        assert!(
            start >= 0.0 && elapsed >= 0.0 && start + elapsed <= wall + 0.01,
            "{v}"
        );
    }
    // The RUN steps' CPU time: the loop burns CPU, the sleep hardly any.
    let run_of = |id: u64| {
        events
            .iter()
            .find(|v| v["phase"] == "run" && v["id"].as_u64() == Some(id))
            .unwrap_or_else(|| panic!("no run phase of step {id}"))
            .clone()
    };
    let spin = run_of(step_id(&rawjson, "while"));
    let sleep = run_of(step_id(&rawjson, "sleep 1.5"));
    assert!(
        secs(&spin, "cpu") > 0.05,
        "the busy loop used no CPU: {spin}"
    );
    assert!(secs(&sleep, "elapsed") >= 1.5, "{sleep}");
    assert!(
        secs(&sleep, "cpu") < secs(&sleep, "elapsed") / 2.0,
        "sleeping counted as CPU: {sleep}"
    );
    // Pulls and uploads say how many bytes they moved.
    for v in events
        .iter()
        .filter(|v| v["phase"] == "pull" || v["phase"] == "upload")
    {
        assert!(v["bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    }

    // The report: the shares and the untimed time add up to the wall time.
    let file = dir.path().join("build.json");
    std::fs::write(&file, &rawjson).expect("write");
    let report = output(rbuild().args(["debug", "timeline"]).arg(&file));
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.status.success(),
        "debug timeline failed: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    let timeline = builder_core::Timeline::from_json_lines(&rawjson).expect("timeline");
    let r = timeline.report();
    let total: f64 = r.phases.iter().map(|p| p.share).sum::<f64>() + r.untimed;
    assert!(
        (total - r.wall).abs() < 0.01,
        "shares {total} != wall {}",
        r.wall
    );
    assert!((r.wall - wall).abs() < 1e-6);
    assert!(text.starts_with(&format!("wall time {wall:.2}s")), "{text}");
    for p in &r.phases {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(p.phase.name())),
            "no line for {} in\n{text}",
            p.phase
        );
    }
    // The two stages' RUN steps overlapped: some time had two phases at once.
    assert!(r.concurrency.len() > 2 && r.concurrency[2] > 0.0, "{text}");
    // The critical path ends with the push, and has the sleep on it (the longer RUN).
    assert!(text.contains("critical path"), "{text}");
    let path: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("critical path"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(path.iter().any(|l| l.contains("export")), "{path:#?}");
    assert!(
        path.iter()
            .any(|l| l.contains("run") && l.contains("sleep 1.5")),
        "{path:#?}"
    );
    assert!(text.contains("cpu"), "{text}");
}

#[test]
fn debug_timeline_refuses_what_is_not_a_builds_rawjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.log");
    std::fs::write(
        &plain,
        "#1 [internal] load build definition\n#1 DONE 0.0s\n",
    )
    .expect("write");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"event\":\"phase\",\"id\":1,\"phase\":\"nap\"}\n").expect("write");
    for (file, want) in [
        (plain.as_path(), "no phase events"),
        (bad.as_path(), "line 1: not a progress event"),
        (Path::new("/nonexistent/timeline.json"), "No such file"),
    ] {
        let out = output(rbuild().args(["debug", "timeline"]).arg(file));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file:?} was accepted");
        assert!(err.contains(want), "{file:?}: {err}");
    }
}

/// Builds `dockerfile` cold to an OCI tar with `RBUILD_PACK_AHEAD=ahead`; returns the
/// rawjson output and the tar's path.
fn build_oci(dir: &Path, dockerfile: &str, ahead: &str) -> (String, std::path::PathBuf) {
    let ctx = dir.join(format!("ctx-{ahead}"));
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write");
    let dest = dir.join(format!("out-{ahead}.tar"));
    let out = output(
        rbuild()
            .env("RBUILD_PACK_AHEAD", ahead)
            .args(["build", "--progress=rawjson", "--network=host"])
            .arg("--cache-dir")
            .arg(dir.join(format!("cache-{ahead}")))
            .arg("-o")
            .arg(format!("type=oci,dest={}", dest.display()))
            .arg(&ctx),
    );
    let rawjson = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{rawjson}");
    (rawjson, dest)
}

#[test]
fn layers_an_output_needs_are_compressed_while_later_steps_run() {
    let reg = LocalRegistry::ensure();
    let dir = tempfile::tempdir().expect("tempdir");
    // 24 MB that do not compress, then a step that takes a while: packed ahead, the first
    // layer's compression overlaps the second step.
    let dockerfile = format!(
        "FROM {}\nRUN head -c 24000000 /dev/urandom > /noise\nRUN sleep 3 && echo done > /done\n",
        reg.busybox()
    );
    let run_end = |rawjson: &str, what: &str| {
        let id = step_id(rawjson, what);
        let run = phases(rawjson)
            .into_iter()
            .find(|v| v["phase"] == "run" && v["id"].as_u64() == Some(id))
            .expect("a run phase");
        (
            secs(&run, "start"),
            secs(&run, "start") + secs(&run, "elapsed"),
        )
    };
    // The compression of the noise layer (the only big one): its step and span.
    let compress_of = |rawjson: &str| {
        let c: Vec<Value> = phases(rawjson)
            .into_iter()
            .filter(|v| v["phase"] == "compress" && v["bytes"].as_u64().unwrap_or(0) >= 24_000_000)
            .collect();
        assert_eq!(c.len(), 1, "one compression of the noise layer: {c:?}");
        let v = &c[0];
        (
            v["id"].as_u64(),
            secs(v, "start"),
            secs(v, "start") + secs(v, "elapsed"),
        )
    };

    let (ahead, tar_ahead) = build_oci(dir.path(), &dockerfile, "1");
    let (sleep_start, sleep_end) = run_end(&ahead, "sleep 3");
    let (id, c_start, _) = compress_of(&ahead);
    assert_eq!(
        id,
        Some(step_id(&ahead, "urandom")),
        "packed as the step's work"
    );
    assert!(
        c_start < sleep_end && c_start + 0.5 > sleep_start - 0.5,
        "packed ahead, the noise layer's compression ({c_start:.2}s) starts while the sleep \
         ({sleep_start:.2}..{sleep_end:.2}s) runs"
    );

    let (after, tar_after) = build_oci(dir.path(), &dockerfile, "0");
    let (_, sleep_end) = run_end(&after, "sleep 3");
    let (_, c_start, _) = compress_of(&after);
    assert!(
        c_start >= sleep_end,
        "not packed ahead, compression ({c_start:.2}s) waits for the last step ({sleep_end:.2}s)"
    );
    // Both outputs hold every layer the manifest lists.
    for tar in [tar_ahead, tar_after] {
        let x = dir
            .path()
            .join(format!("x-{}", tar.file_stem().unwrap().to_string_lossy()));
        std::fs::create_dir(&x).expect("mkdir");
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status();
        assert!(st.is_ok_and(|s| s.success()), "tar -xf {}", tar.display());
        let index: Value =
            serde_json::from_slice(&std::fs::read(x.join("index.json")).expect("index.json"))
                .expect("json");
        let blob = |d: &str| x.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        let mdigest = index["manifests"][0]["digest"]
            .as_str()
            .expect("a manifest");
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(blob(mdigest)).expect("manifest")).expect("json");
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 3, "{manifest}");
        for l in layers {
            let d = l["digest"].as_str().expect("digest");
            let size = std::fs::metadata(blob(d)).map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                Some(size),
                l["size"].as_u64(),
                "blob {d} in {}",
                tar.display()
            );
        }
    }
}
