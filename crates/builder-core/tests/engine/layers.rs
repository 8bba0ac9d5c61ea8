//! Section 14: Layers, history and image config (LAY-*, HIST-*, CFG-*).

use builder_core::HISTORY_COMMENT;
use serde_json::{Value, json};

use crate::util::{BUSYBOX, Case, R, busybox_config, busybox_history_len, ok, strings};

pub(crate) fn lay_01_delete_makes_a_whiteout() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nRUN rm /bin/vi\n"))?;
    let names = img.layer_names(-1)?;
    ensure!(names.contains(&"bin/.wh.vi".to_owned()), "{names:?}");
    // The first RUN on busybox (which has no /dev, /proc, /sys) also carries the runtime's
    // mount points, as BuildKit's layer does.
    let allowed = ["bin", "bin/.wh.vi", "dev", "proc", "sys"];
    ensure!(
        names.iter().all(|n| allowed.contains(&n.as_str())),
        "unexpected entries: {names:?}"
    );
    for d in ["dev", "proc", "sys"] {
        ensure!(
            names.iter().any(|n| n == d),
            "no {d} mount point: {names:?}"
        );
    }
    let listing = img.layer_listing(-1)?;
    let wh = listing
        .iter()
        .find(|l| l.ends_with("bin/.wh.vi"))
        .ok_or("no whiteout line")?;
    ensure!(
        wh.starts_with('-') && wh.split_whitespace().nth(2) == Some("0"),
        "the whiteout is not an empty regular file: {wh}"
    );
    ensure!(!img.exists("/bin/vi")?, "/bin/vi is still there");
    ensure!(img.exists("/bin/sh")?, "/bin/sh went too");
    Ok(())
}

pub(crate) fn lay_02_replaced_directory_hides_children() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN mkdir -p /d/sub && touch /d/a /d/sub/b\nRUN rm -rf /d && mkdir /d && echo x > /d/only\n",
    ))?;
    ensure_eq!(img.ls("/d")?, ["only"]);
    let names = img.layer_names(-1)?;
    // As BuildKit (containerd's differ): one whiteout per child that went, no opaque marker.
    let opaque = names.contains(&"d/.wh..wh..opq".to_owned());
    let each = names.contains(&"d/.wh.a".to_owned()) && names.contains(&"d/.wh.sub".to_owned());
    ensure!(
        !opaque && each,
        "not one whiteout per child (or an opaque marker): {names:?}"
    );
    Ok(())
}

/// The checklist's case with COPY; `lay_03_layers_without_copy` covers the rest now.
pub(crate) fn lay_03_which_instructions_add_layers() -> R {
    let c = Case::new();
    c.file("foo", "contents0");
    let img = ok(c.build(LAY_03))?;
    let base = busybox_history_len()?;
    let flags = empty_flags(&img.history()?[base..]);
    ensure_eq!(
        flags,
        [true, false, true, false, false, true],
        "{:?}",
        img.created_by(base)?
    );
    check_layer_count(&img, &flags)
}

/// As in BuildKit 0.32 (checked by the diff suite against it), every RUN is a layer, also
/// `RUN ls` that changes nothing (the empty tar); `WORKDIR /` is the only WORKDIR without
/// one. What must hold besides: one diff ID per non-empty history entry.
fn check_layer_count(img: &crate::util::Image, new_flags: &[bool]) -> R {
    let base_diffs = strings(&busybox_config()?["rootfs"]["diff_ids"]).len();
    let new_layers = new_flags.iter().filter(|e| !**e).count();
    ensure_eq!(img.diff_ids()?.len(), base_diffs + new_layers);
    ensure_eq!(img.layers()?.len(), base_diffs + new_layers);
    Ok(())
}

const LAY_03: &str = "FROM {BUSYBOX} AS base\nENV foo=bar\nCOPY foo /foo2\nFROM {BUSYBOX}\nLABEL lbl=val\nCOPY --from=base foo2 foo3\nWORKDIR /\nRUN echo bar > foo4\nRUN [\"ls\"]\nEXPOSE 2375 5000 1234/udp\n";

fn empty_flags(h: &[Value]) -> Vec<bool> {
    h.iter()
        .map(|e| e["empty_layer"].as_bool().unwrap_or(false))
        .collect()
}

/// LAY-03 without COPY (`RUN ls` is a layer: see `check_layer_count`).
pub(crate) fn lay_03_layers_without_copy() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nLABEL lbl=val\nWORKDIR /\nRUN echo bar > foo4\nRUN [\"ls\"]\nEXPOSE 2375 5000 1234/udp\nWORKDIR /other\nENV a=b\nUSER nobody\nONBUILD RUN true\n",
    ))?;
    let base = busybox_history_len()?;
    let h = img.history()?;
    let flags = empty_flags(&h[base..]);
    ensure_eq!(
        flags,
        [true, true, false, false, true, false, true, true],
        "{:?}",
        &h[base..]
    );
    check_layer_count(&img, &flags)?;
    ensure!(img.stat("/other")?.is_dir(), "/other missing");
    Ok(())
}

