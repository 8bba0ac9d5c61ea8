//! Progress renderers: the engine's typed events, drawn for a terminal (`tty`), for CI logs
//! (`plain`, as buildx prints them), as JSON lines (`rawjson`), or not at all (`quiet`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use builder_core::{ProgressEvent, ProgressSink, StepId, Stream};

/// The `--progress` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Tty,
    Plain,
    RawJson,
    Quiet,
}

impl Mode {
    /// `auto` is `tty` when stderr is a terminal, else `plain`.
    pub(crate) fn parse(s: &str) -> Mode {
        match s {
            "plain" => Mode::Plain,
            "rawjson" => Mode::RawJson,
            "quiet" | "none" => Mode::Quiet,
            "tty" => Mode::Tty,
            _ if std::io::stderr().is_terminal() => Mode::Tty,
            _ => Mode::Plain,
        }
    }
}

/// Renders events on stderr.
pub(crate) struct Renderer {
    mode: Mode,
    start: Instant,
    /// Keyed by the build (its index in a bake) and the step.
    names: HashMap<(usize, StepId), (String, Instant)>,
    /// Step numbers as buildx shows them (`#3`), in order of appearance.
    numbers: HashMap<(usize, StepId), usize>,
    /// The build the events being rendered come from (a bake's target index).
    scope: usize,
    /// The target name shown on each line (bake), if any.
    label: Option<String>,
    /// The tty status line is showing.
    status_shown: bool,
    warnings: Vec<String>,
}

impl Renderer {
    pub(crate) fn new(mode: Mode) -> Self {
        Renderer {
            mode,
            start: Instant::now(),
            names: HashMap::new(),
            numbers: HashMap::new(),
            scope: 0,
            label: None,
            status_shown: false,
            warnings: Vec::new(),
        }
    }

