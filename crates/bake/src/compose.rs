//! Compose files (the Compose Specification): each service with a `build:` is a target,
//! named after the service; `image:` is its first tag; `x-bake` adds bake-only fields.
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` and `$$` are
//! interpolated from the environment, then from the `.env` file beside the compose file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::{Attrs, Definition, Target, parse_attrs, parse_ssh};
use crate::yaml::{self, Node};
use crate::{Env, Error, Pos};

struct Ctx<'a> {
    file: &'a str,
    env: &'a Env,
}

impl Ctx<'_> {
    fn err(&self, pos: Pos, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.to_owned(),
            pos,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// A scalar, interpolated.
    fn string(&self, node: &Node, key: &str) -> Result<String, Error> {
        match node {
            Node::Scalar { value, .. } => self.interpolate(value, node.pos(), key),
            other => Err(self.err(
                other.pos(),
                key,
                format!("expected a string, found {}", other.kind()),
            )),
        }
    }

    fn bool(&self, node: &Node, key: &str) -> Result<bool, Error> {
        match self.string(node, key)?.as_str() {
            "true" | "True" | "TRUE" | "yes" => Ok(true),
            "false" | "False" | "FALSE" | "no" => Ok(false),
            v => Err(self.err(
                node.pos(),
                key,
                format!("expected true or false, found {v:?}"),
            )),
        }
    }

    /// A list of strings (a single string is a list of one).
    fn strings(&self, node: &Node, key: &str) -> Result<Vec<String>, Error> {
        match node {
            Node::Seq(items, _) => items.iter().map(|i| self.string(i, key)).collect(),
            Node::Scalar { .. } => Ok(vec![self.string(node, key)?]),
            other => Err(self.err(
                other.pos(),
                key,
                format!("expected a list, found {}", other.kind()),
            )),
        }
    }

    /// A mapping or a `KEY=VALUE` list; a `KEY` without a value takes the environment's
    /// value, or is left out when it has none (as compose does).
    fn map(&self, node: &Node, key: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        match node {
            Node::Map(entries, _) => {
                for (k, v) in entries {
                    let k = self.interpolate(k, v.pos(), key)?;
                    if v.is_null() {
                        if let Some(val) = self.env.get(&k) {
                            out.insert(k, val);
                        }
                    } else {
                        out.insert(k.clone(), self.string(v, &format!("{key}.{k}"))?);
                    }
                }
            }
            Node::Seq(items, _) => {
                for i in items {
                    let s = self.string(i, key)?;
                    match s.split_once('=') {
                        Some((k, v)) => {
                            out.insert(k.to_owned(), v.to_owned());
                        }
                        None => {
                            if let Some(val) = self.env.get(&s) {
                                out.insert(s, val);
                            }
                        }
                    }
                }
            }
            other => {
                return Err(self.err(
                    other.pos(),
                    key,
                    format!("expected a mapping or a list, found {}", other.kind()),
                ));
            }
        }
        Ok(out)
    }

    fn attrs_list(
        &self,
        node: &Node,
        key: &str,
        default_key: Option<&str>,
    ) -> Result<Vec<Attrs>, Error> {
        let mut out = Vec::new();
        for s in self.strings(node, key)? {
            out.push(parse_attrs(&s, default_key).map_err(|m| self.err(node.pos(), key, m))?);
        }
        Ok(out)
    }

    /// Compose's interpolation.
    fn interpolate(&self, s: &str, pos: Pos, key: &str) -> Result<String, Error> {
        interpolate(s, self.env).map_err(|m| self.err(pos, key, m))
    }
}

/// `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
/// `${VAR:?error}`, `${VAR?error}`, `$$`.
pub(crate) fn interpolate(s: &str, env: &Env) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            // The matching brace (defaults may hold nested `${...}`).
            let mut depth = 1;
            let mut end = None;
            for (j, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("unterminated variable in {s:?}"))?;
            out.push_str(&expand(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            let n = after
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(after.len(), |(j, _)| j);
            if n == 0 {
                out.push('$');
            } else {
                out.push_str(&env.get(&after[..n]).unwrap_or_default());
            }
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(body: &str, env: &Env) -> Result<String, String> {
    let n = body
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(j, _)| j);
    let (name, op) = body.split_at(n);
    if name.is_empty() {
        return Err(format!("invalid variable ${{{body}}}"));
    }
    let val = env.get(name);
    let set = val.is_some();
    let nonempty = val.as_deref().is_some_and(|v| !v.is_empty());
    let word = |w: &str| interpolate(w, env);
    Ok(match op {
        "" => val.unwrap_or_default(),
        _ if op.starts_with(":-") => {
            if nonempty {
                val.unwrap_or_default()
            } else {
                word(&op[2..])?
            }
        }
        _ if op.starts_with('-') => {
            if set {
                val.unwrap_or_default()
            } else {
                word(&op[1..])?
            }
        }
        _ if op.starts_with(":+") => {
            if nonempty {
                word(&op[2..])?
            } else {
                String::new()
            }
        }
        _ if op.starts_with('+') => {
            if set {
                word(&op[1..])?
            } else {
                String::new()
            }
        }
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let strict = op.starts_with(':');
            if (strict && !nonempty) || !set {
                let msg = word(op.trim_start_matches(':').trim_start_matches('?'))?;
                return Err(format!(
                    "required variable {name} is missing a value: {msg}"
                ));
            }
            val.unwrap_or_default()
        }
        _ => return Err(format!("invalid variable ${{{body}}}")),
    })
}

