//! Git contexts: the URL grammar BuildKit accepts, the `GIT_AUTH_*` secrets, and the
//! checkout (through the `git` program).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use base64::Engine as _;

use super::context_error;
use crate::{Error, SecretSource};

/// A git repository as a build context or an `ADD` source: the remote, and the ref,
/// subdirectory and checksum from the fragment (`#ref:subdir`) or the query
/// (`?ref=…&subdir=…&checksum=…&keep-git-dir=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    original: String,
    remote: String,
    host: String,
    git_ref: Option<String>,
    subdir: Option<String>,
    checksum: Option<String>,
    keep_git_dir: Option<bool>,
    submodules: bool,
}

impl GitUrl {
    /// The remote as git fetches it (without fragment and query).
    pub fn remote(&self) -> &str {
        &self.remote
    }
    /// The ref (branch, tag, `refs/…` or commit), `None` for the remote's HEAD.
    pub fn git_ref(&self) -> Option<&str> {
        self.git_ref.as_deref()
    }
    /// The subdirectory that is the context, cleaned (no `..`, no leading `/`).
    pub fn subdir(&self) -> Option<&str> {
        self.subdir.as_deref()
    }
    /// The commit the checkout must be (a prefix of its hash), from `checksum=`.
    pub fn checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }
    /// `keep-git-dir=` from the query, when given.
    pub fn keep_git_dir(&self) -> Option<bool> {
        self.keep_git_dir
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A commit hash (abbreviated or not) rather than a ref name.
fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && is_hex(s) && s.bytes().all(|b| !b.is_ascii_uppercase())
}

/// `path.Join("/", p)` without the leading `/`: `..` cannot climb above the root.
fn clean_subdir(p: &str) -> Option<String> {
    let clean = dockerfile::filepath_clean(&format!("/{p}"));
    let rel = clean.trim_start_matches('/');
    (!rel.is_empty()).then(|| rel.to_owned())
}

fn bool_value(url: &str, key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(context_error(url, format!("invalid {key} value {v:?}"))),
    }
}

impl FromStr for GitUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<GitUrl, Error> {
        let full = if s.starts_with("github.com/") {
            format!("https://{s}")
        } else {
            s.to_owned()
        };
        let (base, fragment) = match full.split_once('#') {
            Some((b, f)) => (b.to_owned(), Some(f.to_owned())),
            None => (full.clone(), None),
        };
        let mut out = GitUrl {
            original: s.to_owned(),
            remote: base.clone(),
            host: String::new(),
            git_ref: None,
            subdir: None,
            checksum: None,
            keep_git_dir: None,
            submodules: true,
        };
        let mut query = Vec::new();
        if base.contains("://") {
            let mut u = url::Url::parse(&base)
                .map_err(|e| context_error(s, format!("invalid git URL: {e}")))?;
            match u.scheme() {
                "http" | "https" | "git" | "ssh" => {}
                other => return Err(context_error(s, format!("unsupported protocol {other:?}"))),
            }
            out.host = u.host_str().unwrap_or_default().to_owned();
            if let Some(port) = u.port() {
                out.host = format!("{}:{port}", out.host);
            }
            query = u
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.set_query(None);
            out.remote = u.to_string();
        } else if let Some((user_host, _)) = base.split_once(':') {
            out.host = user_host
                .split_once('@')
                .map_or(user_host, |(_, h)| h)
                .to_owned();
        }
        if out.host.is_empty() {
            return Err(context_error(s, "the git URL names no host"));
        }
        if fragment.is_some() && !query.is_empty() {
            return Err(context_error(
                s,
                "a git URL takes its options from the fragment (#ref:subdir) or the query, not both",
            ));
        }
        if let Some(f) = fragment {
            let (r, sub) = f.split_once(':').unwrap_or((&f, ""));
            out.git_ref = (!r.is_empty()).then(|| r.to_owned());
            out.subdir = clean_subdir(sub);
        }
        for (k, v) in query {
            match k.as_str() {
                "ref" => out.git_ref = Some(v),
                "tag" => out.git_ref = Some(format!("refs/tags/{v}")),
                "branch" => out.git_ref = Some(format!("refs/heads/{v}")),
                "checksum" | "commit" => out.checksum = Some(v),
                "subdir" => out.subdir = clean_subdir(&v),
                "keep-git-dir" => out.keep_git_dir = Some(bool_value(s, &k, &v)?),
                "submodules" => out.submodules = bool_value(s, &k, &v)?,
                other => {
                    return Err(context_error(
                        s,
                        format!(
                            "unknown git URL query key {other:?} (ref, tag, branch, checksum, \
                             commit, subdir, keep-git-dir, submodules are known)"
                        ),
                    ));
                }
            }
        }
        if let Some(r) = &out.git_ref {
            // BuildKit's validateGitRef: a ref must never be taken for an option.
            if r.starts_with('-') {
                return Err(context_error(s, format!("invalid git ref {r:?}")));
            }
        }
        if let Some(c) = &out.checksum {
            if !is_commit(c) {
                return Err(context_error(
                    s,
                    format!("invalid checksum {c:?}: expected a commit hash"),
                ));
            }
        }
        Ok(out)
    }
}

