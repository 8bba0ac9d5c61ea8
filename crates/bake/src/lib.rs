//! Bake definitions: `docker-bake.hcl`/`.json` and compose files read as `docker buildx
//! bake` reads them, merged in order, and resolved into build [`Target`]s (the schema of
//! `--print`). Building them is builder-core's `BuildGroup`.

mod compose;
mod funcs;
mod hcl;
mod json;
mod model;
mod set;
mod values;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

pub use model::{Attrs, Definition, Group, Target, Variable, parse_attrs, parse_ssh};
pub use set::apply_set;

/// A line and column (1-based) in a definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// The line.
    pub line: u32,
    /// The column.
    pub col: u32,
}

/// What can be wrong with a definition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{file}:{}:{}: {message}", pos.line, pos.col)]
    Syntax {
        /// The file.
        file: String,
        /// Where.
        pos: Pos,
        /// What.
        message: String,
    },
    /// A key has a value that is wrong.
    #[error("{file}:{}:{}: {key}: {message}", pos.line, pos.col)]
    Invalid {
        /// The file.
        file: String,
        /// Where the value is.
        pos: Pos,
        /// The key, dotted (`services.api.build.args`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// No definition file was given and none of the default names exists.
    #[error("couldn't find a bake definition file (tried {})", .0.join(", "))]
    NoFile(Vec<String>),
    /// A target or group named on the command line does not exist.
    #[error("failed to find target {0:?}")]
    UnknownTarget(String),
    /// A `--set` is wrong.
    #[error("invalid --set {spec:?}: {message}")]
    Set {
        /// The `--set` value.
        spec: String,
        /// What is wrong.
        message: String,
    },
}

/// The variables a definition is evaluated with: the process environment (or a given
/// map), then a compose file's `.env`.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    dotenv: BTreeMap<String, String>,
}

impl Env {
    /// The environment of this process.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            dotenv: BTreeMap::new(),
        }
    }

    /// Exactly these variables.
    pub fn from_map(vars: BTreeMap<String, String>) -> Self {
        Self {
            vars,
            dotenv: BTreeMap::new(),
        }
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .cloned()
    }

    fn with_dotenv(&self, dotenv: BTreeMap<String, String>) -> Self {
        Self {
            vars: self.vars.clone(),
            dotenv,
        }
    }
}

/// The files read when no `-f` is given, in buildx's order (those that exist are merged).
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// The default files that exist in `dir`, as paths relative to it.
pub fn default_files(dir: &Path) -> Result<Vec<String>, Error> {
    let found: Vec<String> = DEFAULT_FILES
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| (*f).to_owned())
        .collect();
    if found.is_empty() {
        return Err(Error::NoFile(
            DEFAULT_FILES.iter().map(|f| (*f).to_owned()).collect(),
        ));
    }
    Ok(found)
}

/// Reads and merges `files` in order (a later file's fields override an earlier one's).
pub fn load_files(files: &[String], env: &Env) -> Result<Definition, Error> {
    let mut def = Definition::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|source| Error::Read {
            file: f.clone(),
            source,
        })?;
        load_text(f, &text, env, &mut def)?;
    }
    Ok(def)
}

/// Reads one file's text into `def`, by its name: `.hcl` is HCL, `.json` bake JSON
/// (HCL's JSON form: strings are templates), anything else a compose file. A later
/// file's targets are merged into the earlier ones as buildx merges them.
pub fn load_text(file: &str, text: &str, env: &Env, def: &mut Definition) -> Result<(), Error> {
    let epoch = env
        .get("SOURCE_DATE_EPOCH")
        .and_then(|v| v.trim().parse().ok());
    funcs::set_epoch(epoch);
    if file.ends_with(".json") {
        let parsed = json::parse(file, text)?;
        return hcl::load(file, &parsed, env, def);
    }
    if file.ends_with(".hcl") {
        let parsed = hcl::parse(file, text)?;
        return hcl::load(file, &parsed, env, def);
    }
    compose::load(file, text, env, def)
}

/// Target names as buildx allows them.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid target name {name:?}: use letters, digits, '_', '-' and '.'"
        ))
    }
}

/// The names asked for: `default` when none are.
fn wanted(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        vec!["default".to_owned()]
    } else {
        names.to_vec()
    }
}

/// The targets that `names` select (groups expanded, in order, each once); no names means
/// the `default` group (or a target named `default`), as buildx.
pub fn select(def: &Definition, names: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for n in &wanted(names) {
        expand(def, n, &mut out, &mut Vec::new(), &mut Vec::new())?;
    }
    Ok(out)
}

fn expand(
    def: &Definition,
    name: &str,
    out: &mut Vec<String>,
    groups: &mut Vec<String>,
    seen: &mut Vec<String>,
) -> Result<(), Error> {
    if seen.iter().any(|s| s == name) {
        return Ok(());
    }
    seen.push(name.to_owned());
    if let Some(g) = def.group.get(name) {
        groups.push(name.to_owned());
        for t in &g.targets {
            expand(def, t, out, groups, seen)?;
        }
    } else if def.target.contains_key(name) {
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    } else {
        return Err(Error::UnknownTarget(name.to_owned()));
    }
    Ok(())
}

/// The definition restricted to the selected targets, as `--print` shows it (buildx's
/// shape): the groups reached from the names, the selected targets, and a `default`
/// group listing the names asked for (or the file's own when `default` was asked).
pub fn printed(def: &Definition, names: &[String], selected: &[String]) -> Definition {
    let mut out = Definition::default();
    let wanted = wanted(names);
    for n in &wanted {
        let mut groups = Vec::new();
        // The names were checked by `select`.
        let _ = expand(def, n, &mut Vec::new(), &mut groups, &mut Vec::new());
        for g in groups {
            if let Some(group) = def.group.get(&g) {
                out.group.insert(g, group.clone());
            }
        }
    }
    let asked: Vec<String> = wanted
        .iter()
        .filter(|n| !(*n == "default" && def.group.contains_key("default")))
        .cloned()
        .collect();
    if !asked.is_empty() || !out.group.contains_key("default") {
        let default = out.group.entry("default".to_owned()).or_default();
        default.targets.extend(asked);
    }
    if let Some(default) = out.group.get_mut("default") {
        default.targets.sort();
        default.targets.dedup();
    }
    for t in selected {
        if let Some(target) = def.target.get(t) {
            out.target.insert(t.clone(), target.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hcl_tests;
