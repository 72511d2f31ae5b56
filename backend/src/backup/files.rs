//! The files of local file storage in a backup (`files/` in the backup directory, beside the
//! store's dump): blobs, file metas, thumbnails, the users' file index and the reference
//! markers. Uploads in progress (`uploads/`), the records of completed ones kept for their
//! retries (`uploads_done/`, removed by the upload cleanup after `files.upload_lifetime_s`)
//! and the adapter's temporary files (`.tmp/`) are skipped: an upload not completed is not a
//! file yet, and its client starts it again.
//!
//! The server keeps running during an online backup: a file deleted between its listing and
//! its copy (a failed complete's blob record, a pruned directory) is left out and counted in
//! the backup's log line; it is not an error.
//!
//! Blobs are content-addressed and never changed (a write makes a new file and renames it), so
//! a blob already in the previous backup is hard-linked from there instead of copied: a backup
//! costs the bytes of the blobs made since the last one. Everything else is small and copied.
//! Every file is fsync'ed before the manifest names the backup complete.
//!
//! With S3 storage the bucket is not copied: its own versioning and replication are the
//! backup of the files (README, "Backups").

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use xxhash_rust::xxh3::Xxh3;

use super::{BackupError, create_private_dir_all, create_private_file};

/// The directory of a backup holding the files.
pub const FILES_DIR: &str = "files";
/// Top-level directories of the storage that are not backed up.
const SKIPPED: [&str; 3] = ["uploads", "uploads_done", ".tmp"];

/// What a backup holds of the files (in its manifest), and what a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesCopy {
    /// Files (storage objects) in the backup.
    pub objects: u64,
    pub bytes: u64,
    /// Of them, blobs hard-linked from the previous backup rather than copied.
    #[serde(default)]
    pub linked: u64,
    /// xxh3 (hex) over every file's path and length in name order, and the xxh3 of the bytes
    /// of every file but the blobs (a blob's name is the SHA-256 of its bytes, checked apart):
    /// what `verify-backup` and `restore` check a backup's files against. Absent in backups
    /// written before it existed: those are checked by count, size and blob hashes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Where a backup takes the files from.
#[derive(Debug, Clone)]
pub struct FilesSource {
    /// The local adapter's directory (`files.dir`).
    pub root: PathBuf,
    /// The newest earlier backup, whose blobs are linked rather than copied.
    pub previous: Option<PathBuf>,
}

/// Counts, sizes and the digest of a tree of files, fed in walk order.
struct Tree {
    objects: u64,
    bytes: u64,
    hash: Xxh3,
}

impl Tree {
    fn new() -> Self {
        Self {
            objects: 0,
            bytes: 0,
            hash: Xxh3::new(),
        }
    }

    /// One file: `content` is the xxh3 of its bytes, `None` for a blob.
    fn add(&mut self, rel: &Path, len: u64, content: Option<u64>) {
        let name = rel.as_os_str().as_encoded_bytes();
        self.hash.update(&(name.len() as u64).to_le_bytes());
        self.hash.update(name);
        self.hash.update(&len.to_le_bytes());
        match content {
            Some(h) => {
                self.hash.update(&[1]);
                self.hash.update(&h.to_le_bytes());
            }
            None => self.hash.update(&[0]),
        }
        self.objects += 1;
        self.bytes += len;
    }

    fn digest(&self) -> String {
        format!("{:016x}", self.hash.digest())
    }
}

/// Copies the files of `source` into `backup/files`.
pub fn copy_out(source: &FilesSource, backup: &Path) -> Result<FilesCopy, BackupError> {
    copy_out_observed(source, backup, &mut |_| {})
}

