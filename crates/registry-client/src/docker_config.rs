//! Credentials from Docker's client configuration (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), looked up in the docker CLI's order: a `credHelpers` entry for
//! the registry, else the `credsStore` helper, else the `auths` entry of the file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::error::Error;
use crate::reference::DOCKER_HUB;

/// The key Docker Hub's credentials are stored under, in config files and helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// Other names Docker Hub's entry may be found under in `auths`.
const DOCKER_HUB_ALIASES: &[&str] = &["index.docker.io", "docker.io", "registry-1.docker.io"];
/// What a helper's username is when the secret is an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// No credentials: anonymous tokens only.
    Anonymous,
    /// A user name and password (or personal access token).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged for access tokens.
    IdentityToken {
        /// The user, when known.
        username: Option<String>,
        /// The refresh token.
        token: String,
    },
    /// A bearer token sent as-is (`registrytoken`).
    RegistryToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print secrets
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::IdentityToken { username, .. } => write!(f, "IdentityToken({username:?}, ***)"),
            Self::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

/// One `auths` entry.
#[derive(Clone, Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// Docker's client configuration, as far as credentials go.
#[derive(Debug, Default)]
pub struct DockerConfig {
    path: Option<PathBuf>,
    file: ConfigFile,
    helper_dirs: Option<Vec<PathBuf>>,
}

impl DockerConfig {
    /// No configuration: every registry is anonymous.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The configuration the docker CLI would use: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`. A missing file is an empty configuration; a file that
    /// does not parse is an error.
    pub fn from_env() -> Result<Self, Error> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => match std::env::var_os("HOME") {
                Some(h) => Path::new(&h).join(".docker"),
                None => return Ok(Self::empty()),
            },
        };
        Self::load_dir(&dir)
    }

    /// `DIR/config.json`; a missing file is an empty configuration.
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("config.json");
        match std::fs::read(&path) {
            Ok(bytes) => Self::from_slice(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Parse a config file's contents (`path` is for messages).
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| Error::DockerConfig {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: Some(path.to_owned()),
            file,
            helper_dirs: None,
        })
    }

    /// Look for `docker-credential-*` helpers in these directories instead of `$PATH`.
    #[must_use]
    pub fn with_helper_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.helper_dirs = Some(dirs);
        self
    }

    /// The file this configuration came from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The credential for `registry` (a host as in references: `docker.io`,
    /// `127.0.0.1:5000`). Runs a credential helper when the configuration names one; that
    /// blocks, so async callers run it on a blocking thread.
    pub fn credential_for(&self, registry: &str) -> Result<Credential, Error> {
        let server = if registry == DOCKER_HUB {
            DOCKER_HUB_SERVER
        } else {
            registry
        };
        let keys: Vec<&str> = if registry == DOCKER_HUB {
            std::iter::once(DOCKER_HUB_SERVER)
                .chain(DOCKER_HUB_ALIASES.iter().copied())
                .collect()
        } else {
            vec![registry]
        };
        // 1. a helper for this registry
        for key in &keys {
            if let Some(helper) = self.file.cred_helpers.get(*key) {
                return self.run_helper(helper, server);
            }
        }
        // 2. the default store: it answers for every registry (not found = anonymous)
        if let Some(store) = self.file.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return self.run_helper(store, server);
        }
        // 3. the file: exact key first, then any key whose host part matches
        let entry = keys
            .iter()
            .find_map(|k| self.file.auths.get(*k))
            .or_else(|| {
                self.file
                    .auths
                    .iter()
                    .find(|(k, _)| keys.contains(&host_of(k)))
                    .map(|(_, e)| e)
            });
        match entry {
            Some(e) => self.decode_entry(e, registry),
            None => Ok(Credential::Anonymous),
        }
    }

    fn decode_entry(&self, e: &AuthEntry, registry: &str) -> Result<Credential, Error> {
        let bad = |reason: String| Error::DockerConfig {
            path: self.path.clone().unwrap_or_default(),
            reason: format!("auths entry for {registry}: {reason}"),
        };
        let (mut username, mut password) = (e.username.clone(), e.password.clone());
        if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|err| bad(format!("\"auth\" is not base64: {err}")))?;
            let text =
                String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8".to_owned()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password".to_owned()))?;
            username = Some(u.to_owned());
            password = Some(p.to_owned());
        }
        if let Some(token) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Credential::IdentityToken {
                username,
                token: token.to_owned(),
            });
        }
        if let Some(token) = e.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Credential::RegistryToken(token.to_owned()));
        }
        match (username, password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Credential::Basic {
                username: u,
                password: p,
            }),
            _ => Ok(Credential::Anonymous),
        }
    }

    fn helper_program(&self, helper: &str) -> Result<PathBuf, String> {
        if helper.is_empty() || helper.contains('/') {
            return Err(format!("invalid helper name {helper:?}"));
        }
        let name = format!("docker-credential-{helper}");
        let dirs: Vec<PathBuf> = match &self.helper_dirs {
            Some(d) => d.clone(),
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        dirs.iter()
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} is not installed"))
    }

    /// `docker-credential-HELPER get` with the server on stdin; JSON
    /// `{"ServerURL","Username","Secret"}` on stdout.
    fn run_helper(&self, helper: &str, server: &str) -> Result<Credential, Error> {
        let fail = |reason: String| Error::CredentialHelper {
            helper: helper.to_owned(),
            server: server.to_owned(),
            reason,
        };
        let program = self.helper_program(helper).map_err(fail)?;
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", program.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // a helper that answers without reading its input closes the pipe early: its
            // answer still counts
            match stdin.write_all(server.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(fail(format!("writing to it: {e}")));
                }
                _ => {}
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for it: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // the helpers' protocol: this exact message means "no entry", not a failure
            if stdout.contains("credentials not found")
                || String::from_utf8_lossy(&out.stderr).contains("credentials not found")
            {
                return Ok(Credential::Anonymous);
            }
            let msg = String::from_utf8_lossy(&out.stderr);
            let msg = if msg.trim().is_empty() {
                stdout.trim().to_owned()
            } else {
                msg.trim().to_owned()
            };
            return Err(fail(format!("{}: {msg}", out.status)));
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct HelperAnswer {
            #[serde(default)]
            username: String,
            #[serde(default)]
            secret: String,
        }
        let a: HelperAnswer = serde_json::from_str(&stdout)
            .map_err(|e| fail(format!("its answer is not the expected JSON: {e}")))?;
        Ok(match (a.username.as_str(), a.secret.is_empty()) {
            (_, true) => Credential::Anonymous,
            (TOKEN_USERNAME, false) => Credential::IdentityToken {
                username: None,
                token: a.secret,
            },
            (_, false) => Credential::Basic {
                username: a.username,
                password: a.secret,
            },
        })
    }
}

