//! The SLSA v1 provenance predicate, laid out as BuildKit 0.32 writes it
//! (`solver/llbsolver/provenance`), from what the engine recorded while it built.
//!
//! rbuild runs no LLB, so `mode=max`'s `buildConfig.llbDefinition` lists rbuild's own
//! steps in LLB's shape (`source`, `exec`, `file` ops with their inputs), keyed by rbuild's
//! cache keys: the same fields, not the same digests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::spec::{ProvenanceMode, ProvenanceOptions};

/// The SLSA v1 predicate type.
pub(crate) const PREDICATE_SLSA1: &str = "https://slsa.dev/provenance/v1";
const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// The Dockerfile syntax rbuild implements (`internalParameters.dockerfileVersion`).
const DOCKERFILE_VERSION: &str = "1.26.0";
/// BuildKit 0.32's `compatibilityVersion` of the request layout written here.
const COMPATIBILITY_VERSION: u32 = 30;

/// A resolved dependency: a base image, a downloaded URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Material {
    /// Images first (as BuildKit lists them), then URLs.
    pub(crate) order: u8,
    /// `pkg:docker/...` or the URL.
    pub(crate) uri: String,
    /// `sha256:<hex>`.
    pub(crate) digest: String,
}

/// One build step, for `mode=max`.
#[derive(Debug, Clone)]
pub(crate) struct StepRecord {
    /// The op in LLB's shape (`{"source": ...}`, `{"exec": ...}`, `{"file": ...}`).
    pub(crate) op: Value,
    /// The step's platform (`None` for file operations, as BuildKit).
    pub(crate) platform: Option<(String, String)>,
    /// Its line range in the Dockerfile.
    pub(crate) lines: (u32, u32),
    /// The stage the step's input comes from (its own stage's previous step when `None`),
    /// and secondary inputs by (stage, sort key) of their last step.
    pub(crate) extra_inputs: Vec<usize>,
    /// The chain id of the layer stack after the step (to find its layers in the image).
    pub(crate) chain: Option<String>,
    /// The step's cache key (its `digestMapping` entry).
    pub(crate) key: String,
}

/// What one platform's build used, gathered while it runs.
#[derive(Debug, Default)]
struct PlatformRecord {
    materials: BTreeSet<Material>,
    /// By (stage index, instruction index; 0 is FROM).
    steps: BTreeMap<(usize, usize), StepRecord>,
}

/// Everything the engine records for the provenance, shared by a build's tasks.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    platforms: Mutex<BTreeMap<String, PlatformRecord>>,
    secrets: Mutex<BTreeMap<String, bool>>,
    ssh: Mutex<BTreeMap<String, bool>>,
    network: Mutex<bool>,
}

impl Recorder {
    fn with<R>(&self, platform: &str, f: impl FnOnce(&mut PlatformRecord) -> R) -> R {
        let mut g = self
            .platforms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(g.entry(platform.to_owned()).or_default())
    }

    /// A base image resolved for `platform`: `reference` as written, the digest it
    /// resolved to (the index's, if it named one), the platform's image.
    pub(crate) fn image(
        &self,
        platform: &str,
        reference: &str,
        digest: &str,
        image_platform: &str,
    ) {
        let uri = image_purl(reference, Some(image_platform));
        self.with(platform, |r| {
            r.materials.insert(Material {
                order: 0,
                uri,
                digest: digest.to_owned(),
            })
        });
    }

    /// A URL that ADD downloaded, with the digest of its body.
    pub(crate) fn url(&self, platform: &str, url: &str, digest: &str) {
        self.with(platform, |r| {
            r.materials.insert(Material {
                order: 2,
                uri: url.to_owned(),
                digest: digest.to_owned(),
            })
        });
    }

    /// A secret a RUN step mounts (its id only, never its value).
    pub(crate) fn secret(&self, id: &str, required: bool) {
        let mut g = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let optional = g.get(id).copied().unwrap_or(true) && !required;
        g.insert(id.to_owned(), optional);
    }

