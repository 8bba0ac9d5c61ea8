//! The rules themselves, in the order BuildKit runs them: while parsing instructions,
//! over the stage list, per `FROM` line, then while dispatching each stage.

use std::collections::HashMap;

use super::*;
use crate::ast::{Command, Instruction, KeyValue, Source};
use crate::dockerignore::{PatternMatcher, gopath};
use crate::shell::Lexer;
use crate::stages::{Env, StageBase};

const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// Predefined platform ARGs, which keep their value when a global `ARG` names them
/// without a default.
const PLATFORM_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

pub(super) fn run(sink: &mut Sink<'_>, df: &Dockerfile, plan: &BuildPlan, opts: &LintOptions) {
    let ast = sink.ast();
    let by_start: HashMap<usize, &Instruction> = df
        .instructions
        .iter()
        .map(|i| (i.span.start, &i.value))
        .collect();
    let mut found = Vec::new();
    for node in &ast.nodes {
        parse_time(node, by_start.get(&node.span.start).copied(), &mut found);
    }
    for w in found {
        sink.push(w, true);
    }
    // The plan's findings: DuplicateStageName (file-wide), UndefinedArgInFrom (per FROM).
    for stage in plan.stages() {
        if let Some(name) = &stage.name {
            if RESERVED_STAGE_NAMES.contains(&name.as_str()) {
                let msg =
                    format!("Stage name should not use the same name as reserved stage {name:?}");
                sink.push(
                    LintWarning::new(&RESERVED_STAGE_NAME, msg, Some(stage.span)),
                    false,
                );
            }
        }
        for w in plan.warnings() {
            if w.rule == DUPLICATE_STAGE_NAME.name && w.span == Some(stage.span) {
                sink.push(
                    LintWarning::new(&DUPLICATE_STAGE_NAME, w.message.clone(), w.span),
                    false,
                );
            }
        }
    }
    command_casing(sink, plan);
    default_args_in_from(sink, df, plan);
    for stage in plan.stages() {
        for w in plan.warnings() {
            if w.rule == UNDEFINED_ARG_IN_FROM.name && w.span == Some(stage.span) {
                sink.push(
                    LintWarning::new(&UNDEFINED_ARG_IN_FROM, w.message.clone(), w.span),
                    true,
                );
            }
        }
        from_platform(sink, plan, stage);
    }
    dispatch(sink, plan, opts);
}

/// Checks of BuildKit's `instructions.Parse`, for every instruction.
fn parse_time(node: &Node, typed: Option<&Instruction>, out: &mut Vec<LintWarning>) {
    let at = Some(node.span);
    match typed {
        Some(Instruction::Maintainer(_)) => out.push(LintWarning::new(
            &MAINTAINER_DEPRECATED,
            "Maintainer instruction is deprecated in favor of using label",
            at,
        )),
        Some(Instruction::From(f)) => {
            let args = &node.args;
            if args.len() == 3 && !is_lower(&args[2]) {
                let msg = format!("Stage name '{}' should be lowercase", args[2].value);
                out.push(LintWarning::new(&STAGE_NAME_CASING, msg, at));
            }
            let kw = node.keyword.as_str();
            if args.len() >= 3 && (is_lower(kw) || is_upper(kw)) {
                let as_kw = args[1].as_str();
                let ok = if is_lower(kw) {
                    is_lower(as_kw)
                } else {
                    is_upper(as_kw)
                };
                if !ok {
                    let msg = format!("'{as_kw}' and '{kw}' keywords' casing do not match");
                    out.push(LintWarning::new(&FROM_AS_CASING, msg, at));
                }
            }
            if let Some(name) = &f.name {
                definition_description("FROM", &[name.as_str()], node, out);
            }
        }
        Some(Instruction::Arg(defs)) => {
            let keys: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
            definition_description("ARG", &keys, node, out);
        }
        _ => {}
    }
}

