//! The embedded store on fjall, laid out for a message log (layout 2):
//!
//! - `runs`: (conversation, first seq) → a run of that conversation's consecutive messages, one
//!   record per conversation per commit group. A message costs a share of one keyed write, not a
//!   write of its own; runs (all above [`RUN_SEPARATION_BYTES`]) live in blob files that
//!   compaction does not rewrite.
//! - `recalls`: (conversation, seq) → the recall event's seq. Runs are never rewritten; readers
//!   apply recalls to what they return.
//! - `cursor_rows`: (conversation, user) → a [`super::CursorRow`] (cursors, device cursors, the
//!   dedup window), written once per commit group that touches it.
//! - `recent`: (user, hour of last activity, conversation), both inverted so that a scan runs
//!   newest first → nothing: a user's conversation list by recency, paged.
//! - `meta`, `users`, `usernames`, `tokens`: accounts and counters.
//! - `relations`, `contact_summaries`, `profiles`: contacts (`contacts.rs`).
//! - `groups`, `group_members`, `user_groups`, `user_group_counts`, `group_applications`,
//!   `mentions`, `group_reads`: groups (`groups.rs`). A group's messages live in `runs` like any other.
//! - `meta`, `users`, `usernames`, `emails`, `tokens`, `user_tokens`: accounts, login tokens
//!   and counters (`accounts.rs`).
//! - `user_flags`, `invites`, `invite_codes`: what operators keep about accounts
//!   (`account_admin.rs`); `invite_issuers`: invites by issuer (`invite_issuers.rs`); `group_names`: groups by folded name (`group_names.rs`).
//! - `push_tokens`: devices' push tokens (`push_tokens.rs`).
//! - `owners`: conversation → owner and epoch, for cluster mode (`owners.rs`).
//!
//! Big-endian integer keys, so that ranges scan in numeric order. `migrate.rs` turns a layout 1
//! store (one key per message, dedup and device cursors in keyspaces of their own) into this.

mod account_admin;
mod account_index;
mod accounts;
mod audit;
#[cfg(test)]
mod commit_sync_tests;
mod contacts;
mod cursors;
mod dump;
mod flush_watch;
mod group_names;
mod groups;
mod import_runs;
mod invite_issuers;
mod journal_prefill;
mod journal_repair;
mod journal_sync;
mod log;
mod memtables;
mod migrate;
mod newest_journal;
mod owners;
mod periodic;
mod push_tokens;
mod rebuild;
mod write_locks;

pub use memtables::MEMTABLE_MIB_MAX;

use std::path::Path;
use std::sync::{Arc, MutexGuard, RwLock};

use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable, Snapshot,
};

use super::{StoreEngine, StoreError, StoreHealth};
use crate::config::Durability;

/// Runs at least this large (all but the smallest) live in blob files, out of the LSM tree's
/// compactions; the tree keeps their keys and pointers. Runs are keyed by conversation, so every
/// flushed table spans the whole key space, and leveled compaction rewrote the stored messages
/// again and again, more as the store grew (512 until 2026-12-05: writes into a filled store
/// cost ×1.6 of writes into a fresh one; docs/BENCHMARKS.md, "Messages out of the compactions").
/// fjall keeps a keyspace's threshold from when it was created: older stores keep theirs.
const RUN_SEPARATION_BYTES: u32 = 64;

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        Self::Engine(e.into())
    }
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        Self::Corrupt(e.into())
    }
}

/// Key of a (conversation, seq) or (user, conversation) pair: both big-endian, so a
/// conversation's entries are contiguous and ordered.
fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(postcard::Error::DeserializeUnexpectedEnd.into()))
}

