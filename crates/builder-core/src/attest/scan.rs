//! Finds the packages installed in a filesystem: Debian (`/var/lib/dpkg/status`,
//! `status.d/`), Alpine (`/lib/apk/db/installed`), npm (`node_modules/**/package.json`),
//! Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`) and Go binaries (their embedded
//! build info). Works on any [`Tree`], so the engine scans its layer snapshots in place and
//! tests scan plain directories.

use std::collections::BTreeMap;
use std::io;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file, with its size and whether any execute bit is set.
    File {
        /// Size in bytes.
        size: u64,
        /// An execute bit is set.
        executable: bool,
    },
    /// Anything else (symlinks are not followed).
    Other,
}

/// A read-only filesystem to scan, by absolute path (`/usr/lib`).
pub trait Tree {
    /// The entries of a directory, in any order; empty when it is not one.
    fn read_dir(&self, path: &str) -> io::Result<Vec<(String, EntryKind)>>;
    /// A regular file's bytes; `None` when it is not a regular file.
    fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
}

/// A plain directory as a [`Tree`].
#[derive(Debug, Clone)]
pub struct DirTree(pub std::path::PathBuf);

impl DirTree {
    fn host(&self, path: &str) -> std::path::PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl Tree for DirTree {
    fn read_dir(&self, path: &str) -> io::Result<Vec<(String, EntryKind)>> {
        use std::os::unix::fs::PermissionsExt;
        let rd = match std::fs::read_dir(self.host(path)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let m = e.metadata()?;
            let kind = if m.is_dir() {
                EntryKind::Dir
            } else if m.is_file() {
                EntryKind::File {
                    size: m.len(),
                    executable: m.permissions().mode() & 0o111 != 0,
                }
            } else {
                EntryKind::Other
            };
            out.push((e.file_name().to_string_lossy().into_owned(), kind));
        }
        Ok(out)
    }

    fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = self.host(path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => std::fs::read(&p).map(Some),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The ecosystem a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ecosystem {
    /// A Debian package (dpkg).
    Deb,
    /// An Alpine package (apk).
    Apk,
    /// An npm package.
    Npm,
    /// A Python distribution.
    Python,
    /// A Go module linked into a binary.
    Go,
}

/// A package found in the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Package {
    /// Its ecosystem.
    pub ecosystem: Ecosystem,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its package URL.
    pub purl: String,
    /// The license its metadata declares (an SPDX expression or the text given).
    pub license: Option<String>,
    /// Who supplies it (a dpkg `Maintainer`, an npm `author`), when known.
    pub supplier: Option<String>,
    /// Where it was found (the database file or the package's metadata file).
    pub location: String,
}

/// Directories never descended into while looking for npm, Python and Go metadata.
const SKIP_DIRS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/cache",
    "/var/lib/dpkg",
];
/// Go binaries bigger than this are not read.
const MAX_BINARY: u64 = 256 << 20;

/// Every package found in `tree`, sorted and without duplicates.
pub fn scan(tree: &dyn Tree) -> io::Result<Vec<Package>> {
    let distro = os_release(tree)?;
    let mut out = Vec::new();
    dpkg(tree, &distro, &mut out)?;
    apk(tree, &distro, &mut out)?;
    walk(tree, "/", 0, &mut out)?;
    out.sort();
    out.dedup_by(|a, b| a.ecosystem == b.ecosystem && a.purl == b.purl && a.location == b.location);
    Ok(out)
}

/// `(ID, VERSION_ID)` of `/etc/os-release`.
fn os_release(tree: &dyn Tree) -> io::Result<(String, String)> {
    let text = match tree.read_file("/etc/os-release")? {
        Some(b) => b,
        None => tree.read_file("/usr/lib/os-release")?.unwrap_or_default(),
    };
    let text = String::from_utf8_lossy(&text);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    Ok((field("ID"), field("VERSION_ID")))
}

/// RFC 822-style paragraphs (dpkg status): field name to value, continuation lines joined.
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(k) = &last {
                if let Some(v) = cur.get_mut(k) {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_owned(), v.trim().to_owned());
            last = Some(k.to_owned());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn purl_part(s: &str) -> String {
    super::provenance::purl_escape(s)
}

fn dpkg(tree: &dyn Tree, distro: &(String, String), out: &mut Vec<Package>) -> io::Result<()> {
    let mut dbs = vec!["/var/lib/dpkg/status".to_owned()];
    for (name, kind) in tree.read_dir("/var/lib/dpkg/status.d")? {
        if matches!(kind, EntryKind::File { .. }) && !name.ends_with(".md5sums") {
            dbs.push(format!("/var/lib/dpkg/status.d/{name}"));
        }
    }
    let ns = if distro.0.is_empty() {
        "debian"
    } else {
        &distro.0
    };
    for db in dbs {
        let Some(bytes) = tree.read_file(&db)? else {
            continue;
        };
        for p in paragraphs(&String::from_utf8_lossy(&bytes)) {
            let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
                continue;
            };
            // Only installed packages (status.d entries have no Status field).
            if let Some(st) = p.get("Status") {
                if !st.ends_with(" installed") {
                    continue;
                }
            }
            let arch = p.get("Architecture").cloned().unwrap_or_default();
            let mut quals = vec![format!("arch={}", purl_part(&arch))];
            if let Some(src) = p.get("Source") {
                // `Source: name (version)` when the source version differs.
                let (sname, sver) = match src.split_once(' ') {
                    Some((n, v)) => (n, Some(v.trim_matches(['(', ')']))),
                    None => (src.as_str(), None),
                };
                let upstream = match sver {
                    Some(v) => format!("{sname}@{v}"),
                    None => sname.to_owned(),
                };
                quals.push(format!("upstream={}", purl_part(&upstream)));
            }
            if !distro.1.is_empty() {
                quals.push(format!(
                    "distro={}",
                    purl_part(&format!("{ns}-{}", distro.1))
                ));
            }
            let license = deb_license(tree, name)?;
            out.push(Package {
                ecosystem: Ecosystem::Deb,
                name: name.clone(),
                version: version.clone(),
                purl: format!(
                    "pkg:deb/{}/{}@{}?{}",
                    purl_part(ns),
                    purl_part(name),
                    purl_part(version),
                    quals.join("&")
                ),
                license,
                supplier: p.get("Maintainer").cloned(),
                location: db.clone(),
            });
        }
    }
    Ok(())
}

/// The licenses a Debian package's machine-readable `copyright` file names.
fn deb_license(tree: &dyn Tree, name: &str) -> io::Result<Option<String>> {
    let Some(b) = tree.read_file(&format!("/usr/share/doc/{name}/copyright"))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&b);
    let mut found: Vec<String> = Vec::new();
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("License:") {
            let v = v.trim();
            if !v.is_empty() && !found.iter().any(|f| f == v) {
                found.push(v.to_owned());
            }
        }
    }
    Ok((!found.is_empty()).then(|| found.join(" AND ")))
}

