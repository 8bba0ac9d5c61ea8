//! Shell-word expansion as BuildKit's `frontend/dockerfile/shell` lexer does it.
//!
//! BuildKit applies this word processor to most Dockerfile arguments (`ARG`/`ENV`/`LABEL`
//! values, `COPY`/`ADD` paths, `WORKDIR`, `USER`, `EXPOSE`, `FROM`, flag values...). It
//! removes quotes and escapes, expands `$VAR` and `${VAR...}` (with the `-`, `+`, `?`, `#`,
//! `%` and `/` modifiers, each optionally preceded by `:` where the shell allows it), and
//! optionally splits the result into words. It never runs anything: `$(...)` and backquotes
//! are plain text.
//!
//! Every lookup is recorded, so callers learn which variables a word used and which it
//! referenced without them being set (BuildKit uses that for the "unused build arg" warning
//! and for lint rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

mod pattern;

use pattern::ShellPattern;

/// Something variables can be looked up in while expanding a word.
///
/// A variable that is set to the empty string is *set*: `lookup` returns `Some("")`.
pub trait VarLookup {
    /// The value of `name`, or `None` when it is not set.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl VarLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> VarLookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<T: VarLookup + ?Sized> VarLookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// Builds a variable map from `KEY=VALUE` entries, as image configs and BuildKit's env
/// lists write them: split at the first `=`, an entry without `=` sets the key to the empty
/// string, a later entry for the same key wins.
pub fn vars_from_env_list<I, S>(list: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    list.into_iter()
        .map(|e| {
            let e = e.as_ref();
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// No variables at all (every lookup misses).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVars;

impl VarLookup for NoVars {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// The word processor, configured with the escape character and BuildKit's lexer options.
///
/// The defaults (`Lexer::new('\\')` or `Lexer::default()`) are what BuildKit uses for
/// ordinary Dockerfile expansion; the options exist for special callers (BuildKit's
/// heredoc detection keeps quotes, for example).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

/// The result of processing one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Expansion {
    /// The word after quote removal and expansion (BuildKit's `ProcessWord`).
    pub value: String,
    /// The same text split into words (BuildKit's `ProcessWords`): text produced by an
    /// unquoted expansion is split on whitespace, quoted text is not, empty words are
    /// dropped.
    pub words: Vec<String>,
    /// Variables that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded; the word itself is in [`ExpandError::word`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// `${` without its closing `}`.
    MissingBrace,
    /// `${}`, `${:...}`, `${{...}`.
    BadSubstitution,
    /// `${VAR/pattern` without the `/` that starts the replacement.
    MissingSlash,
    /// A modifier BuildKit does not support, such as `${VAR:=x}` or `${VAR:#x}`.
    UnsupportedModifier(String),
    /// A quote or a `${...}` that is never closed.
    Unterminated(char),
    /// `${VAR?message}` / `${VAR:?message}` with the variable unset (or empty).
    Required {
        /// The variable.
        name: String,
        /// The (expanded) message, or BuildKit's default one.
        message: String,
    },
    /// A bad `#`/`%`/`/` pattern, such as an escape other than `\*`, `\?`, `\\`.
    InvalidPattern {
        /// The pattern as written (after expansion).
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ExpandErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingBrace => f.write_str("syntax error: missing '}'"),
            Self::BadSubstitution => f.write_str("syntax error: bad substitution"),
            Self::MissingSlash => f.write_str("syntax error: missing '/' in ${}"),
            Self::UnsupportedModifier(m) => write!(f, "unsupported modifier ({m}) in substitution"),
            Self::Unterminated('\'') => {
                f.write_str("unexpected end of statement while looking for matching single-quote")
            }
            Self::Unterminated('"') => {
                f.write_str("unexpected end of statement while looking for matching double-quote")
            }
            Self::Unterminated(c) => {
                write!(
                    f,
                    "unexpected end of statement while looking for matching {c}"
                )
            }
            Self::Required { name, message } => write!(f, "{name}: {message}"),
            Self::InvalidPattern { pattern, reason } => {
                write!(f, "invalid pattern ({pattern}) in substitution: {reason}")
            }
        }
    }
}

/// A word that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word as given.
    pub word: String,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

impl Lexer {
    /// A lexer with BuildKit's default options and the given escape character (`\` or the
    /// backquote chosen by `# escape=`).
    #[must_use]
    pub const fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// The escape character.
    #[must_use]
    pub const fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the result (BuildKit's `RawQuotes`).
    #[must_use]
    pub const fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape characters in the result (BuildKit's `RawEscapes`).
    #[must_use]
    pub const fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Leave references to unset variables as written (BuildKit's `SkipUnsetEnv`).
    #[must_use]
    pub const fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// Treat quotes as ordinary characters (BuildKit's `SkipProcessQuotes`).
    #[must_use]
    pub const fn skip_process_quotes(mut self, yes: bool) -> Self {
        self.skip_process_quotes = yes;
        self
    }

    /// Processes `word`: the expanded string, its words, and the variables it looked up.
    ///
    /// # Errors
    /// Unterminated quotes or braces, unsupported modifiers, bad patterns, and `${V?msg}`
    /// with `V` unset.
    pub fn process<E: VarLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Expansion, ExpandError> {
        let mut state = State::new(self, word, env);
        match state.stop_on(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Expansion {
                value,
                words,
                matched: state.matched,
                unmatched: state.unmatched,
            }),
            Err(kind) => Err(ExpandError {
                word: word.to_owned(),
                kind,
            }),
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    ///
    /// # Errors
    /// As [`Lexer::process`].
    pub fn process_word<E: VarLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.process(word, env).map(|e| e.value)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    ///
    /// # Errors
    /// As [`Lexer::process`].
    pub fn process_words<E: VarLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|e| e.words)
    }
}

/// Splits the output of one processing level into words.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct State<'a, E: ?Sized> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a E,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, ExpandErrorKind>;

impl<'a, E: VarLookup + ?Sized> State<'a, E> {
    fn new(lex: &'a Lexer, word: &str, env: &'a E) -> Self {
        // Go's text/scanner drops a byte-order mark at the very start.
        let word = word.strip_prefix('\u{feff}').unwrap_or(word);
        Self {
            lex,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: lex.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_owned());
                Some(v.to_owned())
            }
            None => {
                self.unmatched.insert(name.to_owned());
                None
            }
        }
    }

    /// Processes up to `stop` (consumed) or the end of the word when `stop` is `None`.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' | '"' if !self.lex.skip_process_quotes => {
                    let tmp = if ch == '\'' {
                        self.single_quote()?
                    } else {
                        self.double_quote()?
                    };
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character escapes anything but the end of the word.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(ExpandErrorKind::Unterminated(c)),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Step<String> {
        // Everything up to the next single quote is literal; it cannot be escaped.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::Unterminated('\'')),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Step<String> {
        // Literal except `$` expansions; the escape character only escapes `"`, `$` and
        // itself and is kept before anything else.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::Unterminated('"')),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the very end is dropped (the quote is then
                            // unterminated anyway).
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        // Whitespace between `<<` and the heredoc word stays attached to the word.
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                // A positional parameter: the whole digit run is its name.
                while let Some(d) = self.peek().filter(|&d| is_go_digit(d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn dollar(&mut self) -> Step<String> {
        self.next(); // the `$`
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the `{`
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        // Go's scanner yields EOF (printed as U+FFFD) past the end.
        let mut ch = self.next();
        let mut modifier = String::from(ch.unwrap_or('\u{fffd}'));
        let mut null_is_unset = false;
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                if ch == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    modifier.push(ch.unwrap_or('\u{fffd}'));
                }
                let pattern_like = matches!(ch, Some('#' | '%'));
                if null_is_unset && pattern_like {
                    return Err(ExpandErrorKind::UnsupportedModifier(modifier));
                }
                let word = self.modifier_word('}', pattern_like, ExpandErrorKind::MissingBrace)?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    Some('-') => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if empty { String::new() } else { word }),
                    Some('?') => match value {
                        Some(v) if !empty => Ok(v),
                        _ => {
                            let message = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                "is not allowed to be empty".to_owned()
                            };
                            Err(ExpandErrorKind::Required { name, message })
                        }
                    },
                    Some(c @ ('#' | '%')) => {
                        // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                        let (word, greedy) = match word.strip_prefix(c) {
                            Some(rest) => (rest.to_owned(), true),
                            None => (word, false),
                        };
                        let value = value.unwrap_or_default();
                        if c == '#' {
                            trim_prefix(&word, &value, greedy)
                        } else {
                            trim_suffix(&word, &value, greedy)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = self.modifier_word('/', true, ExpandErrorKind::MissingSlash)?;
                let replacement = self.modifier_word('}', true, ExpandErrorKind::MissingBrace)?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let compiled = ShellPattern::compile(&pattern, true)
                    .map_err(|reason| invalid_pattern(&pattern, reason))?;
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                let replacement: Vec<char> = replacement.chars().collect();
                Ok(if replace_all {
                    compiled.replace_all(&value, &replacement)
                } else {
                    compiled.replace_first(&value, &replacement)
                })
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
        }
    }

    /// The word of a modifier, up to `stop`; running off the end gives `at_end`.
    fn modifier_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end: ExpandErrorKind,
    ) -> Step<String> {
        match self.stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(at_end),
            Err(e) => Err(e),
        }
    }
}

fn invalid_pattern(pattern: &str, reason: String) -> ExpandErrorKind {
    ExpandErrorKind::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    }
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let compiled = ShellPattern::compile(pattern, greedy)
        .map_err(|reason| invalid_pattern(pattern, reason))?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match compiled.match_at(&chars, 0) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_owned(),
    })
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    // The shortest or longest suffix match is found as a prefix match of the reversed
    // pattern on the reversed value, as BuildKit does.
    let reversed_pattern = pattern::reverse_pattern(pattern);
    let reversed_value: String = value.chars().rev().collect();
    let compiled = ShellPattern::compile(&reversed_pattern, greedy)
        .map_err(|reason| invalid_pattern(&reversed_pattern, reason))?;
    let chars: Vec<char> = reversed_value.chars().collect();
    Ok(match compiled.match_at(&chars, 0) {
        Some(end) => chars[end..].iter().rev().collect(),
        None => value.to_owned(),
    })
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
    )
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    use unicode_general_category::{GeneralCategory, get_general_category};
    get_general_category(c) == GeneralCategory::DecimalNumber
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let e = env(&[("A", "x")]);
        assert_eq!(lex.process_word(r"C:\dir\$A", &e).unwrap(), r"C:\dir\x");
        assert_eq!(lex.process_word("`$A", &e).unwrap(), "$A");
        assert_eq!(lex.process_word("\"`\"q\"", &e).unwrap(), "\"q");
    }

    #[test]
    fn words_split_only_unquoted_expansions() {
        let e = env(&[("S", "a  b")]);
        let lex = Lexer::default();
        assert_eq!(
            lex.process_words("x$S \"$S\"", &e).unwrap(),
            ["xa", "b", "a  b"]
        );
        // A modifier inside a word keeps the text before it in the same word.
        assert_eq!(lex.process_words("80/${P:-tcp}", &e).unwrap(), ["80/tcp"]);
    }

    #[test]
    fn matches_are_recorded() {
        let e = env(&[("A", "1")]);
        let out = Lexer::default().process("$A ${B:-$C}", &e).unwrap();
        assert_eq!(out.value, "1 ");
        assert_eq!(out.matched.into_iter().collect::<Vec<_>>(), ["A"]);
        assert_eq!(out.unmatched.into_iter().collect::<Vec<_>>(), ["B", "C"]);
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let lex = Lexer::default().skip_unset_env(true);
        let e = env(&[("A", "1")]);
        assert_eq!(
            lex.process_word("$A $B ${C} ${D:-x} ${E/a/b}", &e).unwrap(),
            "1 $B ${C} ${D:-x} ${E/a/b}"
        );
    }

    #[test]
    fn raw_quotes_keep_quotes() {
        let lex = Lexer::default().raw_quotes(true);
        assert_eq!(lex.process_word("'a' \"b\"", &NoVars).unwrap(), "'a' \"b\"");
    }

    #[test]
    fn replace_all_expands_group_zero_like_go() {
        // Go's ReplaceAllString treats `$0` in the replacement as the match.
        let e = env(&[("F", "abcabc"), ("R", "<$0>"), ("S", "$$x${9}$")]);
        let lex = Lexer::default();
        assert_eq!(lex.process_word("${F//b/$R}", &e).unwrap(), "a<b>ca<b>c");
        assert_eq!(lex.process_word("${F/b/$R}", &e).unwrap(), "a<$0>cabc");
        assert_eq!(lex.process_word("${F//b/$S}", &e).unwrap(), "a$x$ca$x$c");
    }

    #[test]
    fn patterns_do_not_cross_newlines_with_wildcards() {
        // Go's `.` does not match a newline.
        let e = env(&[("F", "a\nb")]);
        assert_eq!(
            Lexer::default().process_word("${F#*b}", &e).unwrap(),
            "a\nb"
        );
        assert_eq!(
            Lexer::default().process_word("${F#a?}", &e).unwrap(),
            "a\nb"
        );
    }

    #[test]
    fn error_messages_name_the_word() {
        let err = Lexer::default().process_word("${x", &NoVars).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"failed to process "${x": unsupported modifier (�) in substitution"#
        );
        let err = Lexer::default()
            .process_word("${x:?}", &NoVars)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"failed to process "${x:?}": x: is not allowed to be unset"#
        );
    }
}