/// The credentials for git over HTTP(S), from the secrets BuildKit reads for them:
/// `GIT_AUTH_HEADER.<host>`, `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`, `GIT_AUTH_TOKEN`,
/// the first one given winning. A token is sent as `Authorization: basic
/// base64(x-access-token:TOKEN)`; a header secret is the header's whole value.
#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    secrets: BTreeMap<String, String>,
}

impl GitAuth {
    /// No credentials.
    pub fn none() -> GitAuth {
        GitAuth::default()
    }

    /// A token for every host (the `GIT_AUTH_TOKEN` secret).
    pub fn token(token: &str) -> GitAuth {
        let mut a = GitAuth::default();
        a.secrets.insert("GIT_AUTH_TOKEN".into(), token.to_owned());
        a
    }

    /// The `GIT_AUTH_*` secrets among a build's secrets (read now: a file, or an
    /// environment variable of this process).
    pub fn from_secrets<'a>(
        secrets: impl IntoIterator<Item = (&'a str, &'a SecretSource)>,
    ) -> Result<GitAuth, Error> {
        let mut a = GitAuth::default();
        for (id, src) in secrets {
            if !(id.starts_with("GIT_AUTH_TOKEN") || id.starts_with("GIT_AUTH_HEADER")) {
                continue;
            }
            let value = match src {
                SecretSource::File(p) => std::fs::read_to_string(p).map_err(|e| {
                    crate::engine::invalid_option("secret", id, format!("{}: {e}", p.display()))
                })?,
                SecretSource::Env(v) => std::env::var(v).map_err(|_| {
                    crate::engine::invalid_option(
                        "secret",
                        id,
                        format!("environment variable {v} is not set"),
                    )
                })?,
            };
            a.secrets.insert(id.to_owned(), value);
        }
        Ok(a)
    }

    /// The `Authorization` header value for `host`.
    fn header_for(&self, host: &str) -> Option<String> {
        let names = [
            (format!("GIT_AUTH_HEADER.{host}"), false),
            (format!("GIT_AUTH_TOKEN.{host}"), true),
            ("GIT_AUTH_HEADER".to_owned(), false),
            ("GIT_AUTH_TOKEN".to_owned(), true),
        ];
        names.iter().find_map(|(n, token)| {
            self.secrets.get(n).map(|v| {
                if *token {
                    let b = base64::engine::general_purpose::STANDARD
                        .encode(format!("x-access-token:{v}"));
                    format!("basic {b}")
                } else {
                    v.clone()
                }
            })
        })
    }
}

/// The URL with any password replaced, for messages.
pub(crate) fn redact(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => s.to_owned(),
    }
}

/// The scope of the auth header (BuildKit's tokenScope: every github.com remote, else
/// this remote only).
fn token_scope(remote: &str) -> &str {
    for pfx in ["https://github.com/", "https://www.github.com/"] {
        if remote.starts_with(pfx) {
            return pfx;
        }
    }
    remote
}

struct Git<'a> {
    url: &'a GitUrl,
    dir: &'a Path,
    header: Option<String>,
}

