//! Supply chain (issue 19): provenance and SBOM attestations in BuildKit 0.32's layout,
//! compared field by field with the reference BuildKit; the SBOM against `dpkg-query` and
//! `npm ls` run in the image; reproducible index digests with SOURCE_DATE_EPOCH; the OCI
//! 1.1 referrers form, `type=none` and buildx's default.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use test_support::{LocalRegistry, describe, output, run, run_stdout, workspace_root};

const BUILDCTL: &str = "/var/tmp/reference-buildkit/bin/buildctl";
const BUILDKIT_HOST: &str = "unix:///run/reference-buildkitd.sock";
const NAME: &str = "127.0.0.1:5000/supply/ref:1";
const SECRET: &str = "s3cr3t-value-never-attested";

fn state_dir() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/rbuild-tests");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(state_dir())
        .expect("scratch dir")
}

fn rbuild(args: &[&str], cache: &Path, context: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("build")
        .arg("--progress=plain")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .arg(context)
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// An OCI layout unpacked from a tar.
struct Layout(PathBuf);

impl Layout {
    fn untar(tar: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("layout dir");
        run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(dir));
        Layout(dir.to_owned())
    }
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::read(self.0.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
    }
    fn doc(&self, digest: &str) -> Value {
        json(&self.blob(digest), digest)
    }
    fn root(&self) -> Value {
        let top = json(
            &std::fs::read(self.0.join("index.json")).expect("index.json"),
            "index.json",
        );
        let d = top["manifests"][0]["digest"]
            .as_str()
            .expect("root digest")
            .to_owned();
        self.doc(&d)
    }
}

/// The image entry, the attestation entry, the attestation manifest and its statements
/// of a one-platform index; checks BuildKit's layout on the way.
fn attestation_parts(layout: &Layout, who: &str) -> (Value, Value, Value, Vec<Value>) {
    let index = layout.root();
    let m = index["manifests"].as_array().expect("manifests");
    assert_eq!(m.len(), 2, "{who}: image + attestation manifest: {index}");
    let (img, att) = (m[0].clone(), m[1].clone());
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"], "attestation-manifest",
        "{who}"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"], img["digest"],
        "{who}"
    );
    assert_eq!(
        att["platform"],
        serde_json::json!({"architecture": "unknown", "os": "unknown"}),
        "{who}"
    );
    let am = layout.doc(att["digest"].as_str().unwrap());
    let statements = am["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| layout.doc(l["digest"].as_str().unwrap()))
        .collect();
    (img, att, am, statements)
}

fn reference_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let busybox = LocalRegistry::ensure().busybox();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {busybox}\nARG FOO=bar\nRUN echo hi > /hi\n\
             RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null || true\n\
             COPY Dockerfile /df\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("tok"), SECRET).unwrap();
    ctx
}

