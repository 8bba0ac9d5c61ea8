//! Fuzz target: the Dockerfile parser must not panic on any input, and every span
//! it reports must be inside the input, on character boundaries.
#![no_main]

use dockerfile::{Dockerfile, Instruction, Span};
use libfuzzer_sys::fuzz_target;

fn check(text: &str, s: Span) {
    assert!(
        s.start <= s.end && s.end <= text.len(),
        "{s:?} outside {} bytes",
        text.len()
    );
    assert!(
        text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
        "{s:?}"
    );
    assert!(s.start_line >= 1 && s.start_column >= 1, "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let _ = dockerfile::parse_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = dockerfile::detect_syntax(text);
    match dockerfile::parse_ast(text) {
        Err(e) => check(text, e.span()),
        Ok(ast) => {
            let _ = ast.dump();
            for n in &ast.nodes {
                check(text, n.span);
                for a in n.args.iter().chain(&n.flags) {
                    check(text, a.span);
                }
                for h in &n.heredocs {
                    check(text, h.span);
                }
            }
            match Dockerfile::from_ast(ast) {
                Err(e) => check(text, e.span()),
                Ok(df) => {
                    for i in &df.instructions {
                        check(text, i.span);
                        match &i.value {
                            Instruction::Onbuild(o) => {
                                let _ = o.trigger();
                            }
                            Instruction::Run(r) => {
                                for m in &r.mounts {
                                    let _ = m.resolve(|v| Ok::<_, String>(v.to_owned()));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
});
