//! Section 1: Parsing, comments, continuations, directives (PAR-*).

use builder_core::ProgressEvent;

use crate::util::{Case, R, expect_err, ok, strings};

pub(crate) fn par_01_lowercase_keywords() -> R {
    let c = Case::new();
    c.file("a", "x");
    let img = ok(c.build("from {BUSYBOX}\nrun echo -n ok > /out\nCopy --chmod=644 a /a\n"))?;
    ensure_eq!(img.read("/out")?, "ok");
    ensure!(img.exists("/a")?, "/a is missing");
    Ok(())
}

pub(crate) fn par_02_comment_lines_in_continuation() -> R {
    let img = ok(Case::new()
        .build("FROM {BUSYBOX}\nRUN echo hello \\\n# this line is removed\n    world > /out\n"))?;
    ensure_eq!(img.read("/out")?, "hello world\n");
    Ok(())
}

pub(crate) fn par_03_continuation_adds_no_space() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nRUN echo good\\\nbye > /out\n"))?;
    ensure_eq!(img.read("/out")?, "goodbye\n");
    Ok(())
}

pub(crate) fn par_04_blank_lines_in_continuation() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nRUN echo a \\\n\n    b > /out\n"))?;
    ensure_eq!(img.read("/out")?, "a b\n");
    // BuildKit warns about the empty continuation line.
    let warned = img.events.iter().any(|e| {
        matches!(e, ProgressEvent::Warning { message, .. }
            if message.to_ascii_lowercase().contains("continuation"))
    });
    ensure!(
        warned,
        "no warning about the empty continuation line: {:?}",
        img.events
            .iter()
            .filter(|e| matches!(e, ProgressEvent::Warning { .. }))
            .collect::<Vec<_>>()
    );
    Ok(())
}

pub(crate) fn par_05_escape_directive() -> R {
    let img = ok(Case::new().build(
        "# escape=`\nFROM {BUSYBOX}\nRUN echo one `\n    two > /out\nENV P=C:\\\nRUN [ \"$P\" = 'C:\\' ]\n",
    ))?;
    ensure_eq!(img.read("/out")?, "one two\n");
    ensure!(
        img.env()?.contains(&"P=C:\\".to_owned()),
        "{:?}",
        img.env()?
    );
    Ok(())
}

pub(crate) fn par_06_directives_only_at_the_top() -> R {
    ok(Case::new().build(
        "# a normal comment\n# escape=`\nFROM {BUSYBOX}\nENV GOPATH \\\n/go\nRUN [ \"$GOPATH\" = /go ]\n",
    ))?;
    // The same after a blank line.
    ok(Case::new()
        .build("\n# escape=`\nFROM {BUSYBOX}\nENV GOPATH \\\n/go\nRUN [ \"$GOPATH\" = /go ]\n"))?;
    Ok(())
}

pub(crate) fn par_07_syntax_directive() -> R {
    let epoch = |b: builder_core::Build| b.build_arg("SOURCE_DATE_EPOCH", "1445412480");
    let with = Case::new();
    with.file("a", "x");
    let a = ok(with.build_with(
        "# syntax=docker/dockerfile:1\nFROM scratch\nCOPY a /a\n",
        epoch,
    ))?;
    let without = Case::new();
    without.file("a", "x");
    let b = ok(without.build_with("FROM scratch\nCOPY a /a\n", epoch))?;
    ensure_eq!(a.created_by(0)?, vec!["COPY a /a # buildkit".to_owned()]);
    ensure_eq!(a.digest()?, b.digest()?, "the directive changed the image");
    Ok(())
}

pub(crate) fn par_08_single_quotes_are_shell_form() -> R {
    let img = ok(Case::new().build("FROM scratch\nCMD ['echo', 'hi']\n"))?;
    ensure_eq!(
        strings(&img.cfg()?["Cmd"]),
        ["/bin/sh", "-c", "['echo', 'hi']"]
    );
    Ok(())
}

pub(crate) fn par_09_json_array_of_strings_only() -> R {
    expect_err(
        Case::new().build("FROM scratch\nCMD [\"echo\", 1]\n"),
        "arrays must be comprised of strings only",
    )?;
    Ok(())
}

pub(crate) fn par_10_unknown_instruction() -> R {
    let e = expect_err(
        Case::new()
            .build("FROM scratch\nFNTRYPOINT [\"/bin/sh\", \"-c\", \"echo invalidinstruction\"]\n"),
        "unknown instruction: FNTRYPOINT",
    )?;
    // BuildKit suggests the near miss.
    ensure!(e.to_string().contains("ENTRYPOINT?"), "no suggestion: {e}");
    Ok(())
}

pub(crate) fn par_11_needs_a_stage() -> R {
    expect_err(
        Case::new().build("ARG foo=bar\n"),
        "dockerfile contains no stages to build",
    )?;
    expect_err(Case::new().build(""), "file with no instructions")?;
    expect_err(
        Case::new().build("# only a comment\n"),
        "file with no instructions",
    )?;
    Ok(())
}

pub(crate) fn par_12_only_arg_before_from() -> R {
    expect_err(
        Case::new().build("ENV A=1\nFROM scratch\n"),
        "no build stage in current context",
    )?;
    Ok(())
}

pub(crate) fn par_13_lowercase_dockerfile_name() -> R {
    let c = Case::new();
    c.file("dockerfile", "FROM scratch\nENV found=lowercase\n");
    ensure!(!c.ctx().join("Dockerfile").exists(), "fixture");
    let img = ok(c.run(Ok))?;
    ensure!(
        img.env()?.contains(&"found=lowercase".to_owned()),
        "{:?}",
        img.env()?
    );
    Ok(())
}

pub(crate) fn par_14_stage_names() -> R {
    expect_err(
        Case::new().build("FROM scratch AS 1stage\n"),
        "invalid name for build stage: \"1stage\", name can't start with a number or contain symbols",
    )?;
    // Stage names are case-insensitive, for --target too.
    let img = ok(Case::new().build_with(
        "FROM {BUSYBOX} AS STAge0\nRUN echo -n picked > /out\nFROM scratch AS other\n",
        |b| Ok(b.target("Stage0")),
    ))?;
    ensure_eq!(img.read("/out")?, "picked");
    Ok(())
}

pub(crate) fn par_14_copy_from_stage_case_insensitive() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS STAge0\nRUN echo -n staged > /out\nFROM scratch\nCOPY --from=stage0 /out /copied\n",
    ))?;
    ensure_eq!(img.read("/copied")?, "staged");
    Ok(())
}

pub(crate) fn par_15_text_after_json_is_shell_form() -> R {
    let img = ok(Case::new().build("FROM scratch\nENTRYPOINT []random string\n"))?;
    ensure_eq!(
        strings(&img.cfg()?["Entrypoint"]),
        ["/bin/sh", "-c", "[]random string"]
    );
    let e = Case::new().build("FROM {BUSYBOX}\nRUN [\"echo\", \"hello\"]this is invalid\n");
    let e = expect_err(e, "this is invalid")?;
    ensure!(
        matches!(e, builder_core::Error::Step { .. }),
        "not a step failure: {e:?}"
    );
    Ok(())
}
