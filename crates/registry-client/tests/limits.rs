//! Everything read into memory from a registry is capped, with a named error: manifests
//! and indexes, token responses, configs and other small blobs.

use registry_client::{Error, Reference, Repository};
use test_support::{Fault, FaultProxy, LocalRegistry, Rule};

use crate::util::{client, layer_descriptor};

fn ok_with_body(len: usize) -> Fault {
    Fault::Respond {
        status: 200,
        headers: vec![(
            "Content-Type".to_owned(),
            "application/vnd.oci.image.manifest.v1+json".to_owned(),
        )],
        body: " ".repeat(len),
    }
}

fn assert_too_large(err: &Error, what: &str, limit: u64) {
    match err {
        Error::TooLarge {
            what: w, limit: l, ..
        } => {
            assert!(w.contains(what), "{err}");
            assert_eq!(*l, limit, "{err}");
        }
        other => panic!("expected TooLarge for {what}, got {other}"),
    }
}

/// A manifest past 4 MiB is refused by name.
#[tokio::test]
async fn oversized_manifest_is_refused() {
    let reg = LocalRegistry::ensure();
    let proxy = FaultProxy::start(reg.host()).await;
    proxy.add(Rule::new("/manifests/", ok_with_body((4 << 20) + 1)));
    let r: Reference = format!("{}/{}:big", proxy.host(), reg.unique_repo("limits"))
        .parse()
        .unwrap();
    let err = client().resolve(&r).await.unwrap_err();
    assert_too_large(&err, "manifest big", 4 << 20);
}

/// A token service that answers with more than 1 MiB is refused by name.
#[tokio::test]
async fn oversized_token_response_is_refused() {
    let reg = LocalRegistry::ensure();
    let (registry, realm) = (
        FaultProxy::start(reg.host()).await,
        FaultProxy::start(reg.host()).await,
    );
    registry.add(Rule::new(
        "/manifests/",
        Fault::Respond {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".to_owned(),
                format!(
                    r#"Bearer realm="http://{}/v2/token",service="s""#,
                    realm.host()
                ),
            )],
            body: String::new(),
        },
    ));
    realm.add(Rule::new("/v2/token", ok_with_body((1 << 20) + 1)));
    let r: Reference = format!("{}/{}:t", registry.host(), reg.unique_repo("limits"))
        .parse()
        .unwrap();
    let err = client().resolve(&r).await.unwrap_err();
    assert_too_large(&err, "token response", 1 << 20);
}

/// A config (or any blob fetched into memory) whose descriptor says more than 64 MiB is
/// refused before a byte is requested.
#[tokio::test]
async fn oversized_config_is_refused_before_download() {
    let reg = LocalRegistry::ensure();
    let proxy = FaultProxy::start(reg.host()).await;
    let repo = Repository::new(&proxy.host(), &reg.unique_repo("limits")).unwrap();
    let digest = registry_client::Digest::sha256_of(b"{}");
    let err = client()
        .fetch_blob(&repo, &layer_descriptor(&digest, (64 << 20) + 1))
        .await
        .unwrap_err();
    assert_too_large(&err, "blob sha256:", 64 << 20);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
}
