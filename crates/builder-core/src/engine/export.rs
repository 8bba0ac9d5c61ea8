//! Running the exporters on a built image.

use std::path::Path;

use bytes::Bytes;
use layer_cache::{ApplyOptions, Cache, Digest, LayerRef};
use registry_client::{BlobSource, Client, RawManifest, Reference, Repository};
use tokio::sync::mpsc;

use super::Error;
use super::export_spec::{ExportKind, ExportSpec};
use crate::oci::{self, BuiltImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::progress::{Activity, Clock, Phase, ProgressEvent, StepId};

fn export_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Export {
        path: path.to_owned(),
        source,
    }
}

/// Where a registry output pushes: a repository, and the tag (`None`: by digest alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PushTarget {
    pub(super) repo: Repository,
    pub(super) tag: Option<String>,
}

/// The names an output writes, as given: the `-t` names when there are any (buildx puts
/// them in every image exporter's `name`), else the output's own `name=`.
pub(super) fn output_names<'a>(out: &'a ExportSpec, tag_names: &'a [String]) -> &'a [String] {
    if tag_names.is_empty() {
        &out.names
    } else {
        tag_names
    }
}

/// The repositories and tags a registry output pushes to, checked before the build: a
/// name is needed, and a push by digest takes untagged names (as BuildKit).
pub(super) fn push_targets(
    out: &ExportSpec,
    tag_names: &[String],
) -> Result<Vec<PushTarget>, Error> {
    let bad = |reason: String| Error::InvalidOutput {
        spec: "type=registry".into(),
        reason,
    };
    let names = output_names(out, tag_names);
    if names.is_empty() {
        return Err(bad(
            "tag is needed when pushing to registry (give --tag or name=)".into(),
        ));
    }
    let mut targets: Vec<PushTarget> = Vec::new();
    for name in names {
        let reference: Reference = name
            .parse()
            .map_err(|e: registry_client::Error| bad(format!("name {name:?}: {e}")))?;
        let tagged = name.parse::<Repository>().is_err();
        let target = if out.push_by_digest {
            if tagged {
                return Err(bad(format!(
                    "can't push tagged ref {name} by digest (give the repository alone)"
                )));
            }
            PushTarget {
                repo: reference.repository().clone(),
                tag: None,
            }
        } else {
            PushTarget {
                repo: reference.repository().clone(),
                tag: Some(reference.tag().unwrap_or("latest").to_owned()),
            }
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    Ok(targets)
}

/// Writes or pushes `img` to every output.
#[allow(clippy::too_many_arguments)]
pub(super) async fn export_all(
    client: &Client,
    cache: &Cache,
    img: &BuiltImage,
    base_repos: &[Option<Repository>],
    outputs: &[ExportSpec],
    tags: &[Reference],
    tag_names: &[String],
    epoch: Option<i64>,
    events: &mpsc::UnboundedSender<ProgressEvent>,
    clock: Clock,
    step: StepId,
) -> Result<(), Error> {
    for out in outputs {
        let mut names: Vec<String> = tags.iter().map(ToString::to_string).collect();
        // `name=` values normalised as `--tag`s are (BuildKit: `docker.io/org/repo:tag`).
        names.extend(out.names.iter().map(|n| {
            n.parse::<Reference>()
                .map_or_else(|_| n.clone(), |r| r.to_string())
        }));
        // The layout's creation time: the output's or the build's SOURCE_DATE_EPOCH, or now.
        let created = out.source_date_epoch.unwrap_or(epoch).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let created = crate::image::rfc3339(created, 0);
        let name = match &out.kind {
            ExportKind::Registry => "pushing to the registry".to_owned(),
            ExportKind::Oci { dest, .. } => format!("exporting OCI layout to {}", dest.display()),
            ExportKind::Docker { dest } => {
                format!("exporting docker archive to {}", dest.display())
            }
            ExportKind::Local { dest, .. } => format!("exporting files to {}", dest.display()),
        };
        let id = step;
        let _ = events.send(ProgressEvent::StepStarted {
            id,
            name,
            platform: None,
            location: None,
        });
        let t = std::time::Instant::now();
        let kind = match &out.kind {
            ExportKind::Registry => "registry",
            ExportKind::Oci { .. } => "oci",
            ExportKind::Docker { .. } => "docker",
            ExportKind::Local { .. } => "local",
        };
        let timer = clock.timer(events, Some(id), Phase::Export, kind);
        match &out.kind {
            ExportKind::Oci { dest, tar: true } => {
                let (img, dest, names) = (img.clone(), dest.clone(), names.clone());
                tokio::task::spawn_blocking(move || {
                    oci::write_oci_tar(&img, &names, &dest, false, &created)
                        .map_err(export_err(&dest))
                })
                .await
                .map_err(|e| super::exec_join(&e))??;
            }
            ExportKind::Oci { dest, tar: false } => {
                let (img, dest, names) = (img.clone(), dest.clone(), names.clone());
                tokio::task::spawn_blocking(move || {
                    oci::write_oci_dir(&img, &names, &dest, &created).map_err(export_err(&dest))
                })
                .await
                .map_err(|e| super::exec_join(&e))??;
            }
            ExportKind::Docker { dest } => {
                let familiar: Vec<String> = tags.iter().map(Reference::familiar).collect();
                let (img, dest) = (img.clone(), dest.clone());
                tokio::task::spawn_blocking(move || {
                    oci::write_oci_tar(&img, &familiar, &dest, true, &created)
                        .map_err(export_err(&dest))
                })
                .await
                .map_err(|e| super::exec_join(&e))??;
            }
            ExportKind::Local {
                dest,
                platform_split,
            } => {
                let (img, dest, cache) = (img.clone(), dest.clone(), cache.clone());
                let split = *platform_split;
                tokio::task::spawn_blocking(move || export_local(&cache, &img, &dest, split))
                    .await
                    .map_err(|e| super::exec_join(&e))??;
            }
            ExportKind::Registry => {
                let targets = push_targets(out, tag_names)?;
                push(client, img, base_repos, &targets, events, clock, id).await?;
            }
        }
        drop(timer);
        let _ = events.send(ProgressEvent::StepDone {
            id,
            elapsed: t.elapsed(),
        });
    }
    Ok(())
}

/// The final filesystem as plain files (one directory per platform when there are several,
/// or as `platform_split` says), with the images' attestations beside them.
fn export_local(
    cache: &Cache,
    img: &BuiltImage,
    dest: &Path,
    platform_split: Option<bool>,
) -> Result<(), Error> {
    let split = platform_split.unwrap_or(img.images.len() > 1);
    for (index, i) in img.images.iter().enumerate() {
        let out_dir = local_dir(dest, &i.platform, img.images.len(), platform_split);
        std::fs::create_dir_all(&out_dir).map_err(export_err(&out_dir))?;
        let has_attestations = img.attestations.iter().any(|a| a.subject == index);
        // Several platforms in one directory with attestations: each platform is unpacked
        // on its own first, so its statements' subjects are its own files, then moved in.
        let shared = img.images.len() > 1 && !split;
        let dir = if shared && has_attestations {
            let d = dest.join(format!(".rbuild-platform-{index}"));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).map_err(export_err(&d))?;
            d
        } else {
            out_dir.clone()
        };
        let config: serde_json::Value =
            serde_json::from_slice(&i.config).map_err(|e| Error::BadImage {
                reference: "result".into(),
                reason: e.to_string(),
            })?;
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let mut layers = Vec::new();
        for (l, d) in i.layers.iter().zip(diff_ids) {
            layers.push(LayerRef::new(l.digest.parse()?, d));
        }
        let mut opts = ApplyOptions::default();
        opts.devices = layer_cache::DevicePolicy::Skip;
        cache.flatten_chain(&layers, &dir, &opts)?;
        let suffix = shared.then(|| {
            let (os, arch, variant) = &i.platform;
            match variant {
                Some(v) => format!("{os}_{arch}_{v}"),
                None => format!("{os}_{arch}"),
            }
        });
        let statements: Vec<&[Vec<u8>]> = img
            .attestations
            .iter()
            .filter(|a| a.subject == index)
            .map(|a| &a.statements[..])
            .collect();
        let subjects = if statements.is_empty() {
            Vec::new()
        } else {
            super::local_attest::subjects(&dir)?
        };
        if dir != out_dir {
            merge_into(&dir, &out_dir)?;
            std::fs::remove_dir_all(&dir).map_err(export_err(&dir))?;
        }
        for st in statements {
            super::local_attest::write(&out_dir, st, &subjects, suffix.as_deref())?;
        }
    }
    Ok(())
}

/// Moves everything below `from` into `to` (directories merged, other entries replaced).
fn merge_into(from: &Path, to: &Path) -> Result<(), Error> {
    for e in std::fs::read_dir(from).map_err(export_err(from))? {
        let e = e.map_err(export_err(from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let is_dir = e.file_type().map_err(export_err(&src))?.is_dir();
        match std::fs::symlink_metadata(&dst) {
            Ok(m) if is_dir && m.is_dir() => merge_into(&src, &dst)?,
            Ok(m) => {
                if m.is_dir() {
                    std::fs::remove_dir_all(&dst).map_err(export_err(&dst))?;
                }
                std::fs::rename(&src, &dst).map_err(export_err(&dst))?;
            }
            Err(_) => std::fs::rename(&src, &dst).map_err(export_err(&dst))?,
        }
    }
    Ok(())
}

/// Where `type=local` puts a platform's files: `dest`, or `dest/os_arch[_variant]` when
/// there are several platforms.
pub(super) fn local_dir(
    dest: &Path,
    (os, arch, variant): &(String, String, Option<String>),
    platforms: usize,
    platform_split: Option<bool>,
) -> std::path::PathBuf {
    if platform_split.unwrap_or(platforms > 1) {
        dest.join(match variant {
            Some(v) => format!("{os}_{arch}_{v}"),
            None => format!("{os}_{arch}"),
        })
    } else {
        dest.to_owned()
    }
}

/// A push's byte counts as the step's progress (the image export and the cache export).
pub(super) struct PushProgress<'a> {
    pub(super) events: &'a mpsc::UnboundedSender<ProgressEvent>,
    pub(super) step: StepId,
}

impl registry_client::TransferProgress for PushProgress<'_> {
    fn event(&self, ev: &registry_client::TransferEvent<'_>) {
        if let registry_client::TransferEvent::Progress {
            digest,
            done,
            total,
        } = ev
        {
            let label: String = digest.hex().chars().take(12).collect();
            let _ = self.events.send(ProgressEvent::StepProgress {
                id: self.step,
                activity: Activity::Push,
                label,
                current: *done,
                total: Some(*total),
            });
        }
    }
}

/// Pushes blobs, manifests and the index, then tags, to each target's repository (by
/// digest alone for a repository without tags).
async fn push(
    client: &Client,
    img: &BuiltImage,
    base_repos: &[Option<Repository>],
    targets: &[PushTarget],
    events: &mpsc::UnboundedSender<ProgressEvent>,
    clock: Clock,
    step: StepId,
) -> Result<(), Error> {
    let progress = PushProgress { events, step };
    let mut repos: Vec<(Repository, Vec<String>)> = Vec::new();
    for t in targets {
        let list = match repos.iter_mut().find(|(r, _)| *r == t.repo) {
            Some((_, list)) => list,
            None => {
                repos.push((t.repo.clone(), Vec::new()));
                &mut repos.last_mut().expect("just pushed").1
            }
        };
        if let Some(tag) = &t.tag {
            list.push(tag.clone());
        }
    }
    for (repo, tag_list) in &repos {
        for (n, i) in img.images.iter().enumerate() {
            let mount_from = base_repos
                .get(n)
                .cloned()
                .flatten()
                .filter(|b| b.registry() == repo.registry() && b != repo);
            // The layers at once (as BuildKit's pusher): each upload mostly waits on the
            // registry, and the manifest needs them all.
            let uploads = i.layers.iter().map(|l| {
                let (progress, mount_from) = (&progress, mount_from.as_ref());
                async move {
                    let d: registry_client::Digest = l.digest.parse()?;
                    let label: String = d.hex().chars().take(12).collect();
                    let mut timer = clock.timer(events, Some(step), Phase::Upload, label);
                    timer.bytes(l.size);
                    client
                        .push_blob(
                            repo,
                            &d,
                            l.size,
                            &BlobSource::File(l.path.clone()),
                            mount_from,
                            progress,
                        )
                        .await?;
                    Ok::<(), Error>(())
                }
            });
            futures_util::future::try_join_all(uploads).await?;
            let cd: registry_client::Digest = i.config_digest().parse()?;
            client
                .push_blob(
                    repo,
                    &cd,
                    i.config.len() as u64,
                    &BlobSource::Bytes(Bytes::from(i.config.clone())),
                    None,
                    &progress,
                )
                .await?;
            let m = RawManifest::new(Bytes::from(i.manifest.clone()), Some(MEDIA_TYPE_MANIFEST))?;
            if img.index.is_some() {
                client.push_manifest(repo, None, &m).await?;
            } else {
                let tags: Vec<&str> = tag_list.iter().map(String::as_str).collect();
                client.push_manifest_tags(repo, &tags, &m).await?;
            }
        }
        for a in &img.attestations {
            push_attestation(client, repo, img, a, &progress).await?;
        }
        if let Some(ix) = &img.index {
            let m = RawManifest::new(Bytes::from(ix.clone()), Some(MEDIA_TYPE_INDEX))?;
            let tags: Vec<&str> = tag_list.iter().map(String::as_str).collect();
            client.push_manifest_tags(repo, &tags, &m).await?;
        }
    }
    Ok(())
}

/// Pushes an attestation manifest, its statements and the empty config, by digest; as a
/// referrer also into the OCI 1.1 referrers tag fallback (`sha256-<subject hex>`, an index
/// of the subject's referrers, merged with what it already lists).
async fn push_attestation(
    client: &Client,
    repo: &Repository,
    img: &BuiltImage,
    a: &crate::attest::AttestationManifest,
    progress: &PushProgress<'_>,
) -> Result<(), Error> {
    let mut blobs: Vec<&[u8]> = a.statements.iter().map(Vec::as_slice).collect();
    blobs.push(crate::attest::layout::EMPTY_JSON);
    for b in blobs {
        let d: registry_client::Digest = oci::sha256_digest(b).parse()?;
        client
            .push_blob(
                repo,
                &d,
                b.len() as u64,
                &BlobSource::Bytes(Bytes::from(b.to_vec())),
                None,
                progress,
            )
            .await?;
    }
    let m = RawManifest::new(Bytes::from(a.manifest.clone()), Some(MEDIA_TYPE_MANIFEST))?;
    client.push_manifest(repo, None, &m).await?;
    if !img.referrers {
        return Ok(());
    }
    let subject = img.images[a.subject].manifest_digest();
    let tag = subject.replace(':', "-");
    let reference = Reference::with_tag(repo.clone(), &tag)?;
    let mut entries: Vec<serde_json::Value> = match client.resolve(&reference).await {
        Ok(existing) => {
            let v: serde_json::Value =
                serde_json::from_slice(existing.bytes()).map_err(|e| Error::BadImage {
                    reference: reference.to_string(),
                    reason: format!("the referrers tag is not an index: {e}"),
                })?;
            v["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mine = crate::attest::layout::referrer_entry(a);
    if !entries.iter().any(|e| e["digest"] == mine["digest"]) {
        entries.push(mine);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": entries,
    });
    let bytes = serde_json::to_vec(&index).expect("JSON serialises");
    let m = RawManifest::new(Bytes::from(bytes), Some(MEDIA_TYPE_INDEX))?;
    client.push_manifest(repo, Some(&tag), &m).await?;
    Ok(())
}
