//! The syntax tree: source spans, the raw line-parser nodes (BuildKit's
//! `parser.Node`) and the typed instructions (BuildKit's `instructions` package).
//!
//! Values that Dockerfile semantics expand later (`$VAR`, quotes in ENV values, ...)
//! are kept here exactly as written; the stage model expands them.

use std::fmt;
use std::ops::{Deref, Range};
use std::time::Duration;

/// A region of the source text.
///
/// Byte offsets index the text given to the parser (after nothing was removed: a
/// leading byte-order mark still counts). Lines and columns are 1-based; columns
/// count Unicode scalar values. `end_line`/`end_column` point just past the last
/// character (the column after it), so an empty span has equal start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset just past the last byte.
    pub end: usize,
    /// Line of the first character (1-based).
    pub start_line: u32,
    /// Column of the first character (1-based, in characters).
    pub start_column: u32,
    /// Line of the end position (1-based).
    pub end_line: u32,
    /// Column of the end position (1-based, in characters, exclusive).
    pub end_column: u32,
}

impl Span {
    /// The byte range of the span.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The smallest span covering `self` and `other`.
    #[must_use]
    pub fn to(self, other: Span) -> Span {
        let (first, _) = if self.start <= other.start {
            (self, other)
        } else {
            (other, self)
        };
        let last = if self.end >= other.end { self } else { other };
        Span {
            start: first.start,
            start_line: first.start_line,
            start_column: first.start_column,
            end: last.end,
            end_line: last.end_line,
            end_column: last.end_column,
        }
    }
}

impl fmt::Display for Span {
    /// `line:column` of the start.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start_line, self.start_column)
    }
}

/// A value with the span of source text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }

    /// Applies `f` to the value, keeping the span.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }

    /// The value, dropping the span.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Spanned<String> {
    /// The value as a `&str`.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// A parser directive from the leading comment block (`# syntax=...`,
/// `# escape=...`, `# check=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value with surrounding whitespace removed.
    pub value: String,
    /// The directive line.
    pub span: Span,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// BuildKit's rule name, e.g. `NoEmptyContinuation`.
    pub rule: &'static str,
    /// One-line message, as BuildKit words it.
    pub message: String,
    /// Longer explanation.
    pub detail: &'static str,
    /// Documentation link for the rule.
    pub url: &'static str,
    /// Where it applies.
    pub span: Span,
}

/// A heredoc attached to an instruction (`RUN <<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word with quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u64,
    /// Whether variables in the body are expanded (the name was not quoted).
    pub expand: bool,
    /// Whether leading tabs are to be removed (`<<-`).
    pub chomp: bool,
    /// The body as written, each line with its line ending; the terminator line is
    /// not included. Chomping is not applied (see [`chomp_heredoc`]).
    pub content: String,
    /// The body and its terminator line.
    pub span: Span,
}

/// Removes the leading tab characters of every line (what `<<-` asks for).
pub fn chomp_heredoc(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// One instruction as the line parser sees it (BuildKit's `parser.Node`): keyword,
/// flags and arguments split by the instruction's rules, before any expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`FROM`, `from`, `Run`, or an unknown word).
    pub keyword: Spanned<String>,
    /// Leading `--flag` words, quotes removed (`--chown="a b"` is `--chown=a b`).
    pub flags: Vec<Spanned<String>>,
    /// The arguments, shaped by the instruction as BuildKit's parser does:
    ///
    /// | instruction | arguments |
    /// | --- | --- |
    /// | FROM, EXPOSE | the rest split on `[\t\v\f\r ]+`, no quote processing |
    /// | ADD, COPY, VOLUME | JSON array elements, else split like FROM |
    /// | RUN, CMD, ENTRYPOINT, SHELL | JSON array elements, else the rest as one argument |
    /// | ENV, LABEL | `key`, `value`, `sep` triples (`sep` is `=` or empty for `KEY value`) |
    /// | ARG | one argument per word, quotes kept |
    /// | MAINTAINER, USER, WORKDIR, STOPSIGNAL | the rest as one argument |
    /// | HEALTHCHECK | the type word (`CMD`, `NONE`), then the rest like CMD |
    /// | ONBUILD | none; see [`Node::trigger`] |
    ///
    /// For an unknown instruction this is the rest of the line as one argument
    /// (the dump shows `""`, as BuildKit's does).
    pub args: Vec<Spanned<String>>,
    /// ONBUILD's nested instruction.
    pub trigger: Option<Box<Node>>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    /// Heredocs read after the instruction line (RUN/COPY/ADD only).
    pub heredocs: Vec<Heredoc>,
    /// The instruction line with continuations joined and comments dropped.
    pub original: String,
    /// The comment lines directly above the instruction, `#` and surrounding
    /// whitespace removed. An empty `#` line and each instruction reset the list;
    /// blank lines do not.
    pub comments: Vec<String>,
    /// The whole instruction, including continuation lines and heredoc bodies.
    pub span: Span,
}

