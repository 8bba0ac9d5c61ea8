//! The decisions a build-context walk makes, as `tonistiigi/fsutil`'s filter does them,
//! with the directory reading left to the caller.
//!
//! The caller walks the context in lexical order (each directory right before its
//! contents), hands every entry's relative path to [`FilterWalk::visit`], and acts on the
//! [`WalkDecision`]: send the entry (after the not-yet-sent directories that lead to it),
//! hide it but still look inside (an exception may re-include something below), or not
//! descend at all.

use std::collections::BTreeSet;

use super::{IgnoreError, MatchInfo, Pattern, PatternMatcher, gopath};

/// Include and exclude patterns for a build context (fsutil's `FilterOpt`).
#[derive(Debug, Clone, Default)]
pub struct ContextFilter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

/// What to do with one entry of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalkDecision {
    /// Send the entry, after sending `parents` (directories that were hidden when
    /// visited but now lead to a kept entry), outermost first. If the consumer drops one
    /// of those parents, it must skip that directory's whole subtree itself.
    Keep {
        /// Directories to send first.
        parents: Vec<String>,
    },
    /// Do not send the entry. A directory is still walked (something below it may be
    /// kept), and a permission error while reading it is not an error.
    Hide,
    /// Do not send the directory and do not walk into it.
    SkipDir,
}

impl ContextFilter {
    /// A filter from include patterns (the context is restricted to what they match,
    /// with their parents; an empty list means no restriction) and exclude patterns (the
    /// `.dockerignore` list).
    ///
    /// # Errors
    /// As [`PatternMatcher::new`].
    pub fn new<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Self, IgnoreError> {
        let include: Vec<String> = include.iter().map(|s| s.as_ref().to_owned()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.as_ref().to_owned()).collect();
        Self::build(include, exclude)
    }

    /// Like [`ContextFilter::new`], with symlinks to follow: each of `follow_paths`
    /// (which may use wildcards in its last component) is resolved through `resolver`, and
    /// the links and their targets become include patterns too (fsutil's `FollowPaths`).
    ///
    /// # Errors
    /// Pattern errors as [`PatternMatcher::new`]; resolver errors are returned as `Err(Err(e))`.
    pub fn with_follow_paths<S: AsRef<str>, R: LinkResolver>(
        include: &[S],
        exclude: &[S],
        follow_paths: &[S],
        resolver: &R,
    ) -> Result<Self, Result<IgnoreError, R::Error>> {
        let mut include: Vec<String> = include.iter().map(|s| s.as_ref().to_owned()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.as_ref().to_owned()).collect();
        if let Some(targets) = follow_links(resolver, follow_paths).map_err(Err)? {
            include.extend(targets);
            include = dedupe_paths(include).unwrap_or_default();
        }
        Self::build(include, exclude).map_err(Ok)
    }

    fn build(include: Vec<String>, exclude: Vec<String>) -> Result<Self, IgnoreError> {
        // Patterns that are plain paths (no wildcard before a trailing `/*` or `/**`) let
        // the walk skip directories no pattern can reach into.
        const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];
        let mut out = Self {
            only_prefix_includes: true,
            only_prefix_exclude_exceptions: true,
            ..Self::default()
        };
        if !include.is_empty() {
            let m = PatternMatcher::new(&include)?;
            out.only_prefix_includes = !m
                .patterns()
                .iter()
                .any(|p| !p.is_exclusion() && without_trailing_glob(p).contains(PATTERN_CHARS));
            out.include = Some(m);
        }
        if !exclude.is_empty() {
            let m = PatternMatcher::new(&exclude)?;
            out.only_prefix_exclude_exceptions = !m
                .patterns()
                .iter()
                .any(|p| p.is_exclusion() && without_trailing_glob(p).contains(PATTERN_CHARS));
            out.exclude = Some(m);
        }
        Ok(out)
    }

    /// Whether `path` exists in the filtered context when opened directly (fsutil's
    /// `Open`: include patterns and exclude patterns with the "or a parent matches" rule).
    ///
    /// # Errors
    /// [`IgnoreError::BadPattern`] when a pattern cannot be evaluated.
    pub fn is_visible(&self, path: &str) -> Result<bool, IgnoreError> {
        if let Some(inc) = &self.include {
            if !inc.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the filter lets everything through (no patterns at all).
    #[must_use]
    pub fn is_pass_through(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Starts a walk.
    #[must_use]
    pub fn walk(&self) -> FilterWalk<'_> {
        FilterWalk {
            filter: self,
            dirs: Vec::new(),
        }
    }
}

fn without_trailing_glob(p: &Pattern) -> &str {
    let s = p.as_str();
    let s = s.strip_suffix("/**").unwrap_or(s);
    s.strip_suffix("/*").unwrap_or(s)
}

/// A directory visited and not skipped, kept while the walk is inside it.
#[derive(Debug)]
struct VisitedDir {
    path_with_sep: String,
    include: MatchInfo,
    exclude: MatchInfo,
    sent: bool,
}

/// The state of one walk through a [`ContextFilter`].
#[derive(Debug)]
pub struct FilterWalk<'a> {
    filter: &'a ContextFilter,
    dirs: Vec<VisitedDir>,
}

