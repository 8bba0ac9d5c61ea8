//! [`Build::graph`]: the build as a [`Graph`] before anything runs.

use std::sync::Arc;

use dockerfile::{BuildPlan, PlanOptions};
use layer_cache::Cache;
use registry_client::{Client, Platform};

use super::exec::{load_dockerfile, platform_spec};
use super::{Build, Error};
use crate::graph::{Graph, GraphBuilder, GraphOptions, ImageResolver, RegistryResolver};

impl Build {
    /// The build as a graph: every step of the target stage and the stages it needs, for
    /// every platform, with the cache keys the build would use. Base images are resolved
    /// against their registries and the context files that COPY reads are hashed; nothing
    /// runs and nothing is pulled but manifests and configs.
    ///
    /// # Errors
    /// What the build would report before running the same steps (a Dockerfile that does
    /// not parse, an unknown target, an image that does not resolve...).
    pub async fn graph(&self) -> Result<Graph, Error> {
        let resolver = RegistryResolver::new(self.client()?);
        self.graph_with(&resolver, &[]).await
    }

    /// [`Build::graph`] with images resolved by `resolver`, for each of `targets` (the
    /// build's own target when empty) on every platform, merged into one graph: the steps
    /// targets and platforms share are one vertex.
    ///
    /// # Errors
    /// As [`Build::graph`].
    pub async fn graph_with(
        &self,
        resolver: &dyn ImageResolver,
        targets: &[&str],
    ) -> Result<Graph, Error> {
        let (name, text, df) = load_dockerfile(self)?;
        let host = Platform::host();
        let platforms = if self.platforms.is_empty() {
            vec![host.clone()]
        } else {
            self.platforms.clone()
        };
        let targets: Vec<Option<String>> = if targets.is_empty() {
            vec![self.target.clone()]
        } else {
            targets.iter().map(|t| Some((*t).to_owned())).collect()
        };
        let cache_dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(super::default_cache_dir);
        let cache = Cache::open(&cache_dir)?;
        let stat_cache = cache.stat_cache(&format!("context:{}", self.context.display()))?;
        let context = crate::copy::BuildContext::open(
            &self.context,
            self.dockerfile_path().as_deref(),
            stat_cache,
        )
        .map_err(|e| {
            super::invalid(
                "context",
                &self.context.display().to_string(),
                e.to_string(),
            )
        })?;
        let context = Arc::new(context);
        let mut builder =
            GraphBuilder::new(resolver, context.clone(), self.key_options(), &name, &text);
        for target in &targets {
            for p in &platforms {
                let mut opts = PlanOptions::new(platform_spec(p), platform_spec(&host));
                opts.build_args = self.build_args.clone();
                opts.target = target.clone();
                let plan = BuildPlan::new(&df, &opts).map_err(|source| Error::Stages {
                    file: name.clone(),
                    source: source.into(),
                })?;
                builder.add_plan(&plan, p).await?;
            }
        }
        // The hashes of the context files are kept for the build that follows.
        context
            .save()
            .map_err(|e| Error::invalid_step(e.to_string()))?;
        Ok(builder.finish())
    }

    /// The build options that enter step keys or decide whether a step may run.
    pub(crate) fn key_options(&self) -> GraphOptions {
        GraphOptions {
            network: self.network,
            allow_network_host: self.allow_network_host,
            allow_insecure: self.allow_insecure,
            extra_hosts: super::exec::extra_host_keys(&self.extra_hosts),
            run_limits: self.run_limits.clone(),
        }
    }

    /// A registry client with the build's insecure registries.
    pub(crate) fn client(&self) -> Result<Client, Error> {
        let mut client = Client::builder();
        for h in &self.insecure_registries {
            client = client.insecure_registry(h);
        }
        Ok(client.build()?)
    }
}
