//! Integration tests of the layer cache (one binary; see the modules).
fn main() {}
