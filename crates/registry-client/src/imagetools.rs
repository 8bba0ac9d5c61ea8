//! `imagetools create`: merge image manifests and indexes already in registries into one
//! index, as `docker buildx imagetools create` does, and push it under tags, copying what
//! the target repository lacks (a cross-repository mount first, else a copy).
//!
//! Sources are referenced as they are: an index entry points at the manifest bytes the
//! registry holds, which are copied byte for byte, never re-serialised. The index itself is
//! made by a pure function, [`combine`], from the resolved sources.
//!
//! ```no_run
//! # async fn demo() -> Result<(), registry_client::Error> {
//! use registry_client::{Client, CreateIndex, NoProgress};
//! let client = Client::new()?;
//! // Two runners pushed by digest; one index for both, tagged.
//! let create = CreateIndex::new()
//!     .source("127.0.0.1:5000/app@sha256:1111111111111111111111111111111111111111111111111111111111111111".parse()?)
//!     .source("127.0.0.1:5000/app@sha256:2222222222222222222222222222222222222222222222222222222222222222".parse()?)
//!     .tag("127.0.0.1:5000/app:1.0".parse()?);
//! let index = create.resolve(&client).await?;
//! println!("{}", String::from_utf8_lossy(index.bytes()));
//! create.push(&client, &index, &NoProgress).await?;
//! # Ok(()) }
//! ```

use std::str::FromStr;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::client::{BlobSource, Client, PushedBlob};
use crate::digest::Digest;
use crate::error::Error;
use crate::manifest::{DOCKER_MANIFEST_LIST, Manifest, ManifestKind, OCI_INDEX, RawManifest};
use crate::platform::Platform;
use crate::progress::TransferProgress;
use crate::reference::{Reference, Repository};

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidCreate {
        reason: reason.into(),
    }
}

/// One source of `imagetools create`: an image reference (by tag or digest), a bare digest
/// (in the one repository the command names), or an OCI descriptor as JSON (its platform
/// and annotations override what the registry says).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    input: String,
    reference: Option<Reference>,
    descriptor: Option<Map<String, Value>>,
}

impl Source {
    /// A source by reference.
    pub fn reference(reference: Reference) -> Self {
        Self {
            input: reference.to_string(),
            reference: Some(reference),
            descriptor: None,
        }
    }
}

impl From<Reference> for Source {
    fn from(r: Reference) -> Self {
        Self::reference(r)
    }
}

impl FromStr for Source {
    type Err = Error;

    /// `sha256:…` is a digest, `{…}` a descriptor, anything else an image reference.
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = |reason: String| {
            invalid(format!(
                "source {s:?}: {reason} (sources are digests, references and descriptors)"
            ))
        };
        if s.starts_with('{') {
            let v: Value =
                serde_json::from_str(s).map_err(|e| bad(format!("not a JSON descriptor: {e}")))?;
            let Value::Object(d) = v else {
                return Err(bad("a descriptor is a JSON object".into()));
            };
            let digest = d
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("the descriptor has no digest".into()))?;
            digest.parse::<Digest>().map_err(|e| bad(e.to_string()))?;
            return Ok(Self {
                input: s.to_owned(),
                reference: None,
                descriptor: Some(d),
            });
        }
        if let Ok(d) = s.parse::<Digest>() {
            let mut m = Map::new();
            m.insert("digest".into(), Value::String(d.to_string()));
            return Ok(Self {
                input: s.to_owned(),
                reference: None,
                descriptor: Some(m),
            });
        }
        let reference: Reference = s.parse().map_err(|e: Error| bad(e.to_string()))?;
        Ok(Self {
            input: s.to_owned(),
            reference: Some(reference),
            descriptor: None,
        })
    }
}

/// Where an `--annotation` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnotationTarget {
    /// `index:`: the new index.
    Index,
    /// `manifest-descriptor[PLATFORM]:`: the index's entries (of that platform only).
    ManifestDescriptor(Option<Platform>),
}

