//! COPY and ADD: what decides a step's result (for its cache key) and the layer diff it
//! writes, with BuildKit's semantics.
//!
//! Sources are resolved once into [`Item`]s (wildcards matched, symlinks named as sources
//! followed inside the source root, `..` clamped), then either described for the cache key
//! ([`cache_inputs`]: content digests through the stat cache, never mtimes or host owners)
//! or written as an overlay-format diff ([`execute`]): the copied entries plus their
//! destination's parent directories, existing ones reproduced as an overlay copy-up would.
//!
//! Deliberate differences from BuildKit, each in the user's favour:
//! - several sources onto a destination that is not a directory fail with the classic
//!   builder's message instead of silently keeping the last file (moby/buildkit#1853);
//! - an unknown `--chown` name fails instead of silently meaning root.

pub(crate) mod archive;
mod chmod;
mod context;
mod error;
mod glob;
pub(crate) mod http;
pub(crate) mod params;
mod tree;
mod users;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use dockerfile::ContextFilter;
use layer_cache::Digest;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::cachekey::CacheKey;
use crate::fsview::LayeredView;

pub(crate) use context::BuildContext;
pub(crate) use error::CopyError;
use error::Origin;
pub(crate) use params::CopyParams;
use params::SourceSpec;
use tree::{Entry, Tree, rel_str};

/// The time a remote ADD source gives SOURCE_DATE_EPOCH (Dockerfile 1.26's epoch stage): its
/// `Last-Modified`, else the latest mtime of the regular files when it is an archive, else
/// none. `checksum` is the ADD's `--checksum`, verified as ADD does.
pub(crate) fn url_source_time(
    url: &str,
    checksum: Option<&str>,
    tmp: Option<&Path>,
) -> Result<Option<i64>, CopyError> {
    let checksum = checksum.map(params::Checksum::parse).transpose()?;
    let d = http::download(url, checksum.as_ref(), tmp)?;
    if d.last_modified.is_some() {
        return Ok(d.last_modified);
    }
    archive::max_regular_mtime(d.file.path())
}

/// Where a COPY reads from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CopySource<'a> {
    /// The build context (COPY without `--from`, ADD).
    Context(&'a BuildContext),
    /// The root of a stage or image (`COPY --from`), with the key that identifies it.
    Layers {
        /// The stage's or image's merged layers.
        view: &'a LayeredView,
        /// Its cache key (what the result depends on, instead of reading the files).
        key: &'a CacheKey,
    },
}

impl<'a> CopySource<'a> {
    fn tree(&self) -> Tree<'a> {
        match *self {
            CopySource::Context(c) => Tree::Context(c),
            CopySource::Layers { view, .. } => Tree::Layers(view),
        }
    }

    fn origin(&self) -> Origin {
        match self {
            CopySource::Context(_) => Origin::Context,
            CopySource::Layers { .. } => Origin::Stage,
        }
    }
}

/// What one COPY/ADD wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CopyStats {
    /// Regular files written (hard links included).
    pub(crate) files: u64,
    /// Directories created or copied up.
    pub(crate) dirs: u64,
    /// Symlinks written.
    pub(crate) symlinks: u64,
    /// Bytes of file data copied.
    pub(crate) bytes: u64,
    /// Local archives unpacked (ADD).
    pub(crate) archives: u64,
}

/// A source resolved to what it stands for.
#[derive(Debug)]
enum Item {
    /// A file, directory or other entry of the source tree (symlinks named as sources
    /// already followed).
    Path {
        /// The source as written.
        source: String,
        /// The name it gets when copied into a directory.
        name: OsString,
        /// Its path from the source tree's root.
        resolved: Vec<OsString>,
        /// The entry.
        node: Box<Entry>,
        /// The `--parents` pattern selecting what to copy below it.
        include: Option<String>,
    },
    /// A downloaded URL.
    Url {
        url: String,
        name: String,
        download: Arc<http::Download>,
    },
    /// A heredoc file.
    Heredoc { name: String, content: String },
}

impl Item {
    fn is_dir(&self) -> bool {
        matches!(self, Item::Path { node, .. } if node.meta.is_dir())
    }
}

