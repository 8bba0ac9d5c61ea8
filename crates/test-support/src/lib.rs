//! Test helpers shared by rbuild's crates (`publish = false`):
//!
//! - [`LocalRegistry`]: the real local registry of `scripts/testenv`, brought up on demand,
//!   with unique repository names for each test;
//! - [`FaultProxy`]: a proxy in front of it that injects what a real registry does not do
//!   on demand (token auth and revoked tokens, 429 with `Retry-After`, 5xx, dropped
//!   connections, corrupted bodies) and records every request;
//! - [`run`] and friends: real tools run with failures that show command, cwd, status,
//!   stdout and stderr.
#![forbid(unsafe_code)]

mod command;
mod git_http;
mod proxy;
mod registry;

// The public interface.
pub use command::{describe, output, run, run_stdout};
pub use git_http::GitHttpServer;
pub use proxy::{Fault, FaultProxy, Rule, Seen, TokenAuth};
pub use registry::{LocalRegistry, workspace_root};
