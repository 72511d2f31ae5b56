//! CLI commands that write into a data dir (`ringchat admin …`, `restore`, `backup`, `migrate`
//! on an embedded store) run as the user who owns it. Run as anyone else (root, typically,
//! on a .deb or systemd install where the service runs as `ringchat`), they would leave files
//! the server cannot read or replace: the admin credentials file is written 0600 and renamed
//! into place, so a root-owned one locks every operator out; store files opened by root stay
//! root's. A data dir that does not exist yet belongs to whoever makes it.

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

/// Checks that this process (its effective uid) may write into `dir` for `command` (e.g.
/// `admin add-user`, named in the error's suggestion).
pub fn ensure(dir: &Path, command: &str) -> Result<(), OwnerError> {
    let owner = match std::fs::metadata(dir) {
        Ok(m) => Some(m.uid()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(OwnerError::Unreadable {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    let caller = rustix::process::geteuid().as_raw();
    match owner {
        Some(owner) if !may_write(caller, Some(owner)) => Err(OwnerError::WrongUser {
            dir: dir.to_owned(),
            owner,
            name: user_name(owner),
            caller,
            command: command.to_owned(),
        }),
        _ => Ok(()),
    }
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
