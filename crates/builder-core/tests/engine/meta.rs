//! Section 9: Metadata instructions (EXP, VOL, LBL, SIG, HC) and 10. ONBUILD (OB-*).

use builder_core::ExportSpec;
use serde_json::json;

use crate::util::{Case, R, busybox_history_len, expect_err, keys, ok, strings, unique};

pub(crate) fn exp_01_expose_defaults_and_expansion() -> R {
    let img = ok(Case::new()
        .build("FROM scratch\nARG PORTS=\"3000 4000/udp\"\nEXPOSE $PORTS\nEXPOSE 5000\n"))?;
    let ports = &img.cfg()?["ExposedPorts"];
    ensure_eq!(keys(ports), ["3000/tcp", "4000/udp", "5000/tcp"]);
    for (_, v) in ports.as_object().into_iter().flatten() {
        ensure_eq!(*v, json!({}));
    }
    Ok(())
}

pub(crate) fn exp_02_expose_ranges() -> R {
    let img = ok(Case::new().build("FROM scratch\nEXPOSE 8000-8002/udp\n"))?;
    ensure_eq!(
        keys(&img.cfg()?["ExposedPorts"]),
        ["8000/udp", "8001/udp", "8002/udp"]
    );
    Ok(())
}

pub(crate) fn vol_01_volume_forms() -> R {
    let img = ok(Case::new().build("FROM scratch\nVOLUME [\"/a\"]\nVOLUME /b /c\n"))?;
    ensure_eq!(keys(&img.cfg()?["Volumes"]), ["/a", "/b", "/c"]);
    expect_err(
        Case::new().build("FROM scratch\nVOLUME [\"\"]\n"),
        "VOLUME specified can not be an empty string",
    )?;
    expect_err(
        Case::new().build("FROM scratch\nVOLUME []\n"),
        "VOLUME requires at least one argument",
    )?;
    Ok(())
}

/// BuildKit's VOLUME only records the path (`dispatchVolume` creates nothing), so the
/// checklist's `RUN echo hi > /data/f` fails on a base without `/data`, in BuildKit too:
/// the RUN creates the directory first.
pub(crate) fn vol_02_changes_after_volume_are_kept() -> R {
    let img = ok(Case::new()
        .build("FROM {BUSYBOX}\nVOLUME /data\nRUN mkdir -p /data && echo hi > /data/f\n"))?;
    ensure_eq!(img.read("/data/f")?, "hi\n");
    let img = ok(Case::new().build("FROM {BUSYBOX}\nVOLUME /novol\n"))?;
    ensure!(!img.exists("/novol")?, "VOLUME created its directory");
    ensure_eq!(keys(&img.cfg()?["Volumes"]), ["/novol"]);
    Ok(())
}

pub(crate) fn lbl_01_labels() -> R {
    let img = ok(Case::new().build_with(
        "FROM scratch\nLABEL \"com.example.vendor\"=\"ACME Incorporated\"\nLABEL multi.label1=\"value1\" \\\n      other=\"value3\"\nLABEL version=1.0\nLABEL version=2.0\n",
        |b| b.label("bar", "baz"),
    ))?;
    ensure_eq!(
        img.cfg()?["Labels"],
        json!({"com.example.vendor":"ACME Incorporated","multi.label1":"value1","other":"value3","version":"2.0","bar":"baz"})
    );
    // Inherited through FROM <stage>, overridden by key.
    let img = ok(Case::new().build("FROM scratch AS a\nLABEL x=1 y=1\nFROM a\nLABEL y=2\n"))?;
    ensure_eq!(img.cfg()?["Labels"], json!({"x":"1","y":"2"}));
    Ok(())
}

pub(crate) fn lbl_02_labels_only_through_from() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS other\nLABEL from.other=1\nFROM scratch\nCOPY --from=other /bin/busybox /busybox\n",
    ))?;
    ensure!(
        img.cfg()?["Labels"].get("from.other").is_none(),
        "{}",
        img.cfg()?
    );
    Ok(())
}

