//! A build's timeline: where its wall time went and what ran at once.
//!
//! The engine times the phases of a build (resolve, pull, unpack, mount, run, context,
//! copy, snapshot, hash, compress, upload, export) and sends each as a
//! [`ProgressEvent::Phase`] when it ends. A [`Timeline`] collects them, from the events
//! of a [`CollectSink`](crate::CollectSink) or from the JSON lines of
//! `rbuild build --progress=rawjson`, and [`Timeline::report`] sums them up:
//!
//! - each phase's share of the wall time (a moment when `n` phases ran counts `1/n` to
//!   each), the time any of its spans ran, their sum, and the CPU time of RUN steps;
//! - how much of the wall time had 0, 1, 2, ... phases running (0 is the time nothing
//!   timed ran: planning, cache look-ups, waiting);
//! - a critical path: from the end backwards, the phase that ended last before the next
//!   one began, and the gaps between them;
//! - per step, the wall time of its phases and the CPU time of its processes.
//!
//! ```
//! use builder_core::Timeline;
//!
//! let rawjson = r#"{"event":"step_started","id":1,"name":"[1/2] FROM alpine","platform":null,"location":null}
//! {"event":"phase","id":1,"phase":"pull","label":"sha256:abc","start":0.1,"elapsed":0.5,"cpu":null,"bytes":3000000}
//! {"event":"phase","id":1,"phase":"unpack","label":"1 layers","start":0.6,"elapsed":0.2,"cpu":null,"bytes":null}
//! {"event":"build_done","elapsed":1.0}"#;
//! let report = Timeline::from_json_lines(rawjson)?.report();
//! assert_eq!(report.wall, 1.0);
//! assert!((report.untimed - 0.3).abs() < 1e-9);
//! println!("{report}");
//! # Ok::<(), builder_core::TimelineError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::progress::{Phase, ProgressEvent, StepId};

/// A timeline that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimelineError {
    /// A line is not a JSON progress event.
    #[error("line {line}: not a progress event: {reason}")]
    BadLine {
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The events hold no timed phase (not `--progress=rawjson` of a build).
    #[error(
        "no phase events: give the output of `rbuild build --progress=rawjson` (its stderr) of one build"
    )]
    NoPhases,
}

/// One timed phase.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PhaseSpan {
    /// The step it belongs to, if any.
    #[serde(rename = "id")]
    pub step: Option<StepId>,
    /// Which phase.
    pub phase: Phase,
    /// What it worked on.
    #[serde(default)]
    pub label: String,
    /// When it began, seconds since the build started.
    pub start: f64,
    /// How long it took, seconds.
    pub elapsed: f64,
    /// CPU seconds of a RUN step's processes.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Bytes it moved, when counted.
    #[serde(default)]
    pub bytes: Option<u64>,
}

impl PhaseSpan {
    /// When it ended, seconds since the build started.
    pub fn end(&self) -> f64 {
        self.start + self.elapsed
    }
}

/// The timed phases of one build and the names of its steps.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The phases, in the order they ended.
    pub spans: Vec<PhaseSpan>,
    /// Step names (`[builder 3/7] RUN npm ci`), from the steps' start events.
    pub steps: BTreeMap<StepId, String>,
    /// The build's wall time, when its end event is there.
    pub wall: Option<f64>,
}

