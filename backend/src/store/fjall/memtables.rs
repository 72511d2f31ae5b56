//! Memtables rotated by the store, not by fjall's writers.
//!
//! fjall 3.1 (pinned here) rotates a memtable when a write finds it over the keyspace's
//! `max_memtable_size`: that write `try_send`s a rotation request into the worker's bounded
//! channel (1,000 slots), and so does every later write until the worker gets to it. A worker
//! busy in a long compaction lets them pile up, then blocks sending itself a flush request into
//! the channel only it drains: a deadlock (fjall-rs/fjall PR #323, issues #257 and #260;
//! `flush_watch.rs` stops the server if it happens anyway). So the keyspaces of a store created
//! by this code carry a size no write reaches ([`WRITERS_ROTATE_AT`]), and a thread of the
//! store's rotates each memtable once it holds `storage.memtable_mib`: the rotation and its
//! flush request are made on that thread, which may wait for room in the worker's channel while
//! the worker drains it. Writes never poke the worker, and the size is a setting of the running
//! server, not of the day the store was created.
//!
//! A store created before (its keyspaces at fjall's default, [`FJALL_DEFAULT`]) is rotated at
//! three quarters of that at most, so that its writers would reach fjall's size only if this
//! thread fell 16 MiB of writes behind.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{AbstractTree, Keyspace};

use super::periodic::Periodic;
use crate::store::{StoreError, StoreHealth};

/// The memtable size the keyspaces of a store created by this code carry (fjall persists it at
/// creation): far above any `storage.memtable_mib`, finite so that an older ringchat that does
/// not rotate memtables itself still flushes them.
pub(super) const WRITERS_ROTATE_AT: u64 = 1 << 30;
/// fjall's default memtable size, which a store created before [`WRITERS_ROTATE_AT`] carries.
pub(super) const FJALL_DEFAULT: u64 = 64 << 20;
/// Largest `storage.memtable_mib`: three quarters of [`WRITERS_ROTATE_AT`].
pub const MEMTABLE_MIB_MAX: u64 = (WRITERS_ROTATE_AT >> 20) * 3 / 4;
/// How often the memtables' sizes are read. At 100 MB/s of writes (1 KiB messages at 100,000
/// a second) a memtable grows 2.5 MB between two looks.
const LOOK_EVERY: Duration = Duration::from_millis(25);

