//! `testfiles/` (dumps), `testfiles-negative/` and `extra/parse-dockerfile/`.

use libtest_mimic::{Failed, Trial};

use super::{check, corpus_dir, read, read_json};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("corpus files are UTF-8")
}

fn dirs(rel: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir().join(rel))
        .unwrap_or_else(|e| panic!("listing {rel}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn dump_equals(dockerfile: &str, expected: &str) -> Result<(), Failed> {
    let ast = dockerfile::parse_ast(dockerfile).map_err(|e| format!("parse failed: {e}"))?;
    let got = ast.dump();
    check(got == expected, || {
        format!("dump differs\n--- expected\n{expected}--- got\n{got}")
    })
}

pub(crate) fn trials(out: &mut Vec<Trial>) {
    for name in dirs("testfiles") {
        out.push(Trial::test(format!("testfiles::{name}"), move || {
            let df = text(read(&format!("testfiles/{name}/Dockerfile")));
            let want = text(read(&format!("testfiles/{name}/result")));
            dump_equals(&df, &want)
        }));
    }
    for name in dirs("testfiles-negative") {
        out.push(Trial::test(
            format!("testfiles_negative::{name}"),
            move || {
                let df = text(read(&format!("testfiles-negative/{name}/Dockerfile")));
                match dockerfile::parse_ast(&df) {
                    Ok(ast) => Err(format!("parsed, expected an error:\n{}", ast.dump()).into()),
                    Err(_) => Ok(()),
                }
            },
        ));
    }

    let expected = read_json("extra/parse-dockerfile/buildkit-expected/expected.json");
    for file in expected["files"].as_array().expect("files").clone() {
        let name = file["file"].as_str().expect("file").to_owned();
        let lines = file["lines"].as_str().expect("lines").to_owned();
        let id = format!(
            "extra::{}::{}",
            name.replace(['.', '-'], "_"),
            lines.replace('-', "_")
        );
        out.push(Trial::test(id, move || extra_case(&name, &lines, &file)));
    }
}

fn extra_case(name: &str, lines: &str, file: &serde_json::Value) -> Result<(), Failed> {
    let full = text(read(&format!("extra/parse-dockerfile/{name}")));
    let input = match lines {
        "all" => full,
        range => {
            let (a, b) = range.split_once('-').expect("a-b");
            let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
            full.split_inclusive('\n')
                .skip(a - 1)
                .take(b + 1 - a)
                .collect()
        }
    };
    let result = dockerfile::parse_ast(&input);
    if !file["parse_ok"].as_bool().expect("parse_ok") {
        let err = match result {
            Ok(_) => return Err("parsed, expected an error".into()),
            Err(e) => e,
        };
        let want = file["error"].as_str().expect("error");
        check(err.to_string().contains(want), || {
            format!("error {err} lacks {want:?}")
        })?;
        let span = err.span();
        check(
            span.start_line as u64 == file["error_start_line"].as_u64().expect("line")
                && span.end_line as u64 == file["error_end_line"].as_u64().expect("line"),
            || format!("error lines {}-{}", span.start_line, span.end_line),
        )?;
        return Ok(());
    }
    let ast = result.map_err(|e| format!("parse failed: {e}"))?;
    let want = text(read(&format!(
        "extra/parse-dockerfile/buildkit-expected/{}",
        file["result_file"].as_str().expect("result_file")
    )));
    let got = ast.dump();
    check(got == want, || {
        format!("dump differs\n--- expected\n{want}--- got\n{got}")
    })?;
    let warnings: Vec<&str> = file["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().expect("warning"))
        .collect();
    let got_w: Vec<&str> = ast.warnings.iter().map(|w| w.message.as_str()).collect();
    check(got_w == warnings, || {
        format!("warnings {got_w:?}, want {warnings:?}")
    })?;
    let children = file["children"].as_array().expect("children");
    check(children.len() == ast.nodes.len(), || {
        format!("{} nodes, want {}", ast.nodes.len(), children.len())
    })?;
    for (c, node) in children.iter().zip(&ast.nodes) {
        let i = c["child_index"].as_u64().expect("index");
        check(
            u64::from(node.span.start_line) == c["start_line"].as_u64().expect("start")
                && u64::from(node.span.end_line) == c["end_line"].as_u64().expect("end"),
            || {
                format!(
                    "child {i}: lines {}-{}, want {}-{}",
                    node.span.start_line, node.span.end_line, c["start_line"], c["end_line"]
                )
            },
        )?;
        let joined = c["joined_line"].as_str().expect("joined_line");
        check(node.original == joined, || {
            format!("child {i}: joined {:?}, want {joined:?}", node.original)
        })?;
        super::lines::check_heredocs(node, &c["heredocs"], i)?;
    }
    Ok(())
}
