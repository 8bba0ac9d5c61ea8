//! [`CopyParams`]: a COPY or ADD instruction (already variable-expanded) turned into
//! validated values, with BuildKit's rules for sources, destination, `--chown`, `--chmod`
//! and `--checksum`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dockerfile::{AddInstruction, CopyInstruction, Source};

use super::chmod::{Chmod, ChmodError};
use super::error::CopyError;
use super::http::Download;

/// One source of a COPY/ADD, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSpec {
    /// A path (possibly with wildcards) in the context or in the `--from` stage.
    Path(String),
    /// An `http://` or `https://` URL (ADD only).
    Url(String),
    /// An inline file (`COPY <<EOF dest`): its name and its (expanded, chomped) body.
    Heredoc {
        /// The heredoc's name, which is the file name.
        name: String,
        /// The body.
        content: String,
    },
}

/// A user or group in `--chown`: a number, or a name to look up in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdSpec {
    /// A numeric id.
    Id(u32),
    /// A name (resolved through /etc/passwd or /etc/group).
    Name(String),
}

impl IdSpec {
    fn parse(s: &str) -> IdSpec {
        match s.parse::<u32>() {
            Ok(n) => IdSpec::Id(n),
            Err(_) => IdSpec::Name(s.to_owned()),
        }
    }
}

/// A parsed `--chown=user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chown {
    /// The value as given (after expansion).
    pub(crate) raw: String,
    /// The user.
    pub(crate) user: IdSpec,
    /// The group, when given.
    pub(crate) group: Option<IdSpec>,
}

impl Chown {
    pub(crate) fn parse(raw: &str) -> Result<Chown, CopyError> {
        let bad = |reason| CopyError::ChownSyntax {
            value: raw.to_owned(),
            reason,
        };
        let (user, group) = match raw.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (raw, None),
        };
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        if group.is_some_and(|g| g.contains(':')) {
            return Err(bad("expected user[:group]"));
        }
        Ok(Chown {
            raw: raw.to_owned(),
            user: IdSpec::parse(user),
            group: group.filter(|g| !g.is_empty()).map(IdSpec::parse),
        })
    }

    /// Whether any part is a name (needs the image's /etc/passwd or /etc/group).
    pub(crate) fn has_names(&self) -> bool {
        matches!(&self.user, IdSpec::Name(n) if n != "root")
            || matches!(&self.group, Some(IdSpec::Name(n)) if n != "root")
    }
}

/// A digest algorithm accepted by `--checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChecksumAlgorithm {
    /// sha256.
    Sha256,
    /// sha384.
    Sha384,
    /// sha512.
    Sha512,
}

impl ChecksumAlgorithm {
    fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha384 => 96,
            ChecksumAlgorithm::Sha512 => 128,
        }
    }
}

/// A parsed `--checksum` (go-digest's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checksum {
    /// The algorithm.
    pub(crate) algorithm: ChecksumAlgorithm,
    /// The value as given (`algorithm:hex`).
    pub(crate) raw: String,
}

impl Checksum {
    pub(crate) fn parse(raw: &str) -> Result<Checksum, CopyError> {
        let bad = |reason| CopyError::ChecksumFormat {
            value: raw.to_owned(),
            reason,
        };
        let Some(i) = raw.find(':').filter(|&i| i > 0 && i + 1 < raw.len()) else {
            return Err(bad("invalid checksum digest format"));
        };
        let (alg, hex) = (&raw[..i], &raw[i + 1..]);
        let algorithm = match alg {
            "sha256" => ChecksumAlgorithm::Sha256,
            "sha384" => ChecksumAlgorithm::Sha384,
            "sha512" => ChecksumAlgorithm::Sha512,
            _ => {
                let well_formed = alg.split(['.', '+', '_', '-']).all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                }) && hex
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
                return Err(bad(if well_formed {
                    "unsupported digest algorithm"
                } else {
                    "invalid checksum digest format"
                }));
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(bad("invalid checksum digest length"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("invalid checksum digest format"));
        }
        Ok(Checksum {
            algorithm,
            raw: raw.to_owned(),
        })
    }
}

