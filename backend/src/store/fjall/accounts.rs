//! Accounts and tokens in the fjall store: each write is its own durable batch.
//!
//! - `users`: user id → [`UserRecord`]; `usernames`: ASCII-lowercased name → user id;
//!   `emails`: case-folded e-mail ([`email_key`]) → user id, unique.
//! - `tokens`: token hash → [`TokenRecord`]; `user_tokens`: (user id, token hash) → nothing, so
//!   that a user's tokens (one per signed-in device) are one prefix scan.
//!
//! `account_index.rs` builds `emails` and `user_tokens` for a store written before they existed.

use fjall::Readable;
use serde::Deserialize;

use super::{FjallStore, be_u64, decode, encode};
use crate::store::{
    AccountStore, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
    UserRecord, email_key, username_key,
};

pub(super) const META_NEXT_USER_ID: &[u8] = b"next_user_id";

/// Key of a user's token in `user_tokens`.
pub(super) fn user_token_key(user_id: UserId, hash: &TokenHash) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&user_id.to_be_bytes());
    key[8..].copy_from_slice(hash);
    key
}

/// A token as stored before `platform` and `last_seen_ms` were kept.
#[derive(Deserialize)]
struct TokenRecordV1 {
    user_id: UserId,
    device_id: String,
    issued_at_ms: u64,
    expires_at_ms: u64,
}

/// Reads a token in either stored form. A record is exactly its fields, so an older, shorter
/// one fails to decode as the current form and is read as what it is.
pub(super) fn decode_token(bytes: &[u8]) -> Result<TokenRecord, StoreError> {
    decode::<TokenRecord>(bytes).or_else(|err| {
        let v1: TokenRecordV1 = decode(bytes).map_err(|_| err)?;
        Ok(TokenRecord {
            user_id: v1.user_id,
            device_id: v1.device_id,
            issued_at_ms: v1.issued_at_ms,
            expires_at_ms: v1.expires_at_ms,
            platform: 0,
            last_seen_ms: v1.issued_at_ms,
        })
    })
}

