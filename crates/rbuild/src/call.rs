//! `--call outline|targets`: the text and JSON that buildx prints for BuildKit's
//! `frontend.outline` and `frontend.targets` subrequests; `--call plan`: rbuild's CI
//! planner ([`builder_core::plan`]) as JSON; with a `format=`, the build graph
//! ([`builder_core::Graph`]) too: `format=json` adds it to the plan as `graph`,
//! `format=text` prints its short text form.

use base64::Engine as _;
use dockerfile::{Outline, Span, TargetInfo};
use serde_json::{Value, json};

/// What `--call` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallFunc {
    /// `build`, `outline`, `targets`, `plan` or `check`.
    pub(crate) name: String,
    /// `json` for `format=json`; text otherwise.
    pub(crate) json: bool,
    /// A `format=` was given (`--call plan` prints the build graph only then).
    pub(crate) format_given: bool,
    /// `ignorestatus=true`: exit 0 even when the call's result has a failing status
    /// (`check` with findings).
    pub(crate) ignore_status: bool,
}

/// buildx's `ParseCallFunc`: `name[,format=json|text][,ignorestatus=bool]`.
pub(crate) fn parse_call(s: &str) -> Result<CallFunc, String> {
    let mut name = None;
    let mut json = false;
    let mut format_given = false;
    let mut ignore_status = false;
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("format", f)) => {
                format_given = true;
                match f {
                    "json" => json = true,
                    "text" | "" => json = false,
                    other => return Err(format!("unsupported format {other:?} (json or text)")),
                }
            }
            Some(("ignorestatus", v)) => {
                ignore_status =
                    parse_bool(v).map_err(|_| format!("invalid ignorestatus print value: {v}"))?;
            }
            Some(_) => return Err(format!("invalid print field: {field}")),
            None if name.is_some() => return Err(format!("invalid print value: {s}")),
            None => name = Some(field.to_owned()),
        }
    }
    let name = match name.as_deref().unwrap_or("build") {
        "check" | "lint" => "check",
        n @ ("build" | "outline" | "targets" | "plan") => n,
        other => {
            return Err(format!(
                "unknown method {other:?} (build, check, outline, plan, targets)"
            ));
        }
    }
    .to_owned();
    Ok(CallFunc {
        name,
        json,
        format_given,
        ignore_status,
    })
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// Go's `text/tabwriter` with minwidth 0, tabwidth 0, padding `padding`, padded with
/// spaces: every cell but the last of a line is padded to its column's widest cell plus
/// the padding.
fn tabwrite(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows
        .iter()
        .map(|r| r.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > c + 1)
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
                + padding
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// buildkit's `outline.PrintOutline`.
pub(crate) fn outline_text(o: &Outline) -> String {
    let mut out = String::new();
    if !o.name.is_empty() || !o.description.is_empty() {
        let name = if o.name.is_empty() {
            "(default)"
        } else {
            &o.name
        };
        let mut rows = vec![vec!["TARGET:".to_owned(), name.to_owned()]];
        if !o.description.is_empty() {
            rows.push(vec!["DESCRIPTION:".to_owned(), o.description.clone()]);
        }
        out.push_str(&tabwrite(&rows, 1));
        out.push('\n');
    }
    if !o.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_owned(),
            "VALUE".to_owned(),
            "DESCRIPTION".to_owned(),
        ]];
        rows.extend(
            o.args
                .iter()
                .map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()]),
        );
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    for (title, mounts) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if mounts.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_owned(), "REQUIRED".to_owned()]];
        rows.extend(mounts.iter().map(|m| {
            vec![
                m.id.clone(),
                if m.required { "true" } else { "" }.to_owned(),
            ]
        }));
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    out
}

/// buildkit's `targets.PrintTargets`.
pub(crate) fn targets_text(targets: &[TargetInfo]) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, true) => "(default)".to_owned(),
            (false, true) => format!("{} (default)", t.name),
            _ => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone()]);
    }
    tabwrite(&rows, 1)
}

