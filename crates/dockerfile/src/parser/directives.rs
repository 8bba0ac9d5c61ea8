//! Parser directives (`# syntax=`, `# escape=`, `# check=`) and BuildKit's
//! `DetectSyntax`/`ParseDirective`.

use super::unicode::{is_re_space, is_space};

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// BuildKit's directive line parser: directives are recognised until the first
/// line that is not one.
pub(crate) struct DirectiveParser {
    comment: &'static str,
    done: bool,
    seen: Vec<String>,
}

/// A directive line that names a directive already seen.
#[derive(Debug)]
pub(crate) struct Duplicate(pub(crate) String);

impl DirectiveParser {
    pub(crate) fn new(comment: &'static str) -> Self {
        DirectiveParser {
            comment,
            done: false,
            seen: Vec::new(),
        }
    }

    /// Reads one line: `Ok(Some((name, value)))` for a directive.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, Duplicate> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix(self.comment) else {
            self.done = true;
            return Ok(None);
        };
        let Some((key, value)) = match_directive(rest.trim_start_matches(is_space)) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !KNOWN.contains(&key.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(Duplicate(key));
        }
        self.seen.push(key.clone());
        Ok(Some((key, value.to_owned())))
    }
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` with Go's leftmost-first semantics.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let key_len = b.iter().take_while(|c| c.is_ascii_alphanumeric()).count();
    let key = &s[..key_len];
    let rest = s[key_len..].trim_start_matches(is_re_space);
    let tail = rest.strip_prefix('=')?;
    if tail.is_empty() || tail.contains('\n') {
        return None;
    }
    let value = tail.trim_matches(is_re_space);
    if !value.is_empty() {
        return Some((key, value));
    }
    // Only whitespace: the lazy group still takes one character, the last.
    let last = tail.char_indices().last()?.0;
    Some((key, &tail[last..]))
}

/// A directive found by [`detect_syntax`] or [`parse_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveValue {
    /// The value up to the first space (for `syntax`, the frontend image).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// The line of the directive as BuildKit counts it (1-based for comment
    /// directives; for the JSON form 0, or 1 after a shebang line).
    pub line: usize,
}

/// BuildKit's `DetectSyntax`: the `syntax` directive from `# syntax=`, then
/// `// syntax=`, then a JSON object `{"syntax": ...}` covering the whole text. A
/// leading byte-order mark and `#!` shebang line are skipped.
pub fn detect_syntax(text: &str) -> Option<DirectiveValue> {
    find_directive("syntax", text, true)
}

/// BuildKit's `ParseDirective`: like [`detect_syntax`] for any key, `#` form only.
pub fn parse_directive(key: &str, text: &str) -> Option<DirectiveValue> {
    find_directive(key, text, false)
}

fn find_directive(key: &str, text: &str, any_format: bool) -> Option<DirectiveValue> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (text, line0) = if first.starts_with("#!") {
        (rest, 1)
    } else {
        (text, 0)
    };
    if let Some(v) = from_comments(key, text, "#", line0) {
        return Some(v);
    }
    if !any_format {
        return None;
    }
    if let Some(v) = from_comments(key, text, "//", line0) {
        return Some(v);
    }
    let v = super::json::object_string_member(text, key)?;
    Some(DirectiveValue {
        reference: v.clone(),
        cmdline: v,
        line: line0,
    })
}

fn from_comments(
    key: &str,
    text: &str,
    comment: &'static str,
    line0: usize,
) -> Option<DirectiveValue> {
    let mut p = DirectiveParser::new(comment);
    let mut found = Vec::new();
    let mut lines = text.split('\n').peekable();
    let mut n = line0;
    while let Some(l) = lines.next() {
        if l.is_empty() && lines.peek().is_none() {
            break;
        }
        // bufio.Scanner stops at a line longer than its buffer.
        if l.len() > super::MAX_LINE {
            break;
        }
        if p.done {
            break;
        }
        n += 1;
        let l = l.strip_suffix('\r').unwrap_or(l);
        match p.parse_line(l) {
            Ok(Some(d)) => found.push((d, n)),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    let ((_, value), line) = found.into_iter().find(|((name, _), _)| name == key)?;
    let reference = value.split(' ').next().unwrap_or_default().to_owned();
    Some(DirectiveValue {
        reference,
        cmdline: value,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("syntax = a b  "), Some(("syntax", "a b")));
        assert_eq!(match_directive("escape= "), Some(("escape", " ")));
        assert_eq!(match_directive("escape="), None);
        assert_eq!(match_directive("1x=y"), None);
        assert_eq!(match_directive("x-y=z"), None);
    }
}
