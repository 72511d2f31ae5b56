//! What `ringchat migrate`, `ringchat restore` and `ringchat backup` do (the binary only parses
//! arguments and prints).

use std::path::Path;

use super::BackupError;
use super::archive::{self, Archive, Manifest, ReadBack};
use super::copy::{self, CopyReport, Progress};
use super::files::{self, FilesCopy, FilesSource};
use super::spec::{Opened, StoreSpec};
use super::state::{self, StateCopy};
use super::verify::{self, Comparison};
use crate::config::Durability;
use crate::store::dump::{DumpStore, refuse_unfinished_copy, tally_all};
use crate::store::{FjallStore, StoreError};

/// A finished copy and its verification (which passed: a mismatch is an error).
pub struct Outcome {
    pub copy: CopyReport,
    pub comparisons: Vec<Comparison>,
    /// Restore: the files put back into local file storage (`None`: the backup has none).
    pub files: Option<FilesCopy>,
    /// Restore: the server's state put back into the data dir (`None`: the backup has none).
    pub state: Option<StateCopy>,
}

/// Copies everything from `from` into `to`, then compares both part by part.
pub fn migrate(
    from: &StoreSpec,
    to: &StoreSpec,
    batch_records: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, BackupError> {
    if from.to_string() == to.to_string() {
        return Err(BackupError::Spec(
            "--from and --to name the same store".into(),
        ));
    }
    let checkpoint = to.checkpoint_path()?;
    let source = from.open()?;
    // A source that is itself the destination of an unfinished copy is part of a store.
    match (from, &source) {
        (StoreSpec::Embedded(dir), _) => refuse_unfinished_copy(dir)?,
        (_, Opened::Postgres(store)) => {
            if let Some(source) = store.unfinished_import()? {
                return Err(StoreError::UnfinishedImport(source).into());
            }
        }
        _ => {}
    }
    let dest = to.open()?;
    let view = source.view()?;
    let report = copy::copy(
        view.as_ref(),
        &from.to_string(),
        dest.store()?,
        &checkpoint,
        batch_records,
        progress,
    )?;
    let expected = tally_all(view.as_ref(), batch_records)?;
    let found = tally_all(dest.store()?.dump_view()?.as_ref(), batch_records)?;
    let comparisons = verify::compare(&expected, &found);
    match verify::check(&comparisons) {
        Err(BackupError::Mismatch(found)) if report.resumed && can_change(from) => {
            return Err(BackupError::Mismatch(format!(
                "{found}. The copy was resumed, and {from} may have changed since the \
                 interrupted run: the parts copied before the interruption come from that \
                 run's snapshot and cannot be compared with this one's, so rerunning cannot \
                 pass. Start again into an empty destination ({}); to be able to resume a \
                 copy, stop the servers writing to the source first",
                start_again(to, &checkpoint)
            )));
        }
        checked => checked?,
    }
    copy::finish(&checkpoint, dest.store()?)?;
    Ok(Outcome {
        copy: report,
        comparisons,
        files: None,
        state: None,
    })
}

/// Whether a source may change between two runs of one copy: PostgreSQL is read while the
/// servers write (each run from its own snapshot), and nothing keeps ScyllaDB's servers off.
/// An embedded store is open for the copy alone and a backup never changes.
fn can_change(source: &StoreSpec) -> bool {
    matches!(source, StoreSpec::Postgres(_) | StoreSpec::Scylla { .. })
}

/// How to empty a copy's destination, `checkpoint` being its checkpoint.
fn start_again(to: &StoreSpec, checkpoint: &Path) -> String {
    match to {
        StoreSpec::Embedded(dir) => format!("remove {}", dir.display()),
        StoreSpec::Postgres(_) => format!(
            "drop and create the database again, and remove {}",
            checkpoint.display()
        ),
        _ => format!("empty {to}, and remove {}", checkpoint.display()),
    }
}

/// Whether `dir` holds anything but an earlier restore's checkpoint (and the store files that
/// restore created beside it).
fn refuse_non_empty(dir: &Path) -> Result<(), BackupError> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::io(dir)(e)),
    };
    if dir.join(copy::CHECKPOINT_FILE).is_file() || entries.next().is_none() {
        return Ok(());
    }
    Err(BackupError::NotEmpty(format!(
        "{} is not empty: restore writes into an empty (or absent) data dir only",
        dir.display()
    )))
}

