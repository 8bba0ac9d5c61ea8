//! The stage model: how BuildKit's Dockerfile frontend (`dockerfile2llb`) turns a parsed
//! Dockerfile into stages, resolves `--target`, global and per-stage `ARG`s, `ENV`, and the
//! edges between stages, without building anything.
//!
//! [`BuildPlan::new`] does everything that needs no base image: global ARGs (with the
//! predefined platform ARGs and `--build-arg` overrides), `FROM` expansion, stage names,
//! `COPY --from` / `RUN --mount from=` edges, cycles, the target and the stages it needs.
//! Expansion inside a stage depends on the base image's `Env`, so the engine does it step
//! by step with a [`Scope`]: it starts one per stage from the base image's environment (or
//! from the parent stage's final scope) and feeds it the stage's instructions in order;
//! [`Scope::step`] expands exactly the fields BuildKit expands and applies `ENV` and `ARG`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ast::{
    AddInstruction, ArgDef, CopyInstruction, Dockerfile, Instruction, KeyValue, Mount, MountSpec,
    RunInstruction, Source, Span, Spanned,
};
use crate::shell::{ExpandError, Expansion, Lexer, NoVars, VarLookup};

mod outline;

pub use outline::{Outline, OutlineArg, OutlineMount, TargetInfo, list_targets};

/// The PATH a stage gets when its base image sets none (BuildKit's Linux default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args that configure the builder and never reach the environment of a step.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Proxy variables: usable in `RUN` without an `ARG`, never recorded in the image history
/// or the cache key.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// A platform as the predefined ARGs describe it (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7` for `linux/arm/v7`; empty when there is none.
    pub variant: String,
}

impl PlatformSpec {
    /// A platform from its parts.
    #[must_use]
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.to_owned(),
        }
    }

    /// The platform this program was compiled for (`linux/amd64`, `linux/arm64`, ...).
    #[must_use]
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Self::new(std::env::consts::OS, arch, variant)
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PlatformSpec {
    type Err = String;

    /// `os/arch[/variant]`; every part non-empty, taken as written (no normalisation).
    /// A build's platforms are read with containerd's grammar by the registry client's
    /// `Platform` (`Platform::parse_target`); builder-core's `platform_args` turns one
    /// into this type.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        Ok(Self::new(
            parts[0],
            parts[1],
            parts.get(2).copied().unwrap_or(""),
        ))
    }
}

/// What a build asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`; `None` builds the last stage.
    pub target: Option<String>,
    /// The platform the image is built for (`TARGET*` args).
    pub target_platform: PlatformSpec,
    /// The platform running the build (`BUILD*` args).
    pub build_platform: PlatformSpec,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self::new(PlatformSpec::host(), PlatformSpec::host())
    }
}

impl PlanOptions {
    /// Options for one target platform, no build args, the default target.
    #[must_use]
    pub fn new(target_platform: PlatformSpec, build_platform: PlatformSpec) -> Self {
        Self {
            build_args: BTreeMap::new(),
            target: None,
            target_platform,
            build_platform,
        }
    }

    /// Adds a `--build-arg`.
    #[must_use]
    pub fn build_arg(mut self, key: &str, value: &str) -> Self {
        self.build_args.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `--target`.
    #[must_use]
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }
}

/// An error in the stage structure of a Dockerfile. `Display` is `line:column: message`
/// where there is a location, as the parser's errors are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// No `FROM` at all.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("{span}: no build stage in current context")]
    InstructionBeforeFrom {
        /// The instruction keyword.
        keyword: &'static str,
        /// The instruction.
        span: Span,
    },
    /// A word could not be expanded.
    #[error("{span}: {source}")]
    Expand {
        /// The expansion error.
        source: ExpandError,
        /// The word (or instruction) being expanded.
        span: Span,
    },
    /// `FROM` expanded to nothing.
    #[error("{span}: base name ({expression}) should not be blank")]
    BlankBaseName {
        /// The image word as written.
        expression: String,
        /// The image word.
        span: Span,
    },
    /// `FROM --platform` expanded to nothing.
    #[error("{span}: empty platform value from expression {expression}")]
    EmptyPlatform {
        /// The value as written.
        expression: String,
        /// The flag.
        span: Span,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found{}", did_you_mean(.suggestion))]
    UnknownTarget {
        /// The target asked for.
        target: String,
        /// The closest stage name, if any.
        suggestion: Option<String>,
    },
    /// `COPY --from` with a variable (BuildKit does not expand it).
    #[error(
        "{span}: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromVariable {
        /// The flag.
        span: Span,
    },
    /// `COPY --from=<n>` with no stage `n`.
    #[error("{span}: invalid stage index {index}")]
    InvalidStageIndex {
        /// The index.
        index: i64,
        /// The flag.
        span: Span,
    },
    /// Stages that depend on each other in a circle.
    #[error("{span}: circular dependency detected on stage: {stage}")]
    Cycle {
        /// The stage where the cycle was found.
        stage: String,
        /// The instruction closing the cycle.
        span: Span,
        /// Every instruction on the cycle.
        path: Vec<Span>,
    },
    /// `COPY --from` of a stage defined later in the file.
    #[error(
        "{span}: cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    CopyFromLaterStage {
        /// The `--from` value.
        from: String,
        /// The stage containing the COPY.
        stage: String,
        /// The instruction.
        span: Span,
    },
    /// `RUN --mount from=` of a stage defined later in the file.
    #[error(
        "{span}: cannot mount from stage {from:?} to {target:?}, stage needs to be defined before current command"
    )]
    MountFromLaterStage {
        /// The `from` value.
        from: String,
        /// The mount target.
        target: String,
        /// The instruction.
        span: Span,
    },
    /// A `RUN --mount` that is invalid once expanded.
    #[error("{0}")]
    Mount(crate::error::Error),
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|m| format!(" (did you mean {m}?)"))
        .unwrap_or_default()
}

impl StageError {
    /// Where the error is in the Dockerfile, when it is about a place in it.
    #[must_use]
    pub fn span(&self) -> Option<Span> {
        match self {
            Self::NoStages | Self::UnknownTarget { .. } => None,
            Self::InstructionBeforeFrom { span, .. }
            | Self::Expand { span, .. }
            | Self::BlankBaseName { span, .. }
            | Self::EmptyPlatform { span, .. }
            | Self::FromVariable { span }
            | Self::InvalidStageIndex { span, .. }
            | Self::Cycle { span, .. }
            | Self::CopyFromLaterStage { span, .. }
            | Self::MountFromLaterStage { span, .. } => Some(*span),
            Self::Mount(e) => Some(e.span()),
        }
    }