/// Splits a `--parents` source at its `/./` pivot: (the part copied from, the pattern of
/// what to copy below it, the path that must exist when neither has wildcards).
fn parents_split(src: &str) -> (String, String, Option<String>) {
    let (root, pattern) = match src.split_once("/./") {
        Some((root, pattern)) => (root.to_owned(), pattern.to_owned()),
        None => ("/".to_owned(), src.to_owned()),
    };
    let pattern = params::clean(&pattern).join("/");
    let required = (!glob::contains_wildcards(&root) && !glob::contains_wildcards(&pattern))
        .then(|| format!("{root}/{pattern}"));
    (root, pattern, required)
}

/// Resolves the sources into items, downloading URLs (once per params).
fn plan(params: &CopyParams, source: &CopySource<'_>) -> Result<Vec<Item>, CopyError> {
    let instr = params.instr;
    let tree = source.tree();
    let mut items = Vec::new();
    for spec in &params.sources {
        match spec {
            SourceSpec::Path(src) => {
                let (root, include, required) = if params.parents {
                    let (r, p, req) = parents_split(src);
                    (r, Some(p), req)
                } else {
                    (src.clone(), None, None)
                };
                if let Some(req) = required {
                    let parts = tree::os_parts(&params::clean(&req));
                    let resolved = tree.resolve(instr, &parts, true)?;
                    if tree.lookup(&resolved)?.is_none() {
                        return Err(CopyError::not_found(instr, source.origin(), src));
                    }
                }
                let cleaned = format!("/{}", params::clean(&root).join("/"));
                let (fixed, wild) = glob::split_wildcards(&cleaned);
                let fixed = tree::os_parts(&fixed);
                let base = tree.resolve(instr, &fixed, true)?;
                if wild.is_empty() {
                    let Some(node) = tree.lookup(&base)? else {
                        return Err(CopyError::not_found(instr, source.origin(), src));
                    };
                    items.push(Item::Path {
                        source: src.clone(),
                        name: tree::base_name(&fixed).to_owned(),
                        resolved: base,
                        node: Box::new(node),
                        include,
                    });
                    continue;
                }
                // The wildcard-free prefix must exist (BuildKit fails to walk it).
                let Some(base_node) = tree.lookup(&base)? else {
                    return Err(CopyError::not_found(instr, source.origin(), src));
                };
                if !base_node.meta.is_dir() {
                    continue;
                }
                for m in tree.wildcard_matches(&base, &wild)? {
                    let resolved = tree.resolve(instr, &m, true)?;
                    let Some(node) = tree.lookup(&resolved)? else {
                        return Err(CopyError::not_found(
                            instr,
                            source.origin(),
                            &format!("/{}", rel_str(&m)),
                        ));
                    };
                    items.push(Item::Path {
                        source: src.clone(),
                        name: tree::base_name(&m).to_owned(),
                        resolved,
                        node: Box::new(node),
                        include: include.clone(),
                    });
                }
            }
            SourceSpec::Url(url) => {
                let download = fetch(params, url)?;
                items.push(Item::Url {
                    url: url.clone(),
                    name: params::url_file_name(url),
                    download,
                });
            }
            SourceSpec::Heredoc { name, content } => items.push(Item::Heredoc {
                name: name.clone(),
                content: content.clone(),
            }),
        }
    }
    Ok(items)
}

/// The download of `url`, made once per params.
fn fetch(params: &CopyParams, url: &str) -> Result<Arc<http::Download>, CopyError> {
    let mut downloads = params
        .downloads
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = downloads.get(url) {
        return Ok(Arc::clone(d));
    }
    let d = Arc::new(http::download(
        url,
        params.checksum.as_ref(),
        params.scratch_dir.as_deref(),
    )?);
    downloads.insert(url.to_owned(), Arc::clone(&d));
    Ok(d)
}

/// The `--exclude` and `--parents` filter for one item.
fn copy_filter(params: &CopyParams, include: Option<&String>) -> Result<ContextFilter, CopyError> {
    let include: Vec<String> = include.cloned().into_iter().collect();
    ContextFilter::new(&include, &params.exclude).map_err(|source| CopyError::Pattern {
        instr: params.instr,
        source,
    })
}

