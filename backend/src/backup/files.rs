//! The files of local file storage in a backup (`files/` in the backup directory, beside the
//! store's dump): blobs, file metas, thumbnails, the users' file index and the reference
//! markers. Uploads in progress (`uploads/`) and the adapter's temporary files (`.tmp/`) are
//! skipped: an upload not completed is not a file yet, and its client starts it again.
//!
//! Blobs are content-addressed and never changed (a write makes a new file and renames it), so
//! a blob already in the previous backup is hard-linked from there instead of copied: a backup
//! costs the bytes of the blobs made since the last one. Everything else is small and copied.
//! Every file is fsync'ed before the manifest names the backup complete.
//!
//! With S3 storage the bucket is not copied: its own versioning and replication are the
//! backup of the files (README, "Backups").

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::BackupError;

/// The directory of a backup holding the files.
pub const FILES_DIR: &str = "files";
/// Top-level directories of the storage that are not backed up.
const SKIPPED: [&str; 2] = ["uploads", ".tmp"];

/// What a backup holds of the files (in its manifest), and what a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesCopy {
    /// Files (storage objects) in the backup.
    pub objects: u64,
    pub bytes: u64,
    /// Of them, blobs hard-linked from the previous backup rather than copied.
    #[serde(default)]
    pub linked: u64,
}

/// Where a backup takes the files from.
#[derive(Debug, Clone)]
pub struct FilesSource {
    /// The local adapter's directory (`files.dir`).
    pub root: PathBuf,
    /// The newest earlier backup, whose blobs are linked rather than copied.
    pub previous: Option<PathBuf>,
}

/// Copies the files of `source` into `backup/files`.
pub fn copy_out(source: &FilesSource, backup: &Path) -> Result<FilesCopy, BackupError> {
    let dest = backup.join(FILES_DIR);
    let previous = source.previous.as_ref().map(|p| p.join(FILES_DIR));
    let mut copy = FilesCopy::default();
    walk(&source.root, Path::new(""), &mut |rel, len| {
        let from = source.root.join(rel);
        let to = dest.join(rel);
        ensure_parent(&to)?;
        let linked = match &previous {
            Some(previous) if rel.starts_with("blobs") && !is_blob_ref(rel) => {
                let old = previous.join(rel);
                matches!(fs::metadata(&old), Ok(m) if m.len() == len)
                    && fs::hard_link(&old, &to).is_ok()
            }
            _ => false,
        };
        if linked {
            copy.linked += 1;
        } else {
            copy_file(&from, &to)?;
        }
        copy.objects += 1;
        copy.bytes += len;
        Ok(())
    })?;
    sync_dirs(&dest)?;
    Ok(copy)
}

/// Copies a backup's files into the storage directory `root` (absent or empty: a file already
/// there with the same size is taken as restored by an earlier, interrupted run), checking
/// each blob against its SHA-256 name and the totals against the manifest's.
pub fn copy_in(backup: &Path, root: &Path, expected: &FilesCopy) -> Result<FilesCopy, BackupError> {
    let src = backup.join(FILES_DIR);
    let mut copy = FilesCopy::default();
    walk(&src, Path::new(""), &mut |rel, len| {
        let from = src.join(rel);
        let to = root.join(rel);
        if is_blob(rel) {
            check_blob(&from, rel)?;
        }
        if !matches!(fs::metadata(&to), Ok(m) if m.len() == len) {
            ensure_parent(&to)?;
            copy_file(&from, &to)?;
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
/// skipping [`SKIPPED`] at the top.
fn walk(
    root: &Path,
    rel: &Path,
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
        let kind = entry.file_type().map_err(BackupError::io(entry.path()))?;
        if kind.is_dir() {
            walk(root, &path, f)?;
        } else if kind.is_file() {
            let len = entry
                .metadata()
                .map_err(BackupError::io(entry.path()))?
                .len();
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

fn check_blob(path: &Path, rel: &Path) -> Result<(), BackupError> {
    let mut file = File::open(path).map_err(BackupError::io(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(BackupError::io(path))?;
    let hashed = crate::admin::auth::credentials::hex(&hasher.finalize());
    let named = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    if named.as_deref() != Some(hashed.as_str()) {
        return Err(BackupError::Corrupt(format!(
            "{}: its bytes hash to {hashed}, not to its name",
            path.display()
        )));
    }
    Ok(())
}

fn ensure_parent(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(BackupError::io(parent)),
        None => Ok(()),
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), BackupError> {
    fs::copy(from, to).map_err(BackupError::io(from))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(BackupError::io(to))
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
mod tests {
    use super::*;

    #[test]
    fn blobs_are_linked_from_the_previous_backup_and_checked_on_restore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let blob_bytes = b"hello blob";
        let sha = crate::admin::auth::credentials::hex(&Sha256::digest(blob_bytes));
        let blob = root.join(format!("blobs/{}/{sha}", &sha[..2]));
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, blob_bytes).unwrap();
        fs::create_dir_all(root.join("files/ab")).unwrap();
        fs::write(root.join("files/ab/meta.json"), b"{}").unwrap();
        fs::create_dir_all(root.join("uploads/1/x")).unwrap();
        fs::write(root.join("uploads/1/x/meta.json"), b"{}").unwrap();

        let first = dir.path().join("b1");
        let source = FilesSource {
            root: root.clone(),
            previous: None,
        };
        let one = copy_out(&source, &first).unwrap();
        assert_eq!((one.objects, one.linked), (2, 0), "uploads are skipped");
        let second = dir.path().join("b2");
        let two = copy_out(
            &FilesSource {
                previous: Some(first.clone()),
                ..source
            },
            &second,
        )
        .unwrap();
        assert_eq!((two.objects, two.bytes, two.linked), (2, one.bytes, 1));

        let restored = dir.path().join("restored");
        assert_eq!(copy_in(&second, &restored, &two).unwrap().objects, 2);
        assert_eq!(
            fs::read(restored.join(format!("blobs/{}/{sha}", &sha[..2]))).unwrap(),
            blob_bytes
        );
        // A blob whose bytes do not match its name is refused.
        fs::remove_file(
            second
                .join(FILES_DIR)
                .join(format!("blobs/{}/{sha}", &sha[..2])),
        )
        .unwrap();
        fs::write(
            second
                .join(FILES_DIR)
                .join(format!("blobs/{}/{sha}", &sha[..2])),
            b"tampered!!",
        )
        .unwrap();
        let err = copy_in(&second, &dir.path().join("again"), &two).unwrap_err();
        assert!(matches!(err, BackupError::Corrupt(_)), "{err}");
    }
}
