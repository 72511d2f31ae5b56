//! With `durability = "none"` nothing fsyncs fjall's journal between memtable flushes. At each
//! flush fjall's worker then syncs the whole unsynced journal (up to 64 MB) while it holds the
//! journal's writer lock, and every commit group waits behind it: ~100 ms on this machine's
//! disk, once per ~64 MB written (docs/BENCHMARKS.md, "The journal synced in the background").
//!
//! [`JournalSyncer`] fdatasyncs the active journal every `storage.journal_sync_ms` (100 by
//! default) through a file handle of its own, which takes no fjall lock: the flush finds little left to sync, and a
//! power cut loses about that interval of writes rather than a journal's worth. With `fsync`
//! every commit group already syncs the journal, and no syncer runs.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::StoreHealth;
use super::newest_journal::NewestJournal;
use super::periodic::Periodic;
use crate::store::StoreError;

/// The background thread; stopped (and joined) when dropped.
pub(super) struct JournalSyncer {
    _thread: Periodic,
    /// The id of the journal the last successful sync covered (also 0 before the first one, and
    /// fjall's first journal is `0.jnl`: the tests use ids from 1); read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    synced: Arc<AtomicU64>,
}

impl JournalSyncer {
    /// A failed fdatasync fails the store's `health` (writes stop, the server stops for its
    /// supervisor): the pages it did not write are not written again, and a later sync
    /// through a new handle would report success over them.
    pub(super) fn start(
        dir: &Path,
        interval: Duration,
        health: Arc<StoreHealth>,
    ) -> std::io::Result<Self> {
        Self::start_with(dir, interval, health, File::sync_data)
    }

    /// [`Self::start`] with the call that syncs a journal (a test's may fail).
    fn start_with(
        dir: &Path,
        interval: Duration,
        health: Arc<StoreHealth>,
        sync_data: fn(&File) -> std::io::Result<()>,
    ) -> std::io::Result<Self> {
        let synced = Arc::new(AtomicU64::new(0));
        let mut active = Active::new(dir.to_owned(), sync_data);
        let thread = Periodic::start(crate::threads::JOURNAL_SYNC, interval, {
            let synced = Arc::clone(&synced);
            move || match active.sync() {
                Ok(Some(id)) => {
                    synced.store(id, Ordering::Release);
                    ControlFlow::Continue(())
                }
                Ok(None) => ControlFlow::Continue(()),
                Err(e) => {
                    health.fail(&StoreError::Persist(e.into()));
                    ControlFlow::Break(())
                }
            }
        })?;
        Ok(Self {
            _thread: thread,
            synced,
        })
    }

    #[cfg(test)]
    fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }
}

/// The newest journal, open for syncing.
struct Active {
    newest: NewestJournal,
    dir: PathBuf,
    /// The last failure logged, so that a lasting one is logged once, not ten times a second.
    failing: Option<String>,
    sync_data: fn(&File) -> std::io::Result<()>,
}

impl Active {
    fn new(dir: PathBuf, sync_data: fn(&File) -> std::io::Result<()>) -> Self {
        Self {
            newest: NewestJournal::new(dir.clone(), false),
            dir,
            failing: None,
            sync_data,
        }
    }

    /// Syncs the newest journal; returns its id, or `None` if there was none or finding it
    /// failed (logged; tried again next time). A failed fdatasync is the error.
    fn sync(&mut self) -> std::io::Result<Option<u64>> {
        let sync_data = self.sync_data;
        let found = self
            .newest
            .find()
            .map(|found| found.map(|(id, file)| (id, sync_data(file))));
        let result = match found {
            Ok(Some((id, synced))) => return synced.map(|()| Some(id)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match result {
            Ok(id) => {
                self.failing = None;
                Ok(id)
            }
            Err(e) => {
                let why = e.to_string();
                if self.failing.as_ref() != Some(&why) {
                    tracing::warn!(error = %why, dir = %self.dir.display(),
                        "syncing the journal in the background failed");
                    self.failing = Some(why);
                }
                self.newest.forget();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn wait_for_synced(syncer: &JournalSyncer, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while syncer.synced() != id {
            assert!(Instant::now() < deadline, "journal {id} never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn follows_the_newest_journal_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let syncer =
            JournalSyncer::start(dir.path(), Duration::from_millis(10), Arc::default()).unwrap();
        std::fs::write(dir.path().join("1.jnl"), b"first").unwrap();
        wait_for_synced(&syncer, 1);
        // fjall rotates: the next journal appears (another file in the dir is no journal).
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("2.jnl"), b"second").unwrap();
        wait_for_synced(&syncer, 2);
        // Dropping it joins the thread (a thread that did not stop would hang the test).
        drop(syncer);
    }

    #[test]
    fn a_failed_sync_fails_the_stores_health() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.jnl"), b"first").unwrap();
        let health = Arc::<StoreHealth>::default();
        let _syncer = JournalSyncer::start_with(
            dir.path(),
            Duration::from_millis(10),
            Arc::clone(&health),
            |_| Err(std::io::Error::from_raw_os_error(5)),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while health.failure().is_none() {
            assert!(Instant::now() < deadline, "an EIO left the store healthy");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
