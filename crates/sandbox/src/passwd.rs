//! The one reader of `/etc/passwd` and `/etc/group` lines. Its callers keep their own
//! rules: `USER` in the sandbox (runc's, `sandbox::resolve_user`) and `--chown` in COPY/ADD
//! (BuildKit's, `copy::users`).

/// The largest `/etc/passwd` or `/etc/group` read from an image (a file of 100 000 users
/// is about 6 MiB): a base image cannot make a build read gigabytes into memory.
pub const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// One `/etc/passwd` entry (`name:password:uid:gid:gecos:home:shell`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    /// The user name.
    pub name: &'a str,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The home directory (empty when the field is).
    pub home: &'a str,
}

/// One `/etc/group` entry (`name:password:gid:member,member`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    /// The group name.
    pub name: &'a str,
    /// The group id.
    pub gid: u32,
    /// The users listed as members, by name.
    pub members: Vec<&'a str>,
}

/// The entries of passwd-format text, in file order. Comment lines, lines with fewer than
/// four fields and lines whose ids are not numbers are skipped.
pub fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].trim().parse().ok()?,
            gid: f[3].trim().parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// The entries of group-format text, in file order. Comment lines, lines with fewer than
/// three fields and lines whose gid is not a number are skipped.
pub fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_skip_what_is_not_one() {
        let passwd =
            "# comment:x:0:0\nroot:x:0:0:root:/root:/bin/sh\n\nshort:x:1\nbad:x:y:1::\nd:x: 2 :3\n";
        let users: Vec<_> = passwd_entries(passwd)
            .map(|e| (e.name, e.uid, e.gid, e.home))
            .collect();
        assert_eq!(users, [("root", 0, 0, "/root"), ("d", 2, 3, "")]);
        let groups: Vec<_> = group_entries("#x:x:1:\nwheel:x:10: a, ,b\nnogroup:x:65534\nbad:x:\n")
            .map(|e| (e.name, e.gid, e.members))
            .collect();
        assert_eq!(
            groups,
            [("wheel", 10, vec!["a", "b"]), ("nogroup", 65534, vec![])]
        );
    }
}
