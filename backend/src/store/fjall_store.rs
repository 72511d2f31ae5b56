//! The embedded store on fjall: one keyspace per record kind, big-endian integer keys so that
//! ranges scan in numeric order.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable, Snapshot,
};

use super::{
    CommitGroup, ConvId, CursorRecord, DedupRecord, MessageRecord, Store, StoreError, StoreHealth,
    TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId, UserRecord, username_key,
};
use crate::config::Durability;

const META_NEXT_USER_ID: &[u8] = b"next_user_id";
const META_NEXT_MSG_ID: &[u8] = b"next_msg_id";
/// Stored messages at least this large are kept out of the LSM tree's compactions.
const MESSAGE_SEPARATION_BYTES: u32 = 512;

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

/// Key of a (conversation, seq) pair: both big-endian, so a conversation's messages are contiguous
/// and ordered by seq.
fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

fn suffixed_key(a: u64, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + suffix.len());
    key.extend_from_slice(&a.to_be_bytes());
    key.extend_from_slice(suffix);
    key
}

fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(postcard::Error::DeserializeUnexpectedEnd.into()))
}

pub struct FjallStore {
    db: Database,
    durability: Durability,
    meta: Keyspace,
    users: Keyspace,
    usernames: Keyspace,
    tokens: Keyspace,
    messages: Keyspace,
    user_conversations: Keyspace,
    dedup: Keyspace,
    cursors: Keyspace,
    device_cursors: Keyspace,
    /// What readers see: a snapshot taken after the last successful persist.
    published: RwLock<Arc<Snapshot>>,
    /// One writer at a time, from its write through its persist to publishing the snapshot, so
    /// that a published snapshot never holds another writer's data before that data is durable
    /// (and user creation's name check and id counter move together).
    writes: Mutex<()>,
    /// Set once a write fails: fjall takes none after that.
    health: Arc<StoreHealth>,
    /// The data dir's lock file, locked exclusively while the store is open.
    _dir_lock: std::fs::File,
}

/// Name of the lock file in the data dir.
const LOCK_FILE: &str = "ringchat.lock";

/// Takes the data dir's lock: one process at a time may use a data dir. The operating system
/// releases it when the process ends, however it ends.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::DirInUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(err)) => Err(StoreError::Io(err)),
    }
}

impl FjallStore {
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let dir_lock = lock_dir(dir)?;
        let db = super::journal_repair::open_database(dir)?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Self {
            meta: ks("meta")?,
            users: ks("users")?,
            usernames: ks("usernames")?,
            tokens: ks("tokens")?,
            // Message records above this size live in blob files that compaction does not
            // rewrite: with 1 KiB messages this cut server CPU per message by a large factor.
            messages: db.keyspace("messages", || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(KvSeparationOptions {
                    separation_threshold: MESSAGE_SEPARATION_BYTES,
                    ..KvSeparationOptions::default()
                }))
            })?,
            user_conversations: ks("user_conversations")?,
            dedup: ks("dedup")?,
            cursors: ks("cursors")?,
            device_cursors: ks("device_cursors")?,
            published: RwLock::new(Arc::new(db.snapshot())),
            db,
            durability,
            writes: Mutex::new(()),
            health: Arc::default(),
            _dir_lock: dir_lock,
        })
    }

    /// Makes everything committed so far durable under the configured durability.
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        let persisted = self
            .db
            .persist(self.persist_mode())
            .map_err(|e| StoreError::Persist(e.into()));
        self.written(persisted)?;
        self.publish();
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

    /// Passes a write's result on; a failed write stops every later one (fjall poisons itself
    /// after a failed journal write), so it is reported to the store's health.
    fn written<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.health.fail(e);
        }
        result
    }

    pub fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
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
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

