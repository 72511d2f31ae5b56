//! Backups the running server writes: on `[backup] interval_s` and on `POST /api/backups`, one
//! at a time, into `backup.dir`, keeping the newest `backup.keep`.
//!
//! A backup reads one snapshot of the store (the one published after the last persist: exactly
//! what was acknowledged) on a blocking thread; the sequencer keeps committing meanwhile and
//! never waits for it (taking the snapshot is a read of one lock-guarded pointer).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::archive::{self, Manifest};
use super::files::FilesSource;
use super::{BackupConfig, BackupError};
use crate::files::{FileService, FileStorageKind, FilesConfig};
use crate::store::StoreEngine;

/// Backups (scheduled or `POST /api/backups`) whose writing failed: the alert's input, as a
/// log line alone went unseen while every scheduled backup failed.
pub const FAILED_TOTAL: &str = "ringchat_backups_failed_total";
/// When the newest backup was written (Unix seconds; 0: none in `backup.dir` yet).
pub const LAST_SUCCESS: &str = "ringchat_backup_last_success_timestamp_seconds";
/// The scheduled backups' interval (0: none scheduled), so that an alert can tell a backup
/// that is overdue (`RingchatBackupStale` in deploy/prometheus/alerts.yml).
pub const INTERVAL: &str = "ringchat_backup_interval_seconds";

/// The backup families' help texts (`admin::describe_families`).
pub(crate) fn describe() {
    metrics::describe_counter!(
        FAILED_TOTAL,
        "Backups (scheduled or POST /api/backups) that failed."
    );
    metrics::describe_gauge!(
        LAST_SUCCESS,
        "When the newest backup in backup.dir was written, Unix seconds (0: none)."
    );
    metrics::describe_gauge!(
        INTERVAL,
        "backup.interval_s when scheduled backups are on (backup.dir set), else 0."
    );
}

