//! Many builds at once (`rbuild bake`): every build of a [`BuildGroup`] runs concurrently in
//! this process, over one cache, sharing the per-key locks so that a step or a pull that
//! several of them need runs once.

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::{Build, BuildReport, Error, exec::KeyLocks};
use crate::graph::Graph;
use crate::progress::{ProgressEvent, ProgressSink};

/// Receives the events of the builds of a [`BuildGroup`], each with the name of its build.
pub trait GroupSink: Send {
    /// Called once per event, in the order each build produced them.
    fn event(&mut self, target: &str, event: &ProgressEvent);
}

/// The outcome of one build of a group.
#[derive(Debug)]
pub struct TargetResult {
    /// The name the build was added under.
    pub name: String,
    /// What it produced, or why it stopped ([`Error::Cancelled`] when another build's
    /// failure stopped it).
    pub result: Result<BuildReport, Error>,
}

/// Named builds that run together.
///
/// ```no_run
/// # async fn f() -> Result<(), builder_core::Error> {
/// use builder_core::{Build, BuildGroup, GroupSink, ProgressEvent};
/// struct Print;
/// impl GroupSink for Print {
///     fn event(&mut self, target: &str, ev: &ProgressEvent) { eprintln!("{target}: {ev:?}") }
/// }
/// let results = BuildGroup::new()
///     .add("api", Build::new("api")?)
///     .add("web", Build::new("web")?)
///     .run(&mut Print)
///     .await;
/// for r in results { println!("{}: {}", r.name, r.result.is_ok()); }
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct BuildGroup {
    builds: Vec<(String, Build)>,
    keep_going: bool,
    locks: KeyLocks,
}

/// Forwards one build's events, tagged with its index, to the group's receiver.
struct Tagged {
    index: usize,
    tx: mpsc::UnboundedSender<(usize, ProgressEvent)>,
}

impl ProgressSink for Tagged {
    fn event(&mut self, event: &ProgressEvent) {
        let _ = self.tx.send((self.index, event.clone()));
    }
}

impl BuildGroup {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a build under `name` (shown with its progress and in its result).
    pub fn add(mut self, name: &str, mut build: Build) -> Self {
        build.key_locks = self.locks.clone();
        self.builds.push((name.to_owned(), build));
        self
    }

    /// The builds as one graph: each build's [`Build::graph`], merged, so that the steps
    /// several builds share (equal keys) are one vertex. Nothing runs.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), builder_core::Error> {
    /// use builder_core::{Build, BuildGroup};
    /// let graph = BuildGroup::new()
    ///     .add("api", Build::new("api")?)
    ///     .add("web", Build::new("web")?)
    ///     .graph()
    ///     .await?;
    /// print!("{}", graph.to_text());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The first build whose graph cannot be made, as [`Build::graph`].
    pub async fn graph(&self) -> Result<Graph, Error> {
        let mut graph = Graph::default();
        for (_, b) in &self.builds {
            graph.merge(b.graph().await?);
        }
        Ok(graph)
    }

    /// Let the other builds finish when one fails (by default the first failure cancels
    /// the rest).
    pub fn keep_going(mut self, yes: bool) -> Self {
        self.keep_going = yes;
        self
    }

    /// The cancel handles of the builds, for Ctrl-C.
    pub fn cancel_handles(&self) -> Vec<crate::sandbox::CancelHandle> {
        self.builds.iter().map(|(_, b)| b.cancel_handle()).collect()
    }

    /// Runs every build concurrently; returns their results in the order they were added.
    pub async fn run(self, sink: &mut dyn GroupSink) -> Vec<TargetResult> {
        let cancels = self.cancel_handles();
        let names: Vec<String> = self.builds.iter().map(|(n, _)| n.clone()).collect();
        let keep_going = self.keep_going;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runs = self
            .builds
            .into_iter()
            .enumerate()
            .map(|(index, (name, b))| {
                let mut tagged = Tagged {
                    index,
                    tx: tx.clone(),
                };
                let cancels = cancels.clone();
                async move {
                    let result = b.run(&mut tagged).await;
                    if let Err(e) = &result {
                        if !keep_going && !matches!(e, Error::Cancelled) {
                            for c in &cancels {
                                c.cancel();
                            }
                        }
                    }
                    TargetResult { name, result }
                }
            });
        let runs: Vec<_> = runs.collect();
        drop(tx);
        let all = join_all(runs);
        tokio::pin!(all);
        let results = loop {
            tokio::select! {
                biased;
                ev = rx.recv() => match ev {
                    Some((i, ev)) => sink.event(&names[i], &ev),
                    None => break (&mut all).await,
                },
                results = &mut all => break results,
            }
        };
        // The events sent after the last poll.
        while let Ok((i, ev)) = rx.try_recv() {
            sink.event(&names[i], &ev);
        }
        results
    }
}