/// The big-endian `u64` at `at` in a stored key; a short key is corrupt, not a panic.
fn key_u64(key: &[u8], at: usize) -> Result<u64, StoreError> {
    be_u64(key.get(at..at + 8).unwrap_or_default())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

/// Values up to this many bytes (a cursor row with a full dedup window, a run of a few short
/// messages) are serialised once on the stack and copied; larger ones are sized first.
const STACK_VALUE_BYTES: usize = 1024;

/// [`encode`] straight into the engine's value type, sized exactly: for the values every commit
/// group writes (runs, cursor rows), whose bytes would otherwise be copied into a growing `Vec`
/// and then again into fjall's `Slice`. A small value is serialised once into a stack buffer;
/// a larger one twice (its size, then its bytes in place).
fn encode_value<T: serde::Serialize + ?Sized>(value: &T) -> fjall::Slice {
    let mut stack = [0u8; STACK_VALUE_BYTES];
    if let Ok(bytes) = postcard::to_slice(value, &mut stack) {
        return fjall::Slice::from(&*bytes);
    }
    let len = postcard::experimental::serialized_size(value).expect("records always serialise");
    let mut view = byteview::ByteView::with_size(len);
    let mut bytes = view.get_mut().expect("a new view has no other owner");
    let written = postcard::to_slice(value, &mut bytes)
        .expect("the view is the serialised size")
        .len();
    assert_eq!(written, len, "postcard's serialised size is exact");
    drop(bytes);
    fjall::Slice::from(view)
}

/// A failed commit: an I/O error (of its write or of its sync) leaves it written, maybe, but
/// not known to be durable, as a failed `persist` does.
fn commit_error(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Io(e) => StoreError::Persist(e.into()),
        e => StoreError::from(e),
    }
}

pub struct FjallStore {
    db: Database,
    durability: Durability,
    meta: Keyspace,
    users: Keyspace,
    usernames: Keyspace,
    emails: Keyspace,
    tokens: Keyspace,
    user_tokens: Keyspace,
    runs: Keyspace,
    recalls: Keyspace,
    cursor_rows: Keyspace,
    recent: Keyspace,
    /// Contacts (`contacts.rs`): added after layout 2 without a migration (a store from before
    /// has none, and opens with them empty).
    relations: Keyspace,
    contact_summaries: Keyspace,
    profiles: Keyspace,
    /// Groups (`groups.rs`): added the same way.
    groups: Keyspace,
    group_members: Keyspace,
    user_groups: Keyspace,
    user_group_counts: Keyspace,
    group_applications: Keyspace,
    mentions: Keyspace,
    group_reads: Keyspace,
    /// The audit log (`audit.rs`).
    audit: Keyspace,
    /// Operators' account state (`account_admin.rs`): `user_flags` (user → flags),
    /// `invites` (id → invite), `invite_codes` (code hash → id); and the group name index
    /// (`group_names.rs`). Added without a layout change (an older store opens with them empty;
    /// the name index is built at open).
    user_flags: Keyspace,
    invites: Keyspace,
    invite_codes: Keyspace,
    /// (issuer, invite id) → nothing (`invite_issuers.rs`): built at open for an older store.
    invite_issuers: Keyspace,
    group_names: Keyspace,
    /// Devices' push tokens (`push_tokens.rs`).
    push_tokens: Keyspace,
    /// Conversation ownership (`owners.rs`); empty on one box.
    owners: Keyspace,
    /// What readers see: a snapshot taken after the last successful persist.
    published: RwLock<Arc<Snapshot>>,
    /// One writer at a time (`write_locks.rs`); shared with the journal prefill.
    locks: Arc<write_locks::WriteLocks>,
    /// Set once a write fails: fjall takes none after that.
    health: Arc<StoreHealth>,
    /// Stops writes if fjall's worker stops flushing (`flush_watch.rs`). Before the lock file
    /// and the journal syncer: it holds a handle of the database, which closes when it joins.
    _flush_watch: periodic::Periodic,
    /// Rotates the memtables (`memtables.rs`); like the watch, before the lock file.
    _memtables: periodic::Periodic,
    /// Every keyspace of the store, for [`FjallStore::settle`].
    keyspaces: Vec<Keyspace>,
    /// Where it rotates them, in bytes; read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    memtables_rotate_at: u64,
    /// The journal filled ahead of its writes (`journal_prefill.rs`), started once the store is
    /// open (the writes of opening hold no write lock). Declared (so dropped) before the lock
    /// file: no other process may write this journal while it runs.
    journal_prefill: Option<journal_prefill::JournalPrefill>,
    /// The data dir's lock file, locked exclusively while the store is open.
    _dir_lock: std::fs::File,
    dir: std::path::PathBuf,
    /// Blob files of `runs` when their directory was last fsynced (fjall does not fsync it).
    blob_files_synced: std::sync::atomic::AtomicUsize,
    /// With `durability = "none"`, the journal synced in the background (`journal_sync.rs`).
    _journal_sync: Option<journal_sync::JournalSyncer>,
    /// Syncs made whatever the durability (`rebuild.rs`); read by the tests.
    #[cfg(test)]
    durable_syncs: std::sync::atomic::AtomicUsize,
}

