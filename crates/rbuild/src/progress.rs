//! Progress renderers: the engine's typed events, drawn for a terminal (`tty`), for CI logs
//! (`plain`, as buildx prints them), as JSON lines (`rawjson`), or not at all (`quiet`).

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Instant;

use builder_core::{Activity, ProgressEvent, ProgressSink, StepId};

mod tty;
use tty::{EndState, Tty};

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
    /// Keyed by the build (its index in a bake) and the step.
    names: HashMap<(usize, StepId), (String, Instant)>,
    /// Step numbers as buildx shows them (`#3`), in order of appearance.
    numbers: HashMap<(usize, StepId), usize>,
    /// The build the events being rendered come from (a bake's target index).
    scope: usize,
    /// The target name shown on each line (bake), if any.
    label: Option<String>,
    /// The tty display.
    tty: Tty,
    warnings: Vec<String>,
    /// Plain mode: the step whose last log line is still open (no `\n` yet), as
    /// BuildKit's printer continues it without a new `#N t` prefix.
    open_line: Option<(usize, StepId)>,
    /// Steps that printed DONE, CACHED or ERROR: later byte counts of theirs (a layer
    /// compressed in the background) are not printed after their end.
    ended: HashSet<(usize, StepId)>,
    /// Transfers whose completion was printed, by step, activity and label: once each.
    completed: HashSet<(usize, StepId, Activity, String)>,
}

