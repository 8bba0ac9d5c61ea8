//! Remote build cache: `--cache-to` / `--cache-from` in buildx's syntax.
//!
//! A fresh CI runner starts warm from a cache another runner exported. The cache is an OCI
//! artifact in a registry ([`fetch_registry_cache`], [`push_registry_cache`]): its manifest
//! and config are read before solving; a layer blob is pulled only when a step that must
//! run sits on top of it or an exporter needs its bytes, and it is verified against its
//! digest like every pulled blob. Or it is an OCI layout directory, as buildx writes one
//! ([`read_local_cache`], [`write_local_cache`]). A [`Build`](crate::Build) takes specs with
//! [`Build::cache_to`](crate::Build::cache_to) and
//! [`Build::cache_from`](crate::Build::cache_from).

mod format;
mod local;
mod mounts;
mod spec;

pub use format::{
    CACHE_CONFIG_MEDIA_TYPE, CacheEntry, ImportedCache, fetch_registry_cache, push_registry_cache,
};
pub(crate) use local::{blob_path, put_blob};
pub use local::{read_local_cache, write_local_cache};
pub(crate) use mounts::{PACK_MEDIA_TYPE, pack_dir, unpack_into};
pub use spec::{CacheExportSpec, CacheImportSpec, CacheLocation, CacheMode};
