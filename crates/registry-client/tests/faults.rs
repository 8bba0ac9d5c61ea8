use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use registry_client::{
    BlobSource, Client, Credential, DockerConfig, Error, NoProgress, PushedBlob, Reference,
    Repository, RetryPolicy,
};
use test_support::{Fault, FaultProxy, LocalRegistry, Rule, TokenAuth};

use crate::util::{Recorder, blob_file, client, image, layer_descriptor, quick_retries};

/// A proxy in front of the local registry, and a repository name for this test.
async fn proxy(prefix: &str) -> (FaultProxy, String) {
    let reg = LocalRegistry::ensure();
    (FaultProxy::start(reg.host()).await, reg.unique_repo(prefix))
}

fn repo(proxy: &FaultProxy, path: &str) -> Repository {
    Repository::new(&proxy.host(), path).unwrap()
}

/// Push `len` bytes to `repo` straight to the real registry (no faults) and return them.
async fn seed_blob(repo_path: &str, len: usize, seed: u64) -> (Vec<u8>, registry_client::Digest) {
    let reg = LocalRegistry::ensure();
    let data = crate::util::noise(len, seed);
    let digest = registry_client::Digest::sha256_of(&data);
    let direct = Repository::new(reg.host(), repo_path).unwrap();
    client()
        .push_blob(
            &direct,
            &digest,
            len as u64,
            &BlobSource::Bytes(Bytes::from(data.clone())),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    (data, digest)
}

/// Bearer tokens from a realm with Basic credentials from a Docker config file: the mount
/// asks for `pull` on its source, and a token is reused while it covers the request.
#[tokio::test]
async fn token_realm_with_docker_config_credentials() {
    let (proxy, path) = proxy("token").await;
    proxy.require_tokens(TokenAuth {
        basic: Some(("alice".into(), "s3cret".into())),
        expires_in: 300,
    });
    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        config_dir.path().join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}/v1/":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            proxy.host()
        ),
    )
    .unwrap();
    let client = Client::builder()
        .docker_config(DockerConfig::load_dir(config_dir.path()).unwrap())
        .retry_policy(quick_retries())
        .build()
        .unwrap();
    let a = repo(&proxy, &path);
    let b = repo(&proxy, &format!("{path}-mounted"));
    let dir = tempfile::tempdir().unwrap();
    let (file, data, digest) = blob_file(dir.path(), 100_000, 10);

    let r = client
        .push_blob(
            &a,
            &digest,
            data.len() as u64,
            &BlobSource::File(file.clone()),
            None,
            &NoProgress,
        )
        .await;
    assert_eq!(r.unwrap(), PushedBlob::Uploaded);
    let r = client
        .push_blob(
            &b,
            &digest,
            data.len() as u64,
            &BlobSource::File(file),
            Some(&a),
            &NoProgress,
        )
        .await;
    assert_eq!(r.unwrap(), PushedBlob::Mounted);
    // pulls from b: covered by the mount's token, no new token request
    let before = proxy.token_requests().len();
    for _ in 0..3 {
        let mut out = Vec::new();
        client
            .pull_blob(
                &b,
                &layer_descriptor(&digest, data.len() as u64),
                &mut out,
                &NoProgress,
            )
            .await
            .unwrap();
        assert!(out == data);
    }
    let tokens = proxy.token_requests();
    assert_eq!(tokens.len(), before, "tokens not reused: {tokens:?}");
    let mount_scopes = vec![
        format!("repository:{path}:pull"),
        format!("repository:{path}-mounted:pull,push"),
    ];
    assert!(
        tokens.contains(&mount_scopes),
        "no token asked for the mount source: {tokens:?}"
    );
    // every registry request after the first challenges carried a bearer token
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .filter(|s| s.uri.starts_with("/v2/") && s.status != 401)
            .all(|s| s.auth_scheme.as_deref() == Some("Bearer"))
    );
}

/// Wrong credentials: the realm refuses, and the error says so.
#[tokio::test]
async fn token_realm_refuses_bad_credentials() {
    let (proxy, path) = proxy("badcreds").await;
    proxy.require_tokens(TokenAuth {
        basic: Some(("alice".into(), "s3cret".into())),
        expires_in: 0,
    });
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .credential(
            &proxy.host(),
            Credential::Basic {
                username: "alice".into(),
                password: "wrong".into(),
            },
        )
        .build()
        .unwrap();
    let r: Reference = format!("{}/{path}:latest", proxy.host()).parse().unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&proxy.host())
            && text.contains("HTTP 401")
            && text.contains("incorrect username"),
        "{text}"
    );
}

