//! Build contexts as buildx takes them (issue 20): a git repository over smart HTTP
//! (the real `git http-backend` on 127.0.0.1) with `#ref:subdir`, a pinned commit, the
//! query form, `GIT_AUTH_TOKEN` secrets and `--keep-git-dir`; the refs and subdirectories
//! BuildKit refuses (option injection, symlinks out of the checkout); an HTTP tarball or
//! Dockerfile URL; `-` (a tar or a Dockerfile on stdin); and build-push-action's exact
//! command line with its default git context, through the docker CLI plugin.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use test_support::GitHttpServer;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rbuild(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rbuild");
    let mut input = c.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    c.wait_with_output().unwrap()
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

#[track_caller]
fn fails(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// `repos/app.git` (bare): commit 1 tagged v1 (`version` = 1), commit 2 on main
/// (`version` = 2, `sub/`, and `link` → `sub`). Returns the two commits.
fn make_repo(root: &Path) -> (String, String) {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    std::fs::write(work.join("version"), "1\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("version"), "2\n").unwrap();
    std::fs::create_dir(work.join("sub")).unwrap();
    std::fs::write(
        work.join("sub/Dockerfile"),
        "FROM scratch\nCOPY . /in-sub/\n",
    )
    .unwrap();
    std::fs::write(work.join("sub/file"), "in sub\n").unwrap();
    std::os::unix::fs::symlink("sub", work.join("link")).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "two"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let repos = root.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    git(root, &["clone", "-q", "--bare", "work", "repos/app.git"]);
    (first, second)
}

fn token_header(token: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    format!("basic {b}")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn git_context_refs_subdirs_auth_and_keep_git_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = make_repo(dir.path());
    let srv = GitHttpServer::start(
        &dir.path().join("repos"),
        None,
        Some(&token_header("s3cret")),
    );
    let url = format!("{}/git/app.git", srv.url());
    let host = srv.url().trim_start_matches("http://").to_owned();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret_arg = format!("id=GIT_AUTH_TOKEN.{host},src={}", secret.display());
    let cache = dir.path().join("cache");
    let build = |name: &str, context: &str, extra: &[&str]| {
        let out_dir = dir.path().join(name);
        let dest = format!("type=local,dest={}", out_dir.display());
        let mut args = vec![
            "build",
            "--progress=plain",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend(["-o", &dest, context]);
        (rbuild(dir.path(), &args, None), out_dir)
    };

    // Without the secret the server says 401: a clear error naming the context.
    let (out, _) = build("noauth", &url, &[]);
    fails(&out, 1, &format!("context {url}: git fetch"));

    // The default branch, with the per-host token as build-push-action passes it.
    let (out, o) = build("head", &url, &["--secret", &secret_arg]);
    ok(&out);
    assert_eq!(read(&o.join("version")), "2\n");
    assert!(!o.join(".git").exists(), "the .git directory is dropped");
    assert!(
        srv.seen()
            .iter()
            .any(|(_, a)| a.as_deref() == Some(token_header("s3cret").as_str())),
        "the token was sent as BuildKit sends it"
    );

    // A tag, a pinned commit (the action's default context), a subdirectory.
    let (out, o) = build("tag", &format!("{url}#v1"), &["--secret", &secret_arg]);
    ok(&out);
    assert_eq!(read(&o.join("version")), "1\n");
    let (out, o) = build("sha", &format!("{url}#{first}"), &["--secret", &secret_arg]);
    ok(&out);
    assert_eq!(read(&o.join("version")), "1\n");
    let (out, o) = build(
        "sub",
        &format!("{url}#main:sub"),
        &["--secret", &secret_arg],
    );
    ok(&out);
    assert_eq!(read(&o.join("in-sub/file")), "in sub\n");
    assert!(!o.join("in-sub/version").exists());
    // The query form with a checksum, and -f inside the context.
    let q = format!("{url}?ref=main&checksum={}", &second[..12]);
    let (out, o) = build(
        "query",
        &q,
        &["--secret", &secret_arg, "-f", "sub/Dockerfile"],
    );
    ok(&out);
    assert_eq!(read(&o.join("in-sub/version")), "2\n");
    let q = format!("{url}?ref=main&checksum={}", &first[..12]);
    let (out, _) = build("badsum", &q, &["--secret", &secret_arg]);
    fails(&out, 1, "expected checksum to match");

    // --keep-git-dir (and the build arg buildx users set) keeps .git, with no token in it.
    for (name, flag) in [
        ("keep", "--keep-git-dir"),
        ("keeparg", "--build-arg=BUILDKIT_CONTEXT_KEEP_GIT_DIR=1"),
    ] {
        let (out, o) = build(name, &url, &["--secret", &secret_arg, flag]);
        ok(&out);
        assert!(o.join(".git/HEAD").is_file(), "{name}");
        let config = read(&o.join(".git/config"));
        assert!(
            !config.contains("s3cret") && !config.contains("extraheader"),
            "{config}"
        );
        assert_eq!(git(&o, &["rev-parse", "HEAD"]), second);
    }

    // GIT_AUTH_HEADER: the whole header value.
    let header = dir.path().join("header");
    std::fs::write(&header, token_header("s3cret")).unwrap();
    let h = format!("id=GIT_AUTH_HEADER,src={}", header.display());
    let (out, o) = build("by-header", &url, &["--secret", &h]);
    ok(&out);
    assert_eq!(read(&o.join("version")), "2\n");
}

#[test]
fn git_refs_and_subdirs_that_escape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_repo(dir.path());
    let srv = GitHttpServer::start(&dir.path().join("repos"), None, None);
    let url = format!("{}/git/app.git", srv.url());
    // A ref that git would take for an option: refused before git runs.
    for bad in [
        format!("{url}#--upload-pack=touch${{IFS}}/tmp/pwned"),
        format!("{url}?ref=-oProxyCommand=x"),
    ] {
        let out = rbuild(dir.path(), &["build", &bad], None);
        fails(&out, 2, "invalid git ref");
    }
    assert!(
        srv.seen().is_empty(),
        "nothing was fetched: {:?}",
        srv.seen()
    );
    // A subdirectory through a symlink (it could point anywhere) is refused; `..` is
    // cleaned away, so it names a directory inside the checkout (here: none).
    let out = rbuild(dir.path(), &["build", &format!("{url}#main:link")], None);
    fails(&out, 1, "invalid subdir link: link is not a directory");
    let out = rbuild(
        dir.path(),
        &["build", &format!("{url}#main:../../../etc")],
        None,
    );
    fails(&out, 1, "failed to open subdir etc");
    // Other schemes are refused, not taken for directories.
    let out = rbuild(dir.path(), &["build", "ftp://127.0.0.1/x.tar"], None);
    fails(&out, 2, "unsupported URL scheme");
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn http_and_stdin_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let tgz = tar_gz(&[
        ("Dockerfile", "FROM scratch\nCOPY hello /\n"),
        ("hello", "from the tarball\n"),
    ]);
    std::fs::write(files.join("ctx.tar.gz"), &tgz).unwrap();
    std::fs::write(files.join("Dockerfile"), "FROM scratch\nLABEL from=url\n").unwrap();
    let srv = GitHttpServer::start(dir.path(), Some(&files), None);
    let o = |n: &str| dir.path().join(n);
    let dest = |n: &str| format!("type=local,dest={}", o(n).display());

    // An HTTP(S) tarball is the context.
    let url = format!("{}/files/ctx.tar.gz", srv.url());
    let out = rbuild(dir.path(), &["build", "-o", &dest("tgz"), &url], None);
    ok(&out);
    assert_eq!(read(&o("tgz").join("hello")), "from the tarball\n");
    // A URL that is not an archive is the Dockerfile, with an empty context.
    let url = format!("{}/files/Dockerfile", srv.url());
    let iid = o("iid");
    let out = rbuild(
        dir.path(),
        &["build", "--iidfile", iid.to_str().unwrap(), &url],
        None,
    );
    ok(&out);
    assert!(read(&iid).starts_with("sha256:"));
    let out = rbuild(
        dir.path(),
        &["build", &format!("{}/files/missing.tar", srv.url())],
        None,
    );
    fails(&out, 1, "404");

    // `-`: a tar on stdin is the context; anything else is the Dockerfile.
    let out = rbuild(
        dir.path(),
        &["build", "-o", &dest("stdin"), "-"],
        Some(&tgz),
    );
    ok(&out);
    assert_eq!(read(&o("stdin").join("hello")), "from the tarball\n");
    let df = b"FROM scratch\nCOPY hello /\n";
    let out = rbuild(
        dir.path(),
        &["build", "-o", &dest("stdin-df"), "-"],
        Some(df),
    );
    // The context is empty: the COPY finds nothing, as with buildx.
    fails(&out, 1, "hello");
    let out = rbuild(
        dir.path(),
        &["build", "-o", &dest("stdin-df2"), "-"],
        Some(b"FROM scratch\nLABEL a=b\n"),
    );
    ok(&out);
    let out = rbuild(dir.path(), &["build", "-f", "-", "-"], Some(df));
    fails(
        &out,
        2,
        "can't use stdin for both build context and dockerfile",
    );
}

/// docker/build-push-action with no `context:` input builds its git context
/// (`{serverURL}/{owner}/{repo}.git#{sha}`) and passes the workflow token as the
/// `GIT_AUTH_TOKEN.{host}` secret in a temporary file: the exact arguments
/// actions-toolkit's `getArgs` makes, run through `docker buildx build`.
#[test]
fn build_push_action_default_git_context() {
    let dir = tempfile::tempdir().unwrap();
    let (_, second) = make_repo(dir.path());
    let srv = GitHttpServer::start(
        &dir.path().join("repos"),
        None,
        Some(&token_header("ghs_x")),
    );
    let host = srv.url().trim_start_matches("http://").to_owned();
    let config = dir.path().join("docker-config");
    std::fs::create_dir_all(config.join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_rbuild"),
        config.join("cli-plugins/docker-buildx"),
    )
    .unwrap();
    let tmp = dir.path().join("docker-actions-toolkit-abc");
    std::fs::create_dir(&tmp).unwrap();
    let secret = tmp.join("tmp-123-abc");
    std::fs::write(&secret, "ghs_x").unwrap();
    let iid = tmp.join("build-iidfile-abc.txt");
    let md = tmp.join("build-metadata-abc.json");
    let tag = format!("127.0.0.1:5000/dropin/gitctx:{}", std::process::id());
    let context = format!("{}/git/app.git#{second}", srv.url());
    let out = Command::new("docker")
        .env("DOCKER_CONFIG", &config)
        .env("BUILDX_METADATA_WARNINGS", "true")
        .current_dir(dir.path())
        .args([
            "buildx",
            "build",
            "--iidfile",
            iid.to_str().unwrap(),
            "--attest",
            "type=provenance,mode=max,builder-id=https://github.com/o/r/actions/runs/1/attempts/1",
            "--secret",
            &format!("id=GIT_AUTH_TOKEN.{host},src={}", secret.display()),
            "--tag",
            &tag,
            "--metadata-file",
            md.to_str().unwrap(),
            "--push",
            &context,
        ])
        .output()
        .unwrap();
    ok(&out);
    assert!(read(&iid).starts_with("sha256:"));
    let meta: serde_json::Value = serde_json::from_str(&read(&md)).unwrap();
    assert_eq!(meta["image.name"], tag.as_str());
    let digest = meta["containerimage.digest"].as_str().expect("digest");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .output()
        .unwrap();
    ok(&inspect);
    use sha2::Digest as _;
    let got = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&inspect.stdout))
    );
    assert_eq!(got, digest);
}

