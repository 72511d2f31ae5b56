//! The embedded store on fjall: one keyspace per record kind, big-endian integer keys so that
//! ranges scan in numeric order.

use std::path::Path;
use std::sync::Mutex;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{
    Store, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId, UserRecord,
    username_key,
};
use crate::config::Durability;

const META_NEXT_USER_ID: &[u8] = b"next_user_id";

pub struct FjallStore {
    db: Database,
    durability: Durability,
    meta: Keyspace,
    users: Keyspace,
    usernames: Keyspace,
    tokens: Keyspace,
    /// Serialises user creation: the name check and the id counter must move together.
    create_user_lock: Mutex<()>,
}

impl FjallStore {
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir).open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Self {
            meta: ks("meta")?,
            users: ks("users")?,
            usernames: ks("usernames")?,
            tokens: ks("tokens")?,
            db,
            durability,
            create_user_lock: Mutex::new(()),
        })
    }

    /// Makes everything committed so far durable under the configured durability.
    pub(crate) fn persist(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::Fsync => self.db.persist(PersistMode::SyncData)?,
            Durability::None => self.db.persist(PersistMode::Buffer)?,
        }
        Ok(())
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
            .create_user_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let name_key = username_key(username);
        if self.usernames.get(&name_key)?.is_some() {
            return Err(StoreError::UsernameTaken);
        }
        let user_id = match self.meta.get(META_NEXT_USER_ID)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| postcard::Error::DeserializeUnexpectedEnd)?,
            ),
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
        batch.commit()?;
        self.persist()?;
        Ok(user)
    }

    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .get(user_id.to_be_bytes())?
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
        self.tokens.insert(hash, encode(token))?;
        self.persist()
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens.get(hash)?.map(|v| decode(&v)).transpose()
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.tokens.remove(hash)?;
        self.persist()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_get_consecutive_nine_digit_ids_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            let a = store.create_user("Alice", "h", "", 1).unwrap();
            let b = store.create_user("bob", "h", "b@x", 2).unwrap();
            assert_eq!(a.user_id, USER_ID_FIRST);
            assert_eq!(b.user_id, USER_ID_FIRST + 1);
            assert!(matches!(
                store.create_user("ALICE", "h", "", 3),
                Err(StoreError::UsernameTaken)
            ));
        }
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(store.user_id_by_name("alice").unwrap(), Some(USER_ID_FIRST));
        assert_eq!(
            store.user_by_id(USER_ID_FIRST + 1).unwrap().unwrap().email,
            "b@x"
        );
        let c = store.create_user("carol", "h", "", 4).unwrap();
        assert_eq!(c.user_id, USER_ID_FIRST + 2, "ids are never reused");
    }
}
