use std::process::Command;

use registry_client::{Platform, Reference, inspect};
use test_support::{LocalRegistry, run};

use crate::util::client;

/// `inspect` of the Node base image: buildx's layout, one entry per index manifest with its
/// platform; `--raw` is the registry's bytes; `--platform` shows that image's config.
#[tokio::test]
async fn inspect_node_base_image() {
    let reg = LocalRegistry::ensure();
    let r: Reference = reg.node().parse().unwrap();
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.node()),
    ]))
    .stdout;
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();

    let i = inspect(&client(), &r, None).await.unwrap();
    assert_eq!(i.raw(), raw.as_slice());
    let text = i.to_string();
    let mut want = format!(
        "Name:      {}\nMediaType: application/vnd.oci.image.index.v1+json\nDigest:    {}\n           \nManifests: \n",
        reg.node(),
        registry_client::Digest::sha256_of(&raw)
    );
    for (n, m) in index["manifests"].as_array().unwrap().iter().enumerate() {
        if n > 0 {
            want.push_str("             \n");
        }
        let p = &m["platform"];
        let mut platform = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        if let Some(v) = p["variant"].as_str() {
            platform = format!("{platform}/{v}");
        }
        want.push_str(&format!(
            "  Name:      {}@{}\n  MediaType: {}\n  Platform:  {platform}\n",
            reg.node(),
            m["digest"].as_str().unwrap(),
            m["mediaType"].as_str().unwrap()
        ));
    }
    assert_eq!(text, want);

    let arm: Platform = "linux/arm64".parse().unwrap();
    let i = inspect(&client(), &r, Some(&arm)).await.unwrap();
    let image = i.image.as_ref().unwrap();
    let arm_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(image.manifest.digest().as_str(), arm_digest);
    let arm_raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/library/node@{arm_digest}", reg.host()),
    ]))
    .stdout;
    assert_eq!(i.raw(), arm_raw.as_slice());
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    assert_eq!(config["architecture"], "arm64");
    let text = i.to_string();
    assert!(text.contains("  Platform:  linux/arm64/v8\n"), "{text}");
    assert!(text.contains("\"NODE_VERSION=20.20.2\""), "{text}");
    assert!(
        text.contains(&format!("  Name:      {}@{arm_digest}\n", reg.node())),
        "{text}"
    );
}

/// The blocking entry point (for the command line) gives the same; inside a runtime it
/// refuses instead of stalling it.
#[test]
fn inspect_blocking_outside_and_inside_a_runtime() {
    let reg = LocalRegistry::ensure();
    let r: Reference = reg.busybox().parse().unwrap();
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.busybox()),
    ]))
    .stdout;
    let i = registry_client::inspect_blocking(&client(), &r, None).unwrap();
    assert_eq!(i.raw(), raw.as_slice());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async { registry_client::inspect_blocking(&client(), &r, None) })
        .unwrap_err();
    assert!(err.to_string().contains("inside an async runtime"), "{err}");
}