pub struct Backups {
    config: BackupConfig,
    /// The files, when they are on local storage (`backup/files.rs`); with S3 the bucket is
    /// not copied.
    files: Option<LocalFiles>,
    /// Files on S3: said in the log of each backup.
    files_on_s3: bool,
    /// What the manifests name as the source.
    source: String,
    /// The data dir, whose state beside the store (`backup/state.rs`) each backup keeps.
    data_dir: std::path::PathBuf,
    /// One backup at a time: held by the blocking task that writes it, so that a caller that
    /// stops waiting (its request dropped) does not let a second backup start beside it (which
    /// would remove the first's `*.partial` directory as a failed backup's).
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// Local file storage: its directory, and the service whose collector pauses during a copy.
pub struct LocalFiles {
    pub root: std::path::PathBuf,
    pub service: Arc<FileService>,
}

impl Backups {
    /// `files`: the files service and its settings, when files are on.
    pub fn new(
        config: BackupConfig,
        data_dir: &Path,
        files: Option<(&FilesConfig, Arc<FileService>)>,
    ) -> Self {
        let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let files_on_s3 = files
            .as_ref()
            .is_some_and(|(c, _)| c.storage == FileStorageKind::S3);
        let files = files
            .filter(|(c, _)| c.storage == FileStorageKind::Local)
            .map(|(c, service)| LocalFiles {
                root: c.local_dir(data_dir),
                service,
            });
        Self {
            config,
            files,
            files_on_s3,
            source: format!("embedded:{}", dir.display()),
            data_dir: dir,
            writing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        (!self.config.dir.as_os_str().is_empty()).then_some(self.config.dir.as_path())
    }

    /// At start: publishes the metrics, and checks that `backup.dir` (when set) can be
    /// written, making it if missing and writing a file into it. A dir the server cannot
    /// write (outside a sandbox's writable paths, a read-only mount, its permissions) would
    /// otherwise fail every backup for ever with only a log line each. Removes what a backup
    /// interrupted by the server's end left (`*.partial`).
    pub fn check_at_start(&self) -> Result<(), BackupError> {
        metrics::counter!(FAILED_TOTAL).absolute(0);
        let scheduled = if self.dir().is_some() {
            self.config.interval_s
        } else {
            0
        };
        metrics::gauge!(INTERVAL).set(scheduled as f64);
        let Some(dir) = self.dir() else {
            metrics::gauge!(LAST_SUCCESS).set(0.0);
            return Ok(());
        };
        super::create_private_dir_all(dir)?;
        let probe = dir.join(".ringchat-write-check");
        std::fs::write(&probe, b"").map_err(BackupError::io(&probe))?;
        std::fs::remove_file(&probe).map_err(BackupError::io(&probe))?;
        // No backup is being written yet: any `*.partial` is what one that died left.
        remove_partials(dir);
        let newest = archive::list(dir)?.first().map(|(_, m)| m.created_ms);
        metrics::gauge!(LAST_SUCCESS).set(newest.map_or(0.0, |ms| ms as f64 / 1000.0));
        Ok(())
    }

    /// Writes a new backup of `engine`'s store and prunes the old ones. Refused while another
    /// is being written. Once the backup is written it is returned whatever the pruning did.
    pub async fn take(&self, engine: Arc<dyn StoreEngine>) -> Result<Taken, BackupError> {
        let Some(dir) = self.dir().map(Path::to_owned) else {
            return Err(BackupError::Spec(
                "backup.dir is not set: the server has nowhere to write backups".into(),
            ));
        };
        let Ok(writing) = Arc::clone(&self.writing).try_lock_owned() else {
            return Err(BackupError::NotEmpty(
                "a backup is being written now: wait for it".into(),
            ));
        };
        let (source, batch, keep) = (
            self.source.clone(),
            self.config.batch_records,
            self.config.keep,
        );
        // The collector waits while the files are copied: a file a backed-up message
        // references is not removed under the copy.
        let gc_paused = match &self.files {
            Some(files) => Some(files.service.pause_gc().await),
            None => None,
        };
        if self.files_on_s3 {
            tracing::info!(
                "backup: files are on S3 and not copied; the bucket's versioning and replication are their backup"
            );
        }
        let files_root = self.files.as_ref().map(|f| f.root.clone());
        let data_dir = self.data_dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _writing = writing;
            let _gc_paused = gc_paused;
            let Some(store) = engine.dump() else {
                return Err(BackupError::Spec(
                    "this store of record has no backup of its own: use the database's tools (README)".into(),
                ));
            };
            super::create_private_dir_all(&dir)?;
            // Under the lock no other backup is being written: what a failed or interrupted
            // one left goes before this one needs the space.
            remove_partials(&dir);
            let mut name = archive::backup_name(SystemTime::now());
            for n in 2.. {
                if !dir.join(&name).exists() {
                    break;
                }
                name = format!("{}-{n}", archive::backup_name(SystemTime::now()));
            }
            let files = files_root.map(|root| FilesSource {
                root,
                // The newest complete backup: its blobs are linked, not copied again.
                previous: archive::list(&dir)
                    .ok()
                    .and_then(|l| l.into_iter().next())
                    .map(|(name, _)| dir.join(name)),
            });
            let manifest = archive::write(
                || Ok(store.dump_view()?),
                &dir.join(&name),
                &source,
                batch,
                files.as_ref(),
                Some(&data_dir),
            )?;
            let pruned = prune(&dir, keep, &name);
            if let Some(err) = &pruned.failed {
                tracing::warn!(backup = %name, %err, "backup written, but old backups were not all deleted (backup.keep)");
            }
            Ok(Taken {
                name,
                manifest,
                pruned,
            })
        })
        .await
        .map_err(|e| BackupError::Spec(format!("the backup task failed: {e}")))
        .and_then(|r| r);
        match &written {
            Ok(_) => metrics::gauge!(LAST_SUCCESS).set(crate::time::now_ms() as f64 / 1000.0),
            Err(_) => metrics::counter!(FAILED_TOTAL).increment(1),
        }
        written
    }

    /// The complete backups in `backup.dir`, newest first.
    pub async fn list(&self) -> Result<Vec<(String, Manifest)>, BackupError> {
        let Some(dir) = self.dir().map(Path::to_owned) else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || archive::list(&dir))
            .await
            .map_err(|e| BackupError::Spec(format!("the listing task failed: {e}")))?
    }
}

/// A backup written: its name and manifest, and what the pruning after it did.
#[derive(Debug)]
pub struct Taken {
    pub name: String,
    pub manifest: Manifest,
    pub pruned: Pruned,
}

/// What a prune did: the old backups deleted, and why it fell short, when it did (the backup
/// just written stands either way).
#[derive(Debug, Default)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub failed: Option<BackupError>,
}

