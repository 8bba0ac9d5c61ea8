//! `.dockerignore` with the semantics of `moby/patternmatcher` (which BuildKit uses):
//! reading the file, the pattern language, the matcher functions, and the decisions a
//! context walk makes (`tonistiigi/fsutil`'s filter), without doing any I/O here.
//!
//! Patterns are anchored at the context root and use Go's `filepath.Match` syntax (`*`
//! and `?` never cross `/`, `[...]` classes, `\` escapes) plus `**`, which matches any
//! number of path components. A pattern that matches a directory also matches everything
//! below it; `!pattern` re-includes what earlier patterns excluded; the last pattern that
//! matches a path decides.

pub(crate) mod gopath;
mod regex;
mod walk;

pub use walk::{
    ContextFilter, FilterWalk, LinkResolver, WalkDecision, contains_wildcards, follow_links,
};

/// An error from reading patterns or matching with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// A pattern is malformed (Go's `filepath.ErrBadPattern`).
    #[error("syntax error in pattern: {pattern:?}")]
    BadPattern {
        /// The pattern, as cleaned by the matcher.
        pattern: String,
    },
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    /// A line of the ignore file is longer than Go's line scanner accepts (64 KiB).
    #[error(".dockerignore line {line}: line too long")]
    LineTooLong {
        /// The 1-based line number.
        line: usize,
    },
    /// Inconsistent parent match state passed to
    /// [`PatternMatcher::matches_using_parent_results`].
    #[error("wrong number of values in parentMatched")]
    WrongParentState,
}

/// Reads the text of a `.dockerignore` file into patterns, as `ignorefile.ReadAll` does:
/// a UTF-8 BOM is stripped, lines whose first character is `#` are comments, lines are
/// trimmed and empty ones skipped, a leading `!` is kept aside while the rest is trimmed,
/// cleaned (`a//b/../c` -> `a/c`) and loses one leading `/`.
///
/// A lone `!` survives reading; [`PatternMatcher::new`] rejects it.
///
/// # Errors
/// [`IgnoreError::LineTooLong`] for a line of 64 KiB or more.
pub fn read_ignore_file(text: &str) -> Result<Vec<String>, IgnoreError> {
    // Go's bufio.Scanner: lines end at `\n`, a `\r` before it is dropped, and a line (with
    // its newline) must fit its 64 KiB buffer.
    const MAX_LINE: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut rest = text;
    let mut number = 0;
    while !rest.is_empty() {
        let (line, after, had_newline) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], true),
            None => (rest, "", false),
        };
        if line.len() + usize::from(had_newline) > MAX_LINE
            || (!had_newline && line.len() >= MAX_LINE)
        {
            return Err(IgnoreError::LineTooLong { line: number + 1 });
        }
        rest = after;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if number == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        number += 1;
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = gopath::clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(cleaned);
    }
    Ok(out)
}

/// How a pattern is matched (patternmatcher's classification of the cleaned pattern).
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard: the path must equal the pattern.
    Exact,
    /// `dir/**`: the path must start with `dir/`.
    Prefix,
    /// `**/x` or `**x` with no other wildcard: the path must end with the rest.
    Suffix,
    /// Anything else: the translated regular expression.
    Regex(regex::Regex),
}

