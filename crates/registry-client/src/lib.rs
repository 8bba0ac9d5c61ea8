//! An OCI distribution client: image references with Docker's normalisation, registry
//! authentication (anonymous, Basic, Bearer tokens, Docker's credential configuration),
//! resolving tags to indexes and manifests with their exact bytes, platform selection,
//! verified streaming blob pulls that resume after dropped connections, and pushes that skip
//! or mount what the registry has. Retries are bounded and honour `Retry-After`.
//!
//! The protocol logic (auth challenges and token scopes, the token cache policy, the upload
//! state machine, platform selection, retry decisions) works on plain values and `http`
//! types; one private module sends requests with reqwest. The crate never prints: progress
//! is reported as [`TransferEvent`]s to a [`TransferProgress`] the caller supplies.
//!
//! [`CreateIndex`] is `docker buildx imagetools create`: it merges manifests and indexes
//! into one index (the runners of a per-platform CI pushing by digest, say) and pushes it,
//! mounting or copying what the target repository lacks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), registry_client::Error> {
//! use registry_client::{Client, NoProgress, Platform, Reference};
//! let client = Client::new()?;
//! let reference: Reference = "127.0.0.1:5000/library/node:20-slim".parse()?;
//! let image = client.resolve_platform(&reference, &"linux/arm64".parse::<Platform>()?).await?;
//! # let _ = image; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod client;
mod digest;
mod docker_config;
mod error;
mod imagetools;
mod inspect;
mod manifest;
mod platform;
mod progress;
mod reference;
mod retry;
mod transport;
mod upload;

// The public interface.
pub use client::{BlobSource, Client, ClientBuilder, PushedBlob, ResolvedImage};
pub use digest::{Digest, DigestAlgorithm, Hasher};
pub use docker_config::{Credential, DockerConfig};
pub use error::Error;
pub use imagetools::{
    Annotation, AnnotationTarget, CreateIndex, CreatedIndex, ResolvedSource, Source, combine,
};
pub use inspect::{InspectedImage, Inspection, inspect, inspect_blocking};
pub use manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Manifest, ManifestKind, OCI_INDEX, OCI_MANIFEST,
    RawManifest,
};
/// The OCI types this crate's API uses (descriptors, indexes, manifests), at the same
/// version.
pub use oci_spec;
pub use platform::Platform;
pub use progress::{NoProgress, TransferEvent, TransferProgress};
pub use reference::{Reference, Repository};
pub use retry::RetryPolicy;

/// Parsers that take registry input, exposed for the fuzz targets in `fuzz/`. Not a stable
/// API.
#[doc(hidden)]
pub mod internal {
    /// The challenge rbuild would answer in a `WWW-Authenticate` value, in `Debug` form;
    /// `None` when it understands none.
    pub fn parse_www_authenticate(value: &str) -> Option<String> {
        crate::auth::parse_challenge(value).map(|c| format!("{c:?}"))
    }

    /// Whether a token service's answer parses as a token (the reason when not).
    pub fn parse_token_response(body: &[u8]) -> Result<(), String> {
        crate::auth::parse_token_response(body, std::time::Instant::now()).map(drop)
    }
}
