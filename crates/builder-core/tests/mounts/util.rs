//! The fixture: a temporary context and cache per case, builds through the public API (in
//! this process, or in a child process for cross-process cases), and what they wrote.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use builder_core::{Build, BuildReport, CollectSink, Error, ProgressEvent, SecretSource};
use libtest_mimic::Failed;
use serde_json::{Value, json};

/// A test's result.
pub type R = Result<(), Failed>;

/// The busybox image of the local registry (a multi-arch index).
pub const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";
/// The Node image of the local registry.
pub const NODE: &str = "127.0.0.1:5000/library/node:20-slim";
/// The name of every case's OCI output.
const TAG: &str = "127.0.0.1:5000/mountstests/result:latest";
/// The variable that makes the test binary run one build as a child process.
pub const CHILD_ENV: &str = "RBUILD_MOUNTS_TEST_CHILD";

/// Fails the test with a message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(libtest_mimic::Failed::from(format!($($msg)+)));
        }
    };
}

/// Fails the test unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($got:expr, $want:expr $(,)?) => {
        match (&$got, &$want) {
            (got, want) => {
                if got != want {
                    return Err(libtest_mimic::Failed::from(format!(
                        "{}:\n  got:  {:?}\n  want: {:?}",
                        stringify!($got),
                        got,
                        want
                    )));
                }
            }
        }
    };
}

/// Dockerfile text with `{BUSYBOX}` and `{NODE}` replaced.
pub fn df(text: &str) -> String {
    text.replace("{BUSYBOX}", BUSYBOX).replace("{NODE}", NODE)
}

/// Where cases live: on a disk (overlayfs uppers cannot live on overlayfs or tmpfs).
fn work_root() -> PathBuf {
    let p = PathBuf::from("/var/tmp/rbuild-mounts-tests");
    fs::create_dir_all(&p).expect("create /var/tmp/rbuild-mounts-tests");
    p
}

/// One case: a context directory, a cache directory, outputs.
pub struct Case {
    dir: tempfile::TempDir,
    cache: PathBuf,
    builds: AtomicU32,
}

/// What a build wrote.
pub struct Built {
    /// The final filesystem (`type=local`).
    pub root: PathBuf,
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// What the engine reported.
    pub report: BuildReport,
    /// The progress events.
    pub events: Vec<ProgressEvent>,
}

impl Case {
    /// A fresh context and cache.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("case-")
            .tempdir_in(work_root())
            .expect("a temporary directory");
        fs::create_dir(dir.path().join("ctx")).expect("context dir");
        let cache = dir.path().join("cache");
        Self {
            dir,
            cache,
            builds: AtomicU32::new(0),
        }
    }

    /// The case's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The build context.
    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// The cache directory.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// Writes a context file (parents created).
    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(&p, content).expect("write context file");
        self
    }

    /// Makes a context symlink.
    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }

    /// Writes the Dockerfile and builds it.
    pub fn build(&self, text: &str) -> Result<Built, Error> {
        self.build_with(text, Ok)
    }

    /// Writes the Dockerfile and builds it with extra options.
    pub fn build_with(
        &self,
        text: &str,
        f: impl FnOnce(Build) -> Result<Build, Error>,
    ) -> Result<Built, Error> {
        self.file("Dockerfile", &df(text));
        let n = self.builds.fetch_add(1, Ordering::Relaxed);
        let layout = self.dir.path().join(format!("oci-{n}"));
        let root = self.dir.path().join(format!("root-{n}"));
        let b = Build::new(self.ctx())?
            .cache_dir(&self.cache)
            .output(format!("type=oci,dest={},tar=false", layout.display()).parse()?)
            .output(format!("type=local,dest={}", root.display()).parse()?)
            .tag(TAG)?;
        let (report, events) = run_build(f(b)?)?;
        // Every check of the final filesystem needs it: no output is a fixture failure.
        assert!(root.is_dir(), "the build wrote no type=local output");
        Ok(Built {
            root,
            layout,
            report,
            events,
        })
    }
}