impl super::FjallStore {
    /// For benchmark tools (`fill.rs`): rotates every memtable, then waits until no flush is
    /// waiting and no compaction running for `quiet`, at most `max`; how long it took. A run
    /// settled before and after pays for its own writes' flushes and compactions, not for what
    /// the run before it left in memory.
    pub fn settle(&self, quiet: Duration, max: Duration) -> Result<Duration, StoreError> {
        let started = Instant::now();
        for keyspace in &self.keyspaces {
            keyspace.rotate_memtable()?;
        }
        let mut quiet_since = Instant::now();
        loop {
            let now = Instant::now();
            let busy = self.db.outstanding_flushes() > 0
                || self.db.active_compactions() > 0
                || self
                    .keyspaces
                    .iter()
                    .any(|k| k.tree.sealed_memtable_count() > 0);
            if busy {
                quiet_since = now;
            } else if now - quiet_since >= quiet {
                return Ok(started.elapsed());
            }
            if now - started > max {
                return Err(StoreError::Engine(
                    format!("the store did not settle within {max:?}").into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Where the store rotates a memtable: at `configured` bytes, but never closer than a quarter to
/// the size at which the keyspace's writers would ask fjall's worker to (`writers_rotate_at`).
pub(super) fn rotate_at(configured: u64, writers_rotate_at: u64) -> u64 {
    configured.clamp(1, writers_rotate_at / 4 * 3)
}

/// Starts the rotating thread over `keyspaces`; it stops when the returned handle drops. A
/// failed rotation (the journal's maintenance failed) stops the store's writes, as a failed
/// write does.
pub(super) fn start(
    keyspaces: Vec<Keyspace>,
    rotate_at: u64,
    health: Arc<StoreHealth>,
) -> std::io::Result<Periodic> {
    Periodic::start(crate::threads::MEMTABLES, LOOK_EVERY, move || {
        for keyspace in &keyspaces {
            if keyspace.tree.active_memtable().size() < rotate_at {
                continue;
            }
            if let Err(e) = keyspace.rotate_memtable() {
                health.fail(&StoreError::Engine(
                    format!("rotating {}'s memtable: {e}", keyspace.name()).into(),
                ));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::fjall::{EngineOptions, FjallStore, META_WRITERS_ROTATE_AT, be_u64};

    fn open(dir: &std::path::Path, memtable_bytes: u64) -> FjallStore {
        let options = EngineOptions {
            memtable_bytes,
            ..EngineOptions::default()
        };
        FjallStore::open_with(dir, Durability::None, &options).unwrap()
    }

    fn writers_rotate_at(store: &FjallStore) -> Option<u64> {
        let v = store.meta.get(META_WRITERS_ROTATE_AT).unwrap()?;
        Some(be_u64(&v).unwrap())
    }

    /// Its writers would not rotate a memtable before 1 GiB: the tables appear because the
    /// store's own thread rotated it at the configured size.
    #[test]
    fn a_new_store_rotates_its_memtables_at_the_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        assert_eq!(writers_rotate_at(&store), Some(WRITERS_ROTATE_AT));
        assert_eq!(store.memtables_rotate_at, 1 << 20);
        let value = [7u8; 1024];
        for i in 0u32..4096 {
            // Every write holds the store's write lock, as the store's own do: the journal
            // prefill relies on it (without it, this test corrupted the journal 2 runs in 3).
            let _writing = store.write_lock();
            store
                .insert(&store.cursor_rows, i.to_be_bytes(), value)
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.cursor_rows.table_count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "4 MiB written, no memtable flushed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(store.cursor_rows.tree.active_memtable().size() < 2 << 20);
        // Reopened with another size, the store takes it.
        drop(store);
        let store = open(dir.path(), 256 << 20);
        assert_eq!(writers_rotate_at(&store), Some(WRITERS_ROTATE_AT));
        assert_eq!(store.memtables_rotate_at, 256 << 20);
    }

    #[test]
    fn a_settled_store_has_flushed_everything_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 64 << 20);
        for i in 0u32..1000 {
            let _writing = store.write_lock();
            store
                .insert(&store.cursor_rows, i.to_be_bytes(), [1u8; 100])
                .unwrap();
            store.insert(&store.recent, i.to_be_bytes(), []).unwrap();
        }
        store
            .settle(Duration::from_millis(50), Duration::from_secs(60))
            .unwrap();
        for keyspace in [&store.cursor_rows, &store.recent] {
            assert_eq!(keyspace.tree.active_memtable().size(), 0);
            assert_eq!(keyspace.tree.sealed_memtable_count(), 0);
            assert!(keyspace.table_count() > 0);
        }
    }

    /// A store whose keyspaces fjall created at its default size (every store before this
    /// code) keeps it, and is rotated at 48 MiB at most whatever the setting.
    #[test]
    fn an_older_store_is_rotated_well_before_its_writers_would() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let meta = db
                .keyspace("meta", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            // A bare fjall database, no store (no prefill) over it.
            #[expect(clippy::disallowed_methods, reason = "not a store yet")]
            meta.insert("layout", 2u64.to_be_bytes()).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let store = open(dir.path(), 256 << 20);
        assert_eq!(writers_rotate_at(&store), None);
        assert_eq!(store.memtables_rotate_at, 48 << 20);
        drop(store);
        let store = open(dir.path(), 16 << 20);
        assert_eq!(store.memtables_rotate_at, 16 << 20);
    }

    #[test]
    fn a_store_created_by_this_code_rotates_at_the_configured_size() {
        assert_eq!(rotate_at(64 << 20, WRITERS_ROTATE_AT), 64 << 20);
        assert_eq!(
            rotate_at(MEMTABLE_MIB_MAX << 20, WRITERS_ROTATE_AT),
            MEMTABLE_MIB_MAX << 20
        );
    }

    #[test]
    fn an_older_store_rotates_well_before_its_writers_would() {
        assert_eq!(rotate_at(64 << 20, FJALL_DEFAULT), 48 << 20);
        assert_eq!(rotate_at(256 << 20, FJALL_DEFAULT), 48 << 20);
        assert_eq!(rotate_at(16 << 20, FJALL_DEFAULT), 16 << 20);
    }
}