/// A bake target whose context is a git URL, fetched with the target's
/// `GIT_AUTH_TOKEN.<host>` secret, with a Dockerfile inside the repository.
#[test]
fn bake_target_with_a_git_context() {
    let dir = tempfile::tempdir().unwrap();
    make_repo(dir.path());
    let srv = GitHttpServer::start(&dir.path().join("repos"), None, Some(&token_header("b4ke")));
    let host = srv.url().trim_start_matches("http://").to_owned();
    std::fs::write(dir.path().join("tok"), "b4ke").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::write(
        dir.path().join("docker-bake.hcl"),
        format!(
            "target \"app\" {{\n  context = \"{}/git/app.git#main:sub\"\n  \
             dockerfile = \"Dockerfile\"\n  secret = [\"id=GIT_AUTH_TOKEN.{host},src=tok\"]\n  \
             output = [\"type=local,dest={}\"]\n}}\n",
            srv.url(),
            out_dir.display()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["bake", "--cache-dir", cache.to_str().unwrap(), "app"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(read(&out_dir.join("in-sub/file")), "in sub\n");
}

/// `--build-context NAME=URL`: a git repository (a ref and a subdirectory, the token
/// secret) and an HTTP tarball as named contexts, read by `COPY --from=NAME` and `FROM NAME`.
#[test]
fn git_and_http_named_contexts() {
    let dir = tempfile::tempdir().unwrap();
    make_repo(dir.path());
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("src.tar.gz"),
        tar_gz(&[("hello", "from the tarball\n")]),
    )
    .unwrap();
    let srv = GitHttpServer::start(
        &dir.path().join("repos"),
        Some(&files),
        Some(&token_header("s3cret")),
    );
    let host = srv.url().trim_start_matches("http://").to_owned();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cret").unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM tarball AS t\nFROM scratch\nCOPY --from=repo /version /v1\n\
         COPY --from=sub / /sub/\nCOPY --from=t /hello /\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--progress=plain",
            "--secret",
            &format!("id=GIT_AUTH_TOKEN.{host},src={}", secret.display()),
            "--build-context",
            &format!("repo={}/git/app.git#v1", srv.url()),
            "--build-context",
            &format!("sub={}/git/app.git#main:sub", srv.url()),
            "--build-context",
            &format!("tarball={}/files/src.tar.gz", srv.url()),
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
            "ctx",
        ],
        None,
    );
    ok(&out);
    assert_eq!(read(&out_dir.join("v1")), "1\n");
    assert_eq!(read(&out_dir.join("sub/file")), "in sub\n");
    assert_eq!(read(&out_dir.join("hello")), "from the tarball\n");
    // Without the token the repository refuses: a clear error, exit 2.
    let out = rbuild(
        dir.path(),
        &[
            "build",
            "--build-context",
            &format!("repo={}/git/app.git#v1", srv.url()),
            "ctx",
        ],
        None,
    );
    fails(&out, 2, "app.git");
}