/// A token revoked in the middle of a chunked push: one fresh token, the push goes on. A
/// second refusal of the same request is an error.
#[tokio::test]
async fn unauthorized_mid_push_gets_one_new_token() {
    let (proxy, path) = proxy("revoke").await;
    proxy.require_tokens(TokenAuth::default());
    proxy.add(
        Rule::new("/blobs/uploads/", Fault::RevokeTokens)
            .method(Method::PATCH)
            .after(1),
    );
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .chunked_uploads(Some(64 << 10))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, data, digest) = blob_file(dir.path(), 300_000, 11);
    let a = repo(&proxy, &path);
    let r = client
        .push_blob(
            &a,
            &digest,
            data.len() as u64,
            &BlobSource::File(file.clone()),
            None,
            &NoProgress,
        )
        .await;
    assert_eq!(r.unwrap(), PushedBlob::Uploaded);
    // pull for the HEAD, pull+push for the upload, a fresh one after the revocation
    assert_eq!(
        proxy.token_requests().len(),
        3,
        "{:?}",
        proxy.token_requests()
    );
    let patches: Vec<u16> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::PATCH)
        .map(|s| s.status)
        .collect();
    assert_eq!(patches, [202, 401, 202, 202, 202, 202], "{patches:?}");
    let mut back = Vec::new();
    let direct = Repository::new(LocalRegistry::ensure().host(), &path).unwrap();
    crate::util::client()
        .pull_blob(
            &direct,
            &layer_descriptor(&digest, data.len() as u64),
            &mut back,
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(back == data);

    // refused twice in a row: give up with the 401
    proxy.add(
        Rule::new("/manifests/", Fault::RevokeTokens)
            .method(Method::PUT)
            .times(2),
    );
    let (_, manifest) = image("amd64", &[(digest.clone(), data.len() as u64)]);
    let err = client
        .push_manifest(&a, Some("t"), &manifest)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

/// 429 with Retry-After: the client waits that long, then succeeds.
#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (proxy, path) = proxy("429").await;
    let (data, digest) = seed_blob(&path, 5000, 12).await;
    proxy.add(Rule::new("/blobs/", Fault::too_many_requests(1)).method(Method::GET));
    let rec = Recorder::default();
    let start = Instant::now();
    let mut out = Vec::new();
    client()
        .pull_blob(
            &repo(&proxy, &path),
            &layer_descriptor(&digest, data.len() as u64),
            &mut out,
            &rec,
        )
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "did not wait: {:?}",
        start.elapsed()
    );
    assert!(out == data);
    assert!(
        rec.lines().contains(&"retrying 1 1s HTTP 429".to_owned()),
        "{:?}",
        rec.lines()
    );
    let gets: Vec<u16> = proxy.seen().iter().map(|s| s.status).collect();
    assert_eq!(gets, [429, 200]);
}

/// 500s then success, on a HEAD and on a manifest PUT; and a bounded number of attempts
/// when the errors do not stop.
#[tokio::test]
async fn server_errors_are_retried_with_a_bound() {
    let (proxy, path) = proxy("500").await;
    let (data, digest) = seed_blob(&path, 2000, 13).await;
    let r = repo(&proxy, &path);
    proxy.add(
        Rule::new("/blobs/", Fault::status(500))
            .method(Method::HEAD)
            .times(2),
    );
    assert_eq!(
        client().blob_exists(&r, &digest).await.unwrap(),
        Some(data.len() as u64)
    );

    let (config, manifest) = image("amd64", &[(digest.clone(), data.len() as u64)]);
    let cd = registry_client::Digest::sha256_of(&config);
    client()
        .push_blob(
            &r,
            &cd,
            config.len() as u64,
            &BlobSource::Bytes(config),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    proxy.add(Rule::new("/manifests/", Fault::status(503)).method(Method::PUT));
    client()
        .push_manifest(&r, Some("v1"), &manifest)
        .await
        .unwrap();

    proxy.add(
        Rule::new("/manifests/v1", Fault::status(502))
            .method(Method::GET)
            .times(100),
    );
    let three = Client::builder()
        .docker_config(DockerConfig::empty())
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let before = proxy.seen().len();
    let err = three
        .resolve(&format!("{}/{path}:v1", proxy.host()).parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502), "{err}");
    assert_eq!(proxy.seen().len() - before, 3);
}

