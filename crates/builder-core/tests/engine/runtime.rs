//! Section 7: WORKDIR and USER (WD-*, USR-*); 8. SHELL, RUN, CMD, ENTRYPOINT (SH-*, CMD-*).

use std::os::unix::fs::MetadataExt;

use crate::util::{Case, R, expect_err, ok, strings};

pub(crate) fn wd_01_workdir_creates_the_directory() -> R {
    let img = ok(Case::new().build("FROM scratch\nWORKDIR /foo\nWORKDIR /\n"))?;
    ensure!(img.stat("/foo")?.is_dir(), "/foo is not a directory");
    ensure_eq!(img.cfg()?["WorkingDir"], "/");
    Ok(())
}

pub(crate) fn wd_02_relative_workdirs_stack() -> R {
    let img = ok(Case::new()
        .build("FROM {BUSYBOX}\nWORKDIR /a\nWORKDIR b\nWORKDIR c\nRUN [ \"$PWD\" = /a/b/c ]\n"))?;
    ensure_eq!(img.cfg()?["WorkingDir"], "/a/b/c");
    Ok(())
}

pub(crate) fn wd_03_new_workdir_owned_by_user() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN echo 'user:x:1000:1000::/home/user:/bin/sh' >> /etc/passwd && echo 'user:x:1000:' >> /etc/group\nUSER user\nWORKDIR /mydir\nRUN [ \"$(stat -c '%U %G' /mydir)\" = \"user user\" ]\n",
    ))?;
    let st = img.stat("/mydir")?;
    ensure_eq!((st.uid(), st.gid()), (1000, 1000));
    // An existing directory keeps its owner.
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN echo 'user:x:1000:1000::/home/user:/bin/sh' >> /etc/passwd && echo 'user:x:1000:' >> /etc/group && mkdir /exists && chown 12:34 /exists\nUSER user\nWORKDIR /exists\nRUN [ \"$(stat -c '%u %g' /exists)\" = \"12 34\" ]\n",
    ))?;
    let st = img.stat("/exists")?;
    ensure_eq!((st.uid(), st.gid()), (12, 34));
    Ok(())
}

pub(crate) fn wd_04_workdir_expands_env() -> R {
    let img = ok(Case::new().build("FROM scratch\nENV DIRPATH=/path\nWORKDIR $DIRPATH/sub\n"))?;
    ensure_eq!(img.cfg()?["WorkingDir"], "/path/sub");
    ensure!(img.stat("/path/sub")?.is_dir(), "/path/sub missing");
    Ok(())
}

/// An absolute WORKDIR goes into the config as written, trailing slash and `..` included
/// (BuildKit's `NormalizeWorkdir` cleans only relative ones); the directory made, the RUN
/// directory and the next relative WORKDIR use the cleaned path. Found by
/// scripts/difftest (case workdir-symlink).
pub(crate) fn wd_absolute_workdir_kept_as_written() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nWORKDIR /a/b/\nRUN [ \"$(pwd)\" = /a/b ]\nWORKDIR /x/../y/./z\nRUN [ \"$(pwd)\" = /y/z ]\n",
    ))?;
    ensure_eq!(img.cfg()?["WorkingDir"], "/x/../y/./z");
    ensure!(img.stat("/a/b")?.is_dir(), "/a/b missing");
    ensure!(img.stat("/y/z")?.is_dir(), "/y/z missing");
    let img = ok(Case::new().build("FROM {BUSYBOX}\nWORKDIR /a/b/\nWORKDIR c/\n"))?;
    ensure_eq!(img.cfg()?["WorkingDir"], "/a/b/c");
    Ok(())
}

pub(crate) fn usr_01_user_stored_as_written() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nUSER nobody\n"))?;
    ensure_eq!(img.cfg()?["User"], "nobody");
    Ok(())
}

/// The test busybox (Debian's busybox-static) has only root and nobody, and no `wheel`
/// group: root's supplementary groups are checked after adding root to one.
pub(crate) fn usr_02_user_groups() -> R {
    ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN [ \"$(id -u):$(id -g):$(id -G)\" = '0:0:0' ]\nRUN echo 'wheel:x:10:root' >> /etc/group\nRUN [ \"$(id -u):$(id -g):$(id -G)\" = '0:0:0 10' ]\nRUN echo 'dockerio:x:1001:1001::/bin:/bin/false' >> /etc/passwd && \\\n    echo 'dockerio:x:1001:' >> /etc/group && \\\n    echo 'supplementary:x:1002:dockerio' >> /etc/group\nUSER dockerio\nRUN [ \"$(id -u):$(id -g):$(id -G)\" = '1001:1001:1001 1002' ]\nUSER dockerio:supplementary\nRUN [ \"$(id -u):$(id -g):$(id -G)\" = '1001:1002:1002' ]\nUSER 1042:1043\nRUN [ \"$(id -u):$(id -g)\" = '1042:1043' ]\n",
    ))?;
    Ok(())
}

