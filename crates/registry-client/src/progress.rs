//! Transfer progress as typed events; the caller decides how to show them.

use std::time::Duration;

use crate::digest::Digest;
use crate::reference::Repository;

/// Something that happened to a blob transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferEvent<'a> {
    /// A download or upload of `total` bytes begins (or begins again from `offset`).
    Started {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        total: u64,
        /// Bytes already there (a resumed transfer).
        offset: u64,
    },
    /// `done` of `total` bytes are through.
    Progress {
        /// The blob.
        digest: &'a Digest,
        /// Bytes so far.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// A connection dropped and the transfer goes on from `offset`.
    Resumed {
        /// The blob.
        digest: &'a Digest,
        /// Where it continues.
        offset: u64,
    },
    /// A request failed in a way worth retrying; the next attempt is in `delay`.
    Retrying {
        /// The blob, when the request was about one.
        digest: Option<&'a Digest>,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The wait before the next one.
        delay: Duration,
        /// What failed (`HTTP 503`, `connection reset`).
        reason: &'a str,
    },
    /// The registry already had the blob: nothing to upload.
    Exists {
        /// The blob.
        digest: &'a Digest,
    },
    /// The blob was mounted from another repository of the registry.
    Mounted {
        /// The blob.
        digest: &'a Digest,
        /// Where it came from.
        from: &'a Repository,
    },
    /// The transfer is complete and verified.
    Done {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        total: u64,
    },
}

/// Receives [`TransferEvent`]s. Shared by concurrent transfers, so it takes `&self`.
pub trait TransferProgress: Send + Sync {
    /// One event.
    fn event(&self, event: &TransferEvent<'_>);
}

impl<F: Fn(&TransferEvent<'_>) + Send + Sync> TransferProgress for F {
    fn event(&self, event: &TransferEvent<'_>) {
        self(event)
    }
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl TransferProgress for NoProgress {
    fn event(&self, _: &TransferEvent<'_>) {}
}
