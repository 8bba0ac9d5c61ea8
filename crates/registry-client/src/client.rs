//! The client: endpoints, credentials, the auth and retry loop around every request, and
//! the distribution API operations (resolve, pull, push).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use oci_spec::image::Descriptor;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWrite, AsyncWriteExt as _};
use url::Url;

use crate::auth::{self, Challenge, Scopes, TokenCache};
use crate::digest::{Digest, Hasher};
use crate::docker_config::{Credential, DockerConfig};
use crate::error::Error;
use crate::manifest::{ACCEPT_MANIFESTS, MAX_MANIFEST_SIZE, ManifestKind, RawManifest};
use crate::platform::Platform;
use crate::progress::{TransferEvent, TransferProgress};
use crate::reference::{DOCKER_HUB, Reference, Repository};
use crate::retry::{Outcome, RetryPolicy};
use crate::transport::{Body, FinalUrl, ReadError, ResponseBody, Transport};
use crate::upload::{Next, Upload, UploadError, UploadOutcome};

/// Where Docker Hub's registry API is (references say `docker.io`).
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The header registries put a manifest's or blob's digest in.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// Largest error body we read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Largest token response we read.
const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Largest blob [`Client::fetch_blob`] keeps in memory.
const MAX_IN_MEMORY_BLOB: u64 = 64 << 20;

/// Configures a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    insecure: BTreeSet<String>,
    docker_config: Option<DockerConfig>,
    credentials: BTreeMap<String, Credential>,
    retry: RetryPolicy,
    chunk_size: Option<u64>,
    user_agent: String,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            insecure: BTreeSet::new(),
            docker_config: None,
            credentials: BTreeMap::new(),
            retry: RetryPolicy::default(),
            chunk_size: None,
            user_agent: format!("rbuild/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl ClientBuilder {
    /// Talk plain HTTP to `host` (`HOST[:PORT]`, as `--insecure-registry` takes it).
    /// Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) are plain HTTP without this.
    pub fn insecure_registry(mut self, host: &str) -> Self {
        self.insecure.insert(host.to_owned());
        self
    }

    /// Read credentials from this configuration instead of `$DOCKER_CONFIG` /
    /// `~/.docker/config.json`.
    pub fn docker_config(mut self, config: DockerConfig) -> Self {
        self.docker_config = Some(config);
        self
    }

    /// Use `credential` for `registry`, whatever the Docker configuration says.
    pub fn credential(mut self, registry: &str, credential: Credential) -> Self {
        self.credentials.insert(registry.to_owned(), credential);
        self
    }

    /// How to retry failed requests.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Upload blobs in chunks of this many bytes (PATCH requests) instead of one PUT.
    pub fn chunked_uploads(mut self, chunk_size: Option<u64>) -> Self {
        self.chunk_size = chunk_size.filter(|&c| c > 0);
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = user_agent.to_owned();
        self
    }

    /// How long a connection may take to open, and a read to wait for data.
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The client. Reads the Docker configuration now unless one was given.
    pub fn build(self) -> Result<Client, Error> {
        let docker_config = match self.docker_config {
            Some(c) => c,
            None => DockerConfig::from_env()?,
        };
        let transport = Transport::new(&self.user_agent, self.connect_timeout, self.read_timeout)
            .map_err(|e| Error::Transport {
            registry: String::new(),
            repository: String::new(),
            operation: "set up HTTP".into(),
            source: e,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                insecure: self.insecure,
                docker_config,
                explicit: self.credentials,
                credentials: Mutex::new(BTreeMap::new()),
                challenges: Mutex::new(BTreeMap::new()),
                tokens: Mutex::new(TokenCache::default()),
                token_fetch: tokio::sync::Mutex::new(()),
                retry: self.retry,
                chunk_size: self.chunk_size,
            }),
        })
    }
}

/// An OCI distribution client. Cheap to clone; clones share connections, credentials and
/// tokens.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    insecure: BTreeSet<String>,
    docker_config: DockerConfig,
    explicit: BTreeMap<String, Credential>,
    credentials: Mutex<BTreeMap<String, Credential>>,
    /// What each registry answered 401 with; `None` inside: it needs no auth.
    challenges: Mutex<BTreeMap<String, Challenge>>,
    tokens: Mutex<TokenCache>,
    /// Held while a token is fetched.
    token_fetch: tokio::sync::Mutex<()>,
    retry: RetryPolicy,
    chunk_size: Option<u64>,
}

/// Where bytes to upload come from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BlobSource {
    /// A file, read again for each attempt.
    File(PathBuf),
    /// Bytes in memory.
    Bytes(Bytes),
}

/// What [`Client::push_blob`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushedBlob {
    /// The repository had it already.
    Existed,
    /// Mounted from the other repository.
    Mounted,
    /// Uploaded (after a refused mount, too).
    Uploaded,
}

/// An image resolved for one platform.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ResolvedImage {
    /// The reference, pinned to the digest of what it named (the index, if it named one).
    pub reference: Reference,
    /// The index the reference named, if it named one.
    pub index: Option<RawManifest>,
    /// The image manifest for the platform.
    pub manifest: RawManifest,
    /// The platform the index gave for the manifest (none when the reference named a
    /// manifest).
    pub platform: Option<Platform>,
}

