//! Devices' push tokens in the fjall store: `push_tokens` ((user, device id) → a
//! [`PushTokenRecord`]), so a user's tokens are one prefix scan. Added without a layout change:
//! a store from before opens with none.

use fjall::Readable;

use super::{FjallStore, decode, encode};
use crate::store::{PushTokenRecord, PushTokenStore, StoreError, UserId};

pub(super) fn key(user: UserId, device_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + device_id.len());
    key.extend_from_slice(&user.to_be_bytes());
    key.extend_from_slice(device_id.as_bytes());
    key
}

impl PushTokenStore for FjallStore {
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &PushTokenRecord,
    ) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        batch.insert(&self.push_tokens, key(user, device_id), encode(token));
        self.commit(batch)
    }

    fn remove_push_token(&self, user: UserId, device_id: &str) -> Result<bool, StoreError> {
        self.remove_token_where(user, device_id, |_| Ok(true))
    }

    fn remove_push_token_if(
        &self,
        user: UserId,
        device_id: &str,
        expected: &PushTokenRecord,
    ) -> Result<bool, StoreError> {
        self.remove_token_where(user, device_id, |stored| {
            Ok(decode::<PushTokenRecord>(stored)? == *expected)
        })
    }

    fn push_tokens(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<(String, PushTokenRecord)>, StoreError> {
        let mut out = Vec::new();
        for guard in self
            .view()
            .prefix(&self.push_tokens, user.to_be_bytes())
            .take(limit)
        {
            let (k, v) = guard.into_inner()?;
            let device = k
                .get(8..)
                .and_then(|d| std::str::from_utf8(d).ok())
                .ok_or_else(|| StoreError::Corrupt("push_tokens key".into()))?;
            out.push((device.to_owned(), decode(&v)?));
        }
        Ok(out)
    }
}

impl FjallStore {
    /// Removes the device's token if it has one and `removable` says so of its stored bytes;
    /// whether it did.
    fn remove_token_where(
        &self,
        user: UserId,
        device_id: &str,
        removable: impl FnOnce(&[u8]) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let key = key(user, device_id);
        // Read under the write lock: no other writer moves it meanwhile.
        let Some(stored) = self.view().get(&self.push_tokens, &key)? else {
            return Ok(false);
        };
        if !removable(&stored)? {
            return Ok(false);
        }
        let mut batch = self.batch();
        batch.remove(&self.push_tokens, key);
        self.commit(batch)?;
        Ok(true)
    }
}
