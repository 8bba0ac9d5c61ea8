//! The attestations of a build's images: each platform image's SBOM (its final filesystem
//! scanned in the layer snapshots, nothing copied) and provenance (what the build recorded),
//! in one attestation manifest per image.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use registry_client::Platform;

use super::{
    BaseImage, DepSource, Instruction, clean_path, fs_workdir, join_workdir, run_argv, source_label,
};
use super::{Ctx, Error, StageState, join_error};
use crate::attest::layout::{self, AttestationManifest, Predicate};
use crate::attest::provenance::{self, Request, RunTimes};
use crate::attest::scan::{EntryKind, Tree};
use crate::attest::{Attestations, sbom};
use crate::fsview::{LayeredView, clean_components};
use crate::image::rfc3339;
use crate::oci::PlatformImage;
use crate::progress::StepId;

impl Tree for LayeredView {
    fn read_dir(&self, path: &str) -> std::io::Result<Vec<(String, EntryKind)>> {
        let rel = clean_components(std::path::Path::new(path));
        let entries = LayeredView::read_dir(self, &rel)?;
        Ok(entries
            .into_iter()
            .map(|(name, e)| {
                let kind = if e.meta.is_dir() {
                    EntryKind::Dir
                } else if e.meta.is_file() {
                    EntryKind::File {
                        size: e.meta.len(),
                        executable: e.meta.permissions().mode() & 0o111 != 0,
                    }
                } else {
                    EntryKind::Other
                };
                (name.to_string_lossy().into_owned(), kind)
            })
            .collect())
    }

    fn read_file(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        // The largest metadata file the scanner reads (a dpkg status of a full distribution
        // is a few MiB); a bigger one is refused by name rather than held in memory.
        const SCAN_FILE_LIMIT: u64 = 64 << 20;
        LayeredView::read_file(self, std::path::Path::new(path), SCAN_FILE_LIMIT)
    }
}

/// The wall-clock start of a build, for its provenance.
#[derive(Debug, Clone, Copy)]
pub(super) struct Started {
    secs: i64,
    nanos: u32,
}

impl Started {
    pub(super) fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

/// BuildKit's invocation ids: 25 characters of `[a-z0-9]`. From the build's inputs when
/// SOURCE_DATE_EPOCH makes the build reproducible, else from the start time and process.
fn invocation_id(seed: &[u8]) -> String {
    let h = provenance::sha256_hex(seed);
    let mut n = u128::from_str_radix(&h[..32], 16).unwrap_or(0);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..25)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// Everything the attestations need besides the recorder.
pub(super) struct Inputs<'a> {
    pub(super) attestations: &'a Attestations,
    pub(super) request: Request,
    pub(super) names: Vec<String>,
    pub(super) started: Started,
}

/// One attestation manifest per platform image.
pub(super) async fn make(
    ctx: &Arc<Ctx>,
    inputs: &Inputs<'_>,
    states: &[Arc<StageState>],
    platforms: &[Platform],
    images: &[PlatformImage],
    step: StepId,
) -> Result<Vec<AttestationManifest>, Error> {
    let epoch = ctx.source_date_epoch;
    let created = match epoch {
        Some(t) => rfc3339(t, 0),
        None => rfc3339(inputs.started.secs, 0),
    };
    let finished = Started::now();
    let times = match epoch {
        Some(t) => {
            // Reproducible: no clock and no randomness, only the inputs.
            let seed = serde_json::to_vec(&serde_json::json!({
                "args": inputs.request.args,
                "dockerfile": inputs.request.dockerfile,
                "epoch": t,
                "platforms": platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }))
            .expect("JSON serialises");
            RunTimes {
                invocation_id: invocation_id(&seed),
                started: rfc3339(t, 0),
                finished: rfc3339(t, 0),
            }
        }
        None => RunTimes {
            invocation_id: invocation_id(
                format!(
                    "{}.{}.{}",
                    inputs.started.secs,
                    inputs.started.nanos,
                    std::process::id()
                )
                .as_bytes(),
            ),
            started: rfc3339(inputs.started.secs, inputs.started.nanos),
            finished: rfc3339(finished.secs, finished.nanos),
        },
    };
    let mut out = Vec::new();
    for (i, ((state, platform), image)) in states.iter().zip(platforms).zip(images).enumerate() {
        let mut predicates = Vec::new();
        if inputs.attestations.sbom.is_some() {
            let lowers = ctx.materialize(&state.layers, step).await?;
            let name = inputs
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| format!("image-{platform}"));
            let created = created.clone();
            let doc = tokio::task::spawn_blocking(move || {
                let view = LayeredView::new(lowers);
                crate::attest::scan::scan(&view).map(|p| sbom::document(&name, &created, &p))
            })
            .await
            .map_err(|e| join_error(&e))?
            .map_err(|e| Error::invalid_step(format!("SBOM: scanning the image's files: {e}")))?;
            predicates.push(Predicate {
                predicate_type: sbom::PREDICATE_SPDX,
                body: doc,
            });
        }
        if let (Some(opts), Some(rec)) = (&inputs.attestations.provenance, &ctx.recorder) {
            let chains: Vec<String> = state.layers.iter().map(|l| l.chain.to_string()).collect();
            let body = provenance::predicate(
                opts,
                rec,
                &platform.to_string(),
                &inputs.request,
                &times,
                image,
                &chains,
            );
            predicates.push(Predicate {
                predicate_type: provenance::PREDICATE_SLSA1,
                body,
            });
        }
        if !predicates.is_empty() {
            out.push(layout::attestation_manifest(
                image,
                i,
                &inputs.names,
                &predicates,
            ));
        }
    }
    Ok(out)
}