/// Runs a build on its own runtime, collecting the events.
pub fn run_build(b: Build) -> Result<(BuildReport, Vec<ProgressEvent>), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut sink = CollectSink::default();
    let r = rt.block_on(b.run(&mut sink))?;
    Ok((r, sink.events))
}

impl Built {
    /// A file of the final filesystem, as text.
    pub fn read(&self, path: &str) -> Result<String, Failed> {
        let p = self.root.join(path.trim_start_matches('/'));
        fs::read_to_string(&p).map_err(|e| format!("reading {path} in the image: {e}").into())
    }

    /// Whether a path exists in the final filesystem (not following a final symlink).
    pub fn exists(&self, path: &str) -> bool {
        self.root
            .join(path.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }

    /// The image manifest of the layout.
    pub fn manifest(&self) -> Result<Value, Failed> {
        let index: Value = read_json(&self.layout.join("index.json"))?;
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .ok_or("index.json has no manifest")?;
        read_json(&self.blob(digest))
    }

    /// The path of a blob of the layout.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The entry names of every layer built on top of the base's `base_layers` layers.
    pub fn new_layer_entries(&self, base_layers: usize) -> Result<Vec<String>, Failed> {
        let m = self.manifest()?;
        let layers = m["layers"].as_array().cloned().unwrap_or_default();
        let mut names = Vec::new();
        for l in layers.iter().skip(base_layers) {
            let digest = l["digest"].as_str().unwrap_or_default();
            let f = fs::File::open(self.blob(digest)).map_err(|e| e.to_string())?;
            let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
            for e in a.entries().map_err(|e| e.to_string())? {
                let e = e.map_err(|e| e.to_string())?;
                names.push(
                    e.path()
                        .map_err(|e| e.to_string())?
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(names)
    }

    /// The duration of the step whose name contains `needle` (the first one).
    pub fn step_time(&self, needle: &str) -> Option<std::time::Duration> {
        let id = self.events.iter().find_map(|e| match e {
            ProgressEvent::StepStarted { id, name, .. } if name.contains(needle) => Some(*id),
            _ => None,
        })?;
        self.events.iter().find_map(|e| match e {
            ProgressEvent::StepDone { id: i, elapsed } if *i == id => Some(*elapsed),
            _ => None,
        })
    }

    /// Whether the step whose name contains `needle` came from the cache.
    pub fn cached(&self, needle: &str) -> bool {
        let Some(id) = self.events.iter().find_map(|e| match e {
            ProgressEvent::StepStarted { id, name, .. } if name.contains(needle) => Some(*id),
            _ => None,
        }) else {
            return false;
        };
        self.events
            .iter()
            .any(|e| matches!(e, ProgressEvent::StepCached { id: i } if *i == id))
    }
}

/// Reads a JSON file.
pub fn read_json(p: &Path) -> Result<Value, Failed> {
    let bytes = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()).into())
}

/// The build must succeed.
pub fn ok(r: Result<Built, Error>) -> Result<Built, Failed> {
    r.map_err(|e| Failed::from(format!("the build failed: {e}{}", tail(&e))))
}

fn tail(e: &Error) -> String {
    match e {
        Error::Step { output_tail, .. } if !output_tail.is_empty() => {
            format!("\n  output:\n    {}", output_tail.join("\n    "))
        }
        _ => String::new(),
    }
}

/// The build must fail with an error containing `want`.
pub fn expect_err(r: Result<Built, Error>, want: &str) -> R {
    match r {
        Ok(_) => Err(format!("the build succeeded; expected an error with {want:?}").into()),
        Err(e) => {
            let msg = format!("{e}{}", tail(&e));
            ensure!(msg.contains(want), "error {msg:?} lacks {want:?}");
            Ok(())
        }
    }
}

/// Every file below `dir` whose bytes, or gunzipped bytes, contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Result<Vec<String>, Failed> {
    let mut hits = Vec::new();
    for entry in walkdir(dir)? {
        let meta = fs::symlink_metadata(&entry).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            continue;
        }
        let bytes = fs::read(&entry).map_err(|e| format!("{}: {e}", entry.display()))?;
        if contains(&bytes, needle) {
            hits.push(entry.display().to_string());
            continue;
        }
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            if flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .is_ok()
                && contains(&plain, needle)
            {
                hits.push(format!("{} (gunzipped)", entry.display()));
            }
        }
        if contains_tar_member(&bytes, needle) {
            hits.push(format!("{} (a member of the tar)", entry.display()));
        }
    }
    Ok(hits)
}