pub(crate) fn hist_01_created_by_texts() -> R {
    let c = Case::new();
    c.file("foo", "contents0");
    let img = ok(c.build(LAY_03))?;
    let base = busybox_history_len()?;
    ensure_eq!(
        img.created_by(base)?,
        [
            "LABEL lbl=val",
            "COPY foo2 foo3 # buildkit",
            "WORKDIR /",
            "RUN /bin/sh -c echo bar > foo4 # buildkit",
            "RUN ls # buildkit",
            "EXPOSE [1234/udp 2375/tcp 5000/tcp]",
        ]
    );
    for h in &img.history()?[base..] {
        ensure_eq!(h["comment"], HISTORY_COMMENT);
        ensure!(h["created"].is_string(), "no created time: {h}");
    }
    Ok(())
}

/// HIST-01 without the COPY line.
pub(crate) fn hist_01_created_by_texts_without_copy() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS base\nENV foo=bar\nFROM {BUSYBOX}\nLABEL lbl=val\nWORKDIR /\nRUN echo bar > foo4\nRUN [\"ls\"]\nEXPOSE 2375 5000 1234/udp\n",
    ))?;
    let base = busybox_history_len()?;
    ensure_eq!(
        img.created_by(base)?,
        [
            "LABEL lbl=val",
            "WORKDIR /",
            "RUN /bin/sh -c echo bar > foo4 # buildkit",
            "RUN ls # buildkit",
            "EXPOSE [1234/udp 2375/tcp 5000/tcp]",
        ]
    );
    for h in &img.history()?[base..] {
        ensure_eq!(h["comment"], HISTORY_COMMENT);
        ensure!(h["created"].is_string(), "no created time: {h}");
    }
    Ok(())
}

pub(crate) fn hist_02_other_created_by_shapes() -> R {
    let img = ok(Case::new().build(
        "FROM scratch\nENV a=1 b=2\nARG x=1\nUSER nobody\nCMD [\"a\", \"b\"]\nENTRYPOINT [\"e\"]\nVOLUME /v\nSTOPSIGNAL SIGINT\nSHELL [\"/bin/sh\", \"-c\"]\n",
    ))?;
    ensure_eq!(
        img.created_by(0)?,
        [
            "ENV a=1 b=2",
            "ARG x=1",
            "USER nobody",
            "CMD [\"a\" \"b\"]",
            "ENTRYPOINT [\"e\"]",
            "VOLUME [/v]",
            "STOPSIGNAL SIGINT",
            "SHELL [/bin/sh -c]",
        ]
    );
    ensure!(
        empty_flags(&img.history()?).iter().all(|e| *e),
        "{:?}",
        img.history()?
    );
    Ok(())
}

pub(crate) fn hist_03_run_lists_build_args() -> R {
    let img =
        ok(Case::new()
            .build("FROM {BUSYBOX}\nARG foo=bar\nARG bar=123\nARG foo=bar2\nRUN ls /etc/\n"))?;
    ensure_eq!(
        img.created_by(busybox_history_len()?)?,
        [
            "ARG foo=bar",
            "ARG bar=123",
            "ARG foo=bar2",
            "RUN |2 foo=bar2 bar=123 /bin/sh -c ls /etc/ # buildkit",
        ]
    );
    Ok(())
}

fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    }
}

pub(crate) fn cfg_01_base_config_and_history_carry_over() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nRUN true\n"))?;
    let base = busybox_config()?;
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["sh"]);
    let n = busybox_history_len()?;
    let h = img.history()?;
    ensure_eq!(
        h[..n].to_vec(),
        base["history"].as_array().cloned().unwrap_or_default()
    );
    let base_diffs = strings(&base["rootfs"]["diff_ids"]);
    ensure_eq!(img.diff_ids()?[..base_diffs.len()].to_vec(), base_diffs);
    ensure_eq!(img.config()?["os"], "linux");
    ensure_eq!(img.config()?["architecture"], host_arch());
    // Base layers are passed through as they are (the registry's blobs).
    let inspect: Value = serde_json::from_str(&crate::util::sh(
        std::process::Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{BUSYBOX}"),
        ]),
    )?)
    .map_err(|e| e.to_string())?;
    let base_blobs = strings(&inspect["Layers"]);
    let blobs: Vec<String> = img
        .layers()?
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure_eq!(blobs[..base_blobs.len()].to_vec(), base_blobs);
    Ok(())
}

const EPOCH_TIME: &str = "2015-10-21T07:28:00Z";

pub(crate) fn cfg_02_source_date_epoch() -> R {
    let c = Case::new();
    c.file("a", "a");
    let img = ok(c.build_with("FROM scratch\nCOPY a /a\n", |b| {
        b.build_arg("SOURCE_DATE_EPOCH", "1445412480")
    }))?;
    ensure_eq!(img.config()?["created"], EPOCH_TIME);
    for h in img.history()? {
        ensure_eq!(h["created"], EPOCH_TIME);
    }
    Ok(())
}

