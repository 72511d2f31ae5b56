//! CLI commands that write into a data dir (`ringchat admin …`, `restore`, `backup`, `migrate`
//! on an embedded store) run as the user who owns it. Run as anyone else (root, typically,
//! on a .deb or systemd install where the service runs as `ringchat`), they would leave files
//! the server cannot read or replace: the admin credentials file is written 0600 and renamed
//! into place, so a root-owned one locks every operator out; store files opened by root stay
//! root's. A data dir that does not exist yet belongs to whoever makes it.
//!
//! A volume mounted for a group (Kubernetes' `fsGroup`: the mount point stays root's, its group
//! becomes the server's and may write) is not its owner's: there the files the server made in
//! it say whose data it is, so its group's members may write when everything in it is theirs.
//! Only a root-owned dir is taken for such a volume: one another user owns is that user's.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Where user names are looked up (only to say which user to run as).
const PASSWD: &str = "/etc/passwd";

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "{dir} is owned by uid {owner}{owner_name}, and this runs as uid {caller}: files written \
         now would belong to uid {caller}, which the server may not be able to read or replace. \
         Run it as that user: sudo -u {user} ringchat {command} …",
        owner_name = name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
        user = name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("'#{owner}'")),
    )]
    WrongUser {
        dir: PathBuf,
        owner: u32,
        name: Option<String>,
        caller: u32,
        command: String,
    },
    #[error("{dir}: cannot read its owner: {source}")]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The rule: a caller may write into a dir it owns, or one that does not exist yet (`owner`
/// `None`). Root is no exception: what it writes would be root's.
pub fn may_write(caller: u32, owner: Option<u32>) -> bool {
    owner.is_none_or(|owner| owner == caller)
}

/// Entries a freshly made file system has in its root, which no server made (mkfs.ext4's).
const MADE_BY_MKFS: &[&str] = &["lost+found"];

/// Whether a dir of group `group` with `mode` lets one of `caller_groups` write in it.
pub fn group_may_write(caller_groups: &[u32], group: u32, mode: u32) -> bool {
    mode & 0o020 != 0 && caller_groups.contains(&group)
}

/// Checks that this process (its effective uid) may write into `dir` for `command` (e.g.
/// `admin add-user`, named in the error's suggestion).
pub fn ensure(dir: &Path, command: &str) -> Result<(), OwnerError> {
    let unreadable = |dir: &Path, source| OwnerError::Unreadable {
        dir: dir.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(unreadable(dir, source)),
    };
    let caller = rustix::process::geteuid().as_raw();
    let wrong = |dir: &Path, owner: u32| OwnerError::WrongUser {
        dir: dir.to_owned(),
        owner,
        name: user_name(owner),
        caller,
        command: command.to_owned(),
    };
    if may_write(caller, Some(meta.uid())) {
        return Ok(());
    }
    // Only a root-owned mount point is a group's volume: a dir some other user owns is that
    // user's, whatever its group may write (an empty one says nothing about whose it is).
    if meta.uid() != 0 || !group_may_write(&caller_groups(), meta.gid(), meta.mode()) {
        return Err(wrong(dir, meta.uid()));
    }
    // The group's volume: whatever the server already made in it must be the caller's.
    for entry in std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))? {
        let entry = entry.map_err(|e| unreadable(dir, e))?;
        if MADE_BY_MKFS.iter().any(|n| entry.file_name() == *n) {
            continue;
        }
        let path = entry.path();
        let owner = std::fs::symlink_metadata(&path)
            .map_err(|e| unreadable(&path, e))?
            .uid();
        if !may_write(caller, Some(owner)) {
            return Err(wrong(&path, owner));
        }
    }
    Ok(())
}

/// This process's effective gid and its supplementary groups.
fn caller_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = rustix::process::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.push(rustix::process::getegid().as_raw());
    groups
}

/// The name of `uid` in /etc/passwd, if it is there.
fn user_name(uid: u32) -> Option<String> {
    name_in_passwd(&std::fs::read_to_string(PASSWD).ok()?, uid)
}

fn name_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_may_write_and_a_missing_dir_is_anyones() {
        assert!(may_write(1000, Some(1000)));
        assert!(may_write(0, Some(0)));
        assert!(may_write(0, None));
        assert!(may_write(1000, None));
        // root into the service user's dir: refused, that is the lock-out.
        assert!(!may_write(0, Some(998)));
        assert!(!may_write(1000, Some(998)));
        assert!(!may_write(998, Some(0)));
    }

    #[test]
    fn the_error_names_the_owner_and_the_command_to_run() {
        let err = OwnerError::WrongUser {
            dir: "/var/lib/ringchat".into(),
            owner: 998,
            name: Some("ringchat".into()),
            caller: 0,
            command: "admin add-user".into(),
        }
        .to_string();
        assert!(err.contains("uid 998 (ringchat)"), "{err}");
        assert!(
            err.contains("sudo -u ringchat ringchat admin add-user"),
            "{err}"
        );
        let unnamed = OwnerError::WrongUser {
            dir: "/data".into(),
            owner: 10001,
            name: None,
            caller: 0,
            command: "restore".into(),
        }
        .to_string();
        assert!(
            unnamed.contains("sudo -u '#10001' ringchat restore"),
            "{unnamed}"
        );
    }

    #[test]
    fn a_group_may_write_only_with_the_group_write_bit_and_membership() {
        // fsGroup's volume: root:10001, 2775.
        assert!(group_may_write(&[10001], 10001, 0o42775));
        assert!(!group_may_write(&[10001], 10001, 0o40755));
        assert!(!group_may_write(&[0, 998], 10001, 0o42775));
    }

    #[test]
    fn names_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nringchat:x:998:998:ringchat server:/var/lib/ringchat:/usr/sbin/nologin\n";
        assert_eq!(name_in_passwd(passwd, 998).as_deref(), Some("ringchat"));
        assert_eq!(name_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_in_passwd(passwd, 5), None);
    }

    #[test]
    fn a_missing_dir_passes_and_ones_own_dir_passes() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&dir.path().join("not-yet"), "admin add-key").unwrap();
        // Made by this process: its own.
        ensure(dir.path(), "admin add-key").unwrap();
    }
}
