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
//!
//! Or, with `type=inline`, the records of the image's own steps travel in the pushed
//! image's config ([`INLINE_CACHE_FIELD`]); `--cache-from type=registry,ref=IMAGE` reads
//! them back:
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, NullSink};
//! let report = Build::new("./app")?
//!     .tag("127.0.0.1:5000/app:latest")?
//!     .output("type=registry".parse()?)
//!     .cache_to("type=inline".parse()?)
//!     .cache_from("type=registry,ref=127.0.0.1:5000/app:latest".parse()?)
//!     .run(&mut NullSink)
//!     .await?;
//! # let _ = report; Ok(()) }
//! ```

mod format;
mod inline;
mod local;
mod mounts;
mod spec;

pub(crate) use format::compression_of;
pub use format::{
    CACHE_CONFIG_MEDIA_TYPE, CacheEntry, CacheForm, ImportedCache, fetch_registry_cache,
    push_registry_cache,
};
pub use inline::INLINE_CACHE_FIELD;
pub(crate) use inline::{BUILDKIT_INLINE_FIELD, inline_value};
pub(crate) use local::{blob_path, put_blob};
pub use local::{read_local_cache, write_local_cache};
pub(crate) use mounts::{PACK_MEDIA_TYPE, pack_dir, unpack_into};
pub use spec::{CacheExportSpec, CacheImportSpec, CacheLocation, CacheMode};
