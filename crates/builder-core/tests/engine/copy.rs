//! Section 5: COPY (CP-*), 6. ADD (ADD-*), 12. .dockerignore (DI-*).

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use crate::util::{Case, R, expect_err, ok};

pub(crate) fn cp_01_directory_source_copies_contents() -> R {
    let c = Case::new();
    c.file("sub/dir1/dir2/foo", "foo");
    let img = ok(c.build(
        "FROM scratch\nCOPY sub/dir1 subdest6\nCOPY sub/dir1/ subdest4\nCOPY sub/dir1/. subdest5\n",
    ))?;
    for d in ["subdest6", "subdest4", "subdest5"] {
        ensure_eq!(img.read(&format!("/{d}/dir2/foo"))?, "foo");
    }
    ensure!(!img.exists("/subdest6/dir1")?, "dir1 itself was copied");
    Ok(())
}

pub(crate) fn cp_02_wildcards() -> R {
    let c = Case::new();
    c.file("foo.go", "foo")
        .file("bar.go", "bar")
        .file("sub/dir1/dir2/foo", "deep");
    let img = ok(c.build(
        "FROM scratch\nCOPY *.go /gofiles/\nCOPY f*.go foo2.go\nCOPY sub/* /subdest/\nCOPY sub/*/dir2/foo /subdest3/bar\n",
    ))?;
    ensure_eq!(img.ls("/gofiles")?, ["bar.go", "foo.go"]);
    ensure_eq!(img.read("/foo2.go")?, "foo");
    ensure_eq!(img.read("/subdest/dir2/foo")?, "deep");
    ensure_eq!(img.read("/subdest3/bar")?, "deep");
    Ok(())
}

pub(crate) fn cp_03_trailing_slash_means_into() -> R {
    let c = Case::new();
    c.file("test.txt", "t");
    let img = ok(c.build("FROM scratch\nCOPY test.txt /abs/\nCOPY test.txt /file\n"))?;
    ensure!(img.stat("/abs/test.txt")?.is_file(), "/abs/test.txt");
    ensure!(img.stat("/file")?.is_file(), "/file is not a file");
    Ok(())
}

pub(crate) fn cp_04_missing_destination_dirs_created() -> R {
    let c = Case::new();
    c.file("a", "a");
    let img = ok(c.build("FROM scratch\nCOPY a /x/y/z/\n"))?;
    ensure_eq!(img.read("/x/y/z/a")?, "a");
    for d in ["/x", "/x/y", "/x/y/z"] {
        let st = img.stat(d)?;
        ensure!(st.is_dir(), "{d} is not a directory");
        ensure_eq!((st.uid(), st.gid()), (0, 0), "{d}");
    }
    Ok(())
}

pub(crate) fn cp_05_relative_destination_uses_workdir() -> R {
    let c = Case::new();
    c.file("foo", "foo");
    ok(c.build(
        "FROM {BUSYBOX}\nWORKDIR /test1\nWORKDIR test2\nCOPY foo ./\nCOPY foo ./bar/baz2\nWORKDIR /test5/test6\nCOPY foo ../\nRUN [ -f /test1/test2/foo ] && [ -f /test1/test2/bar/baz2 ] && [ -f /test5/foo ]\n",
    ))?;
    Ok(())
}

pub(crate) fn cp_06_empty_destination_is_workdir() -> R {
    let c = Case::new();
    c.file("testfile", "contents0");
    ok(c.build(
        "FROM {BUSYBOX}\nENV empty=\"\"\nCOPY testfile $empty\nRUN [ \"$(cat testfile)\" = contents0 ]\n",
    ))?;
    Ok(())
}

pub(crate) fn cp_07_sources_cannot_leave_the_context() -> R {
    let c = Case::new();
    c.file("a", "ctx-a").file("d/f", "f");
    let img = ok(c.build("FROM scratch\nCOPY ../a /one\nCOPY /a /two\nCOPY d/ /three/\n"))?;
    ensure_eq!(img.read("/one")?, "ctx-a");
    ensure_eq!(img.read("/two")?, "ctx-a");
    ensure_eq!(img.read("/three/f")?, "f");
    Ok(())
}

