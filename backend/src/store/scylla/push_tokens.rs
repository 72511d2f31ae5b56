//! Devices' push tokens: one row per (user, device id), replaced whole.

use super::ScyllaStore;
use super::codec::{self, i};
use crate::store::{PushTokenRecord, PushTokenStore, StoreError, UserId};

impl PushTokenStore for ScyllaStore {
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &PushTokenRecord,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.run(self.exec(
            &self.st.push_put,
            (i(user), device_id.to_owned(), codec::blob(token)),
        ))
        .map(drop)
    }

    /// An LWT (`IF EXISTS`) so that the answer is the row's, not a guess.
    fn remove_push_token(&self, user: UserId, device_id: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let done = self.run(self.lwt(&self.st.push_del, (i(user), device_id.to_owned())))?;
        Ok(done.applied)
    }

    /// An LWT on the whole record (`IF record = ?`): compare and delete in one step.
    fn remove_push_token_if(
        &self,
        user: UserId,
        device_id: &str,
        expected: &PushTokenRecord,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let done = self.run(self.lwt(
            &self.st.push_del_if,
            (i(user), device_id.to_owned(), codec::blob(expected)),
        ))?;
        Ok(done.applied)
    }

    fn push_tokens(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<(String, PushTokenRecord)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows =
            self.run(self.rows::<(String, Vec<u8>)>(&self.st.push_page, (i(user), limit)))?;
        rows.into_iter()
            .map(|(device, data)| Ok((device, codec::unblob(&data)?)))
            .collect()
    }
}
