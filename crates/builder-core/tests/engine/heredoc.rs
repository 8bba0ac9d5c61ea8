//! Section 4: Heredocs (HD-*). The checklist copies RUN results into a scratch stage; where that
//! only serves to look at the files, these cases look at the RUN stage itself.

use std::os::unix::fs::MetadataExt;

use crate::util::{Case, R, expect_err, ok};

pub(crate) fn hd_01_run_heredoc() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nRUN <<EOF\necho \"i am\" >> /dest\nwhoami >> /dest\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest")?, "i am\nroot\n");
    Ok(())
}

pub(crate) fn hd_01_copied_from_the_run_stage() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nRUN <<EOF\necho \"i am\" >> /dest\nwhoami >> /dest\nEOF\nFROM scratch\nCOPY --from=build /dest /dest\n",
    ))?;
    ensure_eq!(img.read("/dest")?, "i am\nroot\n");
    Ok(())
}

pub(crate) fn hd_02_run_chomp_strips_tabs() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nRUN mkdir /dest\nRUN <<-EOF\necho \"\n\tbar\" > /dest/bar-run\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest/bar-run")?, "\nbar\n");
    Ok(())
}

pub(crate) fn hd_02_copy_chomp_strips_tabs() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nCOPY <<EOF /dest/foo-copy\n\tfoo\nEOF\nCOPY <<-EOF /dest/bar-copy\n\tbar\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest/foo-copy")?, "\tfoo\n");
    ensure_eq!(img.read("/dest/bar-copy")?, "bar\n");
    Ok(())
}

pub(crate) fn hd_03_copy_heredoc_files() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nWORKDIR /dest\nCOPY <<EOF single\nsingle file\nEOF\nCOPY <<EOF <<EOF2 double/\nfirst file\nEOF\nsecond file\nEOF2\n",
    ))?;
    ensure_eq!(img.read("/dest/single")?, "single file\n");
    ensure_eq!(img.read("/dest/double/EOF")?, "first file\n");
    ensure_eq!(img.read("/dest/double/EOF2")?, "second file\n");
    Ok(())
}

pub(crate) fn hd_04_copy_heredoc_expansion() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nARG name=world\nCOPY <<EOF /dest/c1\nHello ${name}!\nEOF\nCOPY <<'EOF' /dest/c2\nHello ${name}!\nEOF\nCOPY <<\"EOF\" /dest/c3\nHello \"${name}\"!\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest/c1")?, "Hello world!\n");
    ensure_eq!(img.read("/dest/c2")?, "Hello ${name}!\n");
    ensure_eq!(img.read("/dest/c3")?, "Hello \"${name}\"!\n");
    Ok(())
}

pub(crate) fn hd_05_run_body_left_to_the_shell() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nARG name=world\nRUN <<EOF\nname=\"new world\"\necho \"Hello ${name}!\" > /r2\nEOF\n",
    ))?;
    ensure_eq!(img.read("/r2")?, "Hello new world!\n");
    Ok(())
}

pub(crate) fn hd_06_heredocs_with_pipes() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nWORKDIR /dest\nRUN cat <<EOF1 | tr '[:upper:]' '[:lower:]' > ./out1; \\\n\tcat <<EOF2 | tr '[:lower:]' '[:upper:]' > ./out2\nhello WORLD\nEOF1\nHELLO world\nEOF2\nRUN cat 3<<IN1 <&3 > ./out3\nthree\nIN1\n",
    ))?;
    ensure_eq!(img.read("/dest/out1")?, "hello world\n");
    ensure_eq!(img.read("/dest/out2")?, "HELLO WORLD\n");
    ensure_eq!(img.read("/dest/out3")?, "three\n");
    Ok(())
}

/// The test busybox has awk in /usr/bin (BuildKit's test uses /bin/awk).
pub(crate) fn hd_07_shebang_picks_the_interpreter() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX} AS build\nWORKDIR /dest\nRUN <<EOF\n#!/usr/bin/awk -f\nBEGIN {\n\tprint \"hello\" >> \"./out1\"\n}\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest/out1")?, "hello\n");
    Ok(())
}

pub(crate) fn hd_08_copy_heredoc_chmod_chown() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN echo 'user:x:1000:1000::/home/user:/bin/sh' >> /etc/passwd && echo 'user:x:1000:' >> /etc/group\nCOPY --chmod=777 <<EOF /p/all\nx\nEOF\nCOPY --chown=user:user <<EOF /p/owned\nx\nEOF\nRUN [ \"$(stat -c %a /p/all)\" = 777 ] && [ \"$(stat -c %U:%G /p/owned)\" = user:user ]\n",
    ))?;
    ensure_eq!(img.stat("/p/all")?.mode() & 0o7777, 0o777);
    Ok(())
}

pub(crate) fn hd_09_heredoc_errors() -> R {
    expect_err(
        Case::new().build("FROM scratch\nCOPY /foo <<EOF\nEOF\n"),
        "COPY cannot accept a heredoc as a destination",
    )?;
    expect_err(
        Case::new().build("FROM {BUSYBOX}\nRUN <<EOF\necho never ends\n"),
        "unterminated heredoc",
    )?;
    Ok(())
}

pub(crate) fn hd_10_exec_form_has_no_heredoc() -> R {
    let img =
        ok(Case::new()
            .build("FROM {BUSYBOX}\nRUN [\"echo\", \"<<EOF\"]\nRUN echo -n next > /next\n"))?;
    ensure_eq!(img.read("/next")?, "next");
    ensure!(
        img.logs().contains("<<EOF"),
        "echo did not print the literal text: {:?}",
        img.logs()
    );
    Ok(())
}
