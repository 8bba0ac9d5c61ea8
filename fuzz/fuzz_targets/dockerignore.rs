//! Fuzz target: see `rbuild_fuzz::dockerignore`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::dockerignore(data));
