//! `docker-bake.hcl` and `docker-bake.json`: variables (typed, overridden by the
//! environment), user functions, groups, and targets with `inherits` and `matrix`,
//! evaluated with hcl-rs and buildx's built-in functions ([`crate::funcs`]).

use std::collections::{BTreeMap, BTreeSet};

use hcl::edit::Span as _;
use hcl::eval::{Context, Evaluate};
use hcl::{Expression, Value};

use crate::funcs::{self, UserFunc};
use crate::model::{Attrs, Definition, Group, Target, Variable, parse_attrs, parse_ssh};
use crate::values::{Ty, json_to_value, kind, value_string, value_to_json};
use crate::{Env, Error, Pos};

/// An attribute: its name, expression and where it is.
pub(crate) struct Attr {
    pub(crate) name: String,
    pub(crate) expr: Expression,
    pub(crate) pos: Pos,
}

/// A block: `target "name" { ... }`.
pub(crate) struct Blk {
    pub(crate) kind: String,
    pub(crate) label: String,
    pub(crate) attrs: Vec<Attr>,
    pub(crate) blocks: Vec<Blk>,
    pub(crate) pos: Pos,
}

/// A file read: its top-level attributes and blocks.
pub(crate) struct File {
    pub(crate) attrs: Vec<Attr>,
    pub(crate) blocks: Vec<Blk>,
}

/// Line and column of byte `offset` in `text`.
pub(crate) fn pos_at(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    Pos { line, col }
}

/// Parses HCL text.
pub(crate) fn parse(file: &str, text: &str) -> Result<File, Error> {
    let body = hcl::edit::parser::parse_body(text).map_err(|e| Error::Syntax {
        file: file.to_owned(),
        pos: Pos {
            line: e.location().line() as u32,
            col: e.location().column() as u32,
        },
        message: e.message().to_owned(),
    })?;
    Ok(convert_body(text, &body))
}

fn convert_body(text: &str, body: &hcl::edit::structure::Body) -> File {
    let mut out = File {
        attrs: Vec::new(),
        blocks: Vec::new(),
    };
    for a in body.attributes() {
        out.attrs.push(Attr {
            name: a.key.as_str().to_owned(),
            expr: a.value.clone().into(),
            pos: pos_at(text, a.span().map_or(0, |s| s.start)),
        });
    }
    for b in body.blocks() {
        let inner = convert_body(text, &b.body);
        out.blocks.push(Blk {
            kind: b.ident.as_str().to_owned(),
            label: b
                .labels
                .first()
                .map(|l| l.as_str().to_owned())
                .unwrap_or_default(),
            attrs: inner.attrs,
            blocks: inner.blocks,
            pos: pos_at(text, b.span().map_or(0, |s| s.start)),
        });
    }
    out
}

struct Cx<'a> {
    file: &'a str,
    env: &'a Env,
    /// Variables' expressions (top-level attributes and `variable` blocks).
    var_defs: BTreeMap<String, &'a Blk>,
    top: BTreeMap<String, &'a Attr>,
    resolved: BTreeMap<String, Value>,
    resolving: Vec<String>,
    listed: Vec<Variable>,
}