pub(crate) fn cp_08_named_symlinks_are_followed() -> R {
    let c = Case::new();
    c.file("bar", "bar-contents")
        .symlink("foo", "bar")
        .symlink("sub/l0", "subfile")
        .file("sub/subfile", "subfile-contents")
        .symlink("sub/l1", "second")
        .symlink("sub/second", "baz")
        .file("sub/baz", "baz-contents")
        .file("sub/lfile", "lfile")
        .symlink("dir/inner", "../bar");
    let img = ok(c.build("FROM scratch\nCOPY foo /\nCOPY sub/l* alllinks/\nCOPY dir /dir/\n"))?;
    ensure!(img.stat("/foo")?.is_file(), "/foo is not a regular file");
    ensure_eq!(img.read("/foo")?, "bar-contents");
    ensure_eq!(img.read("/alllinks/l0")?, "subfile-contents");
    ensure_eq!(img.read("/alllinks/l1")?, "baz-contents");
    ensure!(
        img.stat("/dir/inner")?.file_type().is_symlink(),
        "a symlink inside a copied directory was followed"
    );
    Ok(())
}

pub(crate) fn cp_09_unmatched_wildcard_with_another_source() -> R {
    let c = Case::new();
    c.file("foo", "foo");
    let img = ok(c.build("FROM scratch\nCOPY foo nomatch* /\n"))?;
    ensure_eq!(img.read("/foo")?, "foo");
    Ok(())
}

/// The test busybox has no `daemon` user nor `nobody` group: they are added first.
pub(crate) fn cp_10_chown_resolves_names() -> R {
    let c = Case::new();
    c.file("foo", "foo").file("bar/sub", "");
    ok(c.build_with(
        "FROM {BUSYBOX} AS base\nRUN echo 'daemon:x:1:1::/:/bin/false' >> /etc/passwd && echo 'daemon:x:1:' >> /etc/group && echo 'nobody:x:99:' >> /etc/group\nENV owner 1000\nCOPY --chown=daemon foo /\nCOPY --chown=1000:nobody bar /baz\nARG group\nCOPY --chown=${owner}:${group} foo /foobis\nCOPY --chown=10 foo /ten\nRUN [ \"$(stat -c '%U %G' /foo)\" = \"daemon daemon\" ] \\\n && [ \"$(stat -c '%u %G' /baz/sub)\" = \"1000 nobody\" ] \\\n && [ \"$(stat -c '%u %G' /foobis)\" = \"1000 nobody\" ] \\\n && [ \"$(stat -c '%u:%g' /ten)\" = \"10:10\" ]\n",
        |b| b.build_arg("group", "nobody"),
    ))?;
    Ok(())
}

pub(crate) fn cp_11_default_owners() -> R {
    let c = Case::new();
    c.file("ctxfile", "x");
    std::os::unix::fs::chown(c.ctx().join("ctxfile"), Some(1234), Some(5678))?;
    ok(c.build(
        "FROM {BUSYBOX} AS source\nRUN touch /file && chown 100:200 /file\nFROM {BUSYBOX}\nCOPY --from=source /file /file\nCOPY ctxfile /ctxfile\nRUN [ \"$(stat -c %u:%g /file)\" = 100:200 ] && [ \"$(stat -c %u:%g /ctxfile)\" = 0:0 ]\n",
    ))?;
    Ok(())
}

pub(crate) fn cp_12_existing_directory_keeps_its_owner() -> R {
    ok(Case::new().build(
        "FROM {BUSYBOX} AS source\nRUN mkdir -p /dir/subdir && chown 101:201 /dir/subdir\nFROM {BUSYBOX}\nRUN mkdir /existingdir && chown 500:600 /existingdir\nCOPY --from=source --chown=300:400 /dir/. /existingdir\nRUN [ \"$(stat -c %u:%g /existingdir)\" = 500:600 ] && [ \"$(stat -c %u:%g /existingdir/subdir)\" = 300:400 ]\n",
    ))?;
    Ok(())
}

