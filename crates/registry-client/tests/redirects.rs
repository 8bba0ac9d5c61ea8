//! Credentials go only to the registry they belong to: a redirect to another origin drops
//! them, and a foreign host that answers a redirect with an auth challenge gets none.

use http::Method;
use registry_client::{Client, Credential, DockerConfig, Error, NoProgress, Repository};
use test_support::{Fault, FaultProxy, LocalRegistry, Rule, TokenAuth};

use crate::util::{layer_descriptor, noise, quick_retries};

/// A registry (a proxy demanding tokens for Basic credentials) holding one blob, and a
/// client with those credentials.
async fn registry_with_credentials() -> (FaultProxy, Repository, Vec<u8>, Client) {
    let reg = LocalRegistry::ensure();
    let path = reg.unique_repo("redirect");
    let data = noise(50_000, 31);
    let digest = registry_client::Digest::sha256_of(&data);
    crate::util::client()
        .push_blob(
            &Repository::new(reg.host(), &path).unwrap(),
            &digest,
            data.len() as u64,
            &registry_client::BlobSource::Bytes(data.clone().into()),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    let proxy = FaultProxy::start(reg.host()).await;
    proxy.require_tokens(TokenAuth {
        basic: Some(("alice".into(), "s3cret".into())),
        expires_in: 300,
    });
    let client = Client::builder()
        .docker_config(DockerConfig::empty())
        .credential(
            &proxy.host(),
            Credential::Basic {
                username: "alice".into(),
                password: "s3cret".into(),
            },
        )
        .retry_policy(quick_retries())
        .build()
        .unwrap();
    let repo = Repository::new(&proxy.host(), &path).unwrap();
    (proxy, repo, data, client)
}

/// `Location` for the blob of `repo` on `host`.
fn blob_url(host: &str, repo: &Repository, data: &[u8]) -> String {
    let digest = registry_client::Digest::sha256_of(data);
    format!("http://{host}/v2/{}/blobs/{digest}", repo.path())
}

fn redirect(location: String) -> Fault {
    Fault::Respond {
        status: 307,
        headers: vec![("Location".to_owned(), location)],
        body: String::new(),
    }
}

/// A blob GET redirected to storage on another host: the blob arrives, and the storage
/// host saw no `Authorization` (neither the token nor anything else).
#[tokio::test]
async fn redirect_to_another_host_drops_authorization() {
    let (proxy, repo, data, client) = registry_with_credentials().await;
    let storage = FaultProxy::start(LocalRegistry::ensure().host()).await;
    // `localhost:PORT` is another host than `127.0.0.1:PORT` even though both are loopback
    let storage_host = storage.host().replace("127.0.0.1", "localhost");
    proxy.add(
        Rule::new(
            "/blobs/sha256:",
            redirect(blob_url(&storage_host, &repo, &data)),
        )
        .method(Method::GET)
        .after(1), // the first GET is the one that gets the challenge
    );
    let digest = registry_client::Digest::sha256_of(&data);
    let got = client
        .fetch_blob(&repo, &layer_descriptor(&digest, data.len() as u64))
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    let redirected = proxy
        .seen()
        .into_iter()
        .filter(|s| s.status == 307)
        .collect::<Vec<_>>();
    assert_eq!(redirected.len(), 1, "{:?}", proxy.seen());
    assert_eq!(redirected[0].auth_scheme.as_deref(), Some("Bearer"));
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1, "{at_storage:?}");
    assert_eq!(
        at_storage[0].auth_scheme, None,
        "the registry's token went to another host"
    );
}

/// A redirect on the same origin keeps the credentials (the registry needs them there).
#[tokio::test]
async fn redirect_on_the_same_host_keeps_authorization() {
    let (proxy, repo, data, client) = registry_with_credentials().await;
    let digest = registry_client::Digest::sha256_of(&data);
    proxy.add(
        Rule::new(
            "/blobs/sha256:",
            redirect(format!("/v2/{}/blobs/{digest}?hop=1", repo.path())),
        )
        .method(Method::GET)
        .after(1),
    );
    let got = client
        .fetch_blob(&repo, &layer_descriptor(&digest, data.len() as u64))
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    let hop = proxy
        .seen()
        .into_iter()
        .find(|s| s.uri.ends_with("?hop=1"))
        .expect("the redirect was followed");
    assert_eq!(
        (hop.status, hop.auth_scheme.as_deref()),
        (200, Some("Bearer"))
    );
}

/// A redirect to a host that then asks for credentials (its own token realm): the client
/// refuses, naming the redirect, and neither that host nor its realm saw the registry's
/// Basic credentials.
#[tokio::test]
async fn foreign_challenge_after_redirect_gets_no_credentials() {
    let (proxy, repo, data, client) = registry_with_credentials().await;
    let evil = FaultProxy::start(LocalRegistry::ensure().host()).await;
    evil.require_tokens(TokenAuth::default());
    let evil_host = evil.host().replace("127.0.0.1", "localhost");
    proxy.add(
        Rule::new(
            "/blobs/sha256:",
            redirect(blob_url(&evil_host, &repo, &data)),
        )
        .method(Method::GET)
        .times(10),
    );
    let digest = registry_client::Digest::sha256_of(&data);
    let err = client
        .fetch_blob(&repo, &layer_descriptor(&digest, data.len() as u64))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{text}");
    assert!(
        text.contains("redirected to") && text.contains(&evil_host),
        "{text}"
    );
    assert!(evil.token_requests().is_empty(), "{:?}", evil.seen());
    assert!(
        evil.seen().iter().all(|s| s.auth_scheme.is_none()),
        "{:?}",
        evil.seen()
    );
}

/// A redirect loop ends with an error, not a hang.
#[tokio::test]
async fn redirect_loop_is_bounded() {
    let (proxy, repo, data, client) = registry_with_credentials().await;
    let digest = registry_client::Digest::sha256_of(&data);
    proxy.add(
        Rule::new(
            "/blobs/sha256:",
            redirect(blob_url(&proxy.host(), &repo, &data)),
        )
        .method(Method::GET)
        .times(1000),
    );
    let err = client
        .fetch_blob(&repo, &layer_descriptor(&digest, data.len() as u64))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
}
