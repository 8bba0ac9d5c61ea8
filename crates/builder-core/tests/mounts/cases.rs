//! RUN --mount, RUN --network and build secrets: section 13 of the conformance checklist
//! (MNT-*, NET-*), DI-06, and issue 9's "Done means".

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use builder_core::layer_cache::{Cache, UsageKind};
use builder_core::{SecretSource, SshSource};
use sha2::Digest as _;

use crate::util::{
    Case, ChildBuild, R, expect_err, files_containing, ok, tree_listing, wait_child, walkdir,
};

/// The layers of the busybox base (new layers come after them).
const BUSYBOX_LAYERS: usize = 1;

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A value nobody else writes: the secret the secret tests look for.
fn unique_secret() -> String {
    let seed = format!(
        "{}-{:?}-{:?}",
        std::process::id(),
        Instant::now(),
        std::time::SystemTime::now()
    );
    format!("rbsecret{}", &sha256_hex(seed.as_bytes())[..32])
}

/// The instance directories of every cache mount of a cache.
fn cache_instances(cache: &Path) -> Vec<PathBuf> {
    let root = cache.join("other/cache-mounts");
    let mut out = Vec::new();
    for d in fs::read_dir(&root).into_iter().flatten().flatten() {
        for i in fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let p = i.path();
            if p.is_dir() && !i.file_name().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The new layers hold nothing but the runtime's mount points, which the first RUN on
/// busybox (no `/dev`, `/proc`, `/sys`) adds as BuildKit's runc does.
fn only_mount_points(names: &[String]) -> bool {
    names
        .iter()
        .all(|n| ["dev/", "proc/", "sys/"].contains(&n.as_str()))
}

// ---- MNT-01, MNT-02: bind mounts ----------------------------------------------------

pub fn mnt_01_context_bind_is_read_only() -> R {
    let c = Case::new();
    c.file("testfile", "contents0");
    let img = ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=target=/context [ \"$(cat /context/testfile)\" = contents0 ]\nRUN --mount=target=/context sh -c '! touch /context/x'\n",
    ))?;
    ensure!(!img.exists("/context"), "the mount point reached the image");
    ensure!(!img.exists("/testfile"), "a context file reached the image");
    let names = img.new_layer_entries(BUSYBOX_LAYERS)?;
    ensure!(
        only_mount_points(&names),
        "the steps wrote layers: {names:?}"
    );
    Ok(())
}

pub fn mnt_02_rw_bind_from_stage_discards_writes() -> R {
    let c = Case::new();
    let img = ok(c.build(
        "FROM {BUSYBOX} AS build\nRUN mkdir out && echo foo > out/foo\nFROM {BUSYBOX}\nRUN --mount=from=build,src=out,target=/out,rw touch /out/bar && [ -f /out/foo ]\nRUN --mount=from=build,src=out,target=/out [ ! -f /out/bar ]\n",
    ))?;
    ensure!(!img.exists("/out"), "the mount point reached the image");
    Ok(())
}

/// `from=` an image reference (not a stage), and mounts nested in each other (mounted
/// parents first whatever their order on the line).
pub fn bind_from_an_image_and_nested_mounts() -> R {
    let c = Case::new();
    c.file("ctxfile", "c");
    let img = ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=tmpfs,target=/m/t --mount=from={BUSYBOX},target=/m/img,source=/bin --mount=target=/m/t/ctx --mount=type=tmpfs,target=/m sh -c '[ -x /m/img/busybox ] && [ -f /m/t/ctx/ctxfile ] && touch /m/t/x /m/y && echo ok > /ok'\n",
    ))?;
    ensure_eq!(img.read("/ok")?, "ok\n");
    ensure!(!img.exists("/m"), "a mount point reached the image");
    Ok(())
}