/// Everything a COPY or ADD step needs, validated.
///
/// Built from the instruction as `dockerfile::Scope::step` expanded it plus the stage's
/// working directory. Downloads made while computing the cache key are kept here and
/// reused by `execute`.
#[derive(Debug)]
pub(crate) struct CopyParams {
    /// `COPY` or `ADD`.
    pub(crate) instr: &'static str,
    /// The sources in order (paths and URLs as written, then heredocs, as BuildKit
    /// processes them).
    pub(crate) sources: Vec<SourceSpec>,
    /// The destination as written (after expansion).
    pub(crate) dest: String,
    /// The stage's working directory (absolute).
    pub(crate) workdir: String,
    /// `--chown`.
    pub(crate) chown: Option<Chown>,
    /// `--chmod`.
    pub(crate) chmod: Option<Chmod>,
    /// `--link` as BuildKit applies it: ignored when `--chmod` is given (BuildKit then
    /// copies onto the image as without `--link`). With it, the engine passes no
    /// destination view.
    pub(crate) link: bool,
    /// `--parents`.
    pub(crate) parents: bool,
    /// `--exclude` patterns.
    pub(crate) exclude: Vec<String>,
    /// ADD `--checksum` (one URL source only).
    pub(crate) checksum: Option<Checksum>,
    /// Whether local tar archives are unpacked (ADD: unless `--unpack=false`), and
    /// whether downloads are (only with `--unpack=true`).
    pub(crate) unpack_local: bool,
    /// `--unpack=true` was given (downloads are unpacked too).
    pub(crate) unpack_remote: bool,
    /// Seconds since the epoch for what has no source time: directories created for the
    /// destination, heredoc files, downloads without `Last-Modified`. 0 unless the engine
    /// sets `SOURCE_DATE_EPOCH`.
    pub(crate) timestamp: i64,
    /// Where downloads are kept until the step ran (default: the system's temp dir).
    pub(crate) scratch_dir: Option<PathBuf>,
    /// Downloads by URL, made by `cache_inputs` and reused by `execute`.
    pub(crate) downloads: Mutex<BTreeMap<String, Arc<Download>>>,
}

fn classify(instr: &'static str, sources: &[Source]) -> Result<Vec<SourceSpec>, CopyError> {
    let mut paths = Vec::new();
    let mut heredocs = Vec::new();
    for s in sources {
        match s {
            Source::Path(p) => {
                let p = p.value.clone();
                if is_git(&p) {
                    return Err(if instr == "COPY" {
                        CopyError::GitForCopy { url: p }
                    } else {
                        CopyError::GitNotSupported { url: p }
                    });
                }
                if p.starts_with("http://") || p.starts_with("https://") {
                    if instr == "COPY" {
                        return Err(CopyError::UrlForCopy { url: p });
                    }
                    paths.push(SourceSpec::Url(p));
                } else {
                    paths.push(SourceSpec::Path(p));
                }
            }
            Source::Heredoc(h) => heredocs.push(SourceSpec::Heredoc {
                name: h.name.clone(),
                content: h.content.clone(),
            }),
        }
    }
    paths.extend(heredocs);
    Ok(paths)
}

/// Whether BuildKit would take `src` for a git repository (dfgitutil's `ParseGitRef`):
/// `git://` and `ssh://` URLs, `user@host:path`, and http(s) URLs whose path ends in `.git`.
pub(crate) fn is_git(src: &str) -> bool {
    if src.starts_with("./") || src.starts_with("../") {
        return false;
    }
    if src.starts_with("git://") || src.starts_with("ssh://") {
        return true;
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        return url::Url::parse(src).is_ok_and(|u| u.path().ends_with(".git"));
    }
    // scp-like: user@host:path (the user and host as git's regexp allows them).
    if let Some((user, rest)) = src.split_once('@') {
        if let Some((host, _)) = rest.split_once(':') {
            let user_ok = !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            return user_ok && host_ok;
        }
    }
    false
}

fn parse_chmod(value: Option<&str>) -> Result<Option<Chmod>, CopyError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Chmod::parse(v).map(Some).map_err(|e| match e {
            ChmodError::NotOctal => CopyError::ChmodNotOctal {
                value: v.to_owned(),
            },
            ChmodError::Syntax => CopyError::ChmodSyntax {
                value: v.to_owned(),
            },
        }),
    }
}

fn parse_chown(value: Option<&str>) -> Result<Option<Chown>, CopyError> {
    value
        .filter(|v| !v.is_empty())
        .map(Chown::parse)
        .transpose()
}

impl CopyParams {
    fn new(instr: &'static str, sources: Vec<SourceSpec>, dest: &str, workdir: &str) -> Self {
        CopyParams {
            instr,
            sources,
            dest: dest.to_owned(),
            workdir: workdir.to_owned(),
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            checksum: None,
            unpack_local: false,
            unpack_remote: false,
            timestamp: 0,
            scratch_dir: None,
            downloads: Mutex::new(BTreeMap::new()),
        }
    }

    /// The parameters of an expanded `COPY` in a stage whose WORKDIR is `workdir`.
    pub(crate) fn from_copy(c: &CopyInstruction, workdir: &str) -> Result<Self, CopyError> {
        let mut p = CopyParams::new("COPY", classify("COPY", &c.sources)?, &c.dest, workdir);
        p.chown = parse_chown(c.chown.as_ref().map(|s| s.as_str()))?;
        p.chmod = parse_chmod(c.chmod.as_ref().map(|s| s.as_str()))?;
        p.link = c.link && p.chmod.is_none();
        p.parents = c.parents;
        p.exclude = c.exclude.iter().map(|e| e.value.clone()).collect();
        Ok(p)
    }

