//! The `docker buildx build` flags a CI configuration copied from a buildx project passes
//! that are not about outputs or caches: `--add-host`, `--no-cache-filter`, `--pull`,
//! `--builder`, `--load`, `--ulimit`, `--shm-size`, `--keep-git-dir`, `--annotation`, and
//! `--cgroup-parent`, which rbuild refuses with a clear error rather than ignoring it.

use builder_core::Build;
use builder_core::load::LoadTarget;
use clap::Args;

use crate::exit::Failure;

/// The flags, flattened into `rbuild build`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DropinOpts {
    /// Add a custom host-to-IP mapping (format: "host:ip"; "host-gateway" is the host)
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = parse_add_host)]
    pub(crate) add_hosts: Vec<(String, String)>,

    /// Add annotation to the image (format: "[TYPE[,TYPE]:]KEY=VALUE"; types: manifest, manifest[PLATFORM], manifest-descriptor, index, index-descriptor)
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub(crate) annotations: Vec<String>,

    /// Override the configured builder instance (rbuild has one builder: accepted, with a note)
    #[arg(long = "builder", value_name = "NAME")]
    pub(crate) builder: Option<String>,

    /// Set the parent cgroup for the "RUN" instructions during build (not supported by rbuild)
    #[arg(long = "cgroup-parent", value_name = "PATH")]
    pub(crate) cgroup_parent: Option<String>,

    /// Keep the .git directory of a git context (as BUILDKIT_CONTEXT_KEEP_GIT_DIR=1)
    #[arg(long = "keep-git-dir")]
    pub(crate) keep_git_dir: bool,

    /// Shorthand for "--output=type=docker": load the image into the Docker engine ("--load=containerd": containerd's image store)
    #[arg(long = "load", value_name = "STORE", num_args = 0..=1, require_equals = true,
          default_missing_value = "docker", hide_possible_values = true,
          value_parser = ["docker", "containerd", "true", "false", "1", "0"])]
    pub(crate) load: Option<String>,

    /// Additional build contexts (e.g., name=path; docker-image://REF, oci-layout://DIR[:TAG][@DIGEST], a git or HTTP(S) URL)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub(crate) build_contexts: Vec<String>,

    /// Enable debug logging (not supported by rbuild)
    #[arg(short = 'D', long = "debug")]
    pub(crate) debug: bool,

    /// Policy configuration (not supported by rbuild)
    #[arg(long = "policy", value_name = "SPEC")]
    pub(crate) policy: Vec<String>,

    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long = "quiet")]
    pub(crate) quiet: bool,

    /// Resource limits for build containers (not supported by rbuild)
    #[arg(long = "resource", value_name = "SPEC")]
    pub(crate) resources: Vec<String>,

    /// Do not cache specified stages
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub(crate) no_cache_filter: Vec<String>,

    /// Always attempt to pull all referenced images (rbuild always resolves tags again)
    #[arg(long = "pull")]
    pub(crate) pull: bool,

    /// Shared memory size for build containers (/dev/shm of RUN steps; e.g. "128m")
    #[arg(long = "shm-size", value_name = "BYTES", value_parser = parse_shm_size)]
    pub(crate) shm_size: Option<String>,

    /// Ulimit options (format: "NAME=SOFT[:HARD]", e.g. "nofile=1024:4096")
    #[arg(long = "ulimit", value_name = "ULIMIT", value_parser = parse_ulimit)]
    pub(crate) ulimits: Vec<String>,
}

/// buildx's `HOST=IP` or `HOST:IP` (cut at the first `=`, else the first `:`).
fn parse_add_host(s: &str) -> Result<(String, String), String> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("invalid host {s}"))?;
    if host.is_empty() || ip.is_empty() {
        return Err(format!("invalid host {s}"));
    }
    // builder-core judges the address; here only its shape, for a one-line usage error.
    let _checked = Build::new("/")
        .and_then(|b| b.add_host(host, ip))
        .map_err(|e| match e {
            builder_core::Error::InvalidOption { reason, .. } => reason,
            e => e.to_string(),
        })?;
    Ok((host.to_owned(), ip.to_owned()))
}

fn parse_annotation(s: &str) -> Result<String, String> {
    builder_core::annotations::Annotation::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| match e {
            builder_core::Error::InvalidOption { reason, .. } => reason,
            e => e.to_string(),
        })
}

fn parse_shm_size(s: &str) -> Result<String, String> {
    builder_core::parse_mem_bytes(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_ulimit(s: &str) -> Result<String, String> {
    s.parse::<builder_core::Ulimit>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl DropinOpts {
    /// Refuses what rbuild cannot do, before anything runs.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        let refuse = |flag: &str, why: &str| {
            Err(Failure::usage(format!(
                "{flag} is not supported by rbuild: {why}"
            )))
        };
        if self.debug {
            return refuse(
                "--debug",
                "there is no debug log; --progress=plain shows every step's output",
            );
        }
        if !self.policy.is_empty() {
            return refuse("--policy", "source policies are not implemented");
        }
        if !self.resources.is_empty() {
            return refuse(
                "--resource",
                "RUN steps run in rbuild's own process tree, without cgroup limits",
            );
        }
        if self.cgroup_parent.is_some() {
            return refuse(
                "--cgroup-parent",
                "RUN steps run in rbuild's own process tree, not under a cgroup manager",
            );
        }
        Ok(())
    }

    /// Where `--load` puts the image, if anywhere.
    pub(crate) fn load_target(&self) -> Result<Option<LoadTarget>, Failure> {
        match self.load.as_deref() {
            None | Some("false" | "0") => Ok(None),
            Some("true" | "1") => Ok(Some(LoadTarget::Docker)),
            Some(s) => LoadTarget::parse(s)
                .map(Some)
                .map_err(|e| Failure::usage(e.to_string())),
        }
    }

    /// Notes printed before a build.
    pub(crate) fn notes(&self) {
        if let Some(b) = &self.builder {
            eprintln!(
                "WARNING: --builder {b:?} ignored: rbuild builds in this process, it has no builder instances"
            );
        }
    }

    /// Hands the flags builder-core implements to the build.
    pub(crate) fn apply(&self, mut b: Build) -> Result<Build, builder_core::Error> {
        for (host, ip) in &self.add_hosts {
            b = b.add_host(host, ip)?;
        }
        for a in &self.annotations {
            b = b.annotation(a)?;
        }
        for u in &self.ulimits {
            b = b.ulimit(u)?;
        }
        if let Some(s) = &self.shm_size {
            b = b.shm_size(s)?;
        }
        for s in &self.no_cache_filter {
            b = b.no_cache_filter(s);
        }
        // `--pull`: every tag is resolved at the registry at each build already (only
        // digest-pinned bases come from the content store, and they cannot change).
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_values() {
        assert_eq!(
            parse_add_host("db:10.0.0.1").unwrap(),
            ("db".into(), "10.0.0.1".into())
        );
        assert_eq!(
            parse_add_host("v6=::1").unwrap(),
            ("v6".into(), "::1".into())
        );
        assert_eq!(parse_add_host("v6:::1").unwrap().1, "::1");
        assert!(parse_add_host("gw:host-gateway").is_ok());
        assert!(parse_add_host("db:[fe80::1],10.0.0.2").is_ok());
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host(":1.2.3.4").is_err());
        assert!(parse_add_host("db:300.1.1.1").is_err());
    }
}
