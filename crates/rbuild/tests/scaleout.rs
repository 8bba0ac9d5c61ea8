//! Scale out (issue 17): a push by digest per runner, with buildx's `--metadata-file`
//! keys, and `imagetools create` merging the runners' digests into one tagged index.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use test_support::{LocalRegistry, describe, output, run_stdout};

fn rbuild(args: &[&str]) -> Output {
    output(Command::new(env!("CARGO_BIN_EXE_rbuild")).args(args))
}

fn ok(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(args);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    out
}

/// The exact bytes the registry holds for `reference` (`skopeo inspect --raw`).
fn raw(reference: &str) -> Vec<u8> {
    run_stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))
    .into_bytes()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The tags of `repo` on the local registry (none when the registry knows no such name).
fn tags(host: &str, repo: &str) -> Vec<String> {
    let body = run_stdout(
        Command::new("curl").args(["-s", &format!("http://{host}/v2/{repo}/tags/list")]),
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A small context: busybox plus one file, so the image differs per test.
fn context(base: &str, marker: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY marker /marker\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("marker"), marker).unwrap();
    dir
}

fn metadata(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn push_by_digest_pushes_no_tag_and_writes_buildx_metadata() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("scaleout-bydigest");
    let name = format!("{}/{repo}", reg.host());
    let ctx = context(&reg.busybox(), "by digest");
    let meta = ctx.path().join("meta.json");
    let cache = ctx.path().join("cache");
    ok(&[
        "build",
        "--progress=plain",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--platform",
        "linux/amd64",
        "-t",
        &name,
        "-o",
        "type=image,push=true,push-by-digest=true,name-canonical=true",
        "--metadata-file",
        meta.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    let m = metadata(&meta);
    let digest = m["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // Pushed by digest: the manifest is there, and no tag (not even latest).
    let bytes = raw(&format!("{name}@{digest}"));
    assert_eq!(sha256(&bytes), digest);
    assert_eq!(tags(reg.host(), &repo), Vec::<String>::new());
    // buildx's keys, as BuildKit writes them for one platform.
    let d = &m["containerimage.descriptor"];
    assert_eq!(d["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(d["digest"], digest.as_str());
    assert_eq!(d["size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(d["platform"]["os"], "linux");
    assert_eq!(d["platform"]["architecture"], "amd64");
    assert_eq!(m["image.name"], name.as_str());
    let build_ref = m["buildx.build.ref"].as_str().expect("buildx.build.ref");
    assert!(
        build_ref.starts_with("rbuild/local/") && build_ref.len() == 38,
        "{build_ref}"
    );
    assert!(m["containerimage.config.digest"].as_str().is_some());

    // type=registry with name= (no -t), two platforms: the index by digest, no tag.
    let meta2 = ctx.path().join("meta2.json");
    ok(&[
        "build",
        "--progress=plain",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=registry,name={name},push-by-digest=true"),
        "--metadata-file",
        meta2.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    let m2 = metadata(&meta2);
    let index = m2["containerimage.digest"].as_str().unwrap();
    let ix: Value = serde_json::from_slice(&raw(&format!("{name}@{index}"))).unwrap();
    assert_eq!(ix["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        m2["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(m2["containerimage.descriptor"].get("platform").is_none());
    assert_eq!(tags(reg.host(), &repo), Vec::<String>::new());
}

#[test]
fn push_by_digest_refuses_a_tagged_name() {
    let reg = LocalRegistry::ensure();
    let name = format!("{}/{}:v1", reg.host(), reg.unique_repo("scaleout-tagged"));
    let ctx = context(&reg.busybox(), "tagged");
    let out = rbuild(&[
        "build",
        "-t",
        &name,
        "-o",
        "type=registry,push-by-digest=true",
        ctx.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("can't push tagged ref {name} by digest")),
        "{err}"
    );
    // And a push needs a name.
    let out = rbuild(&["build", "-o", "type=registry", ctx.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tag is needed when pushing"), "{err}");
}
