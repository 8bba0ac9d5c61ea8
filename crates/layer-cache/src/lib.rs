//! Content store, snapshot store, cache index and safe layer tar I/O.
//!
//! The on-disk state every build trusts: blobs by digest (visible only once verified),
//! unpacked layers by chain ID (unpacked once even when several processes ask), the cache
//! index and stat caches, leases that keep running builds' entries from being pruned, a
//! deterministic PAX tar writer with parallel gzip, and an applier that never writes
//! outside its root.
#![forbid(unsafe_code)]

mod apply;
mod cache;
mod compress;
mod content;
mod digest;
mod error;
mod fingerprint;
mod fsutil;
mod gc;
mod index;
mod lease;
mod pack;
mod plan;
mod relpath;
mod snapshot;
mod statcache;
mod tar;

// Identities.
pub use digest::{Algorithm, ChainId, Digest, HashingWriter};
pub use error::{Error, Result};
pub use relpath::RelPath;
// Layers: writing, the sans-IO core, applying.
pub use apply::{
    ApplyMode, ApplyOptions, ApplyStats, DevicePolicy, OverlayXattr, Ownership, ParentSymlinks,
    Resolve, apply_layer, apply_layer_file,
};
pub use compress::Compression;
pub use pack::{
    PackOptions, PackedLayer, SourceKind, layer_digests, pack_dir, pack_dir_with_progress,
};
pub use plan::{DeviceKind, EntryAction, Meta, plan_entry};
pub use tar::{EntryHeader, EntryKind};
// The cache on disk.
pub use cache::{Cache, LayerRef, flatten_layer_dir};
pub use content::{BlobInfo, BlobWriter, ContentStore, Ingest};
pub use gc::{KindUsage, PruneReport, RemovedEntry, Usage, UsageKind};
pub use index::{BlobRef, CacheIndex, LayerRecord};
pub use lease::{EntryRef, Lease};
/// The OCI types this crate's API converts to and from.
pub use oci_spec;
pub use snapshot::{Snapshot, SnapshotStore};
pub use statcache::{StatCache, StatEntry};
