//! Docker's `--user` (`user`, `uid`, `user:group`, `uid:gid`, any mix) resolved against the
//! container's `/etc/passwd` and `/etc/group`, with docker's (runc's) rules: a name must
//! exist, a number need not; a matched user brings its primary group, home and the
//! supplementary groups listing it; an explicit `:group` replaces the primary group and
//! brings no supplementary ones. After `Setup` the agent's `/` is the container's, so the
//! files read are the image's.

use std::io;

use agent_proto::User;

/// The container's user database.
const PASSWD: &str = "/etc/passwd";
/// The container's group database.
const GROUP: &str = "/etc/group";

/// Errors from resolving a user spec; the messages are docker's.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name that is not in the passwd file.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// A group name that is not in the group file.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A file exists but cannot be read.
    #[error("cannot read {0}")]
    Read(&'static str, #[source] io::Error),
}

/// A resolved identity and the home directory for `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// uid, gid and supplementary groups.
    pub user: User,
    /// The passwd entry's home directory, `/` without one.
    pub home: String,
}

/// One passwd line.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One group line.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Resolves `spec` against this root's `/etc/passwd` and `/etc/group` (missing files count
/// as empty).
pub fn resolve_in_root(spec: &str) -> Result<Resolved, UserError> {
    resolve(spec, &read(PASSWD)?, &read(GROUP)?)
}

fn read(path: &'static str) -> Result<String, UserError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(UserError::Read(path, e)),
    }
}

/// Resolves `spec` against the contents of a passwd and a group file.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Resolved, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // An empty user is root, looked up like any other (docker's default).
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let wanted_uid = user_part.parse::<u32>().ok();
    let entry = passwd
        .lines()
        .filter_map(parse_passwd)
        .find(|e| e.name == user_part || Some(e.uid) == wanted_uid);
    let (mut resolved, name) = match (entry, wanted_uid) {
        (Some(e), _) => (identity(e.uid, e.gid, e.home), Some(e.name)),
        (None, Some(uid)) => (identity(uid, 0, "/"), None),
        (None, None) => return Err(UserError::NoUser(user_part.to_owned())),
    };
    let groups = group.lines().filter_map(parse_group);
    match group_part {
        Some(g) if !g.is_empty() => {
            let wanted_gid = g.parse::<u32>().ok();
            let found = groups
                .into_iter()
                .find(|e| e.name == g || Some(e.gid) == wanted_gid);
            resolved.user.gid = match (found, wanted_gid) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => return Err(UserError::NoGroup(g.to_owned())),
            };
        }
        _ => {
            if let Some(name) = name {
                resolved.user.additional_gids = groups
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(resolved)
}

fn identity(uid: u32, gid: u32, home: &str) -> Resolved {
    Resolved {
        user: User {
            uid,
            gid,
            additional_gids: Vec::new(),
        },
        home: if home.is_empty() { "/" } else { home }.to_owned(),
    }
}

/// `name:password:uid:gid:gecos:home:shell`; comments and malformed lines are skipped.
fn parse_passwd(line: &str) -> Option<PasswdEntry<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 4 || fields[0].is_empty() {
        return None;
    }
    Some(PasswdEntry {
        name: fields[0],
        uid: fields[2].trim().parse().ok()?,
        gid: fields[3].trim().parse().ok()?,
        home: fields.get(5).copied().unwrap_or(""),
    })
}

/// `name:password:gid:member,member`; comments and malformed lines are skipped.
fn parse_group(line: &str) -> Option<GroupEntry<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 3 || fields[0].is_empty() {
        return None;
    }
    let members = fields
        .get(3)
        .map(|m| {
            m.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(GroupEntry {
        name: fields[0],
        gid: fields[2].trim().parse().ok()?,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
broken line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www:x:33:33::/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:www
staff:x:50:www, nobody
audio:x:29:nobody
nogroup:x:65534:
";

    fn ids(spec: &str) -> (u32, u32, Vec<u32>, String) {
        let r = resolve(spec, PASSWD, GROUP).unwrap();
        (r.user.uid, r.user.gid, r.user.additional_gids, r.home)
    }

    #[test]
    fn names_bring_group_home_and_supplementary_groups() {
        assert_eq!(ids("www"), (33, 33, vec![1, 50], "/var/www".into()));
        assert_eq!(
            ids("nobody"),
            (65534, 65534, vec![50, 29], "/nonexistent".into())
        );
        assert_eq!(ids("root"), (0, 0, vec![], "/root".into()));
    }

    #[test]
    fn numeric_uids_match_entries_or_run_as_gid_0() {
        assert_eq!(ids("33"), (33, 33, vec![1, 50], "/var/www".into()));
        assert_eq!(ids("1000"), (1000, 0, vec![], "/".into()));
        assert_eq!(ids(""), (0, 0, vec![], "/root".into()));
    }

    #[test]
    fn explicit_groups_replace_the_primary_and_drop_supplementary() {
        assert_eq!(ids("1000:1000"), (1000, 1000, vec![], "/".into()));
        assert_eq!(ids("www:audio"), (33, 29, vec![], "/var/www".into()));
        assert_eq!(ids("nobody:0"), (65534, 0, vec![], "/nonexistent".into()));
        assert_eq!(ids(":staff"), (0, 50, vec![], "/root".into()));
        assert_eq!(ids("www:"), (33, 33, vec![1, 50], "/var/www".into()));
    }

    #[test]
    fn unknown_names_are_docker_errors() {
        let err = resolve("x", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user x: no matching entries in passwd file"
        );
        let err = resolve("www:wheel", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group wheel: no matching entries in group file"
        );
        assert!(matches!(resolve("root", "", ""), Err(UserError::NoUser(_))));
        assert_eq!(resolve("0:0", "", "").unwrap().home, "/");
    }
}