/// `400 DIGEST_INVALID` on a manifest PUT (distribution reading a blob link another pusher
/// is rewriting) is retried, since the digest is the hash of the bytes sent; a registry that
/// keeps saying so gets the error after the client's attempts, naming the code.
#[tokio::test]
async fn digest_invalid_on_a_manifest_put_is_retried_then_reported() {
    let (proxy, path) = proxy("digest-invalid").await;
    let (data, digest) = seed_blob(&path, 1500, 17).await;
    let r = repo(&proxy, &path);
    let (config, manifest) = image("amd64", &[(digest.clone(), data.len() as u64)]);
    let cd = registry_client::Digest::sha256_of(&config);
    client()
        .push_blob(
            &r,
            &cd,
            config.len() as u64,
            &BlobSource::Bytes(config),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    let digest_invalid = || {
        Fault::Respond {
        status: 400,
        headers: Vec::new(),
        body: r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#.to_owned(),
    }
    };
    proxy.add(
        Rule::new("/manifests/", digest_invalid())
            .method(Method::PUT)
            .times(2),
    );
    let before = proxy.seen().len();
    let pushed = client().push_manifest(&r, None, &manifest).await.unwrap();
    assert_eq!(&pushed, manifest.digest());
    assert_eq!(proxy.seen().len() - before, 3, "two refusals, then the PUT");
    let reg = LocalRegistry::ensure();
    let direct: Reference = format!("{}/{path}@{pushed}", reg.host()).parse().unwrap();
    assert_eq!(client().resolve(&direct).await.unwrap().digest(), &pushed);

    proxy.add(
        Rule::new("/manifests/", digest_invalid())
            .method(Method::PUT)
            .times(100),
    );
    let before = proxy.seen().len();
    let err = client()
        .push_manifest(&r, Some("never"), &manifest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("DIGEST_INVALID"), "{err}");
    assert_eq!(proxy.seen().len() - before, 4, "the client's four attempts");
}

/// A connection dropped in the middle of a blob: the pull resumes with Range from where it
/// stopped, to a file and to a writer.
#[tokio::test]
async fn dropped_connection_mid_blob_resumes_with_range() {
    let (proxy, path) = proxy("drop").await;
    let (data, digest) = seed_blob(&path, 2_000_000, 14).await;
    let r = repo(&proxy, &path);
    let desc = layer_descriptor(&digest, data.len() as u64);

    proxy.add(Rule::new("/blobs/sha256:", Fault::DropBodyAfter(700_000)).method(Method::GET));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("blob.partial");
    let rec = Recorder::default();
    client()
        .pull_blob_to_file(&r, &desc, &out, &rec)
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
    // the resumed request starts where the bytes stopped arriving (at most at the cut: the
    // proxy's last frame may be lost with the connection)
    let ranges: Vec<Option<String>> = proxy.seen().iter().map(|s| s.range.clone()).collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let from: u64 = ranges[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap();
    assert!(from > 0 && from <= 700_000, "{ranges:?}");
    assert!(
        rec.lines().contains(&format!("resumed {from}")),
        "{:?}",
        rec.lines()
    );

    // into a writer, cut twice
    proxy.add(
        Rule::new("/blobs/sha256:", Fault::DropBodyAfter(300_000))
            .method(Method::GET)
            .times(2),
    );
    let mut buf = Vec::new();
    client()
        .pull_blob(&r, &desc, &mut buf, &NoProgress)
        .await
        .unwrap();
    assert!(buf == data);

    // a file left by an interrupted pull: only the rest is fetched
    std::fs::write(&out, &data[..1_234_567]).unwrap();
    let before = proxy.seen().len();
    client()
        .pull_blob_to_file(&r, &desc, &out, &NoProgress)
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(
        proxy.seen()[before].range.as_deref(),
        Some("bytes=1234567-")
    );
}

/// A blob served with wrong bytes is rejected and nothing of it is left.
#[tokio::test]
async fn wrong_digest_blob_is_rejected_and_removed() {
    let (proxy, path) = proxy("corrupt").await;
    let (data, digest) = seed_blob(&path, 100_000, 15).await;
    proxy.add(
        Rule::new("/blobs/sha256:", Fault::CorruptBody)
            .method(Method::GET)
            .times(3),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("blob.tmp");
    let desc = layer_descriptor(&digest, data.len() as u64);
    let err = client()
        .pull_blob_to_file(&repo(&proxy, &path), &desc, &out, &NoProgress)
        .await
        .unwrap_err();
    match &err {
        Error::DigestMismatch {
            expected,
            actual,
            registry,
            repository,
        } => {
            assert_eq!(expected, &digest);
            assert_ne!(actual, &digest);
            assert_eq!(
                (registry.as_str(), repository.as_str()),
                (proxy.host().as_str(), path.as_str())
            );
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(!out.exists(), "the corrupt blob was left behind");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let err = client()
        .fetch_blob(&repo(&proxy, &path), &desc)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

/// A connection dropped during a chunked upload: the client asks the registry where the
/// upload stands and goes on from there.
#[tokio::test]
async fn dropped_upload_chunk_resumes() {
    let (proxy, path) = proxy("updrop").await;
    proxy.add(
        Rule::new("/blobs/uploads/", Fault::Drop)
            .method(Method::PATCH)
            .after(2),
    );
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .chunked_uploads(Some(100_000))
        .retry_policy(quick_retries())
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, data, digest) = blob_file(dir.path(), 450_000, 16);
    let rec = Recorder::default();
    let r = client
        .push_blob(
            &repo(&proxy, &path),
            &digest,
            data.len() as u64,
            &BlobSource::File(file),
            None,
            &rec,
        )
        .await;
    assert_eq!(r.unwrap(), PushedBlob::Uploaded);
    assert!(
        rec.lines().contains(&"resumed 200000".to_owned()),
        "{:?}",
        rec.lines()
    );
    let probes = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET && s.uri.contains("/blobs/uploads/"))
        .count();
    assert_eq!(probes, 1);
    let mut back = Vec::new();
    let direct = Repository::new(LocalRegistry::ensure().host(), &path).unwrap();
    client
        .pull_blob(
            &direct,
            &layer_descriptor(&digest, data.len() as u64),
            &mut back,
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(back == data);
}

/// Nothing listening: bounded retries, then an error naming the registry.
#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let r: Reference = format!("127.0.0.1:{port}/nothing:here").parse().unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("127.0.0.1:{port}/nothing: GET manifest here:")),
        "{err}"
    );
}

/// Concurrent requests that all meet the challenge share one token.
#[tokio::test]
async fn concurrent_requests_share_one_token() {
    let (proxy, path) = proxy("share").await;
    let (_, digest) = seed_blob(&path, 1000, 17).await;
    proxy.require_tokens(TokenAuth::default());
    let client = client();
    let r = repo(&proxy, &path);
    let checks: Vec<_> = (0..6).map(|_| client.blob_exists(&r, &digest)).collect();
    for found in futures_util::future::join_all(checks).await {
        assert_eq!(found.unwrap(), Some(1000));
    }
    assert_eq!(
        proxy.token_requests(),
        [vec![format!("repository:{path}:pull")]]
    );
}

/// `imagetools create` into another repository whose registry will not mount (it answers
/// 202, as registries without cross-repository mounts do): each blob is copied through a
/// download and an upload, and the manifest arrives byte for byte.
#[tokio::test]
async fn imagetools_create_copies_blobs_when_the_mount_is_refused() {
    let (proxy, src_path) = proxy("it-src").await;
    let dst_path = LocalRegistry::ensure().unique_repo("it-dst");
    let (data, layer) = seed_blob(&src_path, 300_000, 17).await;
    let (config, manifest) = image("amd64", &[(layer.clone(), data.len() as u64)]);
    let src = repo(&proxy, &src_path);
    let c = client();
    let config_digest = registry_client::Digest::sha256_of(&config);
    c.push_blob(
        &src,
        &config_digest,
        config.len() as u64,
        &BlobSource::Bytes(config),
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    c.push_manifest(&src, None, &manifest).await.unwrap();
    proxy.add(
        Rule::new("mount=", Fault::status(202))
            .method(Method::POST)
            .times(100),
    );

    let source = Reference::with_digest(src.clone(), manifest.digest().clone());
    let tag: Reference = format!("{}/{dst_path}:merged", proxy.host())
        .parse()
        .unwrap();
    let create = registry_client::CreateIndex::new()
        .source(source.into())
        .tag(tag.clone());
    let index = create.resolve(&c).await.unwrap();
    let rec = Recorder::default();
    create.push(&c, &index, &rec).await.unwrap();
    let lines = rec.lines();
    assert!(!lines.iter().any(|l| l.contains("mounted")), "{lines:?}");
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == Method::POST && s.uri.contains("mount=")),
        "the mount was tried first: {seen:?}"
    );
    let dst = repo(&proxy, &dst_path);
    assert_eq!(
        c.blob_exists(&dst, &layer).await.unwrap(),
        Some(data.len() as u64)
    );
    let copied = c.fetch_manifest(&dst, manifest.digest()).await.unwrap();
    assert_eq!(copied.bytes(), manifest.bytes());
    let top = c.resolve(&tag).await.unwrap();
    assert_eq!(top.bytes(), index.bytes());
    let v: serde_json::Value = serde_json::from_slice(top.bytes()).unwrap();
    assert_eq!(v["manifests"][0]["digest"], manifest.digest().as_str());
    assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
}