impl Cx<'_> {
    fn err(&self, pos: Pos, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.to_owned(),
            pos,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn ctx(&self) -> Context<'static> {
        let mut ctx = Context::new();
        funcs::declare(&mut ctx);
        for (k, v) in &self.resolved {
            ctx.declare_var(k.as_str(), v.clone());
        }
        ctx
    }

    /// Evaluates `expr`, resolving the variables it needs first.
    fn eval(
        &mut self,
        expr: &Expression,
        extra: &[(String, Value)],
        pos: Pos,
        key: &str,
    ) -> Result<Value, Error> {
        loop {
            let mut ctx = self.ctx();
            for (k, v) in extra {
                ctx.declare_var(k.as_str(), v.clone());
            }
            funcs::set_vars(&self.resolved);
            funcs::take_missing();
            match expr.evaluate(&ctx) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let missing = match e.kind() {
                        hcl::eval::ErrorKind::UndefinedVar(n) => Some(n.to_string()),
                        _ => funcs::take_missing(),
                    };
                    match missing {
                        Some(n)
                            if !self.resolved.contains_key(&n)
                                && (self.var_defs.contains_key(&n)
                                    || self.top.contains_key(&n)) =>
                        {
                            self.resolve(&n)?;
                        }
                        _ => return Err(self.err(pos, key, eval_message(&e))),
                    }
                }
            }
        }
    }

    /// Resolves variable `name` (its default or top-level value, then the environment).
    fn resolve(&mut self, name: &str) -> Result<(), Error> {
        if self.resolving.iter().any(|n| n == name) {
            let pos = self.var_defs.get(name).map_or_else(Pos::default, |b| b.pos);
            return Err(self.err(
                pos,
                &format!("variable.{name}"),
                format!("variable cycle not allowed for {name}"),
            ));
        }
        self.resolving.push(name.to_owned());
        let r = self.resolve_inner(name);
        self.resolving.pop();
        r
    }

    fn resolve_inner(&mut self, name: &str) -> Result<(), Error> {
        if let Some(a) = self.top.get(name).copied() {
            let v = self.eval(&a.expr, &[], a.pos, name)?;
            self.list(name, &v, None, None);
            self.resolved.insert(name.to_owned(), v);
            return Ok(());
        }
        let blk = self.var_defs[name];
        let key = format!("variable.{name}");
        let get = |k: &str| blk.attrs.iter().find(|a| a.name == k);
        for a in &blk.attrs {
            if !matches!(a.name.as_str(), "default" | "type" | "description") {
                return Err(self.err(
                    a.pos,
                    &format!("{key}.{}", a.name),
                    "unknown variable attribute",
                ));
            }
        }
        let ty = match get("type") {
            Some(a) => {
                Some(Ty::parse(&a.expr).map_err(|m| self.err(a.pos, &format!("{key}.type"), m))?)
            }
            None => None,
        };
        let description = match get("description") {
            Some(a) => {
                Some(value_string(&self.eval(&a.expr, &[], a.pos, &key)?).unwrap_or_default())
            }
            None => None,
        };
        let mut value = match get("default") {
            Some(a) => {
                let v = self.eval(&a.expr, &[], a.pos, &format!("{key}.default"))?;
                match &ty {
                    Some(t) => t.convert(v).map_err(|m| {
                        self.err(
                            a.pos,
                            &format!("{key}.default"),
                            format!(
                                "invalid type {} for variable {name} default value: {m}",
                                t.name()
                            ),
                        )
                    })?,
                    None => v,
                }
            }
            None => match &ty {
                Some(_) => Value::Null,
                None => Value::String(String::new()),
            },
        };
        let lookup = self
            .env
            .get("BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP")
            .is_none_or(|v| v != "1" && v != "true");
        if lookup {
            let json = self.env.get(&format!("{name}_JSON"));
            let plain = self.env.get(name);
            let pos = blk.pos;
            let bad = |m: String| Error::Invalid {
                file: self.file.to_owned(),
                pos,
                key: key.clone(),
                message: m,
            };
            if let (Some(j), Some(t), true) = (
                &json,
                &ty,
                plain.is_none() || ty.as_ref().is_some_and(|t| !t.is_primitive()),
            ) {
                let parsed: serde_json::Value = serde_json::from_str(j).map_err(|e| {
                    bad(format!("failed to convert variable {name} from JSON: {e}"))
                })?;
                value = t.convert(json_to_value(parsed)).map_err(|m| {
                    bad(format!("failed to convert variable {name} from JSON: {m}"))
                })?;
            } else if let Some(s) = plain {
                value = match &ty {
                    Some(t) => t
                        .parse_env(&s)
                        .map_err(|m| bad(format!("variable {name}: {m}")))?,
                    None => match &value {
                        Value::Bool(_) => Ty::Bool.parse_env(&s).map_err(bad)?,
                        Value::Number(_) => Ty::Number.parse_env(&s).map_err(bad)?,
                        Value::String(_) | Value::Null => Value::String(s),
                        other => {
                            return Err(bad(format!(
                                "unsupported type {} for variable {name}: give it a type to override it",
                                kind(other)
                            )));
                        }
                    },
                };
            }
        }
        let type_name = ty
            .as_ref()
            .map_or_else(|| kind(&value).to_owned(), Ty::name);
        self.list(name, &value, Some(type_name), description);
        self.resolved.insert(name.to_owned(), value);
        Ok(())
    }

    fn list(
        &mut self,
        name: &str,
        v: &Value,
        type_name: Option<String>,
        description: Option<String>,
    ) {
        self.listed.push(Variable {
            name: name.to_owned(),
            type_name: type_name.unwrap_or_else(|| kind(v).to_owned()),
            value: value_string(v)
                .unwrap_or_else(|| serde_json::to_string(&value_to_json(v)).unwrap_or_default()),
            description,
        });
    }
}