/// CFG-02 without COPY: a RUN on busybox, a metadata step, and the global ARG default.
pub(crate) fn cfg_02_source_date_epoch_without_copy() -> R {
    let img = ok(
        Case::new().build_with("FROM {BUSYBOX}\nRUN echo x > /x\nENV a=1\n", |b| {
            b.build_arg("SOURCE_DATE_EPOCH", "1445412480")
        }),
    )?;
    ensure_eq!(img.config()?["created"], EPOCH_TIME);
    let n = busybox_history_len()?;
    let h = img.history()?;
    ensure_eq!(
        h[..n].to_vec(),
        busybox_config()?["history"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        "the base's history times changed"
    );
    for e in &h[n..] {
        ensure_eq!(e["created"], EPOCH_TIME);
    }
    let text = "ARG SOURCE_DATE_EPOCH=1445412480\nFROM scratch\nWORKDIR /a\n";
    let img = ok(Case::new().build(text))?;
    ensure_eq!(img.config()?["created"], EPOCH_TIME);
    let img = ok(Case::new().build_with(text, |b| b.build_arg("SOURCE_DATE_EPOCH", "0")))?;
    ensure_eq!(img.config()?["created"], "1970-01-01T00:00:00Z");
    Ok(())
}

/// CFG-02 with the exporter's `rewrite-timestamp`: `true` marks the new layers (not the
/// base's) with BuildKit's `buildkit/rewritten-timestamp` and clamps their mtimes; `false`
/// keeps the files' own mtimes; and the epoch's other spellings (Dockerfile 1.26).
pub(crate) fn cfg_02_source_date_epoch_rewrite_timestamp() -> R {
    const T: i64 = 1445412480;
    let text = "FROM {BUSYBOX}\nRUN touch -d '2030-01-01 00:00:00' /future && touch /now\n";
    let epoch = |b: builder_core::Build| b.build_arg("SOURCE_DATE_EPOCH", &T.to_string());
    let img = ok(Case::new().build_output(text, "rewrite-timestamp=true", epoch))?;
    let layers = img.layers()?;
    ensure_eq!(layers[0].get("annotations"), None, "the base layer is kept");
    ensure_eq!(
        layers[layers.len() - 1]["annotations"],
        json!({"buildkit/rewritten-timestamp": T.to_string()})
    );
    for f in ["future", "now"] {
        let m = img.stat(f)?;
        ensure_eq!(std::os::unix::fs::MetadataExt::mtime(&m), T, "/{f}");
    }
    // Not given: clamped (reproducible by default) but not marked.
    let img = ok(Case::new().build_with(text, epoch))?;
    ensure!(
        img.layers()?.iter().all(|l| l.get("annotations").is_none()),
        "marked without rewrite-timestamp"
    );
    ensure_eq!(
        std::os::unix::fs::MetadataExt::mtime(&img.stat("future")?),
        T
    );
    // `false`: the files' own times, the config still at the epoch.
    let img = ok(Case::new().build_output(text, "rewrite-timestamp=false", epoch))?;
    ensure!(
        std::os::unix::fs::MetadataExt::mtime(&img.stat("future")?) > T,
        "rewrite-timestamp=false clamped"
    );
    ensure_eq!(img.config()?["created"], EPOCH_TIME);
    // `context` on a local context resolves to nothing, as in BuildKit.
    let img = ok(Case::new().build_with(text, |b| b.build_arg("SOURCE_DATE_EPOCH", "context")))?;
    ensure!(
        img.config()?["created"] != EPOCH_TIME,
        "SOURCE_DATE_EPOCH=context was read as a time"
    );
    crate::util::expect_err(
        Case::new().build_with(text, |b| {
            b.build_arg("SOURCE_DATE_EPOCH", "not-a-timestamp")
        }),
        "invalid SOURCE_DATE_EPOCH: not-a-timestamp",
    )?;
    crate::util::expect_err(
        Case::new().build(
            "ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD http://127.0.0.1:1/x /x\nFROM {BUSYBOX}\n",
        ),
        // An epoch stage is resolved now (its ADD's Last-Modified): an unreachable URL is
        // an error naming the stage and the URL.
        "SOURCE_DATE_EPOCH stage src: ADD http://127.0.0.1:1/x",
    )?;
    Ok(())
}

pub(crate) fn cfg_03_empty_values_kept() -> R {
    let img = ok(Case::new().build("FROM scratch\nENV E=\nLABEL l=\"\"\n"))?;
    ensure!(img.env()?.contains(&"E=".to_owned()), "{:?}", img.env()?);
    ensure_eq!(img.cfg()?["Labels"], json!({"l": ""}));
    Ok(())
}
