//! The attestations of a build's images: each platform image's SBOM (its final filesystem
//! scanned in the layer snapshots, nothing copied) and provenance (what the build recorded),
//! in one attestation manifest per image.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use registry_client::Platform;

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
