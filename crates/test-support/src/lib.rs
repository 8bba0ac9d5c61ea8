//! Test helpers shared by rbuild's crates: a handle on the real local registry and a
//! fault-injecting proxy in front of it.
#![forbid(unsafe_code)]
