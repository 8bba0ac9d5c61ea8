//! `--call=check` (`--check`): builder-core's build checks printed as buildx prints
//! BuildKit's `frontend.lint` result: `Check complete, …`, then each finding with its rule,
//! URL, message and the Dockerfile excerpt (BuildKit's `errdefs.Source.Print`); JSON in
//! BuildKit's `LintResults` shape with `format=json`. Status 1 when anything was found
//! (unless `ignorestatus=true`), as buildx exits with the result's status code.

use builder_core::CheckReport;
use builder_core::dockerfile::{LintWarning, filepath_clean};
use serde_json::{Value, json};

use crate::build::BuildOpts;
use crate::call::{self, CallFunc};
use crate::exit::Failure;

/// The Dockerfile's name as buildx shows it in check results: the `-f` path as given,
/// `stdin` for `-f -`, else `Dockerfile` joined to the context path (Go's `filepath.Join`,
/// which cleans `./`).
pub(crate) fn display_name(opts: &BuildOpts) -> String {
    match opts.file.as_deref() {
        Some("-") => "stdin".to_owned(),
        Some(p) => p.to_owned(),
        None => clean_join(&opts.context.to_string_lossy(), "Dockerfile"),
    }
}

/// Go's `filepath.Join(dir, name)`: the two joined by `/` and cleaned (an empty `dir` is
/// left out).
fn clean_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return filepath_clean(name);
    }
    filepath_clean(&format!("{dir}/{name}"))
}

