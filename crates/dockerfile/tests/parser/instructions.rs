//! `instruction_cases.json`: node -> typed instruction.

use dockerfile::{Command, Healthcheck, Instruction, Source};
use libtest_mimic::{Failed, Trial};
use serde_json::Value;

use super::{check, read_json};

/// The typed form of the first instruction.
fn first(df: &str) -> Result<Instruction, dockerfile::Error> {
    let ast = dockerfile::parse_ast(df).expect("the line parser accepts these inputs");
    Instruction::from_node(&ast.nodes[0]).map(|i| i.value)
}

fn expect_error(df: &str, want: &str, exact: bool) -> Result<(), Failed> {
    match first(df) {
        Ok(i) => Err(format!("{df:?}: accepted as {i:?}").into()),
        Err(e) => {
            let msg = e.message();
            let ok = if exact {
                msg == want
            } else {
                msg.contains(want)
            };
            check(ok, || format!("{df:?}: error {msg:?}, want {want:?}"))
        }
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// A line-parser node built from hand-made values (`constructed_ast` sections):
/// `node_values` is the keyword followed by the argument chain.
fn constructed(values: &[String]) -> dockerfile::Node {
    let line = values.join(" ");
    let mut node = dockerfile::parse_ast(&values[0])
        .expect("keyword parses")
        .nodes
        .remove(0);
    let span = node.span;
    node.args = values[1..]
        .iter()
        .map(|v| dockerfile::Spanned::new(v.clone(), span))
        .collect();
    node.original = line;
    node
}

pub(crate) fn trials(out: &mut Vec<Trial>) {
    let doc = read_json("instruction_cases.json");
    let s = doc["sections"].as_object().expect("sections").clone();
    for (section, body) in s {
        let cases = body["cases"].as_array().cloned().unwrap_or_default();
        for (i, c) in cases.into_iter().enumerate() {
            let name = format!("instruction_cases::{section}::{i:02}");
            let section = section.clone();
            out.push(Trial::test(name, move || run_case(&section, &c)));
        }
    }
    let comments = doc["sections"]["TestCommentsDetection"].clone();
    out.push(Trial::test(
        "instruction_cases::TestCommentsDetection",
        move || comments_case(&comments),
    ));
}

fn run_case(section: &str, c: &Value) -> Result<(), Failed> {
    match section {
        "TestCommandsExactlyOneArgument"
        | "TestCommandsAtLeastOneArgument"
        | "TestCommandsNoDestinationArgument" => expect_error(
            c["dockerfile"].as_str().expect("df"),
            c["error"].as_str().expect("e"),
            true,
        ),
        "TestErrorCases" | "TestErrorCasesHeredoc" => expect_error(
            c["dockerfile"].as_str().expect("df"),
            c["error_contains"].as_str().expect("e"),
            false,
        ),
        "TestCommandsTooManyArguments" | "TestCommandsBlankNames" => {
            let node = constructed(&strs(&c["node_values"]));
            let want = c["error"].as_str().expect("e");
            match Instruction::from_node(&node) {
                Ok(i) => return Err(format!("accepted: {i:?}").into()),
                Err(e) => check(e.message() == want, || {
                    format!("{:?}, want {want:?}", e.message())
                })?,
            }
            if let Some(line) = c.get("dockerfile_equivalent").and_then(Value::as_str) {
                expect_error(line, want, true)?;
            }
            Ok(())
        }
        "TestHealthCheckCmd" => {
            let want = strs(&c["expected_health_test"]);
            let node = constructed(&strs(&c["node_values"]));
            let mut results = vec![Instruction::from_node(&node).map(|i| i.value)?];
            if let Some(line) = c.get("dockerfile_equivalent").and_then(Value::as_str) {
                results.push(first(line)?);
            }
            for r in results {
                let Instruction::Healthcheck(Healthcheck::Cmd(h)) = &r else {
                    return Err(format!("{r:?}").into());
                };
                check(h.test() == want, || {
                    format!("{:?}, want {want:?}", h.test())
                })?;
            }
            Ok(())
        }
        "TestParseOptInterval" => {
            let v = c["value"].as_str().expect("value");
            let r = first(&format!("HEALTHCHECK --interval={v} CMD true"));
            match (c.get("error_contains").and_then(Value::as_str), r) {
                (Some(want), Err(e)) => check(e.message().contains(want), || format!("{e}")),
                (Some(_), Ok(i)) => Err(format!("accepted: {i:?}").into()),
                (None, r) => {
                    let expect_err = c["error"].as_bool().unwrap_or(false);
                    check(r.is_err() == expect_err, || format!("{v}: {r:?}"))
                }
            }
        }
        "TestCopyHeredoc" => {
            let df = c["dockerfile"].as_str().expect("df");
            let Instruction::Copy(cp) = first(df)? else {
                return Err("not COPY".into());
            };
            let e = &c["expected"];
            check(cp.dest.value == e["dest"].as_str().expect("dest"), || {
                format!("dest {:?}", cp.dest)
            })?;
            let paths: Vec<String> = cp
                .sources
                .iter()
                .filter_map(|s| match s {
                    Source::Path(p) => Some(p.value.clone()),
                    Source::Heredoc(_) => None,
                })
                .collect();
            check(paths == strs(&e["source_paths"]), || {
                format!("paths {paths:?}")
            })?;
            let contents: Vec<(String, String, bool)> = cp
                .sources
                .iter()
                .filter_map(|s| match s {
                    Source::Heredoc(h) => Some((h.name.clone(), h.content.clone(), h.expand)),
                    Source::Path(_) => None,
                })
                .collect();
            let want: Vec<(String, String, bool)> = e["source_contents"]
                .as_array()
                .expect("contents")
                .iter()
                .map(|w| {
                    (
                        w["path"].as_str().expect("p").to_owned(),
                        w["data"].as_str().expect("d").to_owned(),
                        w["expand"].as_bool().expect("e"),
                    )
                })
                .collect();
            check(contents == want, || format!("{contents:?}, want {want:?}"))
        }
        "TestRunHeredoc" => {
            let df = c["dockerfile"].as_str().expect("df");
            let Instruction::Run(run) = first(df)? else {
                return Err("not RUN".into());
            };
            let e = &c["expected"];
            let shell = matches!(run.command, Command::Shell(_));
            check(shell == e["prepend_shell"].as_bool().expect("p"), || {
                format!("{:?}", run.command)
            })?;
            let cmd = run.command.to_vec();
            check(cmd == strs(&e["cmd_line"]), || format!("cmd {cmd:?}"))?;
            let files: Vec<(String, String, bool)> = run
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone(), h.chomp))
                .collect();
            let want: Vec<(String, String, bool)> = e["files"]
                .as_array()
                .expect("files")
                .iter()
                .map(|w| {
                    (
                        w["name"].as_str().expect("n").to_owned(),
                        w["data"].as_str().expect("d").to_owned(),
                        w["chomp"].as_bool().expect("c"),
                    )
                })
                .collect();
            check(files == want, || format!("{files:?}, want {want:?}"))
        }
        "TestRunCmdFlagsUsed" => {
            let df = c["dockerfile"].as_str().expect("df");
            let Instruction::Run(run) = first(df)? else {
                return Err("not RUN".into());
            };
            let want = strs(&c["expected_flags_used"]);
            check(run.flags_used == want, || {
                format!("{:?}, want {want:?}", run.flags_used)
            })
        }
        "TestBuilderFlags" => builder_flags_case(c),
        other => Err(format!("no runner for section {other}").into()),
    }
}