impl Store for FjallStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        let _guard = self
            .writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.writable()?;
        let name_key = username_key(username);
        if self.view().get(&self.usernames, &name_key)?.is_some() {
            return Err(StoreError::UsernameTaken);
        }
        let user_id = match self.view().get(&self.meta, META_NEXT_USER_ID)? {
            Some(v) => be_u64(&v)?,
            None => USER_ID_FIRST,
        };
        if user_id > USER_ID_LAST {
            return Err(StoreError::UserIdsExhausted);
        }
        let user = UserRecord {
            user_id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            email: email.to_owned(),
            created_at_ms: now_ms,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.users, user_id.to_be_bytes(), encode(&user));
        batch.insert(&self.usernames, name_key, user_id.to_be_bytes());
        batch.insert(&self.meta, META_NEXT_USER_ID, (user_id + 1).to_be_bytes());
        self.written(batch.commit().map_err(StoreError::from))?;
        self.persist()?;
        Ok(user)
    }

    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.view()
            .get(&self.users, user_id.to_be_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        Ok(self
            .usernames
            .get(username_key(username))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        let _writing = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.writable()?;
        self.written(
            self.tokens
                .insert(hash, encode(token))
                .map_err(StoreError::from),
        )?;
        self.persist()
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.view()
            .get(&self.tokens, hash)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        let _writing = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.writable()?;
        self.written(self.tokens.remove(hash).map_err(StoreError::from))?;
        self.persist()
    }

    fn commit_group(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let _writing = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.writable()?;
        let mut batch = self.db.batch();
        for m in &group.messages {
            batch.insert(
                &self.messages,
                pair_key(m.conv_id.to_wire(), m.seq),
                encode(m),
            );
        }
        for (user, conv) in &group.user_conversations {
            batch.insert(
                &self.user_conversations,
                pair_key(*user, conv.to_wire()),
                [],
            );
        }
        for (user, client_msg_id, record) in &group.dedup {
            batch.insert(
                &self.dedup,
                suffixed_key(*user, client_msg_id.as_bytes()),
                encode(record),
            );
        }
        for (conv, user, record) in &group.cursors {
            batch.insert(
                &self.cursors,
                pair_key(conv.to_wire(), *user),
                encode(record),
            );
        }
        for (conv, user, device, seq) in &group.device_cursors {
            let mut key = pair_key(conv.to_wire(), *user).to_vec();
            key.extend_from_slice(device.as_bytes());
            batch.insert(&self.device_cursors, key, seq.to_be_bytes());
        }
        if let Some(next) = group.next_msg_id {
            batch.insert(&self.meta, META_NEXT_MSG_ID, next.to_be_bytes());
        }
        self.written(batch.commit().map_err(StoreError::from))?;
        self.persist()
    }

    fn next_msg_id(&self) -> Result<u64, StoreError> {
        match self.view().get(&self.meta, META_NEXT_MSG_ID)? {
            Some(v) => be_u64(&v),
            None => Ok(1),
        }
    }

    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        let range = pair_key(conv.to_wire(), 0)..=pair_key(conv.to_wire(), u64::MAX);
        match self.view().range(&self.messages, range).next_back() {
            Some(guard) => Ok(Some(decode(&guard.into_inner()?.1)?)),
            None => Ok(None),
        }
    }

    fn dedup(&self, from: UserId, client_msg_id: &str) -> Result<Option<DedupRecord>, StoreError> {
        self.view()
            .get(&self.dedup, suffixed_key(from, client_msg_id.as_bytes()))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn for_each_dedup_key(&self, f: &mut dyn FnMut(UserId, &[u8])) -> Result<(), StoreError> {
        for guard in self.view().iter(&self.dedup) {
            let key = guard.key()?;
            if let Some((user, client_msg_id)) = key.split_first_chunk::<8>() {
                f(u64::from_be_bytes(*user), client_msg_id);
            }
        }
        Ok(())
    }

    fn cursor(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRecord>, StoreError> {
        self.view()
            .get(&self.cursors, pair_key(conv.to_wire(), user))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn device_cursor(
        &self,
        conv: ConvId,
        user: UserId,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut key = pair_key(conv.to_wire(), user).to_vec();
        key.extend_from_slice(device_id.as_bytes());
        self.view()
            .get(&self.device_cursors, key)?
            .map(|v| be_u64(&v))
            .transpose()
    }

    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.view()
            .get(&self.messages, pair_key(conv.to_wire(), seq))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = pair_key(conv.to_wire(), first)..=pair_key(conv.to_wire(), u64::MAX);
        self.view()
            .range(&self.messages, range)
            .take(limit)
            .map(|guard| decode(&guard.into_inner()?.1))
            .collect()
    }

    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let range = pair_key(conv.to_wire(), 0)..pair_key(conv.to_wire(), before_seq);
        self.view()
            .range(&self.messages, range)
            .rev()
            .take(limit)
            .map(|guard| decode(&guard.into_inner()?.1))
            .collect()
    }

    fn user_conversations(&self, user: UserId, limit: usize) -> Result<Vec<ConvId>, StoreError> {
        self.view()
            .prefix(&self.user_conversations, user.to_be_bytes())
            .take(limit)
            .map(|guard| {
                let key = guard.key()?;
                be_u64(&key[8..]).map(ConvId::from_stored)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The storage port's conformance suite, on a durable fjall store.
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