/// Provenance `mode=max` and `mode=min`, field by field against BuildKit 0.32
/// (`--opt attest:provenance=...`) on the same Dockerfile, build argument and secret.
#[test]
fn provenance_matches_buildkit_field_by_field() {
    let work = scratch("supply-ref");
    let w = work.path();
    let ctx = reference_context(w);
    let secret = format!("id=tok,src={}", w.join("tok").display());
    for mode in ["max", "min"] {
        let bk_tar = w.join(format!("bk-{mode}.tar"));
        let mut cmd = Command::new(BUILDCTL);
        cmd.args([
            "--addr",
            BUILDKIT_HOST,
            "build",
            "--frontend",
            "dockerfile.v0",
        ])
        .arg("--local")
        .arg(format!("context={}", ctx.display()))
        .arg("--local")
        .arg(format!("dockerfile={}", ctx.display()))
        .args(["--opt", "filename=Dockerfile", "--opt", "build-arg:FOO=baz"])
        .args(["--opt", &format!("attest:provenance=mode={mode}")])
        .args(["--secret", &secret])
        .arg("--output")
        .arg(format!("type=oci,dest={},name={NAME}", bk_tar.display()));
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", describe(&cmd, &out));
        let rb_tar = w.join(format!("rb-{mode}.tar"));
        rbuild(
            &[
                &format!("--provenance=mode={mode}"),
                "--build-arg",
                "FOO=baz",
                "--secret",
                &secret,
                "-t",
                NAME,
                "-o",
                &format!("type=oci,dest={}", rb_tar.display()),
            ],
            &w.join("cache"),
            &ctx,
        );
        let bk = Layout::untar(&bk_tar, &w.join(format!("bk-{mode}")));
        let rb = Layout::untar(&rb_tar, &w.join(format!("rb-{mode}")));
        let (bk_img, _, bk_am, bk_st) = attestation_parts(&bk, "BuildKit");
        let (rb_img, _, rb_am, rb_st) = attestation_parts(&rb, "rbuild");
        assert_eq!(bk_img["platform"], rb_img["platform"]);

        // The attestation manifest: the same fields, its subject the own image.
        for k in ["schemaVersion", "mediaType", "artifactType", "config"] {
            assert_eq!(bk_am[k], rb_am[k], "attestation manifest {k}");
        }
        assert_eq!(rb_am["subject"]["digest"], rb_img["digest"]);
        assert_eq!(rb_am["subject"]["mediaType"], bk_am["subject"]["mediaType"]);
        let layer_shape = |am: &Value| -> Vec<(Value, Value)> {
            am["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["mediaType"].clone(), l["annotations"].clone()))
                .collect()
        };
        assert_eq!(layer_shape(&bk_am), layer_shape(&rb_am));

        // The statement.
        let (b, r) = (&bk_st[0], &rb_st[0]);
        for k in ["_type", "predicateType"] {
            assert_eq!(b[k], r[k], "statement {k}");
        }
        // The subject: the image name as a purl with the platform, the own image's digest.
        assert_eq!(b["subject"][0]["name"], r["subject"][0]["name"]);
        assert_eq!(
            b["subject"][0]["name"],
            "pkg:docker/127.0.0.1%3A5000/supply/ref@1?platform=linux%2Famd64"
        );
        assert_eq!(
            format!(
                "sha256:{}",
                r["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            rb_img["digest"].as_str().unwrap()
        );
        let (b, r) = (&b["predicate"], &r["predicate"]);
        let bd = "buildDefinition";
        for k in ["buildType", "resolvedDependencies", "externalParameters"] {
            assert_eq!(b[bd][k], r[bd][k], "mode={mode}: buildDefinition.{k}");
        }
        for k in ["builderPlatform", "dockerfileVersion"] {
            assert_eq!(
                b[bd]["internalParameters"][k], r[bd]["internalParameters"][k],
                "mode={mode}: internalParameters.{k}"
            );
        }
        assert_eq!(b["runDetails"]["builder"], r["runDetails"]["builder"]);
        let (bm, rm) = (&b["runDetails"]["metadata"], &r["runDetails"]["metadata"]);
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(bm),
            keys(rm),
            "mode={mode}: runDetails.metadata fields"
        );
        for k in [
            "buildkit_completeness",
            "buildkit_hermetic",
            "buildkit_reproducible",
        ] {
            assert_eq!(bm[k], rm[k], "mode={mode}: metadata.{k}");
        }
        let id = rm["invocationId"].as_str().unwrap();
        assert_eq!(id.len(), bm["invocationId"].as_str().unwrap().len());
        assert!(rm["startedOn"].as_str().unwrap() <= rm["finishedOn"].as_str().unwrap());
        if mode == "max" {
            // The steps: the same exec ops (args, cwd, env) in the same order.
            let execs = |p: &Value| -> Vec<Value> {
                p[bd]["internalParameters"]["buildConfig"]["llbDefinition"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["op"]["Op"].get("exec"))
                    .map(|e| {
                        serde_json::json!([e["meta"]["args"], e["meta"]["cwd"], e["meta"]["env"]])
                    })
                    .collect()
            };
            assert_eq!(execs(b), execs(r), "mode=max: exec steps");
            // Each exec's mounts: the same destinations and types, the secret by id.
            let mounts = |p: &Value| -> Vec<Value> {
                p[bd]["internalParameters"]["buildConfig"]["llbDefinition"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["op"]["Op"].get("exec"))
                    .map(|e| {
                        let list: Vec<Value> = e["mounts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| {
                                serde_json::json!([m["dest"], m["mountType"], m["secretOpt"]["ID"]])
                            })
                            .collect();
                        Value::Array(list)
                    })
                    .collect()
            };
            assert_eq!(mounts(b), mounts(r), "mode=max: exec mounts");
            let sources = |p: &Value| -> Vec<Value> {
                p[bd]["internalParameters"]["buildConfig"]["llbDefinition"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["op"]["Op"]["source"]["identifier"].as_str())
                    .filter(|i| i.starts_with("docker-image://"))
                    .map(|i| Value::String(i.to_owned()))
                    .collect()
            };
            assert_eq!(sources(b), sources(r), "mode=max: image sources");
            let info = |m: &Value| m["buildkit_metadata"]["source"]["infos"][0].clone();
            for k in ["filename", "language", "data"] {
                assert_eq!(info(bm)[k], info(rm)[k], "mode=max: source info {k}");
            }
            assert!(rm["buildkit_metadata"]["layers"].is_object(), "{rm}");
        } else {
            assert!(r[bd]["internalParameters"].get("buildConfig").is_none());
        }
        // Never the secret's value, anywhere.
        for st in &rb_st {
            assert!(!st.to_string().contains(SECRET), "secret in {st}");
        }
    }
}

fn skopeo_raw(reference: &str) -> Value {
    let text = run_stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    json(text.as_bytes(), reference)
}

fn rbuild_inspect(reference: &str, format: &str) -> Value {
    let text = run_stdout(
        Command::new(env!("CARGO_BIN_EXE_rbuild")).args(["inspect", "--format", format, reference]),
    );
    json(text.as_bytes(), format)
}

/// Every `name@version` of an `npm ls --all --json` tree.
fn npm_tree(v: &Value, out: &mut Vec<String>) {
    if let Some(deps) = v["dependencies"].as_object() {
        for (name, d) in deps {
            if let Some(ver) = d["version"].as_str() {
                if d["missing"] != true {
                    out.push(format!("{name}@{ver}"));
                }
            }
            npm_tree(d, out);
        }
    }
}

/// The "done": an example pushed with `--provenance=mode=max --sbom=true`: the
/// provenance names the base by digest and no secret; the SBOM lists every Debian package
/// `dpkg-query` reports in the image and every npm package `npm ls --all` reports.
#[test]
fn example_pushed_with_provenance_and_sbom() {
    let registry = LocalRegistry::ensure();
    let repo = registry.unique_repo("supply-user-service");
    let reference = format!("{}/{repo}:attested", registry.host());
    let cache = std::env::var_os("RBUILD_E2E_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join("cache-e2e"));
    let work = scratch("supply-secret");
    let secret_file = work.path().join("npmrc");
    std::fs::write(&secret_file, SECRET).unwrap();
    rbuild(
        &[
            "-t",
            &reference,
            "--push",
            "--provenance=mode=max",
            "--sbom=true",
            // A secret given to the build (no step mounts it) never reaches the provenance.
            "--secret",
            &format!("id=npmrc,src={}", secret_file.display()),
        ],
        &cache,
        &workspace_root().join("examples/user-service"),
    );
    let index = skopeo_raw(&reference);
    let entries = index["manifests"].as_array().expect("an index");
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.digest"],
        entries[0]["digest"]
    );
    assert_eq!(entries[1]["platform"]["os"], "unknown");

    // The provenance: the base by digest, as the registry has it.
    let prov = rbuild_inspect(&reference, "{{json .Provenance}}");
    let deps = prov["SLSA"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("resolvedDependencies")
        .clone();
    let node = registry.node();
    let node_digest = run_stdout(Command::new("bash").args([
        "-c",
        &format!(
            "skopeo inspect --raw --tls-verify=false docker://{node} | sha256sum | cut -d' ' -f1"
        ),
    ]));
    assert!(
        deps.iter().any(|d| d["uri"]
            .as_str()
            .unwrap_or("")
            .contains("library/node@20-slim")
            && d["digest"]["sha256"] == node_digest.trim()),
        "base {node}@{node_digest} not in {deps:?}"
    );
    assert!(!prov.to_string().contains(SECRET));
    assert!(
        prov["SLSA"]["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"]
            .as_array()
            .is_some_and(|s| s.len() > 5),
        "mode=max lists the steps"
    );

    // The SBOM against the image itself.
    let sbom = rbuild_inspect(&reference, "{{json .SBOM}}");
    let packages = sbom["SPDX"]["packages"]
        .as_array()
        .expect("packages")
        .clone();
    assert_eq!(sbom["SPDX"]["spdxVersion"], "SPDX-2.3");
    let purls: Vec<String> = packages
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["referenceLocator"].as_str().map(str::to_owned))
        .collect();
    let named: std::collections::BTreeSet<String> = packages
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["name"].as_str().unwrap_or(""),
                p["versionInfo"].as_str().unwrap_or("")
            )
        })
        .collect();
    let dpkg = run_stdout(
        Command::new("/usr/bin/docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "dpkg-query",
            ])
            .arg(&reference)
            .args(["-W", "-f", "${Package} ${Version}\\n"]),
    );
    let debs: Vec<&str> = dpkg.lines().filter(|l| !l.is_empty()).collect();
    assert!(debs.len() > 50, "dpkg-query: {dpkg}");
    for l in &debs {
        let (name, version) = l.split_once(' ').expect("name version");
        assert!(
            named.contains(&format!("{name}@{version}"))
                && purls.iter().any(
                    |p| p.starts_with(&format!("pkg:deb/debian/{}@", name.replace('+', "%2B")))
                ),
            "Debian package {name} {version} missing from the SBOM"
        );
    }
    let npm = run_stdout(
        Command::new("/usr/bin/docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "0",
                "--entrypoint",
                "npm",
            ])
            .arg(&reference)
            .args(["ls", "--all", "--json"]),
    );
    let mut npm_pkgs = Vec::new();
    npm_tree(&json(npm.as_bytes(), "npm ls"), &mut npm_pkgs);
    assert!(npm_pkgs.len() > 20, "npm ls: {npm}");
    for p in &npm_pkgs {
        assert!(named.contains(p), "npm package {p} missing from the SBOM");
    }
    eprintln!(
        "SBOM: {} packages; dpkg-query {} and npm ls {} all listed",
        packages.len(),
        debs.len(),
        npm_pkgs.len()
    );
    let _ = Command::new("/usr/bin/docker")
        .args(["rmi", "-f", &reference])
        .output();
}

