//! The `--progress=tty` display, drawn as buildx draws it: a block redrawn in place with a
//! `[+] Building 3.2s (4/6)` header, one line per step with its time, and under each
//! running step its live byte counts (`=> => pull 55c8607fad86 12.3MB / 30.0MB`) and its
//! last output lines (`=> => # ...`). When the build ends the block is replaced by the
//! final summary: every step once, with the pulls and pushes it made, as buildx leaves it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant};

use builder_core::{Activity, StepId};

/// Output lines kept under a running step.
const LOG_LINES: usize = 3;
/// The shortest interval between two redraws for byte counts and output.
const REDRAW: Duration = Duration::from_millis(80);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Running,
    Done(Duration),
    Cached,
    Failed(String),
}

#[derive(Debug)]
struct Step {
    scope: usize,
    id: StepId,
    name: String,
    started: Instant,
    state: State,
    logs: VecDeque<String>,
    /// The output line not yet ended by `\n`.
    partial: String,
    /// Byte counters by label: activity, bytes done, bytes in all.
    transfers: BTreeMap<String, (Activity, u64, Option<u64>)>,
}

/// The tty display's state.
#[derive(Debug)]
pub(crate) struct Tty {
    start: Instant,
    steps: Vec<Step>,
    /// The latest entry of each step id (an id can start again: one per exporter).
    index: HashMap<(usize, StepId), usize>,
    /// Lines of the live block now on the screen.
    drawn: usize,
    last_draw: Option<Instant>,
    /// Terminal size (columns, rows); a fixed 80x24 when stderr is not a terminal.
    size: (usize, usize),
}

impl Tty {
    pub(crate) fn new() -> Self {
        let size = rustix::termios::tcgetwinsize(std::io::stderr())
            .ok()
            .filter(|w| w.ws_col > 0 && w.ws_row > 0)
            .map_or((80, 24), |w| (usize::from(w.ws_col), usize::from(w.ws_row)));
        Tty {
            start: Instant::now(),
            steps: Vec::new(),
            index: HashMap::new(),
            drawn: 0,
            last_draw: None,
            size,
        }
    }

    fn step(&mut self, scope: usize, id: StepId) -> Option<&mut Step> {
        let i = *self.index.get(&(scope, id))?;
        self.steps.get_mut(i)
    }

    pub(crate) fn started(&mut self, scope: usize, id: StepId, name: String, w: &mut impl Write) {
        self.index.insert((scope, id), self.steps.len());
        self.steps.push(Step {
            scope,
            id,
            name,
            started: Instant::now(),
            state: State::Running,
            logs: VecDeque::new(),
            partial: String::new(),
            transfers: BTreeMap::new(),
        });
        self.redraw(w, true);
    }

    pub(crate) fn ended(&mut self, scope: usize, id: StepId, state: EndState, w: &mut impl Write) {
        if let Some(s) = self.step(scope, id) {
            s.state = match state {
                EndState::Done(d) => State::Done(d),
                EndState::Cached => State::Cached,
                EndState::Failed(e) => State::Failed(e),
            };
            self.redraw(w, true);
        }
    }

    pub(crate) fn progress(
        &mut self,
        scope: usize,
        id: StepId,
        (activity, label): (Activity, &str),
        current: u64,
        total: Option<u64>,
        w: &mut impl Write,
    ) {
        if let Some(s) = self.step(scope, id) {
            s.transfers
                .insert(label.to_owned(), (activity, current, total));
            self.redraw(w, false);
        }
    }

    pub(crate) fn log(&mut self, scope: usize, id: StepId, data: &[u8], w: &mut impl Write) {
        if let Some(s) = self.step(scope, id) {
            s.partial.push_str(&String::from_utf8_lossy(data));
            while let Some((line, rest)) = s.partial.split_once('\n') {
                // A `\r`-rewritten line shows as what the terminal would leave: its last part.
                let shown = line.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
                s.logs.push_back(shown.to_owned());
                s.partial = rest.to_owned();
            }
            while s.logs.len() > LOG_LINES {
                s.logs.pop_front();
            }
            self.redraw(w, false);
        }
    }

    /// Replaces the live block by the final summary of the steps of `scope` (all steps
    /// when `scope` is `None`), headed by `[+] Building T (n/m) FINISHED`.
    pub(crate) fn finish(&mut self, scope: Option<usize>, label: &str, w: &mut impl Write) {
        self.clear(w);
        let (mine, rest): (Vec<Step>, Vec<Step>) = std::mem::take(&mut self.steps)
            .into_iter()
            .partition(|s| scope.is_none_or(|sc| s.scope == sc));
        if !mine.is_empty() {
            let done = mine.iter().filter(|s| s.state != State::Running).count();
            let _ = writeln!(
                w,
                "[+] {label}Building {:.1}s ({done}/{}) FINISHED",
                self.start.elapsed().as_secs_f64(),
                mine.len()
            );
            for s in &mine {
                for line in step_lines(s, self.size.0, true) {
                    let _ = writeln!(w, "{line}");
                }
            }
        }
        self.steps = rest;
        self.index = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.scope, s.id), i))
            .collect();
        self.redraw(w, true);
    }

    /// Takes the live block off the screen so that a line of text can be printed in its
    /// place; the next event draws it again below.
    pub(crate) fn clear_for_text(&mut self, w: &mut impl Write) {
        self.clear(w);
    }

    fn clear(&mut self, w: &mut impl Write) {
        if self.drawn > 0 {
            // Back to the first line of the block, then erase to the end of the screen.
            let _ = write!(w, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn redraw(&mut self, w: &mut impl Write, force: bool) {
        if !force && self.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last_draw = Some(Instant::now());
        self.clear(w);
        if self.steps.is_empty() {
            let _ = w.flush();
            return;
        }
        let (cols, rows) = self.size;
        let done = self
            .steps
            .iter()
            .filter(|s| s.state != State::Running)
            .count();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{})",
            self.start.elapsed().as_secs_f64(),
            self.steps.len()
        )];
        let mut body: Vec<String> = Vec::new();
        for s in &self.steps {
            body.extend(step_lines(s, cols, false));
        }
        // As buildx: what does not fit the terminal scrolls off the top.
        let room = rows.saturating_sub(2).max(1);
        let skip = body.len().saturating_sub(room);
        lines.extend(body.into_iter().skip(skip));
        for l in &lines {
            let _ = writeln!(w, "{l}");
        }
        self.drawn = lines.len();
        let _ = w.flush();
    }
}