/// Issue 9: "a bind mount with `rw` leaves the context untouched" — with and without a
/// `.dockerignore` (a direct overlay over the context, or a filtered private copy).
pub fn mnt_02_rw_bind_leaves_the_context_untouched() -> R {
    for ignore in [false, true] {
        let c = Case::new();
        c.file("a", "original a\n").file("dir/b", "original b\n");
        if ignore {
            c.file(".dockerignore", "ignored\n").file("ignored", "x");
        }
        c.file("Dockerfile", "");
        let before = tree_listing(&c.ctx())?;
        let img = ok(c.build(
            "FROM {BUSYBOX}\nRUN --mount=type=bind,target=/ctx,rw sh -c 'echo changed > /ctx/a && rm /ctx/dir/b && touch /ctx/new && chmod 600 /ctx/a && cat /ctx/a > /seen'\nRUN --mount=target=/ctx sh -c 'cat /ctx/a /ctx/dir/b > /after && [ ! -e /ctx/new ]'\n",
        ))?;
        // The Dockerfile was rewritten by the build call: compare everything else.
        let after: Vec<String> = tree_listing(&c.ctx())?
            .into_iter()
            .filter(|l| !l.starts_with("Dockerfile "))
            .collect();
        let before: Vec<String> = before
            .into_iter()
            .filter(|l| !l.starts_with("Dockerfile "))
            .collect();
        ensure_eq!(after, before);
        ensure_eq!(img.read("/seen")?, "changed\n");
        ensure_eq!(img.read("/after")?, "original a\noriginal b\n");
    }
    Ok(())
}

/// DI-06: what .dockerignore excludes is not in a bind mount of the context.
pub fn di_06_ignored_files_are_hidden_from_bind_mounts() -> R {
    let c = Case::new();
    c.file("secret.txt", "s")
        .file("keep.txt", "k")
        .file(".dockerignore", "secret.txt\n");
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=target=/ctx [ ! -e /ctx/secret.txt ] && [ -f /ctx/keep.txt ]\n",
    ))?;
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=target=/s,source=secret.txt true\n"),
        "not found",
    )
}

/// A bind mount of the context is part of the key: a changed file reruns the step.
pub fn context_bind_content_is_in_the_cache_key() -> R {
    let c = Case::new();
    c.file("v", "1");
    let text = "FROM {BUSYBOX}\nRUN --mount=target=/ctx,source=v cp /ctx /v\n";
    let a = ok(c.build(text))?;
    ensure_eq!(a.read("/v")?, "1");
    let b = ok(c.build(text))?;
    ensure!(
        b.cached("RUN --mount"),
        "an unchanged context did not hit the cache"
    );
    c.file("v", "2");
    let d = ok(c.build(text))?;
    ensure!(!d.cached("RUN --mount"), "a changed file hit the cache");
    ensure_eq!(d.read("/v")?, "2");
    Ok(())
}

// ---- MNT-03, MNT-04: cache mounts ------------------------------------------------------

pub fn mnt_03_cache_persists_and_stays_out_of_the_image() -> R {
    let c = Case::new();
    let img = ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\nRUN --mount=type=cache,target=/mycache2 [ ! -f /mycache2/foo ]\nRUN --mount=type=cache,target=/mycache [ -f /mycache/foo ]\nRUN [ ! -f /mycache/foo ]\n",
    ))?;
    ensure!(
        !img.exists("/mycache"),
        "the cache mount point reached the image"
    );
    let names = img.new_layer_entries(BUSYBOX_LAYERS)?;
    ensure!(
        only_mount_points(&names),
        "cache steps wrote layers: {names:?}"
    );
    Ok(())
}

/// Issue 9: a cache mount filled by one build is seen by the next; `du` counts it, a
/// content change does not change the key, `prune --all` removes it.
pub fn cache_mount_is_seen_by_the_next_build() -> R {
    let c = Case::new();
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,id=shared-cache,target=/c sh -c 'echo first > /c/note && dd if=/dev/zero of=/c/blob bs=1024 count=512 2>/dev/null'\n",
    ))?;
    let img = ok(c.build(
        "FROM {BUSYBOX}\nWORKDIR /w\nRUN --mount=type=cache,id=shared-cache,target=cache cat cache/note > /seen\n",
    ))?;
    ensure_eq!(img.read("/seen")?, "first\n");
    let cache = Cache::open(c.cache()).map_err(|e| e.to_string())?;
    let usage = cache.du().map_err(|e| e.to_string())?;
    let other = usage.kinds[&UsageKind::Other].bytes;
    ensure!(other >= 512 * 1024, "du counts {other} bytes of other data");
    let again = ok(c.build(
        "FROM {BUSYBOX}\nWORKDIR /w\nRUN --mount=type=cache,id=shared-cache,target=cache cat cache/note > /seen\n",
    ))?;
    ensure!(
        again.cached("RUN --mount"),
        "the same step missed the cache"
    );
    cache.prune(None, true).map_err(|e| e.to_string())?;
    ensure!(
        cache_instances(c.cache()).is_empty(),
        "prune --all left cache mounts: {:?}",
        cache_instances(c.cache())
    );
    let fresh = ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,id=shared-cache,target=/c sh -c 'ls -A /c > /list'\n",
    ))?;
    ensure_eq!(fresh.read("/list")?, "");
    Ok(())
}

