//! `USER name[:group]` resolution against the image's `/etc/passwd` and `/etc/group`, with
//! runc's rules (which BuildKit uses).

use std::path::PathBuf;

use super::error::SandboxError;
use super::spec::User;
use crate::fsview::LayeredView;
use crate::passwd::{MAX_ACCOUNT_FILE, group_entries, passwd_entries};

/// Resolves a Dockerfile `USER` value (`name`, `uid`, `name:group`, `uid:gid`, ...) against
/// the `/etc/passwd` and `/etc/group` of the root made of `lowers` (overlay-format snapshot
/// directories, topmost first; a plain root directory is a stack of one). The files are read
/// through the layers, following symlinks only inside the root.
///
/// The rules are runc's: a name must exist; a number that is not in the file is used as it
/// is (with group 0 when no group is given); an explicit group replaces the supplementary
/// groups, otherwise they are every group of `/etc/group` that lists the user by name. The
/// primary group comes first in [`User::additional_gids`].
///
/// ```no_run
/// # use std::path::PathBuf;
/// let user = rbuild_sandbox::resolve_user(&[PathBuf::from("/snapshots/base")], "nobody")?;
/// assert_eq!(user.uid, 65534);
/// # Ok::<(), rbuild_sandbox::SandboxError>(())
/// ```
pub fn resolve_user(lowers: &[PathBuf], user: &str) -> Result<User, SandboxError> {
    let layers = LayeredView::new(lowers.to_vec());
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |path: &str| -> Result<String, SandboxError> {
        Ok(layers
            .read_file_strict(path, MAX_ACCOUNT_FILE)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;

    let numeric_user: Option<u32> = user_part.parse().ok();
    let matched = if user_part.is_empty() {
        passwd_entries(&passwd).find(|e| e.uid == 0)
    } else {
        passwd_entries(&passwd).find(|e| match numeric_user {
            Some(n) => e.uid == n,
            None => e.name == user_part,
        })
    };
    let (uid, mut gid, home, name) = match (&matched, numeric_user) {
        (Some(e), _) => (
            e.uid,
            e.gid,
            (!e.home.is_empty()).then(|| e.home.to_owned()),
            Some(e.name),
        ),
        (None, Some(n)) => (n, 0, None, None),
        (None, None) if user_part.is_empty() => (0, 0, None, None),
        (None, None) => {
            return Err(SandboxError::UserNotFound {
                name: user_part.to_owned(),
            });
        }
    };

    let mut additional = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(&group)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| SandboxError::GroupNotFound { name: g.to_owned() })?,
            };
        }
        _ => {
            if let Some(name) = name {
                additional.extend(
                    group_entries(&group)
                        .filter(|e| e.members.contains(&name))
                        .map(|e| e.gid),
                );
            }
        }
    }
    let mut additional_gids = vec![gid];
    for g in additional {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A base image with a huge (sparse) /etc/passwd or /etc/group: `USER name` fails
    /// naming the file and the cap instead of reading it all.
    #[test]
    fn oversized_account_files_are_refused() {
        for file in ["passwd", "group"] {
            let t = tempfile::tempdir().unwrap();
            fs::create_dir(t.path().join("etc")).unwrap();
            fs::write(t.path().join("etc/passwd"), "app:x:7:7::/:/bin/sh\n").unwrap();
            fs::File::create(t.path().join("etc").join(file))
                .unwrap()
                .set_len(MAX_ACCOUNT_FILE + 1)
                .unwrap();
            match resolve_user(&[t.path().to_path_buf()], "app") {
                Err(SandboxError::FileTooLarge { path, limit }) => {
                    assert_eq!((path, limit), (format!("/etc/{file}"), MAX_ACCOUNT_FILE));
                }
                other => panic!("{file}: expected FileTooLarge, got {other:?}"),
            }
        }
    }

    #[test]
    fn runc_rules() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnodejs:x:1001:1001::/home/nodejs:/bin/sh\nbad line\n",
        )
        .unwrap();
        fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nnodejs:x:1001:\nwheel:x:10:nodejs,root\naudio:x:29:nodejs\n",
        )
        .unwrap();
        let l = [t.path().to_path_buf()];
        let u = resolve_user(&l, "nodejs").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (1001, 1001, vec![1001, 10, 29])
        );
        assert_eq!(u.home.as_deref(), Some("/home/nodejs"));
        let u = resolve_user(&l, "nodejs:wheel").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1001, 10, vec![10]));
        let u = resolve_user(&l, "1001").unwrap();
        assert_eq!((u.uid, u.gid), (1001, 1001));
        let u = resolve_user(&l, "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 0, None));
        let u = resolve_user(&l, "4242:77").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
        assert!(matches!(
            resolve_user(&l, "nope"),
            Err(SandboxError::UserNotFound { .. })
        ));
        assert!(matches!(
            resolve_user(&l, "root:nope"),
            Err(SandboxError::GroupNotFound { .. })
        ));
    }
}
