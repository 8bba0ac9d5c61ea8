//! The BuildKit parser corpus in `../shared/conformance/parser`, loaded as it is,
//! one named test per case. Cases left out are listed in `../EXCLUDED.md`.
//!
//! The corpus directory is `$RBUILD_CONFORMANCE/parser`, by default
//! `<repo>/../shared/conformance/parser`.

mod corpus;
mod instructions;
mod lines;
mod robustness;
mod typed;

use std::path::PathBuf;

use libtest_mimic::{Arguments, Failed, Trial};

/// The corpus root.
fn corpus_dir() -> PathBuf {
    let base = std::env::var_os("RBUILD_CONFORMANCE").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/conformance"
            ))
        },
        PathBuf::from,
    );
    base.join("parser")
}

fn read(rel: &str) -> Vec<u8> {
    let path = corpus_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

/// Fails with a message unless `cond`.
fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

fn main() {
    let args = Arguments::from_args();
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (set RBUILD_CONFORMANCE)",
        dir.display()
    );
    let mut trials: Vec<Trial> = Vec::new();
    corpus::trials(&mut trials);
    lines::trials(&mut trials);
    instructions::trials(&mut trials);
    robustness::trials(&mut trials);
    typed::trials(&mut trials);
    libtest_mimic::run(&args, trials).exit();
}