/// Restores the backup in `from` into the empty data dir `data_dir`, then compares what the
/// store holds with the backup as read back, and puts the server's state back beside it; its files (if it has them) go into `files_root`,
/// local file storage's directory (`None`: files are off or on S3, and are not restored).
pub fn restore(
    from: &Path,
    data_dir: &Path,
    files_root: Option<&Path>,
    batch_records: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Manifest, Outcome), BackupError> {
    // A resumed restore finds its own checkpoint in the data dir and its own files in the
    // files' directory; a new one writes into empty ones only. The files' directory is checked
    // apart when it lies outside the data dir (`[files] dir`): it may be a live server's.
    let resumed = data_dir.join(copy::CHECKPOINT_FILE).is_file();
    refuse_non_empty(data_dir)?;
    if let Some(root) = files_root
        && !resumed
        && !root.starts_with(data_dir)
        && std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some())
    {
        return Err(BackupError::NotEmpty(format!(
            "{} (the files' directory, [files] dir) is not empty: restore writes files into an \
             empty (or absent) one only",
            root.display()
        )));
    }
    // Everything that can be checked is checked before anything is written: a bad backup
    // leaves no half-restored data dir (or files' directory) behind.
    let (archive, read_back, _) = check_backup(from, files_root.is_some())?;
    let store = FjallStore::open(data_dir, Durability::Fsync)?;
    let source = StoreSpec::Backup(from.to_owned()).to_string();
    let report = copy::copy(
        &archive,
        &source,
        &store,
        &data_dir.join(copy::CHECKPOINT_FILE),
        batch_records,
        progress,
    )?;
    // Against the backup as this build reads it, not its manifest: a record an older build
    // wrote in an older form is restored (and read back from the store) in today's.
    let found = tally_all(store.dump_view()?.as_ref(), batch_records)?;
    let comparisons = verify::compare(&read_back.decoded, &found);
    verify::check(&comparisons)?;
    let files = match (&archive.manifest.files, files_root) {
        (Some(expected), Some(root)) => Some(files::copy_in(from, root, expected)?),
        _ => None,
    };
    if let Some(state) = &archive.manifest.state {
        state::copy_in(from, data_dir, state)?;
    }
    copy::finish(&data_dir.join(copy::CHECKPOINT_FILE), &store)?;
    let state = archive.manifest.state.clone();
    Ok((
        archive.manifest,
        Outcome {
            copy: report,
            comparisons,
            files,
            state,
        },
    ))
}

/// Backs up the data dir of a stopped server into the new directory `to`, with the files of
/// local file storage in `files_root` (`None`: files off or on S3).
pub fn backup_stopped(
    data_dir: &Path,
    to: &Path,
    files_root: Option<&Path>,
    batch_records: usize,
) -> Result<Manifest, BackupError> {
    let spec = StoreSpec::Embedded(data_dir.to_owned());
    let opened = spec.open().map_err(|e| match e {
        BackupError::Spec(m) if m.contains("in use by a running ringchat") => BackupError::Spec(
            format!(
                "{} is in use by the running server: ask it for a backup (POST /api/backups on the admin listener, written under backup.dir), or set [backup] interval_s for scheduled ones",
                data_dir.display()
            ),
        ),
        other => other,
    })?;
    // Checked with the data dir's lock held: a restore or migrate into it cannot be running.
    // A backup of part of a store would verify, and restore into a store without its counters.
    refuse_unfinished_copy(data_dir)?;
    let files = files_root.map(|root| FilesSource {
        root: root.to_owned(),
        previous: None,
    });
    archive::write(
        || opened.view(),
        to,
        &spec.to_string(),
        batch_records,
        files.as_ref(),
        Some(data_dir),
    )
}

/// What `verify-backup` found: every part, the files and the state (`None`: the backup has
/// none).
pub struct BackupCheck {
    pub comparisons: Vec<Comparison>,
    pub files: Option<FilesCopy>,
    pub state: Option<StateCopy>,
}

/// Checks a backup against its manifest without restoring it: part file hashes, every part's
/// count and checksum as read back, the files (blob hashes, names, sizes, bytes) and the
/// state files.
pub fn verify_backup(dir: &Path) -> Result<BackupCheck, BackupError> {
    let (_, _, check) = check_backup(dir, true)?;
    Ok(check)
}

/// The checks of [`verify_backup`], reading only; `with_files: false` leaves the files part
/// unchecked (a restore that does not restore files). Also returns the backup as read back
/// (its `decoded` tallies are what a restore is compared with).
fn check_backup(
    dir: &Path,
    with_files: bool,
) -> Result<(Archive, ReadBack, BackupCheck), BackupError> {
    let archive = Archive::open(dir)?;
    archive.check_files()?;
    let files = match &archive.manifest.files {
        Some(expected) if with_files => Some(files::check(dir, expected)?),
        _ => None,
    };
    if let Some(state) = &archive.manifest.state {
        state::check(dir, state)?;
    }
    let state = archive.manifest.state.clone();
    // The manifest's checksums are over the bytes as written, so they are checked against
    // those bytes: a build that reads an older record form and re-encodes it in the new one
    // would see a mismatch where nothing is damaged.
    let read_back = archive.read_back()?;
    let comparisons = verify::compare(&archive.manifest.tallies(), &read_back.stored);
    verify::check(&comparisons)?;
    Ok((
        archive,
        read_back,
        BackupCheck {
            comparisons,
            files,
            state,
        },
    ))
}
