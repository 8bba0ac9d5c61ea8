//! COPY/ADD behaviours from `shared/conformance/dockerfile-behaviours.md` (IDs in the test
//! names) checked on the diff tree a step writes, plus hostile inputs.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use dockerfile::Instruction;
use layer_cache::StatCache;

use super::*;

/// A build context and a cache directory in one temp dir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("ctx")).unwrap();
        fs::create_dir(dir.path().join("cache")).unwrap();
        Fixture { dir }
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn file(&self, rel: &str, content: &str) -> &Self {
        self.file_mode(rel, content, 0o644)
    }

    fn file_mode(&self, rel: &str, content: &str, mode: u32) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn link(&self, rel: &str, target: &str) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }

    fn context(&self) -> BuildContext {
        self.context_with(None)
    }

    fn context_with(&self, dockerfile: Option<&Path>) -> BuildContext {
        let sc = StatCache::open(&self.dir.path().join("cache"), "ctx").unwrap();
        BuildContext::open(&self.ctx(), dockerfile, sc).unwrap()
    }
}

/// Parses one COPY/ADD line into params.
fn params(line: &str, workdir: &str) -> Result<CopyParams, CopyError> {
    let df = dockerfile::parse(&format!("FROM scratch\n{line}\n")).unwrap();
    match &df.instructions[1].value {
        Instruction::Copy(c) => CopyParams::from_copy(c, workdir),
        Instruction::Add(a) => CopyParams::from_add(a, workdir),
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

fn p(line: &str) -> CopyParams {
    params(line, "/").unwrap()
}

/// Runs a step from the context onto `lower` (topmost first); returns the diff dir.
fn run_ctx(
    ctx: &BuildContext,
    line: &str,
    workdir: &str,
    lower: &[&Path],
) -> Result<tempfile::TempDir, CopyError> {
    let out = tempfile::tempdir().unwrap();
    let view = LayeredView::new(lower.iter().map(|p| p.to_path_buf()).collect());
    let params = params(line, workdir)?;
    let dv = (!lower.is_empty() && !params.link).then_some(&view);
    execute(&params, &CopySource::Context(ctx), dv, out.path())?;
    Ok(out)
}

fn run(ctx: &BuildContext, line: &str) -> tempfile::TempDir {
    run_ctx(ctx, line, "/", &[]).unwrap()
}

/// Runs a `--from` step whose source is the layers `from`.
fn run_from(from: &[&Path], line: &str, lower: &[&Path]) -> Result<tempfile::TempDir, CopyError> {
    let out = tempfile::tempdir().unwrap();
    let src = LayeredView::new(from.iter().map(|p| p.to_path_buf()).collect());
    let key = CacheKey::derive(None, "test", "from");
    let view = LayeredView::new(lower.iter().map(|p| p.to_path_buf()).collect());
    let params = params(line, "/")?;
    let dv = (!lower.is_empty()).then_some(&view);
    execute(
        &params,
        &CopySource::Layers {
            view: &src,
            key: &key,
        },
        dv,
        out.path(),
    )?;
    Ok(out)
}

/// The diff tree: path -> "type mode uid:gid content-or-target".
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = if m.is_dir() {
                "d".to_owned()
            } else if m.file_type().is_symlink() {
                format!("l {}", fs::read_link(&p).unwrap().display())
            } else {
                format!("f {}", fs::read_to_string(&p).unwrap_or_default())
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.insert(rel, format!("{mode:04o} {}:{} {kind}", m.uid(), m.gid()));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn names(root: &Path) -> Vec<String> {
    tree(root).into_keys().collect()
}

fn entry(root: &Path, rel: &str) -> String {
    tree(root)
        .get(rel)
        .cloned()
        .unwrap_or_else(|| panic!("{rel} missing in {:#?}", tree(root)))
}

/// Sets the access and modification times of `path` to `secs` seconds after the epoch.
fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty()).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A parent image layer with /etc/passwd and /etc/group.
fn image_layer() -> tempfile::TempDir {
    let l = tempfile::tempdir().unwrap();
    fs::create_dir_all(l.path().join("etc")).unwrap();
    fs::write(
        l.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nuser:x:1001:1002::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        l.path().join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nnobody:x:65534:\nuser:x:1002:\n",
    )
    .unwrap();
    l
}

#[test]
fn cp_01_directory_source_copies_its_contents() {
    let f = Fixture::new();
    f.file("sub/dir1/dir2/foo", "foo");
    let ctx = f.context();
    for line in [
        "COPY sub/dir1 subdest6",
        "COPY sub/dir1/ subdest4",
        "COPY sub/dir1/. subdest5",
    ] {
        let out = run(&ctx, line);
        let dest = line.rsplit(' ').next().unwrap();
        assert_eq!(
            names(out.path()),
            [
                dest.to_owned(),
                format!("{dest}/dir2"),
                format!("{dest}/dir2/foo")
            ],
            "{line}"
        );
    }
}

#[test]
fn cp_02_wildcards_follow_go_filepath_match() {
    let f = Fixture::new();
    f.file("foo.go", "foo")
        .file("bar.go", "bar")
        .file("sub/dir1/dir2/foo", "deep");
    let ctx = f.context();
    assert_eq!(
        names(run(&ctx, "COPY *.go /gofiles/").path()),
        ["gofiles", "gofiles/bar.go", "gofiles/foo.go"]
    );
    // A single match to a file path.
    let out = run(&ctx, "COPY f*.go foo2.go");
    assert_eq!(names(out.path()), ["foo2.go"]);
    assert!(entry(out.path(), "foo2.go").ends_with("f foo"));
    // A matched directory contributes its contents.
    assert_eq!(
        names(run(&ctx, "COPY sub/* /subdest/").path()),
        ["subdest", "subdest/dir2", "subdest/dir2/foo"]
    );
    let out = run(&ctx, "COPY sub/*/dir2/foo /subdest3/bar");
    assert_eq!(names(out.path()), ["subdest3", "subdest3/bar"]);
    assert!(entry(out.path(), "subdest3/bar").ends_with("f deep"));
}

#[test]
fn cp_03_trailing_slash_means_into_directory() {
    let f = Fixture::new();
    f.file("test.txt", "t");
    let ctx = f.context();
    let out = run(&ctx, "COPY test.txt /abs/");
    assert!(entry(out.path(), "abs").contains(" d"));
    assert!(entry(out.path(), "abs/test.txt").ends_with("f t"));
    let out = run(&ctx, "COPY test.txt /file");
    assert_eq!(names(out.path()), ["file"]);
    assert!(entry(out.path(), "file").ends_with("f t"));
}

#[test]
fn cp_04_missing_destination_directories_are_created() {
    let f = Fixture::new();
    f.file("a", "a");
    let ctx = f.context();
    let out = run(&ctx, "COPY a /x/y/z/");
    for d in ["x", "x/y", "x/y/z"] {
        let e = entry(out.path(), d);
        assert!(
            e.starts_with(&format!(
                "0755 {}:{} d",
                if is_root() {
                    0
                } else {
                    rustix::process::geteuid().as_raw()
                },
                if is_root() {
                    0
                } else {
                    rustix::process::getegid().as_raw()
                }
            )),
            "{d}: {e}"
        );
    }
    assert!(entry(out.path(), "x/y/z/a").ends_with("f a"));
    if is_root() {
        // With --chown, the directories BuildKit creates belong to that user.
        let out = run(&ctx, "COPY --chown=7:8 a /x/y/");
        assert!(entry(out.path(), "x").starts_with("0755 7:8 d"));
        assert!(entry(out.path(), "x/y/a").starts_with("0644 7:8 f"));
    }
}

#[test]
fn cp_05_relative_destination_is_relative_to_workdir() {
    let f = Fixture::new();
    f.file("foo", "foo");
    let ctx = f.context();
    assert_eq!(
        names(
            run_ctx(&ctx, "COPY foo ./", "/test1/test2", &[])
                .unwrap()
                .path()
        ),
        ["test1", "test1/test2", "test1/test2/foo"]
    );
    assert_eq!(
        names(
            run_ctx(&ctx, "COPY foo ./bar/baz2", "/test1/test2", &[])
                .unwrap()
                .path()
        ),
        [
            "test1",
            "test1/test2",
            "test1/test2/bar",
            "test1/test2/bar/baz2"
        ]
    );
    assert_eq!(
        names(
            run_ctx(&ctx, "COPY foo ../", "/test5/test6", &[])
                .unwrap()
                .path()
        ),
        ["test5", "test5/foo"]
    );
}

#[test]
fn cp_06_empty_destination_means_the_working_directory() {
    let f = Fixture::new();
    f.file("testfile", "contents0");
    let ctx = f.context();
    let out = tempfile::tempdir().unwrap();
    let mut prm = p("COPY testfile x");
    prm.dest = String::new();
    prm.workdir = "/w".into();
    execute(&prm, &CopySource::Context(&ctx), None, out.path()).unwrap();
    assert_eq!(names(out.path()), ["w", "w/testfile"]);
}

#[test]
fn cp_07_sources_cannot_leave_the_context() {
    let f = Fixture::new();
    f.file("a", "ctx-a").file("d/f", "f");
    fs::write(f.dir.path().join("a"), "outside").unwrap();
    let ctx = f.context();
    assert!(entry(run(&ctx, "COPY ../a /one").path(), "one").ends_with("f ctx-a"));
    assert!(entry(run(&ctx, "COPY /a /two").path(), "two").ends_with("f ctx-a"));
    assert_eq!(
        names(run(&ctx, "COPY d/ /three/").path()),
        ["three", "three/f"]
    );
}

#[test]
fn cp_08_symlinks_named_as_sources_are_followed() {
    let f = Fixture::new();
    f.file("bar", "bar-contents").link("foo", "bar");
    f.link("sub/l0", "subfile")
        .file("sub/subfile", "subfile-contents");
    f.link("sub/l1", "second")
        .link("sub/second", "baz")
        .file("sub/baz", "baz-contents");
    f.file("sub/lfile", "lfile");
    f.link("tree/inner", "../bar");
    let ctx = f.context();
    let out = run(&ctx, "COPY foo /");
    assert!(entry(out.path(), "foo").ends_with("f bar-contents"));
    let out = run(&ctx, "COPY sub/l* alllinks/");
    assert!(entry(out.path(), "alllinks/l0").ends_with("f subfile-contents"));
    assert!(entry(out.path(), "alllinks/l1").ends_with("f baz-contents"));
    assert!(entry(out.path(), "alllinks/lfile").ends_with("f lfile"));
    // A symlinked directory in the middle of a source path is followed too.
    f.link("linkdir", "sub");
    let ctx = f.context();
    let out = run(&ctx, "COPY linkdir/subfile /x");
    assert!(entry(out.path(), "x").ends_with("f subfile-contents"));
    // Inside a copied directory, symlinks stay symlinks.
    let out = run(&ctx, "COPY tree /t/");
    assert!(entry(out.path(), "t/inner").ends_with("l ../bar"));
}

#[test]
fn cp_09_wildcard_matching_nothing_is_fine_next_to_a_match() {
    let f = Fixture::new();
    f.file("foo", "foo");
    let ctx = f.context();
    assert_eq!(names(run(&ctx, "COPY foo nomatch* /").path()), ["foo"]);
    // A plain missing source is an error naming it.
    let e = run_ctx(&ctx, "COPY missing /x", "/", &[]).unwrap_err();
    assert!(
        e.to_string().contains("file not found in build context")
            && e.to_string().contains("missing"),
        "{e}"
    );
}

#[test]
fn cp_10_chown_resolves_names_in_the_image() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    f.file("foo", "foo").file("bar/sub", "sub");
    let ctx = f.context();
    let img = image_layer();
    let lower = [img.path()];
    let out = run_ctx(&ctx, "COPY --chown=daemon foo /", "/", &lower).unwrap();
    assert!(entry(out.path(), "foo").starts_with("0644 1:1 f"));
    let out = run_ctx(&ctx, "COPY --chown=1000:nobody bar /baz", "/", &lower).unwrap();
    assert!(entry(out.path(), "baz/sub").starts_with("0644 1000:65534 f"));
    let out = run_ctx(&ctx, "COPY --chown=10 foo /n", "/", &lower).unwrap();
    assert!(entry(out.path(), "n").starts_with("0644 10:10 f"));
    let out = run_ctx(&ctx, "COPY --chown=user foo /u", "/", &lower).unwrap();
    assert!(entry(out.path(), "u").starts_with("0644 1001:1002 f"));
    let e = run_ctx(&ctx, "COPY --chown=nosuch foo /x", "/", &lower).unwrap_err();
    assert!(e.to_string().contains("unable to find user nosuch"), "{e}");
    let e = run_ctx(&ctx, "COPY --chown=1:nosuchgroup foo /x", "/", &lower).unwrap_err();
    assert!(
        e.to_string().contains("unable to find group nosuchgroup"),
        "{e}"
    );
    // --link builds the layer apart from the image: names are refused, numbers work.
    let e = run_ctx(&ctx, "COPY --link --chown=daemon foo /x", "/", &lower).unwrap_err();
    assert!(matches!(e, CopyError::ChownNameWithLink { .. }), "{e}");
    let out = run_ctx(&ctx, "COPY --link --chown=5:6 foo /x", "/", &lower).unwrap();
    assert!(entry(out.path(), "x").starts_with("0644 5:6 f"));
}

#[test]
fn cp_11_context_files_are_root_owned_and_stages_keep_owners() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    f.file("ctxfile", "c");
    std::os::unix::fs::chown(f.ctx().join("ctxfile"), Some(4321), Some(4321)).unwrap();
    let ctx = f.context();
    assert!(entry(run(&ctx, "COPY ctxfile /ctxfile").path(), "ctxfile").starts_with("0644 0:0 f"));
    let stage = tempfile::tempdir().unwrap();
    fs::write(stage.path().join("file"), "s").unwrap();
    std::os::unix::fs::chown(stage.path().join("file"), Some(100), Some(200)).unwrap();
    let out = run_from(&[stage.path()], "COPY --from=source /file /file", &[]).unwrap();
    assert!(entry(out.path(), "file").starts_with("0644 100:200 f"));
}