    /// The parameters of an expanded `ADD` in a stage whose WORKDIR is `workdir`.
    pub(crate) fn from_add(a: &AddInstruction, workdir: &str) -> Result<Self, CopyError> {
        let mut p = CopyParams::new("ADD", classify("ADD", &a.sources)?, &a.dest, workdir);
        p.chown = parse_chown(a.chown.as_ref().map(|s| s.as_str()))?;
        p.chmod = parse_chmod(a.chmod.as_ref().map(|s| s.as_str()))?;
        p.link = a.link && p.chmod.is_none();
        p.exclude = a.exclude.iter().map(|e| e.value.clone()).collect();
        if let Some(c) = a.checksum.as_ref().filter(|c| !c.is_empty()) {
            if p.sources.len() != 1 {
                return Err(CopyError::ChecksumUse {
                    reason: "checksum can't be specified for multiple sources",
                });
            }
            if !matches!(p.sources[0], SourceSpec::Url(_)) {
                return Err(CopyError::ChecksumUse {
                    reason: "checksum requires HTTP(S) or Git sources",
                });
            }
            p.checksum = Some(Checksum::parse(c)?);
        }
        p.unpack_local = a.unpack != Some(false);
        p.unpack_remote = a.unpack == Some(true);
        Ok(p)
    }

    /// Whether this is ADD.
    pub(crate) fn is_add(&self) -> bool {
        self.instr == "ADD"
    }

    /// The destination as an absolute, cleaned list of components, and whether it names a
    /// directory to copy into (a trailing `/` or `/.`, `.`, or an empty destination), as
    /// BuildKit's `pathRelativeToWorkingDir` and fsutil's `Copy` read it.
    pub(crate) fn dest_path(&self) -> (Vec<String>, bool) {
        let dest = self.dest.as_str();
        let dest = if dest.is_empty() || dest == "." {
            "./"
        } else {
            dest
        };
        let joined = if dest.starts_with('/') {
            dest.to_owned()
        } else {
            format!("{}/{}", self.workdir, dest)
        };
        let into = dest.ends_with('/') || dest.ends_with("/.");
        (clean(&joined), into)
    }
}

/// Splits a path into cleaned components: `.` dropped, `..` removing the previous one and
/// clamped at the root (Go's `path.Join("/", p)`).
pub(crate) fn clean(path: &str) -> Vec<String> {
    dockerfile::filepath_clean(&format!("/{path}"))
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The file name BuildKit gives a download: the last element of the URL's (decoded) path,
/// or `__unnamed__`.
pub(crate) fn url_file_name(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "__unnamed__".to_owned();
    };
    let raw = u.path().as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                decoded.push(b);
                i += 3;
                continue;
            }
        }
        decoded.push(raw[i]);
        i += 1;
    }
    let path = String::from_utf8_lossy(&decoded);
    match path.split('/').rfind(|p| !p.is_empty()) {
        Some(base) if base != "." => base.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_05_checksum_formats() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(Checksum::parse(&ok).is_ok());
        assert!(Checksum::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        let reason = |v: &str| match Checksum::parse(v) {
            Err(CopyError::ChecksumFormat { reason, .. }) => reason,
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(reason(&"a".repeat(64)), "invalid checksum digest format");
        assert_eq!(
            reason(&format!("md5:{}", "a".repeat(32))),
            "unsupported digest algorithm"
        );
        assert_eq!(reason("unknown:abc"), "unsupported digest algorithm");
        assert_eq!(reason("sha256:abc"), "invalid checksum digest length");
        assert_eq!(
            reason(&format!("sha256:{}", "A".repeat(64))),
            "invalid checksum digest format"
        );
        assert_eq!(reason("sha256:"), "invalid checksum digest format");
    }

    #[test]
    fn add_03_url_file_names() {
        assert_eq!(url_file_name("http://127.0.0.1:5/foo"), "foo");
        assert_eq!(
            url_file_name("http://127.0.0.1:5/a/t.tar.gz?x=1#y"),
            "t.tar.gz"
        );
        assert_eq!(url_file_name("http://127.0.0.1:5/"), "__unnamed__");
        assert_eq!(url_file_name("http://127.0.0.1:5"), "__unnamed__");
        assert_eq!(url_file_name("http://127.0.0.1:5/dir/"), "dir");
        assert_eq!(url_file_name("http://127.0.0.1:5/a%20b"), "a b");
    }

    #[test]
    fn git_sources_are_recognised() {
        assert!(is_git("git://host/repo"));
        assert!(is_git("git@github.com:org/repo.git"));
        assert!(is_git("https://host/org/repo.git#main"));
        assert!(!is_git("https://host/file.tar.gz"));
        assert!(!is_git("./a@b:c"));
        assert!(!is_git("foo:bar"));
        assert!(!is_git("github.com/org/repo"));
    }

    #[test]
    fn chown_values() {
        let c = Chown::parse("1000:nobody").unwrap();
        assert_eq!(c.user, IdSpec::Id(1000));
        assert_eq!(c.group, Some(IdSpec::Name("nobody".into())));
        assert!(c.has_names());
        assert!(!Chown::parse("root:0").unwrap().has_names());
        assert!(Chown::parse(":x").is_err());
        assert!(Chown::parse("a:b:c").is_err());
    }
}
