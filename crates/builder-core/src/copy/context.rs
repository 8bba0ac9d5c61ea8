//! The build context: a directory, its `.dockerignore` filter and the stat cache that keeps
//! a warm rebuild from re-reading unchanged files.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dockerfile::{ContextFilter, PatternMatcher, WalkDecision, read_ignore_file};
use layer_cache::StatCache;

use super::error::CopyError;

/// The build context of a build: what `COPY` without `--from` and `ADD` read.
#[derive(Debug)]
pub(crate) struct BuildContext {
    root: PathBuf,
    ignore_file: Option<PathBuf>,
    patterns: Vec<String>,
    filter: ContextFilter,
    has_exceptions: bool,
    stat_cache: Mutex<StatCache>,
}

impl BuildContext {
    /// Opens the context directory `root`. Its filter comes from `<Dockerfile>.dockerignore`
    /// next to the Dockerfile when that file exists (`dockerfile`: `None` for a Dockerfile
    /// read from stdin), else from `<root>/.dockerignore`, as BuildKit picks it. An invalid
    /// ignore file is an error naming it.
    pub(crate) fn open(
        root: &Path,
        dockerfile: Option<&Path>,
        stat_cache: StatCache,
    ) -> Result<BuildContext, CopyError> {
        let root = fs::canonicalize(root).map_err(CopyError::io("open the build context", root))?;
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            if let Some(name) = df.file_name() {
                let mut n = name.to_owned();
                n.push(".dockerignore");
                candidates.push(df.with_file_name(n));
            }
        }
        candidates.push(root.join(".dockerignore"));
        let mut ignore_file = None;
        let mut patterns = Vec::new();
        for c in candidates {
            match fs::read(&c) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    patterns = read_ignore_file(&text).map_err(|source| CopyError::Ignore {
                        path: c.clone(),
                        source,
                    })?;
                    ignore_file = Some(c);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CopyError::io("read", c)(e)),
            }
        }
        let err_at = |path: &Option<PathBuf>| {
            let path = path.clone().unwrap_or_default();
            move |source: dockerfile::IgnoreError| CopyError::Ignore { path, source }
        };
        let matcher = PatternMatcher::new(&patterns).map_err(err_at(&ignore_file))?;
        let filter = ContextFilter::new::<String>(&[], &patterns).map_err(err_at(&ignore_file))?;
        Ok(BuildContext {
            root,
            ignore_file,
            has_exceptions: matcher.has_exclusions(),
            patterns,
            filter,
            stat_cache: Mutex::new(stat_cache),
        })
    }

    /// The context directory (canonical).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore file in use, if any.
    pub(crate) fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// The `.dockerignore` patterns as read (for bind mounts of the context, DI-06).
    pub(crate) fn ignore_patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The filter the patterns make.
    pub(crate) fn filter(&self) -> &ContextFilter {
        &self.filter
    }

    pub(crate) fn stat_cache(&self) -> MutexGuard<'_, StatCache> {
        // A panic while holding the lock leaves at worst a stale entry, which only costs a
        // re-hash: keep going with the data.
        self.stat_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the stat cache back (call once the build no longer hashes the context).
    pub(crate) fn save(&self) -> Result<(), CopyError> {
        self.stat_cache()
            .save()
            .map_err(|source| CopyError::StatCache { source })
    }

    /// Whether the entry at `rel` (relative, `/`-separated, not the root) exists in the
    /// filtered context. A directory that the patterns exclude is still there when an
    /// exception re-includes something below it (it is sent as that entry's parent).
    pub(crate) fn visible(&self, rel: &str, is_dir: bool) -> Result<bool, CopyError> {
        if self.filter.is_pass_through() {
            return Ok(true);
        }
        let pattern_err = |source| CopyError::Ignore {
            path: self.ignore_file.clone().unwrap_or_default(),
            source,
        };
        if self.filter.is_visible(rel).map_err(pattern_err)? {
            return Ok(true);
        }
        if !is_dir || !self.has_exceptions {
            return Ok(false);
        }
        // Walk below the directory until something is kept.
        let mut walk = self.filter.walk();
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..=parts.len() {
            if walk
                .visit(&parts[..i].join("/"), true)
                .map_err(pattern_err)?
                == WalkDecision::SkipDir
            {
                return Ok(false);
            }
        }
        fn any_kept(
            walk: &mut dockerfile::FilterWalk<'_>,
            host: &Path,
            rel: &str,
            err: &dyn Fn(dockerfile::IgnoreError) -> CopyError,
        ) -> Result<bool, CopyError> {
            let Ok(rd) = fs::read_dir(host) else {
                return Ok(false);
            };
            let mut names: Vec<(OsString, bool)> = rd
                .flatten()
                .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
                .collect();
            names.sort();
            for (name, is_dir) in names {
                let child = format!("{rel}/{}", name.to_string_lossy());
                match walk.visit(&child, is_dir).map_err(err)? {
                    WalkDecision::Keep { .. } => return Ok(true),
                    WalkDecision::Hide
                        if is_dir && any_kept(walk, &host.join(&name), &child, err)? =>
                    {
                        return Ok(true);
                    }
                    _ => {}
                }
            }
            Ok(false)
        }
        any_kept(&mut walk, &self.root.join(rel), rel, &pattern_err)
    }
}
