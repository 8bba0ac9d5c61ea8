//! Parse errors. Every error carries the [`Span`] of the text it is about; its
//! `Display` is `line:column: message` (BuildKit's wording for the message), so a
//! caller only prepends the file name.

use crate::ast::Span;

/// An error from parsing a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A physical line is longer than BuildKit's scanner accepts.
    #[error("{span}: dockerfile line greater than max allowed size of {max}")]
    LineTooLong {
        /// The long line.
        span: Span,
        /// The limit in bytes (65535).
        max: usize,
    },
    /// The text is not UTF-8.
    #[error("{span}: the Dockerfile is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the first invalid byte is.
        span: Span,
    },
    /// The file has no instruction (empty, or only comments and blank lines).
    #[error("{span}: file with no instructions")]
    NoInstructions {
        /// The end of the file.
        span: Span,
    },
    /// `# escape=` with a value other than `\` or `` ` ``.
    #[error("{span}: invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
        /// The directive line.
        span: Span,
    },
    /// A parser directive given twice.
    #[error("{span}: only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive name.
        name: String,
        /// The second occurrence.
        span: Span,
    },
    /// End of file before a heredoc's terminator line.
    #[error(
        "{span}: unterminated heredoc {name:?}: expected a line {name:?} before the end of the file"
    )]
    UnterminatedHeredoc {
        /// The heredoc name (its terminator).
        name: String,
        /// From the instruction to the end of the file.
        span: Span,
    },
    /// A heredoc word (`<<...`) that cannot be lexed, e.g. an unterminated quote.
    #[error("{span}: failed to process {word:?}: {message}")]
    HeredocSyntax {
        /// The word.
        word: String,
        /// What is wrong.
        message: String,
        /// The instruction line.
        span: Span,
    },
    /// An exec-form JSON array with an element that is not a string.
    #[error("{span}: when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings {
        /// The array.
        span: Span,
    },
    /// `ENV key` without a value (legacy form needs two arguments).
    #[error("{span}: {instruction} must have two arguments")]
    MissingValue {
        /// `ENV` or `LABEL`.
        instruction: &'static str,
        /// The arguments.
        span: Span,
    },
    /// In the `key=value` form of ENV/LABEL a word has no `=`.
    #[error("{span}: Syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals {
        /// The word without `=`.
        word: String,
        /// The word.
        span: Span,
    },
    /// An instruction keyword that does not exist.
    #[error("{span}: unknown instruction: {name}{}", suggestion_suffix(.suggestion))]
    UnknownInstruction {
        /// The keyword as written.
        name: String,
        /// A close known instruction, if any.
        suggestion: Option<String>,
        /// The keyword.
        span: Span,
    },
    /// A `--flag` the instruction does not take.
    #[error("{span}: unknown flag: {flag}{}", suggestion_suffix(.suggestion))]
    UnknownFlag {
        /// The flag as written, without `=value` (`--boo`).
        flag: String,
        /// The instruction.
        instruction: &'static str,
        /// A close known flag, if any (`--chown`).
        suggestion: Option<String>,
        /// The flag.
        span: Span,
    },
    /// A known flag used wrongly.
    #[error("{span}: {problem}")]
    BadFlag {
        /// What is wrong.
        problem: FlagProblem,
        /// The flag.
        span: Span,
    },
    /// Too few or too many arguments.
    #[error("{span}: {}", arity_message(.instruction, *.expected))]
    Arity {
        /// The instruction keyword, upper case.
        instruction: &'static str,
        /// What it takes.
        expected: Arity,
        /// The instruction.
        span: Span,
    },
    /// `ENV =v`, `LABEL =v`, `ARG =v`.
    #[error("{span}: {instruction} names can not be blank")]
    BlankName {
        /// The instruction keyword.
        instruction: &'static str,
        /// The empty name's word.
        span: Span,
    },
    /// A stage name after `AS` that is not `^[a-z][a-z0-9-_.]*$` once lower-cased.
    #[error(
        "{span}: invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name as written.
        name: String,
        /// The name.
        span: Span,
    },
    /// An ONBUILD trigger that is not allowed (`ONBUILD`, `FROM`, `MAINTAINER`).
    #[error("{span}: {}", onbuild_message(.trigger))]
    OnbuildTrigger {
        /// The trigger keyword, upper case.
        trigger: String,
        /// The trigger.
        span: Span,
    },
    /// `COPY src <<EOF`: a heredoc as the destination.
    #[error("{span}: {instruction} cannot accept a heredoc as a destination")]
    HeredocDestination {
        /// `COPY` or `ADD`.
        instruction: &'static str,
        /// The destination.
        span: Span,
    },
    /// `SHELL` in shell form.
    #[error("{span}: SHELL requires the arguments to be in JSON form")]
    ShellNotJson {
        /// The instruction.
        span: Span,
    },
    /// `VOLUME ""` or `VOLUME [" "]`.
    #[error("{span}: VOLUME specified can not be an empty string")]
    EmptyVolume {
        /// The empty path.
        span: Span,
    },
    /// `HEALTHCHECK NONE x`.
    #[error("{span}: HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArgs {
        /// The instruction.
        span: Span,
    },
    /// `HEALTHCHECK CMD` without a command.
    #[error("{span}: Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand {
        /// The instruction.
        span: Span,
    },
    /// `HEALTHCHECK X` with X not `CMD` or `NONE`.
    #[error("{span}: Unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType {
        /// The type word, upper-cased.
        kind: String,
        /// The type word.
        span: Span,
    },
    /// An invalid `RUN --mount` option.
    #[error("{span}: {problem}")]
    Mount {
        /// What is wrong.
        problem: MountProblem,
        /// The `--mount` flag.
        span: Span,
    },
}