pub(crate) fn lbl_03_maintainer_sets_author() -> R {
    let img = ok(Case::new().build("FROM scratch\nMAINTAINER Jane <jane@example.invalid>\n"))?;
    ensure_eq!(img.config()?["author"], "Jane <jane@example.invalid>");
    ensure!(
        keys(&img.cfg()?["Labels"]).is_empty(),
        "{}",
        img.cfg()?["Labels"]
    );
    Ok(())
}

pub(crate) fn sig_01_stopsignal() -> R {
    let img = ok(Case::new().build("FROM scratch\nSTOPSIGNAL SIGKILL\n"))?;
    ensure_eq!(img.cfg()?["StopSignal"], "SIGKILL");
    let img = ok(Case::new().build("FROM scratch\nSTOPSIGNAL 9\n"))?;
    ensure_eq!(img.cfg()?["StopSignal"], "9");
    expect_err(
        Case::new().build("FROM scratch\nSTOPSIGNAL SIGFOO\n"),
        "invalid signal: SIGFOO",
    )?;
    Ok(())
}

pub(crate) fn hc_01_healthcheck_forms() -> R {
    let img = ok(Case::new().build(
        "FROM scratch\nHEALTHCHECK --interval=5m --timeout=3s CMD curl -f http://localhost/ || exit 1\n",
    ))?;
    ensure_eq!(
        img.cfg()?["Healthcheck"],
        json!({"Test":["CMD-SHELL","curl -f http://localhost/ || exit 1"],"Interval":300000000000u64,"Timeout":3000000000u64})
    );
    let img = ok(Case::new().build("FROM scratch\nHEALTHCHECK CMD [\"/bin/check\",\"-q\"]\n"))?;
    ensure_eq!(
        img.cfg()?["Healthcheck"],
        json!({"Test":["CMD","/bin/check","-q"]})
    );
    Ok(())
}

pub(crate) fn hc_02_healthcheck_none_and_limits() -> R {
    let img = ok(Case::new().build("FROM scratch\nHEALTHCHECK NONE\n"))?;
    ensure_eq!(strings(&img.cfg()?["Healthcheck"]["Test"]), ["NONE"]);
    expect_err(
        Case::new().build("FROM scratch\nHEALTHCHECK NONE x\n"),
        "HEALTHCHECK NONE takes no arguments",
    )?;
    expect_err(
        Case::new().build("FROM scratch\nHEALTHCHECK --interval=50ns CMD true\n"),
        "cannot be less than 1ms",
    )?;
    ok(Case::new().build("FROM scratch\nHEALTHCHECK --interval=0s CMD true\n"))?;
    expect_err(
        Case::new().build("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n"),
        "--retries cannot be negative (-1)",
    )?;
    Ok(())
}

const OB_BASE: &str = "FROM {BUSYBOX}\nONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo\n";

pub(crate) fn ob_01_onbuild_records_a_trigger() -> R {
    let img = ok(Case::new().build(OB_BASE))?;
    ensure_eq!(
        strings(&img.cfg()?["OnBuild"]),
        ["RUN mkdir -p /out && echo -n 11 >> /out/foo"]
    );
    ensure!(!img.exists("/out")?, "the trigger ran in the image itself");
    ensure_eq!(
        img.history()?.len(),
        busybox_history_len()?,
        "ONBUILD added history"
    );
    Ok(())
}

/// Builds `text` and pushes it as `<repo>:latest` on the local registry.
fn push(c: &Case, text: &str, repo: &str) -> R {
    c.dockerfile(text);
    let b = builder_core::Build::new(c.ctx())?
        .cache_dir(c.cache())
        .output(ExportSpec::registry())
        .tag(&format!("{repo}:latest"))?;
    ok(crate::util::run_build(b))?;
    Ok(())
}

