//! Finding heredocs on an instruction line.
//!
//! BuildKit splits the joined line into words with its shell lexer (escape `\`,
//! quotes and escapes kept, unset variables kept as written) and treats every word
//! matching `^(\d*)<<(-?)\s*([^<]*)$` as a heredoc. This module carries the part of
//! that lexer the decision depends on, including its quirks (whitespace after `<<`
//! stays in the word; a `${...}` modifier restarts the word being built).

use super::unicode::{is_digit, is_letter, is_re_space, is_space};

/// A heredoc word found on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocWord {
    /// The name with quotes removed.
    pub name: String,
    /// The digits before `<<`, 0 when absent.
    pub file_descriptor: u64,
    /// Whether no part of the name was quoted.
    pub expand: bool,
    /// `<<-`.
    pub chomp: bool,
}

/// The heredocs named on `line`, in order. Errors come from heredoc words whose
/// name cannot be lexed (an unterminated quote).
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<HeredocWord>, (String, String)> {
    let mut lex = Lexer::new(line, true, true);
    // Lexing errors make BuildKit see no words at all.
    let words = lex.words().unwrap_or_default();
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w).map_err(|m| (w.clone(), m))? {
            out.push(h);
        }
    }
    Ok(out)
}

/// BuildKit's `ParseHeredoc` on one word: `Ok(None)` when it is not a heredoc.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<HeredocWord>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(is_re_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Go's ParseUint error is ignored: empty is 0, overflow saturates.
    let fd_text = &word[..digits];
    let file_descriptor = if fd_text.is_empty() {
        0
    } else {
        fd_text.parse().unwrap_or(u64::MAX)
    };

    let mut words = Lexer::new(rest, false, false).words()?;
    // Not a single word: not a heredoc.
    let (Some(name), true) = (words.pop(), words.is_empty()) else {
        return Ok(None);
    };
    let raw = Lexer::new(rest, true, false).words()?;
    if raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(HeredocWord {
        name,
        file_descriptor,
        expand,
        chomp,
    }))
}

/// Word accumulator of BuildKit's lexer; the buffer itself lives in the lexer
/// because nested `${...}` processing resets it.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, c: char) {
        if is_space(c) {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, c);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, c: char) {
        buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for c in s.chars() {
            self.add_char(buf, c);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

const ESCAPE: char = '\\';

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    buf: String,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, raw_quotes: bool, raw_escapes: bool) -> Self {
        // Go's text/scanner skips a byte-order mark at the start.
        let pos = if src.starts_with('\u{feff}') { 3 } else { 0 };
        Lexer {
            src,
            pos,
            raw_quotes,
            raw_escapes,
            buf: String::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// `ProcessWords`: the words of the whole input.
    fn words(&mut self) -> Result<Vec<String>, String> {
        let raw = self.raw_escapes;
        self.stop_on(None, raw)
            .map(|(_, w)| w)
            .map_err(|e| format!("failed to process {:?}: {e}", self.src))
    }

    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        self.buf.clear();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if stop == Some(c) {
                self.next();
                let mut buf = std::mem::take(&mut self.buf);
                let w = words.finish(&mut buf);
                self.buf = buf;
                return Ok((result, w));
            }
            match c {
                '$' => {
                    let tmp = self.dollar()?;
                    result.push_str(&tmp);
                    let mut buf = std::mem::take(&mut self.buf);
                    words.add_string(&mut buf, &tmp);
                    self.buf = buf;
                }
                '<' | '\'' | '"' => {
                    let tmp = match c {
                        '<' => self.possible_heredoc(),
                        '\'' => self.single_quote()?,
                        _ => self.double_quote()?,
                    };
                    result.push_str(&tmp);
                    let mut buf = std::mem::take(&mut self.buf);
                    words.add_raw_string(&mut buf, &tmp);
                    self.buf = buf;
                }
                _ => {
                    self.next();
                    let mut buf = std::mem::take(&mut self.buf);
                    let mut ch = c;
                    let mut done = false;
                    if c == ESCAPE {
                        if self.raw_escapes {
                            words.add_raw_char(&mut buf, c);
                            result.push(c);
                        }
                        match self.next() {
                            None => done = true,
                            Some(n) => {
                                ch = n;
                                words.add_raw_char(&mut buf, n);
                            }
                        }
                    } else {
                        words.add_char(&mut buf, c);
                    }
                    self.buf = buf;
                    if done {
                        break;
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let w = words.finish(&mut buf);
        self.buf = buf;
        Ok((result, w))
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut c = self.next().unwrap_or_default();
                    if c == ESCAPE {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some('"' | '$' | ESCAPE) => c = self.next().unwrap_or_default(),
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `$name`, `${...}`: every variable is unset, and unset variables are kept
    /// as written (BuildKit's `SkipUnsetEnv`).
    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let c = self.next();
        // Go's string(EOF) is U+FFFD.
        let mut chs = String::from(c.unwrap_or('\u{fffd}'));
        match c {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut op = c;
                let null_is_unset = c == Some(':');
                if null_is_unset {
                    op = self.next();
                    chs.push(op.unwrap_or('\u{fffd}'));
                }
                let raw = matches!(op, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let (word, _) = self.stop_on(Some('}'), raw).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '}'".to_owned()
                    } else {
                        e
                    }
                })?;
                Ok(format!("${{{name}{chs}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let (pattern, _) = self.stop_on(Some('/'), true).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '/' in ${}".to_owned()
                    } else {
                        e
                    }
                })?;
                let (replacement, _) = self.stop_on(Some('}'), true).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '}'".to_owned()
                    } else {
                        e
                    }
                })?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !is_letter(c) && !is_digit(c) && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect()
    }

    #[test]
    fn words_on_lines() {
        assert_eq!(names("RUN <<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<- EOF"), Vec::<String>::new());
        assert_eq!(names("RUN << -EOF"), ["-EOF"]);
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert_eq!(names("RUN '<<EOF'"), Vec::<String>::new());
        assert_eq!(names("RUN <<  EOF  > foo"), ["EOF"]);
        assert_eq!(names("RUN <<$EOF"), ["$EOF"]);
        // `${x:-y}` restarts the word being built (BuildKit's shared buffer).
        assert_eq!(names("RUN <<EOF${x:-y}"), Vec::<String>::new());
        // An unterminated quote elsewhere hides every heredoc.
        assert_eq!(names("RUN <<EOF 'x"), Vec::<String>::new());
    }

    #[test]
    fn expand_and_names() {
        let h = parse_heredoc("<<eo\\'f").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("eo'f", true));
        let h = parse_heredoc("<<'e'o\\'f").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("eo'f", false));
        let h = parse_heredoc("3<<-EOF").unwrap().unwrap();
        assert_eq!((h.file_descriptor, h.chomp), (3, true));
        assert!(parse_heredoc("<<'EOF").is_err());
        assert_eq!(parse_heredoc("<<EOF sh").unwrap(), None);
    }
}