pub fn mnt_04_cache_owner_and_mode() -> R {
    let c = Case::new();
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode=0751 [ \"$(stat -c '%u %g %f' /mycache)\" = \"1001 1002 41e9\" ]\n",
    ))?;
    Ok(())
}

/// `from`/`source` seed a cache from a stage; `readonly` refuses writes.
pub fn cache_seeded_from_a_stage_and_readonly() -> R {
    let c = Case::new();
    let img = ok(c.build(
        "FROM {BUSYBOX} AS seed\nRUN mkdir -p /data/sub && echo seeded > /data/sub/f && chown 7:8 /data/sub/f\nFROM {BUSYBOX}\nRUN --mount=type=cache,target=/c,from=seed,source=/data sh -c '[ \"$(cat /c/sub/f)\" = seeded ] && [ \"$(stat -c %u:%g /c/sub/f)\" = 7:8 ] && echo more > /c/more'\nRUN --mount=type=cache,target=/c,from=seed,source=/data,ro sh -c 'cat /c/more > /more; ! touch /c/x'\n",
    ))?;
    ensure_eq!(img.read("/more")?, "more\n");
    Ok(())
}

/// Issue 9: two concurrent builds (separate processes) using a `sharing=locked` cache
/// never run the step at the same moment; the same builds with `sharing=shared` do (the
/// control that shows the check can fail); `private` users get separate directories.
pub fn cache_sharing_locked_serialises_processes() -> R {
    let run_pair = |sharing: &str| -> Result<Vec<String>, libtest_mimic::Failed> {
        let c = Case::new();
        // The base image first, so both builds reach the step at about the same time.
        ok(c.build("FROM {BUSYBOX}\nRUN true\n"))?;
        // Shared users wait (up to 10 s) for each other to start, so that the check does
        // not depend on how fast a loaded machine starts the second build; the others
        // hold the mount for 2 s.
        let hold = if sharing == "shared" {
            "i=0; while [ $(grep -c start /c/log) -lt 2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done"
        } else {
            "sleep 2"
        };
        c.file(
            "Dockerfile",
            &crate::util::df(&format!(
                "FROM {{BUSYBOX}}\nARG N\nRUN --mount=type=cache,target=/c,sharing={sharing} sh -c 'echo start $N >> /c/log; {hold}; echo end $N >> /c/log'\n"
            )),
        );
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| {
                ChildBuild {
                    ctx: &c.ctx(),
                    cache: c.cache(),
                    build_args: vec![("N", n)],
                    env_secrets: vec![],
                    extra_env: vec![],
                }
                .spawn()
            })
            .collect();
        for ch in children {
            wait_child(ch)?;
        }
        let mut logs = Vec::new();
        for i in cache_instances(c.cache()) {
            if let Ok(l) = fs::read_to_string(i.join("log")) {
                logs.push(l);
            }
        }
        Ok(logs)
    };
    let locked = run_pair("locked")?;
    ensure_eq!(locked.len(), 1);
    let lines: Vec<&str> = locked[0].lines().collect();
    ensure_eq!(lines.len(), 4);
    for pair in lines.chunks(2) {
        let (s, e) = (pair[0], pair[1]);
        ensure!(
            s.starts_with("start ") && e == s.replacen("start", "end", 1),
            "the steps overlapped: {lines:?}"
        );
    }
    let shared = run_pair("shared")?;
    ensure_eq!(shared.len(), 1);
    let lines: Vec<&str> = shared[0].lines().collect();
    ensure!(
        lines.len() == 4 && lines[0].starts_with("start") && lines[1].starts_with("start"),
        "shared users did not run together: {lines:?}"
    );
    let private = run_pair("private")?;
    ensure_eq!(private.len(), 2);
    for l in &private {
        ensure_eq!(l.lines().count(), 2);
    }
    Ok(())
}

