//! Build checks (BuildKit's `linter` package and the checks `dockerfile2llb` runs while it
//! converts a Dockerfile): the rules with BuildKit's names, messages and URLs, the
//! `# check=skip=…;experimental=…;error=true` configuration (also given as the
//! `BUILDKIT_DOCKERFILE_CHECK` build argument, and per instruction in a comment above it),
//! and [`lint`], which runs every rule that needs only the Dockerfile, its build plan and
//! the `.dockerignore` patterns.
//!
//! Two rules need the build itself and are reported by the builder: `UndefinedVar` (it
//! needs the base image's environment; [`crate::Scope::step`] finds it) and
//! `InvalidBaseImagePlatform` (it needs the resolved image). [`LintConfig`] decides
//! whether those are reported too.

mod config;
mod reference;
mod rules;
#[cfg(test)]
mod tests;

pub use config::{LintConfig, LintConfigError};
pub use reference::is_valid_reference;

use crate::ast::{Ast, Dockerfile, Node, Span};
use crate::stages::BuildPlan;

/// A build check: BuildKit's `LinterRule` without its message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rule {
    /// The rule name, e.g. `StageNameCasing`.
    pub name: &'static str,
    /// BuildKit's one-line description.
    pub description: &'static str,
    /// The documentation URL (empty for `InvalidBaseImagePlatform`, which has none).
    pub url: &'static str,
    /// Reported only when enabled with `experimental=`.
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $url:literal, $desc:literal, $exp:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $desc)]
            pub const $id: Rule = Rule { name: $name, description: $desc, url: $url, experimental: $exp };
        )*
        /// Every rule, in BuildKit's order.
        pub const RULES: &[Rule] = &[$($id),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
        "Stage names should be lowercase", false;
    FROM_AS_CASING = "FromAsCasing", "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
        "The 'as' keyword should match the case of the 'from' keyword", false;
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
        "Empty continuation lines will become errors in a future release", false;
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
        "All commands within the Dockerfile should use the same casing (either upper or lower)", false;
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
        "Stage names should be unique", false;
    RESERVED_STAGE_NAME = "ReservedStageName", "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
        "Reserved words should not be used as stage names", false;
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals", false;
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author", false;
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
        "FROM command must use declared ARGs", false;
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes", false;
    UNDEFINED_VAR = "UndefinedVar", "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
        "Variables should be defined before their use", false;
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
        "Multiple instructions of the same type should not be used in the same stage", false;
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
        "Legacy key/value format with whitespace separator should not be used", false;
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform", "",
        "Base image platform does not match expected target platform", false;
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", false;
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
        "Sensitive data should not be used in the ARG or ENV commands", false;
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
        "Default value for global ARG results in an empty or invalid base image name", false;
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
        "FROM --platform flag should not use a constant value", false;
    COPY_IGNORED_FILE = "CopyIgnoredFile", "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
        "Attempting to Copy file that is excluded by .dockerignore", false;
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription", "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.", true;
    EXPOSE_PROTO_CASING = "ExposeProtoCasing", "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
        "Protocol in EXPOSE instruction should be lowercase", false;
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat", "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release", false;
}

/// The rule of that name, if it is one.
#[must_use]
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// One finding of a build check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintWarning {
    /// The rule.
    pub rule: &'static Rule,
    /// The message, as BuildKit words it.
    pub message: String,
    /// Where it applies.
    pub span: Option<Span>,
}

impl LintWarning {
    /// A finding of `rule`.
    #[must_use]
    pub fn new(rule: &'static Rule, message: impl Into<String>, span: Option<Span>) -> Self {
        Self {
            rule,
            message: message.into(),
            span,
        }
    }
}

/// What [`lint`] checks besides the Dockerfile.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LintOptions {
    /// Check the instructions of every stage (`--call=check` without a target), not only
    /// of the stages the build target needs. `FROM` lines are always all checked.
    pub all_stages: bool,
    /// The `.dockerignore` patterns of the build context (`CopyIgnoredFile`).
    pub ignore_patterns: Vec<String>,
}

/// Runs the build checks on a Dockerfile: the parser's findings (`NoEmptyContinuation`),
/// the plan's (`UndefinedArgInFrom`, `DuplicateStageName`), then every rule that needs no
/// image, in BuildKit's order. Each finding is kept only when `config` (merged with a
/// `# check=` comment above the instruction, where BuildKit does so) enables its rule.
///
/// `ast` and `df` are the same text parsed by [`crate::parse_ast`] and [`crate::parse`];
/// `plan` was made from `df`.
#[must_use]
pub fn lint(
    ast: &Ast,
    df: &Dockerfile,
    plan: &BuildPlan,
    config: &LintConfig,
    opts: &LintOptions,
) -> Vec<LintWarning> {
    let mut sink = Sink {
        ast,
        config,
        out: Vec::new(),
    };
    for w in &df.warnings {
        if let Some(r) = rule(w.rule) {
            // BuildKit reports the parser's finding with the rule's own message.
            let (message, span) = if r.name == NO_EMPTY_CONTINUATION.name {
                // BuildKit places it on the instruction's last line.
                let last = Span {
                    start_line: w.span.end_line,
                    start_column: 1,
                    ..w.span
                };
                ("Empty continuation line".to_owned(), last)
            } else {
                (w.message.clone(), w.span)
            };
            sink.push(LintWarning::new(r, message, Some(span)), true);
        }
    }
    rules::run(&mut sink, df, plan, opts);
    sink.out
}

/// Collects findings, applying the configuration.
pub(crate) struct Sink<'a> {
    ast: &'a Ast,
    config: &'a LintConfig,
    out: Vec<LintWarning>,
}

impl Sink<'_> {
    /// Keeps `w` if its rule is enabled; `inline`: a `# check=` comment above the
    /// instruction at `w.span` applies (BuildKit merges those for most rules, not for the
    /// whole-file ones such as `ConsistentInstructionCasing`).
    pub(crate) fn push(&mut self, w: LintWarning, inline: bool) {
        let node = if inline {
            w.span.and_then(|s| node_at(self.ast, s))
        } else {
            None
        };
        let enabled = match node {
            Some(n) => self.config.with_comments(&n.comments).enabled(w.rule),
            None => self.config.enabled(w.rule),
        };
        if enabled && !self.out.contains(&w) {
            self.out.push(w);
        }
    }

    pub(crate) fn ast(&self) -> &Ast {
        self.ast
    }
}

/// The configuration that applies to the instruction at `span`: `config` merged with a
/// `# check=` comment above it (how BuildKit decides `UndefinedVar` per instruction).
#[must_use]
pub fn config_at(ast: &Ast, config: &LintConfig, span: Span) -> LintConfig {
    match node_at(ast, span) {
        Some(n) => config.with_comments(&n.comments),
        None => config.clone(),
    }
}

/// The top-level node whose span holds the start of `span`.
pub(crate) fn node_at(ast: &Ast, span: Span) -> Option<&Node> {
    ast.nodes
        .iter()
        .find(|n| n.span.start <= span.start && span.start < n.span.end.max(n.span.start + 1))
}
