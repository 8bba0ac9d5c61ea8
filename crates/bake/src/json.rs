//! `docker-bake.json`: HCL's JSON form (`{"target": {"app": {...}}}`), read into the same
//! blocks as HCL text. Strings are templates (`"${TAG}"`); a variable's `type` and a
//! function's `result` are expressions written as strings.

use hcl::Expression;
use hcl::expr::TemplateExpr;
use serde_json::Value as J;

use crate::hcl::{Attr, Blk, File, pos_at};
use crate::{Error, Pos};

/// Where `"key"` first occurs at or after `from` (the position of a key, for messages:
/// serde_json keeps none).
fn find(text: &str, key: &str, from: usize) -> usize {
    let quoted = serde_json::Value::String(key.to_owned()).to_string();
    text.get(from..)
        .and_then(|t| t.find(&quoted))
        .map_or(from, |i| from + i)
}

fn expr(v: &J) -> Expression {
    match v {
        J::Null => Expression::Null,
        J::Bool(b) => Expression::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(|i| Expression::Number(i.into()))
            .or_else(|| {
                n.as_f64()
                    .and_then(hcl::Number::from_f64)
                    .map(Expression::Number)
            })
            .unwrap_or(Expression::Null),
        J::String(s) if s.contains("${") || s.contains("%{") => {
            Expression::TemplateExpr(Box::new(TemplateExpr::QuotedString(s.clone())))
        }
        J::String(s) => Expression::String(s.replace("$${", "${").replace("%%{", "%{")),
        J::Array(a) => Expression::Array(a.iter().map(expr).collect()),
        J::Object(o) => Expression::Object(
            o.iter()
                .map(|(k, v)| (hcl::ObjectKey::from(k.as_str()), expr(v)))
                .collect(),
        ),
    }
}

/// An attribute written as an expression in a string (`"type": "list(string)"`).
fn source_expr(file: &str, text: &str, at: usize, v: &J) -> Result<Expression, Error> {
    let J::String(s) = v else {
        return Ok(expr(v));
    };
    let e = hcl::edit::parser::parse_expr(s).map_err(|e| Error::Syntax {
        file: file.to_owned(),
        pos: pos_at(text, at),
        message: e.message().to_owned(),
    })?;
    Ok(e.into())
}

/// Parses a JSON bake file.
pub(crate) fn parse(file: &str, text: &str) -> Result<File, Error> {
    let root: J = serde_json::from_str(text).map_err(|e| Error::Syntax {
        file: file.to_owned(),
        pos: Pos {
            line: e.line() as u32,
            col: e.column() as u32,
        },
        message: e.to_string(),
    })?;
    let J::Object(root) = root else {
        return Err(Error::Syntax {
            file: file.to_owned(),
            pos: Pos { line: 1, col: 1 },
            message: "a bake JSON file is an object".into(),
        });
    };
    let mut out = File {
        attrs: Vec::new(),
        blocks: Vec::new(),
    };
    for (kind, body) in &root {
        let at = find(text, kind, 0);
        if !matches!(kind.as_str(), "target" | "group" | "variable" | "function") {
            out.attrs.push(Attr {
                name: kind.clone(),
                expr: expr(body),
                pos: pos_at(text, at),
            });
            continue;
        }
        let J::Object(blocks) = body else {
            return Err(Error::Invalid {
                file: file.to_owned(),
                pos: pos_at(text, at),
                key: kind.clone(),
                message: "expected an object of named blocks".into(),
            });
        };
        for (label, attrs) in blocks {
            let bat = find(text, label, at);
            let J::Object(attrs) = attrs else {
                return Err(Error::Invalid {
                    file: file.to_owned(),
                    pos: pos_at(text, bat),
                    key: format!("{kind}.{label}"),
                    message: "expected an object".into(),
                });
            };
            let mut blk = Blk {
                kind: kind.clone(),
                label: label.clone(),
                attrs: Vec::new(),
                blocks: Vec::new(),
                pos: pos_at(text, bat),
            };
            for (name, v) in attrs {
                let aat = find(text, name, bat);
                let e = match (kind.as_str(), name.as_str()) {
                    ("variable", "type") | ("function", "result") => {
                        source_expr(file, text, aat, v)?
                    }
                    ("function", "params" | "variadic_params") => {
                        let names = |v: &J| match v {
                            J::String(s) => {
                                Expression::Variable(hcl::Identifier::sanitized(s).into())
                            }
                            other => expr(other),
                        };
                        match v {
                            J::Array(a) => Expression::Array(a.iter().map(names).collect()),
                            other => names(other),
                        }
                    }
                    _ => expr(v),
                };
                blk.attrs.push(Attr {
                    name: name.clone(),
                    expr: e,
                    pos: pos_at(text, aat),
                });
            }
            out.blocks.push(blk);
        }
    }
    Ok(out)
}
