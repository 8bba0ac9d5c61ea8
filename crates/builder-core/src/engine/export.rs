//! The exporters: each `--output` as an [`Exporter`] that says what it [`Needs`] of the
//! solved build (the image's blobs, or the final filesystems as files) and takes that
//! [`Solved`] result and nothing else, as BuildKit's `exporter` package does.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use layer_cache::{ApplyOptions, PackOptions};
use registry_client::{BlobSource, Client, RawManifest, Reference, Repository};
use tokio::sync::mpsc;

use super::Error;
use super::export_spec::{ExportKind, ExportSpec};
use crate::oci::{self, BuiltImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::progress::{Activity, Clock, Phase, ProgressEvent, StepId};

fn export_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Export {
        path: path.to_owned(),
        source: source.into(),
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

/// What an exporter needs of the solved build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Needs {
    /// The image: compressed layers, configs and manifests (BuildKit's exporters that
    /// take the result's refs as blobs).
    Blobs,
    /// The final filesystems as directories; nothing is compressed.
    Files,
}

/// The final filesystems of a solved build, one per platform, made on demand.
pub(super) trait SolvedFiles: Send + Sync {
    /// Each platform's `(os, architecture, variant)`.
    fn platforms(&self) -> Vec<(String, String, Option<String>)>;

    /// The layer directories of platform `i`, top first (unpacked where needed; progress
    /// goes to `step`).
    fn layer_dirs(&self, i: usize, step: StepId) -> BoxFuture<'_, Result<Vec<PathBuf>, Error>>;

    /// How files are written (the SOURCE_DATE_EPOCH clamp).
    fn pack(&self) -> &PackOptions;
}

/// A solved build as the exporters see it: the image (when an exporter needs blobs) and
/// the final filesystems.
pub(super) struct Solved<'a> {
    pub(super) image: Option<&'a BuiltImage>,
    pub(super) files: &'a dyn SolvedFiles,
    /// Each platform's base image repository (blobs are mounted from there on a push).
    pub(super) base_repos: &'a [Option<Repository>],
}

/// Where an export reports and pushes.
pub(super) struct ExportCx<'a> {
    pub(super) client: &'a Client,
    pub(super) events: &'a mpsc::UnboundedSender<ProgressEvent>,
    /// The build's clock, for the timeline.
    pub(super) clock: Clock,
    pub(super) step: StepId,
}

/// One `--output`.
pub(super) trait Exporter: Send + Sync {
    /// What it needs of the solved build.
    fn needs(&self) -> Needs;

    /// Its progress step's name.
    fn describe(&self) -> String;

    /// Its type (`oci`, `docker`, `local`, `registry`), for the timeline.
    fn kind(&self) -> &'static str;

    /// Writes or pushes the solved build.
    fn export<'a>(
        &'a self,
        solved: &'a Solved<'a>,
        cx: &'a ExportCx<'a>,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The exporters of `outputs`. `tags` are the `--tag`s (`tag_names` as given), `epoch` the
/// build's SOURCE_DATE_EPOCH.
///
/// # Errors
/// A registry output without a name it can push to.
pub(super) fn exporters(
    outputs: &[ExportSpec],
    tags: &[Reference],
    tag_names: &[String],
    epoch: Option<i64>,
) -> Result<Vec<Box<dyn Exporter>>, Error> {
    let mut out: Vec<Box<dyn Exporter>> = Vec::new();
    for spec in outputs {
        let mut names: Vec<String> = tags.iter().map(ToString::to_string).collect();
        // `name=` values normalised as `--tag`s are (BuildKit: `docker.io/org/repo:tag`).
        names.extend(spec.names.iter().map(|n| {
            n.parse::<Reference>()
                .map_or_else(|_| n.clone(), |r| r.to_string())
        }));
        // The layout's creation time: the output's or the build's SOURCE_DATE_EPOCH, or now.
        let created = spec.source_date_epoch.unwrap_or(epoch).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let created = crate::image::rfc3339(created, 0);
        out.push(match &spec.kind {
            ExportKind::Oci { dest, tar } => Box::new(Layout {
                dest: dest.clone(),
                tar: *tar,
                docker: false,
                names,
                created,
            }),
            ExportKind::Docker { dest } => Box::new(Layout {
                dest: dest.clone(),
                tar: true,
                docker: true,
                names: tags.iter().map(Reference::familiar).collect(),
                created,
            }),
            ExportKind::Local {
                dest,
                platform_split,
            } => Box::new(LocalFiles {
                dest: dest.clone(),
                platform_split: *platform_split,
            }),
            ExportKind::Registry => Box::new(Push {
                targets: push_targets(spec, tag_names)?,
            }),
        });
    }
    Ok(out)
}

/// Runs every exporter on `solved`, each as step `cx.step`.
pub(super) async fn export_all(
    exporters: &[Box<dyn Exporter>],
    solved: &Solved<'_>,
    cx: &ExportCx<'_>,
) -> Result<(), Error> {
    for e in exporters {
        let _ = cx.events.send(ProgressEvent::StepStarted {
            id: cx.step,
            name: e.describe(),
            platform: None,
            location: None,
        });
        let t = std::time::Instant::now();
        let timer = cx
            .clock
            .timer(cx.events, Some(cx.step), Phase::Export, e.kind());
        e.export(solved, cx).await?;
        drop(timer);
        let _ = cx.events.send(ProgressEvent::StepDone {
            id: cx.step,
            elapsed: t.elapsed(),
        });
    }
    Ok(())
}

/// The image itself, needed by an exporter of blobs.
fn image<'a>(solved: &'a Solved<'_>) -> Result<&'a BuiltImage, Error> {
    solved
        .image
        .ok_or_else(|| Error::invalid_step("an image exporter ran without the image"))
}

/// An OCI image layout (a tar file or a directory), or a docker-archive.
struct Layout {
    dest: PathBuf,
    tar: bool,
    /// A docker-archive (`manifest.json` for `docker load`).
    docker: bool,
    names: Vec<String>,
    created: String,
}

impl Exporter for Layout {
    fn needs(&self) -> Needs {
        Needs::Blobs
    }