/// How a step ended, for [`Tty::ended`].
pub(crate) enum EndState {
    Done(Duration),
    Cached,
    Failed(String),
}

/// A step's lines: ` => NAME    1.2s`, then (running, or in the final summary) its
/// transfers, and while running its last output lines.
fn step_lines(s: &Step, cols: usize, last: bool) -> Vec<String> {
    let (prefix, secs) = match &s.state {
        State::Running => ("", s.started.elapsed()),
        State::Done(d) => ("", *d),
        State::Cached => ("CACHED ", Duration::ZERO),
        State::Failed(_) => ("ERROR ", s.started.elapsed()),
    };
    let mut out = vec![right_aligned(
        &format!(" => {prefix}{}", s.name),
        &format!("{:.1}s", secs.as_secs_f64()),
        cols,
    )];
    if let State::Failed(e) = &s.state {
        out.push(fit(&format!(" => => ERROR: {e}"), cols));
    }
    let running = s.state == State::Running;
    for (label, (activity, current, total)) in &s.transfers {
        let finished = total.is_some_and(|t| t == *current);
        let shown = if last {
            finished && matches!(activity, Activity::Pull | Activity::Push)
        } else {
            running && !finished
        };
        if !shown {
            continue;
        }
        let what = match activity {
            Activity::Pull => "pull",
            Activity::Push => "push",
            Activity::Compress => "compress",
            Activity::Extract => "extract",
            Activity::Context => "context",
        };
        let bytes = match total {
            Some(t) => format!("{} / {}", super::human(*current), super::human(*t)),
            None => super::human(*current),
        };
        out.push(fit(&format!(" => => {what} {label} {bytes}"), cols));
    }
    if running {
        for l in &s.logs {
            out.push(fit(&format!(" => => # {l}"), cols));
        }
    }
    out
}

/// `left`, then `right` at the right edge of `cols` columns (less one, so that a full
/// line never wraps).
fn right_aligned(left: &str, right: &str, cols: usize) -> String {
    let width = cols.saturating_sub(1).max(20);
    let room = width.saturating_sub(right.len() + 1);
    let left = super::truncate(left, room);
    let pad = width.saturating_sub(left.chars().count() + right.len());
    format!("{left}{}{right}", " ".repeat(pad))
}

fn fit(s: &str, cols: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    super::truncate(&clean, cols.saturating_sub(1).max(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tty() -> Tty {
        let mut t = Tty::new();
        t.size = (60, 24);
        t
    }

    #[test]
    fn block_redraws_in_place_and_ends_in_a_summary() {
        let mut t = tty();
        let mut out = Vec::new();
        t.started(0, StepId(1), "[1/2] FROM base".into(), &mut out);
        t.progress(
            0,
            StepId(1),
            (Activity::Pull, "55c8607fad86"),
            1_000_000,
            Some(3_000_000),
            &mut out,
        );
        t.last_draw = None;
        t.log(0, StepId(1), b"10%\r20%\rall\nhalf", &mut out);
        let live = String::from_utf8_lossy(&out).into_owned();
        assert!(
            live.contains("=> => pull 55c8607fad86 1.0MB / 3.0MB"),
            "{live}"
        );
        assert!(live.contains(" => => # all\n"), "{live}");
        assert!(live.contains("\x1b[2F\x1b[J"), "{live}");
        out.clear();
        t.progress(
            0,
            StepId(1),
            (Activity::Pull, "55c8607fad86"),
            3_000_000,
            Some(3_000_000),
            &mut out,
        );
        t.ended(
            0,
            StepId(1),
            EndState::Done(Duration::from_millis(1500)),
            &mut out,
        );
        t.started(0, StepId(2), "[2/2] RUN x".into(), &mut out);
        t.ended(0, StepId(2), EndState::Cached, &mut out);
        out.clear();
        t.finish(None, "", &mut out);
        let end = String::from_utf8_lossy(&out).into_owned();
        let lines: Vec<&str> = end.lines().collect();
        assert!(lines[0].starts_with("\x1b["), "{end}");
        assert!(
            lines[0].ends_with("[+] Building 0.0s (2/2) FINISHED")
                || lines[0].contains("(2/2) FINISHED"),
            "{end}"
        );
        assert!(
            lines[1].starts_with(" => [1/2] FROM base") && lines[1].ends_with("1.5s"),
            "{end}"
        );
        assert_eq!(lines[1].chars().count(), 59, "{end}");
        assert_eq!(lines[2], " => => pull 55c8607fad86 3.0MB / 3.0MB");
        assert!(lines[3].starts_with(" => CACHED [2/2] RUN x"), "{end}");
        assert_eq!(lines.len(), 4, "{end}");
    }
}