impl Error {
    /// Where the error is.
    pub fn span(&self) -> Span {
        match self {
            Error::LineTooLong { span, .. }
            | Error::NoInstructions { span }
            | Error::InvalidUtf8 { span }
            | Error::InvalidEscape { span, .. }
            | Error::DuplicateDirective { span, .. }
            | Error::UnterminatedHeredoc { span, .. }
            | Error::HeredocSyntax { span, .. }
            | Error::JsonNotStrings { span }
            | Error::MissingValue { span, .. }
            | Error::MissingEquals { span, .. }
            | Error::UnknownInstruction { span, .. }
            | Error::UnknownFlag { span, .. }
            | Error::BadFlag { span, .. }
            | Error::Arity { span, .. }
            | Error::BlankName { span, .. }
            | Error::InvalidStageName { span, .. }
            | Error::OnbuildTrigger { span, .. }
            | Error::HeredocDestination { span, .. }
            | Error::ShellNotJson { span }
            | Error::EmptyVolume { span }
            | Error::HealthcheckNoneArgs { span }
            | Error::HealthcheckMissingCommand { span }
            | Error::HealthcheckType { span, .. }
            | Error::Mount { span, .. } => *span,
        }
    }

    /// The message without the `line:column: ` prefix.
    pub fn message(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.span());
        match full.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None => full,
        }
    }
}

/// How many arguments an instruction takes (for [`Error::Arity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arity {
    /// Exactly one (MAINTAINER, USER, WORKDIR, STOPSIGNAL).
    ExactlyOne,
    /// At least one (ENV, LABEL, ARG, ONBUILD, HEALTHCHECK, EXPOSE, VOLUME, SHELL).
    AtLeastOne,
    /// Sources and a destination (COPY, ADD).
    SourcesAndDest,
    /// `FROM image` or `FROM image AS name`.
    OneOrThree,
    /// A multiple of three node values (ENV/LABEL triples).
    Triples,
}

fn arity_message(instruction: &str, arity: Arity) -> String {
    match arity {
        Arity::ExactlyOne => format!("{instruction} requires exactly one argument"),
        Arity::AtLeastOne => format!("{instruction} requires at least one argument"),
        Arity::SourcesAndDest => format!(
            "{instruction} requires at least two arguments, but only one was provided. Destination could not be determined"
        ),
        Arity::OneOrThree => "FROM requires either one or three arguments".to_owned(),
        Arity::Triples => format!("Bad input to {instruction}, too many arguments"),
    }
}

fn onbuild_message(trigger: &str) -> String {
    if trigger == "ONBUILD" {
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned()
    } else {
        format!("{trigger} isn't allowed as an ONBUILD trigger")
    }
}

fn suggestion_suffix<S: std::fmt::Display>(s: &Option<S>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// A misuse of a known instruction flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagProblem {
    /// `--flag` without `=value` for a flag that needs one, or `--bool=`.
    #[error("missing a value on flag: {flag}")]
    MissingValue {
        /// The flag (`--from`).
        flag: String,
    },
    /// A boolean flag with a value other than `true`/`false`.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotBoolean {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: {flag}")]
    Duplicate {
        /// The flag.
        flag: String,
    },
    /// A flag word that does not start with `--` (only from hand-built nodes).
    #[error("arg should start with -- : {word}")]
    NotAFlag {
        /// The word.
        word: String,
    },
    /// A value the flag does not accept (`--network=bridge`).
    #[error("{message}")]
    InvalidValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// BuildKit's message (`invalid network mode "bridge"`).
        message: String,
    },
}

/// What is wrong with a `RUN --mount` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountProblem {
    /// The option is not valid CSV (a stray or unterminated `"`).
    #[error("failed to parse csv mounts: {message}")]
    Csv {
        /// What the CSV reader found.
        message: String,
    },
    /// A key that no mount type knows.
    #[error("unexpected key '{key}' in '{field}'{}", suggestion_suffix(.suggestion))]
    UnknownKey {
        /// The key, lower-cased.
        key: String,
        /// The whole `key=value` field.
        field: String,
        /// A close known key.
        suggestion: Option<String>,
    },
    /// A key that the mount type does not take.
    #[error("unexpected key '{key}' for mount type '{mount_type}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type.
        mount_type: String,
    },
    /// `type=` with an unknown type.
    #[error("unsupported mount type {value:?}")]
    UnknownType {
        /// The value.
        value: String,
    },
    /// `sharing=` with an unknown mode.
    #[error("unsupported sharing value {value:?}")]
    UnknownSharing {
        /// The value.
        value: String,
    },
    /// A field without `=` that needs a value.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// A value that does not parse (`ro=maybe`, `size=lots`, `mode=9`).
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `from=$VAR`: BuildKit does not expand `from`.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    /// `mode`/`uid`/`gid` on a bind or tmpfs mount.
    #[error("{key} not allowed for {mount_type:?} type mounts")]
    FileInfoNotAllowed {
        /// `mode`, `uid` or `gid`.
        key: &'static str,
        /// The mount type.
        mount_type: String,
    },
    /// A secret mount with `from`.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with `sharing`.
    #[error("secret mount should not define sharing")]
    SecretSharing,
    /// A secret mount with neither id, source nor target.
    #[error("invalid secret mount. one of source, target required")]
    SecretNoId,
    /// A secret mount with both `source` and `id`.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for {mount_type} mount")]
    SharingNotCache {
        /// The mount type.
        mount_type: String,
    },
    /// Expanding a value failed.
    #[error("expanding {key}={value:?}: {message}")]
    Expansion {
        /// The key.
        key: String,
        /// The raw value.
        value: String,
        /// The expander's message.
        message: String,
    },
}
