//! Operators' credentials: admin users (argon2id password hashes) and API keys (SHA-256 of a
//! 256-bit random key), in `DATA_DIR/admin/credentials.json`.
//!
//! A file beside the store, not the store: `ringchat admin add-user` must work while the server
//! runs (the store's data dir is locked by the server) and before it ever ran. Every change
//! takes an exclusive lock on `credentials.lock`, reads the file afresh, and replaces it whole
//! (write, fsync, rename, fsync the directory), so the CLI and the server never lose each
//! other's changes. The server re-reads the file when its identity (inode, size, mtime)
//! changes, so a key revoked by the CLI is refused from the next request on.
//!
//! The CLI's audit entries wait in `cli-audit.jsonl` (appended under the same lock) until the
//! server moves them into the audit log.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Role;
use crate::store::AuditRecord;

/// The directory in the data dir that holds the files below.
pub const ADMIN_DIR: &str = "admin";
pub const CREDENTIALS_FILE: &str = "credentials.json";
const LOCK_FILE: &str = "credentials.lock";
pub const CLI_AUDIT_FILE: &str = "cli-audit.jsonl";
/// Operator names: 1–64 bytes of ASCII letters, digits, `.`, `_`, `-`.
pub const OPERATOR_NAME_BYTES_MAX: usize = 64;
/// Admin users and API keys each, at most.
pub const CREDENTIALS_MAX: usize = 1_000;
/// Prefix of every API key, so that a leaked one is recognisable (secret scanners).
pub const API_KEY_PREFIX: &str = "rck_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsData {
    pub users: Vec<AdminUser>,
    pub keys: Vec<ApiKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    pub role: Role,
    /// argon2id, PHC string.
    pub password_hash: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the key, lowercase hex: the key itself is shown once and never stored.
    pub key_sha256: String,
    pub created_ms: u64,
    pub created_by: String,
    /// When the operator or key named in `created_by` was made: a later one of the same name
    /// (removed, then added again) is not this key's maker. `None`: made on the CLI, or
    /// before this was kept (the name alone then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker_created_ms: Option<u64>,
}

impl CredentialsData {
    pub fn user(&self, name: &str) -> Option<&AdminUser> {
        self.users.iter().find(|u| u.name == name)
    }

    /// What `key` may do: at most the role of whoever made it, while they still exist. An
    /// operator removed or demoted takes the keys they made with them (and a key made with a
    /// key follows that key); a key made on the CLI, by whoever runs it on the host, stands
    /// alone. `None`: its maker is gone.
    pub fn key_role(&self, key: &ApiKey) -> Option<Role> {
        let mut role = key.role;
        let mut key = key;
        let same = |made: u64, want: Option<u64>| want.is_none_or(|w| w == made);
        // A chain of keys is at most every key long.
        for _ in 0..=self.keys.len() {
            let by = key.created_by.as_str();
            if let Some(name) = by.strip_prefix("admin:") {
                let maker = self.user(name)?;
                return same(maker.created_ms, key.maker_created_ms).then(|| role.min(maker.role));
            }
            let Some(name) = by.strip_prefix("key:") else {
                return Some(role);
            };
            let maker = self.keys.iter().find(|k| k.name == name)?;
            if !same(maker.created_ms, key.maker_created_ms) {
                return None;
            }
            role = role.min(maker.role);
            key = maker;
        }
        None
    }

    /// When the maker `actor` (`admin:NAME` or `key:NAME`) was made, if it is one.
    pub fn maker_created_ms(&self, actor: &str) -> Option<u64> {
        if let Some(name) = actor.strip_prefix("admin:") {
            return self.user(name).map(|u| u.created_ms);
        }
        let name = actor.strip_prefix("key:")?;
        self.keys
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.created_ms)
    }

    pub fn key_by_secret(&self, secret: &str) -> Option<&ApiKey> {
        self.key_by_hash(&key_hash(secret))
    }

    /// The key whose SHA-256 (lowercase hex, as kept) is `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.key_sha256 == hash)
    }
}