fn type_letter(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "d"
    } else if t.is_file() {
        "f"
    } else if t.is_symlink() {
        "l"
    } else if t.is_fifo() {
        "p"
    } else if t.is_char_device() {
        "c"
    } else if t.is_block_device() {
        "b"
    } else {
        "s"
    }
}

/// A context file whose digest the stat cache did not have.
struct Miss {
    index: usize,
    rel: String,
    meta: Metadata,
}

fn sha256_file(root: &Path, rel: &str) -> Result<Digest, CopyError> {
    let path = root.join(rel);
    let mut f = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(CopyError::io("read", &path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf).map_err(CopyError::io("read", &path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(h.finalize().into()))
}

/// Hashes the context files the stat cache does not know, in parallel for large sets.
fn hash_misses(ctx: &BuildContext, misses: &[Miss]) -> Result<Vec<Digest>, CopyError> {
    let total: u64 = misses.iter().map(|m| m.meta.len()).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if misses.len() < 2 || total < (4 << 20) || workers == 1 {
        return misses
            .iter()
            .map(|m| sha256_file(ctx.root(), &m.rel))
            .collect();
    }
    let chunk = misses.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = misses
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|m| sha256_file(ctx.root(), &m.rel))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(misses.len());
        for h in handles {
            let part = h.join().unwrap_or_else(|_| {
                Err(CopyError::Io {
                    op: "hash",
                    path: ctx.root().to_path_buf(),
                    source: std::io::Error::other("a hashing thread panicked"),
                })
            })?;
            out.extend(part);
        }
        Ok(out)
    })
}

/// Describes the entries of a context item for the cache key: relative path, type, mode,
/// symlink target or content digest, hard-link group. Never mtimes, never host owners.
fn describe_context_item(
    ctx: &BuildContext,
    params: &CopyParams,
    resolved: &[OsString],
    node: &Entry,
    include: Option<&String>,
) -> Result<Value, CopyError> {
    let entries: Vec<(Vec<OsString>, Entry)> = if node.meta.is_dir() {
        let filter = copy_filter(params, include)?;
        let mut v = vec![(Vec::new(), node.clone())];
        v.extend(
            Tree::Context(ctx)
                .walk(resolved, Some(&filter))?
                .into_iter()
                .map(|e| (e.rel, e.node)),
        );
        v
    } else {
        vec![(Vec::new(), node.clone())]
    };
    let mut rows: Vec<Value> = Vec::with_capacity(entries.len());
    let mut misses = Vec::new();
    let mut links: BTreeMap<(u64, u64), String> = BTreeMap::new();
    {
        let cache = ctx.stat_cache();
        for (i, (rel, n)) in entries.iter().enumerate() {
            let m = &n.meta;
            let name = rel_str(rel);
            let mut row = vec![
                json!(name),
                json!(type_letter(m)),
                json!(format!("{:o}", m.mode() & 0o7777)),
            ];
            let t = m.file_type();
            if t.is_file() {
                let full: Vec<OsString> = resolved.iter().chain(rel.iter()).cloned().collect();
                let full = rel_str(&full);
                match cache.lookup(&full, m) {
                    Some(d) => row.push(json!(d.to_string())),
                    None => {
                        row.push(Value::Null);
                        misses.push(Miss {
                            index: i,
                            rel: full,
                            meta: m.clone(),
                        });
                    }
                }
                if m.nlink() > 1 {
                    let first = links
                        .entry((m.dev(), m.ino()))
                        .or_insert_with(|| name.clone());
                    if *first != name {
                        row.push(json!({ "link": first }));
                    }
                }
            } else if t.is_symlink() {
                let target =
                    std::fs::read_link(&n.host).map_err(CopyError::io("read link", &n.host))?;
                row.push(json!(String::from_utf8_lossy(
                    target.as_os_str().as_bytes()
                )));
            } else if t.is_char_device() || t.is_block_device() {
                row.push(json!(m.rdev()));
            }
            rows.push(Value::Array(row));
        }
    }
    if !misses.is_empty() {
        let digests = hash_misses(ctx, &misses)?;
        let mut cache = ctx.stat_cache();
        for (m, d) in misses.iter().zip(digests) {
            if let Value::Array(row) = &mut rows[m.index] {
                row[3] = json!(d.to_string());
            }
            cache.insert(&m.rel, &m.meta, d);
        }
    }
    Ok(Value::Array(rows))
}

