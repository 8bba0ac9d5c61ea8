//! The fixture: a temporary context and cache per case, a build through the public API,
//! and inspection of the result with real tools (skopeo, umoci, tar, docker).

use std::cell::OnceCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use builder_core::{Build, BuildReport, CollectSink, Error, ProgressEvent};
use libtest_mimic::Failed;
use serde_json::Value;

/// A test's result.
pub(crate) type R = Result<(), Failed>;

/// The local registry of the test environment (scripts/testenv/up.sh).
pub(crate) const REGISTRY: &str = "127.0.0.1:5000";
/// The busybox image (a multi-arch index: amd64, arm64).
pub(crate) const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";
/// The Node image.
pub(crate) const NODE: &str = "127.0.0.1:5000/library/node:20-slim";
/// The name every case's OCI output is tagged with (so `oci:DIR:latest` finds it).
const TAG: &str = "127.0.0.1:5000/enginetests/result:latest";

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
    ($got:expr, $want:expr $(,)?) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(libtest_mimic::Failed::from(format!(
                "{}:\n  got:  {:?}\n  want: {:?}",
                stringify!($got),
                got,
                want
            )));
        }
    }};
    ($got:expr, $want:expr, $($msg:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(libtest_mimic::Failed::from(format!(
                "{}:\n  got:  {:?}\n  want: {:?}",
                format!($($msg)+),
                got,
                want
            )));
        }
    }};
}

/// Dockerfile text with `{BUSYBOX}`, `{NODE}` and `{REGISTRY}` replaced by the test images.
pub(crate) fn df(text: &str) -> String {
    text.replace("{BUSYBOX}", BUSYBOX)
        .replace("{NODE}", NODE)
        .replace("{REGISTRY}", REGISTRY)
}

/// The root of every case's files: on a disk (overlayfs uppers cannot live on overlayfs).
pub(crate) fn work_root() -> PathBuf {
    let p = PathBuf::from("/var/tmp/rbuild-engine-tests");
    fs::create_dir_all(&p).expect("create /var/tmp/rbuild-engine-tests");
    p
}

/// Runs a command, failing with its output unless it succeeds; returns stdout.
pub(crate) fn sh(cmd: &mut Command) -> Result<String, Failed> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A unique suffix for names shared with the outside (registry repositories, docker tags).
pub(crate) fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One case: a context directory, a cache directory, outputs.
pub(crate) struct Case {
    dir: Rc<tempfile::TempDir>,
    cache: PathBuf,
    builds: AtomicU32,
}

impl Case {
    /// A fresh context and a fresh cache.
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("case-")
            .tempdir_in(work_root())
            .expect("a temporary directory");
        fs::create_dir(dir.path().join("ctx")).expect("context dir");
        let cache = dir.path().join("cache");
        Self {
            dir: Rc::new(dir),
            cache,
            builds: AtomicU32::new(0),
        }
    }

    /// The case's directory (context, cache and outputs live below it).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The build context.
    pub(crate) fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// The cache directory.
    pub(crate) fn cache(&self) -> &Path {
        &self.cache
    }

    /// Writes a context file (parents created).
    pub(crate) fn file(&self, rel: &str, content: &str) -> &Self {
        self.file_bytes(rel, content.as_bytes())
    }

    /// Writes a context file with bytes.
    pub(crate) fn file_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(&p, content).expect("write context file");
        self
    }

    /// Sets a context file's mode.
    pub(crate) fn chmod(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.ctx().join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// Makes a context symlink.
    pub(crate) fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }

    /// Writes `Dockerfile` (placeholders replaced).
    pub(crate) fn dockerfile(&self, text: &str) -> &Self {
        self.file("Dockerfile", &df(text))
    }

    /// Writes the Dockerfile and builds it with the defaults.
    pub(crate) fn build(&self, text: &str) -> Result<Image, Error> {
        self.dockerfile(text);
        self.run(Ok)
    }

    /// Writes the Dockerfile and builds it with extra options.
    pub(crate) fn build_with(
        &self,
        text: &str,
        f: impl FnOnce(Build) -> Result<Build, Error>,
    ) -> Result<Image, Error> {
        self.dockerfile(text);
        self.run(f)
    }

    /// Builds the context as it is, to an OCI layout directory, with `f` applied to the
    /// builder (after the defaults: the case's cache, the layout output, the tag).
    pub(crate) fn run(
        &self,
        f: impl FnOnce(Build) -> Result<Build, Error>,
    ) -> Result<Image, Error> {
        self.run_output("", f)
    }

    /// Writes the Dockerfile and builds it with extra attributes of the OCI output
    /// (`rewrite-timestamp=true`).
    pub(crate) fn build_output(
        &self,
        text: &str,
        output_opts: &str,
        f: impl FnOnce(Build) -> Result<Build, Error>,
    ) -> Result<Image, Error> {
        self.dockerfile(text);
        self.run_output(output_opts, f)
    }

    /// [`Case::run`] with extra attributes of the OCI output (`,`-separated).
    pub(crate) fn run_output(
        &self,
        output_opts: &str,
        f: impl FnOnce(Build) -> Result<Build, Error>,
    ) -> Result<Image, Error> {
        let n = self.builds.fetch_add(1, Ordering::Relaxed);
        let layout = self.dir.path().join(format!("out-{n}"));
        let mut spec = format!("type=oci,dest={},tar=false", layout.display());
        if !output_opts.is_empty() {
            spec.push(',');
            spec.push_str(output_opts);
        }
        let b = Build::new(self.ctx())?
            .cache_dir(&self.cache)
            .output(spec.parse()?)
            .tag(TAG)?;
        let b = f(b)?;
        let (report, events) = run_build(b)?;
        Ok(Image {
            _case: self.dir.clone(),
            layout,
            report,
            events,
            root: self.dir.path().join(format!("bundle-{n}")),
            config: OnceCell::new(),
            manifest: OnceCell::new(),
            unpacked: OnceCell::new(),
        })
    }
}

