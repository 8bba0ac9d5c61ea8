//! `rbuild`: build container images from Dockerfiles without a daemon.
#![forbid(unsafe_code)]

fn main() {
    println!("rbuild {}", env!("CARGO_PKG_VERSION"));
}