fn small_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let busybox = LocalRegistry::ensure().busybox();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {busybox}\nRUN echo built > /built && mkdir -p /app\nCOPY . /app/\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a").unwrap();
    ctx
}

/// Two builds of the same sources on two cache directories with SOURCE_DATE_EPOCH give the
/// same index digest, attestations (provenance mode=max, SBOM) included.
#[test]
fn reproducible_index_with_attestations_across_cache_dirs() {
    let work = scratch("supply-repro");
    let w = work.path();
    let ctx = small_context(w);
    let mut digests = Vec::new();
    for n in 0..2 {
        let tar = w.join(format!("out{n}.tar"));
        rbuild(
            &[
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
                "--provenance=mode=max",
                "--sbom=true",
                "-t",
                "127.0.0.1:5000/supply/repro:1",
                "-o",
                &format!("type=oci,dest={}", tar.display()),
            ],
            &w.join(format!("cache{n}")),
            &ctx,
        );
        let layout = Layout::untar(&tar, &w.join(format!("l{n}")));
        let top = json(
            &std::fs::read(layout.0.join("index.json")).unwrap(),
            "index.json",
        );
        let (_, _, _, st) = attestation_parts(&layout, "rbuild");
        let meta = &st[1]["predicate"]["runDetails"]["metadata"];
        assert_eq!(meta["startedOn"], "2023-11-14T22:13:20Z");
        digests.push(top["manifests"][0]["digest"].clone());
    }
    assert_eq!(digests[0], digests[1]);
}

