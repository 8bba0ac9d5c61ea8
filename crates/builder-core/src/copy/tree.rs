//! Reading a COPY source: the filtered build context or a stage's layers, with paths
//! resolved inside the source root (symlinks followed there, `..` clamped at the root),
//! wildcards matched as BuildKit does, and directories walked through the filters.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dockerfile::{ContextFilter, FilterWalk, WalkDecision};

use super::context::BuildContext;
use super::error::CopyError;
pub(crate) use crate::fsview::Entry;
use crate::fsview::{Found, LayeredView, Policy, WalkError, resolve_in_root};

/// A source tree: where COPY reads from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tree<'a> {
    /// The build context, filtered by .dockerignore.
    Context(&'a BuildContext),
    /// A stage's or image's root.
    Layers(&'a LayeredView),
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// Components as a `/`-separated relative path (lossy for non-UTF-8 names, which only
/// matters for pattern matching).
pub(crate) fn rel_str(rel: &[OsString]) -> String {
    let mut s = String::new();
    for (i, c) in rel.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(&c.to_string_lossy());
    }
    s
}

pub(crate) fn join(rel: &[OsString]) -> PathBuf {
    rel.iter().collect()
}

impl Tree<'_> {
    /// Looks up `rel` without following symlinks in it; `None` when it does not exist (or
    /// is filtered out of the context).
    pub(crate) fn lookup(&self, rel: &[OsString]) -> Result<Option<Entry>, CopyError> {
        match self {
            Tree::Context(ctx) => {
                let host = ctx.root().join(join(rel));
                let meta = match fs::symlink_metadata(&host) {
                    Ok(m) => m,
                    Err(e) if is_missing(&e) => return Ok(None),
                    Err(e) => return Err(CopyError::io("stat", host)(e)),
                };
                if !rel.is_empty() && !ctx.visible(&rel_str(rel), meta.is_dir())? {
                    return Ok(None);
                }
                Ok(Some(Entry { host, meta }))
            }
            Tree::Layers(view) => view.lookup(rel).map_err(CopyError::io("stat", join(rel))),
        }
    }

    /// The entries of directory `rel`, in name order (not filtered).
    pub(crate) fn read_dir(&self, rel: &[OsString]) -> Result<Vec<(OsString, Entry)>, CopyError> {
        match self {
            Tree::Context(ctx) => {
                let dir = ctx.root().join(join(rel));
                let rd = fs::read_dir(&dir).map_err(CopyError::io("read directory", &dir))?;
                let mut out = Vec::new();
                for e in rd {
                    let e = e.map_err(CopyError::io("read directory", &dir))?;
                    let host = e.path();
                    // DirEntry::metadata does not follow symlinks.
                    let meta = e.metadata().map_err(CopyError::io("stat", &host))?;
                    out.push((e.file_name(), Entry { host, meta }));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(out)
            }
            Tree::Layers(view) => match view.read_dir(rel) {
                Ok(m) => Ok(m.into_iter().collect()),
                Err(e) => Err(CopyError::io("read directory", join(rel))(e)),
            },
        }
    }

    /// Resolves `parts` (cleaned components) inside the root, following symlinks in every
    /// component and in the last one when `follow_last` is set. Absolute link targets
    /// restart at the root, `..` never climbs above it (BuildKit's rule,
    /// [`Policy::Clamp`]). The result may not exist.
    pub(crate) fn resolve(
        &self,
        instr: &'static str,
        parts: &[OsString],
        follow_last: bool,
    ) -> Result<Vec<OsString>, CopyError> {
        let find = |rel: &[OsString]| -> Result<Found, CopyError> {
            Ok(match self.lookup(rel)? {
                None => Found::Missing,
                Some(n) if n.meta.file_type().is_symlink() => Found::Symlink(
                    fs::read_link(&n.host).map_err(CopyError::io("read link", &n.host))?,
                ),
                Some(n) if n.meta.is_dir() => Found::Dir,
                Some(_) => Found::Other,
            })
        };
        resolve_in_root(parts, follow_last, Policy::Clamp, find).map_err(|e| match e {
            WalkError::Lookup(e) => e,
            // The other errors are [`Policy::Strict`]'s.
            _ => CopyError::SymlinkLoop {
                instr,
                path: rel_str(parts),
            },
        })
    }

    /// The entries under `base` (a resolved directory) whose path relative to it matches
    /// `pattern` (Go's `filepath.Match`), in walk order; a matched directory is not looked
    /// into (fsutil's `resolveWildcards`). Returns paths from the tree's root.
    pub(crate) fn wildcard_matches(
        &self,
        base: &[OsString],
        pattern: &str,
    ) -> Result<Vec<Vec<OsString>>, CopyError> {
        // `*`, `?` and classes never match `/`: deeper paths cannot match.
        let max_depth = pattern.split('/').count();
        let mut out = Vec::new();
        let mut path = base.to_vec();
        self.wildcard_walk(&mut path, base.len(), pattern, max_depth, &mut out)?;
        Ok(out)
    }

    fn wildcard_walk(
        &self,
        path: &mut Vec<OsString>,
        base_len: usize,
        pattern: &str,
        max_depth: usize,
        out: &mut Vec<Vec<OsString>>,
    ) -> Result<(), CopyError> {
        for (name, node) in self.read_dir(path)? {
            path.push(name);
            let is_dir = node.meta.is_dir();
            let visible = match self {
                Tree::Context(ctx) => ctx.visible(&rel_str(path), is_dir)?,
                Tree::Layers(_) => true,
            };
            if visible {
                let rel = rel_str(&path[base_len..]);
                if dockerfile::filepath_match(pattern, &rel).unwrap_or(false) {
                    out.push(path.clone());
                } else if is_dir && path.len() - base_len < max_depth {
                    self.wildcard_walk(path, base_len, pattern, max_depth, out)?;
                }
            }
            path.pop();
        }
        Ok(())
    }

    /// Walks the directory `root` (a path from the tree's root) depth-first in name
    /// order, each directory before its contents. Entries are relative to `root`. The
    /// context's .dockerignore filter (paths from the context root) and `copy_filter`
    /// (`--exclude`/`--parents` patterns, paths from `root`) both apply; a directory they
    /// hide is still listed when something below it is kept.
    pub(crate) fn walk(
        &self,
        root: &[OsString],
        copy_filter: Option<&ContextFilter>,
    ) -> Result<Vec<WalkEntry>, CopyError> {
        let mut ignore_walk = match self {
            Tree::Context(ctx) if !ctx.filter().is_pass_through() => Some(ctx.filter().walk()),
            _ => None,
        };
        let ignore_err = |source| CopyError::Ignore {
            path: match self {
                Tree::Context(ctx) => ctx.ignore_file().map(Path::to_path_buf).unwrap_or_default(),
                Tree::Layers(_) => PathBuf::new(),
            },
            source,
        };
        if let Some(w) = ignore_walk.as_mut() {
            // Visit the ancestors first, so that parent matches carry down.
            for i in 1..=root.len() {
                if w.visit(&rel_str(&root[..i]), true).map_err(ignore_err)? == WalkDecision::SkipDir
                {
                    return Ok(Vec::new());
                }
            }
        }
        let mut copy_walk = copy_filter
            .filter(|f| !f.is_pass_through())
            .map(|f| f.walk());
        let mut state = WalkState {
            tree: *self,
            path: root.to_vec(),
            root_len: root.len(),
            ignore: ignore_walk.as_mut(),
            copy: copy_walk.as_mut(),
            pending: Vec::new(),
            out: Vec::new(),
        };
        state.dir(&ignore_err)?;
        Ok(state.out)
    }
}

/// One entry found by [`Tree::walk`].
#[derive(Debug, Clone)]
pub(crate) struct WalkEntry {
    /// The path relative to the walked directory.
    pub(crate) rel: Vec<OsString>,
    /// The entry.
    pub(crate) node: Entry,
}

struct WalkState<'t, 'w, 'f, 'g> {
    tree: Tree<'t>,
    path: Vec<OsString>,
    root_len: usize,
    ignore: Option<&'w mut FilterWalk<'f>>,
    copy: Option<&'w mut FilterWalk<'g>>,
    pending: Vec<WalkEntry>,
    out: Vec<WalkEntry>,
}

impl WalkState<'_, '_, '_, '_> {
    fn dir(
        &mut self,
        ignore_err: &dyn Fn(dockerfile::IgnoreError) -> CopyError,
    ) -> Result<(), CopyError> {
        for (name, node) in self.tree.read_dir(&self.path)? {
            self.path.push(name);
            let is_dir = node.meta.is_dir();
            let d1 = match self.ignore.as_deref_mut() {
                Some(w) => w.visit(&rel_str(&self.path), is_dir).map_err(ignore_err)?,
                None => WalkDecision::Keep { parents: vec![] },
            };
            let d2 = match self.copy.as_deref_mut() {
                Some(w) => w
                    .visit(&rel_str(&self.path[self.root_len..]), is_dir)
                    .map_err(|source| CopyError::Pattern {
                        instr: "COPY",
                        source,
                    })?,
                None => WalkDecision::Keep { parents: vec![] },
            };
            let skip = d1 == WalkDecision::SkipDir || d2 == WalkDecision::SkipDir;
            if !skip {
                let keep = matches!(d1, WalkDecision::Keep { .. })
                    && matches!(d2, WalkDecision::Keep { .. });
                let entry = WalkEntry {
                    rel: self.path[self.root_len..].to_vec(),
                    node,
                };
                if keep {
                    self.out.append(&mut self.pending);
                    self.out.push(entry);
                    if is_dir {
                        self.dir(ignore_err)?;
                    }
                } else if is_dir {
                    let before = self.pending.len();
                    self.pending.push(entry);
                    self.dir(ignore_err)?;
                    self.pending.truncate(before);
                }
            }
            self.path.pop();
        }
        Ok(())
    }
}

/// Converts `/`-separated cleaned components (strings) to OS strings.
pub(crate) fn os_parts(parts: &[String]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

/// The last component, as bytes (for messages and names).
pub(crate) fn base_name(parts: &[OsString]) -> &OsStr {
    parts
        .last()
        .map_or(OsStr::from_bytes(b"/"), |p| p.as_os_str())
}
