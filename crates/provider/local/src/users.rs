//! Users a unit may run as (`user:`): looked up in the host's user database, so that the agent
//! can hand a uid and gid to `CommandExt::uid`/`gid` and give the data dir to that user.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A user of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// The user `name` of this host, `None` when there is none. Asks `getent passwd` first (so
/// that NSS sources such as LDAP count), else reads `/etc/passwd`.
///
/// # Errors
/// When neither `getent` runs nor `/etc/passwd` can be read.
pub fn lookup_user(name: &str) -> io::Result<Option<User>> {
    if let Ok(out) = Command::new("getent").args(["passwd", name]).output() {
        // getent exits 2 for "no such key"; anything else unusual falls back to the file.
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return Ok(text.lines().find_map(|l| parse_passwd_line(l, name)));
        }
        if out.status.code() == Some(2) {
            return Ok(None);
        }
    }
    let text = std::fs::read_to_string("/etc/passwd")?;
    Ok(text.lines().find_map(|l| parse_passwd_line(l, name)))
}

/// One `name:x:uid:gid:gecos:home:shell` line, if it is `name`'s and well formed.
fn parse_passwd_line(line: &str, name: &str) -> Option<User> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 || fields[0] != name {
        return None;
    }
    Some(User {
        name: name.to_string(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        home: PathBuf::from(fields[5]),
    })
}

/// Gives `dir` and everything under it to `user`: what a restore or an earlier run as another
/// user wrote there must stay readable by the process (PostgreSQL refuses a data directory it
/// does not own). Symbolic links are changed themselves, never followed.
///
/// # Errors
/// The first entry that cannot be read or changed.
pub(crate) fn chown_tree(dir: &Path, user: &User) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.uid() != user.uid || meta.gid() != user.gid {
        std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// The first directory above `dir` that `user` may not pass through (no search permission for
/// it as owner, group member by primary group, or other), if any: the unit's working directory
/// is its data dir, so the process could not even start. Supplementary groups are not
/// considered (the process does not keep them).
pub(crate) fn unreachable_ancestor(dir: &Path, user: &User) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return None;
    }
    for a in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        let mode = m.mode();
        let ok = if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Some(a.to_path_buf());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_are_parsed_for_the_name_asked() {
        let line = "postgres:x:104:106:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash";
        let u = parse_passwd_line(line, "postgres").unwrap();
        assert_eq!((u.uid, u.gid), (104, 106));
        assert_eq!(u.home, PathBuf::from("/var/lib/postgresql"));
        assert_eq!(parse_passwd_line(line, "post"), None);
        assert_eq!(
            parse_passwd_line("postgres:x:notanumber:1:::", "postgres"),
            None
        );
    }

    #[test]
    fn root_exists_and_a_made_up_user_does_not() {
        assert_eq!(lookup_user("root").unwrap().map(|u| u.uid), Some(0));
        assert_eq!(lookup_user("phoenix-no-such-user-x").unwrap(), None);
    }
}