/// A protobuf `pb.Location` as Go's encoding/json writes it for a whole instruction.
fn location(span: Span) -> Value {
    json!({"ranges": [{"start": {"line": span.start_line}, "end": {"line": span.end_line}}]})
}

/// Go's `json.MarshalIndent(v, "", "  ")`, which escapes `<`, `>`, `&`, U+2028 and U+2029.
pub(crate) fn go_json(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn source_b64(source: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(source))
}

/// The outline as JSON (`--call outline,format=json`), fields as BuildKit names them.
pub(crate) fn outline_json(o: &Outline, source: &[u8]) -> String {
    let mut obj = serde_json::Map::new();
    if !o.name.is_empty() {
        obj.insert("name".into(), json!(o.name));
    }
    if !o.description.is_empty() {
        obj.insert("description".into(), json!(o.description));
    }
    if !o.args.is_empty() {
        let args: Vec<Value> = o
            .args
            .iter()
            .map(|a| {
                let mut m = serde_json::Map::new();
                m.insert("name".into(), json!(a.name));
                if !a.description.is_empty() {
                    m.insert("description".into(), json!(a.description));
                }
                if !a.value.is_empty() {
                    m.insert("value".into(), json!(a.value));
                }
                m.insert("location".into(), location(a.span));
                Value::Object(m)
            })
            .collect();
        obj.insert("args".into(), Value::Array(args));
    }
    for (key, mounts) in [("secrets", &o.secrets), ("ssh", &o.ssh)] {
        if mounts.is_empty() {
            continue;
        }
        let list: Vec<Value> = mounts
            .iter()
            .map(|m| {
                let mut v = serde_json::Map::new();
                v.insert("name".into(), json!(m.id));
                if m.required {
                    v.insert("required".into(), json!(true));
                }
                v.insert("location".into(), location(m.span));
                Value::Object(v)
            })
            .collect();
        obj.insert(key.into(), Value::Array(list));
    }
    obj.insert("sources".into(), json!([source_b64(source)]));
    go_json(&Value::Object(obj))
}

/// The target list as JSON (`--call targets,format=json`).
pub(crate) fn targets_json(targets: &[TargetInfo], source: &[u8]) -> String {
    let list: Vec<Value> = targets
        .iter()
        .map(|t| {
            let mut m = serde_json::Map::new();
            if !t.name.is_empty() {
                m.insert("name".into(), json!(t.name));
            }
            if t.default {
                m.insert("default".into(), json!(true));
            }
            if !t.description.is_empty() {
                m.insert("description".into(), json!(t.description));
            }
            if !t.base.is_empty() {
                m.insert("base".into(), json!(t.base));
            }
            if !t.platform.is_empty() {
                m.insert("platform".into(), json!(t.platform));
            }
            m.insert("location".into(), location(t.span));
            Value::Object(m)
        })
        .collect();
    go_json(&json!({"targets": list, "sources": [source_b64(source)]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_all_but_the_last_cell() {
        let rows = vec![
            vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()],
            vec!["build".to_owned(), String::new()],
            vec!["release (default)".to_owned(), "ships it".to_owned()],
        ];
        assert_eq!(
            tabwrite(&rows, 1),
            "TARGET            DESCRIPTION\nbuild             \nrelease (default) ships it\n"
        );
    }

    #[test]
    fn call_values() {
        assert_eq!(parse_call("outline").unwrap().name, "outline");
        assert!(parse_call("outline,format=json").unwrap().json);
        assert!(parse_call("check,ignorestatus=true").unwrap().ignore_status);
        assert!(!parse_call("check").unwrap().ignore_status);
        assert!(parse_call("check,ignorestatus=maybe").is_err());
        assert_eq!(parse_call("lint").unwrap().name, "check");
        assert!(parse_call("bogus").is_err());
        assert!(parse_call("outline,targets").is_err());
        assert!(parse_call("outline,color=red").is_err());
    }

    #[test]
    fn json_escapes_like_go() {
        assert_eq!(
            go_json(&json!({"a": "<&>"})),
            "{\n  \"a\": \"\\u003c\\u0026\\u003e\"\n}"
        );
    }
}