/// The sources and destination as history shows them (heredocs by their marker).
/// Notes a base image (FROM, COPY --from, RUN --mount from) as a resolved dependency of
/// `build_target`'s provenance.
pub(super) fn note_image(
    ctx: &Ctx,
    build_target: &Platform,
    reference: &str,
    base: &BaseImage,
    image_platform: &Platform,
) {
    if let Some(rec) = &ctx.recorder {
        rec.image(
            &build_target.to_string(),
            reference,
            &base.resolved_digest,
            &image_platform.to_string(),
        );
    }
}

/// A step's op for `mode=max` provenance, in LLB's shape, from the stage's state before it
/// runs; with the stages it also reads and whether it is an exec (platform-bound) op.
/// `None` for instructions that make no filesystem step.
pub(super) fn provenance_op(
    state: &StageState,
    ins: &Instruction,
    dep: Option<&DepSource>,
) -> Option<(serde_json::Value, Vec<usize>, bool)> {
    use serde_json::json;
    let extra: Vec<usize> = match dep {
        Some(DepSource::Stage(j)) => vec![*j],
        _ => Vec::new(),
    };
    match ins {
        Instruction::Run(r) => {
            let (argv, _) = run_argv(&state.config, r);
            let env: Vec<String> = state
                .scope
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut meta = serde_json::Map::new();
            meta.insert("args".into(), json!(argv));
            meta.insert("cwd".into(), json!(fs_workdir(state)));
            meta.insert("env".into(), json!(env));
            if let Some(u) = state.config.user().filter(|u| !u.is_empty()) {
                meta.insert("user".into(), json!(u));
            }
            let mut mounts = vec![json!({"dest": "/"})];
            for m in &r.mounts {
                mounts.push(provenance_mount(&m.fields));
            }
            let mut exec = serde_json::Map::new();
            exec.insert("meta".into(), serde_json::Value::Object(meta));
            exec.insert("mounts".into(), json!(mounts));
            if let Some(n) = &r.network {
                exec.insert(
                    "network".into(),
                    json!(format!("{:?}", n.value).to_lowercase()),
                );
            }
            Some((json!({ "exec": exec }), extra, true))
        }
        Instruction::Copy(c) => {
            let src: Vec<String> = c.sources.iter().map(source_label).collect();
            Some((
                json!({"file": {"actions": [{"copy": {"src": src, "dest": c.dest.value}}]}}),
                extra,
                false,
            ))
        }
        Instruction::Add(a) => {
            let src: Vec<String> = a.sources.iter().map(source_label).collect();
            Some((
                json!({"file": {"actions": [{"copy": {"src": src, "dest": a.dest.value}}]}}),
                extra,
                false,
            ))
        }
        Instruction::Workdir(w) => {
            let dir = clean_path(&join_workdir(
                state.config.working_dir().as_deref(),
                &w.value,
            ));
            (dir != "/").then(|| {
                (
                    json!({"file": {"actions": [{"mkdir": {"path": dir, "makeParents": true}}]}}),
                    extra,
                    false,
                )
            })
        }
        _ => None,
    }
}

/// A `RUN --mount` in LLB's mount shape (`dest`, `mountType`, the type's options by id),
/// from its options as written: ids and paths, never a secret's value (which is not in
/// the Dockerfile).
pub(super) fn provenance_mount(fields: &[(String, Option<String>)]) -> serde_json::Value {
    use serde_json::json;
    let get = |keys: &[&str]| {
        fields
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .and_then(|(_, v)| v.clone())
    };
    let kind = get(&["type"]).unwrap_or_else(|| "bind".to_owned());
    let id = get(&["id"]);
    let mut m = serde_json::Map::new();
    let dest = get(&["target", "dst", "destination"]).or_else(|| match kind.as_str() {
        "secret" => Some(format!("/run/secrets/{}", id.clone().unwrap_or_default())),
        // The first agent socket, as BuildKit numbers them.
        "ssh" => Some("/run/buildkit/ssh_agent.0".to_owned()),
        _ => None,
    });
    if let Some(d) = dest {
        m.insert("dest".into(), json!(d));
    }
    let number = match kind.as_str() {
        "secret" => 1,
        "ssh" => 2,
        "cache" => 3,
        "tmpfs" => 4,
        _ => 0,
    };
    if number != 0 {
        m.insert("mountType".into(), json!(number));
    }
    match kind.as_str() {
        "secret" => {
            m.insert("secretOpt".into(), json!({"ID": id.unwrap_or_default()}));
        }
        "ssh" => {
            m.insert(
                "SSHOpt".into(),
                json!({"ID": id.unwrap_or_else(|| "default".into())}),
            );
        }
        "cache" => {
            m.insert("cacheOpt".into(), json!({"ID": id.or_else(|| get(&["target", "dst", "destination"])).unwrap_or_default()}));
        }
        "bind" => {
            if let Some(src) = get(&["source", "src"]) {
                m.insert("selector".into(), json!(src));
            }
            if let Some(from) = get(&["from"]) {
                m.insert("from".into(), json!(from));
            }
        }
        _ => {}
    }
    serde_json::Value::Object(m)
}