pub(crate) fn cp_13_chmod() -> R {
    let c = Case::new();
    c.file("foo", "foo").chmod("foo", 0o600);
    ok(c.build_with(
        "FROM {BUSYBOX}\nCOPY --chmod=0644 foo /\nCOPY --chmod=0 foo /foobis\nCOPY --chmod=777 foo /parent/foo\nCOPY --chmod=770 foo /parent/sub/foo\nARG mode\nCOPY --chmod=${mode} foo /footer\nRUN [ \"$(stat -c %04a /foo)\" = 0644 ] && [ \"$(stat -c %04a /foobis)\" = 0000 ] \\\n && [ \"$(stat -c %04a /parent)\" = 0777 ] && [ \"$(stat -c %04a /parent/sub)\" = 0770 ] \\\n && [ \"$(stat -c %04a /footer)\" = 0755 ]\n",
        |b| b.build_arg("mode", "755"),
    ))?;
    Ok(())
}

pub(crate) fn cp_14_bad_and_symbolic_chmod() -> R {
    let c = Case::new();
    c.file("foo", "foo").chmod("foo", 0o640);
    expect_err(
        c.build("FROM scratch\nCOPY --chmod=64a foo /\n"),
        "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777",
    )?;
    expect_err(
        c.build("FROM scratch\nCOPY --chmod=10000 foo /\n"),
        "invalid chmod parameter",
    )?;
    let img =
        ok(c.build("FROM scratch\nCOPY --chmod=u=rwX,go=rX foo /a\nCOPY --chmod=+x foo /b\n"))?;
    ensure_eq!(img.stat("/a")?.mode() & 0o7777, 0o644);
    ensure_eq!(img.stat("/b")?.mode() & 0o7777, 0o751);
    Ok(())
}

pub(crate) fn cp_15_permissions_preserved() -> R {
    let c = Case::new();
    c.file("script.sh", "#!/bin/sh\n").chmod("script.sh", 0o700);
    ok(c.build("FROM {BUSYBOX}\nCOPY script.sh /\nRUN [ \"$(stat -c %a /script.sh)\" = 700 ]\n"))?;
    Ok(())
}

pub(crate) fn cp_16_from_stage_index_or_image() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS golang\nRUN mkdir -p /usr/bin && echo -n foo > /usr/bin/go\nFROM scratch\nCOPY --from=golang /usr/bin/go go\nCOPY --from=0 /usr/bin/go go0\nCOPY --from={BUSYBOX} /etc/passwd passwd\n",
    ))?;
    ensure_eq!(img.read("/go")?, "foo");
    ensure_eq!(img.read("/go0")?, "foo");
    ensure!(img.read("/passwd")?.starts_with("root:"), "passwd");
    Ok(())
}

pub(crate) fn cp_17_from_paths_are_absolute() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS base\nWORKDIR /foo\nCOPY Dockerfile /\nFROM {BUSYBOX}\nCOPY --from=base Dockerfile .\n",
    ))?;
    ensure!(
        img.read("/Dockerfile")?.contains("AS base"),
        "not the Dockerfile"
    );
    Ok(())
}

pub(crate) fn cp_18_from_must_be_earlier() -> R {
    expect_err(
        Case::new().build(
            "FROM {BUSYBOX} AS target\nCOPY --from=build /d2 /out\nFROM {BUSYBOX} AS build\nCOPY Dockerfile /d2\nFROM target\n",
        ),
        "needs to be defined before current stage",
    )?;
    Ok(())
}

pub(crate) fn cp_19_exclude() -> R {
    let c = Case::new();
    c.file("dir1/file-101.png", "p")
        .file("dir1/file-102.txt", "t")
        .file("dir3/file-301.mp3", "m")
        .file("dir3/file-302.mpeg", "g");
    let text = "FROM scratch AS b1\nCOPY --exclude=*/*.png --exclude=*/*.jpeg . /1\nFROM scratch AS b3\nADD --exclude=*.mp3 dir3/ /3/\n";
    let img = ok(c.build_with(text, |b| Ok(b.target("b1"))))?;
    ensure!(img.exists("/1/dir1/file-102.txt")?, "txt missing");
    ensure!(!img.exists("/1/dir1/file-101.png")?, "png copied");
    let img = ok(c.build_with(text, |b| Ok(b.target("b3"))))?;
    ensure_eq!(img.ls("/3")?, ["file-302.mpeg"]);
    Ok(())
}