impl Timeline {
    /// From a build's events (a [`CollectSink`](crate::CollectSink)'s).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a ProgressEvent>) -> Self {
        let mut t = Timeline::default();
        for ev in events {
            match ev {
                ProgressEvent::StepStarted {
                    id, name, platform, ..
                } => {
                    t.steps.insert(*id, step_name(name, platform.as_deref()));
                }
                ProgressEvent::Phase {
                    id,
                    phase,
                    label,
                    start,
                    elapsed,
                    cpu,
                    bytes,
                } => t.spans.push(PhaseSpan {
                    step: *id,
                    phase: *phase,
                    label: label.clone(),
                    start: start.as_secs_f64(),
                    elapsed: elapsed.as_secs_f64(),
                    cpu: cpu.map(|d| d.as_secs_f64()),
                    bytes: *bytes,
                }),
                ProgressEvent::BuildDone { elapsed } => t.wall = Some(elapsed.as_secs_f64()),
                _ => {}
            }
        }
        t
    }

    /// From the JSON lines of `--progress=rawjson` (lines that are not JSON objects, such
    /// as the image digest a build prints, are skipped). Errors when a JSON event is
    /// malformed or when there is no phase at all.
    pub fn from_json_lines(text: &str) -> Result<Self, TimelineError> {
        #[derive(Deserialize)]
        struct Started {
            id: StepId,
            name: String,
            #[serde(default)]
            platform: Option<String>,
        }
        #[derive(Deserialize)]
        struct Done {
            elapsed: f64,
        }
        let mut t = Timeline::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('{') {
                continue;
            }
            let bad = |e: serde_json::Error| TimelineError::BadLine {
                line: n + 1,
                reason: e.to_string(),
            };
            let v: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
            match v.get("event").and_then(|e| e.as_str()) {
                Some("phase") => t.spans.push(serde_json::from_value(v).map_err(bad)?),
                Some("step_started") => {
                    let s: Started = serde_json::from_value(v).map_err(bad)?;
                    t.steps
                        .insert(s.id, step_name(&s.name, s.platform.as_deref()));
                }
                Some("build_done") => {
                    let d: Done = serde_json::from_value(v).map_err(bad)?;
                    t.wall = Some(d.elapsed);
                }
                Some(_) => {}
                None => {
                    return Err(TimelineError::BadLine {
                        line: n + 1,
                        reason: "a JSON object without an \"event\" field".into(),
                    });
                }
            }
        }
        if t.spans.is_empty() {
            return Err(TimelineError::NoPhases);
        }
        Ok(t)
    }

    /// Sums the timeline up (see the module documentation).
    pub fn report(&self) -> Report {
        let spans = &self.spans;
        let last_end = spans.iter().map(PhaseSpan::end).fold(0.0, f64::max);
        let wall = self.wall.unwrap_or(last_end).max(last_end);
        let mut phases: BTreeMap<Phase, PhaseShare> = BTreeMap::new();
        for s in spans {
            let p = phases
                .entry(s.phase)
                .or_insert_with(|| PhaseShare::new(s.phase));
            p.count += 1;
            p.busy += s.elapsed;
            p.cpu += s.cpu.unwrap_or(0.0);
            p.bytes += s.bytes.unwrap_or(0);
        }
        // Sweep the moments where a span starts or ends.
        let mut cuts: Vec<f64> = spans
            .iter()
            .flat_map(|s| [s.start, s.end()])
            .chain([0.0, wall])
            .collect();
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let mut concurrency: Vec<f64> = Vec::new();
        let mut untimed = 0.0;
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let dt = b - a;
            if dt <= 0.0 {
                continue;
            }
            let mut active: Vec<&PhaseSpan> = spans
                .iter()
                .filter(|s| s.start <= a && s.end() >= b && s.elapsed > 0.0)
                .collect();
            // An export contains its uploads: it counts only when nothing else runs.
            if active.iter().any(|s| s.phase != Phase::Export) {
                active.retain(|s| s.phase != Phase::Export);
            }
            if concurrency.len() <= active.len() {
                concurrency.resize(active.len() + 1, 0.0);
            }
            concurrency[active.len()] += dt;
            if active.is_empty() {
                untimed += dt;
                continue;
            }
            let mut seen: Vec<Phase> = Vec::new();
            for s in &active {
                let p = phases.get_mut(&s.phase).expect("every phase counted");
                p.share += dt / active.len() as f64;
                if !seen.contains(&s.phase) {
                    seen.push(s.phase);
                    p.wall += dt;
                }
            }
        }
        let mut steps: BTreeMap<Option<StepId>, StepTime> = BTreeMap::new();
        for s in spans {
            let st = steps.entry(s.step).or_insert_with(|| StepTime {
                step: s.step,
                name: self.name_of(s.step),
                first: s.start,
                last: s.end(),
                phases: 0.0,
                run: 0.0,
                cpu: None,
            });
            st.first = st.first.min(s.start);
            st.last = st.last.max(s.end());
            st.phases += s.elapsed;
            if s.phase == Phase::Run {
                st.run += s.elapsed;
            }
            if let Some(c) = s.cpu {
                *st.cpu.get_or_insert(0.0) += c;
            }
        }
        let mut steps: Vec<StepTime> = steps.into_values().collect();
        steps.sort_by(|a, b| a.first.total_cmp(&b.first));
        Report {
            wall,
            phases: phases.into_values().collect(),
            untimed,
            concurrency,
            critical: self.critical_path(wall),
            steps,
        }
    }

    fn name_of(&self, step: Option<StepId>) -> String {
        match step {
            Some(id) => self
                .steps
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("step {}", id.0)),
            None => "(no step: layers hashed or snapshots made for the outputs)".into(),
        }
    }

    /// From the end backwards: the span that ended last before the current moment, then
    /// the one that ended last before that span began, and so on; the time between two is
    /// a gap where nothing timed ran.
    fn critical_path(&self, wall: f64) -> Vec<PathEntry> {
        const EPS: f64 = 1e-6;
        let mut out = Vec::new();
        let mut t = wall;
        loop {
            let best = self
                .spans
                .iter()
                .filter(|s| s.end() <= t + EPS && s.start < t - EPS)
                .max_by(|a, b| {
                    a.end()
                        .total_cmp(&b.end())
                        .then(a.elapsed.total_cmp(&b.elapsed))
                });
            let Some(s) = best else { break };
            if t - s.end() > 0.01 {
                out.push(PathEntry::Gap {
                    start: s.end(),
                    elapsed: t - s.end(),
                });
            }
            out.push(PathEntry::Span {
                span: s.clone(),
                name: self.name_of(s.step),
            });
            t = s.start;
        }
        if t > 0.01 {
            out.push(PathEntry::Gap {
                start: 0.0,
                elapsed: t,
            });
        }
        out.reverse();
        out
    }
}

