use std::collections::{BTreeMap, HashSet};

use futures_util::future::BoxFuture;
use registry_client::Platform;

use super::keys::RunKey;
use super::*;
use crate::engine::{Build, Error};
use crate::image::ImageConfig;

/// Resolves every reference to a digest made of the reference and the platform, with a
/// config holding only `PATH`.
struct Fixed;

fn fixed_digest(reference: &str, platform: &Platform) -> String {
    CacheKey::derive(None, "test-manifest", &(reference, platform.to_string()))
        .as_str()
        .to_owned()
}

impl ImageResolver for Fixed {
    fn resolve<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
    ) -> BoxFuture<'a, Result<ResolvedImage, Error>> {
        Box::pin(async move {
            let config = ImageConfig::from_slice(
                br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .expect("config parses");
            Ok(ResolvedImage {
                manifest_digest: fixed_digest(reference, platform),
                config,
            })
        })
    }
}

const DOCKERFILE: &str = r#"FROM base AS deps
RUN apt-get install -y curl
WORKDIR /app
COPY package.json ./
RUN npm ci

FROM deps AS test
RUN npm test

FROM base AS app
RUN apt-get install -y curl
COPY --from=deps /app/node_modules /app/node_modules
CMD ["node", "server.js"]
"#;

fn graph(targets: &[&str]) -> Graph {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), "{}").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let build = Build::new(dir.path())
        .unwrap()
        .dockerfile_text("Dockerfile", DOCKERFILE.to_owned())
        .platforms(["linux/amd64", "linux/arm64"])
        .unwrap()
        .cache_dir(cache.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(build.graph_with(&Fixed, targets)).unwrap()
}

#[test]
fn two_platforms_and_two_targets_share_their_common_steps() {
    let g = graph(&["test", "app"]);
    // Per platform: the base image, deps' RUN apt / WORKDIR / COPY / RUN npm ci, test's
    // RUN npm test, app's COPY --from and CMD: 8. app's RUN apt is deps' one. The context
    // files (package.json) are one vertex for both platforms: 2 × 8 + 1.
    assert_eq!(g.vertices.len(), 17, "{}", g.to_text());
    let keys: HashSet<&CacheKey> = g.vertices.iter().map(|v| &v.key).collect();
    assert_eq!(keys.len(), g.vertices.len(), "keys are unique");
    assert_eq!(g.results.len(), 4);

    // Topological: every input comes before the vertex reading it.
    for (i, v) in g.vertices.iter().enumerate() {
        for e in &v.inputs {
            let at = g.vertices.iter().position(|w| w.key == e.key).unwrap();
            assert!(at < i, "{} reads a later vertex", v.name);
        }
    }

    for platform in ["linux/amd64", "linux/arm64"] {
        let p: Platform = platform.parse().unwrap();
        let platform = p.to_string();
        let platform = platform.as_str();
        // The source's key is the engine's: the manifest digest.
        let image = CacheKey::derive(None, "image", &fixed_digest("base", &p));
        assert!(matches!(g.vertex(&image).unwrap().op, Op::Image { .. }));
        // The RUN on it is the engine's key too, and appears once though two stages
        // (deps and app) run it.
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let argv: Vec<String> = ["/bin/sh", "-c", "apt-get install -y curl"]
            .map(String::from)
            .to_vec();
        let apt = CacheKey::derive(
            Some(&image),
            "run",
            &RunKey {
                argv: &argv,
                env: &env,
                user: "",
                cwd: "/",
                network: "host",
                insecure: false,
                files: &[],
                mounts: &[],
                extra_hosts: &[],
                limits: None,
            },
        );
        let apt_runs: Vec<&Vertex> = g
            .vertices
            .iter()
            .filter(|v| v.platform == platform && v.name.ends_with("apt-get install -y curl"))
            .collect();
        assert_eq!(apt_runs.len(), 1, "{}", g.to_text());
        assert_eq!(apt_runs[0].key, apt);
        // WORKDIR /app on it: the engine's workdir key.
        let workdir = CacheKey::derive(Some(&apt), "workdir", &("/app", ""));
        assert!(g.vertex(&workdir).is_some(), "{}", g.to_text());

        // Results: test's image is its last RUN; app's ends with CMD (a metadata vertex)
        // over the COPY --from, which reads deps' filesystem.
        let test = g
            .results
            .iter()
            .find(|r| r.target == "test" && r.platform == platform)
            .unwrap();
        assert_eq!(test.key, test.rootfs);
        assert!(matches!(g.vertex(&test.key).unwrap().op, Op::Exec { .. }));
        let app = g
            .results
            .iter()
            .find(|r| r.target == "app" && r.platform == platform)
            .unwrap();
        let cmd = g.vertex(&app.key).unwrap();
        assert!(matches!(cmd.op, Op::Meta { .. }));
        assert_eq!(cmd.inputs[0].key, app.rootfs);
        let copy = g.vertex(&app.rootfs).unwrap();
        assert_eq!(
            copy.inputs[0].key, apt,
            "COPY --from builds on app's RUN apt"
        );
        assert_eq!(copy.inputs[1].kind, EdgeKind::Copy);
        let npm_ci = g.vertex(&copy.inputs[1].key).unwrap();
        assert!(npm_ci.name.ends_with("RUN npm ci"), "{}", npm_ci.name);
    }
    // Platforms differ everywhere but in the context files.
    let amd: HashSet<&CacheKey> = g
        .vertices
        .iter()
        .filter(|v| v.platform == "linux/amd64")
        .map(|v| &v.key)
        .collect();
    assert!(
        g.vertices
            .iter()
            .filter(|v| v.platform.starts_with("linux/arm64"))
            .all(|v| !amd.contains(&v.key))
    );
}

