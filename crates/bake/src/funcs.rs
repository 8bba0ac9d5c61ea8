//! The functions of bake files: buildx's built-ins that users reach for (string, list,
//! map, number, comparison, encoding and time ones) and the file's own `function` blocks.
//!
//! hcl-rs calls functions through plain `fn` pointers, so the state they need (the user
//! functions, the variables, the environment's `SOURCE_DATE_EPOCH`) is thread-local,
//! set by the loader before each evaluation on the same thread.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Expression, Number, Value};

use crate::values::{json_to_value, kind, value_string, value_to_json};

/// A `function` block.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserFunc {
    pub(crate) params: Vec<String>,
    pub(crate) variadic: Option<String>,
    pub(crate) result: Option<Expression>,
}

#[derive(Default)]
struct State {
    user: Vec<(String, UserFunc)>,
    vars: BTreeMap<String, Value>,
    missing: Option<String>,
    epoch: Option<i64>,
    depth: usize,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

pub(crate) fn set_user(user: BTreeMap<String, UserFunc>) {
    STATE.with(|s| s.borrow_mut().user = user.into_iter().collect());
}

pub(crate) fn set_vars(vars: &BTreeMap<String, Value>) {
    STATE.with(|s| s.borrow_mut().vars = vars.clone());
}

pub(crate) fn set_epoch(epoch: Option<i64>) {
    STATE.with(|s| s.borrow_mut().epoch = epoch);
}

/// The variable a user function's body missed in the last evaluation.
pub(crate) fn take_missing() -> Option<String> {
    STATE.with(|s| s.borrow_mut().missing.take())
}

pub(crate) fn local_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        a => a,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

type F = fn(FuncArgs) -> Result<Value, String>;

/// Declares the built-ins and the user functions in `ctx`.
pub(crate) fn declare(ctx: &mut Context<'_>) {
    for (name, f) in BUILTINS {
        ctx.declare_func(
            *name,
            FuncDef::builder().variadic_param(ParamType::Any).build(*f),
        );
    }
    STATE.with(|s| {
        for (i, (name, _)) in s.borrow().user.iter().enumerate().take(SLOTS.len()) {
            ctx.declare_func(
                name.as_str(),
                FuncDef::builder()
                    .variadic_param(ParamType::Any)
                    .build(SLOTS[i]),
            );
        }
    });
}

/// Calls user function number `slot` (hcl-rs functions are `fn` pointers: one per slot).
fn call_slot(slot: usize, args: FuncArgs) -> Result<Value, String> {
    let (name, f, vars) = STATE.with(|s| {
        let s = s.borrow();
        let (n, f) = s.user[slot].clone();
        (n, f, s.vars.clone())
    });
    let depth = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.depth += 1;
        s.depth
    });
    let done = || STATE.with(|s| s.borrow_mut().depth -= 1);
    if depth > 64 {
        done();
        return Err(format!("function {name}: too deep a recursion"));
    }
    let args: Vec<Value> = args.iter().cloned().collect();
    if args.len() < f.params.len() || (f.variadic.is_none() && args.len() > f.params.len()) {
        done();
        return Err(format!(
            "function {name} takes {} arguments, {} given",
            f.params.len(),
            args.len()
        ));
    }
    let mut ctx = Context::new();
    declare(&mut ctx);
    for (k, v) in &vars {
        ctx.declare_var(k.as_str(), v.clone());
    }
    for (p, v) in f.params.iter().zip(&args) {
        ctx.declare_var(p.as_str(), v.clone());
    }
    if let Some(rest) = &f.variadic {
        ctx.declare_var(rest.as_str(), Value::Array(args[f.params.len()..].to_vec()));
    }
    let r = f.result.as_ref().expect("checked when read").evaluate(&ctx);
    done();
    r.map_err(|e| {
        if let hcl::eval::ErrorKind::UndefinedVar(v) = e.kind() {
            STATE.with(|s| s.borrow_mut().missing = Some(v.to_string()));
        }
        e.to_string()
    })
}

