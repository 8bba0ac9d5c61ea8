//! Items of `dockerfile-behaviours.md` sections 2 (ARG), 3 (ENV) and 11 (stages) that
//! are decided without building. Each test takes the item's Dockerfile snippet from the
//! file as it is and checks the stated result on the plan and the stage scopes; where the
//! item checks a `RUN` output, the `RUN`'s words are expanded with the scope the command
//! would run in (which is what its shell sees).

use dockerfile::{
    BuildPlan, Instruction, PlanOptions, PlatformSpec, Scope, Source, StageBase, StageError, parse,
};
use libtest_mimic::{Failed, Trial};

use crate::{check, read};

/// The first ```dockerfile block after the `### <id> ` heading.
fn snippet(id: &str) -> String {
    let text = read("dockerfile-behaviours.md");
    let start = text
        .find(&format!("### {id} "))
        .unwrap_or_else(|| panic!("{id} not found in dockerfile-behaviours.md"));
    let rest = &text[start..];
    let open = rest.find("```dockerfile\n").expect("snippet") + "```dockerfile\n".len();
    let close = rest[open..].find("```").expect("end of snippet");
    rest[open..open + close].to_owned()
}

fn amd64() -> PlatformSpec {
    PlatformSpec::new("linux", "amd64", "")
}

fn plan(id: &str, opts: &PlanOptions) -> Result<BuildPlan, StageError> {
    let df = parse(&snippet(id)).unwrap_or_else(|e| panic!("{id}: parse: {e}"));
    BuildPlan::new(&df, opts)
}

fn opts() -> PlanOptions {
    PlanOptions::new(amd64(), amd64())
}

/// Walks every stage the target needs, each from an empty image environment (or its
/// parent stage's scope), and returns per stage the scope before each instruction and the
/// final scope.
fn walk(plan: &BuildPlan) -> Result<Vec<(usize, Vec<Scope>, Scope)>, Failed> {
    let mut done: Vec<(usize, Vec<Scope>, Scope)> = Vec::new();
    for &i in plan.reachable() {
        let stage = &plan.stages()[i];
        let mut scope = match stage.base {
            StageBase::Stage(b) => {
                let parent = done
                    .iter()
                    .find(|(s, _, _)| *s == b)
                    .ok_or("parent stage not walked first")?;
                plan.stage_scope(i, &parent.2)
            }
            _ => plan.image_scope::<&str>(i, &[]),
        };
        let mut before = Vec::new();
        for ins in &stage.instructions {
            before.push(scope.clone());
            scope.step(ins).map_err(|e| e.to_string())?;
        }
        done.push((i, before, scope));
    }
    Ok(done)
}

/// What a RUN's shell would print for `text` in `scope`.
fn sh(scope: &Scope, text: &str) -> String {
    scope
        .expand_word(text)
        .map(|x| x.value)
        .unwrap_or_else(|e| e.to_string())
}

fn env_of(scope: &Scope, key: &str) -> Option<String> {
    scope.env().get(key).map(str::to_owned)
}

type Check = fn() -> Result<(), Failed>;

pub(crate) fn trials() -> Vec<Trial> {
    let cases: Vec<(&str, Check)> = vec![
        ("ARG-01", arg_01),
        ("ARG-02", arg_02),
        ("ARG-03", arg_03),
        ("ARG-04", arg_04),
        ("ARG-05", arg_05),
        ("ARG-06", arg_06),
        ("ARG-07", arg_07),
        ("ARG-08", arg_08),
        ("ARG-09", arg_09),
        ("ARG-10", arg_10),
        ("ARG-11", arg_11),
        ("ARG-12", arg_12),
        ("ARG-13", arg_13),
        ("ARG-14", arg_14),
        ("ARG-15", arg_15),
        ("ENV-01", env_01),
        ("ENV-02", env_02),
        ("ENV-03", env_03),
        ("ENV-04", env_04),
        ("ENV-05", env_05),
        ("ENV-06", env_06),
        ("ENV-07", env_07),
        ("ENV-08", env_08),
        ("ENV-09", env_09),
        ("MS-01", ms_01),
        ("MS-02", ms_02),
        ("MS-03", ms_03),
        ("MS-04", ms_04),
    ];
    let mut out: Vec<Trial> = cases
        .into_iter()
        .map(|(id, f)| Trial::test(format!("behaviours::{id}"), f))
        .collect();
    // Need a build (image layers, manifests); see SKIPPED.md.
    for id in ["MS-05", "MS-06", "MS-07"] {
        out.push(Trial::test(format!("behaviours::{id}"), || Ok(())).with_ignored_flag(true));
    }
    out
}

