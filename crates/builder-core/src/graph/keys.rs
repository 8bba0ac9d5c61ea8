//! The one derivation of step keys: a filesystem vertex's [`CacheKey`] from its definition
//! and its inputs' keys.
//!
//! The graph frontend (which describes a build before it runs) and the executor (which
//! looks each step up in the cache before running it) both call these functions, so a build
//! finds in the cache what [`Build::graph`](crate::Build::graph) says it would; in debug
//! builds the executor also checks, after a build, that every step's key is the graph's
//! (see `engine::exec::keycheck`).

use std::collections::BTreeMap;

use registry_client::Platform;
use serde::Serialize;

use super::{GraphOptions, Op};
use crate::cachekey::CacheKey;
use crate::engine::exec::{run_argv, workdir_path};
use crate::image::ImageConfig;
use crate::sandbox::{NetworkMode, RunLimits};

/// The source vertex of an image, by the digest of its platform manifest.
pub(crate) fn image(manifest_digest: &str) -> CacheKey {
    CacheKey::derive(None, "image", manifest_digest)
}

/// `FROM scratch` for `platform`.
pub(crate) fn scratch(platform: &Platform) -> CacheKey {
    CacheKey::derive(None, "scratch", &platform.to_string())
}

/// `WORKDIR` creating `dir` (cleaned, not `/`) as `user` on `parent`.
pub(crate) fn workdir(parent: &CacheKey, dir: &str, user: &str) -> CacheKey {
    CacheKey::derive(Some(parent), "workdir", &(dir, user))
}

/// `COPY`/`ADD` on `parent` with the inputs `crate::copy::cache_inputs` describes (the
/// parameters and the sources' content or source key).
pub(crate) fn copy(parent: &CacheKey, inputs: &serde_json::Value) -> CacheKey {
    CacheKey::derive(Some(parent), "copy", inputs)
}

/// The context files a `COPY`/`ADD` reads (the graph's context vertex).
pub(crate) fn context(inputs: &serde_json::Value) -> CacheKey {
    CacheKey::derive(None, "context", inputs)
}

/// Inputs of a RUN step's cache key.
#[derive(Serialize)]
pub(crate) struct RunKey<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) user: &'a str,
    pub(crate) cwd: &'a str,
    pub(crate) network: &'a str,
    pub(crate) insecure: bool,
    pub(crate) files: &'a [(String, String)],
    /// RUN --mount definitions (left out when there are none, so older keys still match).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) mounts: &'a [serde_json::Value],
    /// `--add-host` entries, `HOST=IP` (left out when there are none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) extra_hosts: &'a [String],
    /// `--ulimit`, `--shm-size` (left out when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<&'a RunLimits>,
}

/// What a `RUN` is, as its key and the sandbox see it (its mounts apart, which need the
/// keys of their `from` sources).
#[derive(Debug, Clone)]
pub(crate) struct ExecDef {
    /// The command (the shell form wrapped in the config's shell, heredocs resolved).
    pub(crate) argv: Vec<String>,
    /// The heredoc files read from `/dev/pipes/<name>`.
    pub(crate) files: Vec<(String, String)>,
    /// The environment of the key: the stage's, proxy variables left out (ARG-14).
    pub(crate) env: BTreeMap<String, String>,
    /// The user, empty for the image's default.
    pub(crate) user: String,
    /// The working directory, as a path in the stage's filesystem.
    pub(crate) cwd: String,
    pub(crate) network: NetworkMode,
    /// `--security=insecure` (allowed).
    pub(crate) insecure: bool,
}

/// A RUN's definition on a stage with `config`, `env` and `platform`, checked against the
/// build options: `Err` names what the step may not do (the reason of the step's error).
pub(crate) fn exec(
    opts: &GraphOptions,
    config: &ImageConfig,
    env: BTreeMap<String, String>,
    platform: &Platform,
    r: &dockerfile::RunInstruction,
) -> Result<ExecDef, String> {
    if !r.devices.is_empty() {
        return Err("RUN --device is not supported".into());
    }
    // Images of other systems (a `darwin` or `windows` scratch stage holding binaries that
    // linux stages built) are assembled like any other; only their RUN steps cannot run.
    if platform.os() != "linux" {
        return Err(format!(
            "RUN for platform {platform} is not supported: rbuild runs linux steps only \
             (build such a stage with FROM --platform=$BUILDPLATFORM)"
        ));
    }
    let insecure = matches!(
        r.security.as_ref().map(|s| s.value),
        Some(dockerfile::SecurityMode::Insecure)
    );
    if insecure && !opts.allow_insecure {
        return Err("security.insecure is not allowed: pass --allow security.insecure".into());
    }
    let network = match r.network.as_ref().map(|n| n.value) {
        None | Some(dockerfile::NetworkMode::Default) => opts.network,
        Some(dockerfile::NetworkMode::None) => NetworkMode::None,
        Some(dockerfile::NetworkMode::Host) if opts.allow_network_host => NetworkMode::Host,
        Some(dockerfile::NetworkMode::Host) => {
            return Err("network.host is not allowed: pass --allow network.host".into());
        }
        Some(_) => return Err("unsupported --network mode".into()),
    };
    let (argv, files) = run_argv(config, r);
    if argv.is_empty() {
        return Err("RUN needs a command".into());
    }
    Ok(ExecDef {
        argv,
        files,
        env,
        user: config.user().unwrap_or_default(),
        cwd: workdir_path(config, platform),
        network,
        insecure,
    })
}

impl ExecDef {
    /// The network as the key names it.
    pub(crate) fn network_name(&self) -> &'static str {
        match self.network {
            NetworkMode::None => "none",
            _ => "host",
        }
    }

    /// The step's key on `parent` with its mounts described by `mounts`
    /// (`engine::mounts::Prepared::key`).
    pub(crate) fn key(
        &self,
        opts: &GraphOptions,
        parent: &CacheKey,
        mounts: &[serde_json::Value],
    ) -> CacheKey {
        CacheKey::derive(
            Some(parent),
            "run",
            &RunKey {
                argv: &self.argv,
                env: &self.env,
                user: &self.user,
                cwd: &self.cwd,
                network: self.network_name(),
                insecure: self.insecure,
                files: &self.files,
                mounts,
                extra_hosts: &opts.extra_hosts,
                limits: Some(&opts.run_limits).filter(|l| !l.is_default()),
            },
        )
    }

    /// The graph's operation.
    pub(crate) fn op(&self, mounts: &[serde_json::Value]) -> Op {
        Op::Exec {
            argv: self.argv.clone(),
            env: self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            user: self.user.clone(),
            cwd: self.cwd.clone(),
            network: self.network_name().to_owned(),
            mounts: mounts.to_vec(),
        }
    }
}
