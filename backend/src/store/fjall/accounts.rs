//! Accounts and tokens in the fjall store: each write is its own durable batch.

use fjall::Readable;

use super::{FjallStore, be_u64, encode};
use crate::store::{
    AccountStore, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
    UserRecord, username_key,
};

pub(super) const META_NEXT_USER_ID: &[u8] = b"next_user_id";

impl AccountStore for FjallStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        let _writing = self.write_lock();
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
        self.get(&self.users, user_id.to_be_bytes())
    }

    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        Ok(self
            .usernames
            .get(username_key(username))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        self.written(
            self.tokens
                .insert(hash, encode(token))
                .map_err(StoreError::from),
        )?;
        self.persist()
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.get(&self.tokens, hash)
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        self.written(self.tokens.remove(hash).map_err(StoreError::from))?;
        self.persist()
    }
}