/// Runs a build on its own runtime, collecting the events.
pub(crate) fn run_build(b: Build) -> Result<(BuildReport, Vec<ProgressEvent>), Error> {
    let rt = runtime();
    let mut sink = CollectSink::default();
    let r = rt.block_on(b.run(&mut sink))?;
    Ok((r, sink.events))
}

/// A runtime like the CLI's.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A built image in an OCI layout directory.
pub(crate) struct Image {
    /// Keeps the case's directory alive as long as the image is looked at.
    _case: Rc<tempfile::TempDir>,
    /// The layout directory.
    pub(crate) layout: PathBuf,
    /// What the engine reported.
    pub(crate) report: BuildReport,
    /// The progress events.
    pub(crate) events: Vec<ProgressEvent>,
    root: PathBuf,
    config: OnceCell<Value>,
    manifest: OnceCell<Value>,
    unpacked: OnceCell<PathBuf>,
}

impl Image {
    /// The image's manifest digest as the engine reported it (every case has an output).
    pub(crate) fn digest(&self) -> Result<String, Failed> {
        self.report
            .digest
            .clone()
            .ok_or_else(|| "the build had an output but reported no image digest".into())
    }

    fn oci_ref(&self) -> String {
        format!("oci:{}:latest", self.layout.display())
    }