pub(crate) fn cp_20_parents() -> R {
    let c = Case::new();
    c.file("foo1/foo2/bar", "bar")
        .file("foo1/foo2/baz", "baz")
        .file("x/y/a.txt", "a");
    let img = ok(c.build(
        "FROM scratch\nCOPY --parents foo1/foo2/bar /\nWORKDIR /test\nCOPY --parents foo1/foo2/ba* .\nCOPY --parents ./x/./y/a.txt /p/\n",
    ))?;
    ensure_eq!(img.read("/foo1/foo2/bar")?, "bar");
    ensure_eq!(img.read("/test/foo1/foo2/bar")?, "bar");
    ensure_eq!(img.read("/test/foo1/foo2/baz")?, "baz");
    ensure_eq!(img.read("/p/y/a.txt")?, "a");
    Ok(())
}

pub(crate) fn cp_21_link_is_independent() -> R {
    let c = Case::new();
    c.file("foo", "foo");
    let img = ok(c.build(
        "FROM {BUSYBOX} AS base\nRUN mkdir /real && ln -s /real /dest\nFROM base\nCOPY --link foo /dest/\n",
    ))?;
    ensure_eq!(img.layer_names(-1)?, ["dest", "dest/foo"]);
    ensure!(img.stat("/dest")?.is_dir(), "/dest is not a directory");
    let img = ok(c.build(
        "FROM {BUSYBOX} AS base\nRUN mkdir /real && ln -s /real /dest\nFROM base\nCOPY foo /dest/\n",
    ))?;
    ensure_eq!(img.read("/real/foo")?, "foo");
    Ok(())
}

pub(crate) fn cp_22_copy_never_unpacks_or_fetches() -> R {
    let c = Case::new();
    c.file_bytes("t.tar.gz", &tar_gz(&[("foo", b"foo")]));
    let img = ok(c.build("FROM scratch\nCOPY t.tar.gz /\n"))?;
    ensure_eq!(
        std::fs::read(img.rootfs()?.join("t.tar.gz"))?,
        std::fs::read(c.ctx().join("t.tar.gz"))?
    );
    expect_err(
        c.build("FROM scratch\nCOPY https://example.invalid/x /x\n"),
        "source can't be a URL for COPY",
    )?;
    expect_err(
        c.build("FROM scratch\nCOPY --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 t.tar.gz b\n"),
        "unknown flag: --checksum",
    )?;
    Ok(())
}

pub(crate) fn cp_23_copying_twice_overwrites() -> R {
    let c = Case::new();
    c.file("sub/dir1/dir2/foo", "foo")
        .file("files/foo.go", "go");
    let img = ok(c.build(
        "FROM scratch\nCOPY sub sub\nCOPY sub sub\nCOPY files/foo.go dest/foo.go\nCOPY files/foo.go dest/foo.go\nCOPY files dest\n",
    ))?;
    ensure_eq!(img.read("/sub/dir1/dir2/foo")?, "foo");
    ensure_eq!(img.read("/dest/foo.go")?, "go");
    Ok(())
}

pub(crate) fn cp_24_paths_expand_variables() -> R {
    let c = Case::new();
    c.file("bar", "bar-contents");
    let img = ok(c.build("FROM scratch\nENV FOO bar\nCOPY $FOO baz\n"))?;
    ensure_eq!(img.read("/baz")?, "bar-contents");
    Ok(())
}

/// A tar (uncompressed) with regular files.
pub(crate) fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, *data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// A gzipped tar with regular files.
pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes(files)).expect("gzip");
    gz.finish().expect("gzip")
}