/// The result of the line parser: every instruction of a Dockerfile as a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives of the leading comment block, in order.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

/// A parsed Dockerfile: typed instructions with spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives of the leading comment block, in order.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``); expansion needs it.
    pub escape: char,
    /// Instructions in file order; each span covers the whole instruction.
    pub instructions: Vec<Spanned<Instruction>>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}

impl Ast {
    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}

/// A Dockerfile instruction with its arguments and flags, before expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction {
    /// `FROM [--platform=P] image [AS name]`
    From(FromInstruction),
    /// `RUN [--mount=...] [--network=...] [--security=...] command`
    Run(RunInstruction),
    /// `CMD command`
    Cmd(Command),
    /// `ENTRYPOINT command`; an empty exec form (`ENTRYPOINT []`) clears the
    /// entrypoint (BuildKit stores no entrypoint rather than an empty one).
    Entrypoint(Command),
    /// `SHELL ["exe", "arg"]` (exec form only)
    Shell(Vec<Spanned<String>>),
    /// `LABEL k=v ...`
    Label(Vec<KeyValue>),
    /// `MAINTAINER name` (deprecated)
    Maintainer(Spanned<String>),
    /// `EXPOSE port[/proto] ...`, in the order written
    Expose(Vec<Spanned<String>>),
    /// `ENV k=v ...`
    Env(Vec<KeyValue>),
    /// `ADD [flags] src... dest`
    Add(AddInstruction),
    /// `COPY [flags] src... dest`
    Copy(CopyInstruction),
    /// `VOLUME path...` (each trimmed, never empty)
    Volume(Vec<Spanned<String>>),
    /// `USER user[:group]`
    User(Spanned<String>),
    /// `WORKDIR path`
    Workdir(Spanned<String>),
    /// `ARG name[=default] ...`
    Arg(Vec<ArgDef>),
    /// `ONBUILD instruction`
    Onbuild(OnbuildInstruction),
    /// `STOPSIGNAL signal`
    StopSignal(Spanned<String>),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`
    Healthcheck(Healthcheck),
}

impl Instruction {
    /// The upper-case keyword (`FROM`, `RUN`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInstruction {
    /// The image reference or stage name, unexpanded.
    pub image: Spanned<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<Spanned<String>>,
    /// The stage name after `AS`, lower-cased and validated
    /// (`^[a-z][a-z0-9-_.]*$`).
    pub name: Option<Spanned<String>>,
    /// The comment lines above the instruction.
    pub comments: Vec<String>,
    /// The description of the stage: the rest of the first comment line above that
    /// starts with `<name> ` (BuildKit's doc comment); empty if none.
    pub doc_comment: String,
}

/// A command in shell form or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CMD echo hi`: the text, run by the stage's SHELL. The text is empty only
    /// for a bare `RUN`/`CMD`/`ENTRYPOINT` (BuildKit then uses the shell with no
    /// command: `CMD` alone sets `["/bin/sh", "-c"]`).
    Shell(Spanned<String>),
    /// `CMD ["echo", "hi"]`: the argument vector (may be empty for `CMD []`).
    Exec(Vec<Spanned<String>>),
}

