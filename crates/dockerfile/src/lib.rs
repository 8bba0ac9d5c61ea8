//! Dockerfile frontend: parser with spans, shell-word expansion, stage model and
//! `.dockerignore` matching.
//!
//! This crate is pure: no I/O, no async. Callers hand it text and values and get typed
//! values back.
#![forbid(unsafe_code)]

// Parser, AST and spans (owned by the parser work).
mod ast;
mod error;
mod parser;

// Shell-word expansion, .dockerignore, stage model (owned by the semantics work).
mod dockerignore;
mod shell;
mod stages;

// Build checks (BuildKit's linter rules).
pub mod lint;

// ---- public interface: parser ----
// Line parser (BuildKit's `parser`), typed instructions (BuildKit's `instructions`).
pub use ast::{
    AddInstruction, ArgDef, Ast, BindMount, CacheMount, CacheSharing, Command, CopyInstruction,
    Directive, Dockerfile, FromInstruction, Healthcheck, HealthcheckCmd, Heredoc, HeredocSource,
    Instruction, KeyValue, Mount, MountSpec, NetworkMode, Node, OnbuildInstruction, RunInstruction,
    SecretMount, SecurityMode, Source, Span, Spanned, SshMount, TmpfsMount, Warning, chomp_heredoc,
};
pub use error::{Arity, Error, FlagProblem, MountProblem};
pub use parser::{
    DirectiveValue, csv_fields, detect_syntax, goquote, internal, parse, parse_ast, parse_bytes,
    parse_directive,
};

// ---- public interface: semantics ----
// Shell-word expansion (BuildKit's `frontend/dockerfile/shell`).
pub use shell::{
    ExpandError, ExpandErrorKind, Expansion, Lexer, NoVars, VarLookup, vars_from_env_list,
};
// `.dockerignore` (moby/patternmatcher), context-walk decisions (fsutil's filter) and Go's
// `filepath.Match`, which COPY's wildcards share.
pub use dockerignore::{
    ContextFilter, FilterWalk, IgnoreError, LinkResolver, MatchInfo, Pattern, PatternMatcher,
    WalkDecision, contains_wildcards, filepath_clean, filepath_match, follow_links, matches_legacy,
    matches_or_parent_matches, read_ignore_file,
};
// The stage model: global/stage ARG and ENV scopes, targets, stage edges (dockerfile2llb).
pub use stages::{
    BuildPlan, DEFAULT_PATH, DepKind, DepSource, Env, Outline, OutlineArg, OutlineMount,
    PROXY_ARGS, PlanOptions, PlanWarning, PlatformSpec, Scope, Stage, StageBase, StageDep,
    StageError, Step, TargetInfo, list_targets,
};
// Build checks: rules, configuration and the linter.
pub use lint::{LintConfig, LintConfigError, LintOptions, LintWarning, Rule, lint};