pub(crate) fn ob_02_triggers_run_in_the_child_then_clear() -> R {
    let c = Case::new();
    let base = format!(
        "{}/enginetests/{}",
        crate::util::REGISTRY,
        unique("ob-base")
    );
    let child = format!(
        "{}/enginetests/{}",
        crate::util::REGISTRY,
        unique("ob-child")
    );
    push(&c, OB_BASE, &base)?;
    push(&c, &format!("FROM {base}\n"), &child)?;
    let img = ok(c.build(&format!("FROM {base}\n")))?;
    ensure_eq!(img.read("/out/foo")?, "11");
    ensure!(
        strings(&img.cfg()?["OnBuild"]).is_empty(),
        "OnBuild kept: {}",
        img.cfg()?["OnBuild"]
    );
    let grand = ok(c.build(&format!("FROM {child}\n")))?;
    ensure_eq!(grand.read("/out/foo")?, "11");
    // Against a fresh cache too (no cached trigger result).
    let grand = ok(Case::new().build(&format!("FROM {child}\n")))?;
    ensure_eq!(grand.read("/out/foo")?, "11");
    Ok(())
}

pub(crate) fn ob_03_triggers_fire_once_per_use() -> R {
    let c = Case::new();
    let base = format!(
        "{}/enginetests/{}",
        crate::util::REGISTRY,
        unique("ob-base")
    );
    push(&c, OB_BASE, &base)?;
    ok(c.build(&format!(
        "FROM {base} AS s1\nRUN rm /out/foo\nFROM s1 AS s2\nRUN [ ! -f /out/foo ]\n"
    )))?;
    Ok(())
}

/// The checklist's `src` stage is alpine; busybox serves the same purpose here.
pub(crate) fn ob_04_onbuild_fires_for_a_stage() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS src\nRUN mkdir -p /in && echo -n 12 > /in/file\nFROM {BUSYBOX} AS base\nONBUILD COPY --from=src /in/file /out/foo\nFROM base AS mid\nRUN cp /out/foo /out/bar\nFROM scratch\nCOPY --from=mid /out/bar /\n",
    ))?;
    ensure_eq!(img.read("/bar")?, "12");
    // A base image's trigger cannot read a stage of this build: a clear error, not the
    // context. Naming an image works.
    let c = Case::new();
    let base = format!(
        "{}/enginetests/{}",
        crate::util::REGISTRY,
        unique("ob-from")
    );
    push(
        &c,
        "FROM {BUSYBOX}\nONBUILD COPY --from=src /etc/hostname /copied\n",
        &base,
    )?;
    c.file("etc/hostname", "from the context\n");
    expect_err(
        c.build(&format!("FROM {{BUSYBOX}} AS src\nFROM {base}\n")),
        "COPY --from=src in an ONBUILD trigger of a base image names a stage",
    )?;
    let img_base = format!("{}/enginetests/{}", crate::util::REGISTRY, unique("ob-img"));
    let busybox = crate::util::BUSYBOX;
    push(
        &c,
        &format!("FROM {{BUSYBOX}}\nONBUILD COPY --from={busybox} /bin/busybox /copied\n"),
        &img_base,
    )?;
    let img = ok(c.build(&format!("FROM {img_base}\n")))?;
    ensure!(
        img.exists("/copied")?,
        "the trigger did not copy from the image"
    );
    Ok(())
}

pub(crate) fn ob_05_forbidden_triggers() -> R {
    expect_err(
        Case::new().build("FROM scratch\nONBUILD ONBUILD RUN true\n"),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    )?;
    expect_err(
        Case::new().build("FROM scratch\nONBUILD FROM x\n"),
        "isn't allowed as an ONBUILD trigger",
    )?;
    expect_err(
        Case::new().build("FROM scratch\nONBUILD MAINTAINER x\n"),
        "isn't allowed as an ONBUILD trigger",
    )?;
    Ok(())
}
