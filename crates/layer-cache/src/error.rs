//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{ChainId, Digest};

/// Everything that can go wrong in the layer cache, with what a caller needs to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed on a known path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path the operation was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A system call on a file descriptor failed (wrapped in [`Error::Entry`] or
    /// [`Error::WithPath`] for context).
    #[error("{op}: {source}")]
    Sys {
        /// The operation, such as `fchown` or `mknodat`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Adds the path an inner error is about.
    #[error("{}: {source}", .path.display())]
    WithPath {
        /// The path.
        path: PathBuf,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },
    /// A string is not a valid digest.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The rejected input (truncated).
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Content does not hash to the digest it was announced with. Nothing was stored.
    #[error("blob {expected}: got digest {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// The digest of the bytes actually received.
        actual: Digest,
    },
    /// More (or fewer) bytes arrived than announced. Nothing was stored.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The size received so far.
        actual: u64,
    },
    /// An uncompressed layer does not hash to its announced diffID. Nothing was stored.
    #[error("layer diffID mismatch: expected {expected}, the layer's tar stream is {actual}")]
    DiffIdMismatch {
        /// The announced diffID.
        expected: Digest,
        /// The digest of the uncompressed tar stream.
        actual: Digest,
    },
    /// A tar entry was rejected or failed to apply; `entry` names it.
    #[error("tar entry `{entry}`: {source}")]
    Entry {
        /// The entry's path as written in the archive (lossily decoded).
        entry: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A path in a tar entry is unsafe or malformed.
    #[error("unsafe path: {reason}")]
    UnsafePath {
        /// Why, for example "contains a `..` component".
        reason: &'static str,
    },
    /// A path goes through a symlink, which the applier never follows inside a layer.
    #[error(
        "the path goes through the symlink `{component}`; symlinks in parent directories are not followed"
    )]
    TraversesSymlink {
        /// The symlink's path inside the root.
        component: String,
    },
    /// A parent of a path exists and is not a directory.
    #[error("`{component}` is not a directory")]
    NotADirectory {
        /// The offending parent path inside the root.
        component: String,
    },
    /// The same path appears twice in one layer.
    #[error("duplicate entry: the layer already contains this path")]
    DuplicateEntry,
    /// A resource cap was reached (decompression bombs, entry floods).
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The configured limit.
        limit: u64,
    },
    /// The archive is not a well-formed tar stream.
    #[error("malformed tar at byte {offset}: {reason}")]
    MalformedTar {
        /// Offset of the header block in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A valid but unsupported construct (for example a GNU sparse file).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What it is.
        what: String,
    },
    /// A device node in a layer while [`DevicePolicy::Reject`](crate::DevicePolicy) is in force.
    #[error("device nodes are not permitted here (see ApplyOptions::devices)")]
    DevicesNotPermitted,
    /// A hard link whose target is missing or not a regular file.
    #[error("hard link target `{target}`: {reason}")]
    HardlinkTarget {
        /// The link's target inside the root.
        target: String,
        /// Why it cannot be linked.
        reason: &'static str,
    },
    /// A file name that a layer cannot carry (for example the whiteout prefix `.wh.`).
    #[error("{}: {reason}", .path.display())]
    UnpackableFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be put into a layer.
        reason: &'static str,
    },
    /// A file changed size while it was being archived.
    #[error("{}: file changed while it was being archived", .path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// A stored record could not be parsed.
    #[error("{}: {source}", .path.display())]
    Json {
        /// The record's file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A cache entry that was asked for does not exist.
    #[error("{what} is not in the cache")]
    NotFound {
        /// The entry, for example `blob sha256:…` or `snapshot sha256:…`.
        what: String,
    },
    /// A snapshot's parent chain is incomplete.
    #[error("snapshot {chain}: parent {parent} is missing")]
    MissingParent {
        /// The snapshot.
        chain: ChainId,
        /// The parent that is not there.
        parent: ChainId,
    },
    /// A snapshot changed on disk after it was committed (its fingerprint, see
    /// [`SnapshotStore::verify`](crate::SnapshotStore::verify), differs).
    #[error(
        "snapshot {chain} at {}: changed on disk since it was committed (fingerprint \
         {recorded}, now {actual}); it is not used",
        .path.display()
    )]
    Tampered {
        /// The snapshot.
        chain: ChainId,
        /// Its directory.
        path: PathBuf,
        /// The fingerprint recorded at commit.
        recorded: String,
        /// The fingerprint now.
        actual: String,
    },
    /// A blob in the content store changed on disk after it was stored: its bytes no
    /// longer hash to its name (see [`ContentStore::check`](crate::ContentStore::check)).
    /// It has been removed from the store, so it is fetched or made again, never exported.
    #[error(
        "blob {digest} at {}: changed on disk since it was stored (its bytes hash to \
         {actual}); it was removed from the cache and is not used",
        .path.display()
    )]
    BlobTampered {
        /// The blob.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// The digest of the bytes found.
        actual: Digest,
    },
    /// An option or argument is invalid.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Wraps `source` with the tar entry it concerns (unless it already names one).
    pub(crate) fn in_entry(self, entry: &[u8]) -> Error {
        match self {
            e @ Error::Entry { .. } => e,
            e => Error::Entry {
                entry: String::from_utf8_lossy(entry).into_owned(),
                source: Box::new(e),
            },
        }
    }

    /// The tar entry this error names, if any.
    pub fn entry(&self) -> Option<&str> {
        match self {
            Error::Entry { entry, .. } => Some(entry),
            Error::WithPath { source, .. } => source.entry(),
            _ => None,
        }
    }
}

/// `map_err` helper: an [`io::Error`] on `path`.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// `map_err` helper: a [`rustix::io::Errno`] or [`io::Error`] from the system call `op`.
pub(crate) fn sys<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Sys {
        op,
        source: e.into(),
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