/// [`copy_out`], calling `before_copy` with each listed file's path before it is copied (tests
/// delete files there, as the running server may).
fn copy_out_observed(
    source: &FilesSource,
    backup: &Path,
    before_copy: &mut dyn FnMut(&Path),
) -> Result<FilesCopy, BackupError> {
    let dest = backup.join(FILES_DIR);
    let previous = source.previous.as_ref().map(|p| p.join(FILES_DIR));
    let mut tree = Tree::new();
    let (mut linked, mut vanished) = (0, 0u64);
    let mut gone_at_copy = 0u64;
    walk(
        &source.root,
        Path::new(""),
        Some(&mut vanished),
        &mut |rel, len| {
            before_copy(rel);
            let from = source.root.join(rel);
            let to = dest.join(rel);
            if !is_blob(rel) {
                // Hashed as copied: the digest covers the bytes the backup holds.
                let Some((len, content)) = copy_hashing(&from, &to)? else {
                    gone_at_copy += 1;
                    return Ok(());
                };
                tree.add(rel, len, Some(content));
                return Ok(());
            }
            let old = previous.as_ref().map(|p| p.join(rel));
            let is_linked = old.is_some_and(|old| {
                matches!(fs::metadata(&old), Ok(m) if m.len() == len)
                    && ensure_parent(&to).is_ok()
                    && fs::hard_link(&old, &to).is_ok()
            });
            let len = if is_linked {
                // The previous backup's blob may be from before backups were private.
                set_mode(&to, super::PRIVATE_FILE_MODE)?;
                linked += 1;
                len
            } else {
                match copy_file(&from, &to)? {
                    Some(len) => len,
                    None => {
                        gone_at_copy += 1;
                        return Ok(());
                    }
                }
            };
            tree.add(rel, len, None);
            Ok(())
        },
    )?;
    sync_dirs(&dest)?;
    let vanished = vanished + gone_at_copy;
    if vanished > 0 {
        tracing::info!(
            vanished,
            "backup: files deleted by the server while the backup copied them are not in it"
        );
    }
    Ok(FilesCopy {
        objects: tree.objects,
        bytes: tree.bytes,
        linked,
        digest: Some(tree.digest()),
    })
}

/// Checks the files of the backup in `backup` against its manifest's `expected`, writing
/// nothing: every blob against its SHA-256 name, every other file's bytes, every name and
/// size against the digest (when the manifest has one), and the totals. A missing, extra,
/// truncated or changed file fails here.
pub fn check(backup: &Path, expected: &FilesCopy) -> Result<FilesCopy, BackupError> {
    let src = backup.join(FILES_DIR);
    let mut tree = Tree::new();
    walk(&src, Path::new(""), None, &mut |rel, _| {
        let path = src.join(rel);
        if is_blob(rel) {
            let len = check_blob(&path, rel)?;
            tree.add(rel, len, None);
        } else {
            let (len, content) = hash_file(&path)?;
            tree.add(rel, len, Some(content));
        }
        Ok(())
    })?;
    let found = FilesCopy {
        objects: tree.objects,
        bytes: tree.bytes,
        linked: expected.linked,
        digest: expected.digest.as_ref().map(|_| tree.digest()),
    };
    if (found.objects, found.bytes) != (expected.objects, expected.bytes) {
        return Err(BackupError::Corrupt(format!(
            "backup files ({}) are damaged: the manifest names {} files of {} bytes, the backup holds {} of {}",
            src.display(),
            expected.objects,
            expected.bytes,
            found.objects,
            found.bytes
        )));
    }
    if found.digest != expected.digest {
        return Err(BackupError::Corrupt(format!(
            "backup files ({}) are damaged: a file's name, size or bytes differ from the manifest's (digest {}, the manifest says {})",
            src.display(),
            found.digest.as_deref().unwrap_or_default(),
            expected.digest.as_deref().unwrap_or_default()
        )));
    }
    Ok(found)
}

/// Copies a backup's files into the storage directory `root` (absent or empty: a file already
/// there with the same size is taken as restored by an earlier, interrupted run). The backup
/// is [`check`]ed before this (restore checks everything before it writes anything); the
/// totals are compared again here, as written.
pub fn copy_in(backup: &Path, root: &Path, expected: &FilesCopy) -> Result<FilesCopy, BackupError> {
    let src = backup.join(FILES_DIR);
    let mut copy = FilesCopy::default();
    walk(&src, Path::new(""), None, &mut |rel, len| {
        let from = src.join(rel);
        let to = root.join(rel);
        if !matches!(fs::metadata(&to), Ok(m) if m.len() == len) && copy_file(&from, &to)?.is_none()
        {
            // The backup is not changed by anyone while it is restored: a file gone is damage.
            return Err(BackupError::Corrupt(format!(
                "{} is gone from the backup",
                from.display()
            )));
        }
        copy.objects += 1;
        copy.bytes += len;
        Ok(())
    })?;
    sync_dirs(root)?;
    if (copy.objects, copy.bytes) != (expected.objects, expected.bytes) {
        return Err(BackupError::Mismatch(format!(
            "files: the manifest names {} files of {} bytes, the backup holds {} of {}",
            expected.objects, expected.bytes, copy.objects, copy.bytes
        )));
    }
    Ok(copy)
}