/// `meta` key: the memtable size the store's keyspaces were created with (`memtables.rs`);
/// absent in a store created before the store rotated its memtables itself.
const META_WRITERS_ROTATE_AT: &[u8] = b"memtables_writers_rotate_at";

/// How the embedded engine runs, besides what is stored where.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// With `durability = "none"`, how often the journal is fdatasync'ed in the background
    /// (`storage.journal_sync_ms`; zero: never).
    pub journal_sync: std::time::Duration,
    /// How far ahead of its writes the journal is filled (`storage.journal_prefill_mib`, in
    /// bytes; zero: not at all).
    pub journal_prefill_bytes: u64,
    /// fjall's flush and compaction threads (`storage.background_threads`).
    pub background_threads: usize,
    /// A memtable is rotated (and flushed) once it holds this many bytes
    /// (`storage.memtable_mib`).
    pub memtable_bytes: u64,
}

impl From<&crate::config::StorageConfig> for EngineOptions {
    fn from(storage: &crate::config::StorageConfig) -> Self {
        Self {
            journal_sync: std::time::Duration::from_millis(storage.journal_sync_ms),
            journal_prefill_bytes: storage.journal_prefill_mib << 20,
            background_threads: storage.background_threads,
            memtable_bytes: storage.memtable_mib << 20,
        }
    }
}

/// The defaults of `[storage]`.
impl Default for EngineOptions {
    fn default() -> Self {
        Self::from(&crate::config::StorageConfig::default())
    }
}

