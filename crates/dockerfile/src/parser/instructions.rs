//! From line-parser nodes to typed instructions (BuildKit's `instructions`
//! package): argument counts, flags, heredoc sources, mounts, healthchecks.

use std::time::Duration;

use super::bflag::{FlagKind, Flags, parse_flags};
use super::duration::parse_go_duration;
use super::heredoc::parse_heredoc;
use super::mount::parse_mount_spec;
use super::split::known_keyword;
use super::suggest::suggest;
use super::unicode::{is_re_space, is_space, to_lower, to_upper};
use crate::ast::{
    AddInstruction, ArgDef, Ast, Command, CopyInstruction, Dockerfile, FromInstruction,
    Healthcheck, HealthcheckCmd, HeredocSource, Instruction, KeyValue, NetworkMode, Node,
    OnbuildInstruction, RunInstruction, SecurityMode, Source, Span, Spanned, chomp_heredoc,
};
use crate::error::{Arity, Error, FlagProblem};

const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

impl Dockerfile {
    /// Turns every node of the line parser's result into a typed instruction.
    pub fn from_ast(ast: Ast) -> Result<Dockerfile, Error> {
        let instructions = ast
            .nodes
            .into_iter()
            .map(|mut node| {
                // The node is not needed afterwards: move its arguments out.
                let args = match node.trigger {
                    Some(_) => node_args(&node),
                    None => std::mem::take(&mut node.args),
                };
                Instruction::build(&node, args)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dockerfile {
            directives: ast.directives,
            escape: ast.escape,
            instructions,
            warnings: ast.warnings,
        })
    }
}

impl OnbuildInstruction {
    /// The trigger as a typed instruction (what a child image runs).
    pub fn trigger(&self) -> Result<Spanned<Instruction>, Error> {
        Instruction::from_node(&self.node)
    }
}

/// The arguments of a node; for ONBUILD the trigger keyword then its arguments.
fn node_args(node: &Node) -> Vec<Spanned<String>> {
    match &node.trigger {
        Some(t) => {
            let mut v = vec![t.keyword.clone()];
            v.extend(node_args(t));
            v
        }
        None => node.args.clone(),
    }
}

fn arity(instruction: &'static str, expected: Arity, span: Span) -> Error {
    Error::Arity {
        instruction,
        expected,
        span,
    }
}

fn no_flags(instruction: &'static str, node: &Node) -> Result<Flags<'static>, Error> {
    parse_flags(instruction, &[], &node.flags)
}

/// BuildKit's handleJSONArgs as a [`Command`].
fn command(node: &Node, args: &[Spanned<String>]) -> Command {
    if node.json {
        return Command::Exec(args.to_vec());
    }
    match args {
        // A bare `RUN`/`CMD`: shell form without text (BuildKit runs the shell
        // with no command).
        [] => Command::Shell(Spanned::new(String::new(), node.keyword.span)),
        [one] => Command::Shell(one.clone()),
        [first, .., last] => {
            let text = args
                .iter()
                .map(|a| a.value.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            Command::Shell(Spanned::new(text, first.span.to(last.span)))
        }
    }
}

fn key_values(
    instruction: &'static str,
    args: Vec<Spanned<String>>,
    span: Span,
) -> Result<Vec<KeyValue>, Error> {
    if args.is_empty() {
        return Err(arity(instruction, Arity::AtLeastOne, span));
    }
    if args.len() % 3 != 0 {
        return Err(arity(instruction, Arity::Triples, span));
    }
    let mut out = Vec::with_capacity(args.len() / 3);
    let mut it = args.into_iter();
    while let (Some(key), Some(value), Some(sep)) = (it.next(), it.next(), it.next()) {
        if key.value.is_empty() {
            return Err(Error::BlankName {
                instruction,
                span: key.span,
            });
        }
        out.push(KeyValue {
            key,
            value,
            legacy: sep.value.is_empty(),
        });
    }
    Ok(out)
}

/// The only argument, or the arity error.
fn exactly_one(
    instruction: &'static str,
    args: Vec<Spanned<String>>,
    span: Span,
) -> Result<Spanned<String>, Error> {
    let mut it = args.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(arity(instruction, Arity::ExactlyOne, span)),
    }
}

/// BuildKit's `getDocComment`: the rest of the first comment line starting with
/// `<name> `.
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    comments
        .iter()
        .find_map(|c| c.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_default()
        .to_owned()
}

/// Go's `strings.EqualFold(s, "as")` (simple case folding: `ſ` folds to `s`).
fn is_as(s: &str) -> bool {
    let mut c = s.chars();
    matches!(
        (c.next(), c.next(), c.next()),
        (Some('a' | 'A'), Some('s' | 'S' | '\u{17f}'), None)
    )
}

fn valid_stage_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

struct Sources {
    sources: Vec<Source>,
    dest: Spanned<String>,
}

fn sources_and_dest(
    instruction: &'static str,
    node: &Node,
    args: &[Spanned<String>],
) -> Result<Sources, Error> {
    let (dest, srcs) = args
        .split_last()
        .ok_or_else(|| arity(instruction, Arity::SourcesAndDest, node.span))?;
    if let Ok(Some(_)) = parse_heredoc(&dest.value) {
        return Err(Error::HeredocDestination {
            instruction,
            span: dest.span,
        });
    }
    let sources = srcs
        .iter()
        .map(|src| match parse_heredoc(&src.value) {
            Ok(Some(h)) => {
                // The last heredoc of that name wins, as in BuildKit's lookup map.
                let content = node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|d| d.name == h.name)
                    .map(|d| d.content.as_str())
                    .unwrap_or_default();
                let content = if h.chomp {
                    chomp_heredoc(content)
                } else {
                    content.to_owned()
                };
                Source::Heredoc(HeredocSource {
                    name: h.name,
                    content,
                    expand: h.expand,
                    span: src.span,
                })
            }
            _ => Source::Path(src.clone()),
        })
        .collect();
    Ok(Sources {
        sources,
        dest: dest.clone(),
    })
}

fn duration_flag(flags: &Flags<'_>, name: &str) -> Result<Option<Duration>, Error> {
    let Some(v) = flags.string(name) else {
        return Ok(None);
    };
    if v.value.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| Error::BadFlag {
        problem: FlagProblem::InvalidValue {
            flag: format!("--{name}"),
            value: v.value.clone(),
            message,
        },
        span: v.span,
    };
    let nanos = parse_go_duration(&v.value).map_err(bad)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(bad(format!("Interval {name:?} cannot be less than 1ms")));
    }
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    Ok(Some(Duration::from_nanos(nanos)))
}