fn eval_message(e: &hcl::eval::Error) -> String {
    match e.kind() {
        hcl::eval::ErrorKind::UndefinedVar(n) => {
            format!("there is no variable named {:?}", n.as_str())
        }
        hcl::eval::ErrorKind::UndefinedFunc(n) => {
            format!("there is no function named {:?}", n.to_string())
        }
        k => k.to_string(),
    }
}

/// The attributes a target may have, and what rbuild does not support.
const TARGET_KEYS: &[&str] = &[
    "args",
    "annotations",
    "cache-from",
    "cache-to",
    "context",
    "contexts",
    "description",
    "dockerfile",
    "dockerfile-inline",
    "inherits",
    "labels",
    "matrix",
    "name",
    "no-cache",
    "output",
    "platforms",
    "pull",
    "secret",
    "ssh",
    "tags",
    "target",
];
const UNSUPPORTED_KEYS: &[&str] = &[
    "attest",
    "call",
    "entitlements",
    "extra-hosts",
    "network",
    "no-cache-filter",
    "policy",
    "resources",
    "shm-size",
    "ulimits",
];

/// A target as written (before `inherits`), with the keys it sets.
struct Raw {
    target: Target,
    present: BTreeSet<String>,
    inherits: Vec<String>,
    pos: Pos,
}

