//! Fuzz target: see `rbuild_fuzz::www_authenticate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::www_authenticate(data));