/// Calls `f(relative path, length)` for each regular file under `root/rel`, in name order,
/// skipping [`SKIPPED`] at the top. With `vanished`, a file deleted between the directory's
/// listing and its look is skipped and counted there (a live tree); without, it is an error.
fn walk(
    root: &Path,
    rel: &Path,
    mut vanished: Option<&mut u64>,
    f: &mut dyn FnMut(&Path, u64) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let dir = root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::io(&dir)(e)),
    };
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(BackupError::io(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let path = rel.join(&name);
        let looked = entry
            .file_type()
            .and_then(|kind| Ok((kind, entry.metadata()?.len())));
        let (kind, len) = match (looked, vanished.as_deref_mut()) {
            (Ok(found), _) => found,
            (Err(e), Some(count)) if e.kind() == io::ErrorKind::NotFound => {
                *count += 1;
                continue;
            }
            (Err(e), _) => return Err(BackupError::io(entry.path())(e)),
        };
        if kind.is_dir() {
            walk(root, &path, vanished.as_deref_mut(), f)?;
        } else if kind.is_file() {
            f(&path, len)?;
        }
    }
    Ok(())
}

/// `blobs/xx/{sha256}` (not a record under `{sha256}.refs/`).
fn is_blob(rel: &Path) -> bool {
    rel.starts_with("blobs") && rel.components().count() == 3 && !is_blob_ref(rel)
}

fn is_blob_ref(rel: &Path) -> bool {
    rel.components()
        .nth(2)
        .is_some_and(|c| c.as_os_str().to_string_lossy().ends_with(".refs"))
}

/// Checks a blob's bytes against its SHA-256 name; its length.
fn check_blob(path: &Path, rel: &Path) -> Result<u64, BackupError> {
    let mut file = File::open(path).map_err(BackupError::io(path))?;
    let mut hasher = Sha256::new();
    let len = io::copy(&mut file, &mut hasher).map_err(BackupError::io(path))?;
    let hashed = crate::admin::auth::credentials::hex(&hasher.finalize());
    let named = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    if named.as_deref() != Some(hashed.as_str()) {
        return Err(BackupError::Corrupt(format!(
            "{}: its bytes hash to {hashed}, not to its name",
            path.display()
        )));
    }
    Ok(len)
}

/// A file's length and the xxh3 of its bytes.
pub(super) fn hash_file(path: &Path) -> Result<(u64, u64), BackupError> {
    let mut file = File::open(path).map_err(BackupError::io(path))?;
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(BackupError::io(path))?;
        if n == 0 {
            return Ok((len, hash.digest()));
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
}

/// Opens `from` for a copy; `None`: it is gone.
fn open_source(from: &Path) -> Result<Option<File>, BackupError> {
    match File::open(from) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::io(from)(e)),
    }
}

/// Copies `from` to `to` durably, hashing the bytes as they go: their length and xxh3.
/// `None`: `from` is gone (nothing is written).
pub(super) fn copy_hashing(from: &Path, to: &Path) -> Result<Option<(u64, u64)>, BackupError> {
    let Some(mut src) = open_source(from)? else {
        return Ok(None);
    };
    ensure_parent(to)?;
    let mut dst = create_private_file(to).map_err(BackupError::io(to))?;
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(BackupError::io(from))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(BackupError::io(to))?;
        hash.update(&buf[..n]);
        len += n as u64;
    }
    dst.sync_all().map_err(BackupError::io(to))?;
    Ok(Some((len, hash.digest())))
}

fn ensure_parent(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(parent) => create_private_dir_all(parent),
        None => Ok(()),
    }
}

/// Copies `from` to `to` durably, private to its owner (not with `from`'s mode, as
/// `fs::copy` would); the bytes copied. `None`: `from` is gone (nothing is written).
pub(super) fn copy_file(from: &Path, to: &Path) -> Result<Option<u64>, BackupError> {
    let Some(mut src) = open_source(from)? else {
        return Ok(None);
    };
    ensure_parent(to)?;
    let mut dst = create_private_file(to).map_err(BackupError::io(to))?;
    let len = io::copy(&mut src, &mut dst).map_err(BackupError::io(from))?;
    dst.sync_all().map_err(BackupError::io(to))?;
    Ok(Some(len))
}

/// Sets `path`'s permission bits to `mode`.
pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(BackupError::io(path))
}

/// Fsyncs every directory under `root` (and it), so that the new entries are durable.
fn sync_dirs(root: &Path) -> Result<(), BackupError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::io(root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(BackupError::io(root))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_dirs(&entry.path())?;
        }
    }
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(root))
}

#[cfg(test)]
mod tests;