/// Issue 9: the second `npm ci` of a small project with a cache mount downloads nothing:
/// it runs with `--network=none` (and `--offline`) from the cache the first one filled. A
/// fresh cache id in the same conditions fails (the control).
pub fn npm_ci_second_run_needs_no_network() -> R {
    let c = Case::new();
    c.file(
        "package.json",
        "{\"name\":\"mounts-npm-test\",\"version\":\"1.0.0\",\"private\":true,\"dependencies\":{\"express\":\"4.21.2\"}}\n",
    );
    let lock = std::process::Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .current_dir(c.ctx())
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    ensure!(
        lock.status.success(),
        "npm could not write the lockfile: {}",
        String::from_utf8_lossy(&lock.stderr)
    );
    let t0 = Instant::now();
    let first = ok(c.build(
        "FROM {NODE}\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund\n",
    ))?;
    let first_total = t0.elapsed();
    ensure!(
        first.exists("/app/node_modules/express/package.json"),
        "the first npm ci installed nothing"
    );
    ensure!(
        !first.exists("/root/.npm/_cacache"),
        "the npm cache reached the image"
    );
    let t1 = Instant::now();
    let second = ok(c.build(
        "FROM {NODE}\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN --network=none --mount=type=cache,target=/root/.npm npm ci --offline --no-audit --no-fund\n",
    ))?;
    let second_total = t1.elapsed();
    ensure!(
        second.exists("/app/node_modules/express/package.json"),
        "the second npm ci installed nothing"
    );
    let (s1, s2) = (
        first.step_time("npm ci").unwrap_or_default(),
        second.step_time("npm ci").unwrap_or_default(),
    );
    eprintln!(
        "npm ci step: first (network, cold cache) {s1:.2?}, second (--network=none, warm cache) {s2:.2?}; builds {first_total:.2?} / {second_total:.2?}"
    );
    expect_err(
        c.build(
            "FROM {NODE}\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN --network=none --mount=type=cache,id=empty-npm,target=/root/.npm npm ci --offline --no-audit --no-fund\n",
        ),
        "did not complete successfully",
    )?;
    Ok(())
}

// ---- MNT-05: tmpfs ---------------------------------------------------------------------

pub fn mnt_05_tmpfs_is_empty_not_kept_and_sized() -> R {
    let c = Case::new();
    let img = ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=target=/mytmp,type=tmpfs touch /mytmp/foo\nRUN [ ! -f /mytmp/foo ]\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m mount | grep /dev/shm | grep -q size=131072k\n",
    ))?;
    ensure!(
        !img.exists("/mytmp"),
        "the tmpfs mount point reached the image"
    );
    Ok(())
}

// ---- MNT-06, MNT-07: secrets -----------------------------------------------------------

pub fn mnt_06_secret_file_options_and_no_leftovers() -> R {
    let c = Case::new();
    let secret = c.path().join("pw");
    fs::write(&secret, "pw").map_err(|e| e.to_string())?;
    let img = ok(c.build_with(
        "FROM {BUSYBOX}\nRUN --mount=type=secret,required=false,mode=741,uid=100,gid=102,target=/mysecret [ \"$(stat -c '%u %g %f' /mysecret)\" = \"100 102 81e1\" ]\nRUN [ ! -f /mysecret ]\nRUN --mount=type=secret,id=mysecret [ \"$(cat /run/secrets/mysecret)\" = pw ] && [ \"$(stat -c '%a' /run/secrets/mysecret)\" = 400 ]\n",
        |b| b.secret("mysecret", SecretSource::File(secret.clone())),
    ))?;
    ensure!(
        !img.exists("/mysecret"),
        "the secret's mount point reached the image"
    );
    ensure!(
        !img.exists("/run/secrets"),
        "/run/secrets reached the image"
    );
    // Optional and absent: the step runs without it.
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=secret,id=nothere [ ! -e /run/secrets/nothere ]\n",
    ))?;
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=type=secret,required,id=mysecret true\n"),
        "secret mysecret: not found",
    )
}

