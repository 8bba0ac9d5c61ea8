//! The reference pipelines in `examples/ci/`: valid YAML with the per-platform recipe
//! (matrix of native runners, push by digest, a registry cache per platform, a merge job),
//! and the Kubernetes Jobs' own commands run as separate processes against the local
//! registry, as a cluster would run them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use test_support::{LocalRegistry, describe, run_stdout};
use yaml_rust2::{Yaml, YamlLoader};

/// This checkout (not test-support's idea of it, which a shared build cache may fix at
/// another worktree).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(path: &str) -> Vec<Yaml> {
    let file = workspace_root().join("examples/ci").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// The `run:` scripts of a job's steps, joined.
fn runs(job: &Yaml) -> String {
    list(&job["steps"], "steps")
        .iter()
        .filter_map(|st| st["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn uses(job: &Yaml) -> Vec<&str> {
    list(&job["steps"], "steps")
        .iter()
        .filter_map(|st| st["uses"].as_str())
        .collect()
}

#[test]
fn github_workflow_is_a_matrix_of_native_runners_and_a_merge_job() {
    let docs = load("github-actions.yml");
    assert_eq!(docs.len(), 1);
    let jobs = &docs[0]["jobs"];
    let build = &jobs["build"];
    let include = list(&build["strategy"]["matrix"]["include"], "matrix.include");
    let platforms: Vec<&str> = include
        .iter()
        .map(|m| s(&m["platform"], "platform"))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let runners: Vec<&str> = include.iter().map(|m| s(&m["runner"], "runner")).collect();
    assert_ne!(
        runners[0], runners[1],
        "each platform on a runner of its own"
    );
    for m in include {
        assert!(s(&m["platform"], "platform").ends_with(s(&m["arch"], "arch")));
    }
    assert_eq!(s(&build["runs-on"], "runs-on"), "${{ matrix.runner }}");
    let script = runs(build);
    for must in [
        "sudo --preserve-env=DOCKER_CONFIG \"$RUNNER_TEMP/bin/rbuild\" build",
        "--platform \"$PLATFORM\"",
        "type=image,push=true,push-by-digest=true,name-canonical=true",
        "--cache-to \"type=registry,ref=$IMAGE:buildcache-$ARCH,mode=max\"",
        "--cache-from \"type=registry,ref=$IMAGE:buildcache-$ARCH\"",
        "--metadata-file metadata.json",
        "containerimage.digest",
    ] {
        assert!(
            script.contains(must),
            "the build job lacks {must:?}:\n{script}"
        );
    }
    assert!(
        uses(build)
            .iter()
            .any(|u| u.starts_with("actions/upload-artifact@"))
    );
    let merge = &jobs["merge"];
    assert_eq!(s(&merge["needs"], "needs"), "build");
    assert!(
        uses(merge)
            .iter()
            .any(|u| u.starts_with("actions/download-artifact@"))
    );
    let script = runs(merge);
    assert!(
        script.contains("rbuild imagetools create -t \"$IMAGE:$TAG\""),
        "{script}"
    );
    // The workflow's image and the build env are the same variables.
    assert!(s(&docs[0]["env"]["IMAGE"], "env.IMAGE").contains("vars.REGISTRY"));
    assert_eq!(
        s(&docs[0]["env"]["RBUILD_IMAGE"], "env.RBUILD_IMAGE"),
        "${{ vars.RBUILD_IMAGE }}"
    );
    // Both jobs take rbuild out of its image.
    for job in [build, merge] {
        assert!(
            runs(job).contains("docker cp rbuild-bin:/usr/local/bin/rbuild"),
            "{job:?}"
        );
    }
}

/// A Job's container: its shell script and environment.
struct JobCommand {
    name: String,
    arch: Option<String>,
    script: String,
    env: BTreeMap<String, String>,
}

fn job_commands(path: &str) -> Vec<JobCommand> {
    let mut out = Vec::new();
    for doc in load(path) {
        if doc["kind"].as_str() != Some("Job") {
            continue;
        }
        let name = s(&doc["metadata"]["name"], "metadata.name").to_owned();
        let spec = &doc["spec"]["template"]["spec"];
        assert_eq!(
            s(&spec["restartPolicy"], "restartPolicy"),
            "Never",
            "{name}"
        );
        let arch = spec["nodeSelector"]["kubernetes.io/arch"]
            .as_str()
            .map(str::to_owned);
        let containers = list(&spec["containers"], "containers");
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        let command: Vec<&str> = list(&c["command"], "command")
            .iter()
            .map(|a| s(a, "command"))
            .collect();
        assert_eq!(command, ["/bin/sh", "-c"], "{name}");
        let args = list(&c["args"], "args");
        assert_eq!(args.len(), 1, "{name}");
        let script = s(&args[0], "args[0]").to_owned();
        // Kubernetes expands $(VAR) in args: the scripts use only the shell's $VAR.
        assert!(
            !script.contains("$("),
            "{name}: $( would be expanded by Kubernetes"
        );
        let mut env = BTreeMap::new();
        for e in list(&c["env"], "env") {
            env.insert(
                s(&e["name"], "env.name").to_owned(),
                s(&e["value"], "env.value").to_owned(),
            );
        }
        // Every volume mounted is declared.
        let volumes: Vec<&str> = list(&spec["volumes"], "volumes")
            .iter()
            .map(|v| s(&v["name"], "volume"))
            .collect();
        for m in list(&c["volumeMounts"], "volumeMounts") {
            assert!(volumes.contains(&s(&m["name"], "mount")), "{name}: {m:?}");
        }
        out.push(JobCommand {
            name,
            arch,
            script,
            env,
        });
    }
    out
}

#[test]
fn kubernetes_jobs_have_one_native_job_per_platform_and_a_merge_job() {
    let builds = job_commands("kubernetes/build.yaml");
    let archs: Vec<Option<&str>> = builds.iter().map(|j| j.arch.as_deref()).collect();
    assert_eq!(archs, [Some("amd64"), Some("arm64")]);
    for j in &builds {
        let arch = j.arch.as_deref().unwrap();
        assert_eq!(j.env["ARCH"], arch, "{}", j.name);
        assert_eq!(j.env["PLATFORM"], format!("linux/{arch}"), "{}", j.name);
        for must in [
            "push-by-digest=true",
            "--cache-to \"type=registry,ref=$IMAGE:buildcache-$ARCH,mode=max\"",
            "--cache-dir \"$CACHE_DIR\"",
        ] {
            assert!(j.script.contains(must), "{}: lacks {must:?}", j.name);
        }
    }
    let merge = job_commands("kubernetes/merge.yaml");
    assert_eq!(merge.len(), 1);
    assert!(merge[0].arch.is_none());
    assert!(
        merge[0]
            .script
            .contains("rbuild imagetools create -t \"$IMAGE:$TAG\"")
    );
}

fn state_dir() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/rbuild-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a Job's script as `/bin/sh -c`, with its environment as the manifest gives it
/// (after `envsubst` of `placeholders`), the paths the test overrides, and rbuild on PATH.
fn job_process(
    job: &JobCommand,
    placeholders: &[(&str, &str)],
    paths: &[(&str, &Path)],
) -> Command {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rbuild")).parent().unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&job.script);
    cmd.env(
        "PATH",
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()),
    );
    for (k, v) in &job.env {
        let mut v = v.clone();
        for (p, value) in placeholders {
            v = v.replace(&format!("${{{p}}}"), value);
        }
        assert!(
            !v.contains("${"),
            "{}: {k}={v} has a placeholder left",
            job.name
        );
        cmd.env(k, v);
    }
    for (k, p) in paths {
        cmd.env(k, p);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

#[test]
fn kubernetes_jobs_commands_build_push_and_merge_against_the_local_registry() {
    let reg = LocalRegistry::ensure();
    let repo = reg.unique_repo("ci-k8s-auth-service");
    let image = format!("{}/{repo}", reg.host());
    let placeholders = [("IMAGE", image.as_str()), ("TAG", "k8s")];
    let digests = tempfile::tempdir().unwrap();
    let meta_dir = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let context = workspace_root().join("examples/auth-service");

    let builds = job_commands("kubernetes/build.yaml");
    let mut running = Vec::new();
    for job in &builds {
        // The e2e runners' caches (a node's cache volume kept between Jobs): warm on reruns.
        let arch = job.arch.as_deref().unwrap();
        let cache = state_dir().join(format!("cache-runner-{arch}"));
        std::fs::create_dir_all(&cache).unwrap();
        let metadata = meta_dir.path().join(format!("{arch}.json"));
        let mut cmd = job_process(
            job,
            &placeholders,
            &[
                ("CONTEXT", context.as_path()),
                ("CACHE_DIR", cache.as_path()),
                ("METADATA", metadata.as_path()),
                ("DIGESTS_DIR", digests.path()),
                ("DOCKER_CONFIG", docker_config.path()),
            ],
        );
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", job.name));
        running.push((job, cmd, child));
    }
    for (job, cmd, child) in running {
        let out = child.wait_with_output().unwrap();
        let text = describe(&cmd, &out);
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        assert!(
            out.status.success(),
            "job {}:\n{}",
            job.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let merge = &job_commands("kubernetes/merge.yaml")[0];
    let mut cmd = job_process(
        merge,
        &placeholders,
        &[
            ("DIGESTS_DIR", digests.path()),
            ("DOCKER_CONFIG", docker_config.path()),
        ],
    );
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    let inspected = String::from_utf8_lossy(&out.stdout);
    assert!(
        inspected.contains("linux/amd64") && inspected.contains("linux/arm64"),
        "{inspected}"
    );

    // One index: each Job's entries, as the Job pushed them.
    let raw = |r: &str| -> Value {
        serde_json::from_str(&run_stdout(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ])))
        .unwrap()
    };
    let index = raw(&format!("{image}:k8s"));
    let mut expected = Vec::new();
    for arch in ["amd64", "arm64"] {
        let d = std::fs::read_to_string(digests.path().join(arch)).unwrap();
        let pushed = raw(&format!("{image}@{}", d.trim()));
        expected.extend(
            pushed["manifests"]
                .as_array()
                .expect("an index")
                .iter()
                .cloned(),
        );
    }
    assert_eq!(index["manifests"].as_array().unwrap(), &expected);
    // And the registry cache of each platform is there for the next run.
    let tags = run_stdout(
        Command::new("curl").args(["-s", &format!("http://{}/v2/{repo}/tags/list", reg.host())]),
    );
    for t in ["buildcache-amd64", "buildcache-arm64", "k8s"] {
        assert!(tags.contains(&format!("\"{t}\"")), "{t}: {tags}");
    }
}