/// USER names resolved in the Node image. The test image is a plain Debian with Node, without
/// the official image's `node` user: it is added first, as the official image does.
pub(crate) fn usr_02_node_image_user() -> R {
    let img = ok(Case::new().build(
        "FROM {NODE}\nRUN groupadd -g 1000 node && useradd -u 1000 -g node -m -s /bin/sh node\nUSER node\nRUN [ \"$(id -un):$(id -u):$(id -g)\" = node:1000:1000 ] && node -e \"require('fs').writeFileSync('/tmp/v', process.version)\"\n",
    ))?;
    ensure!(
        img.read("/tmp/v")?.starts_with("v20."),
        "{}",
        img.read("/tmp/v")?
    );
    ensure_eq!(img.stat("/tmp/v")?.uid(), 1000);
    Ok(())
}

pub(crate) fn sh_01_shell_form_wrapped() -> R {
    let img = ok(Case::new().build("FROM scratch\nENTRYPOINT foo bar\nCMD echo hi\n"))?;
    ensure_eq!(
        strings(&img.cfg()?["Entrypoint"]),
        ["/bin/sh", "-c", "foo bar"]
    );
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["/bin/sh", "-c", "echo hi"]);
    Ok(())
}

pub(crate) fn sh_02_shell_replaces_the_wrapper() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nSHELL [\"/bin/sh\", \"-ec\"]\nENTRYPOINT my entrypoint\nCMD my cmd\nRUN set +e; false; echo -n reached > /r\n",
    ))?;
    ensure_eq!(strings(&img.cfg()?["Shell"]), ["/bin/sh", "-ec"]);
    ensure_eq!(
        strings(&img.cfg()?["Entrypoint"]),
        ["/bin/sh", "-ec", "my entrypoint"]
    );
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["/bin/sh", "-ec", "my cmd"]);
    ensure_eq!(img.read("/r")?, "reached");
    // -e is in force in RUN.
    expect_err(
        Case::new()
            .build("FROM {BUSYBOX}\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN false; echo survived\n"),
        "did not complete successfully",
    )?;
    Ok(())
}

pub(crate) fn sh_03_shell_must_be_json() -> R {
    expect_err(
        Case::new().build("FROM scratch\nSHELL /bin/bash -c\n"),
        "SHELL requires the arguments to be in JSON form",
    )?;
    Ok(())
}

/// The test busybox has awk in /usr/bin (BuildKit's test uses /bin/awk).
pub(crate) fn sh_04_heredoc_with_another_shell() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nSHELL [\"/usr/bin/awk\"]\nRUN <<EOF\nBEGIN { print \"foo\" > \"/dest\" }\nEOF\n",
    ))?;
    ensure_eq!(img.read("/dest")?, "foo\n");
    Ok(())
}

pub(crate) fn cmd_01_exec_form_not_expanded() -> R {
    ok(Case::new().build(
        "FROM {BUSYBOX}\nENV NAME=x\nRUN [\"/bin/touch\", \"/tmp/$NAME\"]\nRUN [ -f '/tmp/$NAME' ] && [ ! -e /tmp/x ]\n",
    ))?;
    Ok(())
}

pub(crate) fn cmd_02_run_ignores_entrypoint() -> R {
    ok(Case::new().build("FROM {BUSYBOX}\nENTRYPOINT [\"/nosuchcmd\"]\nRUN [\"ls\"]\n"))?;
    Ok(())
}