pub(crate) fn add_01_local_archives_unpacked() -> R {
    let c = Case::new();
    c.file_bytes("t.tar", &tar_bytes(&[("foo", b"plain")]))
        .file_bytes("t.tar.gz", &tar_gz(&[("foo", b"gz")]))
        .file_bytes("named.bin", &tar_gz(&[("sniffed", b"by content")]))
        .file("fake.tar.gz", "not an archive");
    let img = ok(c.build(
        "FROM scratch\nADD t.tar /\nADD t.tar.gz /gz/\nADD --unpack=false t.tar.gz /keep/\nADD named.bin /sniff/\nADD fake.tar.gz /fake/\n",
    ))?;
    ensure_eq!(img.read("/foo")?, "plain");
    ensure_eq!(img.read("/gz/foo")?, "gz");
    ensure!(img.stat("/keep/t.tar.gz")?.is_file(), "/keep/t.tar.gz");
    ensure_eq!(img.read("/sniff/sniffed")?, "by content");
    ensure_eq!(img.read("/fake/fake.tar.gz")?, "not an archive");
    Ok(())
}

pub(crate) fn add_02_url_not_unpacked() -> R {
    let srv = crate::http::Server::start(&[("/t.tar.gz", tar_gz(&[("foo", b"foo")]), None)])?;
    let u = srv.url();
    let img = ok(Case::new().build(&format!(
        "FROM scratch\nADD {u}/t.tar.gz /\nADD {u}/t.tar.gz /newname.tar.gz\nADD --unpack=true {u}/t.tar.gz /dest/\n"
    )))?;
    ensure!(img.stat("/t.tar.gz")?.is_file(), "/t.tar.gz");
    ensure!(img.stat("/newname.tar.gz")?.is_file(), "/newname.tar.gz");
    ensure_eq!(img.read("/dest/foo")?, "foo");
    Ok(())
}