impl Command {
    /// BuildKit's command line: the exec vector, or the shell text as one element
    /// (no element for a bare instruction).
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Command::Shell(s) if s.value.is_empty() => Vec::new(),
            Command::Shell(s) => vec![s.value.clone()],
            Command::Exec(v) => v.iter().map(|s| s.value.clone()).collect(),
        }
    }
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstruction {
    /// The command; a heredoc RUN is shell form whose text is the line
    /// (`<<EOF`, `<<EOF python3`, ...).
    pub command: Command,
    /// Heredoc bodies, raw (not chomped; each records `chomp`).
    pub heredocs: Vec<Heredoc>,
    /// `--mount` options in order.
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: Option<Spanned<NetworkMode>>,
    /// `--security`.
    pub security: Option<Spanned<SecurityMode>>,
    /// `--device` options, raw (not supported by the builder yet).
    pub devices: Vec<Spanned<String>>,
    /// The flag names given, sorted (`mount`, `network`, ...).
    pub flags_used: Vec<String>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkMode {
    /// `default`: the builder's default network.
    Default,
    /// `none`: no network.
    None,
    /// `host`: the host's network.
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityMode {
    /// `sandbox` (the default).
    Sandbox,
    /// `insecure`: full privileges (needs an entitlement).
    Insecure,
}

/// One `RUN --mount=...` option as written, split into its CSV fields.
///
/// Keys were checked when the Dockerfile was parsed, and values without `$` were
/// validated too. [`MountSpec::resolve`] expands the values and builds the typed
/// [`Mount`]; [`MountSpec::literal`] is the typed mount when no value needs
/// expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The option value after `--mount=`.
    pub raw: Spanned<String>,
    /// `key` (lower-cased) and optional `=value` (raw), in order.
    pub fields: Vec<(String, Option<String>)>,
    /// The typed mount, when no field value contains `$`.
    pub literal: Option<Mount>,
}

/// A typed `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mount {
    /// `type=bind` (the default type).
    Bind(BindMount),
    /// `type=cache`.
    Cache(CacheMount),
    /// `type=tmpfs`.
    Tmpfs(TmpfsMount),
    /// `type=secret`.
    Secret(SecretMount),
    /// `type=ssh`.
    Ssh(SshMount),
}

/// `type=bind`: a read-only (by default) view of the context or another stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindMount {
    /// `target`/`dst`/`destination`.
    pub target: String,
    /// `source`/`src`: path inside `from` (default: its root).
    pub source: Option<String>,
    /// `from`: a stage, image or named context (default: the build context).
    pub from: Option<String>,
    /// `readonly`/`ro` (default true) or `readwrite`/`rw`.
    pub readonly: bool,
}

/// `type=cache`: a persistent cache directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheMount {
    /// `target`/`dst`/`destination`.
    pub target: String,
    /// `id` (default: the target path, cleaned).
    pub id: Option<String>,
    /// `sharing`.
    pub sharing: CacheSharing,
    /// `from`: stage or image whose contents seed the cache.
    pub from: Option<String>,
    /// `source`/`src`: path inside `from`.
    pub source: Option<String>,
    /// `readonly`/`ro` (default false).
    pub readonly: bool,
    /// `mode` (octal) of the cache root.
    pub mode: Option<u32>,
    /// `uid` of the cache root.
    pub uid: Option<u32>,
    /// `gid` of the cache root.
    pub gid: Option<u32>,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheSharing {
    /// Concurrent builds use the cache at the same time (the default).
    #[default]
    Shared,
    /// Concurrent builds each get their own copy.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

/// `type=tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TmpfsMount {
    /// `target`/`dst`/`destination`.
    pub target: String,
    /// `size` in bytes (`64m` and the like are accepted).
    pub size: Option<u64>,
}