/// Removes what failed or interrupted backups left in `dir`, saying what it did; one that cannot
/// be removed is a warning (the next backup tries again).
fn remove_partials(dir: &Path) {
    match archive::remove_partials(dir) {
        Ok(removed) => {
            for name in removed {
                tracing::info!(partial = %name, "what a failed or interrupted backup left was removed");
            }
        }
        Err(err) => {
            tracing::warn!(%err, "what a failed or interrupted backup left could not all be removed");
        }
    }
}

/// Deletes all but the newest `keep` backups. `written`,
/// the backup just made, is kept whatever its name: names are wall-clock times, and one made
/// while the clock was ahead would otherwise sort above every later backup and have each of
/// them deleted as it is written. An old backup that cannot be deleted stops nothing: the
/// others are still tried, and the first failure is returned.
fn prune(dir: &Path, keep: usize, written: &str) -> Pruned {
    let mut pruned = Pruned::default();
    let others: Vec<String> = match archive::list(dir) {
        Ok(list) => list
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name != written)
            .collect(),
        Err(err) => {
            pruned.failed = Some(err);
            return pruned;
        }
    };
    if others
        .first()
        .is_some_and(|newest| newest.as_str() > written)
    {
        tracing::warn!(backup = written, newer_name = %others[0],
            "a backup's name sorts above the one just written (the clock went back?)");
    }
    for name in others.into_iter().skip(keep.saturating_sub(1)) {
        let path = dir.join(&name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(backup = %name, "old backup deleted (backup.keep)");
                pruned.deleted.push(name);
            }
            Err(err) => {
                let err = BackupError::io(&path)(err);
                tracing::warn!(backup = %name, %err, "an old backup could not be deleted (backup.keep)");
                pruned.failed.get_or_insert(err);
            }
        }
    }
    pruned
}

/// Starts the scheduled backups when `backup.interval_s` is set.
pub fn start(backups: &Arc<Backups>, engine: Arc<dyn StoreEngine>) {
    let interval_s = backups.config.interval_s;
    if interval_s == 0 || backups.dir().is_none() {
        return;
    }
    let backups = Arc::clone(backups);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(interval_s));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            match backups.take(Arc::clone(&engine)).await {
                Ok(Taken { name, manifest, .. }) => tracing::info!(
                    backup = %name,
                    records = manifest.records(),
                    ms = started.elapsed().as_millis() as u64,
                    "scheduled backup written"
                ),
                Err(err) => tracing::error!(%err, "scheduled backup failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    use super::*;
    use crate::store::{StoreError, StoreHealth};

    /// An engine whose backup read waits until the test lets it go.
    struct Gated {
        entered: Mutex<Sender<()>>,
        release: Mutex<Receiver<()>>,
    }

    impl StoreEngine for Gated {
        fn health(&self) -> Arc<StoreHealth> {
            Arc::new(StoreHealth::default())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn dump(&self) -> Option<&dyn crate::store::dump::DumpStore> {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            None
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_caller_keeps_the_one_at_a_time_lock_until_the_backup_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let config = BackupConfig {
            dir: tmp.path().join("backups"),
            ..BackupConfig::default()
        };
        let backups = Arc::new(Backups::new(config, tmp.path(), None));
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel();
        let engine: Arc<dyn StoreEngine> = Arc::new(Gated {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        });
        let b = Arc::clone(&backups);
        let e = Arc::clone(&engine);
        let first = tokio::spawn(async move { b.take(e).await });
        tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the first backup started writing");
        // Its caller goes away (a request dropped); its blocking task writes on.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let second = backups.take(Arc::clone(&engine)).await;
        assert!(
            matches!(second, Err(BackupError::NotEmpty(_))),
            "a second backup is refused while the first writes: {second:?}"
        );
        // Lets the first go, and every later read at once.
        drop(release_tx);
        // Once the first has ended, the next one may start (this engine has no dump: `Spec`).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match backups.take(Arc::clone(&engine)).await {
                Err(BackupError::NotEmpty(_)) => {
                    assert!(tokio::time::Instant::now() < deadline, "the lock came back");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => {
                    assert!(matches!(other, Err(BackupError::Spec(_))), "{other:?}");
                    break;
                }
            }
        }
    }
}
