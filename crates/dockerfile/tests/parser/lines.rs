//! `parser_cases.json`: heredocs, directives, JSON arrays, words, line numbers,
//! warnings and scanner errors.

use base64_free::decode;
use libtest_mimic::{Failed, Trial};
use serde_json::Value;

use super::{check, read, read_json};

/// Compares a node's heredocs with the corpus form (`null` or a list).
pub(crate) fn check_heredocs(node: &dockerfile::Node, want: &Value, i: u64) -> Result<(), Failed> {
    let want = match want {
        Value::Null => &[][..],
        v => v.as_array().expect("heredocs").as_slice(),
    };
    check(node.heredocs.len() == want.len(), || {
        format!(
            "child {i}: {} heredocs, want {}: {:?}",
            node.heredocs.len(),
            want.len(),
            node.heredocs
        )
    })?;
    for (h, w) in node.heredocs.iter().zip(want) {
        let ok = h.name == w["name"].as_str().expect("name")
            && h.file_descriptor == w["file_descriptor"].as_u64().expect("fd")
            && h.expand == w["expand"].as_bool().expect("expand")
            && h.chomp == w["chomp"].as_bool().expect("chomp")
            && h.content == w["content"].as_str().expect("content");
        check(ok, || format!("child {i}: heredoc {h:?}, want {w}"))?;
    }
    Ok(())
}