/// Evaluates a parsed file into `def`.
pub(crate) fn load(
    file: &str,
    parsed: &File,
    env: &Env,
    def: &mut Definition,
) -> Result<(), Error> {
    let mut cx = Cx {
        file,
        env,
        var_defs: BTreeMap::new(),
        top: BTreeMap::new(),
        resolved: BTreeMap::new(),
        resolving: Vec::new(),
        listed: Vec::new(),
    };
    cx.resolved
        .insert("BAKE_CMD_CONTEXT".into(), Value::String("cwd://".into()));
    cx.resolved.insert(
        "BAKE_LOCAL_PLATFORM".into(),
        Value::String(funcs::local_platform()),
    );
    for a in &parsed.attrs {
        cx.top.insert(a.name.clone(), a);
    }
    let mut user = BTreeMap::new();
    for b in &parsed.blocks {
        match b.kind.as_str() {
            "variable" => {
                crate::check_name(&b.label).map_err(|m| cx.err(b.pos, "variable", m))?;
                cx.var_defs.insert(b.label.clone(), b);
            }
            "function" => {
                let key = format!("function.{}", b.label);
                let mut f = UserFunc::default();
                for a in &b.attrs {
                    match a.name.as_str() {
                        "params" => {
                            f.params = param_names(&a.expr).ok_or_else(|| {
                                cx.err(a.pos, &format!("{key}.params"), "expected a list of names")
                            })?
                        }
                        "variadic_params" => match &a.expr {
                            Expression::Variable(v) => f.variadic = Some(v.to_string()),
                            _ => {
                                return Err(cx.err(
                                    a.pos,
                                    &format!("{key}.variadic_params"),
                                    "expected a name",
                                ));
                            }
                        },
                        "result" => f.result = Some(a.expr.clone()),
                        _ => {
                            return Err(cx.err(
                                a.pos,
                                &format!("{key}.{}", a.name),
                                "unknown function attribute",
                            ));
                        }
                    }
                }
                if f.result.is_none() {
                    return Err(cx.err(b.pos, &key, "a function needs result"));
                }
                user.insert(b.label.clone(), f);
            }
            "target" | "group" => {}
            other => {
                return Err(cx.err(
                    b.pos,
                    other,
                    "unknown block type (target, group, variable and function are)",
                ));
            }
        }
    }
    funcs::set_user(user);
    let names: Vec<String> = cx.var_defs.keys().chain(cx.top.keys()).cloned().collect();
    for n in names {
        if !cx.resolved.contains_key(&n) {
            cx.resolve(&n)?;
        }
    }
    // Groups.
    for b in parsed.blocks.iter().filter(|b| b.kind == "group") {
        let key = format!("group.{}", b.label);
        let mut g = Group::default();
        for a in &b.attrs {
            let k = format!("{key}.{}", a.name);
            let v = cx.eval(&a.expr, &[], a.pos, &k)?;
            match a.name.as_str() {
                "targets" => g.targets = strings(&cx, &v, a.pos, &k)?,
                "description" => g.description = value_string(&v),
                "matrix" => return Err(cx.err(a.pos, &k, "matrix is not supported for groups")),
                _ => return Err(cx.err(a.pos, &k, "unknown group attribute")),
            }
        }
        let entry = def.group.entry(b.label.clone()).or_default();
        for t in g.targets {
            if !entry.targets.contains(&t) {
                entry.targets.push(t);
            }
        }
        if g.description.is_some() {
            entry.description = g.description;
        }
    }
    // Targets, each matrix combination apart.
    let mut raws: BTreeMap<String, Raw> = BTreeMap::new();
    let mut order = Vec::new();
    for b in parsed.blocks.iter().filter(|b| b.kind == "target") {
        crate::check_name(&b.label).map_err(|m| cx.err(b.pos, "target", m))?;
        let key = format!("target.{}", b.label);
        let matrix = b.attrs.iter().find(|a| a.name == "matrix");
        let combos = match matrix {
            None => vec![Vec::new()],
            Some(a) => combinations(&cx.eval(&a.expr, &[], a.pos, &format!("{key}.matrix"))?)
                .map_err(|m| cx.err(a.pos, &format!("{key}.matrix"), m))?,
        };
        let mut generated = Vec::new();
        for combo in combos {
            let name = match b.attrs.iter().find(|a| a.name == "name") {
                None => b.label.clone(),
                Some(a) => {
                    if matrix.is_none() {
                        return Err(cx.err(a.pos, &format!("{key}.name"), "name requires matrix"));
                    }
                    let v = cx.eval(&a.expr, &combo, a.pos, &format!("{key}.name"))?;
                    let n = value_string(&v).ok_or_else(|| {
                        cx.err(a.pos, &format!("{key}.name"), "expected a string")
                    })?;
                    crate::check_name(&n).map_err(|m| cx.err(a.pos, &format!("{key}.name"), m))?;
                    n
                }
            };
            if generated.contains(&name) || (matrix.is_some() && raws.contains_key(&name)) {
                return Err(cx.err(b.pos, &key, format!("duplicate name {name:?}")));
            }
            let raw = eval_target(&mut cx, b, &key, &combo)?;
            generated.push(name.clone());
            match raws.get_mut(&name) {
                // A target defined twice in a file: the later block's keys win.
                Some(prev) => {
                    prev.target.merge(&raw.target, &raw.present);
                    prev.present.extend(raw.present);
                    if !raw.inherits.is_empty() {
                        prev.inherits = raw.inherits;
                    }
                }
                None => {
                    order.push(name.clone());
                    raws.insert(name, raw);
                }
            }
        }
        if matrix.is_some() {
            let g = def.group.entry(b.label.clone()).or_default();
            g.targets = generated;
        }
    }
    // `inherits`, resolved in this file, then in the files read before.
    let mut done: BTreeMap<String, (Target, BTreeSet<String>)> = BTreeMap::new();
    for name in &order {
        inherit(&cx, name, &raws, def, &mut done, &mut Vec::new())?;
    }
    for name in order {
        let (t, present) = done.remove(&name).expect("resolved above");
        let entry = def.target.entry(name).or_default();
        entry.merge(&t, &present);
        // buildx's defaults: the working directory, its Dockerfile.
        if entry.context.is_none() {
            entry.context = Some(".".to_owned());
        }
        if entry.dockerfile.is_none() && entry.dockerfile_inline.is_none() {
            entry.dockerfile = Some("Dockerfile".to_owned());
        }
    }
    def.variables.extend(cx.listed);
    Ok(())
}

