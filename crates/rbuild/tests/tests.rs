//! Integration tests of the `rbuild` binary, run as a process.

/// `rbuild build`: option validation, `--call outline|targets`, Dockerfile errors.
mod cli;