fn apk(tree: &dyn Tree, distro: &(String, String), out: &mut Vec<Package>) -> io::Result<()> {
    let db = "/lib/apk/db/installed";
    let Some(bytes) = tree.read_file(db)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes);
    let ns = if distro.0.is_empty() {
        "alpine"
    } else {
        &distro.0
    };
    for block in text.split("\n\n") {
        let mut f: BTreeMap<char, String> = BTreeMap::new();
        for l in block.lines() {
            let mut c = l.chars();
            if let (Some(k), Some(':')) = (c.next(), c.next()) {
                f.entry(k).or_insert_with(|| c.as_str().to_owned());
            }
        }
        let (Some(name), Some(version)) = (f.get(&'P'), f.get(&'V')) else {
            continue;
        };
        let mut quals = Vec::new();
        if let Some(a) = f.get(&'A') {
            quals.push(format!("arch={}", purl_part(a)));
        }
        if let Some(o) = f.get(&'o').filter(|o| *o != name) {
            quals.push(format!("upstream={}", purl_part(o)));
        }
        if !distro.1.is_empty() {
            quals.push(format!(
                "distro={}",
                purl_part(&format!("{ns}-{}", distro.1))
            ));
        }
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.clone(),
            version: version.clone(),
            purl: format!(
                "pkg:apk/{}/{}@{}{}{}",
                purl_part(ns),
                purl_part(name),
                purl_part(version),
                if quals.is_empty() { "" } else { "?" },
                quals.join("&")
            ),
            license: f.get(&'L').cloned(),
            supplier: f.get(&'m').cloned(),
            location: db.to_owned(),
        });
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Walks the tree for npm packages, Python distributions and Go binaries.
fn walk(tree: &dyn Tree, dir: &str, depth: usize, out: &mut Vec<Package>) -> io::Result<()> {
    if depth > 64 || SKIP_DIRS.contains(&dir) {
        return Ok(());
    }
    let mut entries = tree.read_dir(dir)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let in_node_modules = dir.ends_with("/node_modules")
        || dir
            .rsplit_once('/')
            .is_some_and(|(parent, n)| n.starts_with('@') && parent.ends_with("/node_modules"));
    for (name, kind) in &entries {
        let path = join(dir, name);
        match kind {
            EntryKind::Dir => {
                if in_node_modules && !name.starts_with('@') && !name.starts_with('.') {
                    npm_package(tree, &path, out)?;
                }
                if name.ends_with(".dist-info") {
                    python(tree, &format!("{path}/METADATA"), out)?;
                } else if name.ends_with(".egg-info") {
                    python(tree, &format!("{path}/PKG-INFO"), out)?;
                }
                walk(tree, &path, depth + 1, out)?;
            }
            EntryKind::File { size, executable } => {
                if name.ends_with(".egg-info") {
                    python(tree, &path, out)?;
                } else if *executable && *size > 4096 && *size <= MAX_BINARY {
                    go_binary(tree, &path, out)?;
                }
            }
            EntryKind::Other => {}
        }
    }
    Ok(())
}