    /// An SSH agent a RUN step mounts.
    pub(crate) fn ssh(&self, id: &str, required: bool) {
        let mut g = self
            .ssh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let optional = g.get(id).copied().unwrap_or(true) && !required;
        g.insert(id.to_owned(), optional);
    }

    /// A RUN step had network access.
    pub(crate) fn network(&self) {
        *self
            .network
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// A step of stage `stage` (instruction `index`, 0 for FROM).
    pub(crate) fn step(&self, platform: &str, stage: usize, index: usize, step: StepRecord) {
        self.with(platform, |r| r.steps.insert((stage, index), step));
    }
}

/// The request side of a build: what the frontend was asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    /// Frontend options (`build-arg:K`, `label:K`, `target`, ...), without `filename`.
    pub(crate) args: BTreeMap<String, String>,
    /// The Dockerfile's name in the context (`configSource.path`).
    pub(crate) filename: String,
    /// The Dockerfile's bytes (`mode=max`'s source info).
    pub(crate) dockerfile: Vec<u8>,
    /// The local sources (`context`, `dockerfile`).
    pub(crate) locals: Vec<String>,
    /// `os/arch[/variant]` of the machine that built.
    pub(crate) builder_platform: String,
}

/// Times and identity of the run.
#[derive(Debug, Clone)]
pub(crate) struct RunTimes {
    pub(crate) invocation_id: String,
    pub(crate) started: String,
    pub(crate) finished: String,
}

/// `pkg:docker/<namespace>/<name>@<tag>?digest=...&platform=...` as BuildKit's
/// `purl.RefToPURL` writes an image reference (familiar names: `library/node`, not
/// `docker.io/library/node`).
pub(crate) fn image_purl(reference: &str, platform: Option<&str>) -> String {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    // The tag is after the last ':' that follows the last '/'.
    let slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[slash..].rfind(':') {
        Some(i) => (&name_tag[..slash + i], Some(&name_tag[slash + i + 1..])),
        None => (name_tag, None),
    };
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    };
    let familiar = familiar_name(name);
    let (ns, short) = match familiar.rsplit_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, familiar.as_str()),
    };
    let mut out = String::from("pkg:docker/");
    if let Some(ns) = ns {
        let parts: Vec<String> = ns.split('/').map(purl_escape).collect();
        out.push_str(&parts.join("/"));
        out.push('/');
    }
    out.push_str(&purl_escape(short));
    if let Some(t) = tag {
        out.push('@');
        out.push_str(&purl_escape(t));
    }
    let mut quals = Vec::new();
    if let Some(d) = digest {
        quals.push(format!("digest={}", purl_escape(d)));
    }
    if let Some(p) = platform {
        // containerd's normalised form, as BuildKit 0.32's index: arm64 without `v8`.
        let p = p
            .strip_suffix("/arm64/v8")
            .map_or_else(|| p.to_owned(), |os| format!("{os}/arm64"));
        quals.push(format!("platform={}", purl_escape(&p)));
    }
    if !quals.is_empty() {
        out.push('?');
        out.push_str(&quals.join("&"));
    }
    out
}

/// distribution's `FamiliarName`: Docker Hub names lose `docker.io/` and, for official
/// images, `library/` (`docker.io/library/node` is `node`); other registries keep theirs.
fn familiar_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_domain {
        return name.strip_prefix("library/").unwrap_or(name).to_owned();
    }
    match name
        .strip_prefix("docker.io/")
        .or(name.strip_prefix("index.docker.io/"))
    {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_owned(),
        None => name.to_owned(),
    }
}

/// Percent-encoding as packageurl-go's `url.PathEscape`-like escaping of purl parts.
pub(crate) fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn descriptor_json(l: &crate::oci::BlobRef) -> Value {
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(l.media_type));
    d.insert("digest".into(), json!(l.digest));
    d.insert("size".into(), json!(l.size));
    if !l.annotations.is_empty() {
        d.insert("annotations".into(), json!(l.annotations));
    }
    Value::Object(d)
}