/// Checks an operator or key name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > OPERATOR_NAME_BYTES_MAX {
        return Err(format!(
            "a name is 1 to {OPERATOR_NAME_BYTES_MAX} bytes long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("a name holds only ASCII letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

pub fn key_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh API key and its hash.
pub fn new_api_key() -> std::io::Result<(String, String)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    let secret = format!("{API_KEY_PREFIX}{}", hex(&raw));
    let hash = key_hash(&secret);
    Ok((secret, hash))
}

/// Identity of the file's current version: a rename or a rewrite changes it.
type Stamp = (u64, u64, std::time::SystemTime);

fn stamp(path: &Path) -> std::io::Result<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.ino(), m.len(), m.modified()?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The credentials file of one data dir.
pub struct CredentialFile {
    dir: PathBuf,
    cached: Mutex<(Option<Stamp>, Arc<CredentialsData>)>,
}

impl CredentialFile {
    /// `data_dir` is the server's `storage.data_dir`; the files live in its `admin/`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join(ADMIN_DIR),
            cached: Mutex::new((None, Arc::default())),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(CREDENTIALS_FILE)
    }

    /// The credentials as the file holds them now (re-read only when it changed).
    pub fn current(&self) -> std::io::Result<Arc<CredentialsData>> {
        let path = self.path();
        let now = stamp(&path)?;
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != now || now.is_none() {
            let data = match now {
                None => CredentialsData::default(),
                Some(_) => read(&path)?,
            };
            *cached = (now, Arc::new(data));
        }
        Ok(Arc::clone(&cached.1))
    }

    /// Changes the credentials under the lock: `change` sees the file's current content and
    /// either edits it (then it is written) or refuses (then nothing is written).
    pub fn update<R, E: From<std::io::Error>>(
        &self,
        change: impl FnOnce(&mut CredentialsData) -> Result<R, E>,
    ) -> Result<R, E> {
        let _lock = self.lock()?;
        let path = self.path();
        let mut data = match stamp(&path)? {
            None => CredentialsData::default(),
            Some(_) => read(&path)?,
        };
        let out = change(&mut data)?;
        write_atomically(
            &self.dir,
            &path,
            &serde_json::to_vec_pretty(&data).map_err(std::io::Error::other)?,
        )?;
        Ok(out)
    }

    /// Appends an audit entry for the server to import (the CLI's actions).
    pub fn queue_audit(&self, record: &AuditRecord) -> std::io::Result<()> {
        let _lock = self.lock()?;
        let mut line =
            serde_json::to_vec(&CliAudit::from(record.clone())).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CLI_AUDIT_FILE))?;
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The CLI's queued audit entries, and how many bytes of the queue they are: the queue
    /// keeps them until [`Self::confirm_queued_audit`] says they are stored. A line that does
    /// not parse is kept as an entry saying so, never dropped silently.
    pub fn peek_queued_audit(&self) -> std::io::Result<(Vec<AuditRecord>, usize)> {
        let path = self.dir.join(CLI_AUDIT_FILE);
        if stamp(&path)?.is_none() {
            return Ok((Vec::new(), 0));
        }
        let _lock = self.lock()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        // Whole lines only: a line the CLI is still writing waits for the next look.
        let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let records = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| match serde_json::from_str::<CliAudit>(line) {
                Ok(a) => a.into(),
                Err(err) => AuditRecord {
                    at_ms: crate::time::now_ms(),
                    actor: "system".into(),
                    action: "audit.unreadable_cli_entry".into(),
                    target: String::new(),
                    from: String::new(),
                    detail: format!("{err}: {}", line.chars().take(200).collect::<String>()),
                },
            })
            .collect();
        Ok((records, text.len()))
    }

    /// The first `bytes` of the queue (as [`Self::peek_queued_audit`] read them) are stored:
    /// they leave the queue; what the CLI appended since stays.
    pub fn confirm_queued_audit(&self, bytes: usize) -> std::io::Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let path = self.dir.join(CLI_AUDIT_FILE);
        let _lock = self.lock()?;
        let text = std::fs::read(&path)?;
        let rest = text.get(bytes..).unwrap_or_default();
        if rest.is_empty() {
            std::fs::remove_file(&path)
        } else {
            write_atomically(&self.dir, &path, rest)
        }
    }

    fn lock(&self) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))?;
        f.lock()?;
        Ok(f)
    }
}

