//! Opening the store of record that `[storage] engine` names, as [`Ports`].

use std::sync::Arc;

use super::{EngineOptions, FjallStore, Ports, StoreError};
use crate::config::{StorageConfig, StorageEngine};

/// Opens the configured store; the embedded one behind the tail cache.
pub fn open(storage: &StorageConfig) -> Result<Ports, StoreError> {
    match storage.engine {
        StorageEngine::Embedded => {
            // The restore's counters are its last part: a server on a part of a store would
            // hand out ids the rest of it holds.
            super::dump::refuse_unfinished_copy(&storage.data_dir)?;
            let options = EngineOptions::from(storage);
            let store = FjallStore::open_with(&storage.data_dir, storage.durability, &options)?;
            Ok(Ports::with_tail_cache(
                Arc::new(store),
                storage.tail_cache_bytes,
            ))
        }
        // No tail cache on a store the nodes of a cluster share: another node's writes
        // would not pass through this one's cache.
        // The data dir's lock, as the embedded store takes it and before connecting: one
        // process per data dir (its node files), whatever the store.
        StorageEngine::Postgres => {
            let dir_lock = super::dir_lock::lock_dir(&storage.data_dir)?;
            let store = super::PgStore::open(&storage.postgres, storage.durability)?;
            Ok(Ports::of(Arc::new(store.holding_dir_lock(dir_lock))))
        }
        StorageEngine::Scylla => {
            let dir_lock = super::dir_lock::lock_dir(&storage.data_dir)?;
            let store = super::ScyllaStore::open(&storage.scylla)?;
            Ok(Ports::of(Arc::new(store.holding_dir_lock(dir_lock))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock comes before the connection: a second server on the data dir is refused
    /// whether or not the cluster answers (none runs here: the hosts are a closed port).
    #[test]
    fn a_scylla_server_takes_the_data_dirs_lock_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let _held = super::super::dir_lock::lock_dir(dir.path()).unwrap();
        let mut storage = StorageConfig {
            engine: StorageEngine::Scylla,
            data_dir: dir.path().to_owned(),
            ..StorageConfig::default()
        };
        storage.scylla.hosts = vec!["127.0.0.1:1".into()];
        match open(&storage) {
            Err(StoreError::DirInUse(path)) => assert_eq!(path, dir.path()),
            Err(other) => panic!("expected DirInUse, got {other}"),
            Ok(_) => panic!("a ScyllaDB server opened a data dir another server holds"),
        }
    }
}
