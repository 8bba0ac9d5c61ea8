//! Progress as buildx prints it (issue 20): in plain mode a child's `\r`-rewritten and
//! chunked lines carry one `#N t` prefix per line, a push prints one line per blob (and
//! uploads a blob that two layers share once), no byte count follows a step's DONE; in tty
//! mode, run in a real pseudo-terminal (script(1)), a block redrawn in place with live byte
//! counts, replaced by the final summary of the steps and the image digest.

use std::path::Path;
use std::process::{Command, Output};

const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";
const NODE: &str = "127.0.0.1:5000/library/node:20-slim";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ctx")).unwrap();
    std::fs::write(dir.path().join("ctx/Dockerfile"), dockerfile).unwrap();
    // New bytes each run: a blob the registry does not have yet.
    let nonce = format!(
        "{:?} {}\n",
        std::time::SystemTime::now(),
        std::process::id()
    );
    std::fs::write(dir.path().join("ctx/same.txt"), nonce).unwrap();
    dir
}

/// The manifest of `image` (one platform) as the registry serves it.
fn manifest(image: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo");
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    match v["manifests"].as_array() {
        Some(list) => {
            let d = list[0]["digest"].as_str().unwrap();
            let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
            manifest(&format!("{repo}@{d}"))
        }
        None => v,
    }
}

#[test]
fn plain_prints_each_line_and_each_blob_once() {
    let dir = context(&format!(
        "FROM {BUSYBOX}\n\
         RUN printf 'get 10%%\\rget 50%%\\rget 100%%\\n'; printf 'partial'; sleep 0.4; printf ' rest\\n'; echo last\n\
         COPY same.txt /same.txt\n\
         RUN rm /same.txt\n\
         COPY same.txt /same.txt\n"
    ));
    let image = "127.0.0.1:5000/dropin/progress-plain:latest";
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args([
            "build",
            "--progress=plain",
            "--no-cache",
            "--push",
            "-t",
            image,
        ])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg(dir.path().join("ctx"))
        .output()
        .unwrap();
    ok(&out);
    let err = text(&out.stderr);
    let run = err
        .lines()
        .find(|l| l.contains("] RUN printf"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no RUN step in:\n{err}"))
        .to_owned();
    let logs: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{run} ")))
        .filter_map(|l| {
            let rest = &l[run.len() + 1..];
            let (t, line) = rest.split_once(' ')?;
            t.parse::<f64>().ok().map(|_| line)
        })
        .collect();
    // One prefixed line per `\n`, the `\r` rewrites kept inside it, the chunked line whole.
    assert_eq!(
        logs,
        ["get 10%\rget 50%\rget 100%", "partial rest", "last"],
        "{err}"
    );

    // The two COPY layers are the same blob: in the manifest twice, pushed and printed
    // once.
    let m = manifest(image);
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 5, "{m}");
    assert_eq!(layers[2], layers[4], "identical layers: {m}");
    let mut pushes: Vec<&str> = err.lines().filter(|l| l.contains(" Push ")).collect();
    let all = pushes.len();
    assert!(all >= 2, "{err}");
    let shared: String = layers[2]
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    assert_eq!(
        pushes.iter().filter(|l| l.contains(&shared)).count(),
        1,
        "{err}"
    );
    pushes.sort_unstable();
    pushes.dedup();
    assert_eq!(pushes.len(), all, "a push line printed twice:\n{err}");

    // Nothing of a step after its end: no line `#N ...` follows `#N DONE`.
    let mut ended = std::collections::HashSet::new();
    for l in err.lines() {
        let Some(n) = l.split_whitespace().next().filter(|n| n.starts_with('#')) else {
            continue;
        };
        assert!(!ended.contains(n), "{l:?} printed after {n} DONE:\n{err}");
        if l.ends_with("CACHED") || l.contains(" DONE ") {
            ended.insert(n.to_owned());
        }
    }
}

/// Runs `rbuild args` in a pseudo-terminal of 100 columns (script(1) from util-linux).
fn in_pty(cwd: &Path, args: &str) -> (i32, String) {
    let cmd = format!(
        "stty cols 100 rows 30; exec {} {args}",
        env!("CARGO_BIN_EXE_rbuild")
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(cwd)
        .output()
        .expect("run script(1)");
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[test]
fn tty_redraws_live_counts_and_ends_in_a_summary() {
    let dir = context(&format!(
        "FROM {NODE}\nRUN for i in 1 2 3; do printf \"tick $i\\r\"; sleep 0.3; done; echo; echo ran\n"
    ));
    let image = "127.0.0.1:5000/dropin/progress-tty:latest";
    // A fresh cache: the base is pulled, long enough for live counts.
    let (code, screen) = in_pty(
        dir.path(),
        &format!(
            "build --progress=tty --push -t {image} --cache-dir {} {}",
            dir.path().join("cache").display(),
            dir.path().join("ctx").display()
        ),
    );
    assert_eq!(code, 0, "{screen}");
    // The block is redrawn in place: cursor up N lines, erase down.
    assert!(screen.contains("\x1b[J"), "{screen:?}");
    assert!(screen.contains("F\x1b[J[+] Building"), "{screen:?}");
    // A live count: a pull line whose bytes are not all there yet.
    let live = screen.lines().any(|l| {
        l.contains(" => => pull ")
            && l.rsplit_once(" / ")
                .is_some_and(|(done, total)| !done.ends_with(total.trim()))
    });
    assert!(live, "no live pull count in:\n{screen}");
    // The last `\r`-rewritten output line, shown under the running step.
    assert!(screen.contains(" => => # tick"), "{screen}");

    // The final summary: after the last redraw, every step once with its time, the
    // pushes, then the image digest.
    let last = screen
        .rfind("FINISHED")
        .unwrap_or_else(|| panic!("no summary in {screen}"));
    let head = screen[..last].rfind("[+] Building").unwrap();
    let summary: Vec<&str> = screen[head..].lines().map(str::trim_end).collect();
    assert!(summary[0].ends_with("(3/3) FINISHED"), "{summary:#?}");
    assert!(
        summary[1].starts_with(" => [1/2] FROM 127.0.0.1:5000/library/node:20-slim"),
        "{summary:#?}"
    );
    assert!(summary[1].ends_with('s'), "{summary:#?}");
    assert_eq!(
        summary[1].chars().count(),
        99,
        "right-aligned: {summary:#?}"
    );
    assert!(
        summary.iter().any(|l| l.starts_with(" => => pull ")),
        "{summary:#?}"
    );
    let run = summary
        .iter()
        .position(|l| l.starts_with(" => [2/2] RUN for i in"))
        .unwrap();
    let push = summary
        .iter()
        .position(|l| l.starts_with(" => pushing to the registry"))
        .unwrap();
    assert!(run < push, "{summary:#?}");
    assert!(
        summary[push + 1].starts_with(" => => push "),
        "{summary:#?}"
    );
    let digest = summary
        .iter()
        .find_map(|l| l.strip_prefix("image sha256:"))
        .unwrap_or_else(|| panic!("no image digest: {summary:#?}"));
    let pushed = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    ok(&pushed);
    let want = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(&pushed.stdout)
    );
    assert!(digest.starts_with(&want), "{digest} vs {want}");
    // No step listed twice, no running step's output left in the summary.
    let steps: Vec<&&str> = summary
        .iter()
        .filter(|l| l.starts_with(" => ") && !l.starts_with(" => => "))
        .collect();
    assert_eq!(steps.len(), 3, "{summary:#?}");
    assert!(
        !summary.iter().any(|l| l.contains(" => => # ")),
        "{summary:#?}"
    );
}