#[test]
fn cp_12_copying_into_an_existing_directory_keeps_its_owner() {
    if !is_root() {
        return;
    }
    let stage = tempfile::tempdir().unwrap();
    fs::create_dir_all(stage.path().join("dir/subdir")).unwrap();
    std::os::unix::fs::chown(stage.path().join("dir/subdir"), Some(101), Some(201)).unwrap();
    let img = tempfile::tempdir().unwrap();
    fs::create_dir(img.path().join("existingdir")).unwrap();
    fs::set_permissions(
        img.path().join("existingdir"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::chown(img.path().join("existingdir"), Some(500), Some(600)).unwrap();
    let out = run_from(
        &[stage.path()],
        "COPY --from=source --chown=300:400 /dir/. /existingdir",
        &[img.path()],
    )
    .unwrap();
    assert!(
        entry(out.path(), "existingdir").starts_with("0750 500:600 d"),
        "{:?}",
        tree(out.path())
    );
    assert!(entry(out.path(), "existingdir/subdir").starts_with("0755 300:400 d"));
}

#[test]
fn cp_13_chmod_sets_files_and_created_directories() {
    let f = Fixture::new();
    f.file_mode("foo", "foo", 0o600);
    let ctx = f.context();
    assert!(entry(run(&ctx, "COPY --chmod=0644 foo /").path(), "foo").starts_with("0644"));
    assert!(entry(run(&ctx, "COPY --chmod=0 foo /foobis").path(), "foobis").starts_with("0000"));
    let out = run(&ctx, "COPY --chmod=777 foo /parent/foo");
    assert!(entry(out.path(), "parent").starts_with("0777"));
    assert!(entry(out.path(), "parent/foo").starts_with("0777"));
    let out = run(&ctx, "COPY --chmod=770 foo /parent/sub/foo");
    assert!(entry(out.path(), "parent/sub").starts_with("0770"));
    // Symbolic modes apply to the entry's own mode; created directories stay 0755.
    let out = run(&ctx, "COPY --chmod=go+r,u+x foo /s/foo");
    assert!(entry(out.path(), "s").starts_with("0755"));
    assert!(entry(out.path(), "s/foo").starts_with("0744"));
}

#[test]
fn cp_14_bad_chmod_values_fail_with_buildkits_text() {
    for (v, octal) in [("64a", true), ("10000", true), ("u=rwq", false)] {
        let e = params(&format!("COPY --chmod={v} foo /"), "/").unwrap_err();
        if octal {
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid chmod parameter: '{v}'. it should be octal string and between 0 and 07777"
                )
            );
        } else {
            assert!(matches!(e, CopyError::ChmodSyntax { .. }), "{e}");
        }
    }
    assert!(params("COPY --chmod=u=rwX,go=rX foo /", "/").is_ok());
    assert!(params("COPY --chmod=+x foo /", "/").is_ok());
}

