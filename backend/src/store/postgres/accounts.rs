//! Accounts and login tokens on PostgreSQL: `users` (unique case-folded username and e-mail
//! keys), `tokens` (indexed by user, so that a user's tokens are one index range), and the
//! `next_user_id` counter, advanced in the transaction that creates the user (ids are never
//! reused, and a refused creation takes none).

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{PgStore, col, i, limit, u};
use crate::store::{
    AccountStore, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
    UserRecord, email_key, username_key,
};

pub(super) fn user_of(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: u(row, 0)?,
        username: col(row, 1)?,
        password_hash: col(row, 2)?,
        email: col(row, 3)?,
        created_at_ms: u(row, 4)?,
    })
}

pub(super) fn token_of(row: &Row, at: usize) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        user_id: u(row, at)?,
        device_id: col(row, at + 1)?,
        issued_at_ms: u(row, at + 2)?,
        expires_at_ms: u(row, at + 3)?,
        platform: col(row, at + 4)?,
        last_seen_ms: u(row, at + 5)?,
    })
}

pub(super) fn hash_of(row: &Row, at: usize) -> Result<TokenHash, StoreError> {
    col::<&[u8]>(row, at)?
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))
}

pub(super) const TAKEN: &str = "SELECT EXISTS (SELECT 1 FROM users WHERE username_key = $1), \
     EXISTS (SELECT 1 FROM users WHERE email_key = $2)";
pub(super) const REVOKE_TOKENS: &str = "DELETE FROM tokens WHERE hash = ANY($1) AND user_id = $2";
pub(super) const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2 WHERE user_id = $1 \
     AND ($3::text IS NULL OR password_hash = $3)";
/// The token a refresh is made from, locked until the refresh commits. With
/// `LOCK_USER_FOR_TOKENS`, taken first by every write that revokes tokens, a refresh and a
/// revocation of the same user's tokens never interleave.
pub(super) const HELD_TOKEN: &str = "SELECT 1 FROM tokens WHERE hash = $1 AND user_id = $2";
pub(super) const LOCK_USER_FOR_TOKENS: &str = "SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE";
pub(super) const REVOKE_ALL_TOKENS: &str = "DELETE FROM tokens WHERE user_id = $1";

pub(super) const PUT_TOKEN: &str = "INSERT INTO tokens (hash, user_id, device_id, issued_at_ms, \
     expires_at_ms, platform, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, \
     device_id = excluded.device_id, issued_at_ms = excluded.issued_at_ms, \
     expires_at_ms = excluded.expires_at_ms, platform = excluded.platform, \
     last_seen_ms = excluded.last_seen_ms";

async fn put_token_in(
    tx: &deadpool_postgres::Transaction<'_>,
    hash: &TokenHash,
    t: &TokenRecord,
) -> Result<(), StoreError> {
    let st = tx.prepare_cached(PUT_TOKEN).await?;
    tx.execute(
        &st,
        &[
            &&hash[..],
            &i(t.user_id),
            &t.device_id,
            &i(t.issued_at_ms),
            &i(t.expires_at_ms),
            &t.platform,
            &i(t.last_seen_ms),
        ],
    )
    .await?;
    Ok(())
}

fn taken(e: &tokio_postgres::Error) -> Option<StoreError> {
    let db = e.as_db_error()?;
    if *db.code() != SqlState::UNIQUE_VIOLATION {
        return None;
    }
    match db.constraint() {
        Some(c) if c.contains("email") => Some(StoreError::EmailTaken),
        Some(c) if c.contains("username") => Some(StoreError::UsernameTaken),
        _ => None,
    }
}