fn step_name(name: &str, platform: Option<&str>) -> String {
    match platform {
        Some(p) => format!("[{p}] {name}"),
        None => name.to_owned(),
    }
}

/// One phase's part of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseShare {
    /// The phase.
    pub phase: Phase,
    /// How many spans it had.
    pub count: usize,
    /// Its share of the wall time: a moment when `n` phases ran counts `1/n` to each.
    pub share: f64,
    /// The wall time when at least one of its spans ran.
    pub wall: f64,
    /// The sum of its spans' durations (more than `wall` when they overlapped).
    pub busy: f64,
    /// CPU seconds of its processes (RUN steps only).
    pub cpu: f64,
    /// Bytes its spans moved.
    pub bytes: u64,
}

impl PhaseShare {
    fn new(phase: Phase) -> Self {
        PhaseShare {
            phase,
            count: 0,
            share: 0.0,
            wall: 0.0,
            busy: 0.0,
            cpu: 0.0,
            bytes: 0,
        }
    }
}

/// An entry of the critical path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathEntry {
    /// A phase.
    Span {
        /// The phase.
        span: PhaseSpan,
        /// Its step's name.
        name: String,
    },
    /// Nothing timed ran (planning, cache look-ups, waiting on a lock).
    Gap {
        /// Seconds since the build started.
        start: f64,
        /// Seconds.
        elapsed: f64,
    },
}

/// The phases of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    /// The step (`None`: work for the outputs).
    pub step: Option<StepId>,
    /// Its name.
    pub name: String,
    /// When its first phase began.
    pub first: f64,
    /// When its last phase ended.
    pub last: f64,
    /// The sum of its phases' durations.
    pub phases: f64,
    /// Its RUN sandbox's wall time.
    pub run: f64,
    /// CPU seconds of its processes, when it ran any.
    pub cpu: Option<f64>,
}

/// What [`Timeline::report`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The build's wall time, seconds.
    pub wall: f64,
    /// Each phase that ran, in [`Phase::ALL`] order.
    pub phases: Vec<PhaseShare>,
    /// Wall time when no timed phase ran.
    pub untimed: f64,
    /// `concurrency[n]`: the wall time when `n` phases ran at once.
    pub concurrency: Vec<f64>,
    /// The critical path, from the start.
    pub critical: Vec<PathEntry>,
    /// Each step with phases, by when it began.
    pub steps: Vec<StepTime>,
}

