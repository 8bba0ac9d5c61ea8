//! Build checks: [`Build::check`] (what `--call=check` reports) and the report every
//! build makes of them before it runs anything, failing when `error=true` asks for it.

use std::path::Path;
use std::sync::Arc;

use registry_client::Platform;

use dockerfile::{BuildPlan, Dockerfile, LintConfig, LintOptions, LintWarning, PlanOptions};

use super::{Build, DockerfileSource, Error};
use crate::progress::{ProgressEvent, ProgressSink};

/// The findings of the build checks on a build's Dockerfile.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// The Dockerfile's name, as messages give it.
    pub file: String,
    /// Its text.
    pub text: String,
    /// The findings, in the order the checks ran.
    pub warnings: Vec<LintWarning>,
}

impl Build {
    /// Runs the build checks (`--call=check`) without building: every rule that needs no
    /// image, on every stage when no target is set (else on the stages the target needs),
    /// with the `# check=` directive or the `BUILDKIT_DOCKERFILE_CHECK` build argument
    /// deciding which rules run. Only the first platform is checked.
    ///
    /// # Errors
    /// The Dockerfile cannot be read, parsed or planned, or its check configuration is
    /// invalid.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let (file, text) = match &self.dockerfile {
            Some(DockerfileSource::Text { name, text }) => (name.clone(), text.clone()),
            Some(DockerfileSource::Path(p)) => {
                (p.display().to_string(), super::exec::read_dockerfile(p)?)
            }
            None => {
                let p = super::default_dockerfile(&self.context);
                (p.display().to_string(), super::exec::read_dockerfile(&p)?)
            }
        };
        let df = dockerfile::parse(&text).map_err(|source| Error::Parse {
            file: file.clone(),
            source: Box::new(source),
        })?;
        let host = Platform::host();
        let target = self
            .platforms
            .first()
            .cloned()
            .unwrap_or_else(|| host.clone());
        let mut opts = PlanOptions::new(
            super::exec::platform_spec(&target),
            super::exec::platform_spec(&host),
        );
        opts.build_args = self.build_args.clone();
        opts.target = self.target.clone();
        let plan = BuildPlan::new(&df, &opts).map_err(|source| Error::Stages {
            file: file.clone(),
            source: Box::new(source),
        })?;
        let config = config(&text, &self.build_args)?;
        let ignore = ignore_patterns(&self.context, self.dockerfile_path().as_deref());
        let warnings = findings(
            &file,
            &text,
            &df,
            &[Arc::new(plan)],
            &config,
            &ignore,
            self.target.is_none(),
        )?;
        Ok(CheckReport {
            file,
            text,
            warnings,
        })
    }
}

/// The check configuration of a build.
pub(super) fn config(
    text: &str,
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<LintConfig, Error> {
    let arg = build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .map(String::as_str);
    LintConfig::for_build(text, arg)
        .map_err(|e| super::invalid("check", arg.unwrap_or("# check="), e.to_string()))
}

/// The `.dockerignore` patterns BuildKit would use (`<Dockerfile>.dockerignore`, else the
/// context's); none when unreadable (the build itself reports that).
fn ignore_patterns(context: &Path, dockerfile: Option<&Path>) -> Vec<String> {
    let mut candidates = Vec::new();
    if let Some(name) = dockerfile.and_then(Path::file_name) {
        let mut n = name.to_owned();
        n.push(".dockerignore");
        candidates.push(dockerfile.unwrap_or(context).with_file_name(n));
    }
    candidates.push(context.join(".dockerignore"));
    for c in candidates {
        if let Ok(bytes) = std::fs::read(&c) {
            return dockerfile::read_ignore_file(&String::from_utf8_lossy(&bytes))
                .unwrap_or_default();
        }
    }
    Vec::new()
}

/// The findings over every platform's plan, each once.
pub(super) fn findings(
    file: &str,
    text: &str,
    df: &Dockerfile,
    plans: &[Arc<BuildPlan>],
    config: &LintConfig,
    ignore: &[String],
    all_stages: bool,
) -> Result<Vec<LintWarning>, Error> {
    let ast = dockerfile::parse_ast(text).map_err(|source| Error::Parse {
        file: file.to_owned(),
        source: Box::new(source),
    })?;
    let mut opts = LintOptions::default();
    opts.all_stages = all_stages;
    opts.ignore_patterns = ignore.to_vec();
    let mut out: Vec<LintWarning> = Vec::new();
    for plan in plans {
        for w in dockerfile::lint(&ast, df, plan, config, &opts) {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    Ok(out)
}

/// Reports the findings (and the plans' unused build arguments) as warnings before the
/// build runs; with `error=true` any finding fails the build, as BuildKit does.
#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    file: &str,
    text: &str,
    df: &Dockerfile,
    plans: &[Arc<BuildPlan>],
    config: &LintConfig,
    ignore: &[String],
    sink: &mut dyn ProgressSink,
) -> Result<(), Error> {
    let found = findings(file, text, df, plans, config, ignore, false)?;
    let location = |w: &LintWarning| w.span.map(|s| format!("{file}:{}", s.start_line));
    for w in &found {
        sink.event(&ProgressEvent::Warning {
            message: format!("{}: {}", w.rule.name, w.message),
            location: location(w),
        });
    }
    let mut seen = Vec::new();
    for plan in plans {
        for w in plan
            .warnings()
            .iter()
            .filter(|w| w.rule == "UnusedBuildArgs")
        {
            if !seen.contains(&w.message) {
                seen.push(w.message.clone());
                sink.event(&ProgressEvent::Warning {
                    message: format!("{}: {}", w.rule, w.message),
                    location: None,
                });
            }
        }
    }
    if config.error && !found.is_empty() {
        let mut rules: Vec<String> = Vec::new();
        for w in &found {
            if !rules.iter().any(|r| r == w.rule.name) {
                rules.push(w.rule.name.to_owned());
            }
        }
        return Err(Error::LintViolations {
            location: location(&found[0]).unwrap_or_default(),
            rules,
        });
    }
    Ok(())
}
