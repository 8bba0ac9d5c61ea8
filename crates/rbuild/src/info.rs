//! `rbuild info`: what the host allows (user namespaces, newuidmap/newgidmap, subordinate
//! ids, namespaces and mounts, overlayfs, seccomp, capabilities) and which build mode
//! (root, rootless, unprivileged) is usable, and why not. The work is
//! `builder_core::HostReport`.

use std::path::PathBuf;

use crate::exit::Failure;

/// Show what this host allows and which build mode rbuild would use
#[derive(Debug, clap::Args)]
pub(crate) struct InfoOpts {
    /// Directory of the build cache (default: "$XDG_CACHE_HOME/rbuild"); overlayfs is probed
    /// on its file system
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Output format: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: String,
}

pub(crate) fn run(opts: &InfoOpts) -> Result<(), Failure> {
    if opts.format != "text" && opts.format != "json" {
        return Err(Failure::usage(format!(
            "--format {:?}: expected text or json",
            opts.format
        )));
    }
    let dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(builder_core::default_cache_dir);
    let cache = builder_core::layer_cache::Cache::open(&dir)
        .map_err(|e| Failure::build(format!("cache {}: {e}", dir.display())))?;
    let tmp = cache
        .other_dir("tmp")
        .map_err(|e| Failure::build(format!("cache {}: {e}", dir.display())))?;
    let report = builder_core::HostReport::probe(&tmp);
    if opts.format == "json" {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::build(format!("encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("rbuild {}\n{}", env!("CARGO_PKG_VERSION"), report.render());
    }
    Ok(())
}