/// One `--annotation TYPE[PLATFORM]:KEY=VALUE` of `imagetools create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes.
    pub target: AnnotationTarget,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl FromStr for Annotation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| invalid(format!("annotation {s:?}: {reason}"));
        let (k, value) = s.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
        let (kind, key) = match k.split_once(':') {
            Some((kind, key))
                if kind
                    .split('[')
                    .next()
                    .is_some_and(|t| !t.contains('.') && !t.contains('/')) =>
            {
                (kind, key)
            }
            _ => {
                return Err(bad(
                    "give where it goes: index:KEY=VALUE or manifest-descriptor:KEY=VALUE (imagetools create cannot change the manifests)",
                ));
            }
        };
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let (kind, platform) = match kind.split_once('[') {
            Some((kind, rest)) => {
                let p = rest
                    .strip_suffix(']')
                    .ok_or_else(|| bad("unclosed [PLATFORM]"))?;
                let p: Platform = p.parse().map_err(|e: Error| bad(&e.to_string()))?;
                (kind, Some(p))
            }
            None => (kind, None),
        };
        let target = match (kind, platform) {
            ("index", None) => AnnotationTarget::Index,
            ("index", Some(_)) => return Err(bad("index annotations take no platform")),
            ("manifest-descriptor", p) => AnnotationTarget::ManifestDescriptor(p),
            ("manifest", _) => {
                return Err(bad(
                    "\"manifest\" annotations are not supported (the manifests are copied byte for byte)",
                ));
            }
            ("index-descriptor", _) => {
                return Err(bad(
                    "\"index-descriptor\" annotations are invalid while creating an image",
                ));
            }
            (other, _) => return Err(bad(&format!("unknown annotation type {other:?}"))),
        };
        Ok(Self {
            target,
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A source fetched from its registry: its repository, its descriptor (with the platform,
/// for an image manifest) and its exact bytes.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// The repository that holds it.
    pub repository: Repository,
    /// Its descriptor, as an index entry writes it.
    pub descriptor: Map<String, Value>,
    /// The manifest or index, as the registry served it.
    pub manifest: RawManifest,
}

/// The index `imagetools create` makes (or, for one index source alone, that index).
#[derive(Debug, Clone)]
pub struct CreatedIndex {
    manifest: RawManifest,
    /// Each entry's descriptor and the repository it is copied from.
    entries: Vec<(Map<String, Value>, Repository)>,
}

impl CreatedIndex {
    /// The index bytes (what `--dry-run` prints).
    pub fn bytes(&self) -> &[u8] {
        self.manifest.bytes()
    }

    /// The index, with its media type and digest.
    pub fn manifest(&self) -> &RawManifest {
        &self.manifest
    }

    /// The index's entries: each descriptor and the repository it comes from.
    pub fn entries(&self) -> &[(Map<String, Value>, Repository)] {
        &self.entries
    }
}

/// Merge resolved sources into one index, as buildx: one index source and no annotations is
/// a carbon copy; otherwise the indexes' entries and the single manifests, each digest once
/// (a later source's platform and annotations win), in a Docker manifest list when every
/// entry is a Docker type, else an OCI index.
pub fn combine(
    sources: &[ResolvedSource],
    annotations: &[Annotation],
) -> Result<CreatedIndex, Error> {
    if sources.is_empty() {
        return Err(invalid("no sources specified"));
    }
    let mut entries: Vec<(Map<String, Value>, Repository)> = Vec::new();
    let mut add = |d: Map<String, Value>, repo: &Repository| {
        let digest = d.get("digest").cloned();
        match entries
            .iter_mut()
            .find(|(e, _)| e.get("digest") == digest.as_ref())
        {
            Some((old, from)) => {
                if let Some(p) = d.get("platform") {
                    old.insert("platform".into(), p.clone());
                }
                if let Some(Value::Object(a)) = d.get("annotations") {
                    let merged = old
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = merged {
                        m.extend(a.clone());
                    }
                }
                *from = repo.clone();
            }
            None => entries.push((d, repo.clone())),
        }
    };
    for s in sources {
        match s.manifest.kind() {
            ManifestKind::Index => {
                let Manifest::Index(_) = s.manifest.parse()? else {
                    unreachable!("kind is Index")
                };
                let v: Value = serde_json::from_slice(s.manifest.bytes()).map_err(|e| {
                    Error::InvalidManifest {
                        digest: s.manifest.digest().clone(),
                        reason: e.to_string(),
                    }
                })?;
                for d in v["manifests"].as_array().into_iter().flatten() {
                    if let Value::Object(d) = d {
                        add(d.clone(), &s.repository);
                    }
                }
            }
            ManifestKind::Image => add(s.descriptor.clone(), &s.repository),
        }
    }
    if sources.len() == 1
        && annotations.is_empty()
        && sources[0].manifest.kind() == ManifestKind::Index
    {
        return Ok(CreatedIndex {
            manifest: sources[0].manifest.clone(),
            entries,
        });
    }
    let all_docker = entries.iter().all(|(d, _)| {
        d.get("mediaType")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("application/vnd.docker."))
    });
    let media_type = if all_docker {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let mut index_annotations = Map::new();
    if !annotations.is_empty() && all_docker {
        return Err(invalid(
            "annotations need an OCI index, and every source is a Docker manifest (a Docker manifest list has no annotations)",
        ));
    }
    for a in annotations {
        match &a.target {
            AnnotationTarget::Index => {
                index_annotations.insert(a.key.clone(), Value::String(a.value.clone()));
            }
            AnnotationTarget::ManifestDescriptor(platform) => {
                for (d, _) in &mut entries {
                    if platform
                        .as_ref()
                        .is_none_or(|p| descriptor_platform(d).as_ref() == Some(p))
                    {
                        let m = d
                            .entry("annotations")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(m) = m {
                            m.insert(a.key.clone(), Value::String(a.value.clone()));
                        }
                    }
                }
            }
        }
    }
    let mut index = Map::new();
    index.insert("schemaVersion".into(), Value::from(2));
    index.insert("mediaType".into(), Value::from(media_type));
    index.insert(
        "manifests".into(),
        Value::Array(
            entries
                .iter()
                .map(|(d, _)| Value::Object(d.clone()))
                .collect(),
        ),
    );
    if !index_annotations.is_empty() {
        index.insert("annotations".into(), Value::Object(index_annotations));
    }
    let bytes = serde_json::to_vec_pretty(&Value::Object(index)).expect("JSON serialises");
    Ok(CreatedIndex {
        manifest: RawManifest::new(Bytes::from(bytes), Some(media_type))?,
        entries,
    })
}

fn descriptor_platform(d: &Map<String, Value>) -> Option<Platform> {
    let p = d.get("platform")?;
    Platform::new(
        p["os"].as_str()?,
        p["architecture"].as_str()?,
        p["variant"].as_str(),
    )
    .ok()
}

/// `imagetools create`: sources, tags and annotations, validated as they are given.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CreateIndex {
    sources: Vec<Source>,
    tags: Vec<Reference>,
    annotations: Vec<Annotation>,
    append: bool,
}

impl CreateIndex {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source (several in order).
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// A tag to push the index under (`-t`).
    pub fn tag(mut self, tag: Reference) -> Self {
        self.tags.push(tag);
        self
    }

    /// An annotation.
    pub fn annotation(mut self, annotation: Annotation) -> Self {
        self.annotations.push(annotation);
        self
    }

    /// `--append`: the first tag's current index (or manifest) is the first source.
    pub fn append(mut self, yes: bool) -> Self {
        self.append = yes;
        self
    }

    /// Fetch every source and merge them ([`combine`]); nothing is pushed (`--dry-run`).
    pub async fn resolve(&self, client: &Client) -> Result<CreatedIndex, Error> {
        let mut sources = self.sources.clone();
        if self.append {
            let first = self
                .tags
                .first()
                .ok_or_else(|| invalid("--append needs a --tag whose index to add to"))?;
            sources.insert(0, Source::reference(first.clone()));
        }
        if sources.is_empty() {
            return Err(invalid("no sources specified"));
        }
        let mut repos: Vec<&Repository> = self.tags.iter().map(Reference::repository).collect();
        repos.extend(
            sources
                .iter()
                .filter_map(|s| s.reference.as_ref())
                .map(Reference::repository),
        );
        let mut distinct: Vec<&Repository> = Vec::new();
        for r in repos {
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        let default_repo = match distinct[..] {
            [one] => Some(one.clone()),
            _ => None,
        };
        let mut resolved = Vec::new();
        for s in &sources {
            resolved.push(resolve_source(client, s, default_repo.as_ref()).await?);
        }
        combine(&resolved, &self.annotations)
    }

    /// Push `index` (from [`CreateIndex::resolve`]) under every tag, first copying into
    /// each tag's repository the manifests, configs and layers it lacks.
    pub async fn push(
        &self,
        client: &Client,
        index: &CreatedIndex,
        progress: &dyn TransferProgress,
    ) -> Result<(), Error> {
        if self.tags.is_empty() {
            return Err(invalid(
                "can't push with no tags specified, please set --tag or --dry-run",
            ));
        }
        let mut by_repo: Vec<(&Repository, Vec<&str>)> = Vec::new();
        for t in &self.tags {
            let tag = t.tag().unwrap_or("latest");
            match by_repo.iter_mut().find(|(r, _)| *r == t.repository()) {
                Some((_, list)) => list.push(tag),
                None => by_repo.push((t.repository(), vec![tag])),
            }
        }
        for (repo, tags) in by_repo {
            for (d, from) in &index.entries {
                if from == repo {
                    continue;
                }
                let digest = entry_digest(d)?;
                copy_manifest(client, from, repo, &digest, progress).await?;
            }
            client
                .push_manifest_tags(repo, &tags, &index.manifest)
                .await?;
        }
        Ok(())
    }
}

fn entry_digest(d: &Map<String, Value>) -> Result<Digest, Error> {
    d.get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("an index entry has no digest"))?
        .parse()
}

/// Fetch one source: its bytes, and for an image manifest its platform (from the config
/// when no descriptor gave it).
async fn resolve_source(
    client: &Client,
    source: &Source,
    default_repo: Option<&Repository>,
) -> Result<ResolvedSource, Error> {
    let reference = match (&source.reference, &source.descriptor) {
        (Some(r), _) => r.clone(),
        (None, Some(d)) => {
            let repo = default_repo.ok_or_else(|| {
                invalid(format!(
                    "multiple repositories specified, cannot infer repository for {:?}",
                    source.input
                ))
            })?;
            Reference::with_digest(repo.clone(), entry_digest(d)?)
        }
        (None, None) => unreachable!("a source has a reference or a descriptor"),
    };
    let manifest = client.resolve(&reference).await?;
    let mut descriptor = Map::new();
    descriptor.insert("mediaType".into(), Value::from(manifest.media_type()));
    descriptor.insert("digest".into(), Value::from(manifest.digest().to_string()));
    descriptor.insert("size".into(), Value::from(manifest.size()));
    if let Some(given) = &source.descriptor {
        if given.get("digest").and_then(Value::as_str) != Some(manifest.digest().as_str()) {
            return Err(invalid(format!(
                "source {:?}: {reference} is {}, not the descriptor's digest",
                source.input,
                manifest.digest()
            )));
        }
        for (k, v) in given {
            if !matches!(k.as_str(), "mediaType" | "digest" | "size") {
                descriptor.insert(k.clone(), v.clone());
            }
        }
    }
    if manifest.kind() == ManifestKind::Image && !descriptor.contains_key("platform") {
        let Manifest::Image(m) = manifest.parse()? else {
            unreachable!("kind is Image")
        };
        let config = client
            .fetch_blob(reference.repository(), m.config())
            .await?;
        let c: Value = serde_json::from_slice(&config)
            .map_err(|e| invalid(format!("{reference}: the image config is not JSON: {e}")))?;
        let mut p = Map::new();
        for key in ["architecture", "os", "variant"] {
            if let Some(v) = c.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                p.insert(key.into(), Value::from(v));
            }
        }
        if !p.contains_key("os") || !p.contains_key("architecture") {
            return Err(invalid(format!(
                "{reference}: the image config names no os and architecture; give a descriptor with a platform"
            )));
        }
        descriptor.insert("platform".into(), Value::Object(p));
    }
    Ok(ResolvedSource {
        repository: reference.repository().clone(),
        descriptor,
        manifest,
    })
}