macro_rules! slots {
    ($($n:literal)*) => { &[$({ fn slot(a: FuncArgs) -> Result<Value, String> { call_slot($n, a) } slot as F }),*] };
}
/// At most this many user functions per file.
const SLOTS: &[F] =
    slots!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);

fn s(a: &[Value], i: usize) -> Result<String, String> {
    a.get(i)
        .ok_or_else(|| format!("argument {} is missing", i + 1))
        .and_then(|v| {
            value_string(v)
                .ok_or_else(|| format!("argument {} must be a string, found {}", i + 1, kind(v)))
        })
}

fn n(a: &[Value], i: usize) -> Result<f64, String> {
    match a.get(i) {
        Some(Value::Number(x)) => x.as_f64().ok_or_else(|| "bad number".into()),
        Some(Value::String(x)) => x
            .trim()
            .parse()
            .map_err(|_| format!("argument {} must be a number, found {x:?}", i + 1)),
        Some(v) => Err(format!(
            "argument {} must be a number, found {}",
            i + 1,
            kind(v)
        )),
        None => Err(format!("argument {} is missing", i + 1)),
    }
}

fn list(a: &[Value], i: usize) -> Result<Vec<Value>, String> {
    match a.get(i) {
        Some(Value::Array(x)) => Ok(x.clone()),
        Some(v) => Err(format!(
            "argument {} must be a list, found {}",
            i + 1,
            kind(v)
        )),
        None => Err(format!("argument {} is missing", i + 1)),
    }
}

fn map(a: &[Value], i: usize) -> Result<hcl::Map<String, Value>, String> {
    match a.get(i) {
        Some(Value::Object(x)) => Ok(x.clone()),
        Some(v) => Err(format!(
            "argument {} must be a map, found {}",
            i + 1,
            kind(v)
        )),
        None => Err(format!("argument {} is missing", i + 1)),
    }
}

fn b(a: &[Value], i: usize) -> Result<bool, String> {
    match a.get(i) {
        Some(Value::Bool(x)) => Ok(*x),
        Some(Value::String(x)) if x == "true" || x == "false" => Ok(x == "true"),
        Some(v) => Err(format!(
            "argument {} must be a bool, found {}",
            i + 1,
            kind(v)
        )),
        None => Err(format!("argument {} is missing", i + 1)),
    }
}

fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::Number(Number::from(x as i64))
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn st(x: impl Into<String>) -> Result<Value, String> {
    Ok(Value::String(x.into()))
}

/// Values compared as cty does: numbers by value, others structurally.
fn same(x: &Value, y: &Value) -> bool {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => x == y,
    }
}