fn builder_flags_case(c: &Value) -> Result<(), Failed> {
    use dockerfile::internal::{FlagKind, parse_flags};
    let defs: Vec<(String, FlagKind, Value)> = c["defs"]
        .as_array()
        .expect("defs")
        .iter()
        .map(|d| {
            let kind = match d["type"].as_str().expect("type") {
                "bool" => FlagKind::Bool,
                "string" => FlagKind::String,
                _ => FlagKind::Strings,
            };
            (
                d["name"].as_str().expect("name").to_owned(),
                kind,
                d["default"].clone(),
            )
        })
        .collect();
    let def_refs: Vec<(&str, FlagKind)> = defs.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    let args: Vec<dockerfile::Spanned<String>> = strs(&c["args"])
        .into_iter()
        .map(|a| dockerfile::Spanned::new(a, dockerfile::Span::default()))
        .collect();
    let r = parse_flags("TEST", &def_refs, &args);
    let want_err = c["error"].as_bool().expect("error");
    let flags = match (r, want_err) {
        (Err(_), true) => return Ok(()),
        (Ok(_), true) => return Err("accepted, want an error".into()),
        (Err(e), false) => return Err(format!("error: {e}").into()),
        (Ok(f), false) => f,
    };
    if let Some(exp) = c.get("expected").and_then(Value::as_object) {
        for (name, w) in exp {
            let (_, kind, default) = defs.iter().find(|(n, _, _)| n == name).expect("defined");
            let used = flags.used().contains(name);
            if let Some(u) = w.get("used").and_then(Value::as_bool) {
                check(used == u, || format!("{name}: used={used}, want {u}"))?;
            }
            if let Some(v) = w.get("value") {
                let got = match kind {
                    FlagKind::Bool => Value::Bool(
                        flags
                            .bool(name)
                            .unwrap_or_else(|| default.as_bool().unwrap_or(false)),
                    ),
                    _ => Value::String(
                        flags
                            .string(name)
                            .map(|s| s.value)
                            .unwrap_or_else(|| default.as_str().unwrap_or_default().to_owned()),
                    ),
                };
                check(&got == v, || format!("{name}: {got}, want {v}"))?;
            }
        }
    }
    if let Some(used) = c.get("expected_used_sorted") {
        let want = strs(used);
        check(flags.used() == want, || {
            format!("used {:?}, want {want:?}", flags.used())
        })?;
    }
    Ok(())
}

