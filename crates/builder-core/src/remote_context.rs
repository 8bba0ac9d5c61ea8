//! Build contexts that are not a local directory, as `docker buildx build` takes them: a
//! git repository (`https://host/repo.git#ref:subdir`, `git@host:repo.git`, the query
//! form `?ref=…&subdir=…&checksum=…`), an HTTP(S) URL (a tarball, or a lone Dockerfile),
//! or a stream (`-`: a tar, or a Dockerfile, on standard input).
//!
//! [`fetch`] materialises one in a temporary directory that lives as long as the
//! [`FetchedContext`]; a [`Build`](crate::Build) then builds from its
//! [`path`](FetchedContext::path):
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::remote_context::{self, ContextSpec, GitAuth};
//! use builder_core::{Build, NullSink};
//! let spec = ContextSpec::parse("https://git.example/app.git#v1.2:services/api")?;
//! let auth = GitAuth::token("ghp_secret");
//! let ctx = remote_context::fetch(&spec, &auth, false, None)?;
//! let mut build = Build::new(ctx.path())?;
//! if let Some(text) = ctx.dockerfile_text() {
//!     build = build.dockerfile_text("Dockerfile", text.to_owned());
//! }
//! build.run(&mut NullSink).await?;
//! # Ok(()) }
//! ```
//!
//! Git is driven through the `git` program, as BuildKit does, with the protections of its
//! git source: a ref that starts with `-` is refused (it would be an option), the remote
//! is passed after `--`, the user's and the system's git configuration are not read, and
//! a subdirectory is cleaned (`..` cannot climb out) and must be made of real directories
//! (a symlink in it is refused, so it cannot point outside the checkout).

mod git;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use git::{GitAuth, GitUrl};

use crate::Error;

/// What a `docker buildx build` context argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextSpec {
    /// A local directory.
    Local(PathBuf),
    /// A git repository.
    Git(GitUrl),
    /// An `http://` or `https://` URL that is not a git repository: a tarball (plain or
    /// compressed), or a Dockerfile.
    Http(String),
    /// `-`: a tar, or a Dockerfile, read from standard input.
    Stdin,
}

impl ContextSpec {
    /// Reads a context argument as buildx does: `-` is standard input; a git URL (as
    /// BuildKit recognises one: `git://`, `ssh://`, `user@host:path`, an http(s) URL whose
    /// path ends in `.git`, or `github.com/…`) is a repository; another http(s) URL is a
    /// download; anything else is a directory.
    ///
    /// ```
    /// use builder_core::remote_context::ContextSpec;
    /// let ContextSpec::Git(g) = ContextSpec::parse("https://h/r.git#main:app").unwrap() else {
    ///     panic!()
    /// };
    /// assert_eq!((g.git_ref(), g.subdir()), (Some("main"), Some("app")));
    /// assert!(matches!(ContextSpec::parse("https://h/src.tar.gz").unwrap(), ContextSpec::Http(_)));
    /// assert!(matches!(ContextSpec::parse(".").unwrap(), ContextSpec::Local(_)));
    /// assert!(ContextSpec::parse("https://h/r.git#--upload-pack=evil").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<ContextSpec, Error> {
        if s == "-" {
            return Ok(ContextSpec::Stdin);
        }
        if crate::copy::params::is_git(s) || s.starts_with("github.com/") {
            return s.parse().map(ContextSpec::Git);
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s).map_err(|e| context_error(s, format!("invalid URL: {e}")))?;
            return Ok(ContextSpec::Http(s.to_owned()));
        }
        if s.contains("://") {
            return Err(context_error(
                s,
                "unsupported URL scheme (git://, ssh://, http://, https:// are)",
            ));
        }
        Ok(ContextSpec::Local(PathBuf::from(s)))
    }

    /// Whether the context has to be fetched (anything but a local directory).
    pub fn is_remote(&self) -> bool {
        !matches!(self, ContextSpec::Local(_))
    }
}

/// A context fetched into a temporary directory (removed when this is dropped).
#[derive(Debug)]
pub struct FetchedContext {
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    dockerfile: Option<String>,
    commit: Option<String>,
}

impl FetchedContext {
    /// The context directory to build from.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile, when the source was a Dockerfile rather than a context (an HTTP
    /// URL or standard input that is not an archive): the context is then empty.
    pub fn dockerfile_text(&self) -> Option<&str> {
        self.dockerfile.as_deref()
    }

    /// The commit checked out, for a git context.
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }
}

pub(crate) fn context_error(context: &str, reason: impl Into<String>) -> Error {
    Error::Context {
        context: git::redact(context),
        reason: reason.into(),
    }
}

