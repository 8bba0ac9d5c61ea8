//! Behaviours of the typed layer and of spans that the corpus does not pin down.

use std::time::Duration;

use dockerfile::{
    CacheSharing, Command, Healthcheck, Instruction, Mount, NetworkMode, SecurityMode, Source,
};
use libtest_mimic::{Failed, Trial};

use super::check;

fn one(df: &str) -> Result<Instruction, Failed> {
    let mut d = dockerfile::parse(df).map_err(|e| format!("{df:?}: {e}"))?;
    Ok(d.instructions.pop().ok_or("no instruction")?.value)
}

fn err(df: &str) -> Result<String, Failed> {
    match dockerfile::parse(df) {
        Ok(d) => Err(format!("{df:?} accepted: {:?}", d.instructions).into()),
        Err(e) => Ok(e.to_string()),
    }
}

fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), Failed> {
    check(got == want, || format!("got {got:?}, want {want:?}"))
}

type Case = (&'static str, fn() -> Result<(), Failed>);

const CASES: &[Case] = &[
    ("env_spans", || {
        let Instruction::Env(kv) = one("FROM a\nENV A=1 B=\"x y\"\n")? else {
            return Err("not ENV".into());
        };
        eq(kv.len(), 2)?;
        eq((kv[0].key.as_str(), kv[0].key.span.start_column), ("A", 5))?;
        eq(
            (kv[0].value.as_str(), kv[0].value.span.start_column),
            ("1", 7),
        )?;
        eq(
            (kv[1].value.as_str(), kv[1].value.span.start_column),
            ("\"x y\"", 11),
        )?;
        eq(kv[1].legacy, false)
    }),
    ("env_legacy", || {
        let Instruction::Env(kv) = one("ENV PATH /a b  c")? else {
            return Err("not ENV".into());
        };
        eq(
            (kv[0].key.as_str(), kv[0].value.as_str(), kv[0].legacy),
            ("PATH", "/a b  c", true),
        )
    }),
    ("arg_default_spans", || {
        let Instruction::Arg(a) = one("ARG v=1.0 other")? else {
            return Err("not ARG".into());
        };
        eq(a[0].name.as_str(), "v")?;
        let d = a[0].default.as_ref().ok_or("no default")?;
        eq(
            (d.as_str(), d.span.start_column, d.span.end_column),
            ("1.0", 7, 10),
        )?;
        eq(
            (a[1].name.as_str(), a[1].default.is_none()),
            ("other", true),
        )
    }),
    ("from_platform_and_name", || {
        let Instruction::From(f) = one("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build")?
        else {
            return Err("not FROM".into());
        };
        eq(f.image.as_str(), "golang:1.22")?;
        eq(
            f.platform
                .as_ref()
                .map(|p| (p.as_str(), p.span.start_column)),
            Some(("$BUILDPLATFORM", 17)),
        )?;
        eq(f.name.as_ref().map(|n| n.as_str()), Some("build"))
    }),
    ("from_errors", || {
        eq(err("FROM a AS 1x")?, "1:11: invalid name for build stage: \"1x\", name can't start with a number or contain symbols".into())?;
        eq(
            err("FROM a b")?,
            "1:1: FROM requires either one or three arguments".into(),
        )
    }),
    ("copy_flags", || {
        let Instruction::Copy(c) = one(
            "COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=.git a b /dst/",
        )?
        else {
            return Err("not COPY".into());
        };
        eq(
            c.from.as_ref().map(|f| (f.as_str(), f.span.start_column)),
            Some(("build", 13)),
        )?;
        eq(c.chown.as_ref().map(|f| f.as_str()), Some("app:app"))?;
        eq(c.chmod.as_ref().map(|f| f.as_str()), Some("0755"))?;
        eq((c.link, c.parents), (true, true))?;
        eq(
            c.exclude.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            vec!["*.md", ".git"],
        )?;
        eq(c.sources.len(), 2)?;
        eq(c.dest.as_str(), "/dst/")
    }),
    ("copy_flag_errors", || {
        eq(
            err("COPY --from=a --from=b x y")?,
            "1:15: duplicate flag specified: --from".into(),
        )?;
        eq(
            err("COPY --link=maybe x y")?,
            "1:6: expecting boolean value for flag --link, not: maybe".into(),
        )?;
        eq(
            err("COPY --from x y")?,
            "1:6: missing a value on flag: --from".into(),
        )?;
        eq(
            err("COPY --checksum=sha256:0 x y")?,
            "1:6: unknown flag: --checksum".into(),
        )
    }),
    ("add_flags", || {
        let Instruction::Add(a) =
            one("ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://x/y.tgz /")?
        else {
            return Err("not ADD".into());
        };
        eq(a.checksum.as_ref().map(|c| c.as_str()), Some("sha256:abc"))?;
        eq((a.keep_git_dir, a.unpack), (Some(true), Some(false)))
    }),
    ("copy_heredoc_chomp", || {
        let Instruction::Copy(c) = one("COPY <<-EOF /x\n\ta\n\t\tb\n\tEOF\n")? else {
            return Err("not COPY".into());
        };
        let Source::Heredoc(h) = &c.sources[0] else {
            return Err("not a heredoc".into());
        };
        eq(
            (h.name.as_str(), h.content.as_str(), h.expand),
            ("EOF", "a\nb\n", true),
        )
    }),
    ("run_mounts_network_security", || {
        let Instruction::Run(r) = one(
            "RUN --mount=type=cache,target=/root/.npm,sharing=locked --mount=type=secret,id=npmrc,target=/root/.npmrc \\\n    --network=none --security=insecure npm ci",
        )?
        else {
            return Err("not RUN".into());
        };
        eq(r.mounts.len(), 2)?;
        let Some(Mount::Cache(c)) = &r.mounts[0].literal else {
            return Err("not cache".into());
        };
        eq(
            (c.target.as_str(), c.sharing),
            ("/root/.npm", CacheSharing::Locked),
        )?;
        let Some(Mount::Secret(s)) = &r.mounts[1].literal else {
            return Err("not secret".into());
        };
        eq(s.id.as_deref(), Some("npmrc"))?;
        eq(r.network.as_ref().map(|n| n.value), Some(NetworkMode::None))?;
        eq(
            r.security.as_ref().map(|n| n.value),
            Some(SecurityMode::Insecure),
        )?;
        eq(
            r.flags_used.clone(),
            vec!["mount".to_owned(), "network".into(), "security".into()],
        )?;
        eq(r.command.to_vec(), vec!["npm ci".to_owned()])
    }),
    ("run_mount_expansion", || {
        let Instruction::Run(r) = one("RUN --mount=type=cache,target=$HOME/.cache,uid=$UID true")?
        else {
            return Err("not RUN".into());
        };
        let spec = &r.mounts[0];
        eq(spec.literal.is_none(), true)?;
        let m =
            spec.resolve(|v| Ok::<_, String>(v.replace("$HOME", "/root").replace("$UID", "1000")))?;
        let Mount::Cache(c) = m else {
            return Err("not cache".into());
        };
        eq((c.target.as_str(), c.uid), ("/root/.cache", Some(1000)))?;
        let bad = spec.resolve(|v| Ok::<_, String>(v.replace("$UID", "x")));
        check(bad.is_err(), || "uid=x accepted".into())
    }),
    ("run_flag_errors", || {
        eq(
            err("RUN --network=bridge x")?,
            "1:15: invalid network mode \"bridge\"".into(),
        )?;
        eq(
            err("RUN --security=root x")?,
            "1:16: security \"root\" is not valid".into(),
        )?;
        let e = err("RUN --mount=type=cache,targt=/x x")?;
        check(
            e.starts_with("1:13: unexpected key 'targt' in 'targt=/x' (did you mean target?)"),
            || e,
        )
    }),
    ("healthcheck", || {
        let Instruction::Healthcheck(Healthcheck::Cmd(h)) = one(
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=0 --retries=3 CMD curl -f http://localhost/ || exit 1",
        )?
        else {
            return Err("not HEALTHCHECK CMD".into());
        };
        eq(h.interval, Some(Duration::from_secs(30)))?;
        eq(h.timeout, Some(Duration::from_secs(90)))?;
        eq((h.start_period, h.retries), (None, Some(3)))?;
        eq(
            h.test(),
            vec![
                "CMD-SHELL".to_owned(),
                "curl -f http://localhost/ || exit 1".into(),
            ],
        )?;
        eq(
            one("HEALTHCHECK NONE")?,
            Instruction::Healthcheck(Healthcheck::None),
        )?;
        eq(
            err("HEALTHCHECK --retries=-1 CMD x")?,
            "1:23: --retries cannot be negative (-1)".into(),
        )?;
        eq(
            err("HEALTHCHECK --interval=5 CMD x")?,
            "1:24: time: missing unit in duration \"5\"".into(),
        )?;
        eq(
            err("HEALTHCHECK BOGUS x")?,
            "1:13: Unknown type \"BOGUS\" in HEALTHCHECK (try CMD)".into(),
        )
    }),
    ("onbuild", || {
        let Instruction::Onbuild(o) = one("ONBUILD COPY <<EOF /x\nhello\nEOF\n")? else {
            return Err("not ONBUILD".into());
        };
        eq(o.expression.as_str(), "COPY <<EOF /x\nhello\nEOF")?;
        let Instruction::Copy(c) = o.trigger()?.value else {
            return Err("trigger not COPY".into());
        };
        let Source::Heredoc(h) = &c.sources[0] else {
            return Err("not a heredoc".into());
        };
        eq(h.content.as_str(), "hello\n")?;
        eq(
            err("ONBUILD from x")?,
            "1:9: FROM isn't allowed as an ONBUILD trigger".into(),
        )
    }),
    ("shell_and_commands", || {
        eq(one("SHELL [\"/bin/bash\", \"-c\"]")?.keyword(), "SHELL")?;
        eq(
            err("SHELL /bin/bash -c")?,
            "1:1: SHELL requires the arguments to be in JSON form".into(),
        )?;
        let Instruction::Cmd(c) = one("CMD")? else {
            return Err("not CMD".into());
        };
        eq(c.to_vec(), Vec::<String>::new())?;
        let Instruction::Entrypoint(Command::Exec(v)) = one("ENTRYPOINT [\"a\", \"b\"]")? else {
            return Err("not exec ENTRYPOINT".into());
        };
        eq(
            v.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"],
        )
    }),
    ("unknown_instruction", || {
        eq(
            err("FROM a\n  RUNN x")?,
            "2:3: unknown instruction: RUNN (did you mean RUN?)".into(),
        )?;
        eq(
            err("FROM a\ncopyy x y")?,
            "2:1: unknown instruction: copyy (did you mean copy?)".into(),
        )
    }),
    ("line_parser_errors", || {
        eq(
            err("FROM a\nCMD [\"a\", 1]")?,
            "2:5: when using JSON array syntax, arrays must be comprised of strings only".into(),
        )?;
        eq(err("ENV A")?, "1:5: ENV must have two arguments".into())?;
        eq(
            err("LABEL a=b c")?,
            "1:11: Syntax error - can't find = in \"c\". Must be of the form: name=value".into(),
        )?;
        eq(
            err("# escape=x\nFROM a")?,
            "1:1: invalid escape token 'x' does not match ` or \\".into(),
        )?;
        eq(
            err("# escape=`\n# escape=`\nFROM a")?,
            "2:1: only one escape parser directive can be used".into(),
        )?;
        let e = err("FROM a\nRUN <<EOF\nx\n")?;
        check(e.starts_with("2:1: unterminated heredoc \"EOF\""), || e)?;
        eq(
            err("\n# only a comment\n")?,
            "3:1: file with no instructions".into(),
        )?;
        eq(
            err(&format!("FROM a\nRUN {}", "x".repeat(70_000)))?,
            "2:1: dockerfile line greater than max allowed size of 65535".into(),
        )
    }),
    ("invalid_utf8", || {
        match dockerfile::parse_bytes(b"FROM a\nRUN \xff\n") {
            Err(e) => eq(
                e.to_string(),
                "2:5: the Dockerfile is not valid UTF-8".into(),
            ),
            Ok(_) => Err("accepted".into()),
        }
    }),
    ("escape_crlf_bom", || {
        let d = dockerfile::parse_ast("\u{feff}# escape=`\r\nFROM a\r\nRUN b `\r\n  c\r\n")?;
        eq(d.escape, '`')?;
        eq(d.directive("escape").map(|x| x.value.as_str()), Some("`"))?;
        eq(d.nodes[1].args[0].as_str(), "b   c")?;
        eq(
            (d.nodes[1].span.start_line, d.nodes[1].span.end_line),
            (3, 4),
        )
    }),
    ("comments_and_warnings", || {
        let d =
            dockerfile::parse_ast("# the base\n#\n# really the base\n\nFROM a\nRUN x \\\n\n  y\n")?;
        eq(
            d.nodes[0].comments.clone(),
            vec!["really the base".to_owned()],
        )?;
        eq(d.warnings.len(), 1)?;
        eq(
            d.warnings[0].message.as_str(),
            "Empty continuation line found in: RUN x   y",
        )?;
        eq(
            (d.warnings[0].span.start_line, d.warnings[0].span.end_line),
            (6, 8),
        )
    }),
    ("heredoc_spans", || {
        let d = dockerfile::parse_ast("FROM a\nRUN <<A <<B\none\nA\ntwo\nB\nUSER x\n")?;
        let h = &d.nodes[1].heredocs;
        eq(
            (
                h[0].content.as_str(),
                h[0].span.start_line,
                h[0].span.end_line,
            ),
            ("one\n", 3, 4),
        )?;
        eq(
            (
                h[1].content.as_str(),
                h[1].span.start_line,
                h[1].span.end_line,
            ),
            ("two\n", 5, 6),
        )?;
        eq(
            (
                d.nodes[1].span.start_line,
                d.nodes[1].span.end_line,
                d.nodes[2].span.start_line,
            ),
            (2, 6, 7),
        )
    }),
];

pub(crate) fn trials(out: &mut Vec<Trial>) {
    for (name, f) in CASES {
        out.push(Trial::test(format!("typed::{name}"), *f));
    }
}
