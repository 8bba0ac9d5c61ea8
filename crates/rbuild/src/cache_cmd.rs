//! `rbuild du` and `rbuild prune [--keep-storage SIZE] [--all]`: the build cache's disk
//! usage by kind, and least-recently-used eviction that never removes what a running build
//! holds. The work is `layer_cache::Cache::{du, prune}`; this module parses and prints.

use std::io::Write as _;
use std::path::PathBuf;

use builder_core::layer_cache::{Cache, PruneReport, Usage, UsageKind};

use crate::exit::Failure;

/// Show disk usage of the build cache
#[derive(Debug, clap::Args)]
pub(crate) struct DuOpts {
    /// Directory of the build cache (default: "$XDG_CACHE_HOME/rbuild")
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// Remove build cache
#[derive(Debug, clap::Args)]
pub(crate) struct PruneOpts {
    /// Directory of the build cache (default: "$XDG_CACHE_HOME/rbuild")
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Amount of disk space to keep for cache (e.g. 512MB, 10GiB; units are powers of 1024
    /// as in docker); least recently used entries go first
    #[arg(long = "keep-storage", value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Include internal caches (build-context stat caches, cache mounts)
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation (rbuild never prompts; accepted as in buildx)
    #[arg(short, long)]
    force: bool,
    /// Print every removed entry
    #[arg(long)]
    verbose: bool,
}

fn open(dir: &Option<PathBuf>) -> Result<Cache, Failure> {
    let dir = dir.clone().unwrap_or_else(builder_core::default_cache_dir);
    Cache::open(&dir).map_err(|e| Failure::build(format!("cache {}: {e}", dir.display())))
}

pub(crate) fn du(opts: &DuOpts) -> Result<(), Failure> {
    let usage = open(&opts.cache_dir)?
        .du()
        .map_err(|e| Failure::build(e.to_string()))?;
    print(&render_usage(&usage))
}

pub(crate) fn prune(opts: &PruneOpts) -> Result<(), Failure> {
    let _ = opts.force;
    let report = open(&opts.cache_dir)?
        .prune(opts.keep_storage, opts.all)
        .map_err(|e| Failure::build(e.to_string()))?;
    print(&render_prune(&report, opts.verbose))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::build(format!("writing to stdout: {e}")))
}

fn render_usage(u: &Usage) -> String {
    let mut s = format!(
        "{:<14}{:>9}{:>12}{:>12}\n",
        "KIND", "ENTRIES", "SIZE", "IN USE"
    );
    for kind in UsageKind::ALL {
        let k = u.kinds.get(&kind).copied().unwrap_or_default();
        s += &format!(
            "{:<14}{:>9}{:>12}{:>12}\n",
            kind.name(),
            k.entries,
            human(k.bytes),
            human(k.held_bytes)
        );
    }
    s += &format!("Total:\t{}\n", human(u.total_bytes));
    s
}

fn render_prune(r: &PruneReport, verbose: bool) -> String {
    let mut s = String::new();
    if verbose {
        for e in &r.removed {
            s += &format!("{:<12}{:<75}{:>12}\n", e.kind.name(), e.id, human(e.bytes));
        }
    }
    s += &format!("Total:\t{}\n", human(r.reclaimed_bytes));
    s
}

/// Sizes as docker prints them: decimal units, four significant digits (`70.49MB`).
fn human(bytes: u64) -> String {
    let size = builder_core::human_bytes(bytes);
    let v = size.value;
    let digits = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", size.unit)
}

/// `--keep-storage`: a number of bytes with an optional unit (`k`, `m`, `g`, `t`, `p`,
/// optionally followed by `i` and/or `b`, any case), powers of 1024 as docker's
/// `RAMInBytes`.
fn parse_size(s: &str) -> Result<u64, String> {
    builder_core::parse_ram_in_bytes(s).map_err(|e| match e {
        builder_core::SizeError::Number => {
            format!("invalid size {s:?} (expected e.g. 512MB or 10GB)")
        }
        e => format!("invalid size {s:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{human, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("512mib"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(human(0), "0B");
        assert_eq!(human(70_490_000), "70.49MB");
        assert_eq!(human(1_000), "1kB");
        assert_eq!(human(123_456_789_012), "123.5GB");
    }
}