pub fn mnt_07_secret_as_environment_variable() -> R {
    let c = Case::new();
    let secret = c.path().join("pw");
    fs::write(&secret, "pw").map_err(|e| e.to_string())?;
    let img = ok(c.build_with(
        "FROM {BUSYBOX}\nENV SECRET_ENV=foo\nRUN --mount=type=secret,id=mysecret,env=SECRET_ENV [ \"$SECRET_ENV\" = pw ] && [ ! -f /run/secrets/mysecret ]\nRUN [ \"$SECRET_ENV\" = foo ] && echo ok > /ok\n",
        |b| b.secret("mysecret", SecretSource::File(secret.clone())),
    ))?;
    ensure_eq!(img.read("/ok")?, "ok\n");
    Ok(())
}

/// Issue 9: a secret is readable in the step and absent from every exported byte (the OCI
/// archive, every blob gunzipped), the cache directory, the progress events, the report;
/// its key is its id, not its value.
pub fn secret_is_absent_from_every_exported_byte() -> R {
    let c = Case::new();
    let value = unique_secret();
    let sum = sha256_hex(value.as_bytes());
    let secret = c.path().join("token");
    fs::write(&secret, &value).map_err(|e| e.to_string())?;
    let text = "FROM {BUSYBOX}\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /file.sha\nRUN --mount=type=secret,id=tok,env=TOK sh -c 'printf %s \"$TOK\" | sha256sum | cut -c1-64 > /env.sha'\nRUN --mount=type=secret,id=tok,target=/etc/tok.conf cp /etc/tok.conf /etc/tok.copy && sha256sum /etc/tok.copy | cut -c1-64 > /copy.sha && rm /etc/tok.copy\n";
    let archive = c.path().join("image.tar");
    let img = ok(c.build_with(text, |b| {
        Ok(b.secret("tok", SecretSource::File(secret.clone()))?
            .output(format!("type=oci,dest={}", archive.display()).parse()?)
            .output(format!("type=docker,dest={}", c.path().join("docker.tar").display()).parse()?))
    }))?;
    for f in ["/file.sha", "/env.sha", "/copy.sha"] {
        ensure_eq!(img.read(f)?.trim(), sum);
    }
    let names = img.new_layer_entries(BUSYBOX_LAYERS)?;
    ensure!(
        !names
            .iter()
            .any(|n| n.contains("secrets") || n.contains("tok.conf")),
        "a secret mount point reached a layer: {names:?}"
    );
    let needle = value.as_bytes();
    for dir in [c.cache().to_owned(), img.layout.clone(), img.root.clone()] {
        let hits = files_containing(&dir, needle)?;
        ensure!(hits.is_empty(), "the secret is in {hits:?}");
    }
    for f in [archive.clone(), c.path().join("docker.tar")] {
        let hits = files_containing(f.parent().unwrap_or(Path::new("/")), needle)?
            .into_iter()
            .filter(|h| h.starts_with(&f.display().to_string()))
            .collect::<Vec<_>>();
        ensure!(hits.is_empty(), "the secret is in {hits:?}");
    }
    let events = format!("{:?}", img.events);
    ensure!(
        !events.contains(&value),
        "the secret is in the progress events"
    );
    ensure!(
        !format!("{:?}", img.report).contains(&value),
        "the secret is in the metadata"
    );
    // No secret file is left in /dev/shm or the temp directory by rbuild.
    for d in [Path::new("/dev/shm").to_owned(), std::env::temp_dir()] {
        let left: Vec<_> = fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("rbuild-run-"))
            .map(|e| e.path())
            .collect();
        ensure!(left.is_empty(), "private directories left behind: {left:?}");
    }
    // The key is the id: a new value hits the cache; another id does not.
    fs::write(&secret, "another value").map_err(|e| e.to_string())?;
    let again = ok(c.build_with(text, |b| {
        b.secret("tok", SecretSource::File(secret.clone()))
    }))?;
    ensure!(
        again.report.steps_run == 0,
        "a changed secret value reran {} steps",
        again.report.steps_run
    );
    Ok(())
}

