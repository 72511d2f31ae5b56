//! Writes that carry over or rebuild many keys in a row (the layout migration and the indexes
//! built at open, an import's derived counts): each batch is committed and synced before the
//! next is written, whatever `durability` says.
//!
//! Why: the kernel writes a journal's pages back in no particular order. Of several batches
//! committed without a sync between them, a power cut can tear an earlier one while a later one
//! reaches the disk whole, and `journal_repair` refuses to open a store whose bad batch others
//! follow (they may be acknowledged writes) under `durability = "fsync"`: the store would never
//! open again (under `none` it cuts there, and the later batches a step counted on are gone).
//! The mark a step writes last is synced the same way. Synced one at a
//! time, only the last batch can be torn, and a torn last batch is dropped (the step that wrote
//! it runs again at the next open, or the copy resumes). Cost: one fdatasync per
//! [`REBUILD_BATCH_KEYS_MAX`] keys, during steps that run once.

use fjall::{Keyspace, OwnedWriteBatch, PersistMode};

use super::FjallStore;
use crate::store::StoreError;

/// Keys per batch of a rebuild, at most.
pub(super) const REBUILD_BATCH_KEYS_MAX: usize = 4096;

/// A rebuild's writes, committed and synced every [`REBUILD_BATCH_KEYS_MAX`] keys. The caller
/// holds the store's write lock (asserted by [`FjallStore::batch`]).
pub(super) struct RebuildBatch<'a> {
    store: &'a FjallStore,
    batch: OwnedWriteBatch,
}

impl<'a> RebuildBatch<'a> {
    pub(super) fn new(store: &'a FjallStore) -> Self {
        Self {
            store,
            batch: store.batch(),
        }
    }

    pub(super) fn insert(
        &mut self,
        keyspace: &Keyspace,
        key: impl Into<fjall::UserKey>,
        value: impl Into<fjall::UserValue>,
    ) -> Result<(), StoreError> {
        self.batch.insert(keyspace, key, value);
        if self.batch.len() >= REBUILD_BATCH_KEYS_MAX {
            let full = std::mem::replace(&mut self.batch, self.store.batch());
            self.store.commit_synced(full)?;
        }
        Ok(())
    }

    /// Commits and syncs what is left.
    pub(super) fn finish(self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.commit_synced(self.batch)
    }
}

/// An index keyspace built at open from a source keyspace, once per layout version.
pub(super) struct DerivedIndex<'a> {
    /// The mark in `meta`: the version the index was last built for.
    pub mark: &'a [u8],
    pub version: u64,
    pub source: &'a Keyspace,
    pub index: &'a Keyspace,
    /// What the log line counts ("groups", "invites").
    pub what: &'static str,
}

impl DerivedIndex<'_> {
    /// Inserts `key_of(key, value)` (empty value) into the index for every source entry, unless
    /// the mark says it was built for this version; every entry is durable before the mark is
    /// written. The caller is `FjallStore::open_with`, before any writer.
    #[expect(
        clippy::disallowed_methods,
        reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
    )]
    pub(super) fn build(
        &self,
        store: &FjallStore,
        mut key_of: impl FnMut(&[u8], &[u8]) -> Result<Vec<u8>, StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(v) = store.meta.get(self.mark)?
            && super::be_u64(&v)? >= self.version
        {
            return Ok(());
        }
        let _writing = store.write_lock();
        let mut batch = RebuildBatch::new(store);
        let mut indexed = 0usize;
        for guard in self.source.iter() {
            let (key, value) = guard.into_inner()?;
            batch.insert(self.index, key_of(&key, &value)?, [])?;
            indexed += 1;
        }
        batch.finish()?;
        store.meta.insert(self.mark, self.version.to_be_bytes())?;
        // Synced as the batches were: under `durability = "none"` `persist` only hands it to
        // the page cache.
        store.sync_now()?;
        if indexed > 0 {
            tracing::info!(entries = indexed, of = self.what, "index built at open");
        }
        Ok(())
    }
}

impl FjallStore {
    /// Commits a batch from [`FjallStore::batch`] fdatasync'ed whatever `durability` says, in
    /// the hold of fjall's journal lock that writes it (why: [`FjallStore::batch`]).
    pub(super) fn commit_synced(&self, batch: OwnedWriteBatch) -> Result<(), StoreError> {
        let committed = batch.durability(Some(PersistMode::SyncData)).commit();
        self.written(committed.map_err(super::commit_error))?;
        self.synced()
    }

    /// Makes everything committed so far durable now, whatever `durability` says: fdatasync,
    /// as `durability = "fsync"` does (fjall pre-sizes its journals and fsyncs them and their
    /// directory when it creates them).
    pub(super) fn sync_now(&self) -> Result<(), StoreError> {
        let synced = self
            .db
            .persist(PersistMode::SyncData)
            .map_err(|e| StoreError::Persist(e.into()));
        self.written(synced)?;
        self.synced()
    }

    /// What follows a sync made whatever `durability` says.
    fn synced(&self) -> Result<(), StoreError> {
        self.sync_new_blob_files()?;
        #[cfg(test)]
        self.durable_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish();
        Ok(())
    }
}
