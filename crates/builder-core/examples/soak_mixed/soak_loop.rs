//! The soak loop shared by `examples/soak_mixed` (200 builds, figures printed) and
//! `tests/soak.rs` (a bounded run that asserts no growth): consecutive builds through
//! [`builder_core::Build`] in one process, some succeeding, some cached, some failing in
//! a RUN step, some cancelled mid-step, with the process's open file descriptors, mounts,
//! child processes, threads and resident memory sampled as they go.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use builder_core::{Build, Error, NullSink};

/// What the process holds, sampled from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Builds done when sampled.
    pub(crate) builds: usize,
    /// Open file descriptors.
    pub(crate) fds: usize,
    /// Mount points below the soak's directory (its cache, contexts, outputs) in this
    /// process's mount namespace: what a build would leak (other processes on the machine
    /// mount elsewhere).
    pub(crate) mounts: usize,
    /// Child processes.
    pub(crate) children: usize,
    /// Threads.
    pub(crate) threads: usize,
    /// Resident set size, KiB.
    pub(crate) rss_kib: u64,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "builds={:<4} fds={:<4} mounts={:<4} children={:<3} threads={:<4} rss={} KiB",
            self.builds, self.fds, self.mounts, self.children, self.threads, self.rss_kib
        )
    }
}

/// The process's state now; mounts counted below `dir`.
pub(crate) fn sample(builds: usize, dir: &Path) -> Sample {
    let count = |p: &str| std::fs::read_dir(p).map_or(0, |d| d.count());
    let me = std::process::id().to_string();
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after ')'
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(me.as_str())
            })
        })
        .count();
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    Sample {
        builds,
        fds: count("/proc/self/fd"),
        mounts: mounts_below(dir),
        children,
        threads: count("/proc/self/task"),
        rss_kib,
    }
}

/// Mount points below `dir` (`/proc/self/mountinfo`'s fifth field).
fn mounts_below(dir: &Path) -> usize {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| {
        m.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .count()
    })
}

/// What the builds ended as.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcomes {
    /// Built (or cached) and exported.
    pub(crate) ok: usize,
    /// Failed in a RUN step, as asked.
    pub(crate) failed: usize,
    /// Cancelled mid-step, as asked.
    pub(crate) cancelled: usize,
}

/// Runs `n` builds of busybox-based Dockerfiles from `base` with the cache in `dir`,
/// calling `report` every `every` builds (and after the first). Build `i` is, by `i % 5`:
/// a new RUN step exported as an OCI tar, the same build again (a cache hit), a RUN that
/// exits 3, a RUN cancelled after 300 ms, a step that copies the context.
///
/// An outcome other than the one asked for is an error naming the build.
pub(crate) async fn soak(
    base: &str,
    dir: &Path,
    n: usize,
    every: usize,
    mut report: impl FnMut(Sample),
) -> Result<Outcomes, String> {
    let cache = dir.join("cache");
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).map_err(|e| format!("{}: {e}", ctx.display()))?;
    std::fs::write(ctx.join("a.txt"), "a\n").map_err(|e| e.to_string())?;
    let out: PathBuf = dir.join("out.tar");
    let mut outcomes = Outcomes::default();
    report(sample(0, dir));
    for i in 0..n {
        let (text, want) = match i % 5 {
            0 | 1 => (format!("FROM {base}\nARG N\nRUN echo \"$N\" > /n\n"), "ok"),
            2 => (format!("FROM {base}\nRUN echo failing; exit 3\n"), "failed"),
            3 => (
                format!("FROM {base}\nARG N\nRUN echo \"$N\" && sleep 30\n"),
                "cancelled",
            ),
            _ => (
                format!("FROM {base}\nARG N\nCOPY a.txt /a-$N\nRUN cat /a-$N\n"),
                "ok",
            ),
        };
        // builds 0 and 1 of each five share an argument: the second is a cache hit
        let arg = format!("{}", i - i % 5);
        let build = Build::new(&ctx)
            .and_then(|b| b.build_arg("N", &arg))
            .map_err(|e| e.to_string())?
            .dockerfile_text("Dockerfile", text)
            .cache_dir(&cache)
            .output(
                format!("type=oci,dest={}", out.display())
                    .parse()
                    .map_err(|e: Error| e.to_string())?,
            );
        let cancel = build.cancel_handle();
        let canceller = (want == "cancelled").then(|| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                cancel.cancel();
            })
        });
        let t = Instant::now();
        let result = build.run(&mut NullSink).await;
        if let Some(c) = canceller {
            let _ = c.await;
        }
        let got = match &result {
            Ok(_) => "ok",
            Err(Error::Cancelled) => "cancelled",
            Err(Error::Step { reason, .. }) if reason.contains("exit code: 3") => "failed",
            Err(e) => return Err(format!("build {i}: {e}")),
        };
        if got != want {
            return Err(format!("build {i}: {want} expected, got {result:?}"));
        }
        if want == "cancelled" && t.elapsed() > Duration::from_secs(20) {
            return Err(format!("build {i}: cancelling took {:?}", t.elapsed()));
        }
        match got {
            "ok" => outcomes.ok += 1,
            "failed" => outcomes.failed += 1,
            _ => outcomes.cancelled += 1,
        }
        let _ = std::fs::remove_file(&out);
        if (i + 1) % every == 0 {
            report(sample(i + 1, dir));
        }
    }
    Ok(outcomes)
}
