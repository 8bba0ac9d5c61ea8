//! The shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`.
//!
//! BuildKit turns such a pattern into a Go regular expression (`*` -> `.*` or `.*?`,
//! `?` -> `.`, everything else literal) and uses Go's leftmost-first matching. This module
//! matches the same language directly: a backtracking search in priority order (which is
//! what leftmost-first means), memoised so that it stays polynomial.

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `*`: any run of characters other than a newline (Go's `.` excludes `\n`).
    Star,
    /// `?`: one character other than a newline.
    Any,
    /// A literal character.
    Lit(char),
}

/// A compiled shell pattern.
#[derive(Debug, Clone)]
pub(super) struct ShellPattern {
    toks: Vec<Tok>,
    /// `*` prefers the longest run (`##`, `%%`, `/`) or the shortest (`#`, `%`).
    greedy: bool,
}

impl ShellPattern {
    /// Compiles `pattern`. `\*`, `\?` and `\\` are literal characters, `\}` and `\/` drop
    /// the backslash, any other escape is an error (as in BuildKit).
    pub(super) fn compile(pattern: &str, greedy: bool) -> Result<Self, String> {
        // Go's text/scanner drops a byte-order mark at the very start.
        let pattern = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        let mut toks = Vec::new();
        let mut it = pattern.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match it.peek() {
                    Some('}' | '/') => {}
                    Some(&e @ ('*' | '?' | '\\')) => {
                        it.next();
                        toks.push(Tok::Lit(e));
                    }
                    Some(&e) => return Err(format!("invalid escape '\\{e}'")),
                    None => return Err("invalid escape '\\'".to_owned()),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Self { toks, greedy })
    }

    /// The end of the preferred match starting exactly at `start`, if any.
    pub(super) fn match_at(&self, text: &[char], start: usize) -> Option<usize> {
        let mut memo = Memo::new(self.toks.len(), text.len());
        self.walk(text, 0, start, &mut memo)
    }

    /// The leftmost match at or after `from`, as (start, end).
    fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        let mut memo = Memo::new(self.toks.len(), text.len());
        (from..=text.len()).find_map(|s| self.walk(text, 0, s, &mut memo).map(|e| (s, e)))
    }

    fn walk(&self, text: &[char], tok: usize, pos: usize, memo: &mut Memo) -> Option<usize> {
        if let Some(known) = memo.get(tok, pos) {
            return known;
        }
        let out = match self.toks.get(tok) {
            None => Some(pos),
            Some(Tok::Lit(c)) => (text.get(pos) == Some(c))
                .then(|| self.walk(text, tok + 1, pos + 1, memo))
                .flatten(),
            Some(Tok::Any) => text
                .get(pos)
                .is_some_and(|&c| c != '\n')
                .then(|| self.walk(text, tok + 1, pos + 1, memo))
                .flatten(),
            Some(Tok::Star) => {
                let run = text[pos..].iter().take_while(|&&c| c != '\n').count();
                if self.greedy {
                    (0..=run)
                        .rev()
                        .find_map(|k| self.walk(text, tok + 1, pos + k, memo))
                } else {
                    (0..=run).find_map(|k| self.walk(text, tok + 1, pos + k, memo))
                }
            }
        };
        memo.set(tok, pos, out);
        out
    }

    /// `${V/p/r}`: replaces the leftmost match, with `replacement` taken literally.
    pub(super) fn replace_first(&self, text: &[char], replacement: &[char]) -> String {
        match self.find(text, 0) {
            Some((s, e)) => text[..s]
                .iter()
                .chain(replacement)
                .chain(&text[e..])
                .collect(),
            None => text.iter().collect(),
        }
    }

    /// `${V//p/r}`: Go's `Regexp.ReplaceAllString`, including its `$` expansion in the
    /// replacement and its rule for empty matches.
    pub(super) fn replace_all(&self, text: &[char], replacement: &[char]) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((s, e)) = self.find(text, search) else {
                break;
            };
            out.extend(&text[last_end..s]);
            // No replacement for an empty match right after the previous match.
            if e > last_end || s == 0 {
                expand_template(&mut out, replacement, &text[s..e]);
            }
            last_end = e;
            search = if e > search { e } else { search + 1 };
        }
        out.extend(&text[last_end..]);
        out
    }
}