#[test]
fn cp_15_permissions_are_preserved_without_chmod() {
    let f = Fixture::new();
    f.file_mode("script.sh", "#!/bin/sh", 0o700)
        .file_mode("d/setuid", "x", 0o4755);
    let ctx = f.context();
    assert!(entry(run(&ctx, "COPY script.sh /").path(), "script.sh").starts_with("0700"));
    assert!(entry(run(&ctx, "COPY d /d").path(), "d/setuid").starts_with("4755"));
}

#[test]
fn cp_16_cp_17_from_paths_are_absolute_in_the_source() {
    let stage = tempfile::tempdir().unwrap();
    fs::create_dir_all(stage.path().join("usr/bin")).unwrap();
    fs::write(stage.path().join("usr/bin/go"), "foo").unwrap();
    fs::write(stage.path().join("Dockerfile"), "df").unwrap();
    let out = run_from(&[stage.path()], "COPY --from=golang /usr/bin/go go", &[]).unwrap();
    assert!(entry(out.path(), "go").ends_with("f foo"));
    // A relative source is looked up from the stage's root, not its WORKDIR.
    let out = run_from(&[stage.path()], "COPY --from=base Dockerfile .", &[]).unwrap();
    assert!(entry(out.path(), "Dockerfile").ends_with("f df"));
    let e = run_from(&[stage.path()], "COPY --from=base /nope .", &[]).unwrap_err();
    assert!(matches!(e, CopyError::NotFoundInStage { .. }), "{e}");
}

