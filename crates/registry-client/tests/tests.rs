//! Integration tests of registry-client, against the real local registry of
//! `scripts/testenv` (started on demand) and, for faults, a proxy in front of it.

// Push, mount, manifests, indexes and pulls against the real registry, checked with skopeo.
mod real_registry;
// Token auth, 401 mid-push, 429, 5xx, dropped connections and corrupt blobs (fault proxy).
mod faults;
// Credentials and redirects: only the registry's own origin gets them.
mod redirects;
// Size caps on what is read into memory.
mod limits;
// `inspect` output against the registry's own bytes.
mod inspect;
// Helpers: blobs, images, clients, progress recorders.
mod util;