/// Go's `Regexp.Expand` for a regexp whose only group is the whole match (group 0).
fn expand_template(out: &mut String, template: &[char], whole: &[char]) {
    let mut rest = template;
    while let Some(i) = rest.iter().position(|&c| c == '$') {
        out.extend(&rest[..i]);
        rest = &rest[i + 1..];
        if rest.first() == Some(&'$') {
            out.push('$');
            rest = &rest[1..];
            continue;
        }
        let Some((name, after)) = extract_name(rest) else {
            // Malformed reference: the `$` is kept as text.
            out.push('$');
            continue;
        };
        rest = after;
        // Only group 0 exists; named or numbered references to anything else expand
        // to nothing. A number with a leading zero is a (missing) name, as in Go.
        let is_zero = name.len() == 1 && name[0] == '0';
        if is_zero {
            out.extend(whole);
        }
    }
    out.extend(rest);
}

/// Go's `extract`: a `name` or `{name}` made of letters, digits and `_`.
fn extract_name(s: &[char]) -> Option<(&[char], &[char])> {
    let (brace, body) = match s.first() {
        Some('{') => (true, &s[1..]),
        _ => (false, s),
    };
    let n = body
        .iter()
        .take_while(|&&c| super::is_go_letter(c) || super::is_go_digit(c) || c == '_')
        .count();
    if n == 0 {
        return None;
    }
    let name = &body[..n];
    if brace {
        if body.get(n) != Some(&'}') {
            return None;
        }
        return Some((name, &body[n + 1..]));
    }
    Some((name, &body[n..]))
}

/// Reverses a pattern without reversing its escapes (`a\*c` -> `c\*a`), as BuildKit does
/// before matching `%`/`%%` against the reversed value.
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            units.push(&chars[i..i + 2]);
            i += 2;
        } else {
            units.push(&chars[i..=i]);
            i += 1;
        }
    }
    units.iter().rev().flat_map(|u| u.iter()).collect()
}

/// Memo of `walk` results per (token, position).
struct Memo {
    width: usize,
    cells: Vec<Option<Option<usize>>>,
}

impl Memo {
    fn new(toks: usize, len: usize) -> Self {
        let width = len + 1;
        Self {
            width,
            cells: vec![None; (toks + 1) * width],
        }
    }

    fn get(&self, tok: usize, pos: usize) -> Option<Option<usize>> {
        self.cells.get(tok * self.width + pos).copied().flatten()
    }

    fn set(&mut self, tok: usize, pos: usize, v: Option<usize>) {
        if let Some(cell) = self.cells.get_mut(tok * self.width + pos) {
            *cell = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn lazy_and_greedy_prefixes() {
        let p = ShellPattern::compile("*x*y", false).unwrap();
        assert_eq!(p.match_at(&chars("xxyy"), 0), Some(3));
        let p = ShellPattern::compile("*x*y", true).unwrap();
        assert_eq!(p.match_at(&chars("xxyy"), 0), Some(4));
    }

    #[test]
    fn escapes() {
        assert!(ShellPattern::compile("\\x", true).is_err());
        assert!(ShellPattern::compile("\\", true).is_err());
        assert!(ShellPattern::compile("\\\\\\", true).is_err());
        let p = ShellPattern::compile("\\}\\/\\*", true).unwrap();
        assert_eq!(p.toks, [Tok::Lit('}'), Tok::Lit('/'), Tok::Lit('*')]);
    }

    #[test]
    fn reverse_keeps_escapes() {
        // The cases of BuildKit's TestReversePattern.
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern("\\\\b"), "b\\\\");
    }

    #[test]
    fn replace_all_with_empty_matches() {
        let p = ShellPattern::compile("", true).unwrap();
        assert_eq!(p.replace_all(&chars("ab"), &chars("-")), "-a-b-");
        let p = ShellPattern::compile("*", true).unwrap();
        // Go: "-" for the whole string, then no replacement for the empty match at the end.
        assert_eq!(p.replace_all(&chars("ab"), &chars("-")), "-");
    }

    #[test]
    fn polynomial_on_many_stars() {
        let p = ShellPattern::compile("*a*a*a*a*a*a*a*a*b", true).unwrap();
        let text = chars(&"a".repeat(400));
        assert_eq!(p.match_at(&text, 0), None);
    }
}
