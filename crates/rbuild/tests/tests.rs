//! Integration tests of the `rbuild` binary, run as a process.

/// `rbuild build`: option validation, `--call outline|targets`, Dockerfile errors.
mod cli;

/// The seed's acceptance criteria on the example services built by rbuild (issues 7, 8).
mod e2e;

/// Rootless builds as a non-root user (issue 16): digests equal to root's.
mod rootless;

/// `rbuild build --call plan`: the CI planner (issue 17).
mod plan;

/// `rbuild bake`: compose and bake files, many targets in one process (issue 18).
mod bake;

/// Provenance and SBOM attestations, reproducible digests (issue 19).
mod supply;

/// Push by digest per runner and `imagetools create` (issue 17).
mod scaleout;

/// A fresh CI runner builds from a shared cache (issue 15): registry, local and inline
/// caches, corrupt blobs rejected.
mod remote_cache;

/// The four build modes (issue 16): root, rootless, root and non-root in containers.
mod modes;

/// examples/ci: the GitHub Actions workflow and Kubernetes Jobs parsed, checked, and the
/// Jobs' commands run against the local registry (issue 17).
mod ci_examples;

/// `rbuild build --call=check`: every build check against the reference's output (issue 20).
mod checks;

/// buildx flags: RUN's /etc/hosts and hostname against the reference, --add-host,
/// --no-cache-filter, --pull, refused flags (issue 20).
mod dropin;

/// rbuild as the `docker-buildx` CLI plugin, through the real docker CLI, with the
/// command lines the GitHub actions run (issue 20).
mod plugin;

/// Build contexts: git over smart HTTP (refs, subdirs, auth secrets, refused refs), HTTP
/// tarballs and Dockerfiles, stdin, build-push-action's default git context (issue 20).
mod contexts;
/// The build timeline: phase events in rawjson, `rbuild debug timeline` (issue 21).
mod timeline;

/// Hardening (issue 22): full disks, blobs tampered in the cache, kill -9 mid-build.
mod hardening;

/// Progress as buildx prints it: plain lines and pushes once each, the tty display in a
/// real pseudo-terminal (issue 20).
mod progress;

/// `--build-context`: images, directories, OCI layouts against the reference (issue 20).
mod named_contexts;