/// One pattern of a [`PatternMatcher`].
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    dirs: usize,
    exclusion: bool,
    /// `None` when the translated expression does not compile: Go reports that only when
    /// the pattern is used.
    kind: Option<Kind>,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is an exception (`!pattern`), which re-includes paths.
    #[must_use]
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn compile(cleaned: &str) -> Option<Kind> {
        let chars: Vec<char> = cleaned
            .strip_prefix('\u{feff}')
            .unwrap_or(cleaned)
            .chars()
            .collect();
        let mut re = String::from("^");
        let mut kind = 0u8; // 0 exact, 1 prefix, 2 suffix, 3 regex
        let mut i = 0;
        let mut iteration = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == '*' {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if kind == 0 {
                            kind = 1;
                        } else {
                            re.push_str(".*");
                            kind = 3;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        kind = 3;
                    }
                    if iteration == 0 {
                        kind = 2;
                    }
                } else {
                    re.push_str("[^/]*");
                    kind = 3;
                }
            } else if ch == '?' {
                re.push_str("[^/]");
                kind = 3;
            } else if ".+()|{}$".contains(ch) {
                re.push('\\');
                re.push(ch);
            } else if ch == '\\' {
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push('\\');
                    re.push(next);
                    kind = 3;
                } else {
                    re.push('\\');
                }
            } else if ch == '[' || ch == ']' {
                re.push(ch);
                kind = 3;
            } else {
                re.push(ch);
            }
            iteration += 1;
        }
        Some(match kind {
            0 => Kind::Exact,
            1 => Kind::Prefix,
            2 => Kind::Suffix,
            _ => {
                re.push('$');
                Kind::Regex(regex::Regex::new(&re).ok()?)
            }
        })
    }

    fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let bad = || IgnoreError::BadPattern {
            pattern: self.cleaned.clone(),
        };
        Ok(match self.kind.as_ref().ok_or_else(bad)? {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Regex(re) => re.is_match(path),
        })
    }

    /// Whether the pattern matches `path` or one of its ancestors (errors on ancestors are
    /// ignored, as upstream does).
    fn matches_self_or_ancestor(&self, path: &str) -> Result<bool, IgnoreError> {
        if self.matches(path)? {
            return Ok(true);
        }
        let parent = gopath::dir(path);
        if parent == "." {
            return Ok(false);
        }
        let mut prefix_end = 0;
        for component in parent.split('/') {
            prefix_end += component.len();
            if self.matches(&parent[..prefix_end]).unwrap_or(false) {
                return Ok(true);
            }
            prefix_end += 1;
        }
        Ok(false)
    }
}