/// A tar file one of whose members, gunzipped when compressed, contains `needle`.
fn contains_tar_member(bytes: &[u8], needle: &[u8]) -> bool {
    if bytes.len() < 512 || &bytes[257..262] != b"ustar" {
        return false;
    }
    let mut a = tar::Archive::new(bytes);
    let Ok(entries) = a.entries() else {
        return false;
    };
    for e in entries.flatten() {
        let mut data = Vec::new();
        let mut e = e;
        if e.read_to_end(&mut data).is_err() {
            continue;
        }
        if contains(&data, needle) {
            return true;
        }
        if data.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            if flate2::read::MultiGzDecoder::new(&data[..])
                .read_to_end(&mut plain)
                .is_ok()
                && contains(&plain, needle)
            {
                return true;
            }
        }
    }
    false
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every path below `dir` (not following symlinks), sorted.
pub fn walkdir(dir: &Path) -> Result<Vec<PathBuf>, Failed> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// A listing of a tree: relative path, type, mode and content digest of every entry.
pub fn tree_listing(dir: &Path) -> Result<Vec<String>, Failed> {
    use sha2::Digest as _;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for p in walkdir(dir)? {
        let m = fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
        let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        let what = if m.is_file() {
            hex::encode(sha2::Sha256::digest(
                fs::read(&p).map_err(|e| e.to_string())?,
            ))
        } else if m.file_type().is_symlink() {
            fs::read_link(&p)
                .map_err(|e| e.to_string())?
                .display()
                .to_string()
        } else {
            "dir".into()
        };
        out.push(format!(
            "{rel} {:o} {} {what}",
            m.mode(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000
        ));
    }
    Ok(out)
}

/// What a child build needs (see [`child_main`]).
pub struct ChildBuild<'a> {
    pub ctx: &'a Path,
    pub cache: &'a Path,
    pub build_args: Vec<(&'a str, &'a str)>,
    pub env_secrets: Vec<(&'a str, &'a str)>,
    pub extra_env: Vec<(&'a str, &'a str)>,
}

impl ChildBuild<'_> {
    /// Starts the build in a child process (this test binary in child mode).
    pub fn spawn(&self) -> std::process::Child {
        let spec = json!({
            "ctx": self.ctx,
            "cache": self.cache,
            "build_args": self.build_args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "env_secrets": self.env_secrets.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        });
        let mut c = Command::new(std::env::current_exe().expect("the test binary"));
        c.env(CHILD_ENV, spec.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c.spawn().expect("start a child build")
    }
}

/// Waits for a child build; fails with its output unless it succeeded.
pub fn wait_child(c: std::process::Child) -> R {
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "child build: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Child mode: runs the build described by `spec` and exits 0 on success.
pub fn child_main(spec: &str) -> i32 {
    let v: Value = match serde_json::from_str(spec) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bad child spec: {e}");
            return 2;
        }
    };
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let build = || -> Result<Build, Error> {
        let mut b = Build::new(s(&v["ctx"]))?.cache_dir(s(&v["cache"]));
        for kv in v["build_args"].as_array().into_iter().flatten() {
            b = b.build_arg(&s(&kv[0]), &s(&kv[1]))?;
        }
        for kv in v["env_secrets"].as_array().into_iter().flatten() {
            b = b.secret(&s(&kv[0]), SecretSource::Env(s(&kv[1])))?;
        }
        Ok(b)
    };
    match build().and_then(|b| run_build(b).map(|_| ())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}{}", tail(&e));
            1
        }
    }
}