/// One request's identity, for errors and auth.
struct Op<'a> {
    repo: &'a Repository,
    scopes: Scopes,
    what: String,
    /// Retry on a missing response and on retryable statuses.
    retry: bool,
    digest: Option<&'a Digest>,
}

impl Client {
    /// A client with default settings and credentials from the Docker configuration.
    pub fn new() -> Result<Self, Error> {
        ClientBuilder::default().build()
    }

    /// Configure a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URL of `registry`'s API: plain HTTP for loopback and insecure hosts,
    /// HTTPS otherwise; Docker Hub's API host for `docker.io`.
    pub fn endpoint(&self, registry: &str) -> Url {
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let scheme = if self.is_insecure(registry) {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{host}/"))
            .unwrap_or_else(|_| unreachable!("validated registry host {host}"))
    }

    fn is_insecure(&self, registry: &str) -> bool {
        if self.inner.insecure.contains(registry) {
            return true;
        }
        let host = host_without_port(registry);
        if self.inner.insecure.contains(host) {
            return true;
        }
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    // ------------------------------------------------------------------ resolve

    /// Fetch what `reference` names (an index or an image manifest), keeping its exact
    /// bytes. A digest in the reference is checked against the bytes.
    pub async fn resolve(&self, reference: &Reference) -> Result<RawManifest, Error> {
        self.get_manifest(
            reference.repository(),
            reference.target(),
            reference.digest(),
        )
        .await
    }

    /// Fetch the manifest or index `digest` of `repo`, checking its digest.
    pub async fn fetch_manifest(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<RawManifest, Error> {
        self.get_manifest(repo, digest.as_str(), Some(digest)).await
    }

    /// Resolve `reference` to the image manifest for `platform`: through its index when it
    /// names one, directly when it names a manifest.
    pub async fn resolve_platform(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, Error> {
        let top = self.resolve(reference).await?;
        let pinned = reference.pinned(top.digest().clone());
        if top.kind() == ManifestKind::Image {
            return Ok(ResolvedImage {
                reference: pinned,
                index: None,
                manifest: top,
                platform: None,
            });
        }
        let crate::manifest::Manifest::Index(index) = top.parse()? else {
            unreachable!("kind is Index");
        };
        let Some(desc) = platform.select(&index) else {
            let mut available: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|d| {
                    d.platform()
                        .as_ref()
                        .and_then(|p| Platform::from_oci(p).ok())
                })
                .map(|p| p.to_string())
                .collect();
            available.sort();
            available.dedup();
            return Err(Error::PlatformNotFound {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available,
            });
        };
        let digest = Digest::try_from(desc.digest())?;
        let manifest = self.fetch_manifest(reference.repository(), &digest).await?;
        if manifest.kind() != ManifestKind::Image {
            return Err(Error::Protocol {
                registry: reference.registry().to_owned(),
                repository: reference.repository().path().to_owned(),
                reason: format!(
                    "index entry {digest} for {platform} is an index, not an image manifest"
                ),
            });
        }
        let platform = desc
            .platform()
            .as_ref()
            .and_then(|p| Platform::from_oci(p).ok());
        Ok(ResolvedImage {
            reference: pinned,
            index: Some(top),
            manifest,
            platform,
        })
    }

    async fn get_manifest(
        &self,
        repo: &Repository,
        target: &str,
        expected: Option<&Digest>,
    ) -> Result<RawManifest, Error> {
        let op = Op {
            repo,
            scopes: Scopes::pull(repo),
            what: format!("GET manifest {target}"),
            retry: true,
            digest: expected,
        };
        let url = self.url(repo, &format!("manifests/{target}"));
        let mut response = self
            .send(&op, &crate::progress::NoProgress, || {
                let mut h = HeaderMap::new();
                h.insert(ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
                (Method::GET, url.clone(), h, Body::Empty)
            })
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_error(&op, response).await);
        }
        if content_length(response.headers()).is_some_and(|l| l > MAX_MANIFEST_SIZE) {
            return Err(too_large(
                repo,
                format!("manifest {target}"),
                MAX_MANIFEST_SIZE,
            ));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header_digest = response
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = self
            .read_body(&op, response.body_mut(), MAX_MANIFEST_SIZE)
            .await?;
        let raw = RawManifest::with_digest(bytes, content_type.as_deref(), expected)?;
        let claimed = expected.or(header_digest
            .as_ref()
            .filter(|d| d.algorithm() == raw.digest().algorithm()));
        if let Some(want) = claimed {
            if want != raw.digest() {
                return Err(Error::DigestMismatch {
                    registry: repo.registry().to_owned(),
                    repository: repo.path().to_owned(),
                    expected: want.clone(),
                    actual: raw.digest().clone(),
                });
            }
        }
        Ok(raw)
    }

    // ------------------------------------------------------------------ pull

    /// Does `repo` have blob `digest`? Its size if so.
    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, Error> {
        let op = Op {
            repo,
            scopes: Scopes::pull(repo),
            what: format!("HEAD blob {digest}"),
            retry: true,
            digest: Some(digest),
        };
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self
            .send(&op, &crate::progress::NoProgress, || {
                (Method::HEAD, url.clone(), HeaderMap::new(), Body::Empty)
            })
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(content_length(response.headers()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(&op, response).await),
        }
    }

    /// A small blob (an image config) in memory, verified. At most 64 MiB.
    pub async fn fetch_blob(
        &self,
        repo: &Repository,
        descriptor: &Descriptor,
    ) -> Result<Bytes, Error> {
        let digest = Digest::try_from(descriptor.digest())?;
        let size = descriptor.size();
        if size > MAX_IN_MEMORY_BLOB {
            return Err(too_large(
                repo,
                format!("blob {digest} ({size} bytes, fetched into memory)"),
                MAX_IN_MEMORY_BLOB,
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.pull_blob(repo, descriptor, &mut buf, &crate::progress::NoProgress)
            .await?;
        Ok(Bytes::from(buf))
    }

    /// Stream blob `descriptor` of `repo` into `dst`, verifying its size and digest. A
    /// dropped connection is resumed with a `Range` request where it stopped.
    ///
    /// The bytes are written as they arrive: only `Ok` says they are the blob. On `Err` the
    /// caller must discard what was written.
    pub async fn pull_blob<W>(
        &self,
        repo: &Repository,
        descriptor: &Descriptor,
        dst: &mut W,
        progress: &dyn TransferProgress,
    ) -> Result<(), Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let digest = Digest::try_from(descriptor.digest())?;
        let hasher = digest.hasher();
        self.pull_into(repo, &digest, descriptor.size(), dst, hasher, 0, progress)
            .await?;
        dst.flush().await.map_err(|source| Error::Write {
            digest: digest.clone(),
            source,
        })
    }

    /// Pull blob `descriptor` of `repo` into the file at `path` (a temporary path the
    /// caller chose), verify it and sync it to disk; the caller then renames it into place.
    ///
    /// A file already at `path` is taken as the start of the blob (an earlier pull that
    /// was interrupted) and only the rest is downloaded. When the content turns out wrong
    /// (digest or size), the file is removed. When the pull fails otherwise, the part
    /// received stays for a later call to resume.
    pub async fn pull_blob_to_file(
        &self,
        repo: &Repository,
        descriptor: &Descriptor,
        path: &Path,
        progress: &dyn TransferProgress,
    ) -> Result<(), Error> {
        let digest = Digest::try_from(descriptor.digest())?;
        let size = descriptor.size();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .await
            .map_err(io)?;
        // what an earlier attempt left: hash it and go on from its end
        let mut hasher = digest.hasher();
        let mut have = file.metadata().await.map_err(io)?.len();
        if have > size {
            file.set_len(0).await.map_err(io)?;
            have = 0;
        }
        if have > 0 {
            let mut buf = vec![0u8; 1 << 20];
            let mut left = have;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = file.read(&mut buf[..want]).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        file.seek(std::io::SeekFrom::Start(have))
            .await
            .map_err(io)?;
        let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let result = self
            .pull_into(repo, &digest, size, &mut writer, hasher, have, progress)
            .await;
        let result = match result {
            Ok(()) => async {
                writer.flush().await?;
                writer.get_ref().sync_all().await
            }
            .await
            .map_err(io),
            Err(e) => {
                let _ = writer.flush().await;
                Err(e)
            }
        };
        if let Err(Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) = &result {
            drop(writer);
            tokio::fs::remove_file(path).await.map_err(io)?;
        }
        result
    }

    /// The pull loop: GET (with `Range` from `offset`), stream into `dst` while hashing,
    /// resume after drops, verify at the end.
    #[allow(clippy::too_many_arguments)]
    async fn pull_into<W>(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        dst: &mut W,
        mut hasher: Hasher,
        mut offset: u64,
        progress: &dyn TransferProgress,
    ) -> Result<(), Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let op = Op {
            repo,
            scopes: Scopes::pull(repo),
            what: format!("GET blob {digest}"),
            retry: true,
            digest: Some(digest),
        };
        let mismatch = |actual: u64| Error::SizeMismatch {
            registry: repo.registry().to_owned(),
            repository: repo.path().to_owned(),
            digest: digest.clone(),
            expected: size,
            actual,
        };
        progress.event(&TransferEvent::Started {
            digest,
            total: size,
            offset,
        });
        let mut failures = 0u32; // drops in a row without progress
        loop {
            if offset == size && size > 0 {
                break;
            }
            let start = offset;
            let mut response = self
                .send(&op, progress, || {
                    let mut h = HeaderMap::new();
                    if start > 0 {
                        h.insert(
                            RANGE,
                            HeaderValue::from_str(&format!("bytes={start}-"))
                                .unwrap_or_else(|_| unreachable!()),
                        );
                    }
                    (Method::GET, url.clone(), h, Body::Empty)
                })
                .await?;
            // how much of the body to skip: a server that ignores Range sends it all again
            let mut skip = match response.status() {
                StatusCode::OK => start,
                StatusCode::PARTIAL_CONTENT if start > 0 => {
                    let from = response
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if from != Some(start) {
                        return Err(self.protocol(
                            repo,
                            format!(
                                "asked for {digest} from byte {start}, got Content-Range {from:?}"
                            ),
                        ));
                    }
                    0
                }
                StatusCode::RANGE_NOT_SATISFIABLE if start >= size => return Err(mismatch(start)),
                _ => return Err(self.status_error(&op, response).await),
            };
            let body = response.body_mut();
            let dropped = loop {
                match body.chunk().await {
                    Ok(Some(mut chunk)) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64);
                            skip -= n;
                            chunk = chunk.slice(n as usize..);
                            if chunk.is_empty() {
                                continue;
                            }
                        }
                        if offset + chunk.len() as u64 > size {
                            return Err(mismatch(offset + chunk.len() as u64));
                        }
                        hasher.update(&chunk);
                        dst.write_all(&chunk).await.map_err(|source| Error::Write {
                            digest: digest.clone(),
                            source,
                        })?;
                        offset += chunk.len() as u64;
                        progress.event(&TransferEvent::Progress {
                            digest,
                            done: offset,
                            total: size,
                        });
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            match dropped {
                None if offset == size => break,
                None if skip > 0 => {
                    return Err(self.protocol(
                        repo,
                        format!("blob {digest}: body ended before byte {start}"),
                    ));
                }
                // short body or dropped connection: go on from where it stopped
                reason => {
                    failures = if offset > start { 1 } else { failures + 1 };
                    let reason = reason
                        .unwrap_or_else(|| format!("body ended after {offset} of {size} bytes"));
                    let Some(delay) =
                        self.inner
                            .retry
                            .delay(failures, &Outcome::NoResponse, SystemTime::now())
                    else {
                        return Err(Error::Transport {
                            registry: repo.registry().to_owned(),
                            repository: repo.path().to_owned(),
                            operation: op.what.clone(),
                            source: reason.into(),
                        });
                    };
                    progress.event(&TransferEvent::Retrying {
                        digest: Some(digest),
                        attempt: failures,
                        delay,
                        reason: &reason,
                    });
                    tokio::time::sleep(delay).await;
                    progress.event(&TransferEvent::Resumed { digest, offset });
                }
            }
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                registry: repo.registry().to_owned(),
                repository: repo.path().to_owned(),
                expected: digest.clone(),
                actual,
            });
        }
        progress.event(&TransferEvent::Done {
            digest,
            total: size,
        });
        Ok(())
    }

    // ------------------------------------------------------------------ push

    /// Puts blob `digest` into `repo` without sending its bytes: `Existed` when the
    /// repository has it, `Mounted` when the registry mounted it from `from` (another
    /// repository of the same registry), `None` when it did not (the blob is not in `from`,
    /// or the registry does not mount): the caller then needs the bytes. The upload session
    /// a refused mount opens is cancelled.
    pub async fn mount_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<Option<PushedBlob>, Error> {
        if self.blob_exists(repo, digest).await?.is_some() {
            return Ok(Some(PushedBlob::Existed));
        }
        if from.registry() != repo.registry() || from.path() == repo.path() {
            return Ok(None);
        }
        let op = Op {
            repo,
            scopes: Scopes::push_mount(repo, from),
            what: format!("mount blob {digest}"),
            retry: true,
            digest: Some(digest),
        };
        let mut url = self.url(repo, "blobs/uploads/");
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.path());
        let response = self
            .send(&op, &crate::progress::NoProgress, || {
                let mut h = HeaderMap::new();
                h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                (Method::POST, url.clone(), h, Body::Empty)
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(Some(PushedBlob::Mounted)),
            StatusCode::ACCEPTED => {
                // A session was opened for an upload we will not make: cancel it (best
                // effort; the registry expires it anyway).
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| self.endpoint(repo.registry()).join(l).ok());
                if let Some(loc) = location {
                    let cancel = Op {
                        retry: false,
                        what: format!("cancel upload of {digest}"),
                        ..op
                    };
                    let _ = self
                        .send(&cancel, &crate::progress::NoProgress, || {
                            (Method::DELETE, loc.clone(), HeaderMap::new(), Body::Empty)
                        })
                        .await;
                }
                Ok(None)
            }
            _ => Err(self.status_error(&op, response).await),
        }
    }

    /// Push blob `digest` (`size` bytes, read from `source`) to `repo`. Skipped when the
    /// repository has it; mounted from `mount_from` when that is another repository of the
    /// same registry that has it (a registry that cannot mount answers 202 and the blob is
    /// uploaded); uploaded otherwise, in one PUT or in chunks
    /// ([`ClientBuilder::chunked_uploads`]). An interrupted upload resumes where the
    /// registry says it stopped.
    pub async fn push_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        source: &BlobSource,
        mount_from: Option<&Repository>,
        progress: &dyn TransferProgress,
    ) -> Result<PushedBlob, Error> {
        if let BlobSource::Bytes(b) = source {
            if b.len() as u64 != size {
                return Err(Error::SizeMismatch {
                    registry: repo.registry().to_owned(),
                    repository: repo.path().to_owned(),
                    digest: digest.clone(),
                    expected: size,
                    actual: b.len() as u64,
                });
            }
        }
        if self.blob_exists(repo, digest).await?.is_some() {
            progress.event(&TransferEvent::Exists { digest });
            return Ok(PushedBlob::Existed);
        }
        let mount_from =
            mount_from.filter(|m| m.registry() == repo.registry() && m.path() != repo.path());
        let scopes = match mount_from {
            Some(from) => Scopes::push_mount(repo, from),
            None => Scopes::push(repo),
        };
        let mut upload = Upload::new(
            self.endpoint(repo.registry()),
            repo.path(),
            digest.clone(),
            size,
            self.inner.chunk_size,
            mount_from.map(Repository::path),
        );
        let mut failures = 0u32;
        let mut started = false;
        // after an interruption, until the registry says where the upload stands
        let mut resuming = false;
        loop {
            let step = match upload.next() {
                Next::Done(UploadOutcome::Mounted) => {
                    if let Some(from) = mount_from {
                        progress.event(&TransferEvent::Mounted { digest, from });
                    }
                    return Ok(PushedBlob::Mounted);
                }
                Next::Done(UploadOutcome::Uploaded) => {
                    progress.event(&TransferEvent::Done {
                        digest,
                        total: size,
                    });
                    return Ok(PushedBlob::Uploaded);
                }
                Next::Send(step) => step,
            };
            if step.body.is_some() && !started {
                started = true;
                progress.event(&TransferEvent::Started {
                    digest,
                    total: size,
                    offset: upload.confirmed(),
                });
            }
            let op = Op {
                repo,
                scopes: scopes.clone(),
                what: format!("{} {digest}", step.what),
                retry: false,
                digest: Some(digest),
            };
            let sent = Arc::new(AtomicU64::new(0));
            let base_done = step.body.as_ref().map_or(0, |r| r.start);
            let make = || {
                let mut h = HeaderMap::new();
                for (k, v) in &step.headers {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        h.insert(k.clone(), v);
                    }
                }
                let body = match (&step.body, source) {
                    (None, _) => Body::Empty,
                    (Some(r), BlobSource::Bytes(b)) => {
                        Body::Bytes(b.slice(r.start as usize..r.end as usize))
                    }
                    (Some(r), BlobSource::File(p)) => Body::File {
                        path: p.clone(),
                        range: r.clone(),
                        sent: sent.clone(),
                    },
                };
                (step.method.clone(), step.url.clone(), h, body)
            };
            let result = {
                let send = self.send(&op, progress, make);
                tokio::pin!(send);
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        r = &mut send => break r,
                        _ = tick.tick() => {
                            let n = sent.load(Ordering::Relaxed);
                            if n > 0 {
                                progress.event(&TransferEvent::Progress { digest, done: base_done + n, total: size });
                            }
                        }
                    }
                }
            };
            let reason = match result {
                Ok(response) if crate::retry::is_retryable_status(response.status().as_u16()) => {
                    let status = response.status().as_u16();
                    match self.inner.retry.delay(
                        failures + 1,
                        &Outcome::Status(status, response.headers()),
                        SystemTime::now(),
                    ) {
                        Some(delay) => Some((format!("HTTP {status}"), delay)),
                        None => return Err(self.status_error(&op, response).await),
                    }
                }
                Ok(response) => match upload.on_response(response.status(), response.headers()) {
                    Ok(()) => {
                        failures = 0;
                        if resuming && step.method == Method::GET {
                            resuming = false;
                            progress.event(&TransferEvent::Resumed {
                                digest,
                                offset: upload.confirmed(),
                            });
                        }
                        if let Some(r) = &step.body {
                            progress.event(&TransferEvent::Progress {
                                digest,
                                done: r.end.max(upload.confirmed()),
                                total: size,
                            });
                        }
                        None
                    }
                    Err(UploadError::Status(_)) => {
                        return Err(self.status_error(&op, response).await);
                    }
                    Err(UploadError::Protocol(reason)) => return Err(self.protocol(repo, reason)),
                },
                Err(Error::Transport { source, .. }) => {
                    match self.inner.retry.delay(
                        failures + 1,
                        &Outcome::NoResponse,
                        SystemTime::now(),
                    ) {
                        Some(delay) => Some((source.to_string(), delay)),
                        None => {
                            return Err(Error::Transport {
                                registry: repo.registry().to_owned(),
                                repository: repo.path().to_owned(),
                                operation: op.what,
                                source,
                            });
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            if let Some((reason, delay)) = reason {
                failures += 1;
                progress.event(&TransferEvent::Retrying {
                    digest: Some(digest),
                    attempt: failures,
                    delay,
                    reason: &reason,
                });
                tokio::time::sleep(delay).await;
                upload.on_interrupted();
                resuming = matches!(upload.next(), Next::Send(s) if s.method == Method::GET);
            }
        }
    }

    /// Push `manifest` (exact bytes, its media type) to `repo` under `tag`, or under its
    /// digest when `tag` is `None`. Returns the digest.
    ///
    /// A `400 DIGEST_INVALID` answer is retried with the client's backoff: the digest is
    /// the hash of the very bytes sent, so the registry did not compute it from them. The
    /// reference registry (distribution, filesystem driver) answers so when it verifies a
    /// referenced blob whose repository link another client is rewriting at that moment
    /// (two runners pushing the same layer to one repository): the link file is read
    /// while empty. A registry that still says so after the retries gets the error.
    pub async fn push_manifest(
        &self,
        repo: &Repository,
        tag: Option<&str>,
        manifest: &RawManifest,
    ) -> Result<Digest, Error> {
        let mut attempt = 1;
        loop {
            match self.push_manifest_once(repo, tag, manifest).await {
                Err(e) if e.status() == Some(400) && e.code() == Some("DIGEST_INVALID") => {
                    let delay =
                        self.inner
                            .retry
                            .delay(attempt, &Outcome::NoResponse, SystemTime::now());
                    match delay {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return Err(e),
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn push_manifest_once(
        &self,
        repo: &Repository,
        tag: Option<&str>,
        manifest: &RawManifest,
    ) -> Result<Digest, Error> {
        let target = tag.unwrap_or(manifest.digest().as_str()).to_owned();
        let op = Op {
            repo,
            scopes: Scopes::push(repo),
            what: format!("PUT manifest {target}"),
            retry: true,
            digest: Some(manifest.digest()),
        };
        let url = self.url(repo, &format!("manifests/{target}"));
        let media_type = HeaderValue::from_str(manifest.media_type()).map_err(|_| {
            self.protocol(
                repo,
                format!(
                    "media type {:?} is not a header value",
                    manifest.media_type()
                ),
            )
        })?;
        let response = self
            .send(&op, &crate::progress::NoProgress, || {
                let mut h = HeaderMap::new();
                h.insert(CONTENT_TYPE, media_type.clone());
                (
                    Method::PUT,
                    url.clone(),
                    h,
                    Body::Bytes(manifest.bytes().clone()),
                )
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.status_error(&op, response).await);
        }
        let stored = response
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(stored) = stored.filter(|d| d.algorithm() == manifest.digest().algorithm()) {
            if &stored != manifest.digest() {
                return Err(Error::DigestMismatch {
                    registry: repo.registry().to_owned(),
                    repository: repo.path().to_owned(),
                    expected: manifest.digest().clone(),
                    actual: stored,
                });
            }
        }
        Ok(manifest.digest().clone())
    }

    /// Push `manifest` under each of `tags` (by digest alone when `tags` is empty).
    pub async fn push_manifest_tags(
        &self,
        repo: &Repository,
        tags: &[&str],
        manifest: &RawManifest,
    ) -> Result<Digest, Error> {
        if tags.is_empty() {
            return self.push_manifest(repo, None, manifest).await;
        }
        for tag in tags {
            Reference::with_tag(repo.clone(), tag)?;
            self.push_manifest(repo, Some(tag), manifest).await?;
        }
        Ok(manifest.digest().clone())
    }

    // ------------------------------------------------------------------ the request loop

    fn url(&self, repo: &Repository, rest: &str) -> Url {
        let base = self.endpoint(repo.registry());
        base.join(&format!("v2/{}/{rest}", repo.path()))
            .unwrap_or(base)
    }

    /// Send a request made by `make` (called again for each attempt), with auth (one fresh
    /// token on a 401) and, when `op.retry`, retries on missing responses and retryable
    /// statuses. Any other status is returned for the caller to judge.
    async fn send<F>(
        &self,
        op: &Op<'_>,
        progress: &dyn TransferProgress,
        make: F,
    ) -> Result<http::Response<ResponseBody>, Error>
    where
        F: Fn() -> (Method, Url, HeaderMap, Body),
    {
        let registry = op.repo.registry();
        let mut attempt = 0u32;
        let mut rechallenged = false;
        loop {
            attempt += 1;
            let (method, url, mut headers, body) = make();
            let sent_token = self.authorize(op, &mut headers).await?;
            let asked = url.clone();
            let mut request = Request::builder().method(method).uri(url.as_str());
            if let Some(h) = request.headers_mut() {
                h.extend(headers);
            }
            let request = request
                .body(body)
                .map_err(|e| self.protocol(op.repo, format!("building {}: {e}", op.what)))?;
            let (reason, delay) = match self.inner.transport.send(request).await {
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && !came_from(&response, &asked) =>
                {
                    // a redirect led elsewhere and that host wants credentials: they are
                    // the registry's, so it gets none
                    let at = response
                        .extensions()
                        .get::<FinalUrl>()
                        .map(|u| u.0.to_string())
                        .unwrap_or_default();
                    return Err(Error::Auth {
                        registry: registry.to_owned(),
                        reason: format!(
                            "{}: redirected to {at}, which asks for credentials; \
                             credentials for {registry} are only sent to {registry}",
                            op.what
                        ),
                    });
                }
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !rechallenged => {
                    rechallenged = true;
                    attempt -= 1; // a challenge is not a failure
                    self.on_unauthorized(op, response.headers(), sent_token.as_deref())
                        .await?;
                    continue;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    if !op.retry || !crate::retry::is_retryable_status(status) {
                        return Ok(response);
                    }
                    match self.inner.retry.delay(
                        attempt,
                        &Outcome::Status(status, response.headers()),
                        SystemTime::now(),
                    ) {
                        Some(d) => (format!("HTTP {status}"), d),
                        None => return Ok(response),
                    }
                }
                Err(source) => {
                    let delay = if op.retry {
                        self.inner
                            .retry
                            .delay(attempt, &Outcome::NoResponse, SystemTime::now())
                    } else {
                        None
                    };
                    match delay {
                        Some(d) => (source.to_string(), d),
                        None => {
                            return Err(Error::Transport {
                                registry: registry.to_owned(),
                                repository: op.repo.path().to_owned(),
                                operation: op.what.clone(),
                                source,
                            });
                        }
                    }
                }
            };
            progress.event(&TransferEvent::Retrying {
                digest: op.digest,
                attempt,
                delay,
                reason: &reason,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Add the `Authorization` header the registry wants (from what its last challenge
    /// said); returns the bearer token used, if any.
    async fn authorize(
        &self,
        op: &Op<'_>,
        headers: &mut HeaderMap,
    ) -> Result<Option<String>, Error> {
        let registry = op.repo.registry();
        let challenge = self
            .inner
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
            .cloned();
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        let credential = self.credential(registry).await?;
        match (&challenge, &credential) {
            (_, Credential::RegistryToken(token)) => {
                if let Some(v) = auth::bearer_header(token) {
                    headers.insert(AUTHORIZATION, v);
                }
                Ok(Some(token.clone()))
            }
            (Challenge::Basic, _) => {
                if let Some(v) = auth::basic_header(&credential) {
                    headers.insert(AUTHORIZATION, v);
                }
                Ok(None)
            }
            (Challenge::Bearer { realm, service, .. }, _) => {
                let token = self
                    .token_for(op, realm, service.as_deref(), &op.scopes, &credential)
                    .await?;
                if let Some(v) = auth::bearer_header(&token) {
                    headers.insert(AUTHORIZATION, v);
                }
                Ok(Some(token))
            }
        }
    }

    /// A 401: remember the challenge, forget the token that was refused.
    async fn on_unauthorized(
        &self,
        op: &Op<'_>,
        headers: &HeaderMap,
        sent_token: Option<&str>,
    ) -> Result<(), Error> {
        let registry = op.repo.registry();
        let value = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(challenge) = auth::parse_challenge(value) else {
            return Err(Error::Auth {
                registry: registry.to_owned(),
                reason: format!(
                    "{}: HTTP 401 without a challenge we understand (WWW-Authenticate: {value:?})",
                    op.what
                ),
            });
        };
        if let Some(t) = sent_token {
            self.inner
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .invalidate(registry, t);
        }
        let mut scopes = op.scopes.clone();
        if let Challenge::Bearer { scope: Some(s), .. } = &challenge {
            scopes.add_challenge_scope(s);
        }
        self.inner
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_owned(), challenge.clone());
        // get the token now, for the scopes the registry named as well as ours
        if let Challenge::Bearer { realm, service, .. } = &challenge {
            let credential = self.credential(registry).await?;
            if !matches!(credential, Credential::RegistryToken(_)) {
                self.token_for(op, realm, service.as_deref(), &scopes, &credential)
                    .await?;
            }
        }
        Ok(())
    }

    /// A cached token covering `scopes`, else a new one. One fetch at a time, so that
    /// concurrent requests that all lack a token wait for the first one's instead of each
    /// asking the token service.
    async fn token_for(
        &self,
        op: &Op<'_>,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        credential: &Credential,
    ) -> Result<String, Error> {
        let cached = |this: &Self| {
            this.inner
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(op.repo.registry(), scopes, Instant::now())
                .map(|t| t.value.clone())
        };
        if let Some(t) = cached(self) {
            return Ok(t);
        }
        let _one_at_a_time = self.inner.token_fetch.lock().await;
        if let Some(t) = cached(self) {
            return Ok(t);
        }
        self.fetch_token(op, realm, service, scopes, credential)
            .await
    }

    async fn fetch_token(
        &self,
        op: &Op<'_>,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        credential: &Credential,
    ) -> Result<String, Error> {
        let registry = op.repo.registry();
        let auth_err = |reason: String| Error::Auth {
            registry: registry.to_owned(),
            reason,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request =
                auth::token_request(realm, service, scopes, credential).map_err(auth_err)?;
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Body::Bytes(Bytes::from(body)));
            let now = Instant::now();
            let outcome = match self.inner.transport.send(request).await {
                Ok(mut response) => {
                    let status = response.status();
                    let body = response.body_mut().read_to_end(MAX_TOKEN_BODY).await;
                    if matches!(body, Err(ReadError::TooLarge)) {
                        return Err(Error::TooLarge {
                            registry: registry.to_owned(),
                            repository: op.repo.path().to_owned(),
                            what: format!("the token response of {realm}"),
                            limit: MAX_TOKEN_BODY,
                        });
                    }
                    match (status, body) {
                        (StatusCode::OK, Ok(bytes)) => {
                            let token = auth::parse_token_response(&bytes, now)
                                .map_err(|r| auth_err(format!("token service {realm}: {r}")))?;
                            let value = token.value.clone();
                            self.inner
                                .tokens
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(registry, scopes.clone(), token, now);
                            return Ok(value);
                        }
                        (s, body) if crate::retry::is_retryable_status(s.as_u16()) => {
                            let h = response.headers().clone();
                            let reason = format!("token service {realm}: HTTP {}", s.as_u16());
                            let _ = body;
                            (
                                self.inner.retry.delay(
                                    attempt,
                                    &Outcome::Status(s.as_u16(), &h),
                                    SystemTime::now(),
                                ),
                                reason,
                            )
                        }
                        (s, body) => {
                            let text = body
                                .map(|b| {
                                    String::from_utf8_lossy(&b[..b.len().min(300)])
                                        .trim()
                                        .to_owned()
                                })
                                .unwrap_or_default();
                            return Err(auth_err(format!(
                                "token service {realm} for {scopes}: HTTP {}: {text}",
                                s.as_u16()
                            )));
                        }
                    }
                }
                Err(e) => (
                    self.inner
                        .retry
                        .delay(attempt, &Outcome::NoResponse, SystemTime::now()),
                    format!("token service {realm}: {e}"),
                ),
            };
            match outcome {
                (Some(delay), _) => tokio::time::sleep(delay).await,
                (None, reason) => return Err(auth_err(reason)),
            }
        }
    }

    /// The credential for `registry`: given to the builder, else from the Docker
    /// configuration (running a helper at most once per registry).
    async fn credential(&self, registry: &str) -> Result<Credential, Error> {
        if let Some(c) = self.inner.explicit.get(registry) {
            return Ok(c.clone());
        }
        if let Some(c) = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(c.clone());
        }
        let inner = self.inner.clone();
        let reg = registry.to_owned();
        let credential =
            tokio::task::spawn_blocking(move || inner.docker_config.credential_for(&reg))
                .await
                .map_err(|e| Error::Auth {
                    registry: registry.to_owned(),
                    reason: format!("credential lookup panicked: {e}"),
                })??;
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_owned(), credential.clone());
        Ok(credential)
    }

    async fn read_body(
        &self,
        op: &Op<'_>,
        body: &mut ResponseBody,
        limit: u64,
    ) -> Result<Bytes, Error> {
        body.read_to_end(limit).await.map_err(|e| match e {
            ReadError::TooLarge => too_large(op.repo, format!("{}: the response", op.what), limit),
            ReadError::Transport(source) => Error::Transport {
                registry: op.repo.registry().to_owned(),
                repository: op.repo.path().to_owned(),
                operation: op.what.clone(),
                source,
            },
        })
    }

    /// The error for an unexpected status, with the registry's error code and message.
    async fn status_error(&self, op: &Op<'_>, mut response: http::Response<ResponseBody>) -> Error {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_end(MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let (code, message) = parse_error_body(&body);
        Error::Registry {
            registry: op.repo.registry().to_owned(),
            repository: op.repo.path().to_owned(),
            operation: op.what.clone(),
            status,
            code,
            message,
        }
    }

    fn protocol(&self, repo: &Repository, reason: String) -> Error {
        Error::Protocol {
            registry: repo.registry().to_owned(),
            repository: repo.path().to_owned(),
            reason,
        }
    }
}

/// The first `{"errors":[{"code","message"}]}` entry, or the start of a non-JSON body.
fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = e.errors.into_iter().next() {
            return (first.code, first.message.unwrap_or_default());
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    (None, text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn too_large(repo: &Repository, what: String, limit: u64) -> Error {
    Error::TooLarge {
        registry: repo.registry().to_owned(),
        repository: repo.path().to_owned(),
        what,
        limit,
    }
}

/// Whether `response` came from the origin of `asked` (no redirect left it).
fn came_from(response: &http::Response<ResponseBody>, asked: &Url) -> bool {
    response
        .extensions()
        .get::<FinalUrl>()
        .is_none_or(|u| crate::transport::same_origin(&u.0, asked))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn host_without_port(registry: &str) -> &str {
    if let Some(v6) = registry.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::builder()
            .docker_config(DockerConfig::empty())
            .insecure_registry("my.lan:5000")
            .insecure_registry("plain.example")
            .build()
            .unwrap()
    }

    /// The futures can move between threads (tokio::spawn).
    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let c = client();
        let r: Reference = "127.0.0.1:5000/x".parse().unwrap();
        let d = Digest::sha256_of(b"");
        is_send(&c.resolve(&r));
        is_send(&c.push_blob(
            r.repository(),
            &d,
            0,
            &BlobSource::Bytes(Bytes::new()),
            None,
            &crate::progress::NoProgress,
        ));
        let mut sink = Vec::new();
        let desc = Descriptor::new(oci_spec::image::MediaType::ImageLayerGzip, 0, d.to_oci());
        is_send(&c.pull_blob(
            r.repository(),
            &desc,
            &mut sink,
            &crate::progress::NoProgress,
        ));
    }

    #[test]
    fn endpoints() {
        let c = client();
        for (registry, url) in [
            ("docker.io", "https://registry-1.docker.io/"),
            ("127.0.0.1:5000", "http://127.0.0.1:5000/"),
            ("127.1.2.3", "http://127.1.2.3/"),
            ("localhost:5000", "http://localhost:5000/"),
            ("[::1]:5000", "http://[::1]:5000/"),
            ("my.lan:5000", "http://my.lan:5000/"),
            ("my.lan:6000", "https://my.lan:6000/"),
            ("plain.example:443", "http://plain.example:443/"),
            ("ghcr.example", "https://ghcr.example/"),
        ] {
            assert_eq!(c.endpoint(registry).as_str(), url, "{registry}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            parse_error_body(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            (Some("MANIFEST_UNKNOWN".into()), "manifest unknown".into())
        );
        assert_eq!(
            parse_error_body(b"<html>\n  Bad   Gateway</html>"),
            (None, "<html> Bad Gateway</html>".into())
        );
        assert_eq!(parse_error_body(b""), (None, String::new()));
    }
}
