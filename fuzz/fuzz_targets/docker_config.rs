//! Fuzz target: see `rbuild_fuzz::docker_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::docker_config(data));