/// A stage's doc comment and, per ARG instruction, (key, doc comment) pairs.
type StageDocs = (String, Vec<Vec<(String, String)>>);

fn comments_case(c: &Value) -> Result<(), Failed> {
    let df = dockerfile::parse(c["dockerfile"].as_str().expect("df")).map_err(|e| e.to_string())?;
    let e = &c["expected"];
    let mut meta = Vec::new();
    let mut stages: Vec<StageDocs> = Vec::new();
    for i in &df.instructions {
        match &i.value {
            Instruction::From(f) => stages.push((f.doc_comment.clone(), Vec::new())),
            Instruction::Arg(defs) => {
                let args: Vec<(String, String)> = defs
                    .iter()
                    .map(|d| (d.name.value.clone(), d.doc_comment.clone()))
                    .collect();
                match stages.last_mut() {
                    None => meta.extend(args),
                    Some((_, cmds)) => cmds.push(args),
                }
            }
            _ => {}
        }
    }
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .expect("args")
            .iter()
            .map(|a| {
                (
                    a["key"].as_str().expect("k").to_owned(),
                    a["doc_comment"].as_str().expect("d").to_owned(),
                )
            })
            .collect()
    };
    check(meta == pairs(&e["meta_args"]), || {
        format!("meta args {meta:?}")
    })?;
    let want_stages: Vec<StageDocs> = e["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["doc_comment"].as_str().expect("d").to_owned(),
                s["commands"]
                    .as_array()
                    .expect("c")
                    .iter()
                    .map(|c| pairs(&c["args"]))
                    .collect(),
            )
        })
        .collect();
    check(stages == want_stages, || {
        format!("stages {stages:?}, want {want_stages:?}")
    })
}
