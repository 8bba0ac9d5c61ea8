//! Fuzz target: see `rbuild_fuzz::shell`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::shell(data));