#[test]
fn cp_19_exclude_drops_matches_relative_to_each_source() {
    let f = Fixture::new();
    f.file("dir1/file-101.png", "2")
        .file("dir1/file-102.txt", "3");
    f.file("dir3/file-301.mp3", "9")
        .file("dir3/file-302.mpeg", "10");
    let ctx = f.context();
    let out = run(&ctx, "COPY --exclude=*/*.png --exclude=*/*.jpeg . /1");
    let n = names(out.path());
    assert!(
        n.contains(&"1/dir1/file-102.txt".to_owned()) && !n.iter().any(|x| x.ends_with(".png")),
        "{n:?}"
    );
    assert_eq!(
        names(run(&ctx, "ADD --exclude=*.mp3 dir3/ /3/").path()),
        ["3", "3/file-302.mpeg"]
    );
    // Everything excluded: the destination directory still exists, empty.
    assert_eq!(names(run(&ctx, "ADD --exclude=* dir* /6").path()), ["6"]);
}

#[test]
fn cp_20_parents_keeps_the_source_structure() {
    let f = Fixture::new();
    f.file("foo1/foo2/bar", "bar")
        .file("foo1/foo2/baz", "baz")
        .file("x/y/a.txt", "a")
        .file("other", "o");
    let ctx = f.context();
    assert_eq!(
        names(run(&ctx, "COPY --parents foo1/foo2/bar /").path()),
        ["foo1", "foo1/foo2", "foo1/foo2/bar"]
    );
    let out = run_ctx(&ctx, "COPY --parents foo1/foo2/ba* .", "/test", &[]).unwrap();
    assert_eq!(
        names(out.path()),
        [
            "test",
            "test/foo1",
            "test/foo1/foo2",
            "test/foo1/foo2/bar",
            "test/foo1/foo2/baz"
        ]
    );
    assert_eq!(
        names(run(&ctx, "COPY --parents ./x/./y/a.txt /p/").path()),
        ["p", "p/y", "p/y/a.txt"]
    );
    let e = run_ctx(&ctx, "COPY --parents nope/x /", "/", &[]).unwrap_err();
    assert!(matches!(e, CopyError::NotFoundInContext { .. }), "{e}");
}

#[test]
fn cp_21_link_does_not_follow_destination_symlinks() {
    let f = Fixture::new();
    f.file("foo", "foo");
    let ctx = f.context();
    let img = tempfile::tempdir().unwrap();
    fs::create_dir(img.path().join("real")).unwrap();
    symlink("/real", img.path().join("dest")).unwrap();
    let out = run_ctx(&ctx, "COPY foo /dest/", "/", &[img.path()]).unwrap();
    assert_eq!(names(out.path()), ["real", "real/foo"]);
    let out = run_ctx(&ctx, "COPY --link foo /dest/", "/", &[img.path()]).unwrap();
    assert_eq!(names(out.path()), ["dest", "dest/foo"]);
    // With --chmod, BuildKit does not link: the symlink is followed again.
    let prm = params("COPY --link --chmod=644 foo /dest/", "/").unwrap();
    assert!(!prm.link);
}

#[test]
fn cp_22_copy_never_unpacks_and_refuses_urls() {
    let f = Fixture::new();
    let tar = make_tar(&[("foo", "foo")]);
    fs::write(f.ctx().join("t.tar"), &tar).unwrap();
    let ctx = f.context();
    assert_eq!(names(run(&ctx, "COPY t.tar /").path()), ["t.tar"]);
    let e = params("COPY https://example.invalid/x /x", "/").unwrap_err();
    assert!(
        e.to_string().starts_with("source can't be a URL for COPY"),
        "{e}"
    );
    let e = params("COPY git@github.com:org/repo.git /x", "/").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("source can't be a git ref for COPY"),
        "{e}"
    );
    let e = params("ADD git@github.com:org/repo.git /x", "/").unwrap_err();
    assert!(matches!(e, CopyError::GitNotSupported { .. }), "{e}");
}

