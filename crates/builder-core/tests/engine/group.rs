//! `BuildGroup`: several builds in one process over one cache (what `rbuild bake` runs).

use std::time::{Duration, Instant};

use builder_core::{Build, BuildGroup, Error, GroupSink, ProgressEvent, TargetResult};

use crate::util::{Case, R, df};

/// Keeps every event with its build's name.
#[derive(Default)]
struct Collect(Vec<(String, ProgressEvent)>);

impl GroupSink for Collect {
    fn event(&mut self, target: &str, ev: &ProgressEvent) {
        self.0.push((target.to_owned(), ev.clone()));
    }
}

impl Collect {
    /// The RUN output of `target`'s steps, concatenated.
    fn logs(&self, target: &str) -> String {
        let mut s = String::new();
        for (t, ev) in &self.0 {
            if let ProgressEvent::StepLog { data, .. } = ev {
                if t == target {
                    s.push_str(&String::from_utf8_lossy(data));
                }
            }
        }
        s
    }
}

fn run(group: BuildGroup, sink: &mut Collect) -> Vec<TargetResult> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(group.run(sink))
}

fn build(c: &Case, dockerfile: &str) -> Result<Build, Error> {
    Ok(Build::new(c.ctx())?
        .dockerfile(c.ctx().join(dockerfile))?
        .cache_dir(c.cache()))
}

/// Two builds that share their first RUN, started together on a cold cache: it runs once,
/// the other build waits for it and finds it in the cache; each runs its own last step.
pub(crate) fn shared_step_runs_once_across_builds() -> R {
    let c = Case::new();
    let shared = "FROM {BUSYBOX}\nRUN echo built-once && sleep 1 && echo x > /x\n";
    c.file("a.Dockerfile", &df(&format!("{shared}RUN echo only-a\n")));
    c.file("b.Dockerfile", &df(&format!("{shared}RUN echo only-b\n")));
    let group = BuildGroup::new()
        .add("a", build(&c, "a.Dockerfile")?)
        .add("b", build(&c, "b.Dockerfile")?);
    let mut sink = Collect::default();
    let results = run(group, &mut sink);
    for r in &results {
        if let Err(e) = &r.result {
            return Err(format!("{}: {e}", r.name).into());
        }
    }
    let (a, b) = (sink.logs("a"), sink.logs("b"));
    let runs = a.matches("built-once").count() + b.matches("built-once").count();
    ensure_eq!(
        runs,
        1,
        "the shared RUN ran {runs} times (a: {a:?}, b: {b:?})"
    );
    ensure!(
        a.contains("only-a") && b.contains("only-b"),
        "a: {a:?}, b: {b:?}"
    );
    let run: u32 = results
        .iter()
        .map(|r| r.result.as_ref().map_or(0, |r| r.steps_run))
        .sum();
    let cached: u32 = results
        .iter()
        .map(|r| r.result.as_ref().map_or(0, |r| r.steps_cached))
        .sum();
    ensure_eq!(
        (run, cached),
        (3, 1),
        "steps run and cached over both builds"
    );
    Ok(())
}

/// The first failure cancels the other builds; with `keep_going` they finish.
pub(crate) fn first_failure_stops_the_group_unless_keep_going() -> R {
    let c = Case::new();
    c.file("bad.Dockerfile", &df("FROM {BUSYBOX}\nRUN exit 3\n"));
    c.file(
        "slow.Dockerfile",
        &df("FROM {BUSYBOX}\nRUN sleep 4 && echo slow-done\n"),
    );
    let t0 = Instant::now();
    let group = BuildGroup::new()
        .add("bad", build(&c, "bad.Dockerfile")?)
        .add("slow", build(&c, "slow.Dockerfile")?);
    let results = run(group, &mut Collect::default());
    ensure!(results[0].result.is_err(), "the failing build succeeded");
    ensure!(
        matches!(results[1].result, Err(Error::Cancelled)),
        "the slow build was not cancelled: {:?}",
        results[1].result
    );
    ensure!(
        t0.elapsed() < Duration::from_secs(4),
        "the cancelled build ran to the end"
    );
    let group = BuildGroup::new()
        .keep_going(true)
        .add("bad", build(&c, "bad.Dockerfile")?)
        .add("slow", build(&c, "slow.Dockerfile")?);
    let mut sink = Collect::default();
    let results = run(group, &mut sink);
    ensure!(results[0].result.is_err(), "the failing build succeeded");
    ensure!(
        results[1].result.is_ok(),
        "keep_going: {:?}",
        results[1].result
    );
    ensure!(
        sink.logs("slow").contains("slow-done"),
        "no output of the slow build"
    );
    Ok(())
}
