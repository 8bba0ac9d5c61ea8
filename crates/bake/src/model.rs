//! Resolved bake definitions, in the shape `docker buildx bake --print` writes them.

use std::collections::BTreeMap;

use serde::Serialize;

/// A `key=value,...` attribute list (a cache source, an output, a secret, an SSH agent), as
/// buildx prints it: an object with the keys in order.
pub type Attrs = BTreeMap<String, String>;

/// One target, every field resolved. Unset fields are `None` (or empty) and left out of
/// `--print`, as buildx leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Target {
    /// What the target is for (`--list targets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The build context directory (relative to the working directory, or absolute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Named contexts (`FROM name`, `COPY --from=name`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, String>,
    /// The Dockerfile, relative to the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The Dockerfile's text, instead of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Build arguments.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// OCI annotations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Cache sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<Attrs>,
    /// Cache destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<Attrs>,
    /// Image labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Image names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The stage to build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Secrets exposed to RUN.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<Attrs>,
    /// SSH agents exposed to RUN.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<Attrs>,
    /// Target platforms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<Attrs>,
    /// Always pull base images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<bool>,
    /// Build without the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_cache: Option<bool>,
}

impl Target {
    /// The keys this target sets (for merging it into another).
    pub fn present(&self) -> std::collections::BTreeSet<String> {
        let mut p = std::collections::BTreeSet::new();
        let mut add = |k: &str, yes: bool| {
            if yes {
                p.insert(k.to_owned());
            }
        };
        add("description", self.description.is_some());
        add("context", self.context.is_some());
        add("contexts", !self.contexts.is_empty());
        add("dockerfile", self.dockerfile.is_some());
        add("dockerfile-inline", self.dockerfile_inline.is_some());
        add("args", !self.args.is_empty());
        add("annotations", !self.annotations.is_empty());
        add("cache-from", !self.cache_from.is_empty());
        add("cache-to", !self.cache_to.is_empty());
        add("labels", !self.labels.is_empty());
        add("tags", !self.tags.is_empty());
        add("target", self.target.is_some());
        add("secret", !self.secret.is_empty());
        add("ssh", !self.ssh.is_empty());
        add("platforms", !self.platforms.is_empty());
        add("output", !self.output.is_empty());
        add("pull", self.pull.is_some());
        add("no-cache", self.no_cache.is_some());
        p
    }

    /// Merges `other`'s keys in `present` into this target, as buildx merges a later
    /// file's or an inheriting target's fields: maps merged per key, `annotations`
    /// appended, `secret`, `ssh` and `cache-from` merged, everything else replaced.
    pub fn merge(&mut self, other: &Target, present: &std::collections::BTreeSet<String>) {
        let has = |k: &str| present.contains(k);
        fn merge_attrs(into: &mut Vec<Attrs>, from: &[Attrs], key: &str) {
            for a in from {
                let same = into
                    .iter()
                    .position(|x| (!key.is_empty() && x.get(key) == a.get(key)) || x == a);
                match same {
                    Some(i) => into[i] = a.clone(),
                    None => into.push(a.clone()),
                }
            }
        }
        if has("description") {
            self.description.clone_from(&other.description);
        }
        if has("context") {
            self.context.clone_from(&other.context);
        }
        if has("dockerfile") {
            self.dockerfile.clone_from(&other.dockerfile);
        }
        if has("dockerfile-inline") {
            self.dockerfile_inline.clone_from(&other.dockerfile_inline);
        }
        self.args.extend(other.args.clone());
        self.contexts.extend(other.contexts.clone());
        self.labels.extend(other.labels.clone());
        if has("tags") {
            self.tags.clone_from(&other.tags);
        }
        if has("target") {
            self.target.clone_from(&other.target);
        }
        self.annotations.extend(other.annotations.iter().cloned());
        merge_attrs(&mut self.secret, &other.secret, "id");
        merge_attrs(&mut self.ssh, &other.ssh, "id");
        merge_attrs(&mut self.cache_from, &other.cache_from, "");
        if has("platforms") {
            self.platforms.clone_from(&other.platforms);
        }
        if has("cache-to") {
            self.cache_to.clone_from(&other.cache_to);
        }
        if has("output") {
            self.output.clone_from(&other.output);
        }
        if has("pull") {
            self.pull = other.pull;
        }
        if has("no-cache") {
            self.no_cache = other.no_cache;
        }
    }
}

/// A named list of targets (or other groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Group {
    /// What the group is for (`--list targets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The members.
    pub targets: Vec<String>,
}

/// Every group and target of the files read, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// The groups.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, Group>,
    /// The targets.
    pub target: BTreeMap<String, Target>,
    /// The variables of HCL and JSON files, resolved (`--list variables`; not printed).
    #[serde(skip)]
    pub variables: Vec<Variable>,
}

/// A bake file's variable, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variable {
    /// The name.
    pub name: String,
    /// Its type (`string`, `bool`, `list(string)`...), as declared or as its value has.
    pub type_name: String,
    /// Its value, as `--list variables` shows it.
    pub value: String,
    /// What it is for.
    pub description: Option<String>,
}

/// Parses a `key=value,...` attribute list; `default_key` names a bare value (`ref` for a
/// cache source: `user/app:cache` is `type=registry,ref=user/app:cache`).
pub fn parse_attrs(s: &str, default_key: Option<&str>) -> Result<Attrs, String> {
    let mut out = Attrs::new();
    if !s.contains('=') {
        match default_key {
            Some("ref") => {
                out.insert("type".into(), "registry".into());
                out.insert("ref".into(), s.to_owned());
                return Ok(out);
            }
            Some("id") => {
                out.insert("id".into(), s.to_owned());
                return Ok(out);
            }
            Some("type") => {
                out.insert("type".into(), s.to_owned());
                return Ok(out);
            }
            _ => return Err(format!("{s:?} is not a key=value list")),
        }
    }
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid field {field:?}: must be a key=value pair"))?;
        let k = match k.trim() {
            "source" => "src",
            k => k,
        };
        out.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// An SSH spec (`default`, `id=path,path`) as buildx prints it.
pub fn parse_ssh(s: &str) -> Attrs {
    let mut out = Attrs::new();
    let (id, paths) = s.split_once('=').unwrap_or((s, ""));
    out.insert("id".into(), id.to_owned());
    if !paths.is_empty() {
        out.insert("paths".into(), paths.to_owned());
    }
    out
}