    /// The message without the location prefix.
    #[must_use]
    pub fn message(&self) -> String {
        let full = self.to_string();
        match self.span() {
            Some(span) => full
                .strip_prefix(&format!("{span}: "))
                .map_or(full.clone(), str::to_owned),
            None => full,
        }
    }
}

/// A non-fatal finding (BuildKit's lint warnings and the unused build-arg warning).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanWarning {
    /// The rule, e.g. `UndefinedArgInFrom`, `UndefinedVar`, `UnusedBuildArgs`.
    pub rule: &'static str,
    /// The message, as BuildKit words it.
    pub message: String,
    /// Where it applies, if anywhere in particular.
    pub span: Option<Span>,
}

/// Variables in scope: an ordered list in which setting an existing key replaces it in
/// place (as BuildKit's state environment and image `Env` behave).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// An empty environment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// From `KEY=VALUE` entries (an image config's `Env`): split at the first `=`, an
    /// entry without `=` has an empty value, a later entry replaces an earlier one.
    pub fn from_list<I, S>(list: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut env = Self::new();
        for e in list {
            let e = e.as_ref();
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            env.set(k, v);
        }
        env
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, in place when it exists, else at the end.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.vars.push((key.to_owned(), value.to_owned())),
        }
    }

    /// The variables in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names in order.
    #[must_use]
    pub fn keys(&self) -> Vec<&str> {
        self.vars.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// As `KEY=VALUE` entries, in order.
    #[must_use]
    pub fn to_list(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The number of variables.
    #[must_use]
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl VarLookup for Env {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageBase {
    /// `FROM scratch`: an empty filesystem and config.
    Scratch,
    /// An image reference, expanded with the global ARGs (not yet parsed or resolved).
    Image(String),
    /// An earlier stage (its index): the stage continues from its result.
    Stage(usize),
}

/// The other end of an edge of the stage graph.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DepSource {
    /// A stage (its index).
    Stage(usize),
    /// An image reference used directly (`COPY --from=alpine`).
    Image(String),
}

/// How a stage uses another stage or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DepKind {
    /// `COPY --from`.
    Copy,
    /// `RUN --mount ... from=`.
    Mount,
    /// `COPY --from` or `RUN --mount ... from=` in an ONBUILD trigger of the stage's base
    /// stage, which runs in this stage; [`StageDep::instruction`] is then the trigger's
    /// position among the base stage's ONBUILD instructions.
    Onbuild,
}

/// One edge: instruction `instruction` of the stage reads from `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDep {
    /// What is read.
    pub source: DepSource,
    /// `COPY --from` or a RUN mount.
    pub kind: DepKind,
    /// The index of the instruction in [`Stage::instructions`].
    pub instruction: usize,
    /// The `--from` value or mount `from` as written.
    pub from: String,
    /// The instruction.
    pub span: Span,
}

/// One stage of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages (0-based), what `COPY --from=<n>` refers to.
    pub index: usize,
    /// The name after `AS` (lower-case), if any.
    pub name: Option<String>,
    /// The base, expanded.
    pub base: StageBase,
    /// `--platform`, expanded (not parsed).
    pub platform: Option<String>,
    /// The description from the comment above `FROM` (`# name does this`).
    pub doc_comment: String,
    /// The `FROM` instruction.
    pub span: Span,
    /// The instructions after `FROM`, unexpanded.
    pub instructions: Vec<Spanned<Instruction>>,
    /// Edges to other stages and images, in instruction order.
    pub deps: Vec<StageDep>,
    /// Global ARGs the `FROM` line used (for `--call outline`).
    pub(crate) from_args: BTreeSet<String>,
}

impl Stage {
    /// The name BuildKit uses in messages: the stage name or `stage-<index>`.
    #[must_use]
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// A global ARG (before the first FROM), for `--call outline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaArg {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    pub(crate) doc_comment: String,
    pub(crate) span: Span,
    /// Global ARGs its default used.
    pub(crate) deps: BTreeSet<String>,
}

/// The stages of a Dockerfile resolved for one build: what to build, in which order, and
/// the global ARG scope.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    stages: Vec<Stage>,
    target: usize,
    reachable: Vec<usize>,
    global: Env,
    meta_args: Vec<MetaArg>,
    build_args: BTreeMap<String, String>,
    escape: char,
    warnings: Vec<PlanWarning>,
}

/// The predefined ARGs of the global scope, in BuildKit's order.
fn predefined_args(opts: &PlanOptions, target_name: &str) -> Env {
    let bp = &opts.build_platform;
    let tp = &opts.target_platform;
    let list = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone()),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone()),
        ("TARGETSTAGE", target_name.to_owned()),
    ];
    let mut env = Env::new();
    for (k, v) in list {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        env.set(k, &v);
    }
    env
}

/// Whether a build arg is known to the builder without any `ARG`.
fn is_builtin_arg(key: &str) -> bool {
    const PREDEFINED: &[&str] = &[
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDOSVERSION",
        "BUILDARCH",
        "BUILDVARIANT",
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETOSVERSION",
        "TARGETARCH",
        "TARGETVARIANT",
        "TARGETSTAGE",
        "SOURCE_DATE_EPOCH",
    ];
    PREDEFINED.contains(&key)
        || PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(key))
        || key.starts_with("BUILDKIT_")
}

