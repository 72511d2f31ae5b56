//! Devices' push tokens: one row per (user, device id), replaced whole.

use super::ScyllaStore;
use super::codec::{self, i};
use crate::store::{PushTokenRecord, PushTokenStore, StoreError, UserId};

/// Rounds of a put (insert if absent, else replace if present) before giving up: each lost
/// round means a delete or an insert of the same device landed between the two LWTs.
const PUT_ROUNDS_MAX: usize = 16;

impl PushTokenStore for ScyllaStore {
    /// LWTs, as the removals are (`IF EXISTS`, `IF record = ?`): a plain write and an LWT on
    /// one row carry timestamps of different clocks, so a put just after a conditional
    /// delete could be shadowed by it and lost.
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &PushTokenRecord,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let data = codec::blob(token);
        self.run(async {
            for _ in 0..PUT_ROUNDS_MAX {
                let new = (i(user), device_id.to_owned(), data.clone());
                if self.lwt(&self.st.push_put_new, new).await?.applied {
                    return Ok(());
                }
                let over = (data.clone(), i(user), device_id.to_owned());
                if self.lwt(&self.st.push_put_over, over).await?.applied {
                    return Ok(());
                }
            }
            Err(StoreError::Unavailable(
                format!(
                    "push token of user {user}: {PUT_ROUNDS_MAX} rounds lost to concurrent \
                     writes of the same device"
                )
                .into(),
            ))
        })
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
