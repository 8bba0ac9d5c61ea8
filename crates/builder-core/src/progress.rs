//! Typed progress events and the sink that receives them.
//!
//! The engine never prints: it pushes [`ProgressEvent`]s into a [`ProgressSink`] that the
//! caller supplies. The CLI's tty, plain and rawjson renderers are sinks; an embedding tool
//! can collect events or forward them anywhere.

use std::time::Duration;

use serde::Serialize;

/// Identifies one step (vertex) of a build in progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct StepId(pub u32);

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// What a byte counter of a step measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// Downloading a blob from a registry.
    Pull,
    /// Uploading a blob to a registry.
    Push,
    /// Packing and compressing a layer.
    Compress,
    /// Unpacking a layer into a snapshot.
    Extract,
    /// Hashing the build context.
    Context,
}

/// One event of a build, in the order the engine produced it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The build began; `sandbox` names the isolation mode in use.
    BuildStarted {
        /// The target platforms, normalised (`linux/arm64/v8`).
        platforms: Vec<String>,
        /// The sandbox mode (for example `namespaces+overlayfs` or `chroot`).
        sandbox: String,
        /// The privilege mode and why ([`Privilege::describe`](crate::Privilege::describe):
        /// `root`, `rootless (...)`, ...).
        privilege: String,
    },
    /// A step started (or was found in the cache: then [`ProgressEvent::StepCached`] follows).
    StepStarted {
        /// The step.
        id: StepId,
        /// A buildx-style name: `[builder 3/7] RUN npm ci`.
        name: String,
        /// The platform, when the build has several.
        platform: Option<String>,
        /// `file:line` of the instruction, when it has one.
        location: Option<String>,
    },
    /// The step's result came from the cache.
    StepCached {
        /// The step.
        id: StepId,
    },
    /// The step's result came from a remote cache (`--cache-from`), after
    /// [`ProgressEvent::StepCached`].
    StepCachedRemote {
        /// The step.
        id: StepId,
        /// The cache it came from.
        source: String,
    },
    /// Output of a RUN step.
    StepLog {
        /// The step.
        id: StepId,
        /// Which stream.
        stream: Stream,
        /// The bytes, as the process wrote them.
        #[serde(serialize_with = "serialize_lossy")]
        data: Vec<u8>,
    },
    /// A byte counter of a step moved.
    StepProgress {
        /// The step.
        id: StepId,
        /// What is being counted.
        activity: Activity,
        /// A short label (a digest prefix, a file name).
        label: String,
        /// Bytes done.
        current: u64,
        /// Bytes in all, when known.
        total: Option<u64>,
    },
    /// The step finished.
    StepDone {
        /// The step.
        id: StepId,
        /// Wall time it took.
        #[serde(serialize_with = "serialize_secs")]
        elapsed: Duration,
    },
    /// The step failed; the build stops.
    StepFailed {
        /// The step.
        id: StepId,
        /// What went wrong, in one line.
        error: String,
    },
    /// Something a user should know that does not stop the build.
    Warning {
        /// The message.
        message: String,
        /// `file:line`, when it applies to an instruction.
        location: Option<String>,
    },
    /// The build finished successfully.
    BuildDone {
        /// Wall time of the whole build.
        #[serde(serialize_with = "serialize_secs")]
        elapsed: Duration,
    },
}

fn serialize_lossy<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Receives the events of a build.
pub trait ProgressSink: Send {
    /// Called once per event, in order, from one thread at a time.
    fn event(&mut self, event: &ProgressEvent);
}

impl<S: ProgressSink + ?Sized> ProgressSink for &mut S {
    fn event(&mut self, event: &ProgressEvent) {
        (**self).event(event)
    }
}

impl<S: ProgressSink + ?Sized> ProgressSink for Box<S> {
    fn event(&mut self, event: &ProgressEvent) {
        (**self).event(event)
    }
}

/// A sink that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn event(&mut self, _: &ProgressEvent) {}
}

/// A sink that keeps every event, for tests and embedding tools.
#[derive(Debug, Default, Clone)]
pub struct CollectSink {
    /// The events received so far.
    pub events: Vec<ProgressEvent>,
}

impl ProgressSink for CollectSink {
    fn event(&mut self, event: &ProgressEvent) {
        self.events.push(event.clone());
    }
}
