//! What operators keep about accounts, on PostgreSQL: `user_flags` (absent: enabled) and
//! `invites` (only the code's hash, unique), ids from the `next_invite_id` counter.

use tokio_postgres::Row;

use super::accounts::user_of;
use super::{PgStore, col, i, i32_of, limit, u, u32_col};
use crate::store::{
    AccountAdminStore, AccountFlags, InviteRecord, InviteTake, StoreError, UserId, UserRecord,
};

pub(super) const INVITE_COLUMNS: &str =
    "id, code_hash, issuer, created_ms, expires_ms, uses_max, uses, note";

pub(super) fn invite_of(row: &Row) -> Result<InviteRecord, StoreError> {
    Ok(InviteRecord {
        id: u(row, 0)?,
        code_hash: col::<&[u8]>(row, 1)?
            .try_into()
            .map_err(|_| StoreError::Corrupt("invite code hash is not 32 bytes".into()))?,
        issuer: col(row, 2)?,
        created_ms: u(row, 3)?,
        expires_ms: u(row, 4)?,
        uses_max: u32_col(row, 5)?,
        uses: u32_col(row, 6)?,
        note: col(row, 7)?,
    })
}

pub(super) fn flags_of(row: &Row, at: usize) -> Result<AccountFlags, StoreError> {
    Ok(AccountFlags {
        disabled_at_ms: u(row, at)?,
        disabled_by: col(row, at + 1)?,
        reason: col(row, at + 2)?,
    })
}

impl AccountAdminStore for PgStore {
    fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError> {
        self.row(
            "SELECT disabled_at_ms, disabled_by, reason FROM user_flags WHERE user_id = $1",
            &[&i(user)],
        )?
        .map(|row| flags_of(&row, 0))
        .transpose()
    }

    fn set_user_flags(
        &self,
        user: UserId,
        flags: Option<&AccountFlags>,
    ) -> Result<bool, StoreError> {
        let row = match flags {
            Some(f) => self.row(
                "WITH put AS (INSERT INTO user_flags (user_id, disabled_at_ms, disabled_by, \
                 reason) SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users \
                 WHERE user_id = $1) ON CONFLICT (user_id) DO UPDATE SET \
                 disabled_at_ms = excluded.disabled_at_ms, disabled_by = excluded.disabled_by, \
                 reason = excluded.reason RETURNING 1) SELECT EXISTS (SELECT 1 FROM put)",
                &[&i(user), &i(f.disabled_at_ms), &f.disabled_by, &f.reason],
            )?,
            None => self.row(
                "WITH gone AS (DELETE FROM user_flags WHERE user_id = $1) \
                 SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)",
                &[&i(user)],
            )?,
        };
        match row {
            Some(row) => col(&row, 0),
            None => Ok(false),
        }
    }

    fn users_after(&self, after: UserId, n: usize) -> Result<Vec<UserRecord>, StoreError> {
        if n == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT user_id, username, password_hash, email, created_at_ms FROM users \
             WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            &[&i(after), &limit(n)],
        )?
        .iter()
        .map(user_of)
        .collect()
    }

    fn put_invite(
        &self,
        invite: &InviteRecord,
        invites_max: usize,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Taking the id first locks the counter: puts are one at a time, so the bound
            // holds.
            let st = tx
                .prepare_cached(
                    "INSERT INTO counters (name, value) VALUES ('next_invite_id', 2) \
                     ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 \
                     RETURNING value - 1",
                )
                .await?;
            let id = u(&tx.query_one(&st, &[]).await?, 0)?;
            let st = tx
                .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM invites LIMIT $1) x")
                .await?;
            let stored = u(&tx.query_one(&st, &[&limit(invites_max)]).await?, 0)?;
            if stored >= invites_max as u64 {
                // Full: drop what no registration can use any more, in the same transaction.
                let st = tx
                    .prepare_cached(
                        "DELETE FROM invites WHERE uses >= uses_max OR expires_ms <= $1",
                    )
                    .await?;
                if tx.execute(&st, &[&i(now_ms)]).await? == 0 {
                    return Ok(None);
                }
            }
            let st = tx
                .prepare_cached(
                    "INSERT INTO invites (id, code_hash, issuer, created_ms, expires_ms, \
                     uses_max, uses, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &st,
                &[
                    &i(id),
                    &&invite.code_hash[..],
                    &invite.issuer,
                    &i(invite.created_ms),
                    &i(invite.expires_ms),
                    &i32_of(invite.uses_max),
                    &i32_of(invite.uses),
                    &invite.note,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError> {
        // One conditional update: two registrations never share the last use.
        let sql = format!(
            "UPDATE invites SET uses = uses + 1 WHERE code_hash = $1 AND uses < uses_max \
             AND expires_ms > $2 RETURNING {INVITE_COLUMNS}"
        );
        match self.row(&sql, &[&&code_hash[..], &i(now_ms)])? {
            Some(row) => Ok(InviteTake::Taken(invite_of(&row)?)),
            None => Ok(InviteTake::Refused),
        }
    }

    fn return_invite(&self, id: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE invites SET uses = uses - 1 WHERE id = $1 AND uses > 0",
            &[&i(id)],
        )?;
        Ok(())
    }

    fn invites_before(&self, before: u64, n: usize) -> Result<Vec<InviteRecord>, StoreError> {
        if n == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let sql =
            format!("SELECT {INVITE_COLUMNS} FROM invites WHERE id < $1 ORDER BY id DESC LIMIT $2");
        self.rows(&sql, &[&before, &limit(n)])?
            .iter()
            .map(invite_of)
            .collect()
    }

    fn invites_of_issuer_before(
        &self,
        issuer: &str,
        before: u64,
        n: usize,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        if n == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        // Served by `invites_issuer_id` (migration 5).
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE issuer = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        );
        self.rows(&sql, &[&issuer, &before, &limit(n)])?
            .iter()
            .map(invite_of)
            .collect()
    }

    fn remove_invite(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM invites WHERE id = $1", &[&i(id)])? > 0)
    }
}
