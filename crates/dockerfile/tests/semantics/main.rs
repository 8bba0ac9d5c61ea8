//! Conformance tests for the semantics half of the `dockerfile` crate, loaded from
//! `../shared/conformance` as they are, one named test per case.
//!
//! - `shell`: BuildKit's shell-word expansion tables (`shell/`).
//! - `dockerignore`: patternmatcher and fsutil filter cases (`dockerignore/`).
//! - `behaviours`: the items of `dockerfile-behaviours.md` (ARG, ENV, stages) that are
//!   decided without building.
//!
//! Cases deliberately left out are listed, with the reason, in `SKIPPED.md` beside this
//! file; they show up as ignored tests.

use std::path::PathBuf;

use libtest_mimic::{Arguments, Failed};

mod behaviours;
mod dockerignore;
mod shell;

/// The conformance directory: `$RBUILD_CONFORMANCE_DIR`, or `../shared/conformance` next
/// to the repository.
fn conformance_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RBUILD_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
}

/// Reads a conformance file; a missing corpus is a failure, never a silent pass.
fn read(rel: &str) -> String {
    let path = conformance_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read conformance file {}: {e} (set RBUILD_CONFORMANCE_DIR)",
            path.display()
        )
    })
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A JSON array of strings (anything else: empty).
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a comparison into a test result with both sides shown.
fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), Failed> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}:\n  got:  {got:?}\n  want: {want:?}").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(shell::trials());
    trials.extend(dockerignore::trials());
    trials.extend(behaviours::trials());
    libtest_mimic::run(&args, trials).exit();
}