/// `--secret id=ID,env=VAR`: the value comes from rbuild's environment (a child process,
/// so this process's environment stays untouched).
pub fn secret_from_an_environment_variable() -> R {
    let c = Case::new();
    let value = unique_secret();
    c.file(
        "Dockerfile",
        &crate::util::df(&format!(
            "FROM {{BUSYBOX}}\nRUN --mount=type=secret,id=envtok,required [ \"$(sha256sum /run/secrets/envtok | cut -c1-64)\" = {} ]\n",
            sha256_hex(value.as_bytes())
        )),
    );
    let child = ChildBuild {
        ctx: &c.ctx(),
        cache: c.cache(),
        build_args: vec![],
        env_secrets: vec![("envtok", "RB_MOUNTS_TEST_SECRET")],
        extra_env: vec![("RB_MOUNTS_TEST_SECRET", &value)],
    };
    wait_child(child.spawn())?;
    let hits = files_containing(c.cache(), value.as_bytes())?;
    ensure!(hits.is_empty(), "the secret is in {hits:?}");
    Ok(())
}

// ---- SSH -------------------------------------------------------------------------------

/// A client of the agent protocol, run by node in the step: REQUEST_IDENTITIES (11) must
/// answer IDENTITIES_ANSWER (12) and the number of keys.
const AGENT_PROBE: &str = r#"const net = require("net"), fs = require("fs");
const s = net.connect(process.argv[2]);
let buf = Buffer.alloc(0);
s.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  if (buf.length >= 9) {
    fs.writeFileSync(process.argv[3], `${buf[4]} ${buf.readUInt32BE(5)}`);
    s.end();
  }
});
s.on("error", (e) => { console.error(e.message); process.exit(1); });
s.write(Buffer.from([0, 0, 0, 1, 11]));
"#;

fn keygen(path: &Path) -> R {
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "mounts-test-key",
            "-f",
        ])
        .arg(path)
        .output()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    ensure!(out.status.success(), "ssh-keygen failed");
    Ok(())
}

/// `--ssh id=KEY`: rbuild runs an agent for the key; the step, as a non-root user, talks
/// to it through a socket it owns. A required ssh mount without `--ssh` fails; an optional
/// one is left out.
pub fn ssh_agent_forwarding_from_a_key_file() -> R {
    let c = Case::new();
    c.file("probe.js", AGENT_PROBE);
    let key = c.path().join("id_ed25519");
    keygen(&key)?;
    let private = fs::read_to_string(&key).map_err(|e| e.to_string())?;
    let img = ok(c.build_with(
        "FROM {NODE}\nUSER 1000:1000\nRUN --mount=target=/probe.js,source=probe.js --mount=type=ssh,id=deploy,uid=1000,required sh -c 'echo \"$SSH_AUTH_SOCK\" > /tmp/sock && node /probe.js \"$SSH_AUTH_SOCK\" /tmp/answer'\n",
        |b| b.ssh("deploy", SshSource::Keys(vec![key.clone()])),
    ))?;
    ensure_eq!(img.read("/tmp/sock")?.trim(), "/run/buildkit/ssh_agent.0");
    ensure_eq!(img.read("/tmp/answer")?.trim(), "12 1");
    let key_line = private.lines().nth(1).unwrap_or("no key line").to_owned();
    let hits = files_containing(c.cache(), key_line.as_bytes())?;
    ensure!(hits.is_empty(), "the key is in {hits:?}");
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=type=ssh,required true\n"),
        "ssh default: not found",
    )?;
    ok(c.build("FROM {BUSYBOX}\nRUN --mount=type=ssh [ -z \"$SSH_AUTH_SOCK\" ] && [ ! -e /run/buildkit ]\n"))?;
    Ok(())
}