/// Copy manifest `digest` (an index with its manifests, or an image with its config and
/// layers) from `from` to `to`, byte for byte.
async fn copy_manifest(
    client: &Client,
    from: &Repository,
    to: &Repository,
    digest: &Digest,
    progress: &dyn TransferProgress,
) -> Result<(), Error> {
    let raw = client.fetch_manifest(from, digest).await?;
    match raw.parse()? {
        Manifest::Index(ix) => {
            for d in ix.manifests() {
                let child: Digest = d.digest().try_into()?;
                Box::pin(copy_manifest(client, from, to, &child, progress)).await?;
            }
        }
        Manifest::Image(m) => {
            copy_blob(client, from, to, m.config(), progress).await?;
            for l in m.layers() {
                // Foreign layers live at their URLs, not in the registry.
                if l.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                copy_blob(client, from, to, l, progress).await?;
            }
        }
    }
    client.push_manifest(to, None, &raw).await?;
    Ok(())
}

/// Copy blob `descriptor` from `from` to `to`: nothing when `to` has it, a mount on the same
/// registry, else a download to a temporary file and an upload.
pub(crate) async fn copy_blob(
    client: &Client,
    from: &Repository,
    to: &Repository,
    descriptor: &oci_spec::image::Descriptor,
    progress: &dyn TransferProgress,
) -> Result<PushedBlob, Error> {
    let digest: Digest = descriptor.digest().try_into()?;
    match client.mount_blob(to, &digest, from).await? {
        Some(PushedBlob::Mounted) => {
            progress.event(&crate::progress::TransferEvent::Mounted {
                digest: &digest,
                from,
            });
            return Ok(PushedBlob::Mounted);
        }
        Some(done) => return Ok(done),
        None => {}
    }
    let tmp = tempfile::NamedTempFile::new().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    client
        .pull_blob_to_file(from, descriptor, tmp.path(), &crate::progress::NoProgress)
        .await?;
    let source = BlobSource::File(tmp.path().to_owned());
    client
        .push_blob(to, &digest, descriptor.size(), &source, None, progress)
        .await
}

#[cfg(test)]
#[path = "imagetools_tests.rs"]
mod tests;
