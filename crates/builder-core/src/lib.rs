//! Build graph, cache keys, sandboxed RUN, COPY/ADD, image assembly and exporters.
#![deny(unsafe_code)]

mod image;
mod progress;

pub use image::{
    ConfigParseError, DEFAULT_PATH, HISTORY_COMMENT, Healthcheck, HistoryEntry, ImageConfig,
    MEDIA_TYPE_CONFIG, rfc3339,
};
pub use progress::{Activity, CollectSink, NullSink, ProgressEvent, ProgressSink, StepId, Stream};

pub use dockerfile;
pub use layer_cache;
pub use registry_client;
