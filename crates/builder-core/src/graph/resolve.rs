//! Resolving the images a graph starts from: a reference and a platform give the platform
//! manifest's digest (the source vertex's identity) and the image configuration (whose
//! environment, user, working directory and shell the steps on top of it run with).

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use registry_client::{Client, Platform, Reference};

use crate::engine::Error;
use crate::image::ImageConfig;

/// An image resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The digest of the platform's image manifest (`sha256:...`).
    pub manifest_digest: String,
    /// The image configuration.
    pub config: ImageConfig,
}

/// Resolves image references for the graph builder.
pub trait ImageResolver: Send + Sync {
    /// The image `reference` names for `platform`.
    ///
    /// # Errors
    /// A reference that does not parse, a registry failure, an unusable image.
    fn resolve<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
    ) -> BoxFuture<'a, Result<ResolvedImage, Error>>;
}

/// Resolves references against their registries (each reference and platform once).
#[derive(Debug)]
pub struct RegistryResolver {
    client: Client,
    memo: tokio::sync::Mutex<HashMap<(String, String), ResolvedImage>>,
}

impl RegistryResolver {
    /// A resolver using `client`.
    #[must_use]
    pub fn new(client: Client) -> Self {
        RegistryResolver {
            client,
            memo: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, r: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
        let reference: Reference = r.parse()?;
        let resolved = self.client.resolve_platform(&reference, platform).await?;
        let manifest = match resolved.manifest.parse()? {
            registry_client::Manifest::Image(m) => m,
            registry_client::Manifest::Index(_) => {
                return Err(Error::BadImage {
                    reference: r.to_owned(),
                    reason: "the platform's manifest is not an image manifest".into(),
                });
            }
        };
        let bytes = self
            .client
            .fetch_blob(reference.repository(), manifest.config())
            .await?;
        let config = ImageConfig::from_slice(&bytes).map_err(|e| Error::BadImage {
            reference: r.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(ResolvedImage {
            manifest_digest: resolved.manifest.digest().to_string(),
            config,
        })
    }
}

impl ImageResolver for RegistryResolver {
    fn resolve<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
    ) -> BoxFuture<'a, Result<ResolvedImage, Error>> {
        Box::pin(async move {
            let memo_key = (reference.to_owned(), platform.to_string());
            if let Some(r) = self.memo.lock().await.get(&memo_key) {
                return Ok(r.clone());
            }
            let r = self.fetch(reference, platform).await?;
            self.memo.lock().await.insert(memo_key, r.clone());
            Ok(r)
        })
    }
}
