//! Content store, snapshot store, cache index and safe layer tar I/O
#![forbid(unsafe_code)]