pub(crate) fn cmd_03_entrypoint_clears_inherited_cmd() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nENTRYPOINT [\"/bin/echo\"]\n"))?;
    ensure!(
        img.cfg()?.get("Cmd").is_none_or(|c| c.is_null()),
        "Cmd kept: {}",
        img.cfg()?["Cmd"]
    );
    // A CMD of the same stage is kept, before or after the ENTRYPOINT.
    let img = ok(Case::new().build("FROM {BUSYBOX}\nCMD [\"x\"]\nENTRYPOINT [\"/bin/echo\"]\n"))?;
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["x"]);
    let img = ok(Case::new().build("FROM {BUSYBOX}\nENTRYPOINT [\"/bin/echo\"]\nCMD [\"y\"]\n"))?;
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["y"]);
    ensure_eq!(strings(&img.cfg()?["Entrypoint"]), ["/bin/echo"]);
    Ok(())
}

pub(crate) fn cmd_04_last_one_counts() -> R {
    let img = ok(Case::new().build(
        "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\nENTRYPOINT [\"c\"]\nENTRYPOINT [\"d\"]\nHEALTHCHECK CMD [\"e\"]\nHEALTHCHECK CMD [\"f\"]\n",
    ))?;
    ensure_eq!(strings(&img.cfg()?["Cmd"]), ["b"]);
    ensure_eq!(strings(&img.cfg()?["Entrypoint"]), ["d"]);
    ensure_eq!(strings(&img.cfg()?["Healthcheck"]["Test"]), ["CMD", "f"]);
    Ok(())
}

pub(crate) fn cmd_05_cmd_sets_args_escaped() -> R {
    let img = ok(Case::new().build("FROM scratch\nCMD [\"b\"]\n"))?;
    ensure_eq!(img.cfg()?["ArgsEscaped"], true);
    Ok(())
}

pub(crate) fn cmd_06_empty_cmd_clears() -> R {
    let img = ok(Case::new().build("FROM {BUSYBOX}\nCMD []\n"))?;
    let cmd = &img.cfg()?["Cmd"];
    ensure!(
        cmd.is_null() || cmd.as_array().is_some_and(Vec::is_empty),
        "Cmd = {cmd}"
    );
    Ok(())
}

/// Section 13: NET-01, and the default (host) network for comparison.
pub(crate) fn net_01_network_none_leaves_loopback() -> R {
    ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN --network=none ! ip link show eth0\nRUN --network=none ip link show lo\nRUN --network=none [ \"$(ip -o link | wc -l)\" = 1 ]\nRUN [ \"$(ip -o link | wc -l)\" -gt 1 ]\n",
    ))?;
    Ok(())
}

pub(crate) fn net_03_sandbox_hostname() -> R {
    ok(Case::new().build("FROM {BUSYBOX}\nRUN [ \"$(hostname)\" = buildkitsandbox ]\n"))?;
    ok(Case::new().build_with(
        "FROM {BUSYBOX}\nRUN [ \"$(hostname)\" = foo ] && grep -q foo /etc/hosts\n",
        |b| b.build_arg("BUILDKIT_SANDBOX_HOSTNAME", "foo"),
    ))?;
    Ok(())
}

/// NET-03's second half: /etc/hosts, /etc/resolv.conf and /etc/hostname provided for RUN
/// never end up in a layer, even when the step writes to them.
pub(crate) fn net_03_hosts_and_resolv_conf_not_captured() -> R {
    let img = ok(Case::new().build(
        "FROM {BUSYBOX}\nRUN (echo 1.2.3.4 extra >> /etc/hosts; echo nameserver 1.2.3.4 >> /etc/resolv.conf) 2>/dev/null; touch /etc/marker\n",
    ))?;
    let names = img.layer_names(-1)?;
    ensure!(names.contains(&"etc/marker".to_owned()), "{names:?}");
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        ensure!(!names.contains(&f.to_owned()), "{f} captured: {names:?}");
    }
    Ok(())
}

/// `Build::sandbox_mode`: the mode asked for is the one RUN steps ran in, whatever the
/// environment says (the setter wins over `RBUILD_SANDBOX`).
pub(crate) fn api_sandbox_mode_setter() -> R {
    let img = ok(Case::new().build_with("FROM {BUSYBOX}\nRUN true\n", |b| {
        Ok(b.sandbox_mode(builder_core::ModeRequest::Chroot))
    }))?;
    let mode = &img.report.sandbox_mode;
    ensure!(
        mode.starts_with("chroot") && mode.contains("requested"),
        "{mode}"
    );
    let started = img.events.iter().find_map(|e| match e {
        builder_core::ProgressEvent::BuildStarted { sandbox, .. } => Some(sandbox.clone()),
        _ => None,
    });
    ensure_eq!(started.as_ref(), Some(mode));
    Ok(())
}
