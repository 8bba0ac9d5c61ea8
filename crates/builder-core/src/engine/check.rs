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
    /// The check configuration in force (`error` says whether findings fail the build).
    pub config: LintConfig,
    /// Base images [`Build::check_with_images`] could not resolve, with why: the stages
    /// on them were not checked for `UndefinedVar`.
    pub unresolved: Vec<(String, String)>,
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
        Ok(self.prepare_check()?.0)
    }

    /// [`Build::check`], plus `UndefinedVar`, which needs the environment of each stage's
    /// base image: the images are resolved (their configs fetched) for the first
    /// platform, as BuildKit's check does. A base image that cannot be resolved is listed
    /// in [`CheckReport::unresolved`] and the stages on it are not checked for
    /// `UndefinedVar`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), builder_core::Error> {
    /// let report = builder_core::Build::new("app")?.check_with_images().await?;
    /// for w in &report.warnings {
    ///     println!("{}: {}", w.rule.name, w.message);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Build::check`], and an instruction that cannot be expanded.
    pub async fn check_with_images(&self) -> Result<CheckReport, Error> {
        let (mut report, plan) = self.prepare_check()?;
        if !report.config.enabled(&dockerfile::lint::UNDEFINED_VAR) {
            return Ok(report);
        }
        let ast = dockerfile::parse_ast(&report.text).map_err(|source| Error::Parse {
            file: report.file.clone(),
            source: source.into(),
        })?;
        let mut client = registry_client::Client::builder();
        for h in &self.insecure_registries {
            client = client.insecure_registry(h);
        }
        let client = client.build()?;
        let target = self
            .platforms
            .first()
            .cloned()
            .unwrap_or_else(Platform::host);
        let checked: Vec<usize> = if self.target.is_none() {
            (0..plan.stages().len()).collect()
        } else {
            plan.reachable().to_vec()
        };
        let mut scopes: Vec<Option<dockerfile::Scope>> = Vec::new();
        let mut envs: std::collections::HashMap<(String, String), Vec<String>> =
            std::collections::HashMap::new();
        for stage in plan.stages() {
            let idx = stage.index;
            let scope = match &stage.base {
                dockerfile::StageBase::Scratch => Some(plan.image_scope::<&str>(idx, &[])),
                dockerfile::StageBase::Stage(j) => scopes
                    .get(*j)
                    .cloned()
                    .flatten()
                    .map(|p| plan.stage_scope(idx, &p)),
                dockerfile::StageBase::Image(r) => {
                    let platform = super::exec::stage_platform(&plan, stage, &target)?;
                    let key = (r.clone(), platform.to_string());
                    if !envs.contains_key(&key) {
                        match image_env(&client, r, &platform).await {
                            Ok(env) => {
                                envs.insert(key.clone(), env);
                            }
                            Err(e) => {
                                if !report.unresolved.iter().any(|(u, _)| u == r) {
                                    report.unresolved.push((r.clone(), e.to_string()));
                                }
                            }
                        }
                    }
                    envs.get(&key).map(|env| plan.image_scope(idx, env))
                }
                // A base kind added to the frontend later: not checked until handled here.
                _ => None,
            };
            let Some(mut scope) = scope else {
                scopes.push(None);
                continue;
            };
            for ins in &stage.instructions {
                let step = scope.step(ins).map_err(|source| Error::Stages {
                    file: report.file.clone(),
                    source: source.into(),
                })?;
                if !checked.contains(&idx) {
                    continue;
                }
                for w in step.warnings.iter().filter(|w| w.rule == "UndefinedVar") {
                    let at = w.span.unwrap_or(ins.span);
                    let config = dockerfile::lint::config_at(&ast, &report.config, at);
                    let found = LintWarning::new(
                        &dockerfile::lint::UNDEFINED_VAR,
                        w.message.clone(),
                        Some(at),
                    );
                    if config.enabled(found.rule) && !report.warnings.contains(&found) {
                        report.warnings.push(found);
                    }
                }
            }
            scopes.push(Some(scope));
        }
        Ok(report)
    }

    fn prepare_check(&self) -> Result<(CheckReport, BuildPlan), Error> {
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
            source: source.into(),
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
            source: source.into(),
        })?;
        let config = config(&text, &self.build_args)?;
        let ignore = ignore_patterns(&self.context, self.dockerfile_path().as_deref());
        let plan = Arc::new(plan);
        let warnings = findings(
            &file,
            &text,
            &df,
            std::slice::from_ref(&plan),
            &config,
            &ignore,
            self.target.is_none(),
        )?;
        let plan = Arc::try_unwrap(plan).unwrap_or_else(|p| (*p).clone());
        Ok((
            CheckReport {
                file,
                text,
                warnings,
                config,
                unresolved: Vec::new(),
            },
            plan,
        ))
    }
}

/// The `Env` of an image's config for a platform.
async fn image_env(
    client: &registry_client::Client,
    r: &str,
    platform: &Platform,
) -> Result<Vec<String>, Error> {
    let reference: registry_client::Reference = r.parse()?;
    let resolved = client.resolve_platform(&reference, platform).await?;
    let manifest = match resolved.manifest.parse()? {
        registry_client::Manifest::Image(m) => m,
        _ => {
            return Err(Error::BadImage {
                reference: r.to_owned(),
                reason: "the platform's manifest is not an image manifest".into(),
            });
        }
    };
    let bytes = client
        .fetch_blob(reference.repository(), manifest.config())
        .await?;
    let config = crate::image::ImageConfig::from_slice(&bytes).map_err(|e| Error::BadImage {
        reference: r.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(config
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect())
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
        source: source.into(),
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
