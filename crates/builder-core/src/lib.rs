//! Build graph, cache keys, sandboxed RUN, COPY/ADD, image assembly and exporters.
#![deny(unsafe_code)]

mod cachekey;
#[allow(dead_code)] // Used by COPY in the engine, which lands next.
mod fsview;
mod image;
#[allow(dead_code)] // Used by the exporters in the engine, which land next.
mod oci;
mod progress;
mod sandbox;

pub use cachekey::CacheKey;
pub use image::{
    ConfigParseError, DEFAULT_PATH, HISTORY_COMMENT, Healthcheck, HistoryEntry, ImageConfig,
    MEDIA_TYPE_CONFIG, rfc3339,
};
pub use sandbox::{
    BindAccess, CancelHandle, Capabilities, ExitStatus, Mode, ModeRequest, Mount, MountKind,
    MountSource, NetworkMode, Rootfs, RunSpec, SANDBOX_MODE_ENV, Sandbox, SandboxError, User,
    maybe_run_init, resolve_user,
};
pub use progress::{Activity, CollectSink, NullSink, ProgressEvent, ProgressSink, StepId, Stream};

pub use dockerfile;
pub use layer_cache;
pub use registry_client;
