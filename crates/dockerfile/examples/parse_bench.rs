//! Parser throughput over the BuildKit corpus.
//!
//! ```text
//! cargo run --release -p dockerfile --example parse_bench [ROUNDS] [CORPUS_DIR]
//! ```
//!
//! Parses every Dockerfile under the corpus directory (default
//! `../shared/conformance/parser`) ROUNDS times (default 2000) with the line parser
//! and the typed layer, and prints MB/s for each.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn collect(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, out);
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n == "Dockerfile" || n.ends_with(".Dockerfile") || n.ends_with(".DOCKERFILE")
        }) {
            if let Ok(t) = std::fs::read_to_string(&p) {
                out.push(t);
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = args.next().map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/conformance/parser"
            ))
        },
        PathBuf::from,
    );
    let mut texts = Vec::new();
    collect(&dir, &mut texts);
    // Inputs the line parser accepts (the negative cases are not throughput).
    texts.retain(|t| dockerfile::parse_ast(t).is_ok());
    let bytes: usize = texts.iter().map(String::len).sum();
    assert!(bytes > 0, "no Dockerfiles found under {}", dir.display());
    println!("{} files, {bytes} bytes, {rounds} rounds", texts.len());

    let mut nodes = 0usize;
    let cpu = cpu_seconds();
    let start = Instant::now();
    for _ in 0..rounds {
        for t in &texts {
            if let Ok(ast) = dockerfile::parse_ast(t) {
                nodes += ast.nodes.len();
            }
        }
    }
    report(
        "parse_ast (line parser)",
        bytes * rounds,
        start.elapsed().as_secs_f64(),
        cpu,
    );

    // The typed layer on the files it accepts (error paths are not throughput).
    texts.retain(|t| dockerfile::parse(t).is_ok());
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{} files, {bytes} bytes accepted by the typed layer",
        texts.len()
    );
    let mut typed = 0usize;
    let start = Instant::now();
    for _ in 0..rounds {
        for t in &texts {
            if let Ok(df) = dockerfile::parse(t) {
                typed += df.instructions.len();
            }
        }
    }
    report(
        "parse (typed instructions)",
        bytes * rounds,
        start.elapsed().as_secs_f64(),
        cpu,
    );
    println!("({nodes} nodes, {typed} typed instructions)");
}

/// CPU time of this thread (Linux `schedstat`), so a busy machine does not skew
/// the figure; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn report(what: &str, bytes: usize, wall: f64, cpu_start: Option<f64>) {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    print!(
        "{what}: {:.1} MB/s wall ({mb:.1} MB in {wall:.3} s)",
        mb / wall
    );
    if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
        print!(", {:.1} MB/s CPU ({:.3} s)", mb / (b - a), b - a);
    }
    println!();
}