#[test]
fn cp_23_copying_the_same_paths_twice_overwrites() {
    let f = Fixture::new();
    f.file("sub/dir1/dir2/foo", "foo")
        .file("files/foo.go", "go");
    let ctx = f.context();
    let first = run(&ctx, "COPY sub sub");
    let second = run_ctx(&ctx, "COPY sub sub", "/", &[first.path()]).unwrap();
    assert!(entry(second.path(), "sub/dir1/dir2/foo").ends_with("f foo"));
    let a = run(&ctx, "COPY files/foo.go dest/foo.go");
    let b = run_ctx(&ctx, "COPY files dest", "/", &[a.path()]).unwrap();
    assert!(entry(b.path(), "dest/foo.go").ends_with("f go"));
}

#[test]
fn several_sources_onto_a_file_path_fail_and_directories_merge() {
    let f = Fixture::new();
    f.file("one", "1")
        .file("two", "2")
        .file("d1/a", "a")
        .file("d2/b", "b");
    let ctx = f.context();
    let e = run_ctx(&ctx, "COPY one two /dest", "/", &[]).unwrap_err();
    assert!(
        matches!(e, CopyError::SeveralSourcesNeedDirectory { .. }),
        "{e}"
    );
    let e = run_ctx(&ctx, "COPY o* t* /dest", "/", &[]).unwrap_err();
    assert!(
        matches!(e, CopyError::SeveralSourcesNeedDirectory { .. }),
        "{e}"
    );
    assert_eq!(
        names(run(&ctx, "COPY one two /dest/").path()),
        ["dest", "dest/one", "dest/two"]
    );
    assert_eq!(
        names(run(&ctx, "COPY d1 d2 /dest").path()),
        ["dest", "dest/a", "dest/b"]
    );
    // An existing directory in the image takes several files without a slash.
    let img = tempfile::tempdir().unwrap();
    fs::create_dir(img.path().join("dest")).unwrap();
    assert_eq!(
        names(
            run_ctx(&ctx, "COPY one two /dest", "/", &[img.path()])
                .unwrap()
                .path()
        ),
        ["dest", "dest/one", "dest/two"]
    );
}

#[test]
fn existing_parents_are_copied_up_with_their_metadata() {
    let f = Fixture::new();
    f.file("a", "a");
    let ctx = f.context();
    let img = tempfile::tempdir().unwrap();
    fs::create_dir_all(img.path().join("usr/local")).unwrap();
    fs::set_permissions(img.path().join("usr"), fs::Permissions::from_mode(0o711)).unwrap();
    set_mtime(&img.path().join("usr"), 1_000_000);
    let out = run_ctx(&ctx, "COPY a /usr/local/bin/", "/", &[img.path()]).unwrap();
    assert!(entry(out.path(), "usr").starts_with("0711"));
    assert_eq!(
        fs::metadata(out.path().join("usr")).unwrap().mtime(),
        1_000_000
    );
    assert!(entry(out.path(), "usr/local/bin").starts_with("0755"));
    // A file in the image where a directory is needed.
    fs::write(img.path().join("file"), "").unwrap();
    let e = run_ctx(&ctx, "COPY a /file/x/", "/", &[img.path()]).unwrap_err();
    assert!(matches!(e, CopyError::NotADirectory { .. }), "{e}");
    // A file named onto an existing directory goes into it...
    let out = run_ctx(&ctx, "COPY a /usr", "/", &[img.path()]).unwrap();
    assert_eq!(names(out.path()), ["usr", "usr/a"]);
    // ...but a file inside a copied directory cannot replace a directory.
    f.file("d/local", "x");
    let e = run_ctx(&ctx, "COPY d /usr", "/", &[img.path()]).unwrap_err();
    assert!(matches!(e, CopyError::ReplaceDirWithFile { .. }), "{e}");
}

