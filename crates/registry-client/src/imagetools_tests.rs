use super::*;

fn repo(p: &str) -> Repository {
    Repository::new("127.0.0.1:5000", p).unwrap()
}

fn manifest(json: &str) -> RawManifest {
    RawManifest::new(Bytes::from(json.to_owned()), None).unwrap()
}

fn image(arch: &str, marker: &str) -> ResolvedSource {
    let m = manifest(&format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[],"annotations":{{"m":"{marker}"}}}}"#,
        "a".repeat(64)
    ));
    let mut d = Map::new();
    d.insert("mediaType".into(), Value::from(m.media_type()));
    d.insert("digest".into(), Value::from(m.digest().to_string()));
    d.insert("size".into(), Value::from(m.size()));
    d.insert(
        "platform".into(),
        serde_json::json!({"architecture": arch, "os": "linux"}),
    );
    ResolvedSource {
        repository: repo("r/app"),
        descriptor: d,
        manifest: m,
    }
}

#[test]
fn two_manifests_make_one_oci_index_referencing_their_digests() {
    let (a, b) = (image("amd64", "a"), image("arm64", "b"));
    let ix = combine(&[a.clone(), b.clone()], &[]).unwrap();
    assert_eq!(ix.manifest().media_type(), OCI_INDEX);
    let v: Value = serde_json::from_slice(ix.bytes()).unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["digest"], a.manifest.digest().as_str());
    assert_eq!(list[1]["digest"], b.manifest.digest().as_str());
    assert_eq!(list[1]["platform"]["architecture"], "arm64");
    assert_eq!(list[0]["size"].as_u64(), Some(a.manifest.size()));
    // The same digest twice is one entry.
    let ix = combine(&[a.clone(), a], &[]).unwrap();
    let v: Value = serde_json::from_slice(ix.bytes()).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn one_index_alone_is_a_carbon_copy_and_indexes_are_flattened() {
    let (a, b) = (image("amd64", "a"), image("arm64", "b"));
    let two = combine(&[a, b], &[]).unwrap();
    let src = ResolvedSource {
        repository: repo("r/app"),
        descriptor: Map::new(),
        manifest: two.manifest().clone(),
    };
    let copy = combine(std::slice::from_ref(&src), &[]).unwrap();
    assert_eq!(copy.bytes(), two.bytes());
    assert_eq!(copy.entries().len(), 2);
    let c = image("s390x", "c");
    let three = combine(&[src, c], &[]).unwrap();
    let v: Value = serde_json::from_slice(three.bytes()).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
}

#[test]
fn annotations_go_to_the_index_and_matching_descriptors() {
    let (a, b) = (image("amd64", "a"), image("arm64", "b"));
    let anns: Vec<Annotation> = [
        "index:org.opencontainers.image.authors=me",
        "manifest-descriptor[linux/arm64]:note=arm",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let ix = combine(&[a, b], &anns).unwrap();
    let v: Value = serde_json::from_slice(ix.bytes()).unwrap();
    assert_eq!(v["annotations"]["org.opencontainers.image.authors"], "me");
    assert!(v["manifests"][0].get("annotations").is_none());
    assert_eq!(v["manifests"][1]["annotations"]["note"], "arm");
}

#[test]
fn docker_manifests_make_a_docker_list_without_annotations() {
    let mut a = image("amd64", "a");
    a.descriptor.insert(
        "mediaType".into(),
        Value::from("application/vnd.docker.distribution.manifest.v2+json"),
    );
    let ix = combine(std::slice::from_ref(&a), &[]).unwrap();
    assert_eq!(ix.manifest().media_type(), DOCKER_MANIFEST_LIST);
    let ann: Annotation = "index:k=v".parse().unwrap();
    let e = combine(&[a], &[ann]).unwrap_err().to_string();
    assert!(e.contains("annotations need an OCI index"), "{e}");
}

#[test]
fn bad_sources_and_annotations_name_the_problem() {
    for (s, needle) in [
        ("{\"size\":1}", "no digest"),
        ("{not json", "not a JSON descriptor"),
        ("a/b:bad tag!", "invalid reference"),
    ] {
        let e = s.parse::<Source>().unwrap_err().to_string();
        assert!(e.contains(needle), "{s}: {e}");
    }
    let d: Source = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    assert!(d.reference.is_none());
    for (s, needle) in [
        ("k=v", "give where it goes"),
        ("manifest:k=v", "not supported"),
        ("index-descriptor:k=v", "invalid while creating"),
        ("bogus:k=v", "unknown annotation type"),
        ("index:k", "KEY=VALUE"),
        ("manifest-descriptor[linux/amd64:k=v", "unclosed"),
    ] {
        let e = s.parse::<Annotation>().unwrap_err().to_string();
        assert!(e.contains(needle), "{s}: {e}");
    }
    assert!(combine(&[], &[]).is_err());
}
