//! ADD of `http(s)://` URLs: download to a temporary file while hashing, verify
//! `--checksum`, keep `Last-Modified` for the file's mtime.

use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::Digest as _;

use super::error::CopyError;
use super::params::{Checksum, ChecksumAlgorithm};

/// A finished download.
#[derive(Debug)]
pub(crate) struct Download {
    /// The body (deleted when the download is dropped).
    pub(crate) file: tempfile::NamedTempFile,
    /// `sha256:<hex>` of the body.
    pub(crate) digest: String,
    /// `Last-Modified`, seconds since the epoch.
    pub(crate) last_modified: Option<i64>,
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: ChecksumAlgorithm) -> Hasher {
        match alg {
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Downloads `url` into a temporary file in `dir` (the system's temp dir when `None`).
///
/// Runs its own single-threaded runtime on a separate thread, so it can be called from
/// any thread, inside an async runtime or not (it blocks the caller until done).
pub(crate) fn download(
    url: &str,
    checksum: Option<&Checksum>,
    dir: Option<&Path>,
) -> Result<Download, CopyError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CopyError::io("start the download runtime", url))?;
            rt.block_on(fetch(url, checksum, dir))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(CopyError::Io {
                op: "download",
                path: url.into(),
                source: std::io::Error::other("the download thread panicked"),
            })
        })
    })
}

async fn fetch(
    url: &str,
    checksum: Option<&Checksum>,
    dir: Option<&Path>,
) -> Result<Download, CopyError> {
    let http = |source| CopyError::Http {
        url: url.to_owned(),
        source,
    };
    let client = reqwest::Client::builder().build().map_err(http)?;
    let mut resp = client.get(url).send().await.map_err(http)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(CopyError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let last_modified = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let tmp = match dir {
        Some(d) => tempfile::NamedTempFile::new_in(d),
        None => tempfile::NamedTempFile::new(),
    }
    .map_err(CopyError::io("create a temporary file for", url))?;
    let mut file = tmp;
    let mut sha = sha2::Sha256::new();
    let mut pinned = checksum.map(|c| Hasher::new(c.algorithm));
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        sha.update(&chunk);
        if let Some(h) = pinned.as_mut() {
            h.update(&chunk);
        }
        file.write_all(&chunk)
            .map_err(CopyError::io("write", file.path()))?;
    }
    file.flush().map_err(CopyError::io("write", file.path()))?;
    if let (Some(c), Some(h)) = (checksum, pinned) {
        let got = h.finish();
        if got != c.raw {
            return Err(CopyError::DigestMismatch {
                url: url.to_owned(),
                actual: got,
                expected: c.raw.clone(),
            });
        }
    }
    Ok(Download {
        file,
        digest: format!("sha256:{}", hex::encode(sha.finalize())),
        last_modified,
    })
}