/// The host part of an `auths` key (`https://host:5000/v1/` is `host:5000`), as the docker
/// CLI's `ConvertToHostname` does.
fn host_of(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> DockerConfig {
        DockerConfig::from_slice(json.as_bytes(), Path::new("/test/config.json")).unwrap()
    }

    #[test]
    fn auths_entries() {
        let c = cfg(r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
            "http://127.0.0.1:5000/v2/":{"username":"u","password":"p"},
            "tok.example":{"identitytoken":"refresh","auth":"bWU6"},
            "reg.example":{"registrytoken":"bearer"},
            "empty.example":{}
        }}"#);
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            Credential::Basic {
                username: "hub".into(),
                password: "secret".into()
            }
        );
        assert_eq!(
            c.credential_for("127.0.0.1:5000").unwrap(),
            Credential::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            c.credential_for("tok.example").unwrap(),
            Credential::IdentityToken {
                username: Some("me".into()),
                token: "refresh".into()
            }
        );
        assert_eq!(
            c.credential_for("reg.example").unwrap(),
            Credential::RegistryToken("bearer".into())
        );
        assert_eq!(
            c.credential_for("empty.example").unwrap(),
            Credential::Anonymous
        );
        assert_eq!(
            c.credential_for("other.example").unwrap(),
            Credential::Anonymous
        );
        assert!(format!("{:?}", c.credential_for("docker.io").unwrap()).contains("***"));
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(DockerConfig::from_slice(b"{", Path::new("/x")).is_err());
        let c = cfg(r#"{"auths":{"r.example":{"auth":"!!"}}}"#);
        let e = c.credential_for("r.example").unwrap_err().to_string();
        assert!(
            e.contains("/test/config.json") && e.contains("base64"),
            "{e}"
        );
        let c = cfg(r#"{"auths":{"r.example":{"auth":"bm9jb2xvbg=="}}}"#);
        assert!(c.credential_for("r.example").is_err());
    }

    #[test]
    fn helpers_in_the_cli_order() {
        let dir = tempfile::tempdir().unwrap();
        let helper = |name: &str, script: &str| {
            let p = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        // echoes the server it was asked about as the user name
        helper(
            "store",
            r#"read s; [ "$1" = get ] || exit 3; printf '{"ServerURL":"%s","Username":"%s","Secret":"pw"}' "$s" "$s""#,
        );
        helper(
            "tok",
            r#"read s; printf '{"ServerURL":"%s","Username":"<token>","Secret":"idt"}' "$s""#,
        );
        helper(
            "none",
            r#"echo "credentials not found in native keychain"; exit 1"#,
        );
        helper("broken", r#"echo "dbus is down" >&2; exit 1"#);
        let c = cfg(r#"{"credsStore":"store","credHelpers":{"tok.example":"tok","none.example":"none","broken.example":"broken","docker.io":"store"},
                     "auths":{"plain.example":{"auth":"dTpw"}}}"#)
        .with_helper_dirs(vec![dir.path().to_owned()]);
        // credHelpers first
        assert_eq!(
            c.credential_for("tok.example").unwrap(),
            Credential::IdentityToken {
                username: None,
                token: "idt".into()
            }
        );
        assert_eq!(
            c.credential_for("none.example").unwrap(),
            Credential::Anonymous
        );
        let e = c.credential_for("broken.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken") && e.contains("dbus is down"),
            "{e}"
        );
        // then credsStore, even when auths has an entry; Docker Hub is asked as its v1 URL
        assert_eq!(
            c.credential_for("plain.example").unwrap(),
            Credential::Basic {
                username: "plain.example".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            Credential::Basic {
                username: "https://index.docker.io/v1/".into(),
                password: "pw".into()
            }
        );
        // a helper that is not installed
        let c = cfg(r#"{"credsStore":"missing"}"#).with_helper_dirs(vec![dir.path().to_owned()]);
        assert!(
            c.credential_for("x.example")
                .unwrap_err()
                .to_string()
                .contains("not installed")
        );
    }

    #[test]
    fn docker_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            DockerConfig::load_dir(dir.path())
                .unwrap()
                .credential_for("r")
                .unwrap(),
            Credential::Anonymous
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"r":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::load_dir(dir.path()).unwrap();
        assert_eq!(
            c.credential_for("r").unwrap(),
            Credential::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(c.path().unwrap(), dir.path().join("config.json"));
    }
}