    fn number(&mut self, id: StepId) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry((self.scope, id)).or_insert(next)
    }

    /// A step's name with the target's (`[api builder 2/4] RUN ...`), as buildx bake
    /// shows it.
    fn labelled(&self, name: String) -> String {
        match &self.label {
            None => name,
            Some(t) => match name.strip_prefix('[') {
                Some(rest) => format!("[{t} {rest}"),
                None => format!("[{t}] {name}"),
            },
        }
    }

    /// What the following events belong to: build `scope`, shown as `label`.
    pub(crate) fn set_scope(&mut self, scope: usize, label: &str) {
        self.scope = scope;
        self.label = Some(label.to_owned());
    }

    fn label_prefix(&self) -> String {
        self.label
            .as_deref()
            .map(|l| format!("[{l}] "))
            .unwrap_or_default()
    }

    fn clear_status(&mut self, err: &mut impl Write) {
        if self.status_shown {
            let _ = write!(err, "\r\x1b[K");
            self.status_shown = false;
        }
    }

    fn plain(&mut self, ev: &ProgressEvent, err: &mut impl Write) {
        match ev {
            ProgressEvent::BuildStarted {
                platforms,
                sandbox,
                privilege,
            } => {
                let _ = writeln!(
                    err,
                    "#0 {}building for {} (sandbox: {sandbox}) as {privilege}",
                    self.label_prefix(),
                    platforms.join(", ")
                );
            }
            ProgressEvent::StepStarted {
                id, name, platform, ..
            } => {
                let n = self.number(*id);
                let shown = self.labelled(with_platform(platform.as_deref(), name));
                self.names
                    .insert((self.scope, *id), (shown.clone(), Instant::now()));
                let _ = writeln!(err, "#{n} {shown}");
            }
            ProgressEvent::StepCached { id } => {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} CACHED");
            }
            ProgressEvent::StepCachedRemote { id, source } => {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} from remote cache {source}");
            }
            ProgressEvent::StepLog { id, data, .. } => {
                let n = self.number(*id);
                let t = self
                    .names
                    .get(&(self.scope, *id))
                    .map_or(0.0, |(_, s)| s.elapsed().as_secs_f64());
                for line in String::from_utf8_lossy(data).lines() {
                    let _ = writeln!(err, "#{n} {t:.3} {line}");
                }
            }
            // Plain logs get one line per finished transfer, not every tick.
            ProgressEvent::StepProgress {
                id,
                activity,
                label,
                current,
                total,
            } if total.is_some_and(|t| t == *current) => {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} {activity:?} {label} {} done", human(*current));
            }
            ProgressEvent::StepDone { id, elapsed } => {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} DONE {:.1}s", elapsed.as_secs_f64());
            }
            ProgressEvent::StepFailed { id, error } => {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} ERROR: {error}");
            }
            ProgressEvent::Warning { message, location } => {
                self.warnings
                    .push(short_warning(message, location.as_deref()));
            }
            ProgressEvent::BuildDone { elapsed } => {
                let _ = writeln!(
                    err,
                    "#done {}in {:.1}s",
                    self.label_prefix(),
                    elapsed.as_secs_f64()
                );
                self.flush_warnings(err);
            }
            _ => {}
        }
    }

    /// buildx's summary when the progress closes: a count, then one line per warning.
    fn flush_warnings(&mut self, err: &mut impl Write) {
        if self.warnings.is_empty() {
            return;
        }
        let count = match self.warnings.len() {
            1 => "1 warning found:".to_owned(),
            n => format!("{n} warnings found:"),
        };
        if self.mode == Mode::Tty {
            let _ = writeln!(err, "\n \x1b[33m{count}\x1b[0m");
        } else {
            let _ = writeln!(err, "\n {count}");
        }
        for w in self.warnings.drain(..) {
            let _ = writeln!(err, " - {w}");
        }
    }

    /// Prints what is left when the build ended without `BuildDone` (it failed or was
    /// cancelled): the warnings, as buildx prints them whatever the outcome.
    pub(crate) fn finish(&mut self) {
        if matches!(self.mode, Mode::Plain | Mode::Tty) {
            let stderr = std::io::stderr();
            let mut err = stderr.lock();
            self.clear_status(&mut err);
            self.flush_warnings(&mut err);
        }
    }

    fn tty(&mut self, ev: &ProgressEvent, err: &mut impl Write) {
        match ev {
            ProgressEvent::BuildStarted {
                platforms,
                sandbox,
                privilege,
            } => {
                let _ = writeln!(
                    err,
                    "[+] {}Building for {} (sandbox: {sandbox}) as {privilege}",
                    self.label_prefix(),
                    platforms.join(", ")
                );
            }
            ProgressEvent::StepStarted {
                id, name, platform, ..
            } => {
                let shown = self.labelled(with_platform(platform.as_deref(), name));
                self.names
                    .insert((self.scope, *id), (shown.clone(), Instant::now()));
                self.clear_status(err);
                let _ = write!(err, " => {}", truncate(&shown, 100));
                self.status_shown = true;
            }
            ProgressEvent::StepCached { id } => {
                if let Some((name, _)) = self.names.get(&(self.scope, *id)).cloned() {
                    self.clear_status(err);
                    let _ = writeln!(err, " => CACHED {}", truncate(&name, 100));
                    self.names.remove(&(self.scope, *id));
                }
            }
            ProgressEvent::StepProgress {
                id,
                activity,
                label,
                current,
                total,
            } => {
                if let Some((name, _)) = self.names.get(&(self.scope, *id)).cloned() {
                    self.clear_status(err);
                    let bar = match total {
                        Some(t) if *t > 0 => {
                            let filled = ((*current as f64 / *t as f64) * 20.0) as usize;
                            format!(
                                "[{}{}] {}/{}",
                                "=".repeat(filled.min(20)),
                                " ".repeat(20 - filled.min(20)),
                                human(*current),
                                human(*t)
                            )
                        }
                        _ => human(*current),
                    };
                    let _ = write!(
                        err,
                        " => {} {activity:?} {label} {bar}",
                        truncate(&name, 60)
                    );
                    self.status_shown = true;
                }
            }
            ProgressEvent::StepLog { id, data, stream } => {
                if let Some((name, _)) = self.names.get(&(self.scope, *id)).cloned() {
                    let last = String::from_utf8_lossy(data)
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .to_owned();
                    if !last.trim().is_empty() {
                        self.clear_status(err);
                        let tag = if *stream == Stream::Stderr { "!" } else { ">" };
                        let _ = write!(
                            err,
                            " => {} {tag} {}",
                            truncate(&name, 50),
                            truncate(last.trim(), 60)
                        );
                        self.status_shown = true;
                    }
                }
            }
            ProgressEvent::StepDone { id, elapsed } => {
                if let Some((name, _)) = self.names.remove(&(self.scope, *id)) {
                    self.clear_status(err);
                    let _ = writeln!(
                        err,
                        " => {} {:.1}s",
                        truncate(&name, 100),
                        elapsed.as_secs_f64()
                    );
                }
            }
            ProgressEvent::StepFailed { id, error } => {
                self.clear_status(err);
                let name = self
                    .names
                    .remove(&(self.scope, *id))
                    .map(|(n, _)| n)
                    .unwrap_or_default();
                let _ = writeln!(err, " => ERROR {name}: {error}");
            }
            ProgressEvent::Warning { message, location } => {
                self.warnings
                    .push(short_warning(message, location.as_deref()));
            }
            ProgressEvent::BuildDone { .. } => {
                self.clear_status(err);
                let _ = writeln!(
                    err,
                    "[+] {}Built in {:.1}s",
                    self.label_prefix(),
                    self.start.elapsed().as_secs_f64()
                );
                self.flush_warnings(err);
            }
            _ => {}
        }
        let _ = err.flush();
    }
}