fn npm_package(tree: &dyn Tree, dir: &str, out: &mut Vec<Package>) -> io::Result<()> {
    let path = format!("{dir}/package.json");
    let Some(b) = tree.read_file(&path)? else {
        return Ok(());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else {
        return Ok(());
    };
    let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) else {
        return Ok(());
    };
    let license = match &v["license"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("type").and_then(|t| t.as_str()).map(str::to_owned),
        _ => v["licenses"].as_array().map(|a| {
            a.iter()
                .filter_map(|l| l["type"].as_str().or(l.as_str()))
                .collect::<Vec<_>>()
                .join(" OR ")
        }),
    }
    .filter(|l| !l.is_empty());
    let supplier = match &v["author"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("name").and_then(|t| t.as_str()).map(str::to_owned),
        _ => None,
    };
    let purl_name = match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => {
            format!("{}/{}", purl_part(scope), purl_part(n))
        }
        _ => purl_part(name),
    };
    out.push(Package {
        ecosystem: Ecosystem::Npm,
        name: name.to_owned(),
        version: version.to_owned(),
        purl: format!("pkg:npm/{purl_name}@{}", purl_part(version)),
        license,
        supplier,
        location: path,
    });
    Ok(())
}

fn python(tree: &dyn Tree, path: &str, out: &mut Vec<Package>) -> io::Result<()> {
    let Some(b) = tree.read_file(path)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&b);
    // The headers end at the first blank line (the description follows).
    let head = text.split("\n\n").next().unwrap_or("");
    let field = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v != "UNKNOWN")
    };
    let (Some(name), Some(version)) = (field("Name"), field("Version")) else {
        return Ok(());
    };
    let license = field("License-Expression").or_else(|| field("License"));
    let normalized: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    out.push(Package {
        ecosystem: Ecosystem::Python,
        purl: format!(
            "pkg:pypi/{}@{}",
            purl_part(&normalized),
            purl_part(&version)
        ),
        name,
        version,
        license,
        supplier: field("Author"),
        location: path.to_owned(),
    });
    Ok(())
}