impl FilterWalk<'_> {
    /// Decides about the next entry of the walk. `path` is relative to the context root,
    /// `/`-separated, never the root itself; entries come in lexical order, each directory
    /// right before its contents.
    ///
    /// # Errors
    /// [`IgnoreError::BadPattern`] when a pattern cannot be evaluated.
    pub fn visit(&mut self, path: &str, is_dir: bool) -> Result<WalkDecision, IgnoreError> {
        let f = self.filter;
        while let Some(top) = self.dirs.last() {
            if path.starts_with(&top.path_with_sep) {
                break;
            }
            self.dirs.pop();
        }
        let parent = self.dirs.last();
        let mut hide = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        let dir_slash = format!("{path}/");

        if let Some(inc) = &f.include {
            let (m, info) = inc.matches_using_parent_results(
                path,
                parent.map_or(&MatchInfo::default(), |p| &p.include),
            )?;
            include_info = info;
            if !m {
                if is_dir && f.only_prefix_includes {
                    let reachable = inc.patterns().iter().any(|p| {
                        !p.is_exclusion()
                            && format!("{}/", without_trailing_glob(p)).starts_with(&dir_slash)
                    });
                    if !reachable {
                        return Ok(WalkDecision::SkipDir);
                    }
                }
                hide = true;
            }
        }

        if let Some(exc) = &f.exclude {
            let (m, info) = exc.matches_using_parent_results(
                path,
                parent.map_or(&MatchInfo::default(), |p| &p.exclude),
            )?;
            exclude_info = info;
            if m {
                if is_dir && f.only_prefix_exclude_exceptions {
                    if !exc.has_exclusions() {
                        return Ok(WalkDecision::SkipDir);
                    }
                    let reachable = exc.patterns().iter().any(|p| {
                        p.is_exclusion()
                            && format!("{}/", without_trailing_glob(p)).starts_with(&dir_slash)
                    });
                    if !reachable {
                        return Ok(WalkDecision::SkipDir);
                    }
                }
                hide = true;
            }
        }

        let tracking = f.include.is_some() || f.exclude.is_some();
        let mut parents = Vec::new();
        if !hide {
            for d in self.dirs.iter_mut().filter(|d| !d.sent) {
                d.sent = true;
                parents.push(d.path_with_sep[..d.path_with_sep.len() - 1].to_owned());
            }
        }
        if tracking && is_dir {
            self.dirs.push(VisitedDir {
                path_with_sep: dir_slash,
                include: include_info,
                exclude: exclude_info,
                sent: !hide,
            });
        }
        Ok(if hide {
            WalkDecision::Hide
        } else {
            WalkDecision::Keep { parents }
        })
    }
}

/// Read access to a directory tree for resolving symlinks (implemented by the caller, who
/// does the I/O). Paths are relative to the context root, cleaned, `/`-separated; `.` is
/// the root.
pub trait LinkResolver {
    /// The caller's I/O error.
    type Error;

    /// `Ok(None)` when `path` does not exist; `Ok(Some(None))` for an entry that is not a
    /// symlink; `Ok(Some(Some(target)))` for a symlink with its target as stored.
    #[allow(clippy::type_complexity)]
    fn read_link(&self, path: &str) -> Result<Option<Option<String>>, Self::Error>;

    /// The names in directory `path`, or `Ok(None)` when it does not exist.
    fn read_dir(&self, path: &str) -> Result<Option<Vec<String>>, Self::Error>;
}

/// Resolves `paths` through symlinks (fsutil's `FollowLinks`): every symlink met on the
/// way, and the final targets, are returned sorted and without paths below another one;
/// `None` when the result would include the root (no restriction at all). A wildcard
/// (`*`, `?`, `[`) in a path component matches the names of its directory.
///
/// # Errors
/// Whatever `resolver` returns.
pub fn follow_links<R: LinkResolver, S: AsRef<str>>(
    resolver: &R,
    paths: &[S],
) -> Result<Option<Vec<String>>, R::Error> {
    let mut resolved = BTreeSet::new();
    for p in paths {
        append_link(resolver, &mut resolved, p.as_ref(), 0)?;
    }
    Ok(dedupe_paths(resolved.into_iter().collect()))
}