/// An audit entry as the CLI queues it (JSON: the store's record is postcard).
#[derive(Serialize, Deserialize)]
struct CliAudit {
    at_ms: u64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

impl From<AuditRecord> for CliAudit {
    fn from(r: AuditRecord) -> Self {
        Self {
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
        }
    }
}

impl From<CliAudit> for AuditRecord {
    fn from(a: CliAudit) -> Self {
        Self {
            at_ms: a.at_ms,
            actor: a.actor,
            action: a.action,
            target: a.target,
            from: "cli".into(),
            detail: a.detail,
        }
    }
}

fn read(path: &Path) -> std::io::Result<CredentialsData> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Replaces `path` whole: a crash leaves the old file or the new one, never a mix.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_written_whole_and_seen_by_another_reader() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CredentialFile::new(dir.path());
        let reader = CredentialFile::new(dir.path());
        assert!(reader.current().unwrap().users.is_empty());
        let (secret, hash) = new_api_key().unwrap();
        writer
            .update(|c| {
                c.keys.push(ApiKey {
                    name: "deploy".into(),
                    role: Role::Viewer,
                    key_sha256: hash.clone(),
                    created_ms: 1,
                    created_by: "cli:root".into(),
                    maker_created_ms: None,
                });
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        let seen = reader.current().unwrap();
        assert_eq!(seen.key_by_secret(&secret).unwrap().name, "deploy");
        assert!(seen.key_by_secret("rck_wrong").is_none());
        writer
            .update(|c| {
                c.keys.clear();
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        assert!(reader.current().unwrap().key_by_secret(&secret).is_none());
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = CredentialFile::new(dir.path());
        let r: Result<(), std::io::Error> = file.update(|c| {
            c.keys.clear();
            Err(std::io::Error::other("no"))
        });
        assert!(r.is_err());
        assert!(!dir.path().join("admin").join(CREDENTIALS_FILE).exists());
    }

    #[test]
    fn queued_cli_audit_leaves_the_queue_only_once_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = CredentialFile::new(dir.path());
        let rec = AuditRecord {
            at_ms: 5,
            actor: "cli:root".into(),
            action: "admin.user_add".into(),
            target: "admin:alice".into(),
            from: String::new(),
            detail: String::new(),
        };
        file.queue_audit(&rec).unwrap();
        file.queue_audit(&rec).unwrap();
        let (taken, bytes) = file.peek_queued_audit().unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].from, "cli");
        // Not confirmed (the store did not take them): still queued.
        assert_eq!(file.peek_queued_audit().unwrap().0.len(), 2);
        // One more queued meanwhile stays after the first two are confirmed.
        file.queue_audit(&AuditRecord {
            action: "admin.key_add".into(),
            ..rec.clone()
        })
        .unwrap();
        file.confirm_queued_audit(bytes).unwrap();
        let (left, bytes) = file.peek_queued_audit().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].action, "admin.key_add");
        file.confirm_queued_audit(bytes).unwrap();
        assert!(file.peek_queued_audit().unwrap().0.is_empty());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ops-team.1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_key_acts_with_at_most_its_makers_role_while_the_maker_exists() {
        let user = |name: &str, role| AdminUser {
            name: name.into(),
            role,
            password_hash: String::new(),
            created_ms: 1,
        };
        let key = |name: &str, role, by: &str| ApiKey {
            name: name.into(),
            role,
            key_sha256: name.into(),
            created_ms: 1,
            created_by: by.into(),
            maker_created_ms: None,
        };
        let mut c = CredentialsData {
            users: vec![user("alice", Role::Admin)],
            keys: vec![
                key("from-cli", Role::Admin, "cli:root"),
                key("alices", Role::Admin, "admin:alice"),
                key("child", Role::Admin, "key:alices"),
                key("loop-a", Role::Admin, "key:loop-b"),
                key("loop-b", Role::Admin, "key:loop-a"),
            ],
        };
        let role = |c: &CredentialsData, name: &str| {
            c.key_role(c.keys.iter().find(|k| k.name == name).unwrap())
        };
        assert_eq!(role(&c, "from-cli"), Some(Role::Admin));
        assert_eq!(role(&c, "alices"), Some(Role::Admin));
        assert_eq!(role(&c, "child"), Some(Role::Admin));
        assert_eq!(role(&c, "loop-a"), None, "a cycle names no maker");
        c.users[0].role = Role::Viewer;
        assert_eq!(role(&c, "alices"), Some(Role::Viewer), "demoted with alice");
        assert_eq!(role(&c, "child"), Some(Role::Viewer));
        c.users.clear();
        assert_eq!(role(&c, "alices"), None, "removed with alice");
        assert_eq!(role(&c, "child"), None);
        assert_eq!(role(&c, "from-cli"), Some(Role::Admin));
        // Another operator named alice later is not the maker of the old alice's keys.
        c.users.push(AdminUser {
            created_ms: 2,
            ..user("alice", Role::Admin)
        });
        c.keys[1].maker_created_ms = Some(1);
        c.keys[2].maker_created_ms = Some(1);
        assert_eq!(role(&c, "alices"), None, "a new alice");
        assert_eq!(role(&c, "child"), None);
        c.keys[1].maker_created_ms = Some(2);
        assert_eq!(role(&c, "alices"), Some(Role::Admin));
        assert_eq!(role(&c, "child"), Some(Role::Admin));
    }
}
