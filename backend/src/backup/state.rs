//! The server's state kept in the data dir beside the store, in a backup (`state/` in it):
//! the live configuration changes (`config.overrides.toml`: IP rules, live limits), operators
//! and API keys (`admin/credentials.json`), the CLI's audit entries the server has not moved
//! into the audit log yet (`admin/cli-audit.jsonl`) and the active-user history
//! (`activity/`). Without them a restored server would come back with its IP rules, limits
//! and operators gone.
//!
//! Each file's path, size, xxh3 and mode are in the manifest. Restore checks them before it
//! writes anything and puts each file back with its mode (the credentials stay 0600); it
//! writes only to the paths listed here, whatever a manifest names. Each file but one is
//! replaced whole by its writer (rename), so a copy made while the server runs is one version
//! of it; the CLI's audit queue is appended to in place, a line at a time, so its copy keeps
//! whole lines only (a line half written when copied is imported by the server after this
//! backup's point). The state is copied before the store's snapshot is taken (`archive::write`):
//! an entry the server imports meanwhile is in the snapshot or in the state, never in neither.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{copy_file, copy_hashing, hash_file, set_mode};
use super::{BackupError, sync_parent};
use crate::admin::auth::credentials::{ADMIN_DIR, CLI_AUDIT_FILE, CREDENTIALS_FILE};
use crate::config::CONFIG_OVERRIDES_FILE;
use crate::observe::ACTIVITY_DIR;

/// The directory of a backup holding the state.
pub const STATE_DIR: &str = "state";
/// Files of one kept directory taken, at most (`activity/` holds one per day kept, a few
/// hundred): a directory filled by something else does not make a backup unbounded.
pub const STATE_DIR_FILES_MAX: usize = 10_000;
/// Permission bits a restored file may get, at most: never writable by others, whatever a
/// manifest says.
const RESTORED_MODE_MAX: u32 = 0o644;

/// What a backup holds of the state (in its manifest), and what a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCopy {
    pub files: Vec<StateFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Relative to the data dir, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// xxh3 of its bytes, hex.
    pub xxh3: String,
    /// Its permission bits in the data dir, given back at restore.
    pub mode: u32,
}

impl StateCopy {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// What is kept, relative to the data dir: a file, or (`true`) a directory's files.
fn kept() -> [(String, bool); 4] {
    [
        (CONFIG_OVERRIDES_FILE.to_owned(), false),
        (format!("{ADMIN_DIR}/{CREDENTIALS_FILE}"), false),
        (cli_audit(), false),
        (ACTIVITY_DIR.to_owned(), true),
    ]
}

/// Whether a manifest's `path` is one [`kept`] can hold: restore writes nowhere else.
fn allowed(path: &str) -> bool {
    kept().iter().any(|(kept, is_dir)| {
        if !is_dir {
            return path == kept;
        }
        path.strip_prefix(kept.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "..")
    })
}

/// The kept files `data_dir` holds, relative, in order (what is absent is not kept).
fn listed(data_dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    for (kept, is_dir) in kept() {
        let path = data_dir.join(&kept);
        if !is_dir {
            if path.is_file() {
                out.push(kept);
            }
            continue;
        }
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BackupError::io(&path)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(BackupError::io(&path))?;
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if names.len() == STATE_DIR_FILES_MAX {
                return Err(BackupError::Spec(format!(
                    "{} holds more than {STATE_DIR_FILES_MAX} files: not backed up",
                    path.display()
                )));
            }
            names.push(name);
        }
        names.sort();
        out.extend(names.into_iter().map(|name| format!("{kept}/{name}")));
    }
    Ok(out)
}

/// Copies the state of `data_dir` into `backup/state`. A file deleted meanwhile (an old
/// activity day) is left out.
pub fn copy_out(data_dir: &Path, backup: &Path) -> Result<StateCopy, BackupError> {
    let dest = backup.join(STATE_DIR);
    let mut copy = StateCopy::default();
    for rel in listed(data_dir)? {
        let from = data_dir.join(&rel);
        let mode = match fs::metadata(&from) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BackupError::io(&from)(e)),
        };
        let copied = if rel == cli_audit() {
            copy_whole_lines(&from, &dest.join(&rel))?
        } else {
            copy_hashing(&from, &dest.join(&rel))?
        };
        let Some((bytes, hash)) = copied else {
            continue;
        };
        copy.files.push(StateFile {
            path: rel,
            bytes,
            xxh3: format!("{hash:016x}"),
            mode,
        });
    }
    Ok(copy)
}

fn cli_audit() -> String {
    format!("{ADMIN_DIR}/{CLI_AUDIT_FILE}")
}

/// Copies the whole lines of `from` to `to` durably, private to its owner: their length and
/// xxh3. `None`: `from` is gone. For a file appended to a line at a time while it is read.
fn copy_whole_lines(from: &Path, to: &Path) -> Result<Option<(u64, u64)>, BackupError> {
    let text = match fs::read(from) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BackupError::io(from)(e)),
    };
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = &text[..whole];
    if let Some(parent) = to.parent() {
        super::create_private_dir_all(parent)?;
    }
    let mut file = super::create_private_file(to).map_err(BackupError::io(to))?;
    io::Write::write_all(&mut file, text).map_err(BackupError::io(to))?;
    file.sync_all().map_err(BackupError::io(to))?;
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    hash.update(text);
    Ok(Some((text.len() as u64, hash.digest())))
}

/// Checks the state files of the backup in `backup` against its manifest's `expected`,
/// writing nothing.
pub fn check(backup: &Path, expected: &StateCopy) -> Result<(), BackupError> {
    for file in &expected.files {
        if !allowed(&file.path) {
            return Err(BackupError::Corrupt(format!(
                "the backup's manifest names {:?} as server state: not a file a backup keeps",
                file.path
            )));
        }
        let path = backup.join(STATE_DIR).join(&file.path);
        let (bytes, hash) = hash_file(&path)?;
        let hash = format!("{hash:016x}");
        if (bytes, &hash) != (file.bytes, &file.xxh3) {
            return Err(BackupError::Corrupt(format!(
                "backup state file {} is damaged: {bytes} bytes with hash {hash}, the manifest says {} bytes with hash {}",
                path.display(),
                file.bytes,
                file.xxh3
            )));
        }
    }
    Ok(())
}

/// Puts a backup's state files back into `data_dir`, each with its mode. The backup is
/// [`check`]ed before this.
pub fn copy_in(backup: &Path, data_dir: &Path, expected: &StateCopy) -> Result<(), BackupError> {
    for file in &expected.files {
        let (from, to) = (
            backup.join(STATE_DIR).join(&file.path),
            data_dir.join(&file.path),
        );
        if copy_file(&from, &to)?.is_none() {
            return Err(BackupError::Corrupt(format!(
                "{} is gone from the backup",
                from.display()
            )));
        }
        set_mode(&to, file.mode & RESTORED_MODE_MAX)?;
        sync_parent(&to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
