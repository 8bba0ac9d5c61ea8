//! Properties over arbitrary input: no panic, spans inside the text and on
//! character boundaries, plain arguments equal to their source text.

use libtest_mimic::{Failed, Trial};

use super::{check, corpus_dir};

/// xorshift64*: deterministic, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that matter to the parser.
const PIECES: &[&str] = &[
    "\\",
    "\\\n",
    "`",
    "\n",
    "\r\n",
    " ",
    "\t",
    "#",
    "# escape=`\n",
    "<<",
    "<<-",
    "EOF",
    "\nEOF\n",
    "'",
    "\"",
    "[",
    "]",
    ",",
    "$",
    "${",
    "}",
    ":-",
    "=",
    "--",
    "--mount=type=cache,target=/x",
    "RUN ",
    "COPY ",
    "ONBUILD ",
    "FROM ",
    "ENV ",
    "ARG ",
    "HEALTHCHECK ",
    "CMD ",
    "\u{feff}",
    "é",
    "\u{a0}",
    "\u{85}",
    "\0",
    "[\"a\"]",
    "3<<",
    "x=y",
];

fn corpus_texts() -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["testfiles", "testfiles-negative"] {
        let Ok(dir) = std::fs::read_dir(corpus_dir().join(sub)) else {
            continue;
        };
        let mut paths: Vec<_> = dir
            .filter_map(Result::ok)
            .map(|e| e.path().join("Dockerfile"))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(t) = std::fs::read_to_string(&p) {
                out.push(t);
            }
        }
    }
    out
}

fn check_span(text: &str, s: dockerfile::Span, what: &str) -> Result<(), Failed> {
    check(
        s.start <= s.end
            && s.end <= text.len()
            && text.is_char_boundary(s.start)
            && text.is_char_boundary(s.end)
            && s.start_line >= 1
            && s.start_column >= 1
            && (s.start_line, s.start_column) <= (s.end_line, s.end_column),
        || format!("bad span for {what}: {s:?} in {} bytes", text.len()),
    )?;
    // Line and column agree with the byte offset.
    let before = &text[..s.start];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    check(
        (line, col) == (s.start_line as usize, s.start_column as usize),
        || format!("{what}: span {s:?} but offset {} is {line}:{col}", s.start),
    )
}

/// Runs everything on `text` and checks the invariants.
fn exercise(text: &str) -> Result<(), Failed> {
    match dockerfile::parse_ast(text) {
        Err(e) => {
            let _ = e.to_string();
            check_span(text, e.span(), "error")?;
        }
        Ok(ast) => {
            let _ = ast.dump();
            for n in &ast.nodes {
                check_span(text, n.span, "node")?;
                check_span(text, n.keyword.span, "keyword")?;
                let mut all: Vec<&dockerfile::Node> = vec![n];
                if let Some(t) = &n.trigger {
                    all.push(t);
                }
                for node in all {
                    for a in node.args.iter().chain(&node.flags) {
                        check_span(text, a.span, "argument")?;
                    }
                }
                for h in &n.heredocs {
                    check_span(text, h.span, "heredoc")?;
                }
            }
            match dockerfile::Dockerfile::from_ast(ast) {
                Ok(df) => {
                    for i in &df.instructions {
                        check_span(text, i.span, "instruction")?;
                        if let dockerfile::Instruction::Onbuild(o) = &i.value {
                            let _ = o.trigger();
                        }
                        if let dockerfile::Instruction::Run(r) = &i.value {
                            for m in &r.mounts {
                                let _ = m.resolve(|v| Ok::<_, String>(v.replace('$', "")));
                            }
                        }
                    }
                }
                Err(e) => check_span(text, e.span(), "instruction error")?,
            }
        }
    }
    let _ = dockerfile::detect_syntax(text);
    Ok(())
}

pub(crate) fn trials(out: &mut Vec<Trial>) {
    out.push(Trial::test("robustness::random_bytes", || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() >> 32) as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            exercise(&text).map_err(|e| format!("{text:?}: {e:?}"))?;
            let _ = dockerfile::parse_bytes(&bytes);
        }
        Ok(())
    }));
    out.push(Trial::test("robustness::random_fragments", || {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for _ in 0..5000 {
            let n = rng.below(24);
            let text: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            exercise(&text).map_err(|e| format!("{text:?}: {e:?}"))?;
        }
        Ok(())
    }));
    out.push(Trial::test("robustness::mutated_corpus", || {
        let texts = corpus_texts();
        check(!texts.is_empty(), || "no corpus texts".into())?;
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for round in 0..3000 {
            let mut t = texts[round % texts.len()].clone();
            for _ in 0..1 + rng.below(4) {
                let mut at = rng.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                if rng.below(3) == 0 && at < t.len() {
                    let mut end = at + 1 + rng.below(8);
                    end = end.min(t.len());
                    while !t.is_char_boundary(end) {
                        end += 1;
                    }
                    t.replace_range(at..end, "");
                } else {
                    t.insert_str(at, PIECES[rng.below(PIECES.len())]);
                }
            }
            exercise(&t).map_err(|e| format!("{t:?}: {e:?}"))?;
        }
        Ok(())
    }));
    out.push(Trial::test("robustness::deep_and_long", || {
        for text in [
            format!("RUN {}", "[".repeat(100_000)),
            format!("CMD [{}\"a\"{}]", "[".repeat(20_000), "]".repeat(20_000)),
            format!("FROM a\nLABEL x={}", "a".repeat(65_536)),
            format!("FROM a\nRUN x \\\n{}", " \\\n".repeat(50_000)),
            format!("RUN <<EOF\n{}", "line\n".repeat(10_000)),
        ] {
            exercise(&text)?;
        }
        Ok(())
    }));
    out.push(Trial::test(
        "robustness::single_line_arguments_are_source_text",
        || {
            for text in corpus_texts() {
                let Ok(ast) = dockerfile::parse_ast(&text) else {
                    continue;
                };
                for n in &ast.nodes {
                    if n.json {
                        continue;
                    }
                    for a in &n.args {
                        let s = a.span;
                        if s.start_line != s.end_line || s.start == s.end {
                            continue;
                        }
                        let src = &text[s.range()];
                        check(src == a.value, || {
                            format!("argument {:?} has source {src:?}", a.value)
                        })?;
                    }
                }
            }
            Ok(())
        },
    ));
}
