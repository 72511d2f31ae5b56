//! Accounts and login tokens. User ids come from an LWT counter; usernames and e-mail
//! addresses are made unique by `INSERT … IF NOT EXISTS` on their own tables; tokens carry a
//! TTL of their expiry plus [`TOKEN_KEPT_AFTER_EXPIRY_S`].

use futures_util::future::try_join_all;
use scylla::statement::batch::BatchType;

use super::ScyllaStore;
use super::codec::{self, IDS_PER_BUCKET, i, u};
use super::writes::Writes;
use crate::store::{
    AccountStore, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
    UserRecord, email_key, username_key,
};

pub(super) const META_NEXT_USER_ID: &str = "next_user_id";
/// An expired token is still listed (and can be shown as expired) this long, then ScyllaDB
/// drops it by TTL: no sweeper needed.
pub(super) const TOKEN_KEPT_AFTER_EXPIRY_S: u64 = 30 * 86_400;
/// Tokens of one user read by `set_password` to revoke them all, at most (a user has one per
/// signed-in device, bounded by `login.devices_max`).
const TOKENS_PER_USER_MAX: i32 = 10_000;

/// A row of `users` as `user_columns!` reads it.
pub(super) type UserRow = (i64, String, String, String, i64);
/// A row of `tokens` as `token_columns!` reads it. Every cell is optional: a row can hold only
/// some of them (a touch's `last_seen_ms` written after the row's delete, by another host's
/// clock), and such a row is no token ([`token_of`]).
pub(super) type TokenRow = (
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<i64>,
);

pub(super) fn user_of(row: UserRow) -> UserRecord {
    let (id, username, password_hash, email, created) = row;
    UserRecord {
        user_id: u(id),
        username,
        password_hash,
        email,
        created_at_ms: u(created),
    }
}

/// The token a row holds; `None` for a row with only some of its cells: what is left of a
/// revoked token is revoked, never an error.
pub(super) fn token_of(row: TokenRow) -> Option<TokenRecord> {
    let (user, device_id, issued, expires, platform, seen) = row;
    Some(TokenRecord {
        user_id: u(user?),
        device_id: device_id?,
        issued_at_ms: u(issued?),
        expires_at_ms: u(expires?),
        platform: platform?,
        last_seen_ms: u(seen?),
    })
}