fn tempdir(parent: Option<&Path>) -> Result<tempfile::TempDir, Error> {
    let dir = match parent {
        Some(p) => {
            std::fs::create_dir_all(p).map_err(|e| Error::Export {
                path: p.to_owned(),
                source: e.into(),
            })?;
            tempfile::Builder::new().prefix("context-").tempdir_in(p)
        }
        None => tempfile::Builder::new().prefix("rbuild-context-").tempdir(),
    };
    dir.map_err(|e| Error::Export {
        path: parent.map_or_else(std::env::temp_dir, Path::to_owned),
        source: e.into(),
    })
}

/// Fetches a remote context into a temporary directory under `tmp_parent` (the system's
/// temporary directory when `None`). `auth` is used for git over HTTP(S); `keep_git_dir`
/// keeps the repository's `.git` directory (BuildKit's `BUILDKIT_CONTEXT_KEEP_GIT_DIR`).
/// [`ContextSpec::Stdin`] reads this process's standard input; a
/// [`ContextSpec::Local`] directory is returned as it is (nothing is copied).
pub fn fetch(
    spec: &ContextSpec,
    auth: &GitAuth,
    keep_git_dir: bool,
    tmp_parent: Option<&Path>,
) -> Result<FetchedContext, Error> {
    match spec {
        ContextSpec::Local(p) => Ok(FetchedContext {
            _dir: None,
            root: p.clone(),
            dockerfile: None,
            commit: None,
        }),
        ContextSpec::Git(g) => {
            let dir = tempdir(tmp_parent)?;
            let (root, commit) = git::fetch(g, auth, keep_git_dir, dir.path())?;
            Ok(FetchedContext {
                _dir: Some(dir),
                root,
                dockerfile: None,
                commit: Some(commit),
            })
        }
        ContextSpec::Http(url) => {
            let dir = tempdir(tmp_parent)?;
            let dl = crate::copy::http::download(url, None, Some(dir.path()))
                .map_err(|e| context_error(url, e.to_string()))?;
            unpack_or_dockerfile(url, dl.file.path(), dir)
        }
        ContextSpec::Stdin => from_reader(std::io::stdin().lock(), tmp_parent),
    }
}

/// A context from a stream, as `docker buildx build -` reads standard input: a tar
/// (plain or compressed) is the context; anything else is a Dockerfile, with an empty
/// context.
pub fn from_reader(mut r: impl Read, tmp_parent: Option<&Path>) -> Result<FetchedContext, Error> {
    let dir = tempdir(tmp_parent)?;
    let file = dir.path().join("stdin");
    let mut out = std::fs::File::create(&file).map_err(|e| Error::Export {
        path: file.clone(),
        source: e.into(),
    })?;
    std::io::copy(&mut r, &mut out).map_err(|e| context_error("-", format!("reading: {e}")))?;
    drop(out);
    unpack_or_dockerfile("-", &file, dir)
}

fn unpack_or_dockerfile(
    name: &str,
    file: &Path,
    dir: tempfile::TempDir,
) -> Result<FetchedContext, Error> {
    let root = dir.path().join("context");
    std::fs::create_dir(&root).map_err(|e| Error::Export {
        path: root.clone(),
        source: e.into(),
    })?;
    let sniffed =
        crate::copy::archive::sniff(file).map_err(|e| context_error(name, e.to_string()))?;
    let dockerfile = if sniffed == crate::copy::archive::Sniffed::Tar {
        crate::copy::archive::unpack(name, file, &root)
            .map_err(|e| context_error(name, e.to_string()))?;
        None
    } else {
        let bytes = std::fs::read(file).map_err(|e| context_error(name, e.to_string()))?;
        Some(String::from_utf8(bytes).map_err(|_| {
            context_error(
                name,
                "neither a tar archive nor a Dockerfile (not UTF-8 text)",
            )
        })?)
    };
    let _ = std::fs::remove_file(file);
    Ok(FetchedContext {
        _dir: Some(dir),
        root,
        dockerfile,
        commit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_tar_or_dockerfile() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "Dockerfile", &b"x\n"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let c = from_reader(&tar[..], None).unwrap();
        assert_eq!(std::fs::read(c.path().join("Dockerfile")).unwrap(), b"x\n");
        assert!(c.dockerfile_text().is_none());
        let c = from_reader(&b"FROM scratch\n"[..], None).unwrap();
        assert_eq!(c.dockerfile_text(), Some("FROM scratch\n"));
        assert_eq!(std::fs::read_dir(c.path()).unwrap().count(), 0);
        assert!(from_reader(&[0xff, 0xfe, 0][..], None).is_err());
    }

    #[test]
    fn specs() {
        assert_eq!(ContextSpec::parse("-").unwrap(), ContextSpec::Stdin);
        assert!(matches!(
            ContextSpec::parse("git@h.example:o/r.git").unwrap(),
            ContextSpec::Git(_)
        ));
        assert!(matches!(
            ContextSpec::parse("github.com/o/r").unwrap(),
            ContextSpec::Git(_)
        ));
        assert!(ContextSpec::parse("ftp://h/x.tar").is_err());
        assert!(!ContextSpec::parse("dir").unwrap().is_remote());
    }
}