/// Runs the checks and prints their result; the failure carries the exit status.
pub(crate) fn run(
    opts: &BuildOpts,
    call: &CallFunc,
    build_args: &std::collections::BTreeMap<String, String>,
    dockerfile_text: Option<String>,
) -> Result<(), Failure> {
    let dockerfile = dockerfile_text.map(|text| ("Dockerfile".to_owned(), text));
    let mut b = crate::run::base_build(opts, build_args, dockerfile)?;
    for h in &opts.insecure_registries {
        b = b.insecure_registry(h);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(b.check_with_images()).map_err(|e| {
        if e.is_usage() {
            Failure::usage(e.to_string())
        } else {
            Failure::build(e.to_string())
        }
    })?;
    for (image, why) in &report.unresolved {
        eprintln!("WARNING: UndefinedVar not checked on {image}: {why}");
    }
    let name = display_name(opts);
    let (out, status, error) = render(&report, &name, call.json);
    print!("{out}");
    if let Some(error) = error {
        return Err(Failure::build(error));
    }
    if status != 0 && !call.ignore_status {
        return Err(Failure::Status(status));
    }
    Ok(())
}

/// BuildKit's sort of the findings: by the first line of their location, those without
/// one first (one Dockerfile, so the file name never decides).
fn sorted(warnings: &[LintWarning]) -> Vec<&LintWarning> {
    let mut v: Vec<&LintWarning> = warnings.iter().collect();
    v.sort_by(|a, b| match (a.span, b.span) {
        (None, None) => a.rule.name.cmp(b.rule.name),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.start_line.cmp(&y.start_line),
    });
    v
}

/// What `--call=check` prints on stdout, its status code (1 when anything was found) and,
/// when `error=true` turns the findings into a failure, the error message.
pub(crate) fn render(report: &CheckReport, name: &str, json: bool) -> (String, u8, Option<String>) {
    let error = report_error(report);
    let status = u8::from(!report.warnings.is_empty() || error.is_some());
    if json {
        let mut out = call::go_json(&results_json(report, name, error.as_deref()));
        out.push('\n');
        return (out, status, error);
    }
    let mut out = String::new();
    match report.warnings.len() {
        0 => {}
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => out.push_str(&format!("Check complete, {n} warnings have been found!\n")),
    }
    for w in sorted(&report.warnings) {
        out.push_str(&format!("\nWARNING: {}", w.rule.name));
        if !w.rule.url.is_empty() {
            out.push_str(&format!(" - {}", w.rule.url));
        }
        out.push_str(&format!("\n{}\n", w.message));
        if let Some(s) = w.span {
            out.push_str(&print_source(
                name,
                &report.text,
                s.start_line as usize,
                s.end_line as usize,
            ));
        }
    }
    if error.is_some() && !report.warnings.is_empty() {
        out.push('\n');
    }
    if error.is_none() && report.warnings.is_empty() {
        out.push_str("Check complete, no warnings found.\n");
    }
    (out, status, error)
}

/// `error=true` with findings: BuildKit's `lint violation found for rules: …`, the rules
/// in order of first finding.
fn report_error(report: &CheckReport) -> Option<String> {
    if !report.config.error || report.warnings.is_empty() {
        return None;
    }
    let mut rules: Vec<&str> = Vec::new();
    for w in &report.warnings {
        if !rules.contains(&w.rule.name) {
            rules.push(w.rule.name);
        }
    }
    Some(format!(
        "lint violation found for rules: {}",
        rules.join(", ")
    ))
}

/// BuildKit's `lint.LintResults` as `json.MarshalIndent` writes it (the source's LLB
/// definition, which rbuild does not make, left out).
fn results_json(report: &CheckReport, name: &str, error: Option<&str>) -> Value {
    let warnings: Vec<Value> = report
        .warnings
        .iter()
        .map(|w| {
            let mut m = serde_json::Map::new();
            m.insert("ruleName".into(), json!(w.rule.name));
            if !w.rule.description.is_empty() {
                m.insert("description".into(), json!(w.rule.description));
            }
            if !w.rule.url.is_empty() {
                m.insert("url".into(), json!(w.rule.url));
            }
            if !w.message.is_empty() {
                m.insert("detail".into(), json!(w.message));
            }
            let location = match w.span {
                Some(s) => json!({"ranges": [{
                    "start": {"line": s.start_line},
                    "end": {"line": s.end_line},
                }]}),
                None => json!({}),
            };
            m.insert("location".into(), location);
            Value::Object(m)
        })
        .collect();
    let mut obj = serde_json::Map::new();
    obj.insert("warnings".into(), Value::Array(warnings));
    obj.insert(
        "sources".into(),
        json!([{
            "filename": name,
            "data": call::source_b64(report.text.as_bytes()),
            "language": "Dockerfile",
        }]),
    );
    if let Some(e) = error {
        obj.insert("buildError".into(), json!({"message": e, "location": {}}));
    }
    Value::Object(obj)
}

/// BuildKit's `errdefs.Source.Print`: `file:line`, a rule, the lines of the range with
/// two (four for one line) lines of context shared out before and after, `>>>` marking
/// the range, and a closing rule.
fn print_source(name: &str, text: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let end = end.max(start);
    if start > lines.len() || start < 1 {
        return String::new();
    }
    let (range_start, range_end) = (start, end.min(lines.len()));
    let (mut first, mut last) = (range_start, range_end);
    let pad = if last == first { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if first > 1 {
            first -= 1;
            p += 1;
        }
        if last != lines.len() {
            last += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{name}:{range_start}\n--------------------\n");
    for (i, line) in lines.iter().enumerate().take(last).skip(first - 1) {
        let n = i + 1;
        let pfx = if (range_start..=range_end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {pfx} {line}\n"));
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_like_go() {
        assert_eq!(clean_join(".", "Dockerfile"), "Dockerfile");
        assert_eq!(clean_join("./app/", "Dockerfile"), "app/Dockerfile");
        assert_eq!(clean_join("/srv//app", "Dockerfile"), "/srv/app/Dockerfile");
        assert_eq!(clean_join("a/../b", "Dockerfile"), "b/Dockerfile");
    }

    #[test]
    fn source_excerpt_like_buildkit() {
        let text = "FROM a AS Base\nRUN x\ncmd y\n";
        assert_eq!(
            print_source("Dockerfile", text, 1, 1),
            "Dockerfile:1\n--------------------\n   1 | >>> FROM a AS Base\n   2 |     RUN x\n   3 |     cmd y\n--------------------\n"
        );
        assert_eq!(
            print_source("Dockerfile", text, 3, 3),
            "Dockerfile:3\n--------------------\n   1 |     FROM a AS Base\n   2 |     RUN x\n   3 | >>> cmd y\n   4 |     \n--------------------\n"
        );
        assert_eq!(print_source("Dockerfile", text, 9, 9), "");
    }
}