impl Instruction {
    /// Builds the typed instruction for one node of the line parser.
    pub fn from_node(node: &Node) -> Result<Spanned<Instruction>, Error> {
        Instruction::build(node, node_args(node))
    }

    /// The typed instruction for `node`, whose arguments are `args` (the node's
    /// own `args` field is not read).
    fn build(node: &Node, args: Vec<Spanned<String>>) -> Result<Spanned<Instruction>, Error> {
        let span = node.span;
        let inst = match known_keyword(&node.keyword.value).unwrap_or_default() {
            "env" => {
                no_flags("ENV", node)?;
                Instruction::Env(key_values("ENV", args, span)?)
            }
            "label" => {
                no_flags("LABEL", node)?;
                Instruction::Label(key_values("LABEL", args, span)?)
            }
            "maintainer" => {
                let one = exactly_one("MAINTAINER", args, span)?;
                no_flags("MAINTAINER", node)?;
                Instruction::Maintainer(one)
            }
            "add" => {
                if args.len() < 2 {
                    return Err(arity("ADD", Arity::SourcesAndDest, span));
                }
                let f = parse_flags(
                    "ADD",
                    &[
                        ("chown", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("link", FlagKind::Bool),
                        ("keep-git-dir", FlagKind::Bool),
                        ("checksum", FlagKind::String),
                        ("unpack", FlagKind::Bool),
                        ("exclude", FlagKind::Strings),
                    ],
                    &node.flags,
                )?;
                let s = sources_and_dest("ADD", node, &args)?;
                Instruction::Add(AddInstruction {
                    sources: s.sources,
                    dest: s.dest,
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link").unwrap_or(false),
                    exclude: f.strings("exclude"),
                    checksum: f.string("checksum"),
                    keep_git_dir: f.bool("keep-git-dir"),
                    unpack: f.bool("unpack"),
                    json: node.json,
                })
            }
            "copy" => {
                if args.len() < 2 {
                    return Err(arity("COPY", Arity::SourcesAndDest, span));
                }
                let f = parse_flags(
                    "COPY",
                    &[
                        ("chown", FlagKind::String),
                        ("from", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("link", FlagKind::Bool),
                        ("exclude", FlagKind::Strings),
                        ("parents", FlagKind::Bool),
                    ],
                    &node.flags,
                )?;
                let s = sources_and_dest("COPY", node, &args)?;
                Instruction::Copy(CopyInstruction {
                    sources: s.sources,
                    dest: s.dest,
                    from: f.string("from"),
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link").unwrap_or(false),
                    parents: f.bool("parents").unwrap_or(false),
                    exclude: f.strings("exclude"),
                    json: node.json,
                })
            }
            "from" => {
                let name = match args.as_slice() {
                    [_, as_kw, name] if is_as(&as_kw.value) => {
                        let lower = to_lower(&name.value);
                        if !valid_stage_name(&lower) {
                            return Err(Error::InvalidStageName {
                                name: name.value.clone(),
                                span: name.span,
                            });
                        }
                        Some(Spanned::new(lower, name.span))
                    }
                    [_] => None,
                    _ => return Err(arity("FROM", Arity::OneOrThree, span)),
                };
                let f = parse_flags("FROM", &[("platform", FlagKind::String)], &node.flags)?;
                let doc = doc_comment(
                    &node.comments,
                    name.as_ref().map_or("", |n| n.value.as_str()),
                );
                Instruction::From(FromInstruction {
                    image: args[0].clone(),
                    platform: f.string("platform"),
                    name,
                    comments: node.comments.clone(),
                    doc_comment: doc,
                })
            }
            "onbuild" => {
                let Some(first) = args.first() else {
                    return Err(arity("ONBUILD", Arity::AtLeastOne, span));
                };
                no_flags("ONBUILD", node)?;
                let trigger = to_upper(first.value.trim_matches(is_space));
                if matches!(trigger.as_str(), "ONBUILD" | "MAINTAINER" | "FROM") {
                    return Err(Error::OnbuildTrigger {
                        trigger,
                        span: first.span,
                    });
                }
                let mut expression = strip_onbuild(&node.original).to_owned();
                for h in &node.heredocs {
                    expression.push('\n');
                    expression.push_str(&h.content);
                    expression.push_str(&h.name);
                }
                let Some(mut trigger_node) = node.trigger.clone() else {
                    return Err(arity("ONBUILD", Arity::AtLeastOne, span));
                };
                trigger_node.heredocs = node.heredocs.clone();
                Instruction::Onbuild(OnbuildInstruction {
                    expression,
                    node: trigger_node,
                })
            }
            "workdir" => {
                let one = exactly_one("WORKDIR", args, span)?;
                no_flags("WORKDIR", node)?;
                Instruction::Workdir(one)
            }
            "run" => Instruction::Run(run(node, &args)?),
            "cmd" => {
                no_flags("CMD", node)?;
                Instruction::Cmd(command(node, &args))
            }
            "entrypoint" => {
                no_flags("ENTRYPOINT", node)?;
                Instruction::Entrypoint(command(node, &args))
            }
            "healthcheck" => Instruction::Healthcheck(healthcheck(node, &args)?),
            "expose" => {
                if args.is_empty() {
                    return Err(arity("EXPOSE", Arity::AtLeastOne, span));
                }
                no_flags("EXPOSE", node)?;
                Instruction::Expose(args)
            }
            "user" => {
                let one = exactly_one("USER", args, span)?;
                no_flags("USER", node)?;
                Instruction::User(one)
            }
            "volume" => {
                if args.is_empty() {
                    return Err(arity("VOLUME", Arity::AtLeastOne, span));
                }
                no_flags("VOLUME", node)?;
                let mut vols = Vec::with_capacity(args.len());
                for a in args {
                    let v = a.value.trim_matches(is_space);
                    if v.is_empty() {
                        return Err(Error::EmptyVolume { span: a.span });
                    }
                    vols.push(Spanned::new(v.to_owned(), a.span));
                }
                Instruction::Volume(vols)
            }
            "stopsignal" => {
                // BuildKit does not look at STOPSIGNAL's flags.
                Instruction::StopSignal(exactly_one("STOPSIGNAL", args, span)?)
            }
            "arg" => {
                // Nor at ARG's.
                if args.is_empty() {
                    return Err(arity("ARG", Arity::AtLeastOne, span));
                }
                let mut defs = Vec::with_capacity(args.len());
                for a in &args {
                    let (name, default) = match a.value.split_once('=') {
                        Some((k, v)) => {
                            if k.is_empty() {
                                return Err(Error::BlankName {
                                    instruction: "ARG",
                                    span: a.span,
                                });
                            }
                            let (ks, vs) = split_span(a.span, &a.value, k.len());
                            (
                                Spanned::new(k.to_owned(), ks),
                                Some(Spanned::new(v.to_owned(), vs)),
                            )
                        }
                        None => (a.clone(), None),
                    };
                    let doc = doc_comment(&node.comments, &name.value);
                    defs.push(ArgDef {
                        name,
                        default,
                        doc_comment: doc,
                    });
                }
                Instruction::Arg(defs)
            }
            "shell" => {
                no_flags("SHELL", node)?;
                if args.is_empty() {
                    return Err(arity("SHELL", Arity::AtLeastOne, span));
                }
                if !node.json {
                    return Err(Error::ShellNotJson { span });
                }
                Instruction::Shell(args)
            }
            _ => {
                return Err(Error::UnknownInstruction {
                    suggestion: suggest(&node.keyword.value, &INSTRUCTIONS, false),
                    name: node.keyword.value.clone(),
                    span: node.keyword.span,
                });
            }
        };
        Ok(Spanned::new(inst, span))
    }
}

/// Splits the span of `key=value` at the `=` when the word is written plainly.
fn split_span(span: Span, word: &str, key_len: usize) -> (Span, Span) {
    if span.end - span.start != word.len() || span.start_line != span.end_line {
        return (span, span);
    }
    let key_chars = u32::try_from(word[..key_len].chars().count()).unwrap_or(0);
    let mut k = span;
    k.end = span.start + key_len;
    k.end_column = span.start_column + key_chars;
    let mut v = span;
    v.start = k.end + 1;
    v.start_column = k.end_column + 1;
    (k, v)
}

/// `(?i)^\s*ONBUILD\s*` removed.
fn strip_onbuild(original: &str) -> &str {
    let s = original.trim_start_matches(is_re_space);
    match s.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => s[7..].trim_start_matches(is_re_space),
        _ => original,
    }
}

fn run(node: &Node, args: &[Spanned<String>]) -> Result<RunInstruction, Error> {
    let f = parse_flags(
        "RUN",
        &[
            ("device", FlagKind::Strings),
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ],
        &node.flags,
    )?;
    let mounts = f
        .strings("mount")
        .into_iter()
        .map(parse_mount_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let network = match f.string("network") {
        None => None,
        Some(v) => {
            let mode = match v.value.as_str() {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                _ => {
                    return Err(Error::BadFlag {
                        problem: FlagProblem::InvalidValue {
                            flag: "--network".into(),
                            message: format!("invalid network mode {:?}", v.value),
                            value: v.value,
                        },
                        span: v.span,
                    });
                }
            };
            Some(Spanned::new(mode, v.span))
        }
    };
    let security = match f.string("security") {
        None => None,
        Some(v) => {
            let mode = match v.value.as_str() {
                "sandbox" => SecurityMode::Sandbox,
                "insecure" => SecurityMode::Insecure,
                _ => {
                    return Err(Error::BadFlag {
                        problem: FlagProblem::InvalidValue {
                            flag: "--security".into(),
                            message: format!("security {:?} is not valid", v.value),
                            value: v.value,
                        },
                        span: v.span,
                    });
                }
            };
            Some(Spanned::new(mode, v.span))
        }
    };
    Ok(RunInstruction {
        command: command(node, args),
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
        devices: f.strings("device"),
        flags_used: f.used(),
    })
}

fn healthcheck(node: &Node, args: &[Spanned<String>]) -> Result<Healthcheck, Error> {
    let span = node.span;
    let Some((typ, rest)) = args.split_first() else {
        return Err(arity("HEALTHCHECK", Arity::AtLeastOne, span));
    };
    let kind = to_upper(&typ.value);
    if kind == "NONE" {
        // BuildKit does not look at the flags of HEALTHCHECK NONE.
        if !rest.is_empty() {
            return Err(Error::HealthcheckNoneArgs { span });
        }
        return Ok(Healthcheck::None);
    }
    let f = parse_flags(
        "HEALTHCHECK",
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
        &node.flags,
    )?;
    if kind != "CMD" {
        return Err(Error::HealthcheckType {
            kind,
            span: typ.span,
        });
    }
    let cmd = command(node, rest);
    let empty = match &cmd {
        Command::Exec(v) => v.is_empty(),
        Command::Shell(s) => s.value.is_empty(),
    };
    if empty {
        return Err(Error::HealthcheckMissingCommand { span });
    }
    let interval = duration_flag(&f, "interval")?;
    let timeout = duration_flag(&f, "timeout")?;
    let start_period = duration_flag(&f, "start-period")?;
    let start_interval = duration_flag(&f, "start-interval")?;
    let retries = match f.string("retries") {
        Some(v) if !v.value.is_empty() => {
            let bad = |message: String| Error::BadFlag {
                problem: FlagProblem::InvalidValue {
                    flag: "--retries".into(),
                    value: v.value.clone(),
                    message,
                },
                span: v.span,
            };
            let n = parse_go_int32(&v.value).map_err(bad)?;
            if n < 0 {
                return Err(bad(format!("--retries cannot be negative ({n})")));
            }
            u32::try_from(n).ok().filter(|&n| n > 0)
        }
        _ => None,
    };
    Ok(Healthcheck::Cmd(HealthcheckCmd {
        command: cmd,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// Go's `strconv.ParseInt(s, 10, 32)` with its error messages.
fn parse_go_int32(s: &str) -> Result<i32, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseInt: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i32>()
        .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))
}
