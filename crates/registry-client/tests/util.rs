use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use registry_client::oci_spec::image::{Descriptor, MediaType};
use registry_client::{
    Client, Digest, DockerConfig, RawManifest, RetryPolicy, TransferEvent, TransferProgress,
};

/// `len` pseudo-random bytes (xorshift; `seed` picks the sequence).
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A blob written to a file in `dir`, with its digest.
pub(crate) fn blob_file(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>, Digest) {
    let data = noise(len, seed);
    let digest = Digest::sha256_of(&data);
    let path = dir.join(format!("blob-{seed}"));
    std::fs::write(&path, &data).unwrap();
    (path, data, digest)
}

/// A descriptor for a layer blob.
pub(crate) fn layer_descriptor(digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::ImageLayerGzip, size, digest.to_oci())
}

/// A client that reads no Docker configuration, with quick retries.
pub(crate) fn client() -> Client {
    Client::builder()
        .docker_config(DockerConfig::empty())
        .retry_policy(quick_retries())
        .build()
        .unwrap()
}

/// 4 attempts, 20 ms doubling: faults cost little time.
pub(crate) fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: std::time::Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// A config blob and an OCI image manifest over `layers`, for `arch`.
pub(crate) fn image(arch: &str, layers: &[(Digest, u64)]) -> (Bytes, RawManifest) {
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| d.to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Bytes::from(serde_json::to_vec(&config).unwrap());
    let layer_json: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": s}))
        .collect();
    // written by hand with spaces and a newline: the client must keep these exact bytes
    let manifest = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",\n  \"config\": {{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"{}\", \"size\": {}}},\n  \"layers\": {}\n}}\n",
        Digest::sha256_of(&config),
        config.len(),
        serde_json::to_string(&layer_json).unwrap()
    );
    (
        config,
        RawManifest::new(Bytes::from(manifest), None).unwrap(),
    )
}

/// An OCI index over `(manifest, os/arch/variant)` entries.
pub(crate) fn index(entries: &[(&RawManifest, &str, &str, Option<&str>)]) -> RawManifest {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(m, os, arch, variant)| {
            let mut platform = serde_json::json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"mediaType": m.media_type(), "digest": m.digest().to_string(), "size": m.size(), "platform": platform})
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    RawManifest::new(
        Bytes::from(serde_json::to_vec_pretty(&index).unwrap()),
        None,
    )
    .unwrap()
}

/// Records every transfer event as a line of text.
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) Mutex<Vec<String>>);

impl TransferProgress for Recorder {
    fn event(&self, event: &TransferEvent<'_>) {
        let line = match event {
            TransferEvent::Started { offset, total, .. } => format!("started {offset}/{total}"),
            TransferEvent::Progress { .. } => return, // too many to keep
            TransferEvent::Resumed { offset, .. } => format!("resumed {offset}"),
            TransferEvent::Retrying {
                attempt,
                delay,
                reason,
                ..
            } => format!("retrying {attempt} {delay:?} {reason}"),
            TransferEvent::Exists { .. } => "exists".to_owned(),
            TransferEvent::Mounted { from, .. } => format!("mounted from {from}"),
            TransferEvent::Done { total, .. } => format!("done {total}"),
            _ => format!("{event:?}"),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Recorder {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}
