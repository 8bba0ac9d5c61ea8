//! Cache keys: a digest of a step's parent key and of everything that decides its result.
//!
//! Inputs are serialised as canonical JSON (struct fields in declaration order, maps as
//! `BTreeMap`), prefixed with a format version, and hashed with SHA-256. Equal inputs give
//! equal keys on every machine; mtimes never enter a key.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bump when the meaning of any key input changes, so old cache entries stop matching.
// v2: a step that changes nothing is an (empty) layer; a RUN layer holds the runtime's mount
// points the parent lacked.
// v3: a COPY/ADD layer leaves out what it rewrote unchanged (BuildKit's overlay differ).
const KEY_FORMAT: &str = "rbuild-cachekey-v3";

/// The cache key of one build step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of a step of `kind` on top of `parent` with `inputs`.
    pub fn derive<T: Serialize + ?Sized>(
        parent: Option<&CacheKey>,
        kind: &str,
        inputs: &T,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(KEY_FORMAT.as_bytes());
        h.update([0]);
        h.update(parent.map_or("", |p| p.0.as_str()).as_bytes());
        h.update([0]);
        h.update(kind.as_bytes());
        h.update([0]);
        // Serialising our own input structs cannot fail: they hold strings, numbers,
        // vectors and BTreeMaps only.
        let json = serde_json::to_vec(inputs).expect("cache key inputs serialise");
        h.update(&json);
        CacheKey(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The key as `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, usable as a file name.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Serialize)]
    struct Run<'a> {
        argv: &'a [&'a str],
        env: BTreeMap<&'a str, &'a str>,
    }

    #[test]
    fn keys_depend_on_parent_kind_and_every_input() {
        let env = BTreeMap::from([("A", "1")]);
        let base = CacheKey::derive(None, "from", "sha256:aa");
        let k1 = CacheKey::derive(
            Some(&base),
            "run",
            &Run {
                argv: &["true"],
                env: env.clone(),
            },
        );
        let k2 = CacheKey::derive(
            Some(&base),
            "run",
            &Run {
                argv: &["true"],
                env: env.clone(),
            },
        );
        assert_eq!(k1, k2);
        let other_env = BTreeMap::from([("A", "2")]);
        assert_ne!(
            k1,
            CacheKey::derive(
                Some(&base),
                "run",
                &Run {
                    argv: &["true"],
                    env: other_env
                }
            )
        );
        assert_ne!(
            k1,
            CacheKey::derive(
                Some(&base),
                "copy",
                &Run {
                    argv: &["true"],
                    env: env.clone()
                }
            )
        );
        assert_ne!(
            k1,
            CacheKey::derive(
                None,
                "run",
                &Run {
                    argv: &["true"],
                    env
                }
            )
        );
        assert!(k1.as_str().starts_with("sha256:") && k1.hex().len() == 64);
    }
}