fn inherit(
    cx: &Cx<'_>,
    name: &str,
    raws: &BTreeMap<String, Raw>,
    def: &Definition,
    done: &mut BTreeMap<String, (Target, BTreeSet<String>)>,
    stack: &mut Vec<String>,
) -> Result<(Target, BTreeSet<String>), Error> {
    if let Some(d) = done.get(name) {
        return Ok(d.clone());
    }
    let Some(raw) = raws.get(name) else {
        return match def.target.get(name) {
            Some(t) => Ok((t.clone(), t.present())),
            None => Err(Error::UnknownTarget(name.to_owned())),
        };
    };
    if stack.iter().any(|s| s == name) {
        return Err(cx.err(
            raw.pos,
            &format!("target.{name}.inherits"),
            format!("cycle in inherits: {} -> {name}", stack.join(" -> ")),
        ));
    }
    stack.push(name.to_owned());
    let mut t = Target::default();
    let mut present = BTreeSet::new();
    for parent in &raw.inherits {
        let (p, pp) = inherit(cx, parent, raws, def, done, stack).map_err(|e| match e {
            Error::UnknownTarget(n) => cx.err(
                raw.pos,
                &format!("target.{name}.inherits"),
                format!("failed to find target {n:?}"),
            ),
            e => e,
        })?;
        t.merge(&p, &pp);
        present.extend(pp);
    }
    t.merge(&raw.target, &raw.present);
    present.extend(raw.present.iter().cloned());
    stack.pop();
    done.insert(name.to_owned(), (t.clone(), present.clone()));
    Ok((t, present))
}