impl Git<'_> {
    /// Runs git in the checkout with a clean configuration (no system or global config,
    /// no prompt); the auth header goes through the environment, not the command line.
    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(self.dir).args(args);
        for v in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CONFIG",
            "GIT_CONFIG_PARAMETERS",
            "GIT_NAMESPACE",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("LC_ALL", "C");
        let mut n = 0;
        let mut config = |k: &str, v: &str| {
            cmd.env(format!("GIT_CONFIG_KEY_{n}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{n}"), v);
            n += 1;
        };
        // Only the network protocols: no file:// or ext:: remotes (nor in submodules).
        config("protocol.allow", "never");
        for p in ["https", "http", "git", "ssh"] {
            config(&format!("protocol.{p}.allow"), "always");
        }
        if let Some(h) = &self.header {
            config(
                &format!("http.{}.extraheader", token_scope(&self.url.remote)),
                &format!("Authorization: {h}"),
            );
        }
        cmd.env("GIT_CONFIG_COUNT", n.to_string());
        let out = cmd.output().map_err(|e| {
            context_error(
                &self.url.original,
                format!("cannot run git (needed for git contexts): {e}"),
            )
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(context_error(
                &self.url.original,
                format!("git {}: {}", args[0], redact(tail.join("; ").trim())),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Checks the repository out in `dir/checkout`; returns the context directory (the
/// subdirectory, if any) and the commit.
pub(super) fn fetch(
    url: &GitUrl,
    auth: &GitAuth,
    keep_git_dir: bool,
    dir: &Path,
) -> Result<(PathBuf, String), Error> {
    let keep_git_dir = url.keep_git_dir.unwrap_or(keep_git_dir);
    let checkout = dir.join("checkout");
    std::fs::create_dir(&checkout).map_err(|e| Error::Export {
        path: checkout.clone(),
        source: e.into(),
    })?;
    let git = Git {
        url,
        dir: &checkout,
        header: auth.header_for(&url.host),
    };
    git.run(&["-c", "init.defaultBranch=master", "init", "-q"])?;
    git.run(&["remote", "add", "origin", "--", &url.remote])?;
    let want = url.git_ref.as_deref().unwrap_or("HEAD");
    let shallow = git.run(&[
        "fetch",
        "-q",
        "--depth=1",
        "--no-tags",
        "--recurse-submodules=no",
        "--",
        "origin",
        want,
    ]);
    let target = match shallow {
        Ok(_) => "FETCH_HEAD".to_owned(),
        // A commit the server does not let us ask for by hash: fetch the branches and
        // tags, then look it up.
        Err(_) if is_commit(want) => {
            git.run(&[
                "fetch",
                "-q",
                "--no-tags",
                "--recurse-submodules=no",
                "--",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])?;
            git.run(&[
                "rev-parse",
                "--verify",
                "--end-of-options",
                &format!("{want}^{{commit}}"),
            ])?
        }
        Err(e) => return Err(e),
    };
    git.run(&["checkout", "-q", "--detach", &target, "--"])?;
    let commit = git.run(&["rev-parse", "HEAD"])?;
    if let Some(c) = &url.checksum {
        if !commit.starts_with(c.as_str()) {
            return Err(context_error(
                &url.original,
                format!("expected checksum to match {c}, got {commit}"),
            ));
        }
    }
    if url.submodules && checkout.join(".gitmodules").is_file() {
        git.run(&["submodule", "update", "--init", "--recursive", "--depth=1"])?;
    }
    if keep_git_dir {
        git.run(&["remote", "set-url", "origin", "--", &redact(&url.remote)])?;
        let _ = std::fs::remove_file(checkout.join(".git/FETCH_HEAD"));
    } else {
        std::fs::remove_dir_all(checkout.join(".git")).map_err(|e| Error::Export {
            path: checkout.join(".git"),
            source: e.into(),
        })?;
    }
    let mut root = checkout;
    if let Some(sub) = &url.subdir {
        // Every component a real directory: a symlink could lead out of the checkout.
        for c in sub.split('/') {
            root.push(c);
            match std::fs::symlink_metadata(&root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(context_error(
                        &url.original,
                        format!("invalid subdir {sub}: {c} is not a directory"),
                    ));
                }
                Err(e) => {
                    return Err(context_error(
                        &url.original,
                        format!("failed to open subdir {sub}: {e}"),
                    ));
                }
            }
        }
    }
    Ok((root, commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let g: GitUrl = "https://h.example/o/r.git#v1:a/../../b".parse().unwrap();
        assert_eq!(g.remote(), "https://h.example/o/r.git");
        assert_eq!((g.git_ref(), g.subdir()), (Some("v1"), Some("b")));
        let g: GitUrl = "https://h.example:8080/r.git?ref=main&subdir=/x/&checksum=abcdef1"
            .parse()
            .unwrap();
        assert_eq!(g.host, "h.example:8080");
        assert_eq!(g.remote(), "https://h.example:8080/r.git");
        assert_eq!((g.git_ref(), g.subdir()), (Some("main"), Some("x")));
        assert_eq!(g.checksum(), Some("abcdef1"));
        let g: GitUrl = "git@h.example:o/r.git#dev".parse().unwrap();
        assert_eq!(
            (g.remote(), g.host.as_str()),
            ("git@h.example:o/r.git", "h.example")
        );
        let g: GitUrl = "github.com/o/r".parse().unwrap();
        assert_eq!(g.remote(), "https://github.com/o/r");
        for bad in [
            "https://h/r.git#-uevil",
            "https://h/r.git?ref=--upload-pack=x",
            "https://h/r.git?ref=a#b",
            "https://h/r.git?colour=red",
            "https://h/r.git?checksum=zz",
            "https://h/r.git?keep-git-dir=maybe",
        ] {
            assert!(bad.parse::<GitUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_headers() {
        let mut a = GitAuth::token("t0k");
        assert_eq!(
            a.header_for("h").unwrap(),
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode("x-access-token:t0k")
            )
        );
        a.secrets
            .insert("GIT_AUTH_HEADER.h".into(), "bearer xyz".into());
        assert_eq!(a.header_for("h").unwrap(), "bearer xyz");
        assert!(GitAuth::none().header_for("h").is_none());
        assert_eq!(redact("https://u:pw@h/r.git"), "https://u:xxxxx@h/r.git");
    }
}
