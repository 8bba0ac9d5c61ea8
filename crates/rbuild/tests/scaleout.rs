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

/// The entries of an index.
fn entries(index: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(index).unwrap();
    v["manifests"].as_array().expect("an index").clone()
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
        "--provenance=false",
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
    let platforms: Vec<&str> = ix["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["vnd.docker.reference.type"].is_null())
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
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

/// Builds `marker` on busybox for `platform`, pushed by digest to `name`; its digest.
fn push_by_digest(name: &str, platform: &str, marker: &str, cache: &Path) -> String {
    let reg = LocalRegistry::ensure();
    let ctx = context(&reg.busybox(), marker);
    let meta = ctx.path().join("meta.json");
    // No attestation flag: an index per runner (image and mode=min provenance) is buildx's
    // default for a push, by digest too.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS").args([
        "build",
        "--progress=plain",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--platform",
        platform,
        "-o",
        &format!("type=image,name={name},push=true,push-by-digest=true,name-canonical=true"),
        "--metadata-file",
        meta.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    metadata(&meta)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn imagetools_create_merges_digests_across_repositories_byte_for_byte() {
    let reg = LocalRegistry::ensure();
    let cache = tempfile::tempdir().unwrap();
    let a = format!("{}/{}", reg.host(), reg.unique_repo("scaleout-it-a"));
    let b = format!("{}/{}", reg.host(), reg.unique_repo("scaleout-it-b"));
    let target_repo = reg.unique_repo("scaleout-it-merged");
    let target = format!("{}/{target_repo}", reg.host());
    let da = push_by_digest(&a, "linux/amd64", "it amd64", cache.path());
    let db = push_by_digest(&b, "linux/arm64", "it arm64", cache.path());
    let (src_a, src_b) = (format!("{a}@{da}"), format!("{b}@{db}"));

    // --dry-run prints the index and pushes nothing.
    let dry = ok(&[
        "imagetools",
        "create",
        "--dry-run",
        "-t",
        &format!("{target}:v1"),
        &src_a,
        &src_b,
    ]);
    assert_eq!(tags(reg.host(), &target_repo), Vec::<String>::new());
    let printed = dry.stdout.strip_suffix(b"\n").unwrap().to_vec();

    // The target is a third repository: every blob and manifest is mounted into it.
    let meta = cache.path().join("create.json");
    let out = ok(&[
        "imagetools",
        "create",
        "-t",
        &format!("{target}:v1"),
        "-t",
        &format!("{target}:latest"),
        "--metadata-file",
        meta.to_str().unwrap(),
        &src_a,
        &src_b,
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("mounted sha256:"), "{log}");
    let index = raw(&format!("{target}:v1"));
    assert_eq!(index, printed, "the pushed index is the --dry-run one");
    let v: Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    // The runners' index entries (image and attestation manifests), in order, as they were.
    let mut expected = entries(&raw(&src_a));
    expected.extend(entries(&raw(&src_b)));
    assert_eq!(v["manifests"].as_array().unwrap(), &expected);
    let archs: Vec<&str> = expected
        .iter()
        .filter(|m| m["annotations"]["vnd.docker.reference.type"].is_null())
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    // Each runner's default provenance came along as its attestation manifest.
    let attestations = expected
        .iter()
        .filter(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .count();
    assert_eq!(attestations, 2, "{expected:?}");
    // Byte-identical to what each runner pushed, and complete (skopeo copies every blob).
    let from_a = entries(&raw(&src_a)).len();
    for (n, m) in expected.iter().enumerate() {
        let src = if n < from_a { &a } else { &b };
        let d = m["digest"].as_str().unwrap();
        assert_eq!(
            raw(&format!("{target}@{d}")),
            raw(&format!("{src}@{d}")),
            "{d}"
        );
    }
    let mut t = tags(reg.host(), &target_repo);
    t.sort();
    assert_eq!(t, ["latest", "v1"]);
    let oci = tempfile::tempdir().unwrap();
    test_support::run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{target}:v1"),
        &format!("oci:{}:x", oci.path().display()),
    ]));
    let m = metadata(&meta);
    assert_eq!(m["containerimage.descriptor"]["digest"], sha256(&index));
    assert_eq!(m["image.name"], target.as_str());

    // --append adds to the tag's index; --annotation writes the index's annotations.
    let dc = push_by_digest(&a, "linux/amd64", "it amd64 again", cache.path());
    ok(&[
        "imagetools",
        "create",
        "--append",
        "--annotation",
        "index:org.opencontainers.image.authors=scaleout",
        "-t",
        &format!("{target}:v1"),
        &format!("{a}@{dc}"),
    ]);
    let v: Value = serde_json::from_slice(&raw(&format!("{target}:v1"))).unwrap();
    expected.extend(entries(&raw(&format!("{a}@{dc}"))));
    assert_eq!(v["manifests"].as_array().unwrap(), &expected);
    assert_eq!(
        v["annotations"]["org.opencontainers.image.authors"],
        "scaleout"
    );

    // One index alone is a carbon copy: the same bytes under a new tag.
    ok(&[
        "imagetools",
        "create",
        "-t",
        &format!("{target}:copy"),
        &format!("{target}:latest"),
    ]);
    assert_eq!(raw(&format!("{target}:copy")), index);

    // `imagetools inspect` is `rbuild inspect`.
    let shown = ok(&[
        "imagetools",
        "inspect",
        "--raw",
        &format!("{target}:latest"),
    ]);
    assert_eq!(shown.stdout, index);
}

#[test]
fn imagetools_create_rejects_bad_requests_naming_the_problem() {
    let reg = LocalRegistry::ensure();
    let d = format!("sha256:{}", "0".repeat(64));
    for (args, needle) in [
        (
            vec!["imagetools", "create", "-t", "x/y:1"],
            "no sources specified",
        ),
        (
            vec!["imagetools", "create", "busybox"],
            "can't push with no tags",
        ),
        (
            vec![
                "imagetools",
                "create",
                "--dry-run",
                "--annotation",
                "k=v",
                "busybox",
            ],
            "give where it goes",
        ),
        (
            vec!["imagetools", "create", "--dry-run", &d],
            "cannot infer repository",
        ),
    ] {
        let out = rbuild(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A source that does not exist: the registry's answer, exit 1.
    let missing = format!("{}/{}@{d}", reg.host(), reg.unique_repo("scaleout-missing"));
    let out = rbuild(&["imagetools", "create", "--dry-run", &missing]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("404") || err.contains("UNKNOWN"), "{err}");
}
