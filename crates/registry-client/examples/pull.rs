//! Pull one platform of an image (manifest, config, every layer) into an OCI image layout
//! directory, the way `skopeo copy docker://REF oci:DIR:TAG` does; used by
//! `scripts/bench/pull.sh`.
//!
//! ```text
//! cargo run --release --example pull -- REF DIR [--platform linux/amd64] [--quiet]
//! ```
//!
//! Layers are pulled concurrently, each verified before it is renamed into `blobs/`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use registry_client::{
    Client, Digest, Manifest, Platform, Reference, TransferEvent, TransferProgress,
};

/// Counts bytes received across all transfers.
#[derive(Default)]
struct Bytes(AtomicU64);

impl TransferProgress for Bytes {
    fn event(&self, event: &TransferEvent<'_>) {
        if let TransferEvent::Done { total, .. } = event {
            self.0.fetch_add(*total, Ordering::Relaxed);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: pull REF DIR [--platform OS/ARCH[/VARIANT]] [--quiet]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut positional = Vec::new();
    let mut platform = Platform::host();
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--platform" => {
                let p = args.next().unwrap_or_else(|| usage());
                platform = p.parse().unwrap_or_else(|e| {
                    eprintln!("pull: {e}");
                    std::process::exit(2)
                });
            }
            "--quiet" => quiet = true,
            "-h" | "--help" => usage(),
            _ => positional.push(a),
        }
    }
    let [reference, dir] = positional.as_slice() else {
        usage()
    };
    let reference: Reference = reference.parse().unwrap_or_else(|e| {
        eprintln!("pull: {e}");
        std::process::exit(2)
    });
    if let Err(e) = pull(&reference, Path::new(dir), &platform, quiet).await {
        eprintln!("pull: {e}");
        std::process::exit(1);
    }
}

async fn pull(
    reference: &Reference,
    dir: &Path,
    platform: &Platform,
    quiet: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let client = Client::new()?;
    let image = client.resolve_platform(reference, platform).await?;
    let Manifest::Image(manifest) = image.manifest.parse()? else {
        unreachable!("an image manifest")
    };
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;

    let counter = std::sync::Arc::new(Bytes::default());
    let mut tasks = tokio::task::JoinSet::new();
    for desc in std::iter::once(manifest.config().clone()).chain(manifest.layers().iter().cloned())
    {
        let (client, repo, blobs, counter) = (
            client.clone(),
            reference.repository().clone(),
            blobs.clone(),
            counter.clone(),
        );
        tasks.spawn(async move {
            let digest = Digest::try_from(desc.digest())?;
            let dest = blob_path(&blobs, &digest);
            if dest.exists() {
                return Ok::<_, registry_client::Error>(());
            }
            std::fs::create_dir_all(dest.parent().unwrap_or(&blobs)).map_err(|source| {
                registry_client::Error::Io {
                    path: dest.clone(),
                    source,
                }
            })?;
            let tmp = dest.with_extension("partial");
            client
                .pull_blob_to_file(&repo, &desc, &tmp, counter.as_ref())
                .await?;
            std::fs::rename(&tmp, &dest)
                .map_err(|source| registry_client::Error::Io { path: dest, source })?;
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }

    // the manifest and the layout's index, as skopeo writes them for oci:DIR:TAG
    let m = &image.manifest;
    std::fs::write(blob_path(&blobs, m.digest()), m.bytes())?;
    let tag = reference.tag().unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": m.media_type(), "digest": m.digest().to_string(), "size": m.size(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !quiet {
        let secs = start.elapsed().as_secs_f64();
        let bytes = counter.0.load(Ordering::Relaxed);
        eprintln!(
            "pulled {} ({platform}, {} layers, {:.1} MB) in {secs:.2} s, {:.0} MB/s",
            image.reference,
            manifest.layers().len(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
    }
    Ok(())
}

fn blob_path(blobs: &Path, digest: &Digest) -> PathBuf {
    blobs.join(digest.algorithm().as_str()).join(digest.hex())
}