/// `--ssh default=SOCKET`: a running agent is forwarded through a proxy socket.
pub fn ssh_agent_forwarding_from_a_socket() -> R {
    let c = Case::new();
    c.file("probe.js", AGENT_PROBE);
    let key = c.path().join("id_ed25519");
    let sock = c.path().join("agent.sock");
    keygen(&key)?;
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let r = (|| -> R {
        // The socket appears when the agent binds it, a moment before it listens: retry.
        let t = Instant::now();
        let added = loop {
            let add = std::process::Command::new("ssh-add")
                .arg("-q")
                .arg(&key)
                .env("SSH_AUTH_SOCK", &sock)
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(|e| e.to_string())?;
            if add.success() || t.elapsed() > Duration::from_secs(5) {
                break add.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(added, "ssh-add failed for 5 s");
        let img = ok(c.build_with(
            "FROM {NODE}\nRUN --mount=target=/probe.js,source=probe.js --mount=type=ssh,target=/agent node /probe.js /agent /answer\n",
            |b| b.ssh("default", SshSource::from_paths(std::slice::from_ref(&sock))?),
        ))?;
        ensure_eq!(img.read("/answer")?.trim(), "12 1");
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    r
}

// ---- MNT-08, MNT-09: option errors and expansion --------------------------------------

pub fn mnt_08_mount_option_errors() -> R {
    let c = Case::new();
    expect_err(
        c.build("FROM scratch\nRUN --mount=typ=tmpfs /bin/true\n"),
        "unexpected key 'typ'",
    )?;
    expect_err(
        c.build("FROM scratch\nRUN --mount=type=tmp /bin/true\n"),
        "tmp",
    )?;
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=type=cache,target=/c,sharing=everyone true\n"),
        "everyone",
    )?;
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=type=tmpfs,target=/a,uid=1 true\n"),
        "uid",
    )?;
    expect_err(
        c.build(
            "FROM {BUSYBOX}\nRUN --mount=type=tmpfs,target=/a --mount=type=cache,target=/a true\n",
        ),
        "duplicate mount target /a",
    )?;
    expect_err(
        c.build("FROM {BUSYBOX}\nRUN --mount=type=cache,target=/ true\n"),
        "invalid mount target",
    )
}

pub fn mnt_09_target_expands_variables_from_does_not() -> R {
    let c = Case::new();
    ok(c.build(
        "FROM {BUSYBOX}\nENV SOME_PATH=/mycache\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\nRUN --mount=type=cache,target=$SOME_PATH [ -f $SOME_PATH/foo ]\n",
    ))?;
    expect_err(
        c.build("FROM {BUSYBOX}\nARG ttt\nRUN --mount=from=$ttt,type=cache,target=/tmp ls\n"),
        "variable expansion",
    )
}

// ---- Escapes: every source and target stays inside its root -----------------------------

pub fn escaping_mount_paths_are_refused() -> R {
    let c = Case::new();
    c.file("inside/f", "f")
        .symlink("up", "../..")
        .symlink("abs", "/etc")
        .symlink("inside/loop", "../../outside");
    let cases = [
        (
            "FROM {BUSYBOX}\nRUN --mount=type=bind,source=../..,target=/x true\n",
            "escapes the build context",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=bind,source=inside/../../etc,target=/x true\n",
            "escapes the build context",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=bind,source=up/etc,target=/x true\n",
            "escapes the build context",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=bind,source=abs,target=/x true\n",
            "escapes the build context",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=bind,source=inside/loop,target=/x true\n",
            "escapes the build context",
        ),
        (
            "FROM {BUSYBOX} AS s\nFROM {BUSYBOX}\nRUN --mount=from=s,source=../../../etc,target=/x true\n",
            "escapes its root",
        ),
        (
            "FROM {BUSYBOX} AS s\nFROM {BUSYBOX}\nRUN --mount=type=cache,from=s,source=/../..,target=/x true\n",
            "escapes its root",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=tmpfs,target=/../../../etc true\n",
            "escapes the root filesystem",
        ),
        (
            "FROM {BUSYBOX}\nWORKDIR /app\nRUN --mount=type=cache,target=../../../../etc true\n",
            "escapes the root filesystem",
        ),
        (
            "FROM {BUSYBOX}\nRUN --mount=type=secret,id=x,target=/../../etc/x true\n",
            "escapes the root filesystem",
        ),
    ];
    for (text, want) in cases {
        expect_err(c.build(text), want)
            .map_err(|e| format!("{text}: {}", e.message().unwrap_or_default()))?;
    }
    // Symlinks inside the image or a stage that climb out of its root.
    let marker = format!("rbuild-escape-{}", std::process::id());
    expect_err(
        c.build(&format!(
            "FROM {{BUSYBOX}}\nRUN ln -s ../../../../../../../.. /evil\nRUN --mount=type=tmpfs,target=/evil/{marker} true\n"
        )),
        "outside the root",
    )?;
    ensure!(
        !Path::new("/").join(&marker).exists(),
        "a mount target was created on the host"
    );
    expect_err(
        c.build(
            "FROM {BUSYBOX} AS s\nRUN ln -s ../../../../../../.. /up\nFROM {BUSYBOX}\nRUN --mount=from=s,source=/up/etc,target=/x true\n",
        ),
        "outside the root",
    )?;
    Ok(())
}

/// A cache directory is written by earlier steps, so it may hold symlinks that lead out of
/// the root when read on the host (BuildKit's CVE-2024-23651 class): a mount target
/// through them stays inside the step's root.
pub fn mount_targets_through_cache_symlinks_stay_inside() -> R {
    let c = Case::new();
    let marker = format!("rbuild-cache-escape-{}", std::process::id());
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,id=evil,target=/c sh -c 'ln -s / /c/abs && ln -s ../../../../../../../../../.. /c/rel'\n",
    ))?;
    for link in ["abs", "rel"] {
        let text = format!(
            "FROM {{BUSYBOX}}\nRUN --mount=type=cache,id=evil,target=/c --mount=type=tmpfs,target=/c/{link}/{marker} sh -c 'touch /{marker}/x && [ -f /c/{link}/{marker}/x ]'\n"
        );
        let r = c.build(&text);
        ensure!(
            !Path::new("/").join(&marker).exists(),
            "a mount target through /c/{link} was created on the host"
        );
        if let Err(e) = r {
            ensure!(
                e.to_string().contains("outside the root"),
                "through /c/{link}: {e}"
            );
        }
    }
    Ok(())
}