    fn kind(&self) -> &'static str {
        if self.docker { "docker" } else { "oci" }
    }

    fn describe(&self) -> String {
        if self.docker {
            format!("exporting docker archive to {}", self.dest.display())
        } else {
            format!("exporting OCI layout to {}", self.dest.display())
        }
    }

    fn export<'a>(
        &'a self,
        solved: &'a Solved<'a>,
        _cx: &'a ExportCx<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let img = image(solved)?.clone();
            let (dest, names, created) =
                (self.dest.clone(), self.names.clone(), self.created.clone());
            let (tar, docker) = (self.tar, self.docker);
            tokio::task::spawn_blocking(move || {
                if tar {
                    oci::write_oci_tar(&img, &names, &dest, docker, &created)
                } else {
                    oci::write_oci_dir(&img, &names, &dest, &created)
                }
                .map_err(export_err(&dest))
            })
            .await
            .map_err(|e| super::exec_join(&e))?
        }
        .boxed()
    }
}

/// The final filesystem as plain files (`type=local`), one directory per platform when
/// there are several; from the snapshots, nothing compressed.
struct LocalFiles {
    dest: PathBuf,
    platform_split: Option<bool>,
}

impl Exporter for LocalFiles {
    fn needs(&self) -> Needs {
        Needs::Files
    }

    fn describe(&self) -> String {
        format!("exporting files to {}", self.dest.display())
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn export<'a>(
        &'a self,
        solved: &'a Solved<'a>,
        cx: &'a ExportCx<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let platforms = solved.files.platforms();
            let split = self.platform_split.unwrap_or(platforms.len() > 1);
            for (i, p) in platforms.iter().enumerate() {
                let out_dir = local_dir(&self.dest, p, platforms.len(), self.platform_split);
                let lowers = solved.files.layer_dirs(i, cx.step).await?;
                let pack = solved.files.pack().clone();
                // The image's attestations, written beside its files (BuildKit's local
                // exporter): `provenance.json`, `sbom.spdx.json`.
                let statements: Vec<Vec<u8>> = solved
                    .image
                    .map(|img| {
                        img.attestations
                            .iter()
                            .filter(|a| a.subject == i)
                            .flat_map(|a| a.statements.iter().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let shared = platforms.len() > 1 && !split;
                let suffix = shared.then(|| match &p.2 {
                    Some(v) => format!("{}_{}_{v}", p.0, p.1),
                    None => format!("{}_{}", p.0, p.1),
                });
                let dest = self.dest.clone();
                tokio::task::spawn_blocking(move || -> Result<(), Error> {
                    std::fs::create_dir_all(&out_dir).map_err(export_err(&out_dir))?;
                    // Several platforms in one directory with attestations: each platform is
                    // unpacked on its own first, so its statements' subjects are its files.
                    let dir = if shared && !statements.is_empty() {
                        let d = dest.join(format!(".rbuild-platform-{i}"));
                        let _ = std::fs::remove_dir_all(&d);
                        std::fs::create_dir_all(&d).map_err(export_err(&d))?;
                        d
                    } else {
                        out_dir.clone()
                    };
                    let mut opts = ApplyOptions::default();
                    opts.devices = layer_cache::DevicePolicy::Skip;
                    for layer in lowers.iter().rev() {
                        layer_cache::flatten_layer_dir(layer, &dir, &opts, &pack)?;
                    }
                    if statements.is_empty() {
                        return Ok(());
                    }
                    let subjects = super::local_attest::subjects(&dir)?;
                    if dir != out_dir {
                        merge_into(&dir, &out_dir)?;
                        std::fs::remove_dir_all(&dir).map_err(export_err(&dir))?;
                    }
                    super::local_attest::write(&out_dir, &statements, &subjects, suffix.as_deref())
                })
                .await
                .map_err(|e| super::exec_join(&e))??;
            }
            Ok(())
        }
        .boxed()
    }
}

/// A push to registries (`type=registry`, `type=image,push=true`).
struct Push {
    targets: Vec<PushTarget>,
}

impl Exporter for Push {
    fn needs(&self) -> Needs {
        Needs::Blobs
    }

    fn describe(&self) -> String {
        "pushing to the registry".to_owned()
    }

    fn kind(&self) -> &'static str {
        "registry"
    }

    fn export<'a>(
        &'a self,
        solved: &'a Solved<'a>,
        cx: &'a ExportCx<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let img = image(solved)?;
            push(
                cx.client,
                img,
                solved.base_repos,
                &self.targets,
                cx.events,
                cx.clock,
                cx.step,
            )
            .await
        }
        .boxed()
    }
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
/// split (by default when there are several platforms; `platform-split=`).
pub(super) fn local_dir(
    dest: &Path,
    (os, arch, variant): &(String, String, Option<String>),
    platforms: usize,
    platform_split: Option<bool>,
) -> PathBuf {
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
            // registry, and the manifest needs them all. A layer that an image holds twice
            // (two steps with byte-identical changes) is uploaded once.
            let mut seen = std::collections::HashSet::new();
            let unique = i.layers.iter().filter(|l| seen.insert(l.digest.as_str()));
            let uploads = unique.map(|l| {
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