impl Report {
    /// The share of `phase`, seconds (0 when it did not run).
    pub fn share(&self, phase: Phase) -> f64 {
        self.phases
            .iter()
            .find(|p| p.phase == phase)
            .map_or(0.0, |p| p.share)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wall time {:.2}s; no timed phase running for {:.2}s ({:.0}%)",
            self.wall,
            self.untimed,
            pct(self.untimed, self.wall)
        )?;
        writeln!(
            f,
            "\nwhere the wall time went (a moment when n phases ran counts 1/n to each):"
        )?;
        writeln!(
            f,
            "  {:<9} {:>8} {:>5} {:>9} {:>9} {:>6} {:>9} {:>10}",
            "phase", "share", "%", "any-wall", "sum", "count", "cpu", "bytes"
        )?;
        for p in &self.phases {
            let cpu = if p.phase == Phase::Run {
                format!("{:.2}s", p.cpu)
            } else {
                "-".into()
            };
            let bytes = if p.bytes > 0 {
                format!("{:.1}MB", p.bytes as f64 / 1e6)
            } else {
                "-".into()
            };
            writeln!(
                f,
                "  {:<9} {:>7.2}s {:>4.0}% {:>8.2}s {:>8.2}s {:>6} {:>9} {:>10}",
                p.phase.name(),
                p.share,
                pct(p.share, self.wall),
                p.wall,
                p.busy,
                p.count,
                cpu,
                bytes
            )?;
        }
        writeln!(
            f,
            "  {:<9} {:>7.2}s {:>4.0}%",
            "(untimed)",
            self.untimed,
            pct(self.untimed, self.wall)
        )?;
        write!(f, "\nconcurrency (phases at once: wall time):")?;
        for (n, t) in self.concurrency.iter().enumerate() {
            if *t > 0.0 {
                write!(f, "  {n}: {t:.2}s")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "\ncritical path (backwards from the end, each the phase that ended last before \
             the next began):"
        )?;
        for e in &self.critical {
            match e {
                PathEntry::Span { span, name } => {
                    let label = if span.label.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", span.label)
                    };
                    writeln!(
                        f,
                        "  {:>7.2}s +{:>6.2}s  {:<8} {name}{label}",
                        span.start,
                        span.elapsed,
                        span.phase.name()
                    )?;
                }
                PathEntry::Gap { start, elapsed } => {
                    writeln!(f, "  {start:>7.2}s +{elapsed:>6.2}s  (nothing timed)")?
                }
            }
        }
        writeln!(
            f,
            "\nsteps (first..last phase, sum of phases, RUN wall and CPU):"
        )?;
        for s in &self.steps {
            let run = match s.cpu {
                Some(c) => format!(
                    "  run {:.2}s cpu {:.2}s ({:.0}% of one core)",
                    s.run,
                    c,
                    pct(c, s.run)
                ),
                None => String::new(),
            };
            writeln!(
                f,
                "  {:>7.2}..{:>7.2}s {:>7.2}s  {}{run}",
                s.first, s.last, s.phases, s.name
            )?;
        }
        Ok(())
    }
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(step: u32, phase: Phase, start: f64, elapsed: f64) -> PhaseSpan {
        PhaseSpan {
            step: Some(StepId(step)),
            phase,
            label: String::new(),
            start,
            elapsed,
            cpu: None,
            bytes: None,
        }
    }

    #[test]
    fn shares_split_concurrent_time_and_count_the_gaps() {
        let t = Timeline {
            spans: vec![
                span(1, Phase::Pull, 0.0, 2.0),
                span(2, Phase::Pull, 1.0, 2.0),
                span(2, Phase::Run, 4.0, 4.0),
            ],
            steps: BTreeMap::new(),
            wall: Some(10.0),
        };
        let r = t.report();
        assert!((r.share(Phase::Pull) - 3.0).abs() < 1e-9, "{r:?}");
        assert!((r.share(Phase::Run) - 4.0).abs() < 1e-9);
        assert!((r.untimed - 3.0).abs() < 1e-9);
        assert!((r.concurrency[2] - 1.0).abs() < 1e-9);
        assert!((r.concurrency[1] - 6.0).abs() < 1e-9);
        let pull = &r.phases[0];
        assert_eq!((pull.count, pull.busy, pull.wall), (2, 4.0, 3.0));
        // Backwards: run (ended last), then the pull that ended last before 4 (step 2's),
        // then nothing ended before 1 (step 1's pull ran on to 2).
        let kinds: Vec<String> = r
            .critical
            .iter()
            .map(|e| match e {
                PathEntry::Span { span, .. } => format!("{}@{}", span.phase, span.start),
                PathEntry::Gap { start, .. } => format!("gap@{start}"),
            })
            .collect();
        assert_eq!(kinds, ["gap@0", "pull@1", "gap@3", "run@4", "gap@8"]);
    }

    #[test]
    fn an_export_counts_only_when_its_uploads_do_not_run() {
        let t = Timeline {
            spans: vec![
                span(3, Phase::Upload, 1.0, 1.0),
                span(3, Phase::Export, 0.0, 4.0),
            ],
            steps: BTreeMap::new(),
            wall: None,
        };
        let r = t.report();
        assert_eq!(r.wall, 4.0);
        assert!((r.share(Phase::Export) - 3.0).abs() < 1e-9);
        assert!((r.share(Phase::Upload) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn json_lines_errors_name_the_line() {
        let e =
            Timeline::from_json_lines("sha256:abc\n{\"event\":\"phase\",\"id\":1}\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2: "), "{e}");
        let e =
            Timeline::from_json_lines("{\"event\":\"build_done\",\"elapsed\":1.0}").unwrap_err();
        assert!(matches!(e, TimelineError::NoPhases), "{e}");
    }
}