/// The closest of `options` (edit distance below 3), as BuildKit's `suggest.Search`.
pub(crate) fn suggest<'a>(
    value: &str,
    options: impl IntoIterator<Item = &'a str>,
    case_sensitive: bool,
) -> Option<String> {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    let v = norm(value);
    let mut best = None;
    let mut min = 3;
    for opt in options {
        let o = norm(opt);
        if o == v {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < min {
            min = d;
            best = Some(
                if !case_sensitive && value == value.to_uppercase() && value != value.to_lowercase()
                {
                    o.to_uppercase()
                } else {
                    o
                },
            );
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What `COPY --from=<from>` reads: a stage by index (which must exist) or by name, else
/// an image.
fn copy_from_source(from: &str, span: Span, stages: &[Stage]) -> Result<DepSource, StageError> {
    if let Some(n) = go_atoi(from) {
        return match usize::try_from(n) {
            Ok(i) if i < stages.len() => Ok(DepSource::Stage(i)),
            _ => Err(StageError::InvalidStageIndex { index: n, span }),
        };
    }
    let name = from.to_lowercase();
    Ok(stages
        .iter()
        .rfind(|s| s.name.as_deref() == Some(name.as_str()))
        .map_or_else(
            || DepSource::Image(from.to_owned()),
            |s| DepSource::Stage(s.index),
        ))
}

/// Go's `strconv.Atoi` on the values `COPY --from` can take.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn mount_field<'a>(spec: &'a MountSpec, key: &str) -> Option<&'a str> {
    spec.fields
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
}

impl BuildPlan {
    /// Resolves the stages of `dockerfile` for one build.
    ///
    /// # Errors
    /// Every [`StageError`] except [`StageError::Mount`]; the first one met in BuildKit's
    /// order (stage headers, target, dependencies and cycles, then stage order).
    pub fn new(dockerfile: &Dockerfile, opts: &PlanOptions) -> Result<Self, StageError> {
        let lexer = Lexer::new(dockerfile.escape);
        let mut warnings = Vec::new();

        // Split into global ARGs and stages.
        let mut meta_defs: Vec<(ArgDef, Span)> = Vec::new();
        let mut headers: Vec<(&Spanned<Instruction>, Vec<Spanned<Instruction>>)> = Vec::new();
        for ins in &dockerfile.instructions {
            match (&ins.value, headers.last_mut()) {
                (Instruction::From(_), _) => headers.push((ins, Vec::new())),
                (_, Some((_, body))) => body.push(ins.clone()),
                (Instruction::Arg(defs), None) => {
                    meta_defs.extend(defs.iter().map(|d| (d.clone(), ins.span)));
                }
                (other, None) => {
                    return Err(StageError::InstructionBeforeFrom {
                        keyword: other.keyword(),
                        span: ins.span,
                    });
                }
            }
        }
        if headers.is_empty() {
            return Err(StageError::NoStages);
        }

        // Stage names should be unique (case-insensitively; the parser lower-cases them).
        // As in BuildKit a repeated name is a warning: a later FROM, COPY --from, a mount
        // and --target then mean the last stage of that name defined before them (for
        // FROM) or at all.
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (ins, _) in &headers {
            if let Instruction::From(f) = &ins.value {
                if let Some(name) = &f.name {
                    if !seen.insert(name.value.to_lowercase()) {
                        warnings.push(PlanWarning {
                            rule: "DuplicateStageName",
                            message: format!(
                                "Duplicate stage name {}, stage names should be unique",
                                crate::goquote(&name.value)
                            ),
                            span: Some(ins.span),
                        });
                    }
                }
            }
        }

        // The global scope: predefined args, then the global ARGs with overrides.
        let last_name = match &headers[headers.len() - 1].0.value {
            Instruction::From(f) => f.name.as_ref().map(|n| n.value.clone()),
            _ => None,
        };
        let target_name = opts
            .target
            .clone()
            .or(last_name)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let mut global = predefined_args(opts, &target_name);
        let mut meta_args: Vec<MetaArg> = Vec::new();
        for (def, span) in meta_defs {
            let key = def.name.value.clone();
            let mut deps = BTreeSet::new();
            let value = if let Some(v) = opts.build_args.get(&key) {
                Some(v.clone())
            } else if let Some(default) = &def.default {
                let x = lexer.process(&default.value, &global).map_err(|source| {
                    StageError::Expand {
                        source,
                        span: default.span,
                    }
                })?;
                deps = x.matched;
                if deps.remove(&key) {
                    if let Some(old) = meta_args.iter().rev().find(|m| m.name == key) {
                        deps.extend(old.deps.iter().cloned());
                    }
                }
                Some(x.value)
            } else {
                None
            };
            if let Some(v) = &value {
                global.set(&key, v);
            }
            meta_args.push(MetaArg {
                name: key,
                value,
                doc_comment: def.doc_comment.clone(),
                span,
                deps,
            });
        }
        let declared: BTreeSet<&str> = meta_args
            .iter()
            .map(|m| m.name.as_str())
            .chain(global.keys())
            .collect();

        // Stage headers: FROM expansion, base, platform.
        let mut stages: Vec<Stage> = Vec::new();
        for (index, (ins, body)) in headers.into_iter().enumerate() {
            let Instruction::From(f) = &ins.value else {
                continue;
            };
            let mut from_args = BTreeSet::new();
            let mut expand_from = |word: &Spanned<String>| -> Result<Expansion, StageError> {
                let x =
                    lexer
                        .process(&word.value, &global)
                        .map_err(|source| StageError::Expand {
                            source,
                            span: word.span,
                        })?;
                for name in &x.unmatched {
                    if !declared.contains(name.as_str()) {
                        let mut message = format!("FROM argument '{name}' is not declared");
                        if let Some(s) = suggest(name, declared.iter().copied(), true) {
                            message.push_str(&format!(" (did you mean {s}?)"));
                        }
                        warnings.push(PlanWarning {
                            rule: "UndefinedArgInFrom",
                            message,
                            span: Some(ins.span),
                        });
                    }
                }
                from_args.extend(x.matched.iter().cloned());
                Ok(x)
            };
            let image = expand_from(&f.image)?.value;
            if image.is_empty() {
                return Err(StageError::BlankBaseName {
                    expression: f.image.value.clone(),
                    span: f.image.span,
                });
            }
            let platform = match &f.platform {
                None => None,
                Some(p) => {
                    let v = expand_from(p)?.value;
                    if v.is_empty() {
                        return Err(StageError::EmptyPlatform {
                            expression: p.value.clone(),
                            span: p.span,
                        });
                    }
                    Some(v)
                }
            };
            let base = match stages
                .iter()
                .rfind(|s| s.name.as_deref() == Some(image.as_str()))
            {
                Some(s) => StageBase::Stage(s.index),
                None if image == "scratch" => StageBase::Scratch,
                None => StageBase::Image(image),
            };
            stages.push(Stage {
                index,
                name: f.name.as_ref().map(|n| n.value.clone()),
                base,
                platform,
                doc_comment: f.doc_comment.clone(),
                span: ins.span,
                instructions: body,
                deps: Vec::new(),
                from_args,
            });
        }

        // The target.
        let target = match &opts.target {
            None => stages.len() - 1,
            Some(t) => {
                let wanted = t.to_lowercase();
                stages
                    .iter()
                    .rfind(|s| s.name.as_deref() == Some(wanted.as_str()))
                    .map(|s| s.index)
                    .ok_or_else(|| StageError::UnknownTarget {
                        target: t.clone(),
                        suggestion: suggest(
                            t,
                            stages.iter().filter_map(|s| s.name.as_deref()),
                            true,
                        ),
                    })?
            }
        };

        // Edges: COPY --from and RUN --mount from=.
        let by_name = |name: &str, stages: &[Stage]| {
            let name = name.to_lowercase();
            stages
                .iter()
                .rfind(|s| s.name.as_deref() == Some(name.as_str()))
                .map(|s| s.index)
        };
        for i in 0..stages.len() {
            let mut deps = Vec::new();
            for (k, ins) in stages[i].instructions.iter().enumerate() {
                match &ins.value {
                    Instruction::Copy(c) => {
                        let Some(from) = &c.from else { continue };
                        let same = lexer
                            .process_word(&from.value, &NoVars)
                            .is_ok_and(|v| v == from.value);
                        if !same {
                            return Err(StageError::FromVariable { span: from.span });
                        }
                        let source = copy_from_source(&from.value, from.span, &stages)?;
                        deps.push(StageDep {
                            source,
                            kind: DepKind::Copy,
                            instruction: k,
                            from: from.value.clone(),
                            span: ins.span,
                        });
                    }
                    Instruction::Run(r) => {
                        for m in &r.mounts {
                            // BuildKit looks a mount without `from` up as "scratch".
                            let (from, explicit) = match mount_field(m, "from") {
                                Some(f) => (f.to_owned(), true),
                                None => ("scratch".to_owned(), false),
                            };
                            let source = match by_name(&from, &stages) {
                                Some(j) => DepSource::Stage(j),
                                None if explicit => DepSource::Image(from.clone()),
                                None => continue,
                            };
                            deps.push(StageDep {
                                source,
                                kind: DepKind::Mount,
                                instruction: k,
                                from,
                                span: ins.span,
                            });
                        }
                    }
                    _ => {}
                }
            }
            // The base stage's ONBUILD triggers run in this stage: a `COPY --from` or a RUN
            // mount `from=` among them reads another stage, which this one then depends on
            // (as BuildKit).
            // A trigger that does not parse fails when it runs, with its own error.
            if let StageBase::Stage(b) = stages[i].base {
                let triggers = stages[b]
                    .instructions
                    .iter()
                    .filter_map(|ins| match &ins.value {
                        Instruction::Onbuild(o) => Some((o, ins.span)),
                        _ => None,
                    });
                for (t, (o, span)) in triggers.enumerate() {
                    let Ok(trigger) = o.trigger() else { continue };
                    match &trigger.value {
                        Instruction::Copy(c) => {
                            let Some(from) = &c.from else { continue };
                            let source = copy_from_source(&from.value, span, &stages)?;
                            deps.push(StageDep {
                                source,
                                kind: DepKind::Onbuild,
                                instruction: t,
                                from: from.value.clone(),
                                span,
                            });
                        }
                        // `RUN --mount=from=STAGE` in a trigger reads that stage too.
                        Instruction::Run(r) => {
                            for m in &r.mounts {
                                let Some(from) = mount_field(m, "from") else {
                                    continue;
                                };
                                let Some(j) = by_name(from, &stages) else {
                                    continue;
                                };
                                deps.push(StageDep {
                                    source: DepSource::Stage(j),
                                    kind: DepKind::Onbuild,
                                    instruction: t,
                                    from: from.to_owned(),
                                    span,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            stages[i].deps = deps;
        }

        check_cycles(&stages)?;

        // Stages the target needs, in file order (which is dispatch order).
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(s) = todo.pop() {
            if !needed.insert(s) {
                continue;
            }
            if let StageBase::Stage(b) = stages[s].base {
                todo.push(b);
            }
            todo.extend(stages[s].deps.iter().filter_map(|d| match d.source {
                DepSource::Stage(j) => Some(j),
                DepSource::Image(_) => None,
            }));
        }
        let reachable: Vec<usize> = needed.into_iter().collect();

        // A stage can only read stages dispatched before it.
        for &s in &reachable {
            let stage = &stages[s];
            for d in &stage.deps {
                let DepSource::Stage(j) = d.source else {
                    continue;
                };
                if j <= s {
                    continue;
                }
                return Err(match d.kind {
                    DepKind::Copy | DepKind::Onbuild => StageError::CopyFromLaterStage {
                        from: d.from.clone(),
                        stage: stage.display_name(),
                        span: d.span,
                    },
                    DepKind::Mount => {
                        let target = match &stage.instructions[d.instruction].value {
                            Instruction::Run(r) => r
                                .mounts
                                .iter()
                                .find(|m| mount_field(m, "from") == Some(d.from.as_str()))
                                .and_then(|m| {
                                    mount_field(m, "target")
                                        .or_else(|| mount_field(m, "dst"))
                                        .or_else(|| mount_field(m, "destination"))
                                })
                                .unwrap_or_default()
                                .to_owned(),
                            _ => String::new(),
                        };
                        StageError::MountFromLaterStage {
                            from: d.from.clone(),
                            target,
                            span: d.span,
                        }
                    }
                });
            }
        }

        // Build args nothing consumes.
        let mut consumed: BTreeSet<&str> = meta_args.iter().map(|m| m.name.as_str()).collect();
        for &s in &reachable {
            for ins in &stages[s].instructions {
                if let Instruction::Arg(defs) = &ins.value {
                    consumed.extend(defs.iter().map(|d| d.name.value.as_str()));
                }
            }
        }
        let unused: Vec<&str> = opts
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|k| !consumed.contains(k) && !is_builtin_arg(k))
            .collect();
        if !unused.is_empty() {
            warnings.push(PlanWarning {
                rule: "UnusedBuildArgs",
                message: format!(
                    "one or more build-args [{}] were not consumed",
                    unused.join(" ")
                ),
                span: None,
            });
        }

        Ok(Self {
            stages,
            target,
            reachable,
            global,
            meta_args,
            build_args: opts.build_args.clone(),
            escape: dockerfile.escape,
            warnings,
        })
    }

    /// Every stage of the Dockerfile, in file order (index = stage index).
    #[must_use]
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The stage that is the result of the build.
    #[must_use]
    pub fn target(&self) -> usize {
        self.target
    }

    /// The stages the target needs (including itself), in file order: each stage comes
    /// after every stage it reads from. Other stages are never built.
    #[must_use]
    pub fn reachable(&self) -> &[usize] {
        &self.reachable
    }

    /// The global ARG scope (predefined args, then global `ARG`s with `--build-arg`
    /// overrides), which `FROM` lines were expanded with.
    #[must_use]
    pub fn global_args(&self) -> &Env {
        &self.global
    }

    /// The escape character of the Dockerfile.
    #[must_use]
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Warnings found while planning (`UndefinedArgInFrom`, `UnusedBuildArgs`).
    #[must_use]
    pub fn warnings(&self) -> &[PlanWarning] {
        &self.warnings
    }

    /// The proxy variables given as build args, as `RUN` sees them: each given under
    /// any case is set in upper and lower case (`HTTP_PROXY` and `http_proxy`). They are
    /// not part of the image, its history or the cache key.
    #[must_use]
    pub fn proxy_env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in PROXY_ARGS {
            // BuildKit visits the keys sorted; the last match wins.
            let value = self
                .build_args
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(p))
                .map(|(_, v)| v)
                .next_back();
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                out.push(((*p).to_owned(), v.clone()));
                out.push((p.to_lowercase(), v.clone()));
            }
        }
        out
    }

    /// The scope a stage starts with when its base is an image (or scratch): the image
    /// config's `Env` (plus the default `PATH` when it has none).
    #[must_use]
    pub fn image_scope<S: AsRef<str>>(&self, stage: usize, image_env: &[S]) -> Scope {
        let mut env = Env::from_list(image_env);
        if env.get("PATH").is_none() {
            env.set("PATH", DEFAULT_PATH);
        }
        Scope {
            stage,
            env,
            args: Vec::new(),
            lexer: Lexer::new(self.escape),
            global: self.global.clone(),
            build_args: self.build_args.clone(),
        }
    }

    /// The scope a stage starts with when its base is another stage: that stage's scope
    /// after its last instruction (ENV and ARG values carry over).
    #[must_use]
    pub fn stage_scope(&self, stage: usize, parent: &Scope) -> Scope {
        Scope {
            stage,
            ..parent.clone()
        }
    }
}

/// BuildKit's `validateCircularDependency`: depth-first over `COPY --from` / mount edges.
fn check_cycles(stages: &[Stage]) -> Result<(), StageError> {
    fn visit(
        stages: &[Stage],
        s: usize,
        visited: &mut BTreeSet<usize>,
        on_path: &mut BTreeSet<usize>,
        path: &mut Vec<Span>,
    ) -> bool {
        if !visited.insert(s) {
            return false;
        }
        on_path.insert(s);
        for d in &stages[s].deps {
            let DepSource::Stage(j) = d.source else {
                continue;
            };
            path.push(d.span);
            if on_path.contains(&j) || visit(stages, j, visited, on_path, path) {
                return true;
            }
            path.pop();
        }
        on_path.remove(&s);
        false
    }
    let mut visited = BTreeSet::new();
    for s in 0..stages.len() {
        let mut on_path = BTreeSet::new();
        let mut path = Vec::new();
        if visit(stages, s, &mut visited, &mut on_path, &mut path) {
            let name = if stages.len() == 1 {
                String::new()
            } else {
                stages[s].display_name()
            };
            return Err(StageError::Cycle {
                stage: name,
                span: path.last().copied().unwrap_or(stages[s].span),
                path,
            });
        }
    }
    Ok(())
}

/// The expansion state of one stage while the engine walks its instructions: the
/// environment (base image `Env`, then `ENV` and `ARG` values in order) and the `ARG`s
/// declared so far.
#[derive(Debug, Clone)]
pub struct Scope {
    stage: usize,
    env: Env,
    args: Vec<(String, Option<String>)>,
    lexer: Lexer,
    global: Env,
    build_args: BTreeMap<String, String>,
}

/// The result of [`Scope::step`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Step {
    /// The instruction with every field BuildKit expands replaced by its expansion
    /// (quotes removed). `ARG` defaults hold the value the ARG took (`None`: unset);
    /// `RUN` mounts have `literal` set to the resolved mount.
    pub instruction: Spanned<Instruction>,
    /// `UndefinedVar` warnings for variables used but not set.
    pub warnings: Vec<PlanWarning>,
}

impl Scope {
    /// The stage this scope belongs to.
    #[must_use]
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// The variables in scope, as `RUN` processes see them (without the proxy
    /// variables; see [`BuildPlan::proxy_env`]).
    #[must_use]
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Expands a word with the variables in scope.
    ///
    /// # Errors
    /// As [`Lexer::process`].
    pub fn expand_word(&self, word: &str) -> Result<Expansion, ExpandError> {
        self.lexer.process(word, &self.env)
    }

    /// Expands a word and splits it into words (as `EXPOSE` does).
    ///
    /// # Errors
    /// As [`Lexer::process`].
    pub fn expand_words(&self, word: &str) -> Result<Vec<String>, ExpandError> {
        self.lexer.process_words(word, &self.env)
    }

    /// The ARGs declared in this stage (and inherited from a parent stage), with their
    /// current values, as BuildKit lists them in `RUN` history lines
    /// (`RUN |2 A=1 B=2 cmd`): first declaration order, the value from the environment
    /// when set there (an `ENV` of the same name wins), else the ARG's own.
    #[must_use]
    pub fn declared_args(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.args {
            let value = self
                .env
                .get(k)
                .map(str::to_owned)
                .or_else(|| v.clone())
                .unwrap_or_default();
            match out.iter_mut().find(|(ok, _)| ok == k) {
                Some(slot) => slot.1 = value,
                None => out.push((k.clone(), value)),
            }
        }
        out
    }

    fn word(
        &self,
        word: &Spanned<String>,
        warnings: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<Spanned<String>, StageError> {
        let x = self
            .expand_word(&word.value)
            .map_err(|source| StageError::Expand {
                source,
                span: word.span,
            })?;
        self.report_unmatched(&x, warnings, span);
        Ok(Spanned::new(x.value, word.span))
    }

    fn opt_word(
        &self,
        word: &Option<Spanned<String>>,
        warnings: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<Option<Spanned<String>>, StageError> {
        word.as_ref()
            .map(|w| self.word(w, warnings, span))
            .transpose()
    }

    /// BuildKit's `UndefinedVar` rule: variables referenced but not set, except declared
    /// ARGs (which may be legitimately empty).
    fn report_unmatched(&self, x: &Expansion, warnings: &mut Vec<PlanWarning>, span: Span) {
        for name in &x.unmatched {
            if self.args.iter().any(|(k, _)| k == name) || NON_ENV_ARGS.contains(&name.as_str()) {
                continue;
            }
            let mut message = format!("Usage of undefined variable '${name}'");
            if let Some(s) = suggest(name, self.env.keys(), true) {
                message.push_str(&format!(" (did you mean ${s}?)"));
            }
            warnings.push(PlanWarning {
                rule: "UndefinedVar",
                message,
                span: Some(span),
            });
        }
    }

    /// Expands one instruction of the stage and applies it to the scope (`ENV` sets
    /// variables, `ARG` declares them with the `--build-arg` value, the default or the
    /// global value). Instructions must be given in order; `FROM` is not one of them.
    ///
    /// # Errors
    /// [`StageError::Expand`] for a word that cannot be expanded (including
    /// `${V:?message}`), [`StageError::Mount`] for a mount that is invalid once expanded.
    pub fn step(&mut self, ins: &Spanned<Instruction>) -> Result<Step, StageError> {
        let mut w = Vec::new();
        let span = ins.span;
        let out = match &ins.value {
            Instruction::Env(kvs) => {
                // Every word of one ENV sees the variables from before it.
                let expanded = self.key_values(kvs, &mut w, span)?;
                for kv in &expanded {
                    self.env.set(&kv.key.value, &kv.value.value);
                }
                Instruction::Env(expanded)
            }
            Instruction::Label(kvs) => Instruction::Label(self.key_values(kvs, &mut w, span)?),
            Instruction::Arg(defs) => Instruction::Arg(self.args_step(defs, &mut w, span)?),
            Instruction::Copy(c) => Instruction::Copy(self.copy(c, &mut w, span)?),
            Instruction::Add(a) => Instruction::Add(self.add(a, &mut w, span)?),
            Instruction::Workdir(p) => Instruction::Workdir(self.word(p, &mut w, span)?),
            Instruction::User(u) => Instruction::User(self.word(u, &mut w, span)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(self.word(s, &mut w, span)?),
            Instruction::Volume(v) => Instruction::Volume(
                v.iter()
                    .map(|p| self.word(p, &mut w, span))
                    .collect::<Result<_, _>>()?,
            ),
            Instruction::Expose(ports) => {
                // BuildKit's parser sorts the words (as written, before expansion); the
                // history text of EXPOSE shows the ports in that order.
                let mut sorted: Vec<&Spanned<String>> = ports.iter().collect();
                sorted.sort_by(|a, b| a.value.cmp(&b.value));
                let mut out = Vec::new();
                for p in sorted {
                    let words =
                        self.expand_words(&p.value)
                            .map_err(|source| StageError::Expand {
                                source,
                                span: p.span,
                            })?;
                    out.extend(words.into_iter().map(|x| Spanned::new(x, p.span)));
                }
                Instruction::Expose(out)
            }
            Instruction::Run(r) => Instruction::Run(self.run(r, &mut w, span)?),
            other => other.clone(),
        };
        Ok(Step {
            instruction: Spanned::new(out, span),
            warnings: w,
        })
    }

    fn key_values(
        &self,
        kvs: &[KeyValue],
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<Vec<KeyValue>, StageError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(&kv.key, w, span)?,
                    value: self.word(&kv.value, w, span)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    }

    fn args_step(
        &mut self,
        defs: &[ArgDef],
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<Vec<ArgDef>, StageError> {
        let mut out = Vec::new();
        for def in defs {
            let key = def.name.value.clone();
            let given = self.build_args.get(&key).cloned();
            let value = if let Some(v) = given {
                // A --build-arg wins; the default is not even evaluated.
                Some(v)
            } else if let Some(default) = &def.default {
                Some(self.word(default, w, span)?.value)
            } else {
                // `ARG X` alone takes the global value, if there is one.
                self.global.get(&key).map(str::to_owned)
            };
            if let Some(v) = &value {
                if !NON_ENV_ARGS.contains(&key.as_str()) {
                    self.env.set(&key, v);
                }
            }
            self.args.push((key, value.clone()));
            out.push(ArgDef {
                name: def.name.clone(),
                default: value.map(|v| {
                    Spanned::new(v, def.default.as_ref().map_or(def.name.span, |d| d.span))
                }),
                doc_comment: def.doc_comment.clone(),
            });
        }
        Ok(out)
    }

    fn sources(
        &self,
        sources: &[Source],
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<Vec<Source>, StageError> {
        sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => Ok(Source::Path(self.word(p, w, span)?)),
                Source::Heredoc(h) if h.expand => {
                    // Heredoc bodies expand variables but keep quotes, and always use
                    // the backslash escape.
                    let lex = Lexer::new('\\').skip_process_quotes(true);
                    let x = lex.process(&h.content, &self.env).map_err(|source| {
                        StageError::Expand {
                            source,
                            span: h.span,
                        }
                    })?;
                    self.report_unmatched(&x, w, span);
                    let mut h = h.clone();
                    h.content = x.value;
                    Ok(Source::Heredoc(h))
                }
                other => Ok(other.clone()),
            })
            .collect()
    }

    fn copy(
        &self,
        c: &CopyInstruction,
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<CopyInstruction, StageError> {
        Ok(CopyInstruction {
            sources: self.sources(&c.sources, w, span)?,
            dest: self.word(&c.dest, w, span)?,
            chown: self.opt_word(&c.chown, w, span)?,
            chmod: self.opt_word(&c.chmod, w, span)?,
            ..c.clone()
        })
    }

    fn add(
        &self,
        a: &AddInstruction,
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<AddInstruction, StageError> {
        Ok(AddInstruction {
            sources: self.sources(&a.sources, w, span)?,
            dest: self.word(&a.dest, w, span)?,
            chown: self.opt_word(&a.chown, w, span)?,
            chmod: self.opt_word(&a.chmod, w, span)?,
            checksum: self.opt_word(&a.checksum, w, span)?,
            ..a.clone()
        })
    }

    fn run(
        &self,
        r: &RunInstruction,
        w: &mut Vec<PlanWarning>,
        span: Span,
    ) -> Result<RunInstruction, StageError> {
        let mut mounts = Vec::with_capacity(r.mounts.len());
        for m in &r.mounts {
            let mut fields = Vec::with_capacity(m.fields.len());
            for (k, v) in &m.fields {
                let v = match v {
                    Some(v) => {
                        let x = self.expand_word(v).map_err(|source| StageError::Expand {
                            source,
                            span: m.raw.span,
                        })?;
                        self.report_unmatched(&x, w, span);
                        Some(x.value)
                    }
                    None => None,
                };
                fields.push((k.clone(), v));
            }
            let resolved: Mount = m
                .resolve(|word| self.expand_word(word).map(|x| x.value))
                .map_err(StageError::Mount)?;
            mounts.push(MountSpec {
                raw: m.raw.clone(),
                fields,
                literal: Some(resolved),
            });
        }
        Ok(RunInstruction {
            mounts,
            ..r.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn plan(text: &str, opts: &PlanOptions) -> Result<BuildPlan, StageError> {
        BuildPlan::new(&parse(text).expect("parses"), opts)
    }

    fn opts() -> PlanOptions {
        let p = PlatformSpec::new("linux", "amd64", "");
        PlanOptions::new(p.clone(), p)
    }

    #[test]
    fn duplicate_stage_names_warn_and_the_last_wins() {
        let p = plan(
            "FROM scratch AS a\nFROM a AS b\nFROM scratch AS A\nFROM a\n",
            &opts(),
        )
        .unwrap();
        let w: Vec<_> = p
            .warnings()
            .iter()
            .map(|w| (w.rule, w.message.as_str()))
            .collect();
        assert_eq!(
            w,
            [(
                "DuplicateStageName",
                "Duplicate stage name \"a\", stage names should be unique"
            )]
        );
        // FROM a means the last stage named a defined before it.
        assert!(matches!(p.stages()[1].base, StageBase::Stage(0)));
        assert!(matches!(p.stages()[3].base, StageBase::Stage(2)));
        let p = plan(
            "FROM scratch AS a\nFROM scratch AS a\n",
            &opts().target("a"),
        );
        assert_eq!(p.unwrap().target(), 1);
    }

    #[test]
    fn instruction_before_from() {
        let err = plan("ENV A=1\nFROM scratch\n", &opts()).unwrap_err();
        assert_eq!(err.to_string(), "1:1: no build stage in current context");
        let err = plan("ARG A=1\n", &opts()).unwrap_err();
        assert_eq!(err, StageError::NoStages);
    }

    #[test]
    fn copy_from_cycle() {
        let text = "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n";
        let err = plan(text, &opts()).unwrap_err();
        assert!(
            err.to_string()
                .contains("circular dependency detected on stage: a"),
            "{err}"
        );
        let err = plan("FROM scratch AS a\nCOPY --from=a / /\n", &opts()).unwrap_err();
        // A single stage is reported without a name, as BuildKit does.
        assert_eq!(err.message(), "circular dependency detected on stage: ");
    }

    #[test]
    fn onbuild_run_mount_from_reads_the_stage() {
        // The trigger runs in `child`: `child` then needs `input`, which only the trigger names.
        let text = "FROM scratch AS base\n\
                    ONBUILD RUN --mount=type=bind,from=input,target=/in true\n\
                    FROM scratch AS input\n\
                    FROM base AS child\n";
        let p = plan(text, &opts()).unwrap();
        let child = &p.stages()[2];
        assert_eq!(
            child.deps,
            [StageDep {
                source: DepSource::Stage(1),
                kind: DepKind::Onbuild,
                instruction: 0,
                from: "input".into(),
                span: p.stages()[0].instructions[0].span,
            }]
        );
        assert_eq!(p.reachable(), [0, 1, 2]);
    }

    #[test]
    fn copy_from_later_stage() {
        let text = "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\n";
        let err = plan(&format!("{text}FROM a\n"), &opts()).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
        );
        // Not an error when `a` is not needed.
        let p = plan(text, &opts()).unwrap();
        assert_eq!(p.reachable(), [1]);
    }

    #[test]
    fn mount_from_later_stage() {
        let text =
            "FROM scratch AS a\nRUN --mount=from=b,target=/x true\nFROM scratch AS b\nFROM a\n";
        let err = plan(text, &opts()).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot mount from stage \"b\" to \"/x\", stage needs to be defined before current command"
        );
    }

    #[test]
    fn copy_from_forms() {
        let text = "FROM scratch AS Build\nFROM scratch\nCOPY --from=0 / /\nCOPY --from=BUILD / /\nCOPY --from=alpine:3 / /\n";
        let p = plan(text, &opts()).unwrap();
        let deps: Vec<_> = p.stages()[1]
            .deps
            .iter()
            .map(|d| d.source.clone())
            .collect();
        assert_eq!(
            deps,
            [
                DepSource::Stage(0),
                DepSource::Stage(0),
                DepSource::Image("alpine:3".into())
            ]
        );
        assert_eq!(p.reachable(), [0, 1]);
        let err = plan("FROM scratch\nCOPY --from=3 / /\n", &opts()).unwrap_err();
        assert_eq!(err.message(), "invalid stage index 3");
        let err = plan(
            "ARG X=a\nFROM scratch AS a\nFROM scratch\nCOPY --from=$X / /\n",
            &opts(),
        )
        .unwrap_err();
        assert!(matches!(err, StageError::FromVariable { .. }));
    }

    #[test]
    fn from_stage_names_are_exact_and_scratch_is_special() {
        let p = plan(
            "FROM alpine AS base\nFROM base\nFROM Base\nFROM scratch\n",
            &opts(),
        )
        .unwrap();
        let bases: Vec<_> = p.stages().iter().map(|s| s.base.clone()).collect();
        assert_eq!(
            bases,
            [
                StageBase::Image("alpine".into()),
                StageBase::Stage(0),
                StageBase::Image("Base".into()),
                StageBase::Scratch
            ]
        );
    }

    #[test]
    fn mounts_from_stages_are_edges() {
        let text = "FROM scratch AS deps\nFROM scratch AS other\nFROM alpine\nRUN --mount=type=cache,from=deps,target=/c --mount=type=bind,from=node:20,target=/n true\n";
        let p = plan(text, &opts()).unwrap();
        assert_eq!(p.reachable(), [0, 2]);
        assert_eq!(
            p.stages()[2]
                .deps
                .iter()
                .map(|d| d.source.clone())
                .collect::<Vec<_>>(),
            [DepSource::Stage(0), DepSource::Image("node:20".into())]
        );
    }

    #[test]
    fn unused_build_args_warn() {
        let text = "ARG USED=1\nFROM scratch AS a\nARG INSTAGE\nFROM scratch AS b\nARG ELSEWHERE\n";
        let o = opts()
            .target("a")
            .build_arg("USED", "x")
            .build_arg("INSTAGE", "y")
            .build_arg("ELSEWHERE", "z")
            .build_arg("NOPE", "n")
            .build_arg("https_proxy", "p")
            .build_arg("BUILDKIT_INLINE_CACHE", "1");
        let p = plan(text, &o).unwrap();
        assert_eq!(p.warnings().len(), 1);
        assert_eq!(p.warnings()[0].rule, "UnusedBuildArgs");
        assert_eq!(
            p.warnings()[0].message,
            "one or more build-args [ELSEWHERE NOPE] were not consumed"
        );
    }

    #[test]
    fn undefined_arg_in_from_warns() {
        let p = plan("ARG VERSION=1\nFROM alpine:$VERSON\n", &opts()).unwrap();
        assert_eq!(
            p.warnings()[0].message,
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
        );
        assert_eq!(p.warnings()[0].rule, "UndefinedArgInFrom");
    }

    #[test]
    fn empty_platform() {
        let err = plan("ARG P\nFROM --platform=$P alpine\n", &opts()).unwrap_err();
        assert_eq!(err.message(), "empty platform value from expression $P");
    }

    #[test]
    fn global_arg_defaults_chain() {
        let text = "ARG A=1\nARG B=${A}2\nARG A=${A}x\nFROM alpine:$B-$A\n";
        let p = plan(text, &opts()).unwrap();
        assert_eq!(p.stages()[0].base, StageBase::Image("alpine:12-1x".into()));
        assert_eq!(p.global_args().get("TARGETPLATFORM"), Some("linux/amd64"));
    }

    #[test]
    fn step_expands_what_buildkit_expands() {
        let text = "FROM alpine\nENV D=/d P=80\nEXPOSE $P 443/udp\nLABEL \"k $D\"=\"v $D\"\nCMD echo $D\nRUN --mount=type=cache,target=$D/c echo $D\nCOPY <<EOF $D/f\n$D \"q\"\nEOF\n";
        let df = parse(text).unwrap();
        let p = BuildPlan::new(&df, &opts()).unwrap();
        let mut scope = p.image_scope::<&str>(0, &[]);
        let steps: Vec<Instruction> = p.stages()[0]
            .instructions
            .iter()
            .map(|i| scope.step(i).unwrap().instruction.value)
            .collect();
        match &steps[1] {
            Instruction::Expose(v) => {
                assert_eq!(
                    v.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(),
                    ["80", "443/udp"]
                );
            }
            other => panic!("{other:?}"),
        }
        match &steps[2] {
            Instruction::Label(kv) => {
                assert_eq!(kv[0].key.value, "k /d");
                assert_eq!(kv[0].value.value, "v /d");
            }
            other => panic!("{other:?}"),
        }
        match &steps[3] {
            Instruction::Cmd(c) => assert_eq!(c.to_vec(), ["echo $D"]),
            other => panic!("{other:?}"),
        }
        match &steps[4] {
            Instruction::Run(r) => match &r.mounts[0].literal {
                Some(Mount::Cache(c)) => assert_eq!(c.target, "/d/c"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match &steps[5] {
            Instruction::Copy(c) => {
                assert_eq!(c.dest.value, "/d/f");
                match &c.sources[0] {
                    Source::Heredoc(h) => assert_eq!(h.content, "/d \"q\"\n"),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn undefined_var_warning() {
        let df =
            parse("FROM alpine\nARG DECLARED\nENV HOME_DIR=/h\nWORKDIR $HOME_DIRR/$DECLARED\n")
                .unwrap();
        let p = BuildPlan::new(&df, &opts()).unwrap();
        let mut scope = p.image_scope::<&str>(0, &[]);
        let mut warnings = Vec::new();
        for i in &p.stages()[0].instructions {
            warnings.extend(scope.step(i).unwrap().warnings);
        }
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].message,
            "Usage of undefined variable '$HOME_DIRR' (did you mean $HOME_DIR?)"
        );
    }

    #[test]
    fn declared_args_follow_env() {
        let df = parse("FROM alpine\nARG A=1 B\nENV A=2\nARG A=3\n").unwrap();
        let p = BuildPlan::new(&df, &opts().build_arg("B", "b")).unwrap();
        let mut scope = p.image_scope::<&str>(0, &[]);
        for i in &p.stages()[0].instructions {
            scope.step(i).unwrap();
        }
        assert_eq!(
            scope.declared_args(),
            [
                ("A".to_owned(), "3".to_owned()),
                ("B".to_owned(), "b".to_owned())
            ]
        );
    }

    #[test]
    fn outline_and_targets() {
        let text = "\
# GO_VERSION the Go toolchain
ARG GO_VERSION=1.22
ARG UNUSED=x
# build compiles the binary
FROM golang:${GO_VERSION} AS build
# VERSION stamped into the binary
ARG VERSION=dev
RUN --mount=type=secret,id=token,required --mount=type=ssh true
FROM scratch AS release
COPY --from=build /out /
FROM scratch
";
        let df = parse(text).unwrap();
        let targets = list_targets(&df).unwrap();
        assert_eq!(
            targets
                .iter()
                .map(|t| (t.name.as_str(), t.default))
                .collect::<Vec<_>>(),
            [("build", false), ("release", false), ("", true)]
        );
        assert_eq!(targets[0].description, "compiles the binary");
        let p = BuildPlan::new(&df, &opts().target("release").build_arg("VERSION", "1.0")).unwrap();
        let o = p.outline().unwrap();
        assert_eq!(o.name, "release");
        let args: Vec<_> = o
            .args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str(), a.description.as_str()))
            .collect();
        assert_eq!(
            args,
            [
                ("GO_VERSION", "1.22", "the Go toolchain"),
                ("VERSION", "1.0", "stamped into the binary")
            ]
        );
        assert_eq!(o.secrets.len(), 1);
        assert_eq!(o.secrets[0].id, "token");
        assert!(o.secrets[0].required);
        assert_eq!(o.ssh[0].id, "default");
    }

    #[test]
    fn every_error_displays_with_location() {
        let errors = [
            plan("ARG I\nFROM $I\n", &opts()).unwrap_err(),
            plan("FROM ${x\n", &opts()).unwrap_err(),
        ];
        for e in errors {
            let span = e.span().expect("has a location");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}:{}: ", span.start_line, span.start_column)),
                "{e}"
            );
        }
    }
}