/// The OCI 1.1 referrers form keeps a one-platform image a plain manifest and lists the
/// attestation under the referrers tag fallback; `type=none` and
/// `BUILDX_NO_DEFAULT_ATTESTATIONS` switch buildx's default (mode=min provenance when
/// pushing) off.
#[test]
fn referrers_form_default_and_type_none() {
    let registry = LocalRegistry::ensure();
    let work = scratch("supply-forms");
    let w = work.path();
    let ctx = small_context(w);
    let cache = w.join("cache");
    let repo = registry.unique_repo("supply-forms");
    let r = |tag: &str| format!("{}/{repo}:{tag}", registry.host());

    // buildx's default: an index with a mode=min provenance (no build arguments).
    rbuild(
        &["-t", &r("default"), "--push", "--build-arg", "X=1"],
        &cache,
        &ctx,
    );
    let index = skopeo_raw(&r("default"));
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(2),
        "{index}"
    );
    let prov = rbuild_inspect(&r("default"), "{{json .Provenance.SLSA}}");
    let req = &prov["buildDefinition"]["externalParameters"]["request"];
    assert!(
        req.get("args").is_none(),
        "mode=min drops build args: {req}"
    );
    assert_eq!(
        prov["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        false
    );
    assert!(
        prov["buildDefinition"]["internalParameters"]
            .get("buildConfig")
            .is_none()
    );

    // type=none, and the environment variable: a plain manifest.
    rbuild(
        &["-t", &r("none"), "--push", "--attest", "type=none"],
        &cache,
        &ctx,
    );
    assert!(skopeo_raw(&r("none"))["layers"].is_array());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["build", "--progress=plain", "--cache-dir"])
        .arg(&cache)
        .args(["-t", &r("env"), "--push"])
        .arg(&ctx)
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    run(&mut cmd);
    assert!(skopeo_raw(&r("env"))["layers"].is_array());

    // Referrers: the tag is the image manifest; sha256-<hex> lists its attestation.
    rbuild(
        &[
            "-t",
            &r("ref"),
            "--push",
            "--provenance=mode=max",
            "--attest-referrers",
        ],
        &cache,
        &ctx,
    );
    let m = skopeo_raw(&r("ref"));
    assert!(m["layers"].is_array(), "still a plain manifest: {m}");
    let digest = run_stdout(Command::new("bash").args([
        "-c",
        &format!(
            "skopeo inspect --raw --tls-verify=false docker://{} | sha256sum | cut -d' ' -f1",
            r("ref")
        ),
    ]));
    let fallback = skopeo_raw(&r(&format!("sha256-{}", digest.trim())));
    let refs = fallback["manifests"].as_array().expect("referrers index");
    assert_eq!(refs.len(), 1, "{fallback}");
    assert_eq!(
        refs[0]["artifactType"],
        "application/vnd.docker.attestation.manifest.v1+json"
    );
    let am = skopeo_raw(&format!(
        "{}/{repo}@{}",
        registry.host(),
        refs[0]["digest"].as_str().unwrap()
    ));
    assert_eq!(am["subject"]["digest"], format!("sha256:{}", digest.trim()));
    let prov = rbuild_inspect(&r("ref"), "{{json .Provenance}}");
    assert!(
        prov["SLSA"]["buildDefinition"]["resolvedDependencies"].is_array(),
        "{prov}"
    );
}