impl AccountStore for PgStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        let (name_key, mail_key) = (username_key(username), email_key(email));
        let mail_key = (!mail_key.is_empty()).then_some(mail_key);
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let st = tx.prepare_cached(TAKEN).await?;
            let row = tx.query_one(&st, &[&name_key, &mail_key]).await?;
            if col::<bool>(&row, 0)? {
                return Err(StoreError::UsernameTaken);
            }
            if col::<bool>(&row, 1)? {
                return Err(StoreError::EmailTaken);
            }
            // The counter's row lock orders concurrent creations.
            let st = tx
                .prepare_cached(
                    "INSERT INTO counters (name, value) VALUES ('next_user_id', $1::bigint + 1) \
                     ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 \
                     RETURNING value - 1",
                )
                .await?;
            let user_id = u(&tx.query_one(&st, &[&i(USER_ID_FIRST)]).await?, 0)?;
            if user_id > USER_ID_LAST {
                return Err(StoreError::UserIdsExhausted);
            }
            let st = tx
                .prepare_cached(
                    "INSERT INTO users (user_id, username, username_key, password_hash, email, \
                     email_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &i(user_id),
                &username,
                &name_key,
                &password_hash,
                &email,
                &mail_key,
                &i(now_ms),
            ];
            if let Err(e) = tx.execute(&st, &params).await {
                // Another node took the name or address since the check above.
                return Err(taken(&e).unwrap_or(e.into()));
            }
            tx.commit()
                .await
                .map_err(|e| taken(&e).unwrap_or(e.into()))?;
            Ok(UserRecord {
                user_id,
                username: username.to_owned(),
                password_hash: password_hash.to_owned(),
                email: email.to_owned(),
                created_at_ms: now_ms,
            })
        })
    }

    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.row(
            "SELECT user_id, username, password_hash, email, created_at_ms FROM users \
             WHERE user_id = $1",
            &[&i(user_id)],
        )?
        .as_ref()
        .map(user_of)
        .transpose()
    }

    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        self.row(
            "SELECT user_id FROM users WHERE username_key = $1",
            &[&username_key(username)],
        )?
        .map(|row| u(&row, 0))
        .transpose()
    }

    fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, StoreError> {
        let key = email_key(email);
        if key.is_empty() {
            return Ok(None);
        }
        self.row("SELECT user_id FROM users WHERE email_key = $1", &[&key])?
            .map(|row| u(&row, 0))
            .transpose()
    }

    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            put_token_in(&tx, hash, token).await?;
            Ok(tx.commit().await?)
        })
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.row(
            "SELECT user_id, device_id, issued_at_ms, expires_at_ms, platform, last_seen_ms \
             FROM tokens WHERE hash = $1",
            &[&&hash[..]],
        )?
        .map(|row| token_of(&row, 0))
        .transpose()
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.execute("DELETE FROM tokens WHERE hash = $1", &[&&hash[..]])?;
        Ok(())
    }

    fn tokens_of_user(
        &self,
        user_id: UserId,
        n: usize,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT hash, user_id, device_id, issued_at_ms, expires_at_ms, platform, \
             last_seen_ms FROM tokens WHERE user_id = $1 ORDER BY hash LIMIT $2",
            &[&i(user_id), &limit(n)],
        )?
        .iter()
        .map(|row| Ok((hash_of(row, 0)?, token_of(row, 1)?)))
        .collect()
    }

    fn replace_tokens(
        &self,
        user_id: UserId,
        revoke: &[TokenHash],
        put: Option<(&TokenHash, &TokenRecord)>,
        held: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        let revoke: Vec<&[u8]> = revoke.iter().map(|h| &h[..]).collect();
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The user's row first, as every token write: a revocation that began before this
            // write is committed (and its token gone) by the time the held token is read.
            let st = tx.prepare_cached(LOCK_USER_FOR_TOKENS).await?;
            tx.execute(&st, &[&i(user_id)]).await?;
            if let Some(held) = held {
                let st = tx.prepare_cached(HELD_TOKEN).await?;
                if tx
                    .query_opt(&st, &[&&held[..], &i(user_id)])
                    .await?
                    .is_none()
                {
                    return Ok(false);
                }
            }
            let st = tx.prepare_cached(REVOKE_TOKENS).await?;
            tx.execute(&st, &[&revoke, &i(user_id)]).await?;
            if let Some((hash, token)) = put {
                put_token_in(&tx, hash, token).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        put: Option<(&TokenHash, &TokenRecord)>,
        current: Option<&str>,
    ) -> Result<Option<usize>, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Locks the user's row (as `LOCK_USER_FOR_TOKENS`) before the tokens are removed.
            let st = tx.prepare_cached(SET_PASSWORD).await?;
            if tx
                .execute(&st, &[&i(user_id), &password_hash, &current])
                .await?
                == 0
            {
                return Ok(None);
            }
            let st = tx.prepare_cached(REVOKE_ALL_TOKENS).await?;
            let revoked = tx.execute(&st, &[&i(user_id)]).await?;
            if let Some((hash, token)) = put {
                put_token_in(&tx, hash, token).await?;
            }
            tx.commit().await?;
            Ok(Some(usize::try_from(revoked).unwrap_or(usize::MAX)))
        })
    }

    /// One conditional UPDATE (`SET_PASSWORD` with `current`): the row's check and its write
    /// are one statement.
    fn rehash_password(
        &self,
        user_id: UserId,
        current: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(SET_PASSWORD, &[&i(user_id), &password_hash, &current])? == 1)
    }

    fn touch_tokens(&self, seen: &[(TokenHash, u64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = seen.iter().map(|(h, _)| &h[..]).collect();
        let times: Vec<i64> = seen.iter().map(|(_, t)| i(*t)).collect();
        self.execute(
            "UPDATE tokens t SET last_seen_ms = s.seen \
             FROM (SELECT hash, max(seen) AS seen FROM UNNEST($1::bytea[], $2::bigint[]) \
                   AS x(hash, seen) GROUP BY hash) s \
             WHERE t.hash = s.hash AND t.last_seen_ms < s.seen",
            &[&hashes, &times],
        )?;
        Ok(())
    }

    fn user_ids_after(&self, after: UserId, n: usize) -> Result<Vec<UserId>, StoreError> {
        if n == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT user_id FROM users WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            &[&i(after), &limit(n)],
        )?
        .iter()
        .map(|row| u(row, 0))
        .collect()
    }

    fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .counter("next_user_id", USER_ID_FIRST)?
            .saturating_sub(USER_ID_FIRST))
    }
}
