//! buildx flags a copied CI configuration passes (issue 20): the RUN environment equal to
//! the reference BuildKit's (`/etc/hosts`, hostname, with `--add-host`), `--no-cache-filter`,
//! `--pull` following a moved tag, `--builder` noted, and the flags rbuild cannot honour
//! refused with a clear error.

use std::path::Path;
use std::process::{Command, Output};

const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";

fn rbuild(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The reference BuildKit's local output of the context (buildctl, extra frontend opts).
fn reference_build(ctx: &Path, dest: &Path, opts: &[&str]) {
    let mut cmd = Command::new("/var/tmp/reference-buildkit/bin/buildctl");
    cmd.args([
        "--addr",
        "unix:///run/reference-buildkitd.sock",
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        "context=.",
        "--local",
        "dockerfile=.",
    ]);
    for o in opts {
        cmd.args(["--opt", o]);
    }
    cmd.arg("--output")
        .arg(format!("type=local,dest={}", dest.display()))
        .current_dir(ctx);
    let out = cmd.output().expect("run buildctl");
    ok(&out);
}

#[test]
fn run_sees_buildkits_hosts_and_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BUSYBOX} AS base\nRUN (cat /etc/hosts; echo ---; hostname; ls -l /etc/hostname 2>&1; true) > /out\n\
             FROM scratch\nCOPY --from=base /out /\n"
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    for (rb_flags, bk_opts) in [
        (vec![], vec![]),
        (
            vec!["--add-host", "db:10.1.2.3", "--add-host", "v6=[::2]"],
            vec!["add-hosts=db=10.1.2.3,v6=::2"],
        ),
    ] {
        let bk = dir.path().join("bk");
        let rb = dir.path().join("rb");
        let _ = std::fs::remove_dir_all(&bk);
        let _ = std::fs::remove_dir_all(&rb);
        reference_build(&ctx, &bk, &bk_opts);
        let mut args = vec!["build", "--cache-dir", cache.to_str().unwrap(), "-o"];
        args.push(rb.to_str().unwrap());
        args.extend(rb_flags);
        args.push(".");
        ok(&rbuild(&ctx, &args));
        let want = std::fs::read_to_string(bk.join("out")).unwrap();
        // The listing's size and date of /etc/hosts are the only parts that may differ.
        let strip = |s: &str| -> String {
            s.lines()
                .map(|l| {
                    if l.starts_with("-rw") {
                        "HOSTS-LISTING"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            strip(&std::fs::read_to_string(rb.join("out")).unwrap()),
            strip(&want)
        );
        assert!(
            want.starts_with("127.0.0.1\tlocalhost buildkitsandbox\n"),
            "{want}"
        );
    }
}

#[test]
fn add_host_gateway_is_the_host_and_bad_values_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN grep -x '127.0.0.1\tgw' /etc/hosts\n"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    ok(&rbuild(
        dir.path(),
        &[
            "build",
            "--cache-dir",
            cache,
            "--add-host",
            "gw:host-gateway",
            ".",
        ],
    ));
    for bad in ["nohost", "db:300.1.1.1", ":1.2.3.4"] {
        let out = rbuild(dir.path(), &["build", "--add-host", bad, "."]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--add-host"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn no_cache_filter_reruns_only_that_stage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX} AS deps\nRUN echo deps > /deps\n\
             FROM deps AS app\nRUN echo app > /app\n"
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "--cache-dir", cache];
        args.extend(extra);
        args.push(".");
        rbuild(dir.path(), &args)
    };
    ok(&build(&[]));
    let out = build(&["--no-cache-filter", "app"]);
    ok(&out);
    let err = text(&out.stderr);
    let step_of = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {needle} in\n{err}"))
    };
    let deps = step_of("RUN echo deps");
    let app = step_of("RUN echo app");
    assert!(err.contains(&format!("{deps} CACHED")), "{err}");
    assert!(!err.contains(&format!("{app} CACHED")), "{err}");
    let out = build(&["--no-cache-filter", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[test]
fn pull_follows_a_moved_tag() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let app = dir.path().join("app");
    std::fs::create_dir(&base).unwrap();
    std::fs::create_dir(&app).unwrap();
    std::fs::write(base.join("Dockerfile"), "FROM scratch\nCOPY v /v\n").unwrap();
    let tag = format!(
        "127.0.0.1:5000/checks-helper/pull-base:{}",
        std::process::id()
    );
    std::fs::write(
        app.join("Dockerfile"),
        format!("FROM {tag} AS base\nFROM scratch\nCOPY --from=base /v /v\n"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    for v in ["one", "two"] {
        std::fs::write(base.join("v"), v).unwrap();
        ok(&rbuild(
            &base,
            &["build", "--cache-dir", cache, "--push", "-t", &tag, "."],
        ));
        let out_dir = dir.path().join(format!("out-{v}"));
        ok(&rbuild(
            &app,
            &[
                "build",
                "--pull",
                "--cache-dir",
                cache,
                "-o",
                out_dir.to_str().unwrap(),
                ".",
            ],
        ));
        assert_eq!(std::fs::read_to_string(out_dir.join("v")).unwrap(), v);
    }
}

#[test]
fn unsupported_flags_are_refused_and_builder_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for (flag, value) in [
        ("--cgroup-parent", Some("/ci")),
        ("--resource", Some("memory=2g")),
        ("--policy", Some("filename=p.rego")),
        ("--debug", None),
    ] {
        let mut args = vec!["build", flag];
        args.extend(value);
        args.push(".");
        let out = rbuild(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{flag} is not supported by rbuild")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // -q: only the image ID, on stdout; not with another progress mode.
    let cache0 = dir.path().join("cache-q");
    let out = rbuild(
        dir.path(),
        &["build", "-q", "--cache-dir", cache0.to_str().unwrap(), "."],
    );
    ok(&out);
    assert!(
        text(&out.stdout).trim().starts_with("sha256:"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stderr).contains("FROM"), "{}", text(&out.stderr));
    let out = rbuild(dir.path(), &["build", "-q", "--progress=plain", "."]);
    assert_eq!(out.status.code(), Some(2));
    let cache = dir.path().join("cache");
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--builder",
            "ci-builder",
            "--cache-dir",
            cache.to_str().unwrap(),
            ".",
        ],
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("--builder \"ci-builder\" ignored"),
        "{}",
        text(&out.stderr)
    );
}

fn rbuild_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run rbuild")
}

/// `--load` puts the image into the Docker engine (the real dockerd), with its tag and
/// config; `--load=containerd` and an engine that does not answer are clear errors, before
/// anything is built; several platforms cannot be loaded (buildx's error).
#[test]
fn load_into_docker_and_clear_errors_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let label = format!("dropin-{}", std::process::id());
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nLABEL dropin.test={label}\n"),
    )
    .unwrap();
    let tag = format!("dropin-load:{}", std::process::id());
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let out = rbuild(
        dir.path(),
        &["build", "--cache-dir", cache, "--load", "-t", &tag, "."],
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains(&format!("Loaded image: {tag}")),
        "{}",
        text(&out.stderr)
    );
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"dropin.test\"}}",
            &tag,
        ])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    ok(&inspect);
    assert_eq!(text(&inspect.stdout).trim(), label);

    let out = rbuild_env(
        dir.path(),
        &["build", "--cache-dir", cache, "--load=containerd", "."],
        &[("CONTAINERD_ADDRESS", "/nonexistent/containerd.sock")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "--load into containerd: no containerd socket at /nonexistent/containerd.sock"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("FROM"),
        "refused before the build"
    );
    let out = rbuild_env(
        dir.path(),
        &["build", "--cache-dir", cache, "--load", "."],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--load into docker: no Docker engine answers"),
        "{}",
        text(&out.stderr)
    );
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--load",
            "--platform",
            "linux/amd64,linux/arm64",
            ".",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("docker exporter does not currently support exporting manifest lists")
    );
    let out = rbuild(dir.path(), &["build", "--load=podman", "."]);
    assert_eq!(out.status.code(), Some(2));
}