fn base_image(plan: &BuildPlan, stage: usize) -> Result<String, Failed> {
    match &plan.stages()[stage].base {
        StageBase::Image(i) => Ok(i.clone()),
        other => Err(format!("base is {other:?}").into()),
    }
}

fn arg_01() -> Result<(), Failed> {
    let p = plan("ARG-01", &opts())?;
    check("default", base_image(&p, 0)?, "busybox:nosuchtag".into())?;
    let p = plan("ARG-01", &opts().build_arg("TAG", "latest"))?;
    check("overridden", base_image(&p, 0)?, "busybox:latest".into())
}

fn arg_02() -> Result<(), Failed> {
    let p = plan("ARG-02", &opts())?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    // Instructions: RUN (/a), ARG V, RUN (/b).
    check("/a", sh(&before[0], "[$V]"), "[]".into())?;
    check("/b", sh(&before[2], "[$V]"), "[1]".into())
}

fn arg_03() -> Result<(), Failed> {
    let p = plan("ARG-03", &opts().build_arg("who", "root"))?;
    let stage = &p.stages()[0];
    let mut scope = p.image_scope::<&str>(0, &[]);
    let user = scope.step(&stage.instructions[0])?;
    match &user.instruction.value {
        Instruction::User(u) => check("config.User", u.value.as_str(), "nobody")?,
        other => return Err(format!("not USER: {other:?}").into()),
    }
    scope.step(&stage.instructions[1])?;
    check("/tmp/out", sh(&scope, "[$who]"), "[root]".into())
}

fn arg_04() -> Result<(), Failed> {
    let p = plan("ARG-04", &opts())?;
    check("FROM", base_image(&p, 0)?, "busybox".into())?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    check(
        "/out",
        sh(&before[1], "$a1:$a3:$a4"),
        "foo bar:box-foo:123 456".into(),
    )
}

fn arg_05() -> Result<(), Failed> {
    let p = plan("ARG-05", &opts())?;
    check("base", p.stages()[1].base.clone(), StageBase::Stage(0))?;
    let w = walk(&p)?;
    let (_, before, _) = &w[1];
    check("/out", sh(&before[0], "$V"), "1".into())?;
    // An unrelated stage sees nothing.
    let unrelated = p.image_scope::<&str>(1, &[]);
    check("unrelated", env_of(&unrelated, "V"), None)
}

fn arg_06() -> Result<(), Failed> {
    let p = plan("ARG-06", &opts().build_arg("V", "from-arg"))?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    check("/out", sh(&before[2], "$V"), "from-env".into())
}

fn arg_07() -> Result<(), Failed> {
    // The ARG is visible to RUN and listed in its history line, but it is an ARG step,
    // not an ENV step: nothing for config.Env (which only ENV steps feed).
    let p = plan("ARG-07", &opts())?;
    let stage = &p.stages()[0];
    let mut scope = p.image_scope::<&str>(0, &[]);
    let step = scope.step(&stage.instructions[0])?;
    if !matches!(step.instruction.value, Instruction::Arg(_)) {
        return Err("ARG step is not an ARG".into());
    }
    check(
        "RUN history args",
        scope.declared_args(),
        vec![("SECRETISH".into(), "value".into())],
    )
}

fn arg_08() -> Result<(), Failed> {
    let p = plan("ARG-08", &opts())?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    let env = before[2].env();
    check("BAR", env.get("BAR"), Some(""))?;
    check("FOO", env.get("FOO"), None)
}

fn arg_09() -> Result<(), Failed> {
    // The error happens while walking the stage, not while planning.
    let p = plan("ARG-09", &opts())?;
    match walk(&p) {
        Err(e) if e.message().is_some_and(|m| m.contains("FOO: foo missing")) => {}
        Err(e) => return Err(format!("wrong error: {e:?}").into()),
        Ok(_) => return Err("expected `FOO: foo missing`".into()),
    }
    walk(&plan("ARG-09", &opts().build_arg("FOO", "123"))?)?;
    walk(&plan("ARG-09", &opts().build_arg("BAR", "123"))?)?;
    Ok(())
}

fn arg_10() -> Result<(), Failed> {
    for (arg, want) in [
        (None, "my_arg=def_val my_arg=d"),
        (Some(""), "my_arg=def_val my_arg=d"),
        (Some("override"), "my_arg=override my_arg=ov"),
    ] {
        let mut o = opts();
        if let Some(v) = arg {
            o = o.build_arg("my_arg", v);
        }
        let p = plan("ARG-10", &o)?;
        check("FROM", base_image(&p, 0)?, "busybox".into())?;
        let w = walk(&p)?;
        let (_, before, _) = &w[0];
        check(
            &format!("/out with {arg:?}"),
            sh(&before[3], "$my_arg $my_trimmed_arg"),
            want.into(),
        )?;
    }
    Ok(())
}