/// The predicate for one platform's image.
pub(crate) fn predicate(
    opts: &ProvenanceOptions,
    recorder: &Recorder,
    platform: &str,
    request: &Request,
    times: &RunTimes,
    image: &crate::oci::PlatformImage,
    layer_chains: &[String],
) -> Value {
    let record = recorder
        .platforms
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let empty = PlatformRecord::default();
    let rec = record.get(platform).unwrap_or(&empty);
    let deps: Vec<Value> = rec
        .materials
        .iter()
        .map(|m| {
            let (alg, hex) = m.digest.split_once(':').unwrap_or(("sha256", &m.digest));
            json!({"uri": m.uri, "digest": {alg: hex}})
        })
        .collect();

    let max = opts.mode == ProvenanceMode::Max;
    let mut args = request.args.clone();
    let mut complete_request = true;
    if !max {
        let before = args.len();
        args.retain(|k, _| !k.starts_with("build-arg:") && !k.starts_with("label:"));
        complete_request = before == args.len();
    }
    let mut config_source = Map::new();
    if !request.filename.is_empty() {
        config_source.insert("path".into(), json!(request.filename));
    }
    let mut req = Map::new();
    req.insert("frontend".into(), json!("dockerfile.v0"));
    if !args.is_empty() {
        req.insert("args".into(), json!(args));
    }
    if max {
        let list = |m: &Mutex<BTreeMap<String, bool>>| -> Vec<Value> {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(id, optional)| {
                    if *optional {
                        json!({"id": id, "optional": true})
                    } else {
                        json!({"id": id})
                    }
                })
                .collect()
        };
        let secrets = list(&recorder.secrets);
        if !secrets.is_empty() {
            req.insert("secrets".into(), Value::Array(secrets));
        }
        let ssh = list(&recorder.ssh);
        if !ssh.is_empty() {
            req.insert("ssh".into(), Value::Array(ssh));
        }
    }
    if !request.locals.is_empty() {
        let locals: Vec<Value> = request.locals.iter().map(|n| json!({"name": n})).collect();
        req.insert("locals".into(), Value::Array(locals));
    }
    // BuildKit records the client's root request only when it carried frontend options
    // besides the file name (its rootRequestProvenance is nil without them).
    if !request.args.is_empty() {
        let mut root_req = Map::new();
        if !args.is_empty() {
            root_req.insert("args".into(), json!(args));
        }
        req.insert(
            "root".into(),
            json!({"configSource": config_source, "request": root_req}),
        );
    }
    req.insert("compatibilityVersion".into(), json!(COMPATIBILITY_VERSION));

    let mut internal = Map::new();
    let mut metadata = Map::new();
    metadata.insert("invocationId".into(), json!(times.invocation_id));
    metadata.insert("startedOn".into(), json!(times.started));
    metadata.insert("finishedOn".into(), json!(times.finished));
    let mut bk_meta = Map::new();
    if max {
        let (config, source, layers) = build_config(rec, request, image, layer_chains);
        internal.insert("buildConfig".into(), config);
        bk_meta.insert("source".into(), source);
        if !layers.is_empty() {
            bk_meta.insert("layers".into(), Value::Object(layers));
        }
    }
    internal.insert("builderPlatform".into(), json!(request.builder_platform));
    internal.insert("dockerfileVersion".into(), json!(DOCKERFILE_VERSION));
    metadata.insert("buildkit_metadata".into(), Value::Object(bk_meta));
    // Local sources (the context) are not pinned by digest: never complete, never
    // hermetic, as BuildKit says.
    let complete_deps = request.locals.is_empty();
    let network = *recorder
        .network
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if complete_deps && !network {
        metadata.insert("buildkit_hermetic".into(), json!(true));
    }
    metadata.insert(
        "buildkit_completeness".into(),
        json!({"request": complete_request, "resolvedDependencies": complete_deps}),
    );
    if opts.reproducible {
        metadata.insert("buildkit_reproducible".into(), json!(true));
    }

    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "resolvedDependencies": deps,
            "externalParameters": {
                "configSource": config_source,
                "request": req,
            },
            "internalParameters": internal,
        },
        "runDetails": {
            "builder": {"id": opts.builder_id},
            "metadata": metadata,
        },
    })
}