/// The magic that starts a Go binary's build info blob.
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Go 1.18+ binaries: the modules of the embedded build info (`mod`/`dep` lines).
fn go_binary(tree: &dyn Tree, path: &str, out: &mut Vec<Package>) -> io::Result<()> {
    let Some(b) = tree.read_file(path)? else {
        return Ok(());
    };
    if !b.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(at) = memchr_find(&b, GO_BUILDINFO_MAGIC) else {
        return Ok(());
    };
    // Header: 14 magic, 1 pointer size, 1 flags; flag 2 means inline varint strings.
    let hdr = &b[at..];
    if hdr.len() < 32 || hdr[15] & 2 == 0 {
        return Ok(()); // pre-1.18 layout (pointers into the data section): not read
    }
    let mut rest = &hdr[32..];
    let Some(_go_version) = varint_str(&mut rest) else {
        return Ok(());
    };
    let Some(modinfo) = varint_str(&mut rest) else {
        return Ok(());
    };
    // modinfo is framed by 16 bytes on each side.
    if modinfo.len() < 32 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]).into_owned();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(kind), Some(module), Some(version)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if (kind != "mod" && kind != "dep") || version == "(devel)" {
            continue;
        }
        let (ns, name) = match module.rsplit_once('/') {
            Some((ns, n)) => (
                ns.split('/').map(purl_part).collect::<Vec<_>>().join("/") + "/",
                purl_part(n),
            ),
            None => (String::new(), purl_part(module)),
        };
        out.push(Package {
            ecosystem: Ecosystem::Go,
            name: module.to_owned(),
            version: version.to_owned(),
            purl: format!("pkg:golang/{ns}{name}@{}", purl_part(version)),
            license: None,
            supplier: None,
            location: path.to_owned(),
        });
    }
    Ok(())
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn varint_str<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut n: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let byte = *rest.get(i)?;
        n |= u64::from(byte & 0x7f) << shift;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let n = usize::try_from(n).ok()?;
    let s = rest.get(i..i.checked_add(n)?)?;
    *rest = &rest[i + n..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, path: &str, body: &str) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn finds_deb_apk_npm_and_python_packages() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        write(
            r,
            "/var/lib/dpkg/status",
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n",
        );
        write(
            r,
            "/usr/share/doc/libc6/copyright",
            "Files: *\nLicense: LGPL-2.1+\n\nFiles: x\nLicense: GPL-2+\n",
        );
        write(
            r,
            "/lib/apk/db/installed",
            "P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r5\n",
        );
        write(
            r,
            "/app/node_modules/express/package.json",
            r#"{"name":"express","version":"4.19.2","license":"MIT"}"#,
        );
        write(
            r,
            "/app/node_modules/@types/node/package.json",
            r#"{"name":"@types/node","version":"20.1.0"}"#,
        );
        write(
            r,
            "/app/node_modules/express/node_modules/debug/package.json",
            r#"{"name":"debug","version":"2.6.9"}"#,
        );
        write(
            r,
            "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nName: not-this\n",
        );
        let pk = scan(&DirTree(r.to_owned())).unwrap();
        let purls: Vec<&str> = pk.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&upstream=glibc&distro=debian-12",
                "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
                "pkg:apk/debian/busybox@1.36.1-r5?distro=debian-12",
                "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12",
                "pkg:npm/%40types/node@20.1.0",
                "pkg:npm/debug@2.6.9",
                "pkg:npm/express@4.19.2",
                "pkg:pypi/six@1.16.0",
            ]
        );
        assert_eq!(pk[0].license.as_deref(), Some("LGPL-2.1+ AND GPL-2+"));
        assert_eq!(pk[6].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn reads_go_build_info() {
        let modinfo = "0123456789abcdefpath\texample.com/cmd\nmod\texample.com/cmd\t(devel)\t\ndep\tgolang.org/x/sys\tv0.15.0\th1:x=\n0123456789abcdef";
        let mut blob = b"\x7fELF".to_vec();
        blob.extend_from_slice(&[0; 5000]);
        let mut hdr = GO_BUILDINFO_MAGIC.to_vec();
        hdr.push(8);
        hdr.push(2);
        hdr.resize(32, 0);
        blob.extend_from_slice(&hdr);
        blob.push(8);
        blob.extend_from_slice(b"go1.22.1");
        blob.push(modinfo.len() as u8);
        blob.extend_from_slice(modinfo.as_bytes());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("usr/bin/tool");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &blob).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pk = scan(&DirTree(d.path().to_owned())).unwrap();
        assert_eq!(pk.len(), 1, "{pk:?}");
        assert_eq!(pk[0].purl, "pkg:golang/golang.org/x/sys@v0.15.0");
    }
}