#[test]
fn mtimes_and_hardlinks_are_preserved() {
    let f = Fixture::new();
    f.file("d/a", "same");
    fs::hard_link(f.ctx().join("d/a"), f.ctx().join("d/b")).unwrap();
    set_mtime(&f.ctx().join("d/a"), 1_234_567);
    set_mtime(&f.ctx().join("d"), 1_234_567);
    let ctx = f.context();
    let out = run(&ctx, "COPY d /d");
    let (a, b) = (
        fs::metadata(out.path().join("d/a")).unwrap(),
        fs::metadata(out.path().join("d/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.mtime(), 1_234_567);
    assert_eq!(
        fs::metadata(out.path().join("d")).unwrap().mtime(),
        1_234_567
    );
}

#[test]
fn hd_02_hd_03_heredoc_files() {
    let f = Fixture::new();
    let ctx = f.context();
    let out = run_ctx(&ctx, "COPY <<EOF single\nsingle file\nEOF", "/dest", &[]).unwrap();
    assert_eq!(
        entry(out.path(), "dest/single"),
        format!("0644 {} f single file\n", owner_str())
    );
    let out = run_ctx(
        &ctx,
        "COPY <<EOF <<EOF2 double/\nfirst file\nEOF\nsecond file\nEOF2",
        "/dest",
        &[],
    )
    .unwrap();
    assert!(entry(out.path(), "dest/double/EOF").ends_with("f first file\n"));
    assert!(entry(out.path(), "dest/double/EOF2").ends_with("f second file\n"));
    let out = run(&ctx, "COPY <<-EOF /dest/bar-copy\n\tbar\nEOF");
    assert!(entry(out.path(), "dest/bar-copy").ends_with("f bar\n"));
}

fn owner_str() -> String {
    if is_root() {
        "0:0".into()
    } else {
        format!(
            "{}:{}",
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        )
    }
}

#[test]
fn hd_08_chmod_and_chown_apply_to_heredoc_files() {
    let f = Fixture::new();
    let ctx = f.context();
    let out = run(&ctx, "COPY --chmod=777 <<EOF /p/all\nx\nEOF");
    assert!(entry(out.path(), "p/all").starts_with("0777"));
    if is_root() {
        let img = image_layer();
        let out = run_ctx(
            &ctx,
            "COPY --chown=user:user <<EOF /p/owned\nx\nEOF",
            "/",
            &[img.path()],
        )
        .unwrap();
        assert!(entry(out.path(), "p/owned").starts_with("0644 1001:1002 f"));
    }
}

fn make_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1000);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn add_01_local_tar_archives_are_unpacked_by_content() {
    let f = Fixture::new();
    let tar = make_tar(&[("foo", "foo")]);
    fs::write(f.ctx().join("t.tar"), &tar).unwrap();
    fs::write(f.ctx().join("t.tar.gz"), gzip(&tar)).unwrap();
    fs::write(
        f.ctx().join("t.zst"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();
    fs::write(f.ctx().join("fake.tar.gz"), "plain text").unwrap();
    fs::write(f.ctx().join("fake.tar.bz2"), "BZh91AY&SY").unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    fs::write(f.ctx().join("t.tar.bz2"), bz.finish().unwrap()).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    fs::write(f.ctx().join("t.txz"), xz.finish().unwrap()).unwrap();
    let ctx = f.context();
    assert_eq!(names(run(&ctx, "ADD t.tar /").path()), ["foo"]);
    assert_eq!(
        names(run(&ctx, "ADD t.tar.gz /gz/").path()),
        ["gz", "gz/foo"]
    );
    assert_eq!(names(run(&ctx, "ADD t.zst /z").path()), ["z", "z/foo"]);
    assert_eq!(
        names(run(&ctx, "ADD --unpack=false t.tar.gz /keep/").path()),
        ["keep", "keep/t.tar.gz"]
    );
    assert_eq!(
        names(run(&ctx, "ADD fake.tar.gz /").path()),
        ["fake.tar.gz"]
    );
    // bzip2 and xz too, as Docker's DecompressStream reads them; a stream that only has
    // the magic number is copied as it is.
    assert_eq!(
        names(run(&ctx, "ADD t.tar.bz2 /bz/").path()),
        ["bz", "bz/foo"]
    );
    assert_eq!(names(run(&ctx, "ADD t.txz /xz/").path()), ["xz", "xz/foo"]);
    assert_eq!(
        names(run(&ctx, "ADD fake.tar.bz2 /").path()),
        ["fake.tar.bz2"]
    );
    if is_root() {
        let out = run(&ctx, "ADD --chown=3:4 t.tar /o/");
        assert!(entry(out.path(), "o/foo").starts_with("0644 3:4 f"));
    }
}

#[test]
fn hostile_tar_with_dotdot_is_rejected() {
    let f = Fixture::new();
    // A raw header naming ../escape (the tar crate refuses to write one).
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend_from_slice(b"x");
    data.resize(512 * 2, 0);
    data.extend_from_slice(&[0u8; 1024]);
    fs::write(f.ctx().join("evil.tar"), &data).unwrap();
    let ctx = f.context();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    fs::create_dir(&out).unwrap();
    let e = execute(
        &p("ADD evil.tar /x/"),
        &CopySource::Context(&ctx),
        None,
        &out,
    )
    .unwrap_err();
    assert!(matches!(e, CopyError::Unpack { .. }), "{e}");
    assert!(e.to_string().contains("../escape"), "{e}");
    assert!(!parent.path().join("escape").exists() && !out.join("escape").exists());
}

#[test]
fn hostile_source_symlink_stays_inside_the_context() {
    let f = Fixture::new();
    fs::write(f.dir.path().join("secret"), "host secret").unwrap();
    f.link("abs", "/secret")
        .link("rel", "../../../secret")
        .file("secret", "ctx secret");
    let ctx = f.context();
    assert!(entry(run(&ctx, "COPY abs /a").path(), "a").ends_with("f ctx secret"));
    assert!(entry(run(&ctx, "COPY rel /r").path(), "r").ends_with("f ctx secret"));
    fs::remove_file(f.ctx().join("secret")).unwrap();
    let ctx = f.context();
    assert!(matches!(
        run_ctx(&ctx, "COPY abs /a", "/", &[]).unwrap_err(),
        CopyError::NotFoundInContext { .. }
    ));
}

#[test]
fn hostile_destination_symlink_stays_inside_the_image() {
    let f = Fixture::new();
    f.file("foo", "foo");
    let ctx = f.context();
    let img = tempfile::tempdir().unwrap();
    symlink("/../../etc", img.path().join("evil")).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    fs::create_dir(&out).unwrap();
    let view = LayeredView::new(vec![img.path().to_path_buf()]);
    execute(
        &p("COPY foo /evil/"),
        &CopySource::Context(&ctx),
        Some(&view),
        &out,
    )
    .unwrap();
    assert_eq!(names(&out), ["etc", "etc/foo"]);
    assert!(!parent.path().join("etc").exists());
}

/// A destination symlink whose target runs through a missing directory and then climbs
/// (`missing/../../escaped`) is cleaned lexically inside the image, as BuildKit does: the
/// `..` must never be applied on the host below the diff directory.
#[test]
fn hostile_destination_symlink_through_a_missing_directory_stays_inside() {
    let f = Fixture::new();
    f.file("foo", "foo");
    let ctx = f.context();
    let img = tempfile::tempdir().unwrap();
    symlink("missing/../../escaped", img.path().join("evil")).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    fs::create_dir(&out).unwrap();
    let view = LayeredView::new(vec![img.path().to_path_buf()]);
    execute(
        &p("COPY foo /evil/"),
        &CopySource::Context(&ctx),
        Some(&view),
        &out,
    )
    .unwrap();
    assert!(!parent.path().join("escaped").exists());
    assert_eq!(names(&out), ["escaped", "escaped/foo"]);
}

#[test]
fn di_01_di_02_dockerignore_hides_files() {
    let f = Fixture::new();
    f.file("Dockerfile", "FROM scratch")
        .file("foo", "")
        .file("bar", "")
        .file("baz", "")
        .file("bay", "");
    f.file(".dockerignore", "ba*\nDockerfile\n!bay\n.dockerignore\n");
    let ctx = f.context();
    assert_eq!(names(run(&ctx, "COPY . .").path()), ["bay", "foo"]);
    let e = run_ctx(&ctx, "COPY bar /", "/", &[]).unwrap_err();
    assert!(matches!(e, CopyError::NotFoundInContext { .. }));
}

#[test]
fn di_03_dockerfile_specific_ignore_file_wins() {
    let f = Fixture::new();
    f.file("foo", "")
        .file("bar", "")
        .file(".dockerignore", "foo\n");
    f.file("Dockerfile", "")
        .file("Dockerfile.dockerignore", "bar\n");
    let ctx = f.context_with(Some(&f.ctx().join("Dockerfile")));
    let n = names(run(&ctx, "COPY . /c/").path());
    assert!(
        n.contains(&"c/foo".to_owned()) && !n.contains(&"c/bar".to_owned()),
        "{n:?}"
    );
    let ctx = f.context_with(Some(&f.ctx().join("Dockerfile2")));
    let n = names(run(&ctx, "COPY . /c/").path());
    assert!(
        !n.contains(&"c/foo".to_owned()) && n.contains(&"c/bar".to_owned()),
        "{n:?}"
    );
}

#[test]
fn di_04_invalid_dockerignore_fails() {
    let f = Fixture::new();
    f.file(".dockerignore", "!\n");
    let sc = StatCache::open(&f.dir.path().join("cache"), "ctx").unwrap();
    let e = BuildContext::open(&f.ctx(), None, sc).unwrap_err();
    assert!(matches!(e, CopyError::Ignore { .. }), "{e}");
}

#[test]
fn di_05_patterns_are_anchored_and_cover_directories() {
    let f = Fixture::new();
    f.file("a.go", "")
        .file("cmd/b.go", "")
        .file("docs/x.md", "")
        .file("docs/keep.md", "");
    f.file(".dockerignore", "*.go\ndocs\n!docs/keep.md\n/cmd/../tmp\n");
    let ctx = f.context();
    let n = names(run(&ctx, "COPY . /c/").path());
    assert_eq!(
        n,
        [
            "c",
            "c/.dockerignore",
            "c/cmd",
            "c/cmd/b.go",
            "c/docs",
            "c/docs/keep.md"
        ]
    );
    // The excluded directory is still there, holding the re-included file.
    assert_eq!(names(run(&ctx, "COPY docs /d/").path()), ["d", "d/keep.md"]);
}

fn key_of(ctx: &BuildContext, line: &str) -> CacheKey {
    let v = cache_inputs(&p(line), &CopySource::Context(ctx)).unwrap();
    CacheKey::derive(None, "copy", &v)
}

#[test]
fn cache_inputs_follow_content_and_mode_not_mtime() {
    let f = Fixture::new();
    f.file("app/a.js", "a")
        .file("app/b.js", "b")
        .file("other", "o")
        .file("app/ignored.log", "x");
    f.file(".dockerignore", "**/*.log\n");
    let ctx = f.context();
    let k0 = key_of(&ctx, "COPY app /app");
    assert_eq!(k0, key_of(&ctx, "COPY app /app"));
    // Touching a file changes nothing.
    set_mtime(&f.ctx().join("app/a.js"), 42);
    assert_eq!(k0, key_of(&ctx, "COPY app /app"));
    // Files outside the selection or ignored do not count.
    fs::write(f.ctx().join("other"), "changed").unwrap();
    fs::write(f.ctx().join("app/ignored.log"), "changed").unwrap();
    assert_eq!(k0, key_of(&ctx, "COPY app /app"));
    // Content, mode, names and parameters do.
    fs::write(f.ctx().join("app/a.js"), "A").unwrap();
    let k1 = key_of(&ctx, "COPY app /app");
    assert_ne!(k0, k1);
    fs::set_permissions(f.ctx().join("app/b.js"), fs::Permissions::from_mode(0o755)).unwrap();
    let k2 = key_of(&ctx, "COPY app /app");
    assert_ne!(k1, k2);
    assert_ne!(k2, key_of(&ctx, "COPY app /app2"));
    assert_ne!(k2, key_of(&ctx, "COPY --chmod=644 app /app"));
    symlink("a.js", f.ctx().join("app/l")).unwrap();
    let k3 = key_of(&ctx, "COPY app /app");
    assert_ne!(k2, k3);
    fs::remove_file(f.ctx().join("app/l")).unwrap();
    symlink("b.js", f.ctx().join("app/l")).unwrap();
    assert_ne!(k3, key_of(&ctx, "COPY app /app"));
    // The stat cache remembers digests across builds.
    ctx.save().unwrap();
    let sc = StatCache::open(&f.dir.path().join("cache"), "ctx").unwrap();
    assert!(
        sc.len() >= 2 || sc.is_empty(),
        "racily-clean entries are not saved"
    );
}

#[test]
fn cache_inputs_of_a_stage_read_nothing() {
    let stage = tempfile::tempdir().unwrap();
    let view = LayeredView::new(vec![stage.path().join("does-not-exist")]);
    let k1 = CacheKey::derive(None, "stage", "1");
    let k2 = CacheKey::derive(None, "stage", "2");
    let prm = p("COPY --from=x /a /b");
    let a = cache_inputs(
        &prm,
        &CopySource::Layers {
            view: &view,
            key: &k1,
        },
    )
    .unwrap();
    let b = cache_inputs(
        &prm,
        &CopySource::Layers {
            view: &view,
            key: &k2,
        },
    )
    .unwrap();
    assert_ne!(a, b);
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `body` (and the
/// given extra header lines); returns its base URL.
fn serve(body: Vec<u8>, headers: &'static str, status: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_02_add_03_urls_are_downloaded_not_unpacked() {
    let f = Fixture::new();
    let ctx = f.context();
    let tgz = gzip(&make_tar(&[("foo", "foo")]));
    let base = serve(
        tgz,
        "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
        "200 OK",
    );
    let out = run(&ctx, &format!("ADD {base}/t.tar.gz /"));
    assert_eq!(names(out.path()), ["t.tar.gz"]);
    let m = fs::metadata(out.path().join("t.tar.gz")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.mtime(), 1_445_412_480);
    assert_eq!(
        names(run(&ctx, &format!("ADD {base}/t.tar.gz /newname.tar.gz")).path()),
        ["newname.tar.gz"]
    );
    assert_eq!(
        names(run(&ctx, &format!("ADD --unpack=true {base}/t.tar.gz /dest/")).path()),
        ["dest", "dest/foo"]
    );
    assert_eq!(
        names(run(&ctx, &format!("ADD {base}/ /dest/")).path()),
        ["dest", "dest/__unnamed__"]
    );
}

#[test]
fn add_04_add_05_chmod_and_checksum_on_downloads() {
    let f = Fixture::new();
    let ctx = f.context();
    let base = serve(b"hello".to_vec(), "", "200 OK");
    assert!(
        entry(
            run(&ctx, &format!("ADD --chmod=644 {base}/foo /tmp/foo1")).path(),
            "tmp/foo1"
        )
        .starts_with("0644")
    );
    assert!(
        entry(
            run(&ctx, &format!("ADD --chmod=0413 {base}/foo /tmp/foo3")).path(),
            "tmp/foo3"
        )
        .starts_with("0413")
    );
    let good = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello"))
    );
    assert_eq!(
        names(run(&ctx, &format!("ADD --checksum={good} {base}/foo /tmp/foo")).path()),
        ["tmp", "tmp/foo"]
    );
    let bad = format!("sha256:{}", "0".repeat(64));
    let e = run_ctx(
        &ctx,
        &format!("ADD --checksum={bad} {base}/foo /tmp/foo"),
        "/",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("digest mismatch for"), "{e}");
    let e = params(&format!("ADD --checksum={good} foo /tmp/foo"), "/").unwrap_err();
    assert_eq!(e.to_string(), "checksum requires HTTP(S) or Git sources");
    // The key follows the download's digest.
    let prm = p(&format!("ADD {base}/foo /x"));
    let v = cache_inputs(&prm, &CopySource::Context(&ctx)).unwrap();
    assert!(v.to_string().contains(&good), "{v}");
    let missing = serve(Vec::new(), "", "404 Not Found");
    let e = run_ctx(&ctx, &format!("ADD {missing}/x /x"), "/", &[]).unwrap_err();
    assert!(
        matches!(e, CopyError::HttpStatus { status: 404, .. }),
        "{e}"
    );
}

#[test]
#[ignore = "timing: cargo test -p builder-core --lib timing -- --ignored --nocapture"]
fn timing_cache_inputs_and_execute_on_a_large_context() {
    let f = Fixture::new();
    let body = "x".repeat(4000);
    for i in 0..200 {
        for j in 0..100 {
            f.file(&format!("node_modules/p{i}/f{j}.js"), &body);
        }
    }
    // Older than the stat cache's racily-clean window, so that entries are saved.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let line = "COPY . /app/";
    let ctx = f.context();
    let t = std::time::Instant::now();
    let cold = key_of(&ctx, line);
    let cold_t = t.elapsed();
    ctx.save().unwrap();
    drop(ctx);
    let ctx = f.context();
    let t = std::time::Instant::now();
    let warm = key_of(&ctx, line);
    let warm_t = t.elapsed();
    assert_eq!(cold, warm);
    let t = std::time::Instant::now();
    let out = run(&ctx, line);
    let exec_t = t.elapsed();
    assert!(out.path().join("app/node_modules/p199/f99.js").exists());
    eprintln!(
        "20000 files, 80 MB: cache_inputs cold {cold_t:?}, warm (new process, stat cache) {warm_t:?}; execute {exec_t:?}"
    );
}