/// The write timestamp (µs) of a touch that saw the device at `at_ms`: the later sighting
/// wins whatever order touches land in (forward only, without a read or an LWT), and a
/// revocation written after the sighting (the client clock's µs) deletes it with the row.
pub(super) fn touch_ts(at_ms: u64) -> i64 {
    i(at_ms.saturating_mul(1_000).min(i64::MAX as u64))
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn token_ttl(token: &TokenRecord) -> i32 {
    codec::ttl_s(token.expires_at_ms, now_ms(), TOKEN_KEPT_AFTER_EXPIRY_S)
}

impl ScyllaStore {
    /// Adds a token and its index entry to `w`.
    fn put_token_into<'a>(&'a self, w: &mut Writes<'a>, hash: &TokenHash, t: &TokenRecord) {
        let ttl = token_ttl(t);
        w.push(
            &self.st.token_put,
            (
                hash.to_vec(),
                i(t.user_id),
                t.device_id.clone(),
                i(t.issued_at_ms),
                i(t.expires_at_ms),
                t.platform,
                i(t.last_seen_ms),
                ttl,
            ),
            t.device_id.len() + 32,
        );
        w.push(
            &self.st.user_token_put,
            (i(t.user_id), hash.to_vec(), ttl),
            32,
        );
    }

    fn remove_token_into<'a>(&'a self, w: &mut Writes<'a>, hash: &TokenHash, user: UserId) {
        w.push(&self.st.token_del, (hash.to_vec(),), 32);
        w.push(&self.st.user_token_del, (i(user), hash.to_vec()), 32);
    }

    async fn token_async(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .first::<TokenRow>(&self.st.token_get, (hash.to_vec(),))
            .await?
            .and_then(token_of))
    }

    async fn token_hashes(&self, user: UserId, limit: i32) -> Result<Vec<TokenHash>, StoreError> {
        self.rows::<(Vec<u8>,)>(&self.st.user_tokens_list, (i(user), limit))
            .await?
            .into_iter()
            .map(|(h,)| {
                h.try_into()
                    .map_err(|_| StoreError::Corrupt("a token hash is not 32 bytes".into()))
            })
            .collect()
    }

    pub(super) async fn user_async(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .first::<UserRow>(&self.st.user_get, (i(user / IDS_PER_BUCKET), i(user)))
            .await?
            .map(user_of))
    }

    /// Up to `limit` rows of a table bucketed by id ([`IDS_PER_BUCKET`]) with an id above
    /// `after` and in `floor .. end` (the ids that can exist), ascending: one partition
    /// after another, never an empty one below the first id.
    pub(super) async fn walk_ids<T>(
        &self,
        page: &scylla::statement::prepared::PreparedStatement,
        (floor, end): (u64, u64),
        after: u64,
        limit: usize,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let after = after.max(floor.saturating_sub(1));
        let mut out = Vec::new();
        let Some(first) = after.checked_add(1) else {
            return Ok(out);
        };
        if end <= first {
            return Ok(out);
        }
        let mut from = after;
        for b in first / IDS_PER_BUCKET..=(end - 1) / IDS_PER_BUCKET {
            if out.len() >= limit {
                break;
            }
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let rows = self.rows::<T>(page, (i(b), i(from), want)).await?;
            out.extend(rows);
            from = (b + 1) * IDS_PER_BUCKET - 1;
        }
        Ok(out)
    }

    pub(super) async fn next_user_id(&self) -> Result<u64, StoreError> {
        Ok(self.meta(META_NEXT_USER_ID).await?.unwrap_or(USER_ID_FIRST))
    }

    async fn create_user_async(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        let name_key = username_key(username);
        let mail_key = email_key(email);
        // Cheap refusals first: the id counter moves only for a name that looks free.
        if self
            .first::<(i64,)>(&self.st.name_get, (&name_key,))
            .await?
            .is_some()
        {
            return Err(StoreError::UsernameTaken);
        }
        if !mail_key.is_empty()
            && self
                .first::<(i64,)>(&self.st.email_get, (&mail_key,))
                .await?
                .is_some()
        {
            return Err(StoreError::EmailTaken);
        }
        let user_id = self.take_next(META_NEXT_USER_ID, USER_ID_FIRST).await?;
        if user_id > USER_ID_LAST {
            return Err(StoreError::UserIdsExhausted);
        }
        // The name is the user's once this LWT applies; an id taken by a lost race is skipped.
        if !self
            .lwt(&self.st.name_claim, (&name_key, i(user_id)))
            .await?
            .applied
        {
            return Err(StoreError::UsernameTaken);
        }
        if !mail_key.is_empty()
            && !self
                .lwt(&self.st.email_claim, (&mail_key, i(user_id)))
                .await?
                .applied
        {
            self.lwt(&self.st.name_release, (&name_key, i(user_id)))
                .await?;
            return Err(StoreError::EmailTaken);
        }
        let user = UserRecord {
            user_id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            email: email.to_owned(),
            created_at_ms: now_ms,
        };
        let mut w = Writes::default();
        w.push(
            &self.st.user_put,
            (
                i(user_id / IDS_PER_BUCKET),
                i(user_id),
                user.username.clone(),
                user.password_hash.clone(),
                user.email.clone(),
                i(now_ms),
            ),
            username.len() + password_hash.len() + email.len(),
        );
        w.push(
            &self.st.prefix_put,
            (codec::initial(&name_key), name_key.clone(), i(user_id)),
            name_key.len() * 2,
        );
        self.send(BatchType::Logged, w).await?;
        Ok(user)
    }
}

