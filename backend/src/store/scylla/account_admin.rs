//! Operators' account state: flags per user, the users listed by id, and invites (one
//! partition, at most `accounts.invites_max` rows; a use is taken by an LWT on the record,
//! so two registrations never share the last one).
//!
//! `invites_by_issuer` lists one issuer's invite ids: written in the logged batch that puts
//! the invite, deleted after the invite's own (LWT) delete, which no batch with other tables
//! can hold. An entry whose invite is gone (a delete cut short) is skipped by readers.

use futures_util::{StreamExt, TryStreamExt, stream};
use scylla::statement::batch::BatchType;

use super::ScyllaStore;
use super::accounts::{UserRow, user_of};
use super::codec::{self, i, u};
use super::writes::Writes;
use crate::store::{
    AccountAdminStore, AccountFlags, InviteRecord, InviteTake, StoreError, USER_ID_FIRST, UserId,
    UserRecord,
};

pub(super) const META_NEXT_INVITE_ID: &str = "next_invite_id";
/// Invite records read at once while listing one issuer's, at most.
const INVITE_READS_IN_FLIGHT_MAX: usize = 16;
/// Compare-and-set attempts on one invite before giving up (contention this high is a bug).
const INVITE_CAS_ATTEMPTS_MAX: usize = 32;
/// Deletes of unusable invites (LWTs on the one invites partition) in flight at once, at most.
const INVITE_LWTS_IN_FLIGHT_MAX: usize = 16;

impl ScyllaStore {
    async fn invite(&self, id: u64) -> Result<Option<(Vec<u8>, InviteRecord)>, StoreError> {
        match self
            .first::<(Vec<u8>,)>(&self.st.invite_get, (i(id),))
            .await?
        {
            Some((bytes,)) => {
                let record = codec::unblob(&bytes)?;
                Ok(Some((bytes, record)))
            }
            None => Ok(None),
        }
    }

    /// Changes an invite's uses by compare-and-set on its stored bytes; `change` returns
    /// `None` to leave it. Returns the record written.
    async fn change_invite(
        &self,
        id: u64,
        change: impl Fn(&InviteRecord) -> Option<InviteRecord>,
    ) -> Result<Option<InviteRecord>, StoreError> {
        for _ in 0..INVITE_CAS_ATTEMPTS_MAX {
            let Some((bytes, current)) = self.invite(id).await? else {
                return Ok(None);
            };
            let Some(next) = change(&current) else {
                return Ok(None);
            };
            let cas = self
                .lwt(&self.st.invite_cas, (codec::blob(&next), i(id), bytes))
                .await?;
            if cas.applied {
                return Ok(Some(next));
            }
        }
        Err(StoreError::Engine(
            format!("invite {id}: {INVITE_CAS_ATTEMPTS_MAX} compare-and-set attempts lost").into(),
        ))
    }
}

impl ScyllaStore {
    /// Fills `invites_by_issuer` from `invites` at every open (idempotent upserts of one
    /// partition's rows). Not once behind a mark: during a rolling upgrade, nodes of the older
    /// version keep putting invites without an index entry after the first new node opened;
    /// the next open of any node indexes them. Nothing is written when no invite is stored.
    pub(super) async fn index_invites_by_issuer(&self) -> Result<(), StoreError> {
        // One partition of at most `accounts.invites_max` rows.
        let stored = self
            .rows::<(i64, Vec<u8>)>(&self.st.invites_all, (i32::MAX,))
            .await?;
        let mut w = Writes::default();
        for (id, bytes) in &stored {
            let invite: InviteRecord = codec::unblob(bytes)?;
            let bytes = invite.issuer.len();
            w.push(&self.st.invite_issuer_put, (invite.issuer, *id), bytes);
        }
        if w.is_empty() {
            return Ok(());
        }
        self.send(BatchType::Logged, w).await
    }

    /// Up to `limit` of `issuer`'s invites below `before`, newest first, skipping entries whose
    /// invite is gone.
    async fn invites_of_issuer(
        &self,
        issuer: &str,
        mut before: i64,
        limit: usize,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let ids = self
                .rows::<(i64,)>(
                    &self.st.invites_of_issuer_before,
                    (issuer.to_owned(), before, want),
                )
                .await?;
            let Some(&(last,)) = ids.last() else {
                break;
            };
            let short = ids.len() < want as usize;
            let records: Vec<_> = stream::iter(ids.iter().map(|&(id,)| self.invite(u(id))))
                .buffered(INVITE_READS_IN_FLIGHT_MAX)
                .try_collect()
                .await?;
            out.extend(records.into_iter().flatten().map(|(_, r)| r));
            if short {
                break;
            }
            before = last;
        }
        Ok(out)
    }
}

impl AccountAdminStore for ScyllaStore {
    fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError> {
        self.run(self.record(&self.st.flags_get, (i(user),)))
    }

    fn set_user_flags(
        &self,
        user: UserId,
        flags: Option<&AccountFlags>,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        self.run(async {
            if self.user_async(user).await?.is_none() {
                return Ok(false);
            }
            match flags {
                Some(f) => {
                    self.exec(&self.st.flags_put, (i(user), codec::blob(f)))
                        .await?
                }
                None => self.exec(&self.st.flags_del, (i(user),)).await?,
            };
            Ok(true)
        })
    }

