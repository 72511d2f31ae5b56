//! Devices' push tokens on PostgreSQL: `push_tokens`, keyed by (user, device id in byte
//! order), so a user's tokens are one index range.

use super::{PgStore, col, i, limit, u};
use crate::store::{PushTokenRecord, PushTokenStore, StoreError, UserId};

pub(super) fn push_token_of(
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<PushTokenRecord, StoreError> {
    Ok(PushTokenRecord {
        provider: col(row, at)?,
        token: col(row, at + 1)?,
        updated_ms: u(row, at + 2)?,
    })
}

impl PushTokenStore for PgStore {
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &PushTokenRecord,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO push_tokens (user_id, device_id, provider, token, updated_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id) DO UPDATE SET \
             provider = excluded.provider, token = excluded.token, \
             updated_ms = excluded.updated_ms",
            &[
                &i(user),
                &device_id,
                &token.provider,
                &token.token,
                &i(token.updated_ms),
            ],
        )?;
        Ok(())
    }

    fn remove_push_token(&self, user: UserId, device_id: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM push_tokens WHERE user_id = $1 AND device_id = $2",
            &[&i(user), &device_id],
        )? > 0)
    }

    fn remove_push_token_if(
        &self,
        user: UserId,
        device_id: &str,
        expected: &PushTokenRecord,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM push_tokens WHERE user_id = $1 AND device_id = $2 \
             AND provider = $3 AND token = $4 AND updated_ms = $5",
            &[
                &i(user),
                &device_id,
                &expected.provider,
                &expected.token,
                &i(expected.updated_ms),
            ],
        )? > 0)
    }

    fn push_tokens(
        &self,
        user: UserId,
        n: usize,
    ) -> Result<Vec<(String, PushTokenRecord)>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT device_id, provider, token, updated_ms FROM push_tokens \
             WHERE user_id = $1 ORDER BY device_id LIMIT $2",
            &[&i(user), &limit(n)],
        )?
        .iter()
        .map(|row| Ok((col(row, 0)?, push_token_of(row, 1)?)))
        .collect()
    }
}