impl AccountStore for ScyllaStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        self.writable()?;
        self.run(self.create_user_async(username, password_hash, email, now_ms))
    }

    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.run(self.user_async(user_id))
    }

    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        let key = username_key(username);
        Ok(self
            .run(self.first::<(i64,)>(&self.st.name_get, (key,)))?
            .map(|(id,)| u(id)))
    }

    fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, StoreError> {
        let key = email_key(email);
        if key.is_empty() {
            return Ok(None);
        }
        Ok(self
            .run(self.first::<(i64,)>(&self.st.email_get, (key,)))?
            .map(|(id,)| u(id)))
    }

    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        self.writable()?;
        let mut w = Writes::default();
        self.put_token_into(&mut w, hash, token);
        self.run(self.send(BatchType::Logged, w))
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.run(self.token_async(hash))
    }

    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.writable()?;
        self.run(async {
            let Some(token) = self.token_async(hash).await? else {
                return Ok(());
            };
            let mut w = Writes::default();
            self.remove_token_into(&mut w, hash, token.user_id);
            self.send(BatchType::Logged, w).await
        })
    }

    fn tokens_of_user(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.run(async {
            let hashes = self.token_hashes(user_id, limit).await?;
            let tokens = try_join_all(hashes.iter().map(|h| self.token_async(h))).await?;
            // An index entry whose token just expired (by TTL) is skipped.
            Ok(hashes
                .into_iter()
                .zip(tokens)
                .filter_map(|(h, t)| t.map(|t| (h, t)))
                .collect())
        })
    }

    /// One logged batch: applied whole or not at all (ScyllaDB's batchlog). `held` is read
    /// before the batch, not in it (README, ScyllaDB's known gaps).
    fn replace_tokens(
        &self,
        user_id: UserId,
        revoke: &[TokenHash],
        put: Option<(&TokenHash, &TokenRecord)>,
        held: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        self.writable()?;
        self.run(async {
            if let Some(held) = held
                && self
                    .token_async(held)
                    .await?
                    .is_none_or(|t| t.user_id != user_id)
            {
                return Ok(false);
            }
            let found = try_join_all(revoke.iter().map(|h| self.token_async(h))).await?;
            let mut w = Writes::default();
            for (hash, token) in revoke.iter().zip(found) {
                if token.is_some_and(|t| t.user_id == user_id) {
                    self.remove_token_into(&mut w, hash, user_id);
                }
            }
            if let Some((hash, token)) = put {
                self.put_token_into(&mut w, hash, token);
            }
            if !w.is_empty() {
                self.send(BatchType::Logged, w).await?;
            }
            Ok(true)
        })
    }

    /// One logged batch: the new hash, every token listed for the user removed, `put` added.
    fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        put: Option<(&TokenHash, &TokenRecord)>,
        current: Option<&str>,
    ) -> Result<Option<usize>, StoreError> {
        TokenRecord::assert_put_under(user_id, put);
        self.writable()?;
        self.run(async {
            let Some(user) = self.user_async(user_id).await? else {
                return Ok(None);
            };
            if current.is_some_and(|c| c != user.password_hash) {
                return Ok(None);
            }
            let hashes = self.token_hashes(user_id, TOKENS_PER_USER_MAX).await?;
            let mut w = Writes::default();
            w.push(
                &self.st.user_set_password,
                (
                    password_hash.to_owned(),
                    i(user_id / IDS_PER_BUCKET),
                    i(user_id),
                ),
                password_hash.len(),
            );
            for hash in &hashes {
                self.remove_token_into(&mut w, hash, user_id);
            }
            if let Some((hash, token)) = put {
                self.put_token_into(&mut w, hash, token);
            }
            self.send(BatchType::Logged, w).await?;
            Ok(Some(hashes.len()))
        })
    }

    /// Not a lightweight transaction: its timestamp would come from the coordinator's clock,
    /// a password change's (a plain logged batch) from this host's, and a change made after
    /// the rehash could lose to it. The new hash is written with the timestamp of the verified
    /// cell plus one: it lands over that cell only, and any change written since (stamped by
    /// this host's clock, later) wins over it, whichever lands first. Two rehashes of the same
    /// cell tie and store one of two hashes of the same password. `Ok(true)` may name a
    /// rehash a change written meanwhile overruled.
    fn rehash_password(
        &self,
        user_id: UserId,
        current: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        self.run(async {
            let key = (i(user_id / IDS_PER_BUCKET), i(user_id));
            let Some((Some(stored), Some(written))) = self
                .first::<(Option<String>, Option<i64>)>(&self.st.user_password_written, key)
                .await?
            else {
                return Ok(false);
            };
            if stored != current {
                return Ok(false);
            }
            self.exec(
                &self.st.user_rehash_password,
                (
                    written.saturating_add(1),
                    password_hash.to_owned(),
                    key.0,
                    key.1,
                ),
            )
            .await?;
            Ok(true)
        })
    }

    /// One plain write per token moved, stamped with the sighting's time ([`touch_ts`]):
    /// forward only by the timestamp. Not an LWT: a Paxos write's timestamp and a plain
    /// delete's (the revocations, in logged batches) come from different clocks, so a
    /// revocation just after a touch could leave the touch's cell alive. A token that is
    /// absent when read is not written; one revoked between the read and the write leaves at
    /// most that cell, which reads as no token ([`token_of`]) and expires with the token's TTL.
    fn touch_tokens(&self, seen: &[(TokenHash, u64)]) -> Result<(), StoreError> {
        self.writable()?;
        self.run(async {
            let found = try_join_all(seen.iter().map(|(h, _)| self.token_async(h))).await?;
            let touches = seen.iter().zip(found).filter_map(|((hash, at), token)| {
                let token = token.filter(|t| t.last_seen_ms < *at)?;
                Some(self.exec(
                    &self.st.token_touch,
                    (touch_ts(*at), token_ttl(&token), i(*at), hash.to_vec()),
                ))
            });
            try_join_all(touches).await.map(drop)
        })
    }

    fn user_ids_after(&self, after: UserId, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.run(async {
            let end = self.next_user_id().await?;
            let ids: Vec<(i64,)> = self
                .walk_ids(&self.st.user_ids_page, (USER_ID_FIRST, end), after, limit)
                .await?;
            Ok(ids.into_iter().map(|(id,)| u(id)).collect())
        })
    }

    /// Ids handed out: users are never removed (an id lost to a race for a name counts too).
    fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self.run(self.next_user_id())?.saturating_sub(USER_ID_FIRST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_row_with_only_some_cells_is_no_token() {
        let full: TokenRow = (
            Some(100_000_001),
            Some("phone".into()),
            Some(10),
            Some(20),
            Some(1),
            Some(15),
        );
        let token = token_of(full.clone()).expect("a whole row is a token");
        assert_eq!(
            (token.user_id, token.device_id.as_str(), token.last_seen_ms),
            (100_000_001, "phone", 15)
        );
        // What a revocation leaves when a touch's cell outlived it: only last_seen_ms.
        assert_eq!(token_of((None, None, None, None, None, Some(16))), None);
        let mut no_platform = full;
        no_platform.4 = None;
        assert_eq!(token_of(no_platform), None);
    }

    #[test]
    fn a_later_sighting_has_the_later_timestamp_and_a_revocation_after_it_wins() {
        assert!(touch_ts(2_000) > touch_ts(1_999));
        // A revocation written at 2_000.5 ms (the client clock, µs) after a sighting at 2_000.
        assert!(touch_ts(2_000) < 2_000_500);
        assert_eq!(touch_ts(u64::MAX), i64::MAX);
    }
}
