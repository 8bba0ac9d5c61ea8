//! Go's `strconv.Quote` and the `Dump()` format of BuildKit's parser.

use std::fmt::Write as _;

use super::split::known_keyword;
use super::unicode::{is_print, is_space, to_lower};
use crate::ast::{Ast, Node};

/// Quotes a string the way Go's `strconv.Quote` does: `\a \b \f \n \r \t \v`,
/// `\xNN` for other control bytes and DEL, `\uNNNN`/`\UNNNNNNNN` for other
/// non-printable characters (Go's `unicode.IsPrint`), printable characters as they
/// are.
pub fn goquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_goquote(&mut out, s);
    out
}

fn push_goquote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

impl Node {
    /// This instruction in BuildKit's dump format, in parentheses:
    /// `(copy ["--from=a"] "src" "dst")`.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_inner())
    }

    fn dump_inner(&self) -> String {
        let mut s = to_lower(&self.keyword.value);
        if !self.flags.is_empty() {
            s.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                push_goquote(&mut s, &f.value);
            }
            s.push(']');
        }
        if let Some(trigger) = &self.trigger {
            s.push(' ');
            s.push_str(&trigger.dump());
        } else if known_keyword(&self.keyword.value).is_none() {
            // BuildKit's parser keeps unknown instructions with one empty argument.
            s.push_str(" \"\"");
        } else {
            for a in &self.args {
                s.push(' ');
                push_goquote(&mut s, &a.value);
            }
        }
        s.trim_matches(is_space).to_owned()
    }
}

impl Ast {
    /// The whole file in BuildKit's dump format (the corpus `result` files): one
    /// parenthesised line per instruction, each ending in a newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&n.dump());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::goquote;

    #[test]
    fn quotes_like_go() {
        let cases = [
            ("", r#""""#),
            ("abc", r#""abc""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\x07\x08\x0c\n\r\t\x0b", r#""\a\b\f\n\r\t\v""#),
            ("\0\x01\x1f\x7f", r#""\x00\x01\x1f\x7f""#),
            ("é♥☃", "\"é♥☃\""),
            ("\u{a0}\u{2028}\u{feff}", r#""\u00a0\u2028\ufeff""#),
            ("\u{e000}", r#""\ue000""#),
            ("\u{f0000}", r#""\U000f0000""#),
            ("'", r#""'""#),
            ("\u{1f600}", "\"\u{1f600}\""),
            ("\u{80}", r#""\u0080""#),
        ];
        for (input, want) in cases {
            assert_eq!(goquote(input), want, "{input:?}");
        }
    }
}
