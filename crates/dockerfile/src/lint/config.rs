//! The check configuration: BuildKit's `linter.ParseLintOptions` and its merging.

use std::collections::BTreeSet;

use super::Rule;

/// An invalid `check` directive or `BUILDKIT_DOCKERFILE_CHECK` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LintConfigError {
    /// A part without `=`, or an unknown key.
    #[error("invalid check option {0:?}")]
    InvalidOption(String),
    /// `error=` with a value that is not a boolean.
    #[error("failed to parse check option {0:?}: invalid syntax")]
    InvalidBool(String),
}

/// Which checks run and whether their findings fail the build:
/// `skip=A,B|all;experimental=C|all;error=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: any finding fails the build.
    pub error: bool,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn names(v: &str) -> BTreeSet<String> {
    v.split(',').map(|r| r.trim().to_owned()).collect()
}

impl LintConfig {
    /// Parses a `check` value as BuildKit does (at most three `;`-separated parts).
    ///
    /// # Errors
    /// A part without `=`, an unknown key, a bad `error=` value.
    pub fn parse(s: &str) -> Result<Self, LintConfigError> {
        let s = s.trim();
        let mut c = Self::default();
        if s.is_empty() {
            return Ok(c);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(LintConfigError::InvalidOption(part.to_owned()));
            };
            let v = v.trim();
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = names(v),
                "experimental" if v == "all" => c.experimental_all = true,
                "experimental" => c.experimental = names(v),
                "error" => {
                    c.error = parse_bool(v)
                        .ok_or_else(|| LintConfigError::InvalidBool(part.to_owned()))?;
                }
                k => return Err(LintConfigError::InvalidOption(k.to_owned())),
            }
        }
        Ok(c)
    }

    /// The configuration of a build: the `BUILDKIT_DOCKERFILE_CHECK` build argument when
    /// given, else the `# check=` directive of `text`.
    ///
    /// # Errors
    /// As [`LintConfig::parse`].
    pub fn for_build(text: &str, build_arg: Option<&str>) -> Result<Self, LintConfigError> {
        match build_arg {
            Some(a) => Self::parse(a),
            None => match crate::parse_directive("check", text) {
                Some(d) => Self::parse(&d.cmdline),
                None => Ok(Self::default()),
            },
        }
    }

    /// This configuration merged with another (BuildKit's `WithMergedConfig`): skips and
    /// experimental rules add up; `error` stays as it is.
    #[must_use]
    pub fn merged(&self, other: &LintConfig) -> Self {
        let mut c = self.clone();
        c.skip_all |= other.skip_all;
        c.experimental_all |= other.experimental_all;
        c.skip.extend(other.skip.iter().cloned());
        c.experimental.extend(other.experimental.iter().cloned());
        c
    }

    /// Merged with the first `check=` comment among the comment lines above an
    /// instruction (`# check=skip=Rule // why`; the value ends at the first space). An
    /// invalid one is ignored, as BuildKit does.
    #[must_use]
    pub fn with_comments(&self, comments: &[String]) -> Self {
        for c in comments {
            let Some((name, value)) = c.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("check") {
                continue;
            }
            let value = value.trim();
            let value = value.split_once(' ').map_or(value, |(v, _)| v);
            return match Self::parse(value) {
                Ok(other) => self.merged(&other),
                Err(_) => self.clone(),
            };
        }
        self.clone()
    }

    /// Whether findings of `rule` are reported.
    #[must_use]
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }

    /// Whether findings of the rule named `name` are reported (an unknown name counts as
    /// a non-experimental rule).
    #[must_use]
    pub fn enabled_name(&self, name: &str) -> bool {
        match super::rule(name) {
            Some(r) => self.enabled(r),
            None => !(self.skip_all || self.skip.contains(name)),
        }
    }
}