/// Links are followed at most this deep, so that a cycle ends.
const MAX_LINK_DEPTH: usize = 255;

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => String::new(),
        (true, false) => gopath::clean(b),
        (false, true) => gopath::clean(a),
        (false, false) => gopath::clean(&format!("{a}/{b}")),
    }
}

fn append_link<R: LinkResolver>(
    r: &R,
    resolved: &mut BTreeSet<String>,
    p: &str,
    depth: usize,
) -> Result<(), R::Error> {
    if depth > MAX_LINK_DEPTH {
        return Ok(());
    }
    let mut p = join(".", p);
    let mut current = ".".to_owned();
    loop {
        let (head, rest) = p.split_once('/').unwrap_or((p.as_str(), ""));
        current = join(&current, head);
        let targets = read_symlink(r, &current, true)?;
        p = rest.to_owned();
        if (p.is_empty() || !targets.is_empty()) && resolved.contains(&current) {
            return Ok(());
        }
        if !targets.is_empty() {
            resolved.insert(current.clone());
            for t in targets {
                append_link(r, resolved, &join(&t, &p), depth + 1)?;
            }
            return Ok(());
        }
        if p.is_empty() {
            resolved.insert(current);
            return Ok(());
        }
    }
}

fn read_symlink<R: LinkResolver>(
    r: &R,
    p: &str,
    allow_wildcard: bool,
) -> Result<Vec<String>, R::Error> {
    let (dir, base) = match p.rfind('/') {
        Some(i) => (gopath::clean(&p[..=i]), &p[i + 1..]),
        None => (".".to_owned(), p),
    };
    if allow_wildcard && contains_wildcards(base) {
        let Some(names) = r.read_dir(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in names {
            if gopath::matches(base, &name).unwrap_or(false) {
                out.extend(read_symlink(r, &join(&dir, &name), false)?);
            }
        }
        return Ok(out);
    }
    let p = gopath::clean(p);
    if p == "/" || p == "." {
        return Ok(Vec::new());
    }
    let Some(Some(target)) = r.read_link(&p)? else {
        return Ok(Vec::new());
    };
    let link = gopath::clean(&target);
    if link.starts_with('/') {
        return Ok(vec![link]);
    }
    Ok(vec![join("/", &join(&gopath::dir(&p), &link))])
}

/// Whether `name` contains an unescaped `*`, `?` or `[` (fsutil's `containsWildcards`):
/// what makes a path a pattern, for `.dockerignore`'s walk and COPY's sources alike.
///
/// ```
/// assert!(dockerfile::contains_wildcards("src/*.rs"));
/// assert!(!dockerfile::contains_wildcards("a\\*b"));
/// ```
#[must_use]
pub fn contains_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// fsutil's `dedupePaths`: drops paths below the previous kept one; `None` if any is `.`.
fn dedupe_paths(paths: Vec<String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    let mut last = String::new();
    for s in paths {
        if s == "." {
            return None;
        }
        if s.starts_with(&format!("{last}/")) {
            continue;
        }
        last.clone_from(&s);
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_dir_without_exceptions_is_skipped() {
        let f = ContextFilter::new(&[] as &[&str], &["node_modules", "*.log"]).unwrap();
        let mut w = f.walk();
        assert_eq!(w.visit("a.log", false).unwrap(), WalkDecision::Hide);
        assert_eq!(
            w.visit("node_modules", true).unwrap(),
            WalkDecision::SkipDir
        );
        assert_eq!(
            w.visit("src", true).unwrap(),
            WalkDecision::Keep { parents: vec![] }
        );
    }

    #[test]
    fn hidden_parents_are_sent_before_a_kept_child() {
        let f = ContextFilter::new(&[] as &[&str], &["a", "!a/b/c"]).unwrap();
        let mut w = f.walk();
        assert_eq!(w.visit("a", true).unwrap(), WalkDecision::Hide);
        assert_eq!(w.visit("a/b", true).unwrap(), WalkDecision::Hide);
        assert_eq!(
            w.visit("a/b/c", false).unwrap(),
            WalkDecision::Keep {
                parents: vec!["a".into(), "a/b".into()]
            }
        );
        assert_eq!(w.visit("a/b/d", false).unwrap(), WalkDecision::Hide);
        assert_eq!(
            w.visit("b", false).unwrap(),
            WalkDecision::Keep { parents: vec![] }
        );
    }

    #[test]
    fn dedupe() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            dedupe_paths(v(&["a", "a/b", "ab", "b"])),
            Some(v(&["a", "ab", "b"]))
        );
        assert_eq!(dedupe_paths(v(&["a", "."])), None);
    }
}