fn param_names(e: &Expression) -> Option<Vec<String>> {
    match e {
        Expression::Array(items) => items
            .iter()
            .map(|i| match i {
                Expression::Variable(v) => Some(v.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Every combination of a matrix's values (keys sorted, the first varying slowest).
fn combinations(m: &Value) -> Result<Vec<Vec<(String, Value)>>, String> {
    let Value::Object(o) = m else {
        return Err("matrix must be a map".into());
    };
    let mut keys: Vec<&String> = o.keys().collect();
    keys.sort();
    let mut out: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for k in keys {
        let Value::Array(vals) = &o[k] else {
            return Err("matrix values must be a list".into());
        };
        let mut next = Vec::new();
        for prefix in &out {
            for v in vals {
                let mut c = prefix.clone();
                c.push((k.clone(), v.clone()));
                next.push(c);
            }
        }
        out = next;
    }
    Ok(out)
}

fn strings(cx: &Cx<'_>, v: &Value, pos: Pos, key: &str) -> Result<Vec<String>, Error> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter(|i| !i.is_null())
            .map(|i| {
                value_string(i).ok_or_else(|| {
                    cx.err(
                        pos,
                        key,
                        format!(
                            "expected a list of strings, found an element of type {}",
                            kind(i)
                        ),
                    )
                })
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(cx.err(
            pos,
            key,
            format!("expected a list of strings, found {}", kind(other)),
        )),
    }
}

fn string_map(
    cx: &Cx<'_>,
    v: &Value,
    pos: Pos,
    key: &str,
) -> Result<BTreeMap<String, String>, Error> {
    match v {
        Value::Object(o) => {
            let mut out = BTreeMap::new();
            for (k, x) in o {
                if x.is_null() {
                    continue;
                }
                let s = value_string(x).ok_or_else(|| {
                    cx.err(
                        pos,
                        &format!("{key}.{k}"),
                        format!("expected a string, found {}", kind(x)),
                    )
                })?;
                out.insert(k.clone(), s);
            }
            Ok(out)
        }
        Value::Null => Ok(BTreeMap::new()),
        other => Err(cx.err(pos, key, format!("expected a map, found {}", kind(other)))),
    }
}

/// A list of `key=value,...` specs, each a string or an object.
fn attrs_list(
    cx: &Cx<'_>,
    v: &Value,
    pos: Pos,
    key: &str,
    default_key: Option<&str>,
    ssh: bool,
) -> Result<Vec<Attrs>, Error> {
    let Value::Array(items) = v else {
        return Err(cx.err(pos, key, format!("expected a list, found {}", kind(v))));
    };
    let mut out = Vec::new();
    for i in items {
        match i {
            Value::Object(_) => out.push(string_map(cx, i, pos, key)?),
            Value::String(s) if ssh => out.push(parse_ssh(s)),
            Value::String(s) => {
                out.push(parse_attrs(s, default_key).map_err(|m| cx.err(pos, key, m))?)
            }
            Value::Null => {}
            other => {
                return Err(cx.err(pos, key, format!("expected strings, found {}", kind(other))));
            }
        }
    }
    Ok(out)
}

fn eval_target(
    cx: &mut Cx<'_>,
    b: &Blk,
    key: &str,
    combo: &[(String, Value)],
) -> Result<Raw, Error> {
    let mut raw = Raw {
        target: Target::default(),
        present: BTreeSet::new(),
        inherits: Vec::new(),
        pos: b.pos,
    };
    if let Some(inner) = b.blocks.first() {
        return Err(cx.err(
            inner.pos,
            &format!("{key}.{}", inner.kind),
            "blocks are not expected in a target",
        ));
    }
    for a in &b.attrs {
        let k = format!("{key}.{}", a.name);
        let name = a.name.as_str();
        if UNSUPPORTED_KEYS.contains(&name) {
            return Err(cx.err(a.pos, &k, "not supported by rbuild yet"));
        }
        if !TARGET_KEYS.contains(&name) {
            return Err(cx.err(
                a.pos,
                &k,
                format!("unsupported argument: an argument named {name:?} is not expected here"),
            ));
        }
        if matches!(name, "matrix" | "name") {
            continue;
        }
        let v = cx.eval(&a.expr, combo, a.pos, &k)?;
        if v.is_null() {
            continue;
        }
        let t = &mut raw.target;
        let one = |v: &Value| {
            value_string(v)
                .ok_or_else(|| cx.err(a.pos, &k, format!("expected a string, found {}", kind(v))))
        };
        let flag = |v: &Value| match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(cx.err(a.pos, &k, format!("expected a bool, found {}", kind(other)))),
        };
        match name {
            "args" => t.args = string_map(cx, &v, a.pos, &k)?,
            "annotations" => t.annotations = strings(cx, &v, a.pos, &k)?,
            "cache-from" => t.cache_from = attrs_list(cx, &v, a.pos, &k, Some("ref"), false)?,
            "cache-to" => t.cache_to = attrs_list(cx, &v, a.pos, &k, Some("ref"), false)?,
            "context" => t.context = Some(one(&v)?),
            "contexts" => t.contexts = string_map(cx, &v, a.pos, &k)?,
            "description" => t.description = Some(one(&v)?),
            "dockerfile" => t.dockerfile = Some(one(&v)?),
            "dockerfile-inline" => t.dockerfile_inline = Some(one(&v)?),
            "inherits" => raw.inherits = strings(cx, &v, a.pos, &k)?,
            "labels" => t.labels = string_map(cx, &v, a.pos, &k)?,
            "no-cache" => t.no_cache = Some(flag(&v)?),
            "output" => t.output = attrs_list(cx, &v, a.pos, &k, Some("type"), false)?,
            "platforms" => t.platforms = strings(cx, &v, a.pos, &k)?,
            "pull" => t.pull = Some(flag(&v)?),
            "secret" => t.secret = attrs_list(cx, &v, a.pos, &k, Some("id"), false)?,
            "ssh" => t.ssh = attrs_list(cx, &v, a.pos, &k, None, true)?,
            "tags" => t.tags = strings(cx, &v, a.pos, &k)?,
            "target" => t.target = Some(one(&v)?),
            _ => unreachable!("TARGET_KEYS"),
        }
        if name != "inherits" {
            raw.present.insert(name.to_owned());
        }
    }
    Ok(raw)
}