/// Per-pattern match results for a directory, handed down to its children by
/// [`PatternMatcher::matches_using_parent_results`] (patternmatcher's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled list of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles `patterns` (as given, e.g. by [`read_ignore_file`]): each is trimmed and
    /// dropped when empty, cleaned, a leading `!` makes it an exception, and its syntax is
    /// checked with Go's `filepath.Match` rules.
    ///
    /// # Errors
    /// [`IgnoreError::LoneExclamation`] for `!`, [`IgnoreError::BadPattern`] for bad syntax.
    pub fn new<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = gopath::clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(IgnoreError::LoneExclamation);
                }
                p.remove(0);
                out.exclusions = true;
            }
            if gopath::matches(&p, ".").is_err() {
                return Err(IgnoreError::BadPattern { pattern: p });
            }
            out.patterns.push(Pattern {
                dirs: p.split('/').count(),
                kind: Pattern::compile(&p),
                cleaned: p,
                exclusion,
            });
        }
        Ok(out)
    }

    /// The patterns kept (empty ones dropped), in order.
    #[must_use]
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is an exception (`!pattern`).
    #[must_use]
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether nothing is excluded at all (no patterns).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is excluded: each pattern is tried on the
    /// path and on every ancestor, the last pattern that matches decides
    /// (patternmatcher's `MatchesOrParentMatches`; this is what opening a file through
    /// a filtered context uses). The path is not cleaned.
    ///
    /// # Errors
    /// [`IgnoreError::BadPattern`] when a pattern that has to be evaluated cannot be.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change a match, nor an exception a non-match.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches_self_or_ancestor(path)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// The streaming form used while walking a tree (patternmatcher's
    /// `MatchesUsingParentResults`): `parent` is the [`MatchInfo`] returned for the
    /// directory containing `path` (or the default value for an entry at the root, or when
    /// the parent is unknown, which falls back to checking every ancestor). A pattern that
    /// matched the parent counts as matching the child.
    ///
    /// # Errors
    /// [`IgnoreError::BadPattern`] as for [`Self::matches_or_parent_matches`];
    /// [`IgnoreError::WrongParentState`] for a `parent` from another matcher.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), IgnoreError> {
        let parent_matched = &parent.parent_matched;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(IgnoreError::WrongParentState);
        }
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = if parent_matched.is_empty() {
                    pattern.matches_self_or_ancestor(path)?
                } else {
                    pattern.matches(path)?
                };
            }
            info.parent_matched[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// patternmatcher's deprecated `Matches` method: like
    /// [`Self::matches_or_parent_matches`] but a pattern of N components is only tried
    /// against the N-component prefix of the parent directory. Kept for conformance; new
    /// code should not rely on it.
    ///
    /// # Errors
    /// As [`Self::matches_or_parent_matches`].
    pub fn matches_legacy(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = gopath::dir(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(path)?;
            if !m && parent != "." && pattern.dirs <= parent_dirs.len() {
                m = pattern
                    .matches(&parent_dirs[..pattern.dirs].join("/"))
                    .unwrap_or(false);
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// patternmatcher's deprecated `MatchesUsingParentResult`: the parent's overall result
    /// is the starting state and patterns are only tried on `path` itself. Kept for
    /// conformance; it mishandles exceptions below excluded directories.
    ///
    /// # Errors
    /// As [`Self::matches_or_parent_matches`].
    pub fn matches_using_parent_result_legacy(
        &self,
        path: &str,
        parent_matched: bool,
    ) -> Result<bool, IgnoreError> {
        let mut matched = parent_matched;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(path)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }
}

/// Go's `filepath.Clean` (Unix): the shortest equivalent path by purely lexical
/// processing; the one path cleaner that Go-compatible path handling shares.
///
/// ```
/// assert_eq!(dockerfile::filepath_clean("./a//b/../c/"), "a/c");
/// assert_eq!(dockerfile::filepath_clean("/../x"), "/x");
/// assert_eq!(dockerfile::filepath_clean(""), ".");
/// ```
#[must_use]
pub fn filepath_clean(path: &str) -> String {
    gopath::clean(path)
}

/// Go's `path/filepath.Match` on Unix, which the patterns build on and BuildKit also uses
/// for COPY's source wildcards: whether `name` matches the shell pattern `pattern` in full.
/// `*` and `?` never match `/`, `[...]` are classes, `\` escapes.
///
/// # Errors
/// [`IgnoreError::BadPattern`] for a malformed pattern, once matching reaches the bad part
/// (as in Go).
pub fn filepath_match(pattern: &str, name: &str) -> Result<bool, IgnoreError> {
    gopath::matches(pattern, name).map_err(|_| IgnoreError::BadPattern {
        pattern: pattern.to_owned(),
    })
}

/// patternmatcher's package-level `Matches(file, patterns)`: compiles `patterns`, cleans
/// `path`, never matches the context root (`.`), and applies the deprecated one-parent rule
/// of [`PatternMatcher::matches_legacy`].
///
/// # Errors
/// As [`PatternMatcher::new`] and [`PatternMatcher::matches_legacy`].
pub fn matches_legacy<I, S>(path: &str, patterns: I) -> Result<bool, IgnoreError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let pm = PatternMatcher::new(patterns)?;
    let path = gopath::clean(path);
    if path == "." {
        return Ok(false);
    }
    pm.matches_legacy(&path)
}

/// patternmatcher's package-level `MatchesOrParentMatches(file, patterns)`: compiles
/// `patterns`, cleans `path`, never matches the context root (`.`).
///
/// # Errors
/// As [`PatternMatcher::new`] and [`PatternMatcher::matches_or_parent_matches`].
pub fn matches_or_parent_matches<I, S>(path: &str, patterns: I) -> Result<bool, IgnoreError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let pm = PatternMatcher::new(patterns)?;
    let path = gopath::clean(path);
    if path == "." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_file_rules() {
        let got =
            read_ignore_file("\u{feff}# c\n a \r\n/b/\n!/c/../d\n\n  # not a comment\n!").unwrap();
        assert_eq!(got, ["a", "b", "!d", "# not a comment", "!"]);
        let long = "x".repeat(70_000);
        assert_eq!(
            read_ignore_file(&format!("a\n{long}\n")),
            Err(IgnoreError::LineTooLong { line: 2 })
        );
    }

    #[test]
    fn exception_under_excluded_directory() {
        let pm = PatternMatcher::new(["docs", "!docs/README.md"]).unwrap();
        assert!(pm.matches_or_parent_matches("docs/other.md").unwrap());
        assert!(!pm.matches_or_parent_matches("docs/README.md").unwrap());
        let (m, info) = pm
            .matches_using_parent_results("docs", &MatchInfo::default())
            .unwrap();
        assert!(m);
        let (m, _) = pm
            .matches_using_parent_results("docs/README.md", &info)
            .unwrap();
        assert!(!m);
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            PatternMatcher::new(["!"]).unwrap_err().to_string(),
            "illegal exclusion pattern: \"!\""
        );
        assert_eq!(
            PatternMatcher::new(["a["]).unwrap_err().to_string(),
            "syntax error in pattern: \"a[\""
        );
    }
}
