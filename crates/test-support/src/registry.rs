//! A handle on the real local registry that `scripts/testenv/up.sh` runs.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::command::run;

/// Where the test environment puts the registry.
const DEFAULT_HOST: &str = "127.0.0.1:5000";

/// The local registry (distribution 2.8, plain HTTP, deletes enabled), with the test base
/// images `library/busybox:latest` and `library/node:20-slim` (both linux/amd64 and
/// linux/arm64/v8).
#[derive(Clone, Debug)]
pub struct LocalRegistry {
    host: String,
}

impl LocalRegistry {
    /// The registry, brought up first with `scripts/testenv/up.sh` when it does not answer
    /// (once per process; the script itself serialises concurrent callers). Panics with
    /// the script's output when that fails: tests cannot run without it.
    pub fn ensure() -> Self {
        static UP: OnceLock<LocalRegistry> = OnceLock::new();
        UP.get_or_init(|| {
            let host =
                std::env::var("RBUILD_TEST_REGISTRY").unwrap_or_else(|_| DEFAULT_HOST.to_owned());
            let ready = || {
                answers(&host, "GET", "/v2/")
                    && answers(&host, "HEAD", "/v2/library/busybox/manifests/latest")
                    && answers(&host, "HEAD", "/v2/library/node/manifests/20-slim")
            };
            if !ready() {
                let script = workspace_root().join("scripts/testenv/up.sh");
                run(&mut Command::new(&script));
                assert!(
                    ready(),
                    "{} ran, but http://{host} lacks the registry or its base images",
                    script.display()
                );
            }
            LocalRegistry { host }
        })
        .clone()
    }

    /// `HOST:PORT`, as references write it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A repository name no other test uses: `test/PREFIX-PID-N-NANOS`.
    pub fn unique_repo(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            "test/{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `HOST/library/busybox:latest`.
    pub fn busybox(&self) -> String {
        format!("{}/library/busybox:latest", self.host)
    }

    /// `HOST/library/node:20-slim`.
    pub fn node(&self) -> String {
        format!("{}/library/node:20-slim", self.host)
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("workspace root: {e}"))
}

/// Does `METHOD http://HOST/PATH` answer 200?
fn answers(host: &str, method: &str, path: &str) -> bool {
    let Ok(addr) = host.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}