fn arg_11() -> Result<(), Failed> {
    let p = plan("ARG-11", &opts())?;
    check("base", p.stages()[1].base.clone(), StageBase::Stage(0))?;
    check("reachable", p.reachable().to_vec(), vec![0, 1])
}

fn arg_12() -> Result<(), Failed> {
    for (platform, want) in [
        (
            PlatformSpec::new("linux", "arm", "v7"),
            "linux/arm/v7|linux|arm|v7",
        ),
        (amd64(), "linux/amd64|linux|amd64|"),
    ] {
        let p = plan("ARG-12", &PlanOptions::new(platform, amd64()))?;
        let w = walk(&p)?;
        let (_, before, _) = &w[0];
        check("/a", sh(&before[0], "[$TARGETARCH]"), "[]".into())?;
        check(
            "/b",
            sh(
                &before[5],
                "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT",
            ),
            want.into(),
        )?;
    }
    let p = plan("ARG-12", &opts())?;
    check(
        "BUILDPLATFORM",
        p.global_args().get("BUILDPLATFORM"),
        Some("linux/amd64"),
    )
}

fn arg_13() -> Result<(), Failed> {
    let o = PlanOptions::new(PlatformSpec::new("darwin", "ppc64le", ""), amd64())
        .build_arg("TARGETOS", "freebsd");
    let p = plan("ARG-13", &o)?;
    check(
        "stage platform",
        p.stages()[0].platform.clone(),
        Some("linux/amd64".into()),
    )?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    check(
        "/platform",
        sh(&before[2], "$TARGETPLATFORM"),
        "darwin/ppc64le".into(),
    )?;
    check("/os", sh(&before[2], "$TARGETOS"), "freebsd".into())
}

fn arg_14() -> Result<(), Failed> {
    let o = opts().build_arg("http_proxy", "hp1").build_arg("FOO", "f");
    let p = plan("ARG-14", &o)?;
    check(
        "proxy env",
        p.proxy_env(),
        vec![
            ("HTTP_PROXY".into(), "hp1".into()),
            ("http_proxy".into(), "hp1".into()),
        ],
    )?;
    let w = walk(&p)?;
    let (_, before, last) = &w[0];
    // RUN sees the proxy through the proxy env, FOO through the scope.
    let mut run_env = before[1].env().clone();
    for (k, v) in p.proxy_env() {
        run_env.set(&k, &v);
    }
    check(
        "/out",
        dockerfile::Lexer::default()
            .process_word("$HTTP_PROXY::$FOO", &run_env)
            .map_err(|e| e.to_string())?,
        "hp1::f".into(),
    )?;
    // Only FOO is part of the RUN's history/cache inputs; the proxy is not, and it
    // is no "unused build arg".
    check(
        "history args",
        last.declared_args(),
        vec![("FOO".into(), "f".into())],
    )?;
    check("warnings", p.warnings().to_vec(), vec![])
}

fn arg_15() -> Result<(), Failed> {
    let p = plan("ARG-15", &opts().target("foo"))?;
    let w = walk(&p)?;
    let (_, before, _) = &w[0];
    check(
        "/first",
        sh(&before[0], "value:$TARGETSTAGE"),
        "value:".into(),
    )?;
    check(
        "/second",
        sh(&before[2], "value:$TARGETSTAGE"),
        "value:foo".into(),
    )?;
    let p = plan("ARG-15", &opts())?;
    let w = walk(&p)?;
    check(
        "default",
        sh(&w[0].1[2], "value:$TARGETSTAGE"),
        "value:default".into(),
    )?;
    // With a named last stage, its name.
    let text = snippet("ARG-15").replace("FROM scratch\nCOPY", "FROM scratch AS final\nCOPY");
    let p = BuildPlan::new(&parse(&text)?, &opts())?;
    let w = walk(&p)?;
    check(
        "named",
        sh(&w[0].1[2], "value:$TARGETSTAGE"),
        "value:final".into(),
    )
}

fn env_01() -> Result<(), Failed> {
    let p = plan("ENV-01", &opts())?;
    let stage = &p.stages()[0];
    let mut scope = p.image_scope(0, &["PATH=/bin:/usr/bin", "HOME=/root"]);
    for ins in &stage.instructions {
        scope.step(ins)?;
    }
    check(
        "Env",
        scope.env().to_list(),
        vec![
            "PATH=/opt/bin:/bin:/usr/bin".into(),
            "HOME=/root".into(),
            "FOO=2".into(),
        ],
    )
}

fn env_02() -> Result<(), Failed> {
    let p = plan("ENV-02", &opts())?;
    let w = walk(&p)?;
    let env = w[0].2.env();
    check("def", env.get("def"), Some("hello"))?;
    check("ghi", env.get("ghi"), Some("bye"))
}

