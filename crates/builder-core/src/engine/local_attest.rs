//! Attestations of a `type=local` output, as BuildKit's local exporter writes them: each
//! in-toto statement of a platform's image as a JSON file beside its files
//! (`provenance.json`, `sbom.spdx.json`), its subjects being those files (every regular file
//! by its path and sha256), mode 0600. When several platforms share one directory
//! (`platform-split=false`), the platform is part of the name
//! (`provenance.linux_amd64.json`, `sbom.spdx.linux_amd64.json`); each platform's subjects are
//! its own files.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::Error;

/// Writes `statements` (the serialised in-toto statements of one image) into `dir`, with
/// `subjects` (from [`subjects`] of the image's files).
pub(super) fn write(
    dir: &Path,
    statements: &[Vec<u8>],
    subjects: &[Value],
    suffix: Option<&str>,
) -> Result<(), Error> {
    for raw in statements {
        let mut st: Value = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
        let kind = st["predicateType"].as_str().unwrap_or_default();
        // BuildKit puts the platform before the last extension: sbom.spdx.linux_amd64.json.
        let (base, ext) = if kind.contains("slsa.dev/provenance") {
            ("provenance", "json")
        } else if kind.contains("spdx") {
            ("sbom.spdx", "json")
        } else {
            return Err(bad(format!(
                "an attestation of predicate type {kind:?} has no file name in a local output"
            )));
        };
        st["subject"] = Value::Array(subjects.to_vec());
        let name = match suffix {
            Some(s) => format!("{base}.{s}.{ext}"),
            None => format!("{base}.{ext}"),
        };
        let path = dir.join(&name);
        let text = serde_json::to_vec_pretty(&st).map_err(|e| bad(e.to_string()))?;
        fs::write(&path, text).map_err(|e| io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Every regular file below `dir` (symlinks not followed), sorted by path, as subjects.
pub(super) fn subjects(dir: &Path) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let e = e.map_err(|e| io(&d, e))?;
            let p = e.path();
            let t = e.file_type().map_err(|e| io(&p, e))?;
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let mut f = fs::File::open(&p).map_err(|e| io(&p, e))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).map_err(|e| io(&p, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, hex::encode(h.finalize())));
            }
        }
    }
    out.sort();
    Ok(out
        .into_iter()
        .map(|(name, d)| json!({"name": name, "digest": {"sha256": d}}))
        .collect())
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::from(layer_cache::Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn bad(reason: String) -> Error {
    Error::invalid_step(format!("writing attestations to a local output: {reason}"))
}