fn named(section: &str, i: usize, v: &Value) -> String {
    let label = ["name", "test"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .map(|s| format!("_{}", s.replace(|c: char| !c.is_ascii_alphanumeric(), "_")))
        .unwrap_or_default();
    format!("parser_cases::{section}::{i:02}{label}")
}

pub(crate) fn trials(out: &mut Vec<Trial>) {
    let doc = read_json("parser_cases.json");
    let s = &doc["sections"];

    for section in ["TestParseExtractsHeredoc", "TestParseJSONHeredoc"] {
        let df = s[section]["dockerfile"]
            .as_str()
            .expect("dockerfile")
            .to_owned();
        for c in s[section]["children"].as_array().expect("children").clone() {
            let i = c["child_index"].as_u64().expect("index");
            let df = df.clone();
            out.push(Trial::test(
                format!("parser_cases::{section}::child_{i:02}"),
                move || {
                    let ast = dockerfile::parse_ast(&df).map_err(|e| e.to_string())?;
                    let node = ast.nodes.get(i as usize).ok_or("no such child")?;
                    if let Some(line) = c.get("instruction_line").and_then(Value::as_str) {
                        check(node.original == line, || {
                            format!("line {:?}, want {line:?}", node.original)
                        })?;
                    }
                    check_heredocs(node, &c["heredocs"], i)
                },
            ));
        }
    }

    for (i, c) in s["TestHeredocChomp"]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(named("TestHeredocChomp", i, &c), move || {
            let got = dockerfile::chomp_heredoc(c["input"].as_str().expect("input"));
            let want = c["expected"].as_str().expect("expected");
            check(got == want, || format!("{got:?}, want {want:?}"))
        }));
    }

    let helpers = &s["TestParseHeredocHelpers"];
    for (i, c) in helpers["valid"]
        .as_array()
        .expect("valid")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(
            named("TestParseHeredocHelpers::valid", i, &c),
            move || {
                let word = c["input"].as_str().expect("input");
                let h = dockerfile::internal::parse_heredoc(word)?.ok_or("not a heredoc")?;
                let want = c["expected_name"].as_str().expect("name");
                check(h.name == want, || {
                    format!("{word:?}: name {:?}, want {want:?}", h.name)
                })
            },
        ));
    }
    for (i, c) in helpers["invalid"]
        .as_array()
        .expect("invalid")
        .iter()
        .enumerate()
    {
        let word = c.as_str().expect("word").to_owned();
        out.push(Trial::test(
            format!("parser_cases::TestParseHeredocHelpers::invalid::{i:02}"),
            move || {
                check(dockerfile::internal::parse_heredoc(&word).is_err(), || {
                    format!("{word:?} accepted")
                })
            },
        ));
    }
    for (i, c) in helpers["not_heredoc"]
        .as_array()
        .expect("not_heredoc")
        .iter()
        .enumerate()
    {
        let word = c.as_str().expect("word").to_owned();
        out.push(Trial::test(
            format!("parser_cases::TestParseHeredocHelpers::not_heredoc::{i:02}"),
            move || {
                let r = dockerfile::internal::parse_heredoc(&word);
                check(r == Ok(None), || format!("{word:?}: {r:?}"))
            },
        ));
    }

    for (i, c) in s["TestHeredocsFromLine"]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(
            named("TestHeredocsFromLine", i, &c),
            move || {
                let line = c["line"].as_str().expect("line");
                let got = dockerfile::internal::heredoc_names(line)?;
                let want: Vec<String> = match &c["heredoc_names"] {
                    Value::Null => Vec::new(),
                    v => serde_json::from_value(v.clone())?,
                };
                check(got == want, || format!("{line:?}: {got:?}, want {want:?}"))
            },
        ));
    }

    for (i, c) in s["TestDirectives"]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(named("TestDirectives", i, &c), move || {
            let input = c["input"].as_str().expect("input");
            let got = dockerfile::internal::parse_directives(input).map_err(|e| e.to_string())?;
            let want: Vec<(String, String)> = c["expected"]
                .as_array()
                .expect("expected")
                .iter()
                .map(|d| {
                    (
                        d["name"].as_str().expect("n").to_owned(),
                        d["value"].as_str().expect("v").to_owned(),
                    )
                })
                .collect();
            check(got == want, || format!("{got:?}, want {want:?}"))
        }));
    }

    for section in ["TestDetectSyntax", "TestParseDirective"] {
        for (i, c) in s[section]["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .enumerate()
        {
            let c = c.clone();
            out.push(Trial::test(named(section, i, &c), move || {
                let input = match c.get("input_base64") {
                    Some(b) => String::from_utf8(decode(b.as_str().expect("b64")))?,
                    None => c["input"].as_str().expect("input").to_owned(),
                };
                let got = match c.get("key") {
                    Some(k) => dockerfile::parse_directive(k.as_str().expect("key"), &input),
                    None => dockerfile::detect_syntax(&input),
                };
                let found = c["found"].as_bool().expect("found");
                check(got.is_some() == found, || {
                    format!("{input:?}: {got:?}, found should be {found}")
                })?;
                let (reference, cmdline, line) = got
                    .map(|d| (d.reference, d.cmdline, d.line))
                    .unwrap_or_default();
                if let Some(r) = c.get("ref") {
                    check(reference == r.as_str().expect("ref"), || {
                        format!("ref {reference:?}, want {r}")
                    })?;
                }
                if let Some(r) = c.get("cmdline") {
                    check(cmdline == r.as_str().expect("cmdline"), || {
                        format!("cmdline {cmdline:?}, want {r}")
                    })?;
                }
                if let Some(l) = c.get("line") {
                    check(line as u64 == l.as_u64().expect("line"), || {
                        format!("line {line}, want {l}")
                    })?;
                }
                Ok(())
            }));
        }
    }

    let json = &s["TestJSONArraysOfStrings"];
    for (i, c) in json["valid"].as_array().expect("valid").iter().enumerate() {
        let c = c.clone();
        out.push(Trial::test(
            named("TestJSONArraysOfStrings::valid", i, &c),
            move || {
                let input = c["input"].as_str().expect("input");
                let ast =
                    dockerfile::parse_ast(&format!("CMD {input}")).map_err(|e| e.to_string())?;
                let node = &ast.nodes[0];
                let got: Vec<&str> = node.args.iter().map(|a| a.as_str()).collect();
                let want: Vec<&str> = c["expected"]
                    .as_array()
                    .expect("e")
                    .iter()
                    .map(|v| v.as_str().expect("s"))
                    .collect();
                check(node.json && got == want, || {
                    format!("{input:?}: json={} {got:?}, want {want:?}", node.json)
                })
            },
        ));
    }
    for (i, c) in json["invalid_not_string_array"]
        .as_array()
        .expect("invalid")
        .iter()
        .enumerate()
    {
        let input = c.as_str().expect("input").to_owned();
        out.push(Trial::test(
            format!("parser_cases::TestJSONArraysOfStrings::invalid::{i:02}"),
            move || match dockerfile::parse_ast(&format!("CMD {input}")) {
                Err(dockerfile::Error::JsonNotStrings { .. }) => Ok(()),
                other => Err(format!("{input:?}: {other:?}").into()),
            },
        ));
    }

    for (i, c) in s["TestParseWords"]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(named("TestParseWords", i, &c), move || {
            let input = c["input"].as_str().expect("input");
            let ast = dockerfile::parse_ast(&format!("ARG {input}")).map_err(|e| e.to_string())?;
            let got: Vec<&str> = ast.nodes[0].args.iter().map(|a| a.as_str()).collect();
            let want: Vec<&str> = c["expected"]
                .as_array()
                .expect("e")
                .iter()
                .map(|v| v.as_str().expect("s"))
                .collect();
            check(got == want, || format!("{input:?}: {got:?}, want {want:?}"))
        }));
    }

    for (i, c) in s["TestParseNameVal"]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let c = c.clone();
        out.push(Trial::test(named("TestParseNameVal", i, &c), move || {
            let line = format!(
                "{} {}",
                c["instruction"].as_str().expect("i"),
                c["input"].as_str().expect("input")
            );
            let r = dockerfile::parse_ast(&line);
            if c.get("error").is_some() {
                let err = match r {
                    Ok(a) => return Err(format!("{line:?} parsed: {}", a.dump()).into()),
                    Err(e) => e,
                };
                let want = c["error_message"].as_str().expect("msg");
                return check(err.message() == want, || {
                    format!("error {:?}, want {want:?}", err.message())
                });
            }
            let ast = r.map_err(|e| e.to_string())?;
            let got: Vec<&str> = ast.nodes[0].args.iter().map(|a| a.as_str()).collect();
            let want: Vec<&str> = c["expected_nodes"]
                .as_array()
                .expect("e")
                .iter()
                .map(|v| v.as_str().expect("s"))
                .collect();
            check(got == want, || format!("{line:?}: {got:?}, want {want:?}"))
        }));
    }

    let lines = s["TestParseIncludesLineNumbers"].clone();
    out.push(Trial::test(
        "parser_cases::TestParseIncludesLineNumbers",
        move || {
            let df = String::from_utf8(read(lines["file"].as_str().expect("file")))?;
            let ast = dockerfile::parse_ast(&df).map_err(|e| e.to_string())?;
            let first = ast.nodes.first().ok_or("no nodes")?;
            let last = ast.nodes.last().ok_or("no nodes")?;
            check(
                u64::from(first.span.start_line)
                    == lines["root"]["start_line"].as_u64().expect("l")
                    && u64::from(last.span.end_line)
                        == lines["root"]["end_line"].as_u64().expect("l"),
                || "root range".into(),
            )?;
            let want = lines["children"].as_array().expect("children");
            check(want.len() == ast.nodes.len(), || {
                format!("{} nodes", ast.nodes.len())
            })?;
            for (n, w) in ast.nodes.iter().zip(want) {
                check(
                    u64::from(n.span.start_line) == w["start_line"].as_u64().expect("l")
                        && u64::from(n.span.end_line) == w["end_line"].as_u64().expect("l"),
                    || {
                        format!(
                            "{}: lines {}-{}, want {w}",
                            n.original, n.span.start_line, n.span.end_line
                        )
                    },
                )?;
            }
            Ok(())
        },
    ));

    let warn = s["TestParseWarnsOnEmptyContinutationLine"].clone();
    out.push(Trial::test(
        "parser_cases::TestParseWarnsOnEmptyContinutationLine",
        move || {
            let ast = dockerfile::parse_ast(warn["dockerfile"].as_str().expect("df"))
                .map_err(|e| e.to_string())?;
            let n = warn["expected_warning_count"].as_u64().expect("count");
            check(ast.warnings.len() as u64 == n, || {
                format!("warnings: {:?}", ast.warnings)
            })?;
            for (w, want) in ast
                .warnings
                .iter()
                .zip(warn["expected_warnings"].as_array().expect("w"))
            {
                for sub in want["short_contains"].as_array().expect("short") {
                    let sub = sub.as_str().expect("s");
                    check(w.message.contains(sub), || {
                        format!("{:?} lacks {sub:?}", w.message)
                    })?;
                }
                if let Some(d) = want.get("detail_contains").and_then(Value::as_str) {
                    check(w.detail.contains(d), || {
                        format!("{:?} lacks {d:?}", w.detail)
                    })?;
                }
            }
            Ok(())
        },
    ));

    let scan = s["TestParseReturnsScannerErrors"].clone();
    out.push(Trial::test(
        "parser_cases::TestParseReturnsScannerErrors",
        move || {
            let rep = &scan["label_repeat"];
            let label = rep["char"]
                .as_str()
                .expect("char")
                .repeat(rep["count"].as_u64().expect("n") as usize);
            let df = scan["dockerfile_template"]
                .as_str()
                .expect("t")
                .replace("{LABEL}", &label);
            let err = match dockerfile::parse_ast(&df) {
                Ok(_) => return Err("parsed".into()),
                Err(e) => e,
            };
            let want = scan["expected_error"].as_str().expect("e");
            check(err.message() == want, || {
                format!("{:?}, want {want:?}", err.message())
            })
        },
    ));
}

/// A tiny standard base64 decoder, enough for the one case that needs it.
mod base64_free {
    pub(crate) fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= u32::from(val(c)) << (18 - 6 * i);
            }
            let b = n.to_be_bytes();
            out.extend_from_slice(&b[1..chunk.len()]);
        }
        out
    }
}