/// Reads a `.env` file: `KEY=VALUE` lines, `#` comments, optional quotes.
pub(crate) fn read_dotenv(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            out.insert(k.trim().to_owned(), v.to_owned());
        }
    }
    out
}

/// Joins a context given in a file with the file's directory, as written (no
/// canonicalisation): `examples/` + `./auth-service` is `examples/auth-service`.
pub(crate) fn join_dir(dir: &Path, p: &str) -> String {
    if Path::new(p).is_absolute() {
        return p.to_owned();
    }
    let mut parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != ".")
        .collect();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| l != "..") => {
                parts.pop();
            }
            c => parts.push(c.to_owned()),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// Reads a compose file into `def`: one target per service with `build:`, and the
/// `default` group with all of them.
pub(crate) fn load(file: &str, text: &str, env: &Env, def: &mut Definition) -> Result<(), Error> {
    let dir = Path::new(file)
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let env = env.with_dotenv(read_dotenv(&dir.join(".env")));
    let cx = Ctx { file, env: &env };
    let root = yaml::parse(file, text)?;
    let Some(services) = root.get("services") else {
        return Err(cx.err(
            root.pos(),
            "services",
            "a compose file needs a services: mapping",
        ));
    };
    let Node::Map(services, _) = services else {
        return Err(cx.err(
            services.pos(),
            "services",
            format!("expected a mapping, found {}", services.kind()),
        ));
    };
    let mut names = Vec::new();
    for (name, svc) in services {
        let Some(build) = svc.get("build") else {
            continue;
        };
        crate::check_name(name).map_err(|m| cx.err(svc.pos(), &format!("services.{name}"), m))?;
        let key = |k: &str| format!("services.{name}.build.{k}");
        let mut t = Target::default();
        let mut tags = Vec::new();
        if let Some(image) = svc.get("image") {
            tags.push(cx.string(image, &format!("services.{name}.image"))?);
        }
        match build {
            Node::Scalar { .. } => {
                t.context = Some(join_dir(
                    &dir,
                    &cx.string(build, &format!("services.{name}.build"))?,
                ));
            }
            Node::Map(entries, _) => {
                t.context = Some(join_dir(&dir, "."));
                for (k, v) in entries {
                    let k = k.as_str();
                    match k {
                        "context" => t.context = Some(join_dir(&dir, &cx.string(v, &key(k))?)),
                        "dockerfile" => t.dockerfile = Some(cx.string(v, &key(k))?),
                        "dockerfile_inline" => t.dockerfile_inline = Some(cx.string(v, &key(k))?),
                        "args" => t.args = cx.map(v, &key(k))?,
                        "labels" => t.labels = cx.map(v, &key(k))?,
                        "target" => t.target = Some(cx.string(v, &key(k))?),
                        "tags" => tags.extend(cx.strings(v, &key(k))?),
                        "platforms" => t.platforms = cx.strings(v, &key(k))?,
                        "cache_from" => t.cache_from = cx.attrs_list(v, &key(k), Some("ref"))?,
                        "cache_to" => t.cache_to = cx.attrs_list(v, &key(k), Some("ref"))?,
                        "no_cache" => t.no_cache = Some(cx.bool(v, &key(k))?),
                        "pull" => t.pull = Some(cx.bool(v, &key(k))?),
                        "additional_contexts" => t.contexts = cx.map(v, &key(k))?,
                        "secrets" => t.secret = compose_secrets(&cx, &root, v, &key(k), &dir)?,
                        "ssh" => {
                            t.ssh = cx
                                .strings(v, &key(k))?
                                .iter()
                                .map(|s| parse_ssh(s))
                                .collect()
                        }
                        "x-bake" => x_bake(&cx, v, &key(k), &mut t, &mut tags)?,
                        // Compose build keys with no bake meaning.
                        "network" | "shm_size" | "extra_hosts" | "isolation" | "privileged" => {
                            return Err(cx.err(v.pos(), &key(k), "not supported by rbuild bake"));
                        }
                        _ if k.starts_with("x-") => {}
                        _ => return Err(cx.err(v.pos(), &key(k), "unknown build key")),
                    }
                }
            }
            other => {
                return Err(cx.err(
                    other.pos(),
                    &format!("services.{name}.build"),
                    format!("expected a string or a mapping, found {}", other.kind()),
                ));
            }
        }
        if t.dockerfile.is_none() && t.dockerfile_inline.is_none() {
            t.dockerfile = Some("Dockerfile".to_owned());
        }
        t.tags = tags;
        names.push(name.clone());
        match def.target.get_mut(name) {
            Some(prev) => prev.merge(&t, &t.present()),
            None => {
                def.target.insert(name.clone(), t);
            }
        }
    }
    names.sort();
    let group = def.group.entry("default".to_owned()).or_default();
    for n in names {
        if !group.targets.contains(&n) {
            group.targets.push(n);
        }
    }
    Ok(())
}

