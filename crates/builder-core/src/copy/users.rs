//! `--chown` resolution: numeric ids as they are, names through the destination image's
//! /etc/passwd and /etc/group (read inside the image's root).

use std::path::Path;

use super::error::CopyError;
use super::params::{Chown, IdSpec};
use crate::fsview::LayeredView;
use crate::passwd::{MAX_ACCOUNT_FILE, group_entries, passwd_entries};

/// Finds `name` in passwd-format text: (uid, primary gid).
fn passwd_lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    passwd_entries(text)
        .find(|e| e.name == name)
        .map(|e| (e.uid, e.gid))
}

/// Finds `name` in group-format text: its gid.
fn group_lookup(text: &str, name: &str) -> Option<u32> {
    group_entries(text).find(|e| e.name == name).map(|e| e.gid)
}

fn read(view: Option<&LayeredView>, path: &str) -> Result<String, CopyError> {
    let Some(view) = view else {
        return Ok(String::new());
    };
    match view.read_file(Path::new(path), MAX_ACCOUNT_FILE) {
        Ok(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => Ok(String::new()),
        Err(e) => Err(CopyError::Io {
            op: "read the image's",
            path: path.into(),
            source: e,
        }),
    }
}

/// The (uid, gid) a `--chown` value stands for in the image seen through `view` (`None`:
/// an empty image, or `--link`, where only numbers and `root` work). A user alone brings
/// its primary group; a numeric user alone is also the gid.
pub(crate) fn resolve_chown(
    instr: &'static str,
    chown: &Chown,
    view: Option<&LayeredView>,
    link: bool,
) -> Result<(u32, u32), CopyError> {
    if link && chown.has_names() {
        return Err(CopyError::ChownNameWithLink {
            instr,
            value: chown.raw.clone(),
        });
    }
    let (uid, mut gid) = match &chown.user {
        IdSpec::Id(n) => (*n, *n),
        IdSpec::Name(name) => {
            let passwd = read(view, "/etc/passwd")?;
            match passwd_lookup(&passwd, name) {
                Some(ids) => ids,
                None if name == "root" => (0, 0),
                None => {
                    return Err(CopyError::UnknownUser {
                        instr,
                        value: chown.raw.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    };
    match &chown.group {
        None => {}
        Some(IdSpec::Id(n)) => gid = *n,
        Some(IdSpec::Name(name)) => {
            let group = read(view, "/etc/group")?;
            gid = match group_lookup(&group, name) {
                Some(g) => g,
                None if name == "root" => 0,
                None => {
                    return Err(CopyError::UnknownGroup {
                        instr,
                        value: chown.raw.clone(),
                        name: name.clone(),
                    });
                }
            };
        }
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\ndaemon:x:1:1::/:/bin/false\nbad:x:y:1::\n";
        assert_eq!(passwd_lookup(passwd, "daemon"), Some((1, 1)));
        assert_eq!(passwd_lookup(passwd, "bad"), None);
        assert_eq!(passwd_lookup(passwd, "nobody"), None);
        assert_eq!(group_lookup("nogroup:x:65534:\n", "nogroup"), Some(65534));
    }

    /// A base image with a huge (sparse) /etc/passwd or /etc/group: `--chown=NAME` fails
    /// naming the file and the cap instead of reading it all.
    #[test]
    fn oversized_account_files_are_refused() {
        for (file, chown) in [("passwd", "app"), ("group", "0:app")] {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir(t.path().join("etc")).unwrap();
            std::fs::write(t.path().join("etc/passwd"), "app:x:7:7::/:/bin/sh\n").unwrap();
            std::fs::write(t.path().join("etc/group"), "app:x:7:\n").unwrap();
            std::fs::File::create(t.path().join("etc").join(file))
                .unwrap()
                .set_len(MAX_ACCOUNT_FILE + 1)
                .unwrap();
            let view = LayeredView::new(vec![t.path().to_path_buf()]);
            let chown = Chown::parse(chown).unwrap();
            let err = resolve_chown("COPY", &chown, Some(&view), false).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("/etc/{file}")) && text.contains("larger than 16777216"),
                "{text}"
            );
        }
    }
}