    fn users_after(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.run(async {
            let end = self.next_user_id().await?;
            let rows: Vec<UserRow> = self
                .walk_ids(&self.st.users_page, (USER_ID_FIRST, end), after, limit)
                .await?;
            Ok(rows.into_iter().map(user_of).collect())
        })
    }

    /// The count and the insert are two steps: nodes putting invites at the same moment may
    /// pass `invites_max` by as many as they are (operators put invites one at a time).
    fn put_invite(
        &self,
        invite: &InviteRecord,
        invites_max: usize,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.writable()?;
        let read_max = i32::try_from(invites_max).unwrap_or(i32::MAX);
        self.run(async {
            let stored = self
                .rows::<(i64, Vec<u8>)>(&self.st.invites_all, (read_max,))
                .await?;
            if stored.len() >= invites_max {
                // Full: drop what no registration can use any more, each only if unchanged
                // since read (a returned use can make one usable again), then their codes.
                let mut unusable = Vec::new();
                for (id, bytes) in stored {
                    let old: InviteRecord = codec::unblob(&bytes)?;
                    if !old.usable(now_ms) {
                        unusable.push((id, bytes, old.code_hash, old.issuer));
                    }
                }
                let dropped: Vec<bool> = stream::iter(unusable.iter().map(|(id, bytes, _, _)| {
                    self.lwt(&self.st.invite_del_if, (*id, bytes.clone()))
                }))
                .buffered(INVITE_LWTS_IN_FLIGHT_MAX)
                .map_ok(|done| done.applied)
                .try_collect()
                .await?;
                let mut codes = Writes::default();
                for ((id, _, code, issuer), dropped) in unusable.iter().zip(dropped) {
                    if dropped {
                        codes.push(&self.st.invite_code_del, (code.to_vec(),), 32);
                        codes.push(
                            &self.st.invite_issuer_del,
                            (issuer.clone(), *id),
                            issuer.len(),
                        );
                    }
                }
                if codes.is_empty() {
                    return Ok(None);
                }
                self.send(BatchType::Logged, codes).await?;
            }
            let id = self.take_next(META_NEXT_INVITE_ID, 1).await?;
            let record = InviteRecord {
                id,
                ..invite.clone()
            };
            let mut w = Writes::default();
            let data = codec::blob(&record);
            let bytes = data.len();
            w.push(&self.st.invite_put, (i(id), data), bytes);
            w.push(
                &self.st.invite_code_put,
                (record.code_hash.to_vec(), i(id)),
                32,
            );
            w.push(
                &self.st.invite_issuer_put,
                (record.issuer.clone(), i(id)),
                record.issuer.len(),
            );
            self.send(BatchType::Logged, w).await?;
            Ok(Some(id))
        })
    }

    fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError> {
        self.writable()?;
        self.run(async {
            let Some((id,)) = self
                .first::<(i64,)>(&self.st.invite_code_get, (code_hash.to_vec(),))
                .await?
            else {
                return Ok(InviteTake::Refused);
            };
            let taken = self
                .change_invite(u(id), |current| {
                    current.usable(now_ms).then(|| InviteRecord {
                        uses: current.uses + 1,
                        ..current.clone()
                    })
                })
                .await?;
            Ok(taken.map_or(InviteTake::Refused, InviteTake::Taken))
        })
    }

    fn return_invite(&self, id: u64) -> Result<(), StoreError> {
        self.writable()?;
        self.run(self.change_invite(id, |current| {
            (current.uses > 0).then(|| InviteRecord {
                uses: current.uses - 1,
                ..current.clone()
            })
        }))
        .map(drop)
    }

    fn invites_before(&self, before: u64, limit: usize) -> Result<Vec<InviteRecord>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let before = i(before.min(i64::MAX as u64));
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows =
            self.run(self.rows::<(i64, Vec<u8>)>(&self.st.invites_before, (before, limit)))?;
        rows.iter().map(|(_, bytes)| codec::unblob(bytes)).collect()
    }

    fn invites_of_issuer_before(
        &self,
        issuer: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let before = i(before.min(i64::MAX as u64));
        self.run(self.invites_of_issuer(issuer, before, limit))
    }

    fn remove_invite(&self, id: u64) -> Result<bool, StoreError> {
        self.writable()?;
        self.run(async {
            let Some((_, invite)) = self.invite(id).await? else {
                return Ok(false);
            };
            // The code first: no registration finds the invite from here on. Should the
            // delete below not happen, the invite is still listed and can be removed again.
            self.exec(&self.st.invite_code_del, (invite.code_hash.to_vec(),))
                .await?;
            let removed = self.lwt(&self.st.invite_del, (i(id),)).await?.applied;
            // After the invite: an entry left by a failure here is skipped by readers.
            self.exec(&self.st.invite_issuer_del, (invite.issuer, i(id)))
                .await?;
            Ok(removed)
        })
    }
}