/// What decides the result of a COPY/ADD step, for its cache key (the parent's key is
/// added by the caller).
///
/// For the build context: every selected entry's relative path, type, mode, symlink target
/// and content digest (through the stat cache), after .dockerignore, wildcards, `--exclude`
/// and `--parents`; never mtimes or host owners (context files land as 0:0). For a stage or
/// image: its key and the parameters, without reading anything. For URLs: the download's
/// digest and `Last-Modified` (the file is downloaded now and reused by [`execute`]).
pub(crate) fn cache_inputs(
    params: &CopyParams,
    source: &CopySource<'_>,
) -> Result<Value, CopyError> {
    let mut sources = Vec::new();
    match source {
        CopySource::Context(ctx) => {
            for item in plan(params, source)? {
                sources.push(match item {
                    Item::Path {
                        source,
                        name,
                        resolved,
                        node,
                        include,
                    } => json!({
                        "path": source,
                        "name": String::from_utf8_lossy(name.as_bytes()),
                        "resolved": rel_str(&resolved),
                        "entries": describe_context_item(ctx, params, &resolved, &node, include.as_ref())?,
                    }),
                    Item::Url {
                        url,
                        name,
                        download,
                    } => json!({
                        "url": url,
                        "name": name,
                        "digest": download.digest,
                        "last_modified": download.last_modified,
                    }),
                    Item::Heredoc { name, content } => json!({ "heredoc": name, "content": content }),
                });
            }
        }
        CopySource::Layers { key, .. } => {
            for spec in &params.sources {
                sources.push(match spec {
                    SourceSpec::Path(p) => json!({ "path": p, "from": key.as_str() }),
                    SourceSpec::Url(url) => {
                        let d = fetch(params, url)?;
                        json!({ "url": url, "digest": d.digest, "last_modified": d.last_modified })
                    }
                    SourceSpec::Heredoc { name, content } => {
                        json!({ "heredoc": name, "content": content })
                    }
                });
            }
        }
    }
    Ok(json!({
        "instruction": params.instr,
        "sources": sources,
        "dest": params.dest,
        "workdir": params.workdir,
        "chown": params.chown.as_ref().map(|c| c.raw.clone()),
        "chmod": params.chmod.as_ref().map(ToString::to_string),
        "link": params.link,
        "parents": params.parents,
        "exclude": params.exclude,
        "unpack": [params.unpack_local, params.unpack_remote],
        "checksum": params.checksum.as_ref().map(|c| c.raw.clone()),
        "timestamp": params.timestamp,
    }))
}

/// Writes the diff of a COPY/ADD step into the empty directory `out`, in overlay format.
///
/// `dest_view` is the merged view of the step's parent (`None` for `FROM scratch` and for
/// `--link`, whose layer is built apart from the image); it decides where the destination
/// really is (symlinks followed inside the root), which directories already exist (they
/// are reproduced with their mode, owner and mtime, as an overlay copy-up would), and
/// where `--chown` names come from.
pub(crate) fn execute(
    params: &CopyParams,
    source: &CopySource<'_>,
    dest_view: Option<&LayeredView>,
    out: &Path,
) -> Result<CopyStats, CopyError> {
    let owner = match &params.chown {
        Some(c) => Some(users::resolve_chown(
            params.instr,
            c,
            dest_view,
            params.link,
        )?),
        None => None,
    };
    let items = plan(params, source)?;
    let lower = if params.link { None } else { dest_view };
    let mut w = write::Writer::new(params, source, lower, out, owner);
    let (dest, into) = params.dest_path();
    let dest = tree::os_parts(&dest);
    let several = items.len() > 1;
    for item in &items {
        w.copy_item(item, &dest, into, several)?;
    }
    w.finish()
}
