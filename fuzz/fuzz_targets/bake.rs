//! Fuzz target: see `rbuild_fuzz::bake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::bake(data));