fn definition_description(
    instruction: &str,
    keys: &[&str],
    node: &Node,
    out: &mut Vec<LintWarning>,
) {
    let Some(last) = node.comments.last() else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let first = last.split(' ').next().unwrap_or_default();
    if keys.contains(&first) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { keys[0] };
    let msg =
        format!("Comment for {instruction} should follow the format: `# {example} <description>`");
    out.push(LintWarning::new(
        &INVALID_DEFINITION_DESCRIPTION,
        msg,
        Some(node.span),
    ));
}

/// `ConsistentInstructionCasing`: every stage's FROM and instructions against the
/// majority casing.
fn command_casing(sink: &mut Sink<'_>, plan: &BuildPlan) {
    let ast = sink.ast();
    let mut keywords = Vec::new();
    for stage in plan.stages() {
        let spans = std::iter::once(stage.span).chain(stage.instructions.iter().map(|i| i.span));
        for span in spans {
            if let Some(n) = node_at(ast, span) {
                keywords.push((n.keyword.value.clone(), n.span));
            }
        }
    }
    let (mut lower, mut upper) = (0, 0);
    for (k, _) in &keywords {
        if is_lower(k) {
            lower += 1;
        } else if is_upper(k) {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for (k, span) in keywords {
        let casing = if majority_lower && !is_lower(&k) {
            "lowercase"
        } else if !majority_lower && !is_upper(&k) {
            "uppercase"
        } else {
            continue;
        };
        let msg = format!("Command '{k}' should match the case of the command majority ({casing})");
        sink.push(
            LintWarning::new(&CONSISTENT_INSTRUCTION_CASING, msg, Some(span)),
            false,
        );
    }
}

/// `InvalidDefaultArgInFrom`: each FROM expanded with the global ARGs' defaults only.
fn default_args_in_from(sink: &mut Sink<'_>, df: &Dockerfile, plan: &BuildPlan) {
    let lexer = Lexer::new(df.escape);
    let globals: Vec<&crate::ast::ArgDef> = df
        .instructions
        .iter()
        .take_while(|i| !matches!(i.value, Instruction::From(_)))
        .filter_map(|i| match &i.value {
            Instruction::Arg(defs) => Some(defs.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut env = Env::new();
    for (k, v) in plan.global_args().iter() {
        if !globals.iter().any(|d| d.name.as_str() == k) {
            env.set(k, v);
        }
    }
    for d in &globals {
        match &d.default {
            Some(v) => match lexer.process_word(v, &env) {
                Ok(v) => env.set(d.name.as_str(), &v),
                Err(_) => return,
            },
            None if PLATFORM_ARGS.contains(&d.name.as_str()) => {
                if let Some(v) = plan.global_args().get(d.name.as_str()) {
                    let v = v.to_owned();
                    env.set(d.name.as_str(), &v);
                }
            }
            None => {}
        }
    }
    for i in &df.instructions {
        let Instruction::From(f) = &i.value else {
            continue;
        };
        let Ok(name) = lexer.process_word(&f.image, &env) else {
            return;
        };
        if !is_valid_reference(&name) {
            let msg = format!(
                "Default value for ARG {} results in empty or invalid base image name",
                f.image.value
            );
            sink.push(
                LintWarning::new(&INVALID_DEFAULT_ARG_IN_FROM, msg, Some(i.span)),
                false,
            );
        }
    }
}

/// `RedundantTargetPlatform` and `FromPlatformFlagConstDisallowed` for one FROM.
fn from_platform(sink: &mut Sink<'_>, plan: &BuildPlan, stage: &crate::stages::Stage) {
    let Some(node) = node_at(sink.ast(), stage.span) else {
        return;
    };
    let Some(flag) = node
        .flags
        .iter()
        .find_map(|f| f.value.strip_prefix("--platform="))
    else {
        return;
    };
    let Ok(x) = Lexer::new(plan.escape()).process(flag, plan.global_args()) else {
        return;
    };
    let at = Some(stage.span);
    if x.matched.len() == 1
        && x.unmatched.is_empty()
        && x.matched.contains("TARGETPLATFORM")
        && plan.global_args().get("TARGETPLATFORM") == Some(x.value.as_str())
    {
        let msg = format!(
            "Setting platform to predefined {flag} in FROM is redundant as this is the default behavior"
        );
        sink.push(LintWarning::new(&REDUNDANT_TARGET_PLATFORM, msg, at), true);
    }
    if !x.matched.is_empty() || !x.unmatched.is_empty() {
        return;
    }
    // containerd's platforms.Parse, enough to find the OS and architecture.
    let parts: Vec<&str> = x.value.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return;
    }
    let os = parts[0].to_lowercase();
    let arch = match parts.get(1).map(|a| a.to_lowercase()) {
        Some(a) if a == "x86_64" || a == "x86-64" => "amd64".to_owned(),
        Some(a) if a == "aarch64" => "arm64".to_owned(),
        Some(a) => a,
        None => crate::stages::PlatformSpec::host().architecture,
    };
    let name = stage.name.clone().unwrap_or_default();
    if name.contains(&os) || name.contains(&arch) {
        return;
    }
    let msg = format!(
        "FROM --platform flag should not use constant value {:?}",
        x.value
    );
    sink.push(
        LintWarning::new(&FROM_PLATFORM_FLAG_CONST_DISALLOWED, msg, at),
        true,
    );
}

/// What a stage carries into the stages built on it.
#[derive(Clone, Copy, Default)]
struct Carried {
    shell_set: bool,
    workdir_set: bool,
}

/// Checks made while dispatching the instructions of a stage.
fn dispatch(sink: &mut Sink<'_>, plan: &BuildPlan, opts: &LintOptions) {
    let ignore = if opts.ignore_patterns.is_empty() {
        None
    } else {
        PatternMatcher::new(&opts.ignore_patterns)
            .ok()
            .filter(|m| !m.has_exclusions())
    };
    let stages = plan.stages();
    let mut carried = vec![Carried::default(); stages.len()];
    for (i, stage) in stages.iter().enumerate() {
        let mut st = match stage.base {
            StageBase::Stage(p) if p < i => carried[p],
            _ => Carried::default(),
        };
        if opts.all_stages || plan.reachable().contains(&i) {
            let mut used: HashMap<&str, Span> = HashMap::new();
            for ins in &stage.instructions {
                let Some(node) = node_at(sink.ast(), ins.span) else {
                    continue;
                };
                let name = node.keyword.as_str();
                let mut out = Vec::new();
                instruction(
                    &ins.value,
                    name,
                    ins.span,
                    &mut st,
                    &mut used,
                    ignore.as_ref(),
                    &mut out,
                );
                for w in out {
                    sink.push(w, true);
                }
            }
        } else {
            for ins in &stage.instructions {
                match &ins.value {
                    Instruction::Shell(_) => st.shell_set = true,
                    Instruction::Workdir(_) => st.workdir_set = true,
                    _ => {}
                }
            }
        }
        carried[i] = st;
    }
}

fn instruction(
    ins: &Instruction,
    name: &str,
    span: Span,
    st: &mut Carried,
    used: &mut HashMap<&'static str, Span>,
    ignore: Option<&PatternMatcher>,
    out: &mut Vec<LintWarning>,
) {
    let at = Some(span);
    let legacy = |kvs: &[KeyValue], out: &mut Vec<LintWarning>| {
        if kvs.iter().any(|kv| kv.legacy) {
            let msg = format!(
                "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
            );
            out.push(LintWarning::new(&LEGACY_KEY_VALUE_FORMAT, msg, at));
        }
    };
    let mut once = |kw: &'static str, out: &mut Vec<LintWarning>| {
        if let Some(prev) = used.insert(kw, span) {
            let msg = format!(
                "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
            );
            out.push(LintWarning::new(
                &MULTIPLE_INSTRUCTIONS_DISALLOWED,
                msg,
                Some(prev),
            ));
        }
    };
    match ins {
        Instruction::Env(kvs) => {
            legacy(kvs, out);
            for kv in kvs {
                secret("ENV", kv.key.as_str(), span, out);
            }
        }
        Instruction::Label(kvs) => legacy(kvs, out),
        Instruction::Arg(defs) => {
            for d in defs {
                secret("ARG", d.name.as_str(), span, out);
            }
        }
        Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
            once(ins.keyword(), out);
            if matches!(c, Command::Shell(_)) && !st.shell_set {
                let msg = format!(
                    "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                );
                out.push(LintWarning::new(&JSON_ARGS_RECOMMENDED, msg, at));
            }
        }
        Instruction::Healthcheck(_) => once("HEALTHCHECK", out),
        Instruction::Shell(_) => st.shell_set = true,
        Instruction::Workdir(p) => {
            if !st.workdir_set && !p.starts_with('/') && !p.starts_with('$') {
                let msg = format!(
                    "Relative workdir {:?} can have unexpected results if the base image changes",
                    p.value
                );
                out.push(LintWarning::new(&WORKDIR_RELATIVE_PATH, msg, at));
            }
            st.workdir_set = true;
        }
        Instruction::Expose(ports) => {
            for p in ports {
                expose(p.as_str(), span, out);
            }
        }
        Instruction::Copy(c) if c.from.is_none() => {
            if let Some(m) = ignore {
                copy_ignored("Copy", &c.sources, m, span, out);
            }
        }
        Instruction::Add(a) => {
            if let Some(m) = ignore {
                copy_ignored("Add", &a.sources, m, span, out);
            }
        }
        _ => {}
    }
}

/// `SecretsUsedInArgOrEnv`: a key whose first or last `_`-separated word (or the whole
/// key) is a secret word, unless one is an allowed word.
fn secret(instruction: &str, key: &str, span: Span, out: &mut Vec<LintWarning>) {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    // `(?i)(?:_|^)(?:word)(?:_|$)`: the word is a whole `_`-separated part.
    let lower = key.to_lowercase();
    let has = |words: &[&str]| lower.split('_').any(|p| words.contains(&p));
    if has(DENY) && !has(ALLOW) {
        let msg = format!(
            "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
        );
        out.push(LintWarning::new(
            &SECRETS_USED_IN_ARG_OR_ENV,
            msg,
            Some(span),
        ));
    }
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat` for one `[ip:][host:]port[/proto]`.
fn expose(raw: &str, span: Span, out: &mut Vec<LintWarning>) {
    if raw.contains('$') {
        return;
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let proto = match container.split_once('/') {
        Some(("", _)) => return,
        Some((_, proto)) => proto.split('/').next().unwrap_or_default(),
        None => "",
    };
    if container.is_empty() {
        return;
    }
    if !is_lower(proto) {
        let msg = format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase");
        out.push(LintWarning::new(&EXPOSE_PROTO_CASING, msg, Some(span)));
    }
    if !ip.is_empty() || !host.is_empty() {
        let msg = format!(
            "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
        );
        out.push(LintWarning::new(&EXPOSE_INVALID_FORMAT, msg, Some(span)));
    }
}

/// `CopyIgnoredFile` for the local sources of a COPY or ADD.
fn copy_ignored(
    cmd: &str,
    sources: &[Source],
    m: &PatternMatcher,
    span: Span,
    out: &mut Vec<LintWarning>,
) {
    for s in sources {
        let Source::Path(p) = s else { continue };
        let p = p.as_str();
        if p.contains('$') || p.contains("://") || p.starts_with("git@") {
            continue;
        }
        let src = gopath::clean(p);
        let rel = src.trim_start_matches('/');
        if src == "." || src == "/" {
            let root_ignored = m
                .patterns()
                .iter()
                .any(|pat| !pat.is_exclusion() && matches!(pat.as_str(), "*" | "**" | "**/*"));
            if !root_ignored {
                continue;
            }
        }
        let target = if rel.is_empty() { src.as_str() } else { rel };
        if m.matches_or_parent_matches(target).unwrap_or(false) {
            let msg = format!("Attempting to {cmd} file {src:?} that is excluded by .dockerignore");
            out.push(LintWarning::new(&COPY_IGNORED_FILE, msg, Some(span)));
        }
    }
}