/// `--ulimit` and `--shm-size` reach the RUN step as they do under the reference BuildKit
/// (the same soft and hard limits, the same /dev/shm size); bad values exit 2; a changed
/// limit runs the step again (it is part of the cache key, as in BuildKit's ExecOp).
#[test]
fn ulimit_and_shm_size_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BUSYBOX} AS base\nRUN (ulimit -Sn; ulimit -Hn; ulimit -Sc; \
             grep ' /dev/shm ' /proc/mounts | cut -d' ' -f4 | tr ',' '\\n' | grep '^size=') > /out\n\
             FROM scratch\nCOPY --from=base /out /\n"
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let bk = dir.path().join("bk");
    reference_build(
        &ctx,
        &bk,
        &[
            "ulimit=nofile=1024:2048,core=0",
            &format!("shm-size={}", 128 << 20),
        ],
    );
    let want = std::fs::read_to_string(bk.join("out")).unwrap();
    assert_eq!(want, "1024\n2048\n0\nsize=131072k\n");
    let rb = dir.path().join("rb");
    let args = |out: &Path, nofile: &str| {
        vec![
            "build".to_owned(),
            "--progress=plain".to_owned(),
            "--cache-dir".to_owned(),
            cache.to_str().unwrap().to_owned(),
            "--ulimit".to_owned(),
            format!("nofile={nofile}"),
            "--ulimit".to_owned(),
            "core=0".to_owned(),
            "--shm-size".to_owned(),
            "128m".to_owned(),
            "-o".to_owned(),
            out.to_str().unwrap().to_owned(),
            ".".to_owned(),
        ]
    };
    let a = args(&rb, "1024:2048");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    ok(&rbuild(&ctx, &a));
    assert_eq!(std::fs::read_to_string(rb.join("out")).unwrap(), want);
    // Another limit: not the cached result.
    let rb2 = dir.path().join("rb2");
    let a = args(&rb2, "512:2048");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    ok(&rbuild(&ctx, &a));
    assert!(
        std::fs::read_to_string(rb2.join("out"))
            .unwrap()
            .starts_with("512\n")
    );
    for (flag, bad) in [
        ("--ulimit", "nofile=9:3"),
        ("--ulimit", "colour=1"),
        ("--shm-size", "lots"),
    ] {
        let out = rbuild(&ctx, &["build", flag, bad, "."]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {bad}: {}",
            text(&out.stderr)
        );
    }
}

