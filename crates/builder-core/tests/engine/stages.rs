//! Section 11: Stages and targets (MS-*).

use std::process::Command;

use builder_core::ExportSpec;
use serde_json::json;

use crate::util::{Case, R, REGISTRY, expect_err, ok, run_build, sh, strings, unique};

/// The checklist's `ok` stage copies a file; a LABEL serves the same purpose here (the
/// point is that `broken` is never run), so the case does not wait for COPY.
pub(crate) fn ms_01_only_needed_stages_run() -> R {
    let text = "FROM {BUSYBOX} AS broken\nRUN exit 1\nFROM scratch AS ok\nLABEL built=yes\n";
    let c = Case::new();
    let img = ok(c.build_with(text, |b| Ok(b.target("ok"))))?;
    ensure_eq!(img.cfg()?["Labels"]["built"], "yes");
    let img = ok(c.build(text))?;
    ensure_eq!(img.cfg()?["Labels"]["built"], "yes");
    ensure_eq!(img.report.steps_run, 0, "a step of `broken` ran");
    Ok(())
}

pub(crate) fn ms_01_with_copy() -> R {
    let c = Case::new();
    c.file("a", "a");
    let img = ok(c.build("FROM {BUSYBOX} AS broken\nRUN exit 1\nFROM scratch AS ok\nCOPY a /a\n"))?;
    ensure_eq!(img.read("/a")?, "a");
    Ok(())
}

pub(crate) fn ms_02_unknown_target_suggests() -> R {
    let e = expect_err(
        Case::new().build_with("FROM scratch AS build\nLABEL a=b\n", |b| {
            Ok(b.target("bulid"))
        }),
        "target stage \"bulid\" could not be found",
    )?;
    ensure!(e.to_string().contains("did you mean build"), "{e}");
    Ok(())
}

pub(crate) fn ms_03_from_stage_continues() -> R {
    let c = Case::new();
    let text = "FROM {BUSYBOX} AS base\nENV A=1\nWORKDIR /w\nUSER nobody\nRUN true\nFROM base\n";
    let img = ok(c.build(text))?;
    ensure!(img.env()?.contains(&"A=1".to_owned()), "{:?}", img.env()?);
    ensure_eq!(img.cfg()?["WorkingDir"], "/w");
    ensure_eq!(img.cfg()?["User"], "nobody");
    let base = ok(c.build_with(text, |b| Ok(b.target("base"))))?;
    ensure_eq!(img.diff_ids()?, base.diff_ids()?);
    ensure_eq!(img.history()?, base.history()?);
    ensure_eq!(img.digest()?, base.digest()?);
    Ok(())
}

pub(crate) fn ms_04_empty_base_name() -> R {
    expect_err(
        Case::new().build("ARG IMG\nFROM $IMG\n"),
        "base name ($IMG) should not be blank",
    )?;
    Ok(())
}

/// BuildKit's choice: no layer at all (`layers: []`), although the OCI schema asks for one.
pub(crate) fn ms_05_scratch_metadata_only() -> R {
    let img = ok(Case::new().build("FROM scratch\nENV foo=bar\n"))?;
    let cfg = img.config()?;
    ensure!(
        cfg["os"].as_str().is_some_and(|s| !s.is_empty())
            && cfg["architecture"].as_str().is_some_and(|s| !s.is_empty()),
        "{cfg}"
    );
    ensure_eq!(cfg["rootfs"], json!({"type":"layers","diff_ids":[]}));
    let h = img.history()?;
    ensure_eq!(h.len(), 1, "{h:?}");
    ensure_eq!(h[0]["created_by"], "ENV foo=bar");
    ensure_eq!(h[0]["empty_layer"], true);
    ensure_eq!(img.manifest()?["layers"], json!([]));
    // BuildKit's empty image has WorkingDir "/" (testDockerfileScratchConfig checks non-empty).
    ensure_eq!(cfg["config"]["WorkingDir"], "/");
    Ok(())
}

/// The checklist adds a file with COPY; a WORKDIR adds the one layer here.
pub(crate) fn ms_06_scratch_image_pulled_back() -> R {
    let c = Case::new();
    let repo = format!("{REGISTRY}/enginetests/{}", unique("scratch"));
    c.dockerfile("FROM scratch\nLABEL foo=bar\n");
    let b = builder_core::Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(ExportSpec::registry())
        .tag(&format!("{repo}:latest"))?;
    ok(run_build(b))?;
    let img = ok(c.build(&format!("FROM {repo}\nLABEL bar=baz\nWORKDIR /w\n")))?;
    ensure_eq!(img.diff_ids()?.len(), 1);
    ensure_eq!(img.cfg()?["Labels"], json!({"foo":"bar","bar":"baz"}));
    Ok(())
}

fn check_index(img: &crate::util::Image) -> R {
    let index: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", img.layout.display())))?)
    .map_err(|e| e.to_string())?;
    ensure_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let mut archs = Vec::new();
    for m in index["manifests"].as_array().ok_or("no manifests")? {
        let arch = m["platform"]["architecture"].as_str().unwrap_or_default();
        ensure_eq!(m["platform"]["os"], "linux");
        archs.push(arch.to_owned());
        let cfg: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo")
            .args(["--override-arch", arch, "inspect", "--config"])
            .arg(format!("oci:{}:latest", img.layout.display())))?)
        .map_err(|e| e.to_string())?;
        ensure_eq!(cfg["architecture"], arch);
        ensure_eq!(strings(&cfg["rootfs"]["diff_ids"]).len(), 1, "{arch}");
        ensure_eq!(
            strings(&cfg["config"]["Entrypoint"]),
            ["/bin/sh", "-c", "foo bar"]
        );
    }
    archs.sort();
    ensure_eq!(archs, ["amd64", "arm64"]);
    Ok(())
}

/// The checklist copies the Dockerfile in; a WORKDIR gives each platform its one layer here.
pub(crate) fn ms_07_multi_platform_index() -> R {
    let img = ok(
        Case::new().build_with("FROM scratch\nENTRYPOINT foo bar\nWORKDIR /w\n", |b| {
            b.platforms(["linux/amd64", "linux/arm64"])
        }),
    )?;
    check_index(&img)
}

pub(crate) fn ms_07_multi_platform_index_copy() -> R {
    let img = ok(Case::new().build_with(
        "FROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\n",
        |b| b.platforms(["linux/amd64", "linux/arm64"]),
    ))?;
    check_index(&img)
}