fn env_03() -> Result<(), Failed> {
    let p = plan("ENV-03", &opts())?;
    let w = walk(&p)?;
    let env = w[0].2.env();
    check("ONE", env.get("ONE"), Some("TWO= THREE=world"))?;
    check("TWO", env.get("TWO"), None)?;
    check("THREE", env.get("THREE"), None)
}

fn env_04() -> Result<(), Failed> {
    let p = plan("ENV-04", &opts())?;
    let w = walk(&p)?;
    let env = w[0].2.env();
    check("A", env.get("A"), Some("a b"))?;
    check("B", env.get("B"), Some("c d"))?;
    check("C", env.get("C"), Some("$HOME_"))?;
    check("D", env.get("D"), Some("/root"))
}

fn env_05() -> Result<(), Failed> {
    let p = plan("ENV-05", &opts())?;
    let stage = &p.stages()[0];
    let mut scope = p.image_scope::<&str>(0, &[]);
    let mut steps = Vec::new();
    for ins in &stage.instructions {
        steps.push(scope.step(ins)?.instruction.value);
    }
    match &steps[1] {
        Instruction::Workdir(w) => check("WorkingDir", w.value.as_str(), "/data/app")?,
        other => return Err(format!("{other:?}").into()),
    }
    let copy = |i: usize| match &steps[i] {
        Instruction::Copy(c) => Ok(c.clone()),
        other => Err(format!("{other:?}")),
    };
    check("COPY dest", copy(2)?.dest.value, "/data/".into())?;
    let lit = copy(3)?;
    let src = match &lit.sources[0] {
        Source::Path(p) => p.value.clone(),
        other => return Err(format!("{other:?}").into()),
    };
    check("escaped source", src, "$DIR".into())
}

fn env_06() -> Result<(), Failed> {
    let p = plan("ENV-06", &opts())?;
    let w = walk(&p)?;
    check(
        "Env",
        w[0].2.env().to_list(),
        vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "foo=bar".into(),
        ],
    )?;
    // A base image without PATH gets the same.
    let s = p.image_scope(0, &["A=1"]);
    check(
        "no PATH",
        s.env().get("PATH"),
        Some(dockerfile::DEFAULT_PATH),
    )
}

fn env_07() -> Result<(), Failed> {
    let p = plan("ENV-07", &opts())?;
    let w = walk(&p)?;
    let (_, before, _) = &w[1];
    check("X", sh(&before[0], "$X"), "1".into())
}

fn env_08() -> Result<(), Failed> {
    let p = plan("ENV-08", &opts())?;
    let w = walk(&p)?;
    check("myenv", env_of(&w[0].2, "myenv"), Some("foo%sbar".into()))
}

fn env_09() -> Result<(), Failed> {
    let err = match parse(&snippet("ENV-09")) {
        Err(e) => e.to_string(),
        Ok(_) => return Err("ENV A=1 B parsed".into()),
    };
    if !err.contains("can't find = in \"B\". Must be of the form: name=value") {
        return Err(format!("wrong error: {err}").into());
    }
    if parse("FROM scratch\nENV PATH\n").is_ok() {
        return Err("ENV PATH parsed".into());
    }
    Ok(())
}

fn ms_01() -> Result<(), Failed> {
    let p = plan("MS-01", &opts().target("ok"))?;
    check("target", p.target(), 1)?;
    check("reachable", p.reachable().to_vec(), vec![1])?;
    let p = plan("MS-01", &opts())?;
    check("default target", p.target(), 1)?;
    check("reachable", p.reachable().to_vec(), vec![1])
}

fn ms_02() -> Result<(), Failed> {
    match plan("MS-02", &opts().target("bulid")) {
        Err(e) => check(
            "error",
            e.to_string(),
            "target stage \"bulid\" could not be found (did you mean build?)".into(),
        ),
        Ok(_) => Err("unknown target accepted".into()),
    }
}

fn ms_03() -> Result<(), Failed> {
    let p = plan("MS-03", &opts())?;
    check("base", p.stages()[1].base.clone(), StageBase::Stage(0))?;
    check("reachable", p.reachable().to_vec(), vec![0, 1])?;
    check(
        "no instructions of its own",
        p.stages()[1].instructions.len(),
        0,
    )?;
    let w = walk(&p)?;
    check("A", env_of(&w[1].2, "A"), Some("1".into()))
}

fn ms_04() -> Result<(), Failed> {
    match plan("MS-04", &opts()) {
        Err(e) => check(
            "error",
            e.message(),
            "base name ($IMG) should not be blank".into(),
        ),
        Ok(_) => Err("blank base accepted".into()),
    }
}