/// `mode=max`: the steps, the Dockerfile with each step's lines, each step's layers.
fn build_config(
    rec: &PlatformRecord,
    request: &Request,
    image: &crate::oci::PlatformImage,
    layer_chains: &[String],
) -> (Value, Value, Map<String, Value>) {
    // Step ids in stage and instruction order.
    let ids: BTreeMap<(usize, usize), usize> =
        rec.steps.keys().enumerate().map(|(i, k)| (*k, i)).collect();
    let last_of_stage = |stage: usize| -> Option<usize> {
        rec.steps
            .range((stage, 0)..(stage + 1, 0))
            .next_back()
            .map(|(k, _)| ids[k])
    };
    let mut defs = Vec::new();
    let mut mapping = BTreeMap::new();
    let mut locations = Map::new();
    let mut layers = Map::new();
    for (k, s) in &rec.steps {
        let id = format!("step{}", ids[k]);
        let mut inputs = Vec::new();
        if let Some((prev, _)) = rec.steps.range((k.0, 0)..*k).next_back() {
            inputs.push(format!("step{}:0", ids[prev]));
        }
        for st in &s.extra_inputs {
            if let Some(i) = last_of_stage(*st) {
                inputs.push(format!("step{i}:0"));
            }
        }
        let mut d = Map::new();
        d.insert("id".into(), json!(id));
        if !inputs.is_empty() {
            d.insert("inputs".into(), json!(inputs));
        }
        let mut op = Map::new();
        op.insert("Op".into(), s.op.clone());
        op.insert("constraints".into(), json!({}));
        if let Some((os, arch)) = &s.platform {
            op.insert("platform".into(), json!({"Architecture": arch, "OS": os}));
        }
        d.insert("op".into(), Value::Object(op));
        defs.push(Value::Object(d));
        mapping.insert(
            format!("sha256:{}", sha256_hex(s.key.as_bytes())),
            id.clone(),
        );
        locations.insert(
            id.clone(),
            json!({"locations": [{"ranges": [{"start": {"line": s.lines.0}, "end": {"line": s.lines.1}}]}]}),
        );
        if let Some(chain) = &s.chain {
            if let Some(n) = layer_chains.iter().position(|c| c == chain) {
                let descs: Vec<Value> = image.layers[..=n].iter().map(descriptor_json).collect();
                layers.insert(format!("{id}:0"), json!([descs]));
            }
        }
    }
    let config = json!({"digestMapping": mapping, "llbDefinition": defs});
    let source = json!({
        "locations": locations,
        "infos": [{
            "filename": request.filename,
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(&request.dockerfile),
        }],
    });
    (config, source, layers)
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_purls_as_buildkit_writes_them() {
        assert_eq!(
            image_purl("127.0.0.1:5000/library/busybox:latest", Some("linux/amd64")),
            "pkg:docker/127.0.0.1%3A5000/library/busybox@latest?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("node:20-slim", Some("linux/arm64")),
            "pkg:docker/node@20-slim?platform=linux%2Farm64"
        );
        assert_eq!(
            image_purl("node:20-slim", Some("linux/arm64/v8")),
            "pkg:docker/node@20-slim?platform=linux%2Farm64"
        );
        assert_eq!(
            image_purl("docker.io/library/node", None),
            "pkg:docker/node@latest"
        );
        assert_eq!(
            image_purl("ghcr.io/o/app@sha256:abcd", Some("linux/amd64")),
            "pkg:docker/ghcr.io/o/app?digest=sha256%3Aabcd&platform=linux%2Famd64"
        );
    }
}
