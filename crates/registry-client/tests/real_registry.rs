use std::process::Command;

use bytes::Bytes;
use registry_client::oci_spec::image::{Descriptor, MediaType};
use registry_client::{
    BlobSource, Client, DockerConfig, Error, ManifestKind, NoProgress, Platform, PushedBlob,
    Reference, Repository,
};
use test_support::{LocalRegistry, run};

use crate::util::{Recorder, blob_file, client, image, index, layer_descriptor};

fn skopeo_raw(reference: &str) -> Vec<u8> {
    run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))
    .stdout
}

fn repo(reg: &LocalRegistry, prefix: &str) -> Repository {
    Repository::new(reg.host(), &reg.unique_repo(prefix)).unwrap()
}

/// The whole push path on the real registry: blob upload, HEAD skip, cross-repository
/// mount, a manifest under two tags, an index; then everything pulled back and compared
/// with what skopeo sees.
#[tokio::test]
async fn push_mount_manifests_index_and_pull_back() {
    let reg = LocalRegistry::ensure();
    let client = client();
    let dir = tempfile::tempdir().unwrap();
    let a = repo(&reg, "push-a");
    let b = repo(&reg, "push-b");

    // a 3 MB layer from a file, and its config from memory
    let (layer_path, layer, layer_digest) = blob_file(dir.path(), 3 << 20, 1);
    let rec = Recorder::default();
    let pushed = client
        .push_blob(
            &a,
            &layer_digest,
            layer.len() as u64,
            &BlobSource::File(layer_path.clone()),
            None,
            &rec,
        )
        .await
        .unwrap();
    assert_eq!(pushed, PushedBlob::Uploaded);
    assert_eq!(
        rec.lines(),
        [
            format!("started 0/{}", layer.len()),
            format!("done {}", layer.len())
        ]
    );
    assert_eq!(
        client.blob_exists(&a, &layer_digest).await.unwrap(),
        Some(layer.len() as u64)
    );

    // the registry has it now: skipped
    let again = client
        .push_blob(
            &a,
            &layer_digest,
            layer.len() as u64,
            &BlobSource::File(layer_path.clone()),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(again, PushedBlob::Existed);

    // mounted into another repository, no bytes sent
    assert_eq!(client.blob_exists(&b, &layer_digest).await.unwrap(), None);
    let rec = Recorder::default();
    let mounted = client
        .push_blob(
            &b,
            &layer_digest,
            layer.len() as u64,
            &BlobSource::File(layer_path.clone()),
            Some(&a),
            &rec,
        )
        .await
        .unwrap();
    assert_eq!(mounted, PushedBlob::Mounted);
    assert_eq!(rec.lines(), [format!("mounted from {a}")]);
    assert_eq!(
        client.blob_exists(&b, &layer_digest).await.unwrap(),
        Some(layer.len() as u64)
    );

    // a mount from a repository without the blob falls back to an upload (the 202 path)
    let (small_path, small, small_digest) = blob_file(dir.path(), 1000, 2);
    let empty_repo = repo(&reg, "push-empty");
    let fell_back = client
        .push_blob(
            &b,
            &small_digest,
            small.len() as u64,
            &BlobSource::File(small_path),
            Some(&empty_repo),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(fell_back, PushedBlob::Uploaded);

    // config + manifest (amd64) under two tags, a second manifest (arm64), an index
    let (config, manifest) = image("amd64", &[(layer_digest.clone(), layer.len() as u64)]);
    let config_digest = registry_client::Digest::sha256_of(&config);
    client
        .push_blob(
            &a,
            &config_digest,
            config.len() as u64,
            &BlobSource::Bytes(config.clone()),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    let digest = client
        .push_manifest_tags(&a, &["v1", "v2"], &manifest)
        .await
        .unwrap();
    assert_eq!(&digest, manifest.digest());
    let (config_arm, manifest_arm) = image("arm64", &[(small_digest.clone(), small.len() as u64)]);
    client
        .push_blob(
            &a,
            &registry_client::Digest::sha256_of(&config_arm),
            config_arm.len() as u64,
            &BlobSource::Bytes(config_arm),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    client
        .push_blob(
            &a,
            &small_digest,
            small.len() as u64,
            &BlobSource::Bytes(Bytes::from(small.clone())),
            Some(&b),
            &NoProgress,
        )
        .await
        .unwrap();
    client.push_manifest(&a, None, &manifest_arm).await.unwrap();
    let idx = index(&[
        (&manifest, "linux", "amd64", None),
        (&manifest_arm, "linux", "arm64", Some("v8")),
    ]);
    client
        .push_manifest_tags(&a, &["multi"], &idx)
        .await
        .unwrap();

    // pulled back: exact bytes, as skopeo sees them too
    for (tag, want) in [("v1", &manifest), ("v2", &manifest), ("multi", &idx)] {
        let r: Reference = format!("{a}:{tag}").parse().unwrap();
        let got = client.resolve(&r).await.unwrap();
        assert_eq!(got.bytes(), want.bytes(), "{tag}");
        assert_eq!(got.media_type(), want.media_type(), "{tag}");
        assert_eq!(got.digest(), want.digest(), "{tag}");
        assert_eq!(
            skopeo_raw(&r.to_string()),
            want.bytes().to_vec(),
            "skopeo sees other bytes for {tag}"
        );
    }
    let by_digest = client
        .fetch_manifest(&a, manifest_arm.digest())
        .await
        .unwrap();
    assert_eq!(by_digest.bytes(), manifest_arm.bytes());

    // platform selection through the index: arm64 means arm64/v8
    let multi: Reference = format!("{a}:multi").parse().unwrap();
    let arm = client
        .resolve_platform(&multi, &"linux/arm64".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(arm.manifest.digest(), manifest_arm.digest());
    assert_eq!(arm.platform.unwrap().to_string(), "linux/arm64/v8");
    assert_eq!(arm.reference.digest(), Some(idx.digest()));
    let err = client
        .resolve_platform(&multi, &"linux/s390x".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PlatformNotFound { available, .. } if available == &["linux/amd64", "linux/arm64/v8"]),
        "{err}"
    );

    // blobs back from the repository they were mounted into, to a file and to memory
    let out = dir.path().join("pulled");
    client
        .pull_blob_to_file(
            &b,
            &layer_descriptor(&layer_digest, layer.len() as u64),
            &out,
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == layer,
        "pulled layer differs"
    );
    let config_desc = Descriptor::new(
        MediaType::ImageConfig,
        config.len() as u64,
        config_digest.to_oci(),
    );
    assert_eq!(client.fetch_blob(&a, &config_desc).await.unwrap(), config);
}

/// Chunked uploads (PATCH with Content-Range, then PUT) give the same blob.
#[tokio::test]
async fn chunked_upload() {
    let reg = LocalRegistry::ensure();
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .chunked_uploads(Some(256 << 10))
        .build()
        .unwrap();
    let r = repo(&reg, "chunked");
    let (path, data, digest) = blob_file(dir.path(), (1 << 20) + 12345, 3);
    let pushed = client
        .push_blob(
            &r,
            &digest,
            data.len() as u64,
            &BlobSource::File(path),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(pushed, PushedBlob::Uploaded);
    let mut back = Vec::new();
    client
        .pull_blob(
            &r,
            &layer_descriptor(&digest, data.len() as u64),
            &mut back,
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(back == data);
}

/// The test base images: an OCI index for amd64 and arm64/v8; a layer pulled and verified.
#[tokio::test]
async fn base_images_resolve_per_platform() {
    let reg = LocalRegistry::ensure();
    let client = client();
    let busybox: Reference = reg.busybox().parse().unwrap();
    let top = client.resolve(&busybox).await.unwrap();
    assert_eq!(top.kind(), ManifestKind::Index);
    let raw = skopeo_raw(&reg.busybox());
    assert_eq!(top.bytes().to_vec(), raw);
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let p: Platform = platform.parse().unwrap();
        let img = client.resolve_platform(&busybox, &p).await.unwrap();
        let registry_client::Manifest::Image(m) = img.manifest.parse().unwrap() else {
            panic!("not an image")
        };
        let config = client
            .fetch_blob(busybox.repository(), m.config())
            .await
            .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["architecture"], arch);
        let dir = tempfile::tempdir().unwrap();
        let layer = &m.layers()[0];
        let path = dir.path().join("layer");
        client
            .pull_blob_to_file(busybox.repository(), layer, &path, &NoProgress)
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), layer.size());
        // the index skopeo sees lists this manifest for that platform, with these bytes
        let listed = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .map(|m| m["digest"].as_str().unwrap().to_owned());
        assert_eq!(listed.as_deref(), Some(img.manifest.digest().as_str()));
        let by_digest = format!("{}/library/busybox@{}", reg.host(), img.manifest.digest());
        assert_eq!(skopeo_raw(&by_digest), img.manifest.bytes().to_vec());
    }
}

/// Errors name the registry, the repository, the status and the registry's code.
#[tokio::test]
async fn registry_errors_are_specific() {
    let reg = LocalRegistry::ensure();
    let client = client();
    let r: Reference = format!("{}/library/busybox:no-such-tag", reg.host())
        .parse()
        .unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("MANIFEST_UNKNOWN")),
        "{err}"
    );
    assert!(err.is_not_found());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}/library/busybox: GET manifest no-such-tag: HTTP 404 MANIFEST_UNKNOWN",
            reg.host()
        )),
        "{text}"
    );

    let missing = registry_client::Digest::sha256_of(b"never pushed");
    let err = client
        .pull_blob(
            r.repository(),
            &layer_descriptor(&missing, 12),
            &mut Vec::new(),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("BLOB_UNKNOWN")),
        "{err}"
    );

    // a manifest that names a blob the repository lacks
    let repo = repo(&reg, "bad-manifest");
    let (_, manifest) = image("amd64", &[(missing.clone(), 12)]);
    let err = client
        .push_manifest(&repo, Some("x"), &manifest)
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("MANIFEST_BLOB_UNKNOWN")),
        "{err}"
    );
    assert!(err.to_string().contains(&repo.to_string()), "{err}");
}