pub(crate) fn add_03_url_name_mode_mtime() -> R {
    let srv = crate::http::Server::start(&[
        (
            "/foo",
            b"foo-body".to_vec(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        ("/", b"root-body".to_vec(), None),
    ])?;
    let u = srv.url();
    let img = ok(Case::new().build(&format!(
        "FROM scratch\nADD {u}/foo /dest/\nADD {u}/ /dest/\n"
    )))?;
    ensure_eq!(img.read("/dest/foo")?, "foo-body");
    ensure_eq!(img.read("/dest/__unnamed__")?, "root-body");
    let st = img.stat("/dest/foo")?;
    ensure_eq!(st.mode() & 0o7777, 0o600);
    ensure_eq!(st.mtime(), 1_445_412_480);
    Ok(())
}

pub(crate) fn add_04_url_chmod() -> R {
    let srv = crate::http::Server::start(&[("/foo", b"foo".to_vec(), None)])?;
    let u = srv.url();
    ok(Case::new().build(&format!(
        "FROM {{BUSYBOX}}\nADD --chmod=644 {u}/foo /tmp/foo1\nADD --chmod=0413 {u}/foo /tmp/foo3\nRUN [ \"$(stat -c %04a /tmp/foo1)\" = 0644 ] && [ \"$(stat -c %04a /tmp/foo3)\" = 0413 ]\n"
    )))?;
    Ok(())
}

pub(crate) fn add_05_checksum() -> R {
    use sha2::Digest as _;
    let body = b"checked body".to_vec();
    let sum = hex::encode(sha2::Sha256::digest(&body));
    let srv = crate::http::Server::start(&[("/foo", body, None)])?;
    let u = srv.url();
    let c = Case::new();
    c.file("local", "x");
    let img = ok(c.build(&format!(
        "FROM scratch\nENV SUM=sha256:{sum}\nADD --checksum=$SUM {u}/foo /tmp/foo\n"
    )))?;
    ensure_eq!(img.read("/tmp/foo")?, "checked body");
    let zero = "0".repeat(64);
    expect_err(
        c.build(&format!(
            "FROM scratch\nADD --checksum=sha256:{zero} {u}/foo /tmp/foo\n"
        )),
        "",
    )?;
    for bad in [format!("md5:{zero}"), format!("unknown:{zero}")] {
        expect_err(
            c.build(&format!(
                "FROM scratch\nADD --checksum={bad} {u}/foo /tmp/foo\n"
            )),
            "",
        )?;
    }
    expect_err(
        c.build(&format!(
            "FROM scratch\nADD --checksum={sum} {u}/foo /tmp/foo\n"
        )),
        "invalid checksum digest format",
    )?;
    expect_err(
        c.build(&format!(
            "FROM scratch\nADD --checksum=sha256:{sum} local /tmp/foo\n"
        )),
        "checksum requires HTTP(S) or Git sources",
    )?;
    Ok(())
}

pub(crate) fn di_01_ignored_files_invisible() -> R {
    let c = Case::new();
    c.file("foo", "foo")
        .file("bar", "bar")
        .file("baz", "baz")
        .file("bay", "bay")
        .file(".dockerignore", "ba*\nDockerfile\n!bay\n.dockerignore\n");
    let img = ok(c.build("FROM scratch\nCOPY . .\n"))?;
    ensure_eq!(img.ls("/")?, ["bay", "foo"]);
    Ok(())
}

/// DI-02: the ignored Dockerfile is still read, and neither it nor .dockerignore is copied
/// (the same context as DI-01, checked from the other side).
pub(crate) fn di_02_ignored_dockerfile_still_used() -> R {
    let c = Case::new();
    c.file("foo", "foo")
        .file(".dockerignore", "Dockerfile\n.dockerignore\n");
    let img = ok(c.build("FROM scratch\nCOPY . /c/\nLABEL read=yes\n"))?;
    ensure_eq!(img.cfg()?["Labels"]["read"], "yes");
    ensure_eq!(img.ls("/c")?, ["foo"]);
    Ok(())
}

pub(crate) fn di_03_dockerfile_specific_ignore() -> R {
    let c = Case::new();
    c.file("foo", "foo")
        .file("bar", "bar")
        .file("Dockerfile.dockerignore", "bar\n")
        .file("Dockerfile2.dockerignore", "foo\n")
        .file(
            "Dockerfile2",
            &crate::util::df("FROM {BUSYBOX}\nCOPY . .\nRUN [ ! -f foo ] && [ -f bar ]\n"),
        );
    ok(c.build("FROM {BUSYBOX}\nCOPY . .\nRUN [ -f foo ] && [ ! -f bar ]\n"))?;
    let df2 = c.ctx().join("Dockerfile2");
    ok(c.run(|b| b.dockerfile(&df2)))?;
    Ok(())
}

pub(crate) fn di_04_invalid_dockerignore_fails() -> R {
    let c = Case::new();
    c.file(".dockerignore", "!\n");
    let t = std::time::Instant::now();
    expect_err(c.build("FROM scratch\nCOPY . .\n"), "")?;
    ensure!(t.elapsed().as_secs() < 15, "took {:?}", t.elapsed());
    Ok(())
}

pub(crate) fn di_05_patterns_anchored_at_the_root() -> R {
    let c = Case::new();
    c.file("a.go", "a")
        .file("cmd/b.go", "b")
        .file("docs/x.md", "x")
        .file("docs/keep.md", "k")
        .file(".dockerignore", "*.go\ndocs\n!docs/keep.md\n/cmd/../tmp\n");
    let img = ok(c.build("FROM scratch\nCOPY . /c/\n"))?;
    ensure!(img.exists("/c/cmd/b.go")?, "cmd/b.go missing");
    ensure!(!img.exists("/c/a.go")?, "a.go copied");
    ensure!(img.exists("/c/docs/keep.md")?, "docs/keep.md missing");
    ensure!(!img.exists("/c/docs/x.md")?, "docs/x.md copied");
    Ok(())
}

pub(crate) fn di_06_ignored_files_hidden_from_bind_mounts() -> R {
    let c = Case::new();
    c.file("secret.txt", "s")
        .file(".dockerignore", "secret.txt\n");
    ok(c.build("FROM {BUSYBOX}\nRUN --mount=target=/ctx [ ! -e /ctx/secret.txt ]\n"))?;
    Ok(())
}