#[test]
fn merging_graphs_keeps_one_vertex_per_key_and_serialises_stably() {
    let both = graph(&["test", "app"]);
    let mut merged = graph(&["test"]);
    merged.merge(graph(&["app"]));
    assert_eq!(merged.vertices.len(), both.vertices.len());
    let mut a: Vec<&CacheKey> = merged.vertices.iter().map(|v| &v.key).collect();
    let mut b: Vec<&CacheKey> = both.vertices.iter().map(|v| &v.key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Same input, same JSON; and it reads back.
    let json = serde_json::to_string(&both).unwrap();
    assert_eq!(
        json,
        serde_json::to_string(&graph(&["test", "app"])).unwrap()
    );
    let back: Graph = serde_json::from_str(&json).unwrap();
    assert_eq!(back, both);
    // The text form has a line per vertex and per result.
    assert_eq!(
        both.to_text().lines().count(),
        both.vertices.len() + both.results.len()
    );
}

#[test]
fn a_changed_context_file_changes_the_copy_and_what_follows_only() {
    let g1 = graph(&["test"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), "{\"changed\":1}").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let build = Build::new(dir.path())
        .unwrap()
        .dockerfile_text("Dockerfile", DOCKERFILE.to_owned())
        .platforms(["linux/amd64", "linux/arm64"])
        .unwrap()
        .cache_dir(cache.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g2 = rt.block_on(build.graph_with(&Fixed, &["test"])).unwrap();
    let k1: HashSet<&CacheKey> = g1.vertices.iter().map(|v| &v.key).collect();
    let same: Vec<&str> = g2
        .vertices
        .iter()
        .filter(|v| k1.contains(&v.key))
        .map(|v| v.name.as_str())
        .collect();
    // Per platform the image, RUN apt and WORKDIR stay; context, COPY, npm ci, npm test change.
    assert_eq!(same.len(), 6, "{same:?}");
}

#[test]
fn add_host_ulimit_and_shm_size_are_in_the_graphs_run_keys_as_in_the_engines() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = || {
        Build::new(dir.path())
            .unwrap()
            .dockerfile_text("Dockerfile", "FROM base AS app\nRUN true\n".to_owned())
            .platforms(["linux/amd64"])
            .unwrap()
            .cache_dir(cache.path())
    };
    let build = base()
        .add_host("db", "10.0.0.7")
        .unwrap()
        .ulimit("nofile=1024:2048")
        .unwrap()
        .shm_size("128m")
        .unwrap();
    let plain = rt.block_on(base().graph_with(&Fixed, &["app"])).unwrap();
    let g = rt.block_on(build.graph_with(&Fixed, &["app"])).unwrap();
    let run_key = |g: &Graph| {
        g.vertices
            .iter()
            .find(|v| matches!(v.op, Op::Exec { .. }))
            .expect("a RUN vertex")
            .key
            .clone()
    };
    let p: Platform = "linux/amd64".parse().unwrap();
    let image = CacheKey::derive(None, "image", &fixed_digest("base", &p));
    let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    let argv: Vec<String> = ["/bin/sh", "-c", "true"].map(String::from).to_vec();
    let hosts = crate::engine::exec::extra_host_keys(&[("db".to_owned(), [10, 0, 0, 7].into())]);
    let limits = crate::sandbox::RunLimits {
        shm_size: Some(128 << 20),
        ulimits: vec!["nofile=1024:2048".parse().unwrap()],
    };
    let want = CacheKey::derive(
        Some(&image),
        "run",
        &RunKey {
            argv: &argv,
            env: &env,
            user: "",
            cwd: "/",
            network: "host",
            insecure: false,
            files: &[],
            mounts: &[],
            extra_hosts: &hosts,
            limits: Some(&limits),
        },
    );
    assert_eq!(run_key(&g), want, "{}", g.to_text());
    assert_ne!(run_key(&plain), want);
}

#[test]
fn onbuild_triggers_of_a_stage_are_vertices_of_the_stage_built_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = "FROM base AS parent\nONBUILD RUN echo fired\n\nFROM parent AS child\nRUN true\n";
    let build = Build::new(dir.path())
        .unwrap()
        .dockerfile_text("Dockerfile", text.to_owned())
        .platforms(["linux/amd64"])
        .unwrap()
        .cache_dir(cache.path());
    let g = rt.block_on(build.graph_with(&Fixed, &["child"])).unwrap();
    let p: Platform = "linux/amd64".parse().unwrap();
    let image = CacheKey::derive(None, "image", &fixed_digest("base", &p));
    let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    let run = |parent: &CacheKey, cmd: &str| {
        let argv: Vec<String> = ["/bin/sh", "-c", cmd].map(String::from).to_vec();
        CacheKey::derive(
            Some(parent),
            "run",
            &RunKey {
                argv: &argv,
                env: &env,
                user: "",
                cwd: "/",
                network: "host",
                insecure: false,
                files: &[],
                mounts: &[],
                extra_hosts: &[],
                limits: None,
            },
        )
    };
    // The trigger runs in the child, on the parent's filesystem (the image), before the
    // child's own RUN; the parent itself does not run it.
    let fired = run(&image, "echo fired");
    let trigger = g.vertex(&fired).expect("the trigger is a vertex");
    assert!(
        trigger.name.contains("ONBUILD RUN echo fired"),
        "{}",
        trigger.name
    );
    let result = g.results.iter().find(|r| r.target == "child").unwrap();
    assert_eq!(result.rootfs, run(&fired, "true"), "{}", g.to_text());
    let parent = rt.block_on(build.graph_with(&Fixed, &["parent"])).unwrap();
    assert!(parent.vertex(&fired).is_none(), "{}", parent.to_text());
}
