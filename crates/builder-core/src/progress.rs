//! Typed progress events and the sink that receives them.
//!
//! The engine never prints: it pushes [`ProgressEvent`]s into a [`ProgressSink`] that the
//! caller supplies. The CLI's tty, plain and rawjson renderers are sinks; an embedding tool
//! can collect events or forward them anywhere.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Identifies one step (vertex) of a build in progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StepId(pub u32);

/// Which output stream a log chunk came from (the sandbox's).
pub use rbuild_sandbox::Stream;

/// What a byte counter of a step measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// A timed part of a build, for the timeline ([`ProgressEvent::Phase`],
/// [`crate::Timeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Resolving a base image: its index, manifest and config from the registry.
    Resolve,
    /// Downloading one blob into the content store.
    Pull,
    /// Unpacking a chain of layers into snapshots.
    Unpack,
    /// Preparing a RUN step's mounts (cache, bind, secret, tmpfs mounts).
    Mount,
    /// A RUN step's sandbox, from its start to its end; [`ProgressEvent::Phase::cpu`]
    /// is the CPU time of its processes.
    Run,
    /// Checksumming the build context's files a COPY or ADD step reads (its cache key).
    Context,
    /// Copying files of a COPY or ADD step.
    Copy,
    /// Committing a step's changes as a snapshot.
    Snapshot,
    /// Hashing a layer for its diffID (no blob is written).
    Hash,
    /// Packing and compressing a layer into a blob.
    Compress,
    /// Uploading one blob to a registry.
    Upload,
    /// Writing one output (an OCI layout, a docker archive, files, a push).
    Export,
}

impl Phase {
    /// Every phase, in the order a build meets them.
    pub const ALL: [Phase; 12] = [
        Phase::Resolve,
        Phase::Pull,
        Phase::Unpack,
        Phase::Mount,
        Phase::Run,
        Phase::Context,
        Phase::Copy,
        Phase::Snapshot,
        Phase::Hash,
        Phase::Compress,
        Phase::Upload,
        Phase::Export,
    ];

    /// The lowercase name (`pull`), as in the JSON of the events.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Pull => "pull",
            Phase::Unpack => "unpack",
            Phase::Mount => "mount",
            Phase::Run => "run",
            Phase::Context => "context",
            Phase::Copy => "copy",
            Phase::Snapshot => "snapshot",
            Phase::Hash => "hash",
            Phase::Compress => "compress",
            Phase::Upload => "upload",
            Phase::Export => "export",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// A timed phase ended (sent when it ends, so phases of concurrent steps
    /// interleave); [`crate::Timeline`] reads them back.
    Phase {
        /// The step it belongs to, when it belongs to one.
        id: Option<StepId>,
        /// Which phase.
        phase: Phase,
        /// What it worked on (a digest prefix, an image, an output).
        label: String,
        /// When it began, in seconds since the build started.
        #[serde(serialize_with = "serialize_secs")]
        start: Duration,
        /// Wall time it took.
        #[serde(serialize_with = "serialize_secs")]
        elapsed: Duration,
        /// CPU time (user and system) of the processes of a RUN step, when measured.
        #[serde(serialize_with = "serialize_opt_secs")]
        cpu: Option<Duration>,
        /// Bytes it moved, when it counts them.
        bytes: Option<u64>,
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

fn serialize_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The build's clock: phases are timed from its start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    /// Starts timing `phase`; the event is sent when the timer is dropped (also when the
    /// phase failed: a failed build's timeline shows what it spent).
    pub(crate) fn timer<'a>(
        self,
        events: &'a mpsc::UnboundedSender<ProgressEvent>,
        id: Option<StepId>,
        phase: Phase,
        label: impl Into<String>,
    ) -> PhaseTimer<'a> {
        PhaseTimer {
            events,
            clock: self,
            t0: Instant::now(),
            id,
            phase,
            label: label.into(),
            cpu: None,
            bytes: None,
        }
    }
}

/// A phase being timed (see [`Clock::timer`]).
pub(crate) struct PhaseTimer<'a> {
    events: &'a mpsc::UnboundedSender<ProgressEvent>,
    clock: Clock,
    t0: Instant,
    id: Option<StepId>,
    phase: Phase,
    label: String,
    cpu: Option<Duration>,
    bytes: Option<u64>,
}

impl PhaseTimer<'_> {
    /// The CPU time the phase's processes used.
    pub(crate) fn cpu(&mut self, d: Duration) {
        self.cpu = Some(d);
    }

    /// The bytes the phase moved.
    pub(crate) fn bytes(&mut self, n: u64) {
        self.bytes = Some(n);
    }
}

impl Drop for PhaseTimer<'_> {
    fn drop(&mut self) {
        let _ = self.events.send(ProgressEvent::Phase {
            id: self.id,
            phase: self.phase,
            label: std::mem::take(&mut self.label),
            start: self.t0.saturating_duration_since(self.clock.0),
            elapsed: self.t0.elapsed(),
            cpu: self.cpu,
            bytes: self.bytes,
        });
    }
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

/// A byte count in decimal units (`B`, `kB`, `MB` ... `EB`, as docker and BuildKit print
/// sizes): the value scaled below 1000 and its unit. The one size formatter of the
/// workspace; each printer picks its precision.
///
/// ```
/// let s = builder_core::human_bytes(1_500_000);
/// assert_eq!((s.unit, format!("{:.1}", s.value)), ("MB", "1.5".to_owned()));
/// assert_eq!(builder_core::human_bytes(999).unit, "B");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteSize {
    /// The value in `unit`, below 1000 (but for exabytes).
    pub value: f64,
    /// `B`, `kB`, `MB`, `GB`, `TB`, `PB` or `EB`.
    pub unit: &'static str,
}

/// `n` bytes as a [`ByteSize`].
#[must_use]
pub fn human_bytes(n: u64) -> ByteSize {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = n as f64;
    let mut u = 0;
    while value >= 1000.0 && u < UNITS.len() - 1 {
        value /= 1000.0;
        u += 1;
    }
    ByteSize {
        value,
        unit: UNITS[u],
    }
}
