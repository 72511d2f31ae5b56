//! Backup, restore and migration between stores, all on the store-neutral dump
//! (`store/dump.rs`):
//!
//! - `spec.rs`: `embedded:DIR`, `backup:DIR`, `postgres:URL`, `scylla:HOSTS`, and opening them;
//! - `copy.rs`: a resumable copy part by part in bounded batches, with a checkpoint file;
//! - `verify.rs`: per-part counts and checksums, compared;
//! - `archive.rs`: a backup directory (manifest + one dump file per part), written from one
//!   snapshot and read back as a [`crate::store::dump::DumpView`];
//! - `files.rs`, `state.rs`: beside the dump, local file storage's files and the server's
//!   state in the data dir (live configuration changes, operators, activity);
//! - `commands.rs`: what `ringchat migrate`, `restore` and `backup` do;
//! - `server.rs`: `[backup]`, the scheduled backups and the ones the admin API asks for.
//!
//! A backup is the dump format rather than a copy of fjall's files: it is store-neutral (a
//! backup of the embedded store restores into PostgreSQL as well, and `migrate` reads it),
//! every part carries its count and checksum, it does not depend on fjall's file format
//! version, and it is written from a snapshot without stopping any writer.

pub mod archive;
pub mod commands;
pub mod config;
pub mod copy;
pub mod files;
mod scylla_env;
pub mod server;
pub mod spec;
pub mod state;
pub mod verify;

pub use config::BackupConfig;

use std::path::PathBuf;

use crate::store::StoreError;

/// Records per batch read from a source and imported into a destination, by default: about
/// 1 MiB of 64-byte messages, and one commit (one fsync) per batch.
pub const BATCH_RECORDS_DEFAULT: usize = 8192;
/// Largest batch a command line may ask for.
pub const BATCH_RECORDS_MAX: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Spec(String),
    /// The destination holds data and no checkpoint of this copy.
    #[error("{0}")]
    NotEmpty(String),
    /// A backup's files are not what its manifest says.
    #[error("{0}")]
    Corrupt(String),
    /// Source and destination (or backup and manifest) differ after a copy.
    #[error("verification failed: {0}")]
    Mismatch(String),
}

impl BackupError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Mode of every file a backup or restore creates: a backup holds every message, e-mail
/// address, password hash and token, so it is its owner's only, whatever the umask.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory a backup or restore creates (and of the parents it creates).
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` (or truncates it) with [`PRIVATE_FILE_MODE`] when it is new.
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// `create_dir_all` with [`PRIVATE_DIR_MODE`] for every directory it creates.
pub(crate) fn create_private_dir_all(path: &std::path::Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(BackupError::io(path))
}

/// Writes `bytes` to `path` durably and atomically (a temporary file renamed over it), with
/// [`PRIVATE_FILE_MODE`].
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = create_private_file(&tmp).map_err(BackupError::io(&tmp))?;
    file.write_all(bytes).map_err(BackupError::io(&tmp))?;
    file.sync_all().map_err(BackupError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(BackupError::io(path))?;
    sync_parent(path)
}

/// Fsyncs the directory holding `path`, so that a rename or a new entry in it is durable.
pub(crate) fn sync_parent(path: &std::path::Path) -> Result<(), BackupError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(parent))
}
#[cfg(test)]
pub(crate) mod tests;