/// `type=secret`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretMount {
    /// `id` (or `source`/`src`): the secret's id. Default: the base name of target.
    pub id: Option<String>,
    /// `target`: file path (default `/run/secrets/<id>`).
    pub target: Option<String>,
    /// `env`: also (or only) expose the secret as this environment variable.
    pub env: Option<String>,
    /// `required`: fail when the secret is not provided.
    pub required: bool,
    /// `mode` (octal, default 0400).
    pub mode: Option<u32>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
}

/// `type=ssh`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshMount {
    /// `id` (default `default`).
    pub id: Option<String>,
    /// `target`: socket path.
    pub target: Option<String>,
    /// `required`.
    pub required: bool,
    /// `mode` (octal, default 0600).
    pub mode: Option<u32>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
}

/// One `key=value` of ENV or LABEL. Both sides are unexpanded, quotes kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Spanned<String>,
    /// The value (for `ENV k v`, the whole rest of the line).
    pub value: Spanned<String>,
    /// Written in the legacy `KEY value` form (no `=`).
    pub legacy: bool,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The name (unexpanded).
    pub name: Spanned<String>,
    /// The default value after `=`, unexpanded, quotes kept.
    pub default: Option<Spanned<String>>,
    /// The description from the comment lines above (`# name does this`): the
    /// rest of the first comment line that starts with `<name> `; empty if none.
    pub doc_comment: String,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path, URL or glob as written.
    Path(Spanned<String>),
    /// An inline file from a heredoc.
    Heredoc(HeredocSource),
}

/// A heredoc used as a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocSource {
    /// The heredoc name, which is also the file name.
    pub name: String,
    /// The body, chomped if it was `<<-`.
    pub content: String,
    /// Whether variables in the body are expanded.
    pub expand: bool,
    /// Where the `<<NAME` word is.
    pub span: Span,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstruction {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination (unexpanded).
    pub dest: Spanned<String>,
    /// `--from`: stage name, index or image.
    pub from: Option<Spanned<String>>,
    /// `--chown`.
    pub chown: Option<Spanned<String>>,
    /// `--chmod`.
    pub chmod: Option<Spanned<String>>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns, in order.
    pub exclude: Vec<Spanned<String>>,
    /// The exec (JSON) form was used.
    pub json: bool,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddInstruction {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination (unexpanded).
    pub dest: Spanned<String>,
    /// `--chown`.
    pub chown: Option<Spanned<String>>,
    /// `--chmod`.
    pub chmod: Option<Spanned<String>>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns, in order.
    pub exclude: Vec<Spanned<String>>,
    /// `--checksum` (for URLs and git sources).
    pub checksum: Option<Spanned<String>>,
    /// `--keep-git-dir` when given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack` when given.
    pub unpack: Option<bool>,
    /// The exec (JSON) form was used.
    pub json: bool,
}

/// `ONBUILD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildInstruction {
    /// The trigger text stored in the image (BuildKit's `Expression`): the line
    /// without `ONBUILD`, heredoc bodies appended.
    pub expression: String,
    /// The trigger as parsed by the line parser. It is turned into an
    /// [`Instruction`] only when a child image runs it
    /// ([`OnbuildInstruction::trigger`]), as BuildKit does.
    pub node: Box<Node>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [flags] CMD command`.
    Cmd(HealthcheckCmd),
}

/// `HEALTHCHECK CMD` with its options. Zero/absent values mean "the default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCmd {
    /// The check command.
    pub command: Command,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

impl HealthcheckCmd {
    /// The image config `Test` value: `["CMD", args...]` or `["CMD-SHELL", text]`.
    pub fn test(&self) -> Vec<String> {
        match &self.command {
            Command::Shell(s) => vec!["CMD-SHELL".to_owned(), s.value.clone()],
            Command::Exec(v) => std::iter::once("CMD".to_owned())
                .chain(v.iter().map(|s| s.value.clone()))
                .collect(),
        }
    }
}