/// `ADD <git URL> <dest>` in a Dockerfile: a tag, a branch's subdirectory, `--keep-git-dir`,
/// `--chown`; a ref taken for an option and a subdirectory through a symlink refused.
#[test]
fn add_git_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = make_repo(dir.path());
    let srv = GitHttpServer::start(&dir.path().join("repos"), None, None);
    let url = format!("{}/git/app.git", srv.url());
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let build = |dockerfile: &str, out: &str| {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let dest = format!("type=local,dest={}", dir.path().join(out).display());
        rbuild(
            dir.path(),
            &["build", "--progress=plain", "-o", &dest, "ctx"],
            None,
        )
    };
    let out = build(
        &format!(
            "FROM scratch\nADD {url}#v1 /v1/\nADD --chown=10:20 {url}#main:sub /sub\n\
             ADD --keep-git-dir=true {url}#{first} /kept\n"
        ),
        "out",
    );
    ok(&out);
    let o = dir.path().join("out");
    assert_eq!(read(&o.join("v1/version")), "1\n");
    assert!(!o.join("v1/.git").exists());
    assert!(!o.join("v1/sub").exists());
    assert_eq!(read(&o.join("sub/file")), "in sub\n");
    assert!(o.join("kept/.git").is_dir(), "--keep-git-dir keeps .git");
    assert_eq!(read(&o.join("kept/version")), "1\n");
    // The owner, as a RUN step sees it.
    let out = build(
        &format!(
            "FROM 127.0.0.1:5000/library/busybox:latest AS b\n\
             ADD --chown=10:20 {url}#main:sub /sub\nRUN stat -c %u:%g /sub/file > /owner\n\
             FROM scratch\nCOPY --from=b /owner /\n"
        ),
        "owner",
    );
    ok(&out);
    assert_eq!(read(&dir.path().join("owner/owner")), "10:20\n");
    // The image history names the ADD of the repository, as BuildKit's.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {url}#v1 /v1/\n"),
    )
    .unwrap();
    let layout = dir.path().join("layout");
    ok(&rbuild(
        dir.path(),
        &[
            "build",
            "-o",
            &format!("type=oci,tar=false,dest={}", layout.display()),
            "ctx",
        ],
        None,
    ));
    let blob = |d: &str| -> serde_json::Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let created_by = config["history"][0]["created_by"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        created_by,
        format!("ADD {url}#v1 /v1/ # buildkit"),
        "{config}"
    );

    // Refused: a ref git would take for an option (nothing fetched), a symlinked subdir.
    let seen = srv.seen().len();
    let out = build(
        &format!("FROM scratch\nADD {url}#--upload-pack=touch${{IFS}}/tmp/pwned /x\n"),
        "bad",
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("invalid git ref"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(srv.seen().len(), seen, "nothing was fetched");
    let out = build(&format!("FROM scratch\nADD {url}#main:link /x\n"), "bad2");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("link is not a directory"),
        "{}",
        text(&out.stderr)
    );
}