impl ProgressSink for Renderer {
    fn event(&mut self, ev: &ProgressEvent) {
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        match self.mode {
            Mode::Plain => self.plain(ev, &mut err),
            Mode::Tty => self.tty(ev, &mut err),
            Mode::RawJson => {
                if let Ok(line) = serde_json::to_string(ev) {
                    let _ = writeln!(err, "{line}");
                }
            }
            Mode::Quiet => {}
        }
    }
}

/// A bake's renderer: each target's events, numbered apart and labelled with its name.
pub(crate) struct GroupRenderer {
    inner: Renderer,
    scopes: HashMap<String, usize>,
}

impl GroupRenderer {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            inner: Renderer::new(mode),
            scopes: HashMap::new(),
        }
    }
}

impl builder_core::GroupSink for GroupRenderer {
    fn event(&mut self, target: &str, ev: &ProgressEvent) {
        let next = self.scopes.len();
        let scope = *self.scopes.entry(target.to_owned()).or_insert(next);
        self.inner.set_scope(scope, target);
        ProgressSink::event(&mut self.inner, ev);
    }
}

/// BuildKit's short form of a warning (`linter.LintFormatShort`): `Rule: message (line N)`
/// when it has a `file:line` location.
fn short_warning(message: &str, location: Option<&str>) -> String {
    let line = location
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .filter(|n| *n > 0);
    match line {
        Some(n) => format!("{message} (line {n})"),
        None => message.to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn human(n: u64) -> String {
    match builder_core::human_bytes(n) {
        s if s.unit == "B" => format!("{n}B"),
        s => format!("{:.1}{}", s.value, s.unit),
    }
}

/// A step's name with its platform in front, as BuildKit writes it in a multi-platform
/// build: `[linux/arm64 base 2/3] RUN ...` (`[linux/arm64] ENV ...` for an unnumbered one).
fn with_platform(platform: Option<&str>, name: &str) -> String {
    match (platform, name.strip_prefix('[')) {
        (None, _) => name.to_owned(),
        (Some(p), Some(rest)) => format!("[{p} {rest}"),
        (Some(p), None) => format!("[{p}] {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_read_like_buildkits_short_form() {
        assert_eq!(
            short_warning(
                "StageNameCasing: Stage name 'A' should be lowercase",
                Some("Dockerfile:3")
            ),
            "StageNameCasing: Stage name 'A' should be lowercase (line 3)"
        );
        assert_eq!(
            short_warning("UnusedBuildArgs: x", None),
            "UnusedBuildArgs: x"
        );
    }

    #[test]
    fn platform_joins_the_step_prefix() {
        assert_eq!(
            with_platform(Some("linux/arm64"), "[base 2/3] RUN true"),
            "[linux/arm64 base 2/3] RUN true"
        );
        assert_eq!(
            with_platform(Some("linux/arm64"), "ENV A=1"),
            "[linux/arm64] ENV A=1"
        );
        assert_eq!(with_platform(None, "[1/2] RUN x"), "[1/2] RUN x");
    }

    #[test]
    fn sizes_and_truncation() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