// ---- NET-01, NET-02, security.insecure -------------------------------------------------

pub fn net_01_network_none_leaves_only_loopback() -> R {
    let c = Case::new();
    ok(c.build(
        "FROM {BUSYBOX}\nRUN --network=none sh -c '! ip link show eth0 && [ \"$(ls /sys/class/net)\" = lo ]'\nRUN --network=none ip link show lo\n",
    ))?;
    Ok(())
}

pub fn net_02_network_host_needs_the_entitlement() -> R {
    let c = Case::new();
    let text = "FROM {BUSYBOX}\nRUN --network=host true\n";
    expect_err(c.build(text), "network.host is not allowed")?;
    ok(c.build_with(text, |b| Ok(b.allow_network_host(true))))?;
    Ok(())
}

pub fn security_insecure_needs_the_entitlement() -> R {
    let c = Case::new();
    let text = "FROM {BUSYBOX}\nRUN --security=insecure true\n";
    expect_err(c.build(text), "security.insecure is not allowed")?;
    ok(c.build_with(text, |b| Ok(b.allow_insecure(true))))?;
    Ok(())
}

/// Every mount kind left no mount behind on the host and nothing in the cache's tmp area.
pub fn nothing_is_left_behind() -> R {
    let c = Case::new();
    c.file("f", "f");
    let secret = c.path().join("s");
    fs::write(&secret, "s").map_err(|e| e.to_string())?;
    ok(c.build_with(
        "FROM {BUSYBOX} AS s\nRUN echo x > /x\nFROM {BUSYBOX}\nRUN --mount=target=/ctx,rw --mount=from=s,target=/s --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --mount=type=secret,id=s true\n",
        |b| b.secret("s", SecretSource::File(secret.clone())),
    ))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let p = c.path().display().to_string();
    ensure!(
        !mountinfo.contains(&p),
        "mounts left on the host: {}",
        mountinfo
            .lines()
            .filter(|l| l.contains(&p))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let tmp = c.cache().join("other/tmp");
    let left: Vec<_> = walkdir(&tmp)?
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.nlink() > 0))
        .collect();
    ensure!(left.is_empty(), "left in the cache's tmp: {left:?}");
    Ok(())
}