/// Bad attestation flags and formats are usage errors naming the problem.
#[test]
fn bad_attest_flags_are_usage_errors() {
    for (args, needle) in [
        (vec!["build", "--attest", "type=vex", "."], "vex"),
        (vec!["build", "--provenance", "mode=huge", "."], "mode"),
        (
            vec!["build", "--sbom", "generator=example/scan", "."],
            "generator",
        ),
        (vec!["inspect", "--format", "{{.Name}}", "x"], "format"),
    ] {
        let out = output(Command::new(env!("CARGO_BIN_EXE_rbuild")).args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            describe(&Command::new("rbuild"), &out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // With only a local output the statements are files beside the image's files, as
    // BuildKit's local exporter writes them: the subjects are those files.
    let work = scratch("supply-local");
    let ctx = small_context(work.path());
    let dest = work.path().join("out");
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["build", "--progress=plain", "--sbom=true", "-o"])
            .arg(format!("type=local,dest={}", dest.display()))
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .arg(&ctx),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        describe(&Command::new("rbuild"), &out)
    );
    let sbom: Value =
        serde_json::from_slice(&std::fs::read(dest.join("sbom.spdx.json")).expect("sbom file"))
            .expect("sbom JSON");
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    let subjects = sbom["subject"].as_array().expect("subjects");
    assert!(
        subjects.iter().any(|s| s["name"] == "bin/busybox"
            && s["digest"]["sha256"]
                .as_str()
                .is_some_and(|d| d.len() == 64)),
        "{subjects:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("sbom.spdx.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Several platforms in one directory: one statement file per platform, each with its
    // own platform's files as subjects.
    let dest2 = work.path().join("out2");
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["build", "--progress=plain", "--sbom=true"])
            .args(["--platform", "linux/amd64,linux/arm64", "-o"])
            .arg(format!(
                "type=local,dest={},platform-split=false",
                dest2.display()
            ))
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .arg(&ctx),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        describe(&Command::new("rbuild"), &out)
    );
    for arch in ["amd64", "arm64"] {
        let f = dest2.join(format!("sbom.spdx.linux_{arch}.json"));
        let st: Value = serde_json::from_slice(&std::fs::read(&f).expect("sbom file")).unwrap();
        let names: Vec<&str> = st["subject"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert!(names.contains(&"bin/busybox"), "{arch}: {names:?}");
        assert!(
            !names.iter().any(|n| n.contains("sbom")),
            "{arch}: {names:?}"
        );
    }
    assert!(!dest2.join(".rbuild-platform-0").exists());
}

/// Two platforms: one attestation manifest per image, each naming its own image and its
/// own platform's base; `{{json .Provenance}}` is a map by platform, as buildx prints it.
#[test]
fn multi_platform_attestations_per_image() {
    let registry = LocalRegistry::ensure();
    let work = scratch("supply-multi");
    let ctx = small_context(work.path());
    let reference = format!(
        "{}/{}:multi",
        registry.host(),
        registry.unique_repo("supply-multi")
    );
    rbuild(
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &reference,
            "--push",
            "--provenance=mode=max",
            "--sbom=true",
        ],
        &work.path().join("cache"),
        &ctx,
    );
    let index = skopeo_raw(&reference);
    let m = index["manifests"].as_array().expect("manifests");
    assert_eq!(m.len(), 4, "{index}");
    for (img, att) in [(&m[0], &m[2]), (&m[1], &m[3])] {
        assert_eq!(
            att["annotations"]["vnd.docker.reference.digest"],
            img["digest"]
        );
        assert_eq!(att["platform"]["architecture"], "unknown");
    }
    let prov = rbuild_inspect(&reference, "{{json .Provenance}}");
    for arch in ["amd64", "arm64"] {
        let deps =
            &prov[format!("linux/{arch}")]["SLSA"]["buildDefinition"]["resolvedDependencies"];
        let uri = deps[0]["uri"].as_str().unwrap_or_default();
        assert!(
            uri.ends_with(&format!("platform=linux%2F{arch}")),
            "{arch}: {deps}"
        );
        assert_eq!(deps.as_array().map(Vec::len), Some(1), "{deps}");
    }
    let sbom = rbuild_inspect(&reference, "{{json .SBOM}}");
    assert_eq!(
        sbom["linux/arm64"]["SPDX"]["spdxVersion"], "SPDX-2.3",
        "{sbom}"
    );
}