impl FjallStore {
    fn latest_token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.view()
            .get(&self.tokens, hash)?
            .map(|v| decode_token(&v))
            .transpose()
    }

    /// Every token of the user, as of the published snapshot (callers that write hold the
    /// write lock, so it is also the latest state).
    fn user_token_hashes(&self, user_id: UserId) -> Result<Vec<TokenHash>, StoreError> {
        let view = self.view();
        let mut out = Vec::new();
        for guard in view.prefix(&self.user_tokens, user_id.to_be_bytes()) {
            let key = guard.key()?;
            let hash: TokenHash = key
                .get(8..40)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("short user_tokens key".into()))?;
            out.push(hash);
        }
        Ok(out)
    }

    fn remove_token_in(&self, batch: &mut fjall::OwnedWriteBatch, user_id: UserId, h: &TokenHash) {
        batch.remove(&self.tokens, h);
        batch.remove(&self.user_tokens, user_token_key(user_id, h));
    }

    fn put_token_in(&self, batch: &mut fjall::OwnedWriteBatch, h: &TokenHash, t: &TokenRecord) {
        batch.insert(&self.tokens, h, encode(t));
        batch.insert(&self.user_tokens, user_token_key(t.user_id, h), []);
    }

    fn commit_account_batch(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        self.commit(batch)
    }
}

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
        let mail_key = email_key(email);
        if !mail_key.is_empty() && self.view().get(&self.emails, &mail_key)?.is_some() {
            return Err(StoreError::EmailTaken);
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
        let mut batch = self.batch();
        batch.insert(&self.users, user_id.to_be_bytes(), encode(&user));
        batch.insert(&self.usernames, name_key, user_id.to_be_bytes());
        if !mail_key.is_empty() {
            batch.insert(&self.emails, mail_key, user_id.to_be_bytes());
        }
        batch.insert(&self.meta, META_NEXT_USER_ID, (user_id + 1).to_be_bytes());
        self.commit_account_batch(batch)?;
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

    fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, StoreError> {
        let key = email_key(email);
        if key.is_empty() {
            return Ok(None);
        }
        self.view()
            .get(&self.emails, key)?
            .map(|v| be_u64(&v))
            .transpose()
    }

    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        self.put_token_in(&mut batch, hash, token);
        self.commit_account_batch(batch)
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.latest_token(hash)
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let Some(token) = self.latest_token(hash)? else {
            return Ok(());
        };
        let mut batch = self.batch();
        self.remove_token_in(&mut batch, token.user_id, hash);
        self.commit_account_batch(batch)
    }

    fn tokens_of_user(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        let view = self.view();
        let mut out = Vec::new();
        for guard in view.prefix(&self.user_tokens, user_id.to_be_bytes()) {
            if out.len() >= limit {
                break;
            }
            let key = guard.key()?;
            let Some(hash) = key.get(8..40).and_then(|h| <TokenHash>::try_from(h).ok()) else {
                return Err(StoreError::Corrupt("short user_tokens key".into()));
            };
            // An index entry whose token is gone (never written so) is skipped, not an error.
            if let Some(v) = view.get(&self.tokens, hash)? {
                out.push((hash, decode_token(&v)?));
            }
        }
        Ok(out)
    }

    fn replace_tokens(
        &self,
        user_id: UserId,
        revoke: &[TokenHash],
        put: Option<(&TokenHash, &TokenRecord)>,
        held: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        let _writing = self.write_lock();
        self.writable()?;
        // Under the write lock, which every revocation's write holds too.
        if let Some(held) = held
            && self
                .latest_token(held)?
                .is_none_or(|t| t.user_id != user_id)
        {
            return Ok(false);
        }
        let mut batch = self.batch();
        for hash in revoke {
            if self
                .latest_token(hash)?
                .is_some_and(|t| t.user_id == user_id)
            {
                self.remove_token_in(&mut batch, user_id, hash);
            }
        }
        if let Some((hash, token)) = put {
            self.put_token_in(&mut batch, hash, token);
        }
        self.commit_account_batch(batch)?;
        Ok(true)
    }

    fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        put: Option<(&TokenHash, &TokenRecord)>,
        current: Option<&str>,
    ) -> Result<Option<usize>, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        let _writing = self.write_lock();
        self.writable()?;
        let Some(mut user) = self.user_by_id(user_id)? else {
            return Ok(None);
        };
        if current.is_some_and(|c| c != user.password_hash) {
            return Ok(None);
        }
        user.password_hash = password_hash.to_owned();
        let mut batch = self.batch();
        batch.insert(&self.users, user_id.to_be_bytes(), encode(&user));
        let revoked = self.user_token_hashes(user_id)?;
        for hash in &revoked {
            self.remove_token_in(&mut batch, user_id, hash);
        }
        if let Some((hash, token)) = put {
            self.put_token_in(&mut batch, hash, token);
        }
        self.commit_account_batch(batch)?;
        Ok(Some(revoked.len()))
    }

    /// Under the write lock, as `set_password`: the check and the write are one step.
    fn rehash_password(
        &self,
        user_id: UserId,
        current: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let Some(mut user) = self.user_by_id(user_id)? else {
            return Ok(false);
        };
        if user.password_hash != current {
            return Ok(false);
        }
        user.password_hash = password_hash.to_owned();
        let mut batch = self.batch();
        batch.insert(&self.users, user_id.to_be_bytes(), encode(&user));
        self.commit_account_batch(batch)?;
        Ok(true)
    }

    fn touch_tokens(&self, seen: &[(TokenHash, u64)]) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        let mut changed = false;
        for (hash, seen_ms) in seen {
            if let Some(mut token) = self.latest_token(hash)?
                && token.last_seen_ms < *seen_ms
            {
                token.last_seen_ms = *seen_ms;
                batch.insert(&self.tokens, hash, encode(&token));
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        self.commit_account_batch(batch)
    }

    fn user_ids_after(&self, after: UserId, limit: usize) -> Result<Vec<UserId>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        let Some(from) = after.checked_add(1) else {
            return Ok(out);
        };
        for guard in self
            .view()
            .range(&self.users, from.to_be_bytes()..)
            .take(limit)
        {
            out.push(be_u64(&guard.key()?)?);
        }
        Ok(out)
    }

    fn user_count(&self) -> Result<u64, StoreError> {
        Ok(match self.view().get(&self.meta, META_NEXT_USER_ID)? {
            Some(v) => be_u64(&v)?.saturating_sub(USER_ID_FIRST),
            None => 0,
        })
    }
}
