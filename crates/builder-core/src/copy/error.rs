//! The one error type of COPY and ADD.

use std::io;
use std::path::PathBuf;

use dockerfile::IgnoreError;

/// Where a COPY source was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The build context.
    Context,
    /// A stage or image (`--from`).
    Stage,
}

/// What can go wrong in COPY and ADD, with what a user needs to fix it: the instruction
/// (`COPY`/`ADD`), the path or URL, the value of the flag.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CopyError {
    /// A source that names no wildcard does not exist (or is excluded by .dockerignore).
    #[error("{instr} failed: file not found in build context or excluded by .dockerignore: {path}")]
    NotFoundInContext {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The source as written.
        path: String,
    },
    /// A `--from` source does not exist in the stage or image.
    #[error("{instr} --from failed: {path}: not found in the source stage or image")]
    NotFoundInStage {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The source as written.
        path: String,
    },
    /// Several files were to be copied onto one file path.
    #[error(
        "When using {instr} with more than one source file, the destination must be a \
         directory and end with a / (destination {dest})"
    )]
    SeveralSourcesNeedDirectory {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The destination as written.
        dest: String,
    },
    /// A file or symlink would replace a directory.
    #[error("{instr} failed: cannot replace directory {path} with a file")]
    ReplaceDirWithFile {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The destination path in the image.
        path: String,
    },
    /// A directory would be written where the image has a file or symlink.
    #[error("{instr} failed: cannot copy a directory to non-directory {path}")]
    CopyToNonDir {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The destination path in the image.
        path: String,
    },
    /// A destination parent is a file in the image.
    #[error("{instr} failed: cannot create directory {path}: a parent is not a directory")]
    NotADirectory {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The path that should have been a directory.
        path: String,
    },
    /// Symlinks that loop while resolving a path.
    #[error("{instr} failed: too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The path being resolved.
        path: String,
    },
    /// `--chmod` is neither octal up to 07777 nor a symbolic mode (BuildKit's text).
    #[error(
        "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    )]
    ChmodNotOctal {
        /// The value given.
        value: String,
    },
    /// `--chmod` is not a valid symbolic mode.
    #[error(
        "invalid chmod parameter: '{value}': not a valid symbolic mode (for example u=rw,go=r or +x)"
    )]
    ChmodSyntax {
        /// The value given.
        value: String,
    },
    /// `--chown` cannot be parsed.
    #[error("invalid --chown value {value:?}: {reason}")]
    ChownSyntax {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `--chown` user name is not in the image's /etc/passwd.
    #[error(
        "{instr} --chown={value}: unable to find user {name}: no matching entries in passwd file"
    )]
    UnknownUser {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The whole `--chown` value.
        value: String,
        /// The user name.
        name: String,
    },
    /// A `--chown` group name is not in the image's /etc/group.
    #[error(
        "{instr} --chown={value}: unable to find group {name}: no matching entries in group file"
    )]
    UnknownGroup {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The whole `--chown` value.
        value: String,
        /// The group name.
        name: String,
    },
    /// `--link` builds the layer without the image, so names cannot be resolved.
    #[error(
        "{instr} --link --chown={value}: user and group names cannot be resolved with --link \
         (the layer is built apart from the image); use numeric ids"
    )]
    ChownNameWithLink {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The whole `--chown` value.
        value: String,
    },
    /// COPY was given a URL.
    #[error("source can't be a URL for COPY: {url}")]
    UrlForCopy {
        /// The URL.
        url: String,
    },
    /// COPY was given a git repository.
    #[error("source can't be a git ref for COPY: {url}")]
    GitForCopy {
        /// The repository address.
        url: String,
    },
    /// ADD of a git repository.
    #[error(
        "ADD {url}: adding git repositories is not supported yet; clone it in a RUN step or a previous stage instead"
    )]
    GitNotSupported {
        /// The repository address.
        url: String,
    },
    /// `--checksum` with a local source or several sources.
    #[error("{reason}")]
    ChecksumUse {
        /// BuildKit's text (`checksum requires HTTP(S) or Git sources`, ...).
        reason: &'static str,
    },
    /// `--checksum` is not `algorithm:hex`.
    #[error("invalid --checksum {value:?}: {reason}")]
    ChecksumFormat {
        /// The value given.
        value: String,
        /// `invalid checksum digest format`, `unsupported digest algorithm`, ...
        reason: &'static str,
    },
    /// A download does not match `--checksum`.
    #[error("digest mismatch for {url}: {actual} (expected: {expected})")]
    DigestMismatch {
        /// The URL.
        url: String,
        /// The digest of what was downloaded.
        actual: String,
        /// The `--checksum` value.
        expected: String,
    },
    /// The server answered a download with an error status.
    #[error("ADD {url}: invalid response status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// A download failed (connection, TLS, body).
    #[error("ADD {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// Unpacking a local tar archive failed (hostile or corrupt archive included).
    #[error("ADD {path}: unpacking the archive failed: {source}")]
    Unpack {
        /// The source as written.
        path: String,
        /// What the applier rejected.
        #[source]
        source: layer_cache::Error,
    },
    /// A source is a kind of file that cannot be put in a layer.
    #[error("{instr} failed: {path}: {what} cannot be copied")]
    UnsupportedFile {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// The source path.
        path: String,
        /// What it is.
        what: &'static str,
    },
    /// The .dockerignore file is invalid.
    #[error("{}: {source}", .path.display())]
    Ignore {
        /// The ignore file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: IgnoreError,
    },
    /// An `--exclude` or `--parents` pattern is invalid.
    #[error("{instr}: invalid pattern: {source}")]
    Pattern {
        /// `COPY` or `ADD`.
        instr: &'static str,
        /// What is wrong.
        #[source]
        source: IgnoreError,
    },
    /// The stat cache could not hash a file or be saved.
    #[error("build context: {source}")]
    StatCache {
        /// The layer cache's error (it names the file).
        #[source]
        source: layer_cache::Error,
    },
    /// A file-system operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`read`, `create`, `chown`...).
        op: &'static str,
        /// The path on the host.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    /// Wraps an I/O error with the operation and the host path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> CopyError {
        let path = path.into();
        move |source| CopyError::Io { op, path, source }
    }

    /// The not-found error for a source, by where it was looked up.
    pub(crate) fn not_found(instr: &'static str, origin: Origin, path: &str) -> CopyError {
        let path = path.to_owned();
        match origin {
            Origin::Context => CopyError::NotFoundInContext { instr, path },
            Origin::Stage => CopyError::NotFoundInStage { instr, path },
        }
    }
}