impl FjallStore {
    /// Opens with the default [`EngineOptions`].
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(dir, durability, &EngineOptions::default())
    }

    pub fn open_with(
        dir: &Path,
        durability: Durability,
        options: &EngineOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let dir_lock = super::dir_lock::lock_dir(dir)?;
        let db = journal_repair::open_database(dir, options.background_threads, durability)?;
        let health = Arc::<StoreHealth>::default();
        let flush_watch = flush_watch::start(db.clone(), Arc::clone(&health))?;
        // Keyspaces are created with the memtable size their writers never reach in a store
        // created by this code, with fjall's default in an older one (`memtables.rs`).
        let fresh = db.keyspace_count() == 0;
        let meta = db.keyspace("meta", || {
            KeyspaceCreateOptions::default().max_memtable_size(if fresh {
                memtables::WRITERS_ROTATE_AT
            } else {
                memtables::FJALL_DEFAULT
            })
        })?;
        let writers_rotate_at = match meta.get(META_WRITERS_ROTATE_AT)? {
            Some(v) => be_u64(&v)?,
            None if fresh => {
                #[expect(clippy::disallowed_methods, reason = "opening: no writer runs yet")]
                meta.insert(
                    META_WRITERS_ROTATE_AT,
                    memtables::WRITERS_ROTATE_AT.to_be_bytes(),
                )?;
                memtables::WRITERS_ROTATE_AT
            }
            None => memtables::FJALL_DEFAULT,
        };
        let rotate_at = memtables::rotate_at(options.memtable_bytes, writers_rotate_at);
        let create = || KeyspaceCreateOptions::default().max_memtable_size(writers_rotate_at);
        let mut opened = vec![meta.clone()];
        let mut open = |name: &str, options: KeyspaceCreateOptions| {
            let keyspace = db.keyspace(name, || options)?;
            opened.push(keyspace.clone());
            Ok::<_, fjall::Error>(keyspace)
        };
        // Runs live in blob files that compaction does not rewrite (with 1 KiB messages this cut
        // server CPU per message by a large factor; with 64 B, the growth with the store's size).
        let runs = open(
            "runs",
            create().with_kv_separation(Some(KvSeparationOptions {
                separation_threshold: RUN_SEPARATION_BYTES,
                ..KvSeparationOptions::default()
            })),
        )?;
        let mut ks = |name: &str| open(name, create());
        let journal_syncer = match durability {
            Durability::None if !options.journal_sync.is_zero() => Some(
                journal_sync::JournalSyncer::start(dir, options.journal_sync, Arc::clone(&health))?,
            ),
            Durability::None | Durability::Fsync => None,
        };
        let mut store = Self {
            meta,
            users: ks("users")?,
            usernames: ks("usernames")?,
            emails: ks("emails")?,
            tokens: ks("tokens")?,
            user_tokens: ks("user_tokens")?,
            // Runs live in blob files that compaction does not rewrite (with 1 KiB messages
            // this cut server CPU per message by a large factor; with 64 B, the growth with
            // the store's size).
            runs,
            recalls: ks("recalls")?,
            cursor_rows: ks("cursor_rows")?,
            recent: ks("recent")?,
            relations: ks("relations")?,
            contact_summaries: ks("contact_summaries")?,
            profiles: ks("profiles")?,
            groups: ks("groups")?,
            group_members: ks("group_members")?,
            user_groups: ks("user_groups")?,
            user_group_counts: ks("user_group_counts")?,
            group_applications: ks("group_applications")?,
            mentions: ks("mentions")?,
            group_reads: ks("group_reads")?,
            audit: ks("audit")?,
            user_flags: ks("user_flags")?,
            invites: ks("invites")?,
            invite_codes: ks("invite_codes")?,
            invite_issuers: ks("invite_issuers")?,
            group_names: ks("group_names")?,
            push_tokens: ks("push_tokens")?,
            owners: ks("owners")?,
            keyspaces: opened.clone(),
            _memtables: memtables::start(opened, rotate_at, Arc::clone(&health))?,
            memtables_rotate_at: rotate_at,
            published: RwLock::new(Arc::new(db.snapshot())),
            db,
            durability,
            locks: Arc::default(),
            health,
            _flush_watch: flush_watch,
            _dir_lock: dir_lock,
            dir: dir.to_owned(),
            blob_files_synced: std::sync::atomic::AtomicUsize::new(0),
            _journal_sync: journal_syncer,
            journal_prefill: None,
            #[cfg(test)]
            durable_syncs: std::sync::atomic::AtomicUsize::new(0),
        };
        migrate::to_current_layout(&store)?;
        account_index::build(&store)?;
        group_names::build(&store)?;
        invite_issuers::build(&store)?;
        if options.journal_prefill_bytes > 0 {
            store.journal_prefill = Some(journal_prefill::JournalPrefill::start(
                dir,
                store.db.clone(),
                Arc::clone(&store.locks),
                Arc::clone(&store.health),
                options.journal_prefill_bytes,
            )?);
        }
        Ok(store)
    }

    /// Makes everything committed so far durable under the configured durability. A writer
    /// commits through [`Self::commit`] instead, whose batch is synced as it is written.
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        let persisted = self
            .db
            .persist(self.persist_mode())
            .map_err(|e| StoreError::Persist(e.into()));
        self.written(persisted)?;
        self.durable()
    }

    /// Commits a batch from [`Self::batch`] (written and, with `durability = "fsync"`,
    /// fdatasync'ed in one hold of fjall's journal lock) and publishes it.
    fn commit(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        self.written(batch.commit().map_err(commit_error))?;
        self.durable()
    }

    /// What follows a write once its journal bytes are durable: the blob directories, then the
    /// snapshot readers see.
    fn durable(&self) -> Result<(), StoreError> {
        if self.durability == Durability::Fsync {
            self.sync_new_blob_files()?;
        }
        self.publish();
        Ok(())
    }

    /// Fsyncs the blob directories once a background flush has added blob files, so that a new
    /// blob file's directory entry is durable soon after it appears (fjall fsyncs the file, not
    /// its directory; `journal_repair/` says more).
    fn sync_new_blob_files(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let now = self.runs.blob_file_count();
        if self.blob_files_synced.swap(now, Ordering::AcqRel) != now {
            self.written(journal_repair::sync_blob_dirs(&self.dir))?;
        }
        Ok(())
    }

    /// Refuses every write once one has failed: after a failed write or fsync the files' state
    /// is unknown, and nothing may be acknowledged on top of it.
    fn writable(&self) -> Result<(), StoreError> {
        match self.health.failure() {
            None => Ok(()),
            Some(why) => Err(StoreError::WritesStopped(why.to_owned())),
        }
    }

    /// The write lock for a writer other than the sequencer's commit group.
    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.locks.write_lock()
    }

    /// A write batch. Every write of an open store holds the write lock (`write_locks.rs`),
    /// asserted here: the journal prefill could write zeros over a write that did not.
    ///
    /// Its commit syncs it (`durability = "fsync"`) in the same hold of fjall's journal lock as
    /// its write. Synced in a hold of its own, after, it could be vouched for by the sync of
    /// fjall's flush worker: that one fails with EIO on the same file handle, releases the lock
    /// before it poisons the database, and the writer's fdatasync then returns 0 (Linux reports
    /// a writeback error once per handle, and the failed pages are clean).
    fn batch(&self) -> fjall::OwnedWriteBatch {
        self.locks.assert_held();
        #[expect(clippy::disallowed_methods, reason = "the one checked place")]
        self.db.batch().durability(Some(self.persist_mode()))
    }

    /// One key written outside a batch, under the write lock (asserted, as [`Self::batch`]),
    /// and not synced: tests' setup, whose [`Self::persist`] follows.
    #[cfg(test)]
    fn insert(
        &self,
        keyspace: &Keyspace,
        key: impl Into<fjall::UserKey>,
        value: impl Into<fjall::UserValue>,
    ) -> Result<(), fjall::Error> {
        self.locks.assert_held();
        #[expect(clippy::disallowed_methods, reason = "the one checked place")]
        keyspace.insert(key, value)
    }

    /// One key removed outside a batch, as [`Self::insert`].
    #[cfg(test)]
    fn remove(
        &self,
        keyspace: &Keyspace,
        key: impl Into<fjall::UserKey>,
    ) -> Result<(), fjall::Error> {
        self.locks.assert_held();
        #[expect(clippy::disallowed_methods, reason = "the one checked place")]
        keyspace.remove(key)
    }

    /// The write lock for a commit group: ahead of every other writer still waiting.
    fn commit_lock(&self) -> write_locks::CommitLock<'_> {
        self.locks.commit_lock()
    }

    /// Passes a write's result on; a failed write stops every later one (fjall poisons itself
    /// after a failed journal write), so it is reported to the store's health.
    fn written<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.health.fail(e);
        }
        result
    }

    fn persist_mode(&self) -> PersistMode {
        match self.durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::None => PersistMode::Buffer,
        }
    }

    /// Readers see the store as of the last successful persist: nothing they return can vanish
    /// in a crash and have its seq handed out again.
    fn publish(&self) {
        let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
        *published = Arc::new(self.db.snapshot());
    }

    fn view(&self) -> Arc<Snapshot> {
        Arc::clone(&self.published.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: &Keyspace,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, StoreError> {
        self.view()
            .get(keyspace, key)?
            .map(|v| decode(&v))
            .transpose()
    }
}

impl StoreEngine for FjallStore {
    fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.persist()
    }

    fn dump(&self) -> Option<&dyn super::dump::DumpStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The storage ports' conformance suite, on a durable fjall store.
    struct FjallAdapter;

    impl crate::store::conformance::Adapter for FjallAdapter {
        type Store = FjallStore;

        fn try_open(dir: &Path) -> Result<FjallStore, StoreError> {
            FjallStore::open(dir, Durability::Fsync)
        }
    }

    mod conformance {
        crate::store::conformance::conformance_suite!(super::FjallAdapter);
    }
}
