//! Build graph, cache keys, sandboxed RUN, COPY/ADD, image assembly and exporters.
#![deny(unsafe_code)]

pub mod annotations;
mod attest;
pub mod bake;
mod cachekey;
mod copy;
mod engine;
mod fsview;
pub mod graph;
mod image;
pub mod load;
mod oci;
mod passwd;
pub mod plan;
mod progress;
pub mod remote_cache;
pub mod remote_context;
mod sandbox;
pub mod timeline;

pub use attest::{
    ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE,
    ARTIFACT_TYPE_ATTESTATION, AttestSpec, AttestationManifest, Attestations, ImageAttestations,
    MEDIA_TYPE_IN_TOTO, PREDICATE_PROVENANCE, PREDICATE_SPDX, ProvenanceMode, ProvenanceOptions,
    SbomOptions, format_attestations, inspect_attestations, predicates, scan, spdx_document,
};
pub use cachekey::CacheKey;
pub use engine::{
    Build, BuildGroup, BuildReport, CheckReport, Error, ExportKind, ExportSpec, GroupSink,
    NamedContext, SecretSource, SshSource, StepError, TargetResult, default_cache_dir,
    default_dockerfile,
};
pub use graph::{
    Edge, EdgeKind, Graph, GraphResult, ImageResolver, Op, RegistryResolver, ResolvedImage, Vertex,
};
pub use image::{
    ConfigParseError, DEFAULT_PATH, HISTORY_COMMENT, Healthcheck, HistoryEntry, ImageConfig,
    MEDIA_TYPE_CONFIG, rfc3339,
};
pub use oci::{
    BlobRef, BuiltImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD,
    MEDIA_TYPE_MANIFEST, PlatformImage,
};
pub use progress::{
    Activity, ByteSize, CollectSink, NullSink, Phase, ProgressEvent, ProgressSink, StepId, Stream,
    human_bytes,
};
pub use sandbox::{
    BindAccess, CancelHandle, Capabilities, ExitStatus, HostCheck, HostReport, IdRange, Mode,
    ModeRequest, ModeStatus, Mount, MountKind, MountSource, NetworkMode, Privilege, ROOTLESS_ENV,
    Rootfs, RunLimits, RunSpec, SANDBOX_MODE_ENV, Sandbox, SandboxError, SizeError, Ulimit, User,
    enter_rootless, maybe_run_init, parse_mem_bytes, parse_ram_in_bytes, resolve_user,
    run_platforms,
};

pub use timeline::{Timeline, TimelineError};

pub use dockerfile;
pub use layer_cache;
pub use registry_client;