/// Docker's schema 2 types (manifest list, manifest) keep their media types and bytes, and
/// platform selection works through a manifest list as through an OCI index.
#[tokio::test]
async fn docker_media_types() {
    let reg = LocalRegistry::ensure();
    let client = client();
    let r = repo(&reg, "docker-types");
    let layer = Bytes::from(crate::util::noise(4096, 20));
    let layer_digest = registry_client::Digest::sha256_of(&layer);
    client
        .push_blob(
            &r,
            &layer_digest,
            4096,
            &BlobSource::Bytes(layer),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    let config = Bytes::from(format!(
        r#"{{"architecture":"arm64","variant":"v8","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    ));
    let config_digest = registry_client::Digest::sha256_of(&config);
    client
        .push_blob(
            &r,
            &config_digest,
            config.len() as u64,
            &BlobSource::Bytes(config.clone()),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":4096,"digest":"{layer_digest}"}}]}}"#,
        registry_client::DOCKER_MANIFEST,
        config.len()
    );
    let manifest = registry_client::RawManifest::new(Bytes::from(manifest), None).unwrap();
    assert_eq!(manifest.media_type(), registry_client::DOCKER_MANIFEST);
    client.push_manifest(&r, None, &manifest).await.unwrap();
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","size":{},"digest":"{}","platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        registry_client::DOCKER_MANIFEST_LIST,
        registry_client::DOCKER_MANIFEST,
        manifest.size(),
        manifest.digest()
    );
    let list = registry_client::RawManifest::new(Bytes::from(list), None).unwrap();
    client.push_manifest(&r, Some("list"), &list).await.unwrap();

    let tagged: Reference = format!("{r}:list").parse().unwrap();
    let got = client.resolve(&tagged).await.unwrap();
    assert_eq!(
        (got.media_type(), got.kind()),
        (registry_client::DOCKER_MANIFEST_LIST, ManifestKind::Index)
    );
    assert_eq!(got.bytes(), list.bytes());
    assert_eq!(skopeo_raw(&tagged.to_string()), list.bytes().to_vec());
    // the list says plain arm64: it is arm64/v8
    let img = client
        .resolve_platform(&tagged, &"linux/arm64/v8".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(img.manifest.media_type(), registry_client::DOCKER_MANIFEST);
    assert_eq!(img.manifest.bytes(), manifest.bytes());
}
