//! The image configuration JSON, edited instruction by instruction.
//!
//! The config is kept as a JSON object so that every field of a base image's config survives,
//! including those that typed models lack (`OnBuild`, `Healthcheck.StartInterval`, vendor
//! extensions). Typed setters implement BuildKit's semantics for each instruction.

use serde_json::{Map, Value, json};

/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The `comment` BuildKit writes on the history entries of Dockerfile steps.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// A HEALTHCHECK as it is stored in the config (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`, in nanoseconds.
    pub interval: Option<u64>,
    /// `--timeout`, in nanoseconds.
    pub timeout: Option<u64>,
    /// `--start-period`, in nanoseconds.
    pub start_period: Option<u64>,
    /// `--start-interval`, in nanoseconds.
    pub start_interval: Option<u64>,
    /// `--retries`.
    pub retries: Option<u64>,
}

/// One history entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339 creation time.
    pub created: String,
    /// The instruction as BuildKit records it.
    pub created_by: String,
    /// True for steps that add no layer.
    pub empty_layer: bool,
}

/// An image configuration document.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    doc: Map<String, Value>,
}

/// The config bytes are not a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("image config is not a JSON object: {0}")]
pub struct ConfigParseError(String);

impl ImageConfig {
    /// The config of `FROM scratch` for a platform.
    pub fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let mut doc = Map::new();
        doc.insert("architecture".into(), json!(architecture));
        doc.insert("os".into(), json!(os));
        if let Some(v) = variant {
            doc.insert("variant".into(), json!(v));
        }
        // BuildKit's empty image (`emptyImage` in dockerfile2llb) has WorkingDir "/",
        // which its first dispatch normalises for the OS ("\\" on Windows), and the
        // default PATH except on Windows, where it is left to the OS.
        let windows = os == "windows";
        let workdir = if windows { "\\" } else { "/" };
        doc.insert("config".into(), json!({ "WorkingDir": workdir }));
        doc.insert("rootfs".into(), json!({"type": "layers", "diff_ids": []}));
        doc.insert("history".into(), json!([]));
        let mut c = Self { doc };
        if !windows {
            c.set_env("PATH", DEFAULT_PATH);
        }
        c
    }

    /// Parses a base image's config, keeping every field.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigParseError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(doc)) => {
                let mut c = Self { doc };
                if !c.doc.get("config").is_some_and(Value::is_object) {
                    c.doc.insert("config".into(), json!({}));
                }
                if c.env().iter().all(|(k, _)| k != "PATH") {
                    // BuildKit gives images without PATH the default one.
                    c.set_env("PATH", DEFAULT_PATH);
                }
                Ok(c)
            }
            Ok(_) => Err(ConfigParseError("not an object".into())),
            Err(e) => Err(ConfigParseError(e.to_string())),
        }
    }

    /// The serialised document.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(&self.doc).expect("a JSON map always serialises")
    }

    /// The whole document.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.doc
    }

    fn config(&self) -> Option<&Map<String, Value>> {
        self.doc.get("config").and_then(Value::as_object)
    }

    fn config_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self.doc.entry("config").or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        entry.as_object_mut().expect("just made an object")
    }

    fn string_list(&self, key: &str) -> Option<Vec<String>> {
        self.config()?.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
    }

    fn object_mut(&mut self, key: &str) -> &mut Map<String, Value> {
        let entry = self.config_mut().entry(key).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        entry.as_object_mut().expect("just made an object")
    }

    /// Sets the platform fields.
    pub fn set_platform(&mut self, os: &str, architecture: &str, variant: Option<&str>) {
        self.doc.insert("os".into(), json!(os));
        self.doc.insert("architecture".into(), json!(architecture));
        match variant {
            Some(v) => self.doc.insert("variant".into(), json!(v)),
            None => self.doc.remove("variant"),
        };
    }

    /// `Env` as ordered (key, value) pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        self.string_list("Env")
            .unwrap_or_default()
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv, String::new()),
            })
            .collect()
    }

    /// Sets one variable: replaced in place when present, appended otherwise.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.string_list("Env").unwrap_or_default();
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
        self.config_mut().insert("Env".into(), json!(env));
    }

    /// `Cmd`, if set.
    pub fn cmd(&self) -> Option<Vec<String>> {
        self.string_list("Cmd")
    }

    /// Sets `Cmd` (and `ArgsEscaped`, as BuildKit does for every CMD). An empty list clears it.
    pub fn set_cmd(&mut self, cmd: Vec<String>) {
        let c = self.config_mut();
        if cmd.is_empty() {
            c.remove("Cmd");
        } else {
            c.insert("Cmd".into(), json!(cmd));
        }
        c.insert("ArgsEscaped".into(), json!(true));
    }

    /// Removes `Cmd` (an ENTRYPOINT clears the inherited one).
    pub fn clear_cmd(&mut self) {
        self.config_mut().remove("Cmd");
    }

    /// `Entrypoint`, if set.
    pub fn entrypoint(&self) -> Option<Vec<String>> {
        self.string_list("Entrypoint")
    }

    /// Sets `Entrypoint`; an empty list clears it.
    pub fn set_entrypoint(&mut self, ep: Vec<String>) {
        let c = self.config_mut();
        if ep.is_empty() {
            c.remove("Entrypoint");
        } else {
            c.insert("Entrypoint".into(), json!(ep));
        }
    }

    /// `User`, if set and non-empty.
    pub fn user(&self) -> Option<String> {
        self.config()?
            .get("User")?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Sets `User` as written.
    pub fn set_user(&mut self, user: &str) {
        self.config_mut().insert("User".into(), json!(user));
    }

    /// `WorkingDir`, if set and non-empty.
    pub fn working_dir(&self) -> Option<String> {
        self.config()?
            .get("WorkingDir")?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Sets `WorkingDir`.
    pub fn set_working_dir(&mut self, dir: &str) {
        self.config_mut().insert("WorkingDir".into(), json!(dir));
    }

    /// `Shell`, if set.
    pub fn shell(&self) -> Option<Vec<String>> {
        self.string_list("Shell")
    }

    /// Sets `Shell`.
    pub fn set_shell(&mut self, shell: Vec<String>) {
        self.config_mut().insert("Shell".into(), json!(shell));
    }

    /// Adds `port/proto` to `ExposedPorts`.
    pub fn add_exposed_port(&mut self, port: &str) {
        self.object_mut("ExposedPorts")
            .insert(port.to_owned(), json!({}));
    }

    /// Adds a path to `Volumes`.
    pub fn add_volume(&mut self, path: &str) {
        self.object_mut("Volumes")
            .insert(path.to_owned(), json!({}));
    }

    /// Sets a label.
    pub fn set_label(&mut self, key: &str, value: &str) {
        self.object_mut("Labels")
            .insert(key.to_owned(), json!(value));
    }

    /// `Labels`, in document order.
    pub fn labels(&self) -> Vec<(String, String)> {
        self.config()
            .and_then(|c| c.get("Labels"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets `StopSignal`.
    pub fn set_stop_signal(&mut self, signal: &str) {
        self.config_mut().insert("StopSignal".into(), json!(signal));
    }

    /// Sets `Healthcheck`; options not given are omitted.
    pub fn set_healthcheck(&mut self, hc: &Healthcheck) {
        let mut m = Map::new();
        m.insert("Test".into(), json!(hc.test));
        for (k, v) in [
            ("Interval", hc.interval),
            ("Timeout", hc.timeout),
            ("StartPeriod", hc.start_period),
            ("StartInterval", hc.start_interval),
            ("Retries", hc.retries),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        self.config_mut()
            .insert("Healthcheck".into(), Value::Object(m));
    }

    /// `OnBuild` triggers.
    pub fn onbuild(&self) -> Vec<String> {
        self.string_list("OnBuild").unwrap_or_default()
    }

    /// Appends an `OnBuild` trigger.
    pub fn add_onbuild(&mut self, trigger: &str) {
        let mut list = self.onbuild();
        list.push(trigger.to_owned());
        self.config_mut().insert("OnBuild".into(), json!(list));
    }

    /// Clears `OnBuild` (after the triggers ran in a child).
    pub fn clear_onbuild(&mut self) {
        self.config_mut().remove("OnBuild");
    }

    /// Sets the top-level `author` (MAINTAINER).
    pub fn set_author(&mut self, author: &str) {
        self.doc.insert("author".into(), json!(author));
    }

    /// Sets `created` (RFC 3339).
    pub fn set_created(&mut self, created: &str) {
        self.doc.insert("created".into(), json!(created));
    }

    /// Sets (or with `None` removes) a top-level field of the document.
    pub(crate) fn set_field(&mut self, key: &str, value: Option<Value>) {
        match value {
            Some(v) => {
                self.doc.insert(key.to_owned(), v);
            }
            None => {
                self.doc.remove(key);
            }
        }
    }

    /// `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Vec<String> {
        self.doc
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces `rootfs.diff_ids` (the layers' diffIDs, bottom first).
    pub fn set_diff_ids(&mut self, diff_ids: &[String]) {
        self.doc.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
    }

    /// Appends a history entry with BuildKit's comment.
    pub fn push_history(&mut self, entry: &HistoryEntry) {
        let mut h = Map::new();
        if !entry.created.is_empty() {
            h.insert("created".into(), json!(entry.created));
        }
        h.insert("created_by".into(), json!(entry.created_by));
        h.insert("comment".into(), json!(HISTORY_COMMENT));
        if entry.empty_layer {
            h.insert("empty_layer".into(), json!(true));
        }
        let list = self.doc.entry("history").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut()
            .expect("just made an array")
            .push(Value::Object(h));
    }

    /// Gives history entries without a time (metadata steps) one, as BuildKit's exporter
    /// does: the time of the first new layer after them, else of the previous entry, so that
    /// an unchanged rebuild gives the same config. `fallback` serves when no entry has one.
    pub fn fill_history_times(&mut self, fallback: &str) {
        let Some(list) = self.doc.get_mut("history").and_then(Value::as_array_mut) else {
            return;
        };
        let time = |h: &Value| h.get("created").and_then(Value::as_str).map(str::to_owned);
        let mut created: Option<String> = None;
        let mut seen_missing = false;
        for h in list.iter() {
            match time(h) {
                Some(t) => {
                    created = Some(t);
                    if seen_missing {
                        break;
                    }
                }
                None => seen_missing = true,
            }
        }
        let mut created = created.unwrap_or_else(|| fallback.to_owned());
        let mut seen_missing = false;
        for h in list.iter_mut() {
            match time(h) {
                Some(t) => {
                    if seen_missing {
                        created = t;
                    }
                }
                None => {
                    seen_missing = true;
                    if let Some(o) = h.as_object_mut() {
                        o.insert("created".into(), json!(created));
                    }
                }
            }
        }
    }

    /// Number of history entries.
    pub fn history_len(&self) -> usize {
        self.doc
            .get("history")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

    /// The latest `created` among the history entries, if any.
    pub fn latest_history_created(&self) -> Option<String> {
        self.doc
            .get("history")?
            .as_array()?
            .iter()
            .filter_map(|h| h.get("created")?.as_str())
            .max()
            .map(str::to_owned)
    }
}

/// The PATH BuildKit gives Linux images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Formats seconds since the epoch as RFC 3339 UTC (`2015-10-21T07:28:00Z`).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = if nanos == 0 {
        String::new()
    } else {
        let s = format!(".{nanos:09}");
        s.trim_end_matches('0').to_owned()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_445_412_480, 0), "2015-10-21T07:28:00Z");
        assert_eq!(rfc3339(1_735_689_600, 0), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
    }

    #[test]
    fn env_is_replaced_in_place_and_unknown_fields_survive() {
        let base = br#"{"architecture":"amd64","os":"linux","x-vendor":{"a":1},
            "config":{"Env":["PATH=/bin","A=1","B=2"],"Cmd":["sh"],"OnBuild":["RUN x"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[]}"#;
        let mut c = ImageConfig::from_slice(base).unwrap();
        c.set_env("A", "3");
        c.set_env("E", "");
        assert_eq!(
            c.env(),
            [("PATH", "/bin"), ("A", "3"), ("B", "2"), ("E", "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let out: Value = serde_json::from_slice(&c.to_vec()).unwrap();
        assert_eq!(out["x-vendor"]["a"], 1);
        assert_eq!(out["config"]["OnBuild"][0], "RUN x");
    }

    #[test]
    fn healthcheck_omits_options_not_given() {
        let mut c = ImageConfig::scratch("linux", "amd64", None);
        c.set_healthcheck(&Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(300_000_000_000),
            timeout: Some(3_000_000_000),
            ..Healthcheck::default()
        });
        let out: Value = serde_json::from_slice(&c.to_vec()).unwrap();
        assert_eq!(
            out["config"]["Healthcheck"],
            json!({"Test":["CMD-SHELL","true"],"Interval":300000000000u64,"Timeout":3000000000u64})
        );
    }

    #[test]
    fn empty_cmd_clears_and_sets_args_escaped() {
        let mut c = ImageConfig::from_slice(br#"{"config":{"Cmd":["sh"]}}"#).unwrap();
        c.set_cmd(vec![]);
        assert_eq!(c.cmd(), None);
        assert_eq!(c.as_json()["config"]["ArgsEscaped"], true);
    }
}
