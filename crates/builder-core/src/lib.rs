//! Build graph, cache keys, sandboxed RUN, COPY/ADD, image assembly and exporters.
#![deny(unsafe_code)]

pub use dockerfile;
pub use layer_cache;
pub use registry_client;
