//! The build graph: a Dockerfile (with its args, target and platforms) described as data
//! before anything runs.
//!
//! Each [`Vertex`] is one operation: a source (an image by digest, `scratch`, a subset of
//! the build context), an exec (`RUN` with its mounts), a file operation (`COPY`, `ADD`,
//! `WORKDIR`) or a metadata change (`ENV`, `LABEL`, `CMD`...). [`Edge`]s name the vertices
//! it reads: its parent filesystem, the stage or image of a `COPY --from` or a
//! `RUN --mount from=`, the context files it copies.
//!
//! A vertex's [`CacheKey`] is derived from its definition and its inputs' keys. For the
//! vertices that make a filesystem (sources, exec, file operations) it is the very key the
//! engine caches the step's layer under, so the graph says what a build would find in the
//! cache. Metadata vertices do not change the filesystem: the next filesystem vertex
//! derives its key from the last filesystem vertex, with the configuration it runs under
//! (environment, user, working directory) in its definition.
//!
//! Several builds (platforms, targets) merge into one graph with [`Graph::merge`]: vertices
//! with equal keys are one vertex, so steps two stages or two targets share appear once.
//! The graph serialises to stable JSON (vertices in topological order, inputs before the
//! vertices that read them) and prints as short text with [`Graph::to_text`].

mod frontend;
pub(crate) mod keys;
mod resolve;

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cachekey::CacheKey;

pub(crate) use frontend::{GraphBuilder, GraphOptions, StepKey};
pub use resolve::{ImageResolver, RegistryResolver, ResolvedImage};

/// A build described as data: vertices in topological order and the results asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// The operations, each once, inputs before the vertices that read them.
    pub vertices: Vec<Vertex>,
    /// What each (target, platform) pair builds.
    pub results: Vec<GraphResult>,
}

/// One operation of the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// The content-addressed key: the definition and the inputs' keys.
    pub key: CacheKey,
    /// The operation.
    pub op: Op,
    /// What it reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Edge>,
    /// A human name: `[stage n/m] INSTRUCTION` as progress shows it, or the source.
    pub name: String,
    /// The platform the vertex is built for (`os/arch[/variant]`).
    pub platform: String,
}

/// An input of a vertex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// The vertex read.
    pub key: CacheKey,
    /// How it is read.
    pub kind: EdgeKind,
}

/// How a vertex reads one of its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// The filesystem (or, for metadata, the image) the vertex builds on.
    Parent,
    /// The source of a `COPY`/`ADD` (the context, or a stage or image with `--from`).
    Copy,
    /// A `RUN --mount ... from=` source.
    Mount,
}

/// What a vertex does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Op {
    /// An image from a registry, by the digest of its platform manifest.
    Image {
        /// The reference as the Dockerfile names it (expanded).
        reference: String,
        /// The platform manifest's digest.
        digest: String,
    },
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// Files of the build context (or URLs of an `ADD`) a `COPY`/`ADD` reads.
    Context {
        /// The sources as written.
        sources: Vec<String>,
    },
    /// A `RUN`.
    Exec {
        /// The command.
        argv: Vec<String>,
        /// The environment in the key (proxy variables are left out, as the cache does).
        env: Vec<String>,
        /// The user, empty for the image's default.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        /// The working directory.
        cwd: String,
        /// `host` or `none`.
        network: String,
        /// The `--mount` definitions, as they enter the key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<serde_json::Value>,
    },
    /// A file operation: `COPY`, `ADD` or `WORKDIR`.
    File {
        /// `copy`, `add` or `mkdir`.
        action: String,
        /// The instruction, expanded.
        instruction: String,
    },
    /// A change of the image configuration only (`ENV`, `LABEL`, `CMD`, `USER`...).
    Meta {
        /// The instruction, expanded.
        instruction: String,
    },
}

impl Op {
    /// True for the operations that make a filesystem (and so a layer or a source).
    #[must_use]
    pub fn is_filesystem(&self) -> bool {
        !matches!(self, Op::Meta { .. } | Op::Context { .. })
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Image { .. } => "image",
            Op::Scratch => "scratch",
            Op::Context { .. } => "context",
            Op::Exec { .. } => "exec",
            Op::File { .. } => "file",
            Op::Meta { .. } => "meta",
        }
    }
}

/// What one (target, platform) pair of a build makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphResult {
    /// The target stage's name (`stage-<n>` for an unnamed one).
    pub target: String,
    /// The platform (`os/arch[/variant]`).
    pub platform: String,
    /// The last vertex of the target stage (its image: filesystem and configuration).
    pub key: CacheKey,
    /// The last filesystem vertex of the target stage (its root filesystem).
    pub rootfs: CacheKey,
}

impl Graph {
    /// The vertex with `key`.
    #[must_use]
    pub fn vertex(&self, key: &CacheKey) -> Option<&Vertex> {
        self.vertices.iter().find(|v| &v.key == key)
    }

    /// Adds `v` unless a vertex with its key is there already (the inputs must be there);
    /// returns its key.
    pub(crate) fn add(&mut self, index: &mut HashMap<CacheKey, usize>, v: Vertex) -> CacheKey {
        let key = v.key.clone();
        if !index.contains_key(&key) {
            index.insert(key.clone(), self.vertices.len());
            self.vertices.push(v);
        }
        key
    }

    /// Merges `other` into this graph: its vertices not here yet are appended (in its
    /// order, so the result stays topological), and its results added.
    pub fn merge(&mut self, other: Graph) {
        let mut index: HashMap<CacheKey, usize> = self
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.key.clone(), i))
            .collect();
        for v in other.vertices {
            self.add(&mut index, v);
        }
        for r in other.results {
            if !self.results.contains(&r) {
                self.results.push(r);
            }
        }
    }

    /// The graph as short text: one line per vertex (`#n` by position, a short key, the
    /// kind, the inputs as `#n`, the name), then one line per result.
    #[must_use]
    pub fn to_text(&self) -> String {
        let pos: HashMap<&CacheKey, usize> = self
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (&v.key, i + 1))
            .collect();
        let mut out = String::new();
        for (i, v) in self.vertices.iter().enumerate() {
            let inputs: Vec<String> = v
                .inputs
                .iter()
                .map(|e| match pos.get(&e.key) {
                    Some(n) => format!("#{n}"),
                    None => format!("?{}", short(&e.key)),
                })
                .collect();
            let _ = writeln!(
                out,
                "#{:<3} {}  {:<7} {:<14} {:<12} {}",
                i + 1,
                short(&v.key),
                v.op.kind(),
                v.platform,
                inputs.join(","),
                v.name
            );
        }
        for r in &self.results {
            let n = pos.get(&r.key).map_or(0, |n| *n);
            let _ = writeln!(out, "result {} {}: #{n}", r.target, r.platform);
        }
        out
    }
}

fn short(key: &CacheKey) -> &str {
    &key.hex()[..12.min(key.hex().len())]
}

#[cfg(test)]
mod tests;