impl Renderer {
    pub(crate) fn new(mode: Mode) -> Self {
        Renderer {
            mode,
            names: HashMap::new(),
            numbers: HashMap::new(),
            scope: 0,
            label: None,
            tty: Tty::new(),
            warnings: Vec::new(),
            open_line: None,
            ended: HashSet::new(),
            completed: HashSet::new(),
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

    fn plain(&mut self, ev: &ProgressEvent, err: &mut impl Write) {
        // Anything but the open line's own continuation ends that line first.
        if let Some(open) = self.open_line {
            let continues =
                matches!(ev, ProgressEvent::StepLog { id, .. } if (self.scope, *id) == open);
            if !continues && !matches!(ev, ProgressEvent::Phase { .. }) {
                let _ = writeln!(err);
                self.open_line = None;
            }
        }
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
                // A step id can start again (each exporter of a build, in turn).
                self.ended.remove(&(self.scope, *id));
                let scope = self.scope;
                self.completed
                    .retain(|(s, i, _, _)| (*s, *i) != (scope, *id));
                let _ = writeln!(err, "#{n} {shown}");
            }
            ProgressEvent::StepCached { id } => {
                let n = self.number(*id);
                self.ended.insert((self.scope, *id));
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
                let key = (self.scope, *id);
                let continued = self.open_line == Some(key);
                let (text, open) = plain_log(n, t, &String::from_utf8_lossy(data), continued);
                let _ = write!(err, "{text}");
                self.open_line = open.then_some(key);
            }
            // Plain logs get one line per finished transfer, not every tick; none after the
            // step's end (a layer compressed in the background while the next step runs).
            ProgressEvent::StepProgress {
                id,
                activity,
                label,
                current,
                total,
            } if total.is_some_and(|t| t == *current)
                && !self.ended.contains(&(self.scope, *id))
                && self
                    .completed
                    .insert((self.scope, *id, *activity, label.clone())) =>
            {
                let n = self.number(*id);
                let _ = writeln!(err, "#{n} {activity:?} {label} {} done", human(*current));
            }
            ProgressEvent::StepDone { id, elapsed } => {
                let n = self.number(*id);
                self.ended.insert((self.scope, *id));
                let _ = writeln!(err, "#{n} DONE {:.1}s", elapsed.as_secs_f64());
            }
            ProgressEvent::StepFailed { id, error } => {
                let n = self.number(*id);
                self.ended.insert((self.scope, *id));
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
            if self.mode == Mode::Tty {
                self.tty.finish(None, "", &mut err);
            }
            self.flush_warnings(&mut err);
        }
    }

    fn tty(&mut self, ev: &ProgressEvent, err: &mut impl Write) {
        let scope = self.scope;
        match ev {
            ProgressEvent::BuildStarted {
                platforms,
                sandbox,
                privilege,
            } => {
                self.tty.clear_for_text(err);
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
                self.tty.started(scope, *id, shown, err);
            }
            ProgressEvent::StepCached { id } => {
                self.tty.ended(scope, *id, EndState::Cached, err);
            }
            ProgressEvent::StepProgress {
                id,
                activity,
                label,
                current,
                total,
            } => self
                .tty
                .progress(scope, *id, (*activity, label), *current, *total, err),
            ProgressEvent::StepLog { id, data, .. } => self.tty.log(scope, *id, data, err),
            ProgressEvent::StepDone { id, elapsed } => {
                self.tty.ended(scope, *id, EndState::Done(*elapsed), err);
            }
            ProgressEvent::StepFailed { id, error } => {
                self.tty
                    .ended(scope, *id, EndState::Failed(error.clone()), err);
            }
            ProgressEvent::Warning { message, location } => {
                self.warnings
                    .push(short_warning(message, location.as_deref()));
            }
            ProgressEvent::BuildDone { .. } => {
                let label = self.label_prefix();
                let only = self.label.is_some().then_some(scope);
                self.tty.finish(only, &label, err);
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

/// A RUN step's output chunk as BuildKit's plain printer writes it: each `\n`-ended line
/// once, behind `#N t ` (`t` the seconds since the step began, to 3, 2 or 1 decimals); a
/// `\r`-rewritten progress line stays one line (its `\r`s kept, as buildx keeps them), and
/// a chunk that ends mid-line leaves the line open so the next chunk of the same step
/// continues it without a second prefix. `continued`: the step's line is open. Returns the
/// text and whether the line is left open.
fn plain_log(n: usize, secs: f64, chunk: &str, continued: bool) -> (String, bool) {
    if chunk.is_empty() {
        return (String::new(), continued);
    }
    let prec = if secs < 10.0 {
        3
    } else if secs < 100.0 {
        2
    } else {
        1
    };
    let mut out = String::new();
    let mut rest = chunk;
    let mut first = true;
    loop {
        if rest.is_empty() {
            return (out, false);
        }
        let (line, more) = match rest.split_once('\n') {
            Some((line, more)) => (line, Some(more)),
            None => (rest, None),
        };
        if !(first && continued) {
            out.push_str(&format!("#{n} {secs:.prec$} "));
        }
        out.push_str(line);
        first = false;
        match more {
            Some(more) => {
                out.push('\n');
                rest = more;
            }
            None => return (out, true),
        }
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
    fn plain_logs_prefix_each_line_once() {
        // One complete line, `\r` rewrites kept inside it.
        assert_eq!(
            plain_log(3, 0.5, "a 10%\rb 50%\rc 100%\n", false),
            ("#3 0.500 a 10%\rb 50%\rc 100%\n".to_owned(), false)
        );
        // A partial line stays open; its continuation gets no prefix.
        assert_eq!(
            plain_log(3, 1.0, "10%\r20%", false),
            ("#3 1.000 10%\r20%".to_owned(), true)
        );
        assert_eq!(
            plain_log(3, 1.2, "\r30%\nnext\n", true),
            ("\r30%\n#3 1.200 next\n".to_owned(), false)
        );
        assert_eq!(plain_log(3, 1.2, "", true), (String::new(), true));
        // An empty line still gets its prefix; the precision drops as BuildKit's.
        assert_eq!(
            plain_log(7, 12.345, "\nx", false),
            ("#7 12.35 \n#7 12.35 x".to_owned(), true)
        );
        assert_eq!(plain_log(7, 123.4, "y\n", false).0, "#7 123.4 y\n");
    }

    #[test]
    fn sizes_and_truncation() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
