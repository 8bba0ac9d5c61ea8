//! hcl-rs values: their types for messages, as strings, as JSON, and variables' type
//! constraints (`string`, `list(string)`...) with cty's conversions.

use hcl::{Expression, Value};

/// A short name of a value's type.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// A primitive as a string (as cty converts it); `None` for null, lists and maps.
pub(crate) fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn json_to_value(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(|i| Value::Number(i.into()))
            .or_else(|| {
                n.as_f64()
                    .and_then(hcl::Number::from_f64)
                    .map(Value::Number)
            })
            .unwrap_or(Value::Null),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect())
        }
    }
}

pub(crate) fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => n
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_f64().map(serde_json::Value::from))
            .unwrap_or_default(),
        Value::String(s) => s.clone().into(),
        Value::Array(a) => a.iter().map(value_to_json).collect(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// A variable's type constraint.
#[derive(Debug, Clone)]
pub(crate) enum Ty {
    Any,
    String,
    Number,
    Bool,
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>),
}

impl Ty {
    pub(crate) fn parse(e: &Expression) -> Result<Ty, String> {
        let bad = || {
            "unsupported type: use string, number, bool, any, list(T), set(T) or map(T)".to_owned()
        };
        match e {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(Ty::String),
                "number" => Ok(Ty::Number),
                "bool" => Ok(Ty::Bool),
                "any" => Ok(Ty::Any),
                _ => Err(bad()),
            },
            Expression::FuncCall(f) if f.args.len() == 1 => {
                let inner = Box::new(Ty::parse(&f.args[0])?);
                match f.name.name.as_str() {
                    "list" => Ok(Ty::List(inner)),
                    "set" => Ok(Ty::Set(inner)),
                    "map" => Ok(Ty::Map(inner)),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }

    pub(crate) fn name(&self) -> String {
        match self {
            Ty::Any => "any".into(),
            Ty::String => "string".into(),
            Ty::Number => "number".into(),
            Ty::Bool => "bool".into(),
            Ty::List(t) => format!("list({})", t.name()),
            Ty::Set(t) => format!("set({})", t.name()),
            Ty::Map(t) => format!("map({})", t.name()),
        }
    }

    pub(crate) fn is_primitive(&self) -> bool {
        matches!(self, Ty::String | Ty::Number | Ty::Bool)
    }

    /// `v` converted to this type (cty's safe conversions), or why not.
    pub(crate) fn convert(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v);
        }
        match (self, v) {
            (Ty::Any, v) => Ok(v),
            (Ty::String, v) => value_string(&v)
                .map(Value::String)
                .ok_or_else(|| format!("string required, found {}", kind(&v))),
            (Ty::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (Ty::Number, Value::String(s)) => Ty::Number.parse_env(&s),
            (Ty::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (Ty::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (Ty::List(t) | Ty::Set(t), Value::Array(a)) => {
                let mut out: Vec<Value> = Vec::new();
                for x in a {
                    let x = t.convert(x)?;
                    if matches!(self, Ty::List(_)) || !out.contains(&x) {
                        out.push(x);
                    }
                }
                Ok(Value::Array(out))
            }
            (Ty::Map(t), Value::Object(o)) => {
                let mut out = hcl::Map::new();
                for (k, x) in o {
                    out.insert(k, t.convert(x)?);
                }
                Ok(Value::Object(out))
            }
            (t, v) => Err(format!("{} required, found {}", t.name(), kind(&v))),
        }
    }

    /// An environment value: primitives parsed, lists and sets as CSV.
    pub(crate) fn parse_env(&self, s: &str) -> Result<Value, String> {
        match self {
            Ty::Any | Ty::String => Ok(Value::String(s.to_owned())),
            Ty::Number => s
                .trim()
                .parse::<i64>()
                .map(|i| Value::Number(i.into()))
                .or_else(|_| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(hcl::Number::from_f64)
                        .map(Value::Number)
                        .ok_or(())
                })
                .map_err(|()| format!("{s:?} is not a number")),
            Ty::Bool => match s {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
                _ => Err(format!("{s:?} is not a bool")),
            },
            Ty::List(t) | Ty::Set(t) if t.is_primitive() || matches!(**t, Ty::Any) => {
                let items: Result<Vec<Value>, String> = if s.is_empty() {
                    Ok(Vec::new())
                } else {
                    s.split(',').map(|x| t.parse_env(x.trim())).collect()
                };
                self.convert(Value::Array(items?))
            }
            t => Err(format!(
                "type {} can only be overridden as JSON (NAME_JSON)",
                t.name()
            )),
        }
    }
}