/// RFC 3339 (UTC) of a Unix time.
fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Go's `fmt` verbs that bake files use: `%s %d %v %q %f %t %%`.
fn format(a: &[Value]) -> Result<String, String> {
    let f = s(a, 0)?;
    let mut out = String::new();
    let mut next = 1;
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&p) = chars.peek() {
            if p.is_ascii_digit() || p == '.' || p == '-' || p == '#' {
                spec.push(p);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().ok_or("format: a verb is missing after %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = a
            .get(next)
            .ok_or_else(|| format!("format: too few arguments for {f:?}"))?;
        next += 1;
        let text = match verb {
            's' | 'v' | 't' => value_string(v).unwrap_or_else(|| value_to_json(v).to_string()),
            'd' => format!("{}", n(std::slice::from_ref(v), 0)? as i64),
            'f' => {
                let prec = spec
                    .split_once('.')
                    .map_or(6, |(_, p)| p.parse().unwrap_or(6));
                format!("{:.*}", prec, n(std::slice::from_ref(v), 0)?)
            }
            'q' => serde_json::Value::String(value_string(v).unwrap_or_default()).to_string(),
            other => return Err(format!("format: unsupported verb %{other}")),
        };
        let width: usize = spec
            .trim_start_matches('-')
            .split('.')
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        if spec.starts_with('-') {
            out.push_str(&format!("{text:<width$}"));
        } else if spec.starts_with('0') && matches!(verb, 'd' | 'f') {
            let (sign, digits) = text
                .strip_prefix('-')
                .map_or(("", text.as_str()), |d| ("-", d));
            let w = width.saturating_sub(sign.len());
            out.push_str(&format!("{sign}{digits:0>w$}"));
        } else {
            out.push_str(&format!("{text:>width$}"));
        }
    }
    Ok(out)
}

fn flatten_into(v: &[Value], out: &mut Vec<Value>) {
    for x in v {
        match x {
            Value::Array(inner) => flatten_into(inner, out),
            other => out.push(other.clone()),
        }
    }
}

fn regex(a: &[Value], i: usize) -> Result<regex::Regex, String> {
    regex::Regex::new(&s(a, i)?).map_err(|e| format!("invalid regular expression: {e}"))
}

fn compare(a: &[Value], f: fn(f64, f64) -> bool) -> Result<Value, String> {
    Ok(Value::Bool(f(n(a, 0)?, n(a, 1)?)))
}

const BUILTINS: &[(&str, F)] = &[
    // strings
    ("upper", |a| st(s(&a, 0)?.to_uppercase())),
    ("lower", |a| st(s(&a, 0)?.to_lowercase())),
    ("title", |a| {
        let t = s(&a, 0)?;
        let mut out = String::new();
        let mut start = true;
        for c in t.chars() {
            if start {
                out.extend(c.to_uppercase())
            } else {
                out.push(c)
            }
            start = c.is_whitespace();
        }
        st(out)
    }),
    ("trim", |a| {
        let cut = s(&a, 1)?;
        st(s(&a, 0)?.trim_matches(|c| cut.contains(c)))
    }),
    ("trimprefix", |a| {
        let t = s(&a, 0)?;
        let p = s(&a, 1)?;
        st(t.strip_prefix(p.as_str()).unwrap_or(&t))
    }),
    ("trimsuffix", |a| {
        let t = s(&a, 0)?;
        let p = s(&a, 1)?;
        st(t.strip_suffix(p.as_str()).unwrap_or(&t))
    }),
    ("trimspace", |a| st(s(&a, 0)?.trim())),
    ("chomp", |a| st(s(&a, 0)?.trim_end_matches(['\n', '\r']))),
    ("replace", |a| {
        let (t, from, to) = (s(&a, 0)?, s(&a, 1)?, s(&a, 2)?);
        // Terraform's convention: a /.../ pattern is a regular expression.
        if from.len() > 1 && from.starts_with('/') && from.ends_with('/') {
            let re = regex::Regex::new(&from[1..from.len() - 1]).map_err(|e| e.to_string())?;
            return st(re.replace_all(&t, to.as_str()));
        }
        st(t.replace(&from, &to))
    }),
    ("regex_replace", |a| {
        st(regex(&a, 1)?.replace_all(&s(&a, 0)?, s(&a, 2)?.as_str()))
    }),
    ("regex", |a| {
        let re = regex(&a, 0)?;
        let t = s(&a, 1)?;
        let c = re.captures(&t).ok_or("regex: no match")?;
        if c.len() == 1 {
            return st(&c[0]);
        }
        Ok(Value::Array(
            c.iter()
                .skip(1)
                .map(|m| Value::String(m.map_or("", |m| m.as_str()).to_owned()))
                .collect(),
        ))
    }),
    ("split", |a| {
        let (sep, t) = (s(&a, 0)?, s(&a, 1)?);
        Ok(Value::Array(
            t.split(sep.as_str())
                .map(|x| Value::String(x.to_owned()))
                .collect(),
        ))
    }),
    ("join", |a| {
        let sep = s(&a, 0)?;
        let mut items = Vec::new();
        for i in 1..a.len() {
            for x in list(&a, i)? {
                items.push(value_string(&x).ok_or("join: elements must be strings")?);
            }
        }
        st(items.join(&sep))
    }),
    ("format", |a| st(format(&a)?)),
    ("formatlist", |a| {
        let len = a
            .iter()
            .skip(1)
            .find_map(|v| {
                if let Value::Array(x) = v {
                    Some(x.len())
                } else {
                    None
                }
            })
            .unwrap_or(1);
        let mut out = Vec::new();
        for i in 0..len {
            let row: Vec<Value> = a
                .iter()
                .enumerate()
                .map(|(j, v)| match v {
                    Value::Array(x) if j > 0 => x.get(i).cloned().unwrap_or_default(),
                    v => v.clone(),
                })
                .collect();
            out.push(Value::String(format(&row)?));
        }
        Ok(Value::Array(out))
    }),
    ("substr", |a| {
        let t: Vec<char> = s(&a, 0)?.chars().collect();
        let off = n(&a, 1)? as i64;
        let len = n(&a, 2)? as i64;
        let start = if off < 0 {
            (t.len() as i64 + off).max(0)
        } else {
            off.min(t.len() as i64)
        } as usize;
        let end = if len < 0 {
            t.len()
        } else {
            (start + len as usize).min(t.len())
        };
        st(t[start..end].iter().collect::<String>())
    }),
    ("strlen", |a| Ok(num(s(&a, 0)?.chars().count() as f64))),
    ("indent", |a| {
        let pad = " ".repeat(n(&a, 0)? as usize);
        st(s(&a, 1)?.replace('\n', &format!("\n{pad}")))
    }),
    ("sanitize", |a| {
        st(s(&a, 0)?
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>())
    }),
    ("base64encode", |a| {
        use base64::Engine as _;
        st(base64::engine::general_purpose::STANDARD.encode(s(&a, 0)?))
    }),
    ("base64decode", |a| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s(&a, 0)?)
            .map_err(|e| e.to_string())?;
        st(String::from_utf8(bytes).map_err(|_| "base64decode: not UTF-8")?)
    }),
    ("sha256", |a| {
        use sha2::Digest as _;
        st(hex(&sha2::Sha256::digest(s(&a, 0)?.as_bytes())))
    }),
    ("sha512", |a| {
        use sha2::Digest as _;
        st(hex(&sha2::Sha512::digest(s(&a, 0)?.as_bytes())))
    }),
    ("urlencode", |a| {
        st(s(&a, 0)?
            .bytes()
            .map(|c| {
                if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                    (c as char).to_string()
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect::<String>())
    }),
    ("basename", |a| {
        st(s(&a, 0)?
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default())
    }),
    ("dirname", |a| {
        let t = s(&a, 0)?;
        st(t.rsplit_once('/')
            .map_or(".", |(d, _)| if d.is_empty() { "/" } else { d }))
    }),
    ("homedir", |_| st(std::env::var("HOME").unwrap_or_default())),
    // numbers
    ("add", |a| Ok(num(n(&a, 0)? + n(&a, 1)?))),
    ("subtract", |a| Ok(num(n(&a, 0)? - n(&a, 1)?))),
    ("multiply", |a| Ok(num(n(&a, 0)? * n(&a, 1)?))),
    ("divide", |a| {
        let d = n(&a, 1)?;
        if d == 0.0 {
            return Err("divide by zero".into());
        }
        Ok(num(n(&a, 0)? / d))
    }),
    ("modulo", |a| {
        let d = n(&a, 1)?;
        if d == 0.0 {
            return Err("modulo by zero".into());
        }
        Ok(num(n(&a, 0)? % d))
    }),
    ("negate", |a| Ok(num(-n(&a, 0)?))),
    ("absolute", |a| Ok(num(n(&a, 0)?.abs()))),
    ("ceil", |a| Ok(num(n(&a, 0)?.ceil()))),
    ("floor", |a| Ok(num(n(&a, 0)?.floor()))),
    ("int", |a| Ok(num(n(&a, 0)?.trunc()))),
    ("pow", |a| Ok(num(n(&a, 0)?.powf(n(&a, 1)?)))),
    ("signum", |a| Ok(num(n(&a, 0)?.signum()))),
    ("max", |a| {
        (0..a.len())
            .map(|i| n(&a, i))
            .try_fold(f64::MIN, |m, x| x.map(|x| m.max(x)))
            .map(num)
    }),
    ("min", |a| {
        (0..a.len())
            .map(|i| n(&a, i))
            .try_fold(f64::MAX, |m, x| x.map(|x| m.min(x)))
            .map(num)
    }),
    ("parseint", |a| {
        let base = n(&a, 1)? as u32;
        i64::from_str_radix(&s(&a, 0)?, base)
            .map(|x| num(x as f64))
            .map_err(|e| format!("parseint: {e}"))
    }),
    // logic and comparison
    ("and", |a| {
        (0..a.len())
            .try_fold(true, |acc, i| b(&a, i).map(|x| acc && x))
            .map(Value::Bool)
    }),
    ("or", |a| {
        (0..a.len())
            .try_fold(false, |acc, i| b(&a, i).map(|x| acc || x))
            .map(Value::Bool)
    }),
    ("not", |a| Ok(Value::Bool(!b(&a, 0)?))),
    ("equal", |a| {
        Ok(Value::Bool(a.len() == 2 && same(&a[0], &a[1])))
    }),
    ("notequal", |a| {
        Ok(Value::Bool(!(a.len() == 2 && same(&a[0], &a[1]))))
    }),
    ("greaterthan", |a| compare(&a, |x, y| x > y)),
    ("greaterthanorequalto", |a| compare(&a, |x, y| x >= y)),
    ("lessthan", |a| compare(&a, |x, y| x < y)),
    ("lessthanorequalto", |a| compare(&a, |x, y| x <= y)),
    ("coalesce", |a| {
        Ok(a.iter()
            .find(|v| !v.is_null() && **v != Value::String(String::new()))
            .cloned()
            .unwrap_or_default())
    }),
    // lists and maps
    ("concat", |a| {
        let mut out = Vec::new();
        for i in 0..a.len() {
            out.extend(list(&a, i)?)
        }
        Ok(Value::Array(out))
    }),
    ("contains", |a| {
        Ok(Value::Bool(
            list(&a, 0)?
                .iter()
                .any(|x| a.get(1).is_some_and(|y| same(x, y))),
        ))
    }),
    ("length", |a| match a.first() {
        Some(Value::Array(x)) => Ok(num(x.len() as f64)),
        Some(Value::Object(x)) => Ok(num(x.len() as f64)),
        Some(Value::String(x)) => Ok(num(x.chars().count() as f64)),
        _ => Err("length: expected a list, map or string".into()),
    }),
    ("flatten", |a| {
        let mut out = Vec::new();
        flatten_into(&list(&a, 0)?, &mut out);
        Ok(Value::Array(out))
    }),
    ("distinct", |a| {
        let mut out: Vec<Value> = Vec::new();
        for x in list(&a, 0)? {
            if !out.iter().any(|y| same(&x, y)) {
                out.push(x)
            }
        }
        Ok(Value::Array(out))
    }),
    ("compact", |a| {
        Ok(Value::Array(
            list(&a, 0)?
                .into_iter()
                .filter(|x| !x.is_null() && *x != Value::String(String::new()))
                .collect(),
        ))
    }),
    ("element", |a| {
        let l = list(&a, 0)?;
        if l.is_empty() {
            return Err("element: empty list".into());
        }
        Ok(l[(n(&a, 1)? as usize) % l.len()].clone())
    }),
    ("index", |a| match a.first() {
        Some(Value::Object(m)) => m
            .get(&s(&a, 1)?)
            .cloned()
            .ok_or_else(|| "index: no such key".into()),
        _ => list(&a, 0)?
            .get(n(&a, 1)? as usize)
            .cloned()
            .ok_or_else(|| "index: out of range".into()),
    }),
    ("indexof", |a| {
        list(&a, 0)?
            .iter()
            .position(|x| a.get(1).is_some_and(|y| same(x, y)))
            .map(|i| num(i as f64))
            .ok_or_else(|| "indexof: value not found".into())
    }),
    ("keys", |a| {
        Ok(Value::Array({
            let mut k: Vec<String> = map(&a, 0)?.keys().cloned().collect();
            k.sort();
            k.into_iter().map(Value::String).collect()
        }))
    }),
    ("values", |a| {
        Ok(Value::Array({
            let m = map(&a, 0)?;
            let mut k: Vec<&String> = m.keys().collect();
            k.sort();
            k.into_iter().map(|k| m[k].clone()).collect()
        }))
    }),
    ("lookup", |a| {
        let m = map(&a, 0)?;
        match (m.get(&s(&a, 1)?), a.get(2)) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => Err("lookup: no such key and no default".into()),
        }
    }),
    ("merge", |a| {
        let mut out = hcl::Map::new();
        for i in 0..a.len() {
            if !a[i].is_null() {
                out.extend(map(&a, i)?)
            }
        }
        Ok(Value::Object(out))
    }),
    ("zipmap", |a| {
        let (k, v) = (list(&a, 0)?, list(&a, 1)?);
        if k.len() != v.len() {
            return Err("zipmap: the lists differ in length".into());
        }
        Ok(Value::Object(
            k.iter()
                .zip(v)
                .map(|(k, v)| (value_string(k).unwrap_or_default(), v))
                .collect(),
        ))
    }),
    ("range", |a| {
        let (start, end, step) = match a.len() {
            1 => (0.0, n(&a, 0)?, 1.0),
            2 => (n(&a, 0)?, n(&a, 1)?, 1.0),
            _ => (n(&a, 0)?, n(&a, 1)?, n(&a, 2)?),
        };
        if step == 0.0 {
            return Err("range: step must not be zero".into());
        }
        let mut out = Vec::new();
        let mut x = start;
        while (step > 0.0 && x < end) || (step < 0.0 && x > end) {
            out.push(num(x));
            x += step;
            if out.len() > 1_000_000 {
                return Err("range: too many elements".into());
            }
        }
        Ok(Value::Array(out))
    }),
    ("reverse", |a| match a.first() {
        Some(Value::String(t)) => st(t.chars().rev().collect::<String>()),
        _ => Ok(Value::Array(list(&a, 0)?.into_iter().rev().collect())),
    }),
    ("reverselist", |a| {
        Ok(Value::Array(list(&a, 0)?.into_iter().rev().collect()))
    }),
    ("slice", |a| {
        let l = list(&a, 0)?;
        let (x, y) = (n(&a, 1)? as usize, n(&a, 2)? as usize);
        l.get(x..y)
            .map(|s| Value::Array(s.to_vec()))
            .ok_or_else(|| "slice: out of range".into())
    }),
    ("sort", |a| {
        let mut l: Vec<String> = list(&a, 0)?
            .iter()
            .map(|x| value_string(x).ok_or("sort: elements must be strings"))
            .collect::<Result<_, _>>()?;
        l.sort();
        Ok(Value::Array(l.into_iter().map(Value::String).collect()))
    }),
    ("chunklist", |a| {
        let size = n(&a, 1)? as usize;
        let l = list(&a, 0)?;
        if size == 0 {
            return Ok(Value::Array(vec![Value::Array(l)]));
        }
        Ok(Value::Array(
            l.chunks(size).map(|c| Value::Array(c.to_vec())).collect(),
        ))
    }),
    ("coalescelist", |a| {
        Ok(a.iter()
            .find(|v| matches!(v, Value::Array(x) if !x.is_empty()))
            .cloned()
            .unwrap_or(Value::Array(Vec::new())))
    }),
    ("hasindex", |a| {
        Ok(Value::Bool(match a.first() {
            Some(Value::Object(m)) => m.contains_key(&s(&a, 1)?),
            _ => (n(&a, 1)? as usize) < list(&a, 0)?.len(),
        }))
    }),
    ("setunion", |a| {
        let mut out: Vec<Value> = Vec::new();
        for i in 0..a.len() {
            for x in list(&a, i)? {
                if !out.contains(&x) {
                    out.push(x)
                }
            }
        }
        Ok(Value::Array(out))
    }),
    ("jsonencode", |a| {
        st(value_to_json(a.first().ok_or("jsonencode: argument 1 is missing")?).to_string())
    }),
    ("jsondecode", |a| {
        serde_json::from_str(&s(&a, 0)?)
            .map(json_to_value)
            .map_err(|e| format!("jsondecode: {e}"))
    }),
    // time: fixed by SOURCE_DATE_EPOCH when it is set
    ("timestamp", |_| {
        let epoch = STATE.with(|s| s.borrow().epoch);
        let t = epoch.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        st(rfc3339(t))
    }),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