/// The annotations of an OCI layout directory, as a comparable map: the layout entry's
/// (without the creation time), the index's, each platform's index entry and manifest.
fn layout_annotations(dir: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        read(
            &dir.join("blobs/sha256")
                .join(d.as_str().unwrap().trim_start_matches("sha256:")),
        )
    };
    let mut out = std::collections::BTreeMap::new();
    let layout = read(&dir.join("index.json"));
    let mut entry = layout["manifests"][0]["annotations"].clone();
    entry
        .as_object_mut()
        .unwrap()
        .remove("org.opencontainers.image.created");
    out.insert("layout-entry".to_owned(), entry);
    let index = blob(&layout["manifests"][0]["digest"]);
    out.insert("index".to_owned(), index["annotations"].clone());
    for m in index["manifests"].as_array().unwrap() {
        let p = format!(
            "{}/{}",
            m["platform"]["os"].as_str().unwrap(),
            m["platform"]["architecture"].as_str().unwrap()
        );
        out.insert(format!("entry {p}"), m["annotations"].clone());
        out.insert(
            format!("manifest {p}"),
            blob(&m["digest"])["annotations"].clone(),
        );
    }
    out
}

/// `--annotation` with each type and a platform, written where the reference BuildKit
/// writes them (the same exporter attributes given to buildctl); index annotations of a
/// single-platform image are BuildKit's error; a manifest annotation alone is fine.
#[test]
fn annotations_are_written_where_the_reference_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /\n").unwrap();
    std::fs::write(ctx.join("f"), "x\n").unwrap();
    let bk = dir.path().join("bk");
    let out = Command::new("/var/tmp/reference-buildkit/bin/buildctl")
        .args([
            "--addr",
            "unix:///run/reference-buildkitd.sock",
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=.",
            "--local",
            "dockerfile=.",
            "--opt",
            "platform=linux/amd64,linux/arm64",
            "--output",
        ])
        .arg(format!(
            "type=oci,tar=false,dest={},name=dropin/ann:1,annotation.m=1,annotation-index.i=2,\
             annotation-manifest-descriptor.md=3,annotation-index-descriptor.id=4,\
             annotation-manifest[linux/arm64].arm=5",
            bk.display()
        ))
        .current_dir(&ctx)
        .output()
        .unwrap();
    ok(&out);
    let rb = dir.path().join("rb");
    let cache = dir.path().join("cache");
    let dest = format!("type=oci,tar=false,dest={},name=dropin/ann:1", rb.display());
    ok(&rbuild(
        &ctx,
        &[
            "build",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--platform",
            "linux/amd64,linux/arm64",
            "--annotation",
            "m=1",
            "--annotation",
            "index:i=2",
            "--annotation",
            "manifest-descriptor:md=3",
            "--annotation",
            "index-descriptor:id=4",
            "--annotation",
            "manifest[linux/arm64]:arm=5",
            "-o",
            &dest,
            ".",
        ],
    ));
    let want = layout_annotations(&bk);
    assert_eq!(want["index"]["i"], "2", "{want:?}");
    assert_eq!(want["manifest linux/arm64"]["arm"], "5", "{want:?}");
    let mut got = layout_annotations(&rb);
    // The image name is spelled as given (BuildKit normalises it to docker.io/...).
    got.get_mut("layout-entry").unwrap()["io.containerd.image.name"] =
        want["layout-entry"]["io.containerd.image.name"].clone();
    assert_eq!(got, want);

    let out = rbuild(
        &ctx,
        &[
            "build",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--annotation",
            "index:i=2",
            "-o",
            &format!("type=oci,dest={}", dir.path().join("one.tar").display()),
            ".",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("index annotations not supported for single platform export"),
        "{}",
        text(&out.stderr)
    );
    let one = dir.path().join("one");
    ok(&rbuild(
        &ctx,
        &[
            "build",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--annotation",
            "org.opencontainers.image.title=app",
            "-o",
            &format!("type=oci,tar=false,dest={}", one.display()),
            ".",
        ],
    ));
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("index.json")).unwrap()).unwrap();
    let d = layout["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            one.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["annotations"]["org.opencontainers.image.title"], "app");
    for bad in [
        "layer:k=v",
        "index[linux/amd64]:k=v",
        "novalue",
        "manifest[linux/amd64:k=v",
    ] {
        let out = rbuild(&ctx, &["build", "--annotation", bad, "."]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
    }
}