/// `build.secrets`: names of the top-level `secrets:` (with `file:` or `environment:`).
fn compose_secrets(
    cx: &Ctx<'_>,
    root: &Node,
    v: &Node,
    key: &str,
    dir: &Path,
) -> Result<Vec<Attrs>, Error> {
    let mut out = Vec::new();
    let items = match v {
        Node::Seq(items, _) => items.clone(),
        other => vec![other.clone()],
    };
    for item in &items {
        let (id, source) = match item {
            Node::Map(..) => {
                let src = item
                    .get("source")
                    .ok_or_else(|| cx.err(item.pos(), key, "a secret needs source:"))?;
                let src = cx.string(src, key)?;
                let id = match item.get("target") {
                    Some(t) => cx.string(t, key)?,
                    None => src.clone(),
                };
                (id, src)
            }
            _ => {
                let s = cx.string(item, key)?;
                (s.clone(), s)
            }
        };
        let decl = root
            .get("secrets")
            .and_then(|s| s.get(&source))
            .ok_or_else(|| {
                cx.err(
                    item.pos(),
                    key,
                    format!("secret {source:?} is not declared in the top-level secrets:"),
                )
            })?;
        let mut a = Attrs::new();
        a.insert("id".into(), id);
        if let Some(f) = decl.get("file") {
            a.insert("src".into(), join_dir(dir, &cx.string(f, key)?));
        } else if let Some(e) = decl.get("environment") {
            a.insert("env".into(), cx.string(e, key)?);
        } else {
            return Err(cx.err(
                decl.pos(),
                key,
                format!("secret {source:?} needs file: or environment:"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

/// `x-bake`: bake's own fields, which override compose's.
fn x_bake(
    cx: &Ctx<'_>,
    v: &Node,
    key: &str,
    t: &mut Target,
    tags: &mut Vec<String>,
) -> Result<(), Error> {
    let Node::Map(entries, _) = v else {
        return Err(cx.err(
            v.pos(),
            key,
            format!("expected a mapping, found {}", v.kind()),
        ));
    };
    for (k, v) in entries {
        let key = format!("{key}.{k}");
        match k.as_str() {
            "tags" => tags.extend(cx.strings(v, &key)?),
            "platforms" => t.platforms = cx.strings(v, &key)?,
            "cache-from" => t.cache_from = cx.attrs_list(v, &key, Some("ref"))?,
            "cache-to" => t.cache_to = cx.attrs_list(v, &key, Some("ref"))?,
            "secret" => t.secret = cx.attrs_list(v, &key, Some("id"))?,
            "ssh" => t.ssh = cx.strings(v, &key)?.iter().map(|s| parse_ssh(s)).collect(),
            "output" => t.output = cx.attrs_list(v, &key, Some("type"))?,
            "pull" => t.pull = Some(cx.bool(v, &key)?),
            "no-cache" => t.no_cache = Some(cx.bool(v, &key)?),
            "contexts" => t.contexts = cx.map(v, &key)?,
            "annotations" => t.annotations = cx.strings(v, &key)?,
            _ => return Err(cx.err(v.pos(), &key, "unknown x-bake key")),
        }
    }
    Ok(())
}