    /// The image config, as `skopeo inspect --config --raw` reads it (without `--raw`
    /// skopeo re-encodes it through the OCI type and drops Docker's fields: Shell,
    /// Healthcheck, OnBuild...).
    pub(crate) fn config(&self) -> Result<&Value, Failed> {
        if let Some(c) = self.config.get() {
            return Ok(c);
        }
        let out =
            sh(Command::new("skopeo").args(["inspect", "--config", "--raw", &self.oci_ref()]))?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("config JSON: {e}"))?;
        Ok(self.config.get_or_init(|| v))
    }

    /// `config.config` (the runtime part).
    pub(crate) fn cfg(&self) -> Result<&Value, Failed> {
        Ok(&self.config()?["config"])
    }

    /// The manifest, as `skopeo inspect --raw` reads it.
    pub(crate) fn manifest(&self) -> Result<&Value, Failed> {
        if let Some(c) = self.manifest.get() {
            return Ok(c);
        }
        let out = sh(Command::new("skopeo").args(["inspect", "--raw", &self.oci_ref()]))?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("manifest JSON: {e}"))?;
        Ok(self.manifest.get_or_init(|| v))
    }

    /// `config.Env` as strings.
    pub(crate) fn env(&self) -> Result<Vec<String>, Failed> {
        Ok(strings(&self.cfg()?["Env"]))
    }

    /// The history entries.
    pub(crate) fn history(&self) -> Result<Vec<Value>, Failed> {
        Ok(self.config()?["history"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `created_by` of the history entries after the first `skip`.
    pub(crate) fn created_by(&self, skip: usize) -> Result<Vec<String>, Failed> {
        Ok(self
            .history()?
            .iter()
            .skip(skip)
            .map(|h| h["created_by"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// `rootfs.diff_ids`.
    pub(crate) fn diff_ids(&self) -> Result<Vec<String>, Failed> {
        Ok(strings(&self.config()?["rootfs"]["diff_ids"]))
    }

    /// The root filesystem, unpacked by `umoci unpack`.
    pub(crate) fn rootfs(&self) -> Result<&Path, Failed> {
        if let Some(p) = self.unpacked.get() {
            return Ok(p);
        }
        sh(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", self.layout.display()))
            .arg(&self.root))?;
        Ok(self.unpacked.get_or_init(|| self.root.join("rootfs")))
    }

    /// A file of the unpacked image, as text.
    pub(crate) fn read(&self, path: &str) -> Result<String, Failed> {
        let p = self.rootfs()?.join(path.trim_start_matches('/'));
        fs::read_to_string(&p).map_err(|e| format!("reading {path} in the image: {e}").into())
    }

    /// Whether a path exists in the unpacked image (without following a final symlink).
    pub(crate) fn exists(&self, path: &str) -> Result<bool, Failed> {
        Ok(self
            .rootfs()?
            .join(path.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok())
    }

    /// `lstat` of a path of the unpacked image.
    pub(crate) fn stat(&self, path: &str) -> Result<fs::Metadata, Failed> {
        let p = self.rootfs()?.join(path.trim_start_matches('/'));
        p.symlink_metadata()
            .map_err(|e| format!("{path} in the image: {e}").into())
    }

    /// The sorted entry names of a directory of the unpacked image.
    pub(crate) fn ls(&self, path: &str) -> Result<Vec<String>, Failed> {
        let p = self.rootfs()?.join(path.trim_start_matches('/'));
        let mut v: Vec<String> = fs::read_dir(&p)
            .map_err(|e| format!("listing {path} in the image: {e}"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        v.sort();
        Ok(v)
    }

    /// The manifest's layer descriptors.
    pub(crate) fn layers(&self) -> Result<Vec<Value>, Failed> {
        Ok(self.manifest()?["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The blob file of layer `i` (negative: from the end) in the layout.
    fn layer_blob(&self, i: isize) -> Result<PathBuf, Failed> {
        let layers = self.layers()?;
        let idx = if i < 0 { layers.len() as isize + i } else { i };
        let l = layers
            .get(usize::try_from(idx).map_err(|_| "no such layer")?)
            .ok_or_else(|| format!("no layer {i} among {}", layers.len()))?;
        let digest = l["digest"].as_str().unwrap_or_default();
        Ok(self
            .layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")))
    }

    /// The entries of layer `i` (negative: from the end), as `tar -tv` lists them.
    pub(crate) fn layer_listing(&self, i: isize) -> Result<Vec<String>, Failed> {
        let blob = self.layer_blob(i)?;
        let out = sh(Command::new("tar").arg("-tvf").arg(&blob))?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The entry names of layer `i` (negative: from the end), without a trailing slash.
    pub(crate) fn layer_names(&self, i: isize) -> Result<Vec<String>, Failed> {
        let blob = self.layer_blob(i)?;
        let out = sh(Command::new("tar").arg("-tf").arg(&blob))?;
        Ok(out
            .lines()
            .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
            .filter(|l| !l.is_empty() && l != ".")
            .collect())
    }

    /// The log output of every RUN step, concatenated.
    pub(crate) fn logs(&self) -> String {
        let mut s = String::new();
        for e in &self.events {
            if let ProgressEvent::StepLog { data, .. } = e {
                s.push_str(&String::from_utf8_lossy(data));
            }
        }
        s
    }
}

/// A JSON array of strings (anything else: empty).
pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The sorted keys of a JSON object (anything else: empty).
pub(crate) fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Fails unless the build failed with an error whose text contains `needle`.
pub(crate) fn expect_err<T>(res: Result<T, Error>, needle: &str) -> Result<Error, Failed> {
    match res {
        Ok(_) => {
            Err(format!("the build succeeded; expected an error containing {needle:?}").into())
        }
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains(needle),
                "error {text:?} does not contain {needle:?} ({e:?})"
            );
            Ok(e)
        }
    }
}

/// Unwraps a build result, showing a failed step's output.
pub(crate) fn ok<T>(res: Result<T, Error>) -> Result<T, Failed> {
    res.map_err(|e| {
        let mut s = format!("build failed: {e}");
        if let Error::Step { output_tail, .. } = &e {
            for l in output_tail {
                s.push_str("\n  > ");
                s.push_str(l);
            }
        }
        Failed::from(s)
    })
}

/// The base image's config for the host platform (cached).
pub(crate) fn busybox_config() -> Result<&'static Value, Failed> {
    static CFG: OnceLock<Value> = OnceLock::new();
    if let Some(c) = CFG.get() {
        return Ok(c);
    }
    let out = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        "--raw",
        &format!("docker://{BUSYBOX}"),
    ]))?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(CFG.get_or_init(|| v))
}

/// The number of history entries of busybox's config.
pub(crate) fn busybox_history_len() -> Result<usize, Failed> {
    Ok(busybox_config()?["history"].as_array().map_or(0, Vec::len))
}

/// Whether the docker daemon the rules allow is reachable.
pub(crate) fn docker_available() -> bool {
    Command::new("/usr/bin/docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
