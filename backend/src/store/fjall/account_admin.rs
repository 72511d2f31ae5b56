//! What operators keep about accounts in the fjall store (new keyspaces, added without a
//! layout change: an older store opens with them empty):
//!
//! - `user_flags`: user id → [`AccountFlags`] (absent: enabled);
//! - `invites`: invite id, big-endian → [`InviteRecord`]; `invite_codes`: SHA-256 of the code
//!   → invite id; `invite_issuers`: (issuer, invite id) → nothing (`invite_issuers.rs`),
//!   written in the same batch as every put and removal of an invite; `meta` `next_invite_id`.

use fjall::Readable;

use super::invite_issuers::{id_of_key, issuer_key, issuer_prefix};
use super::{FjallStore, be_u64, decode, encode};
use crate::store::{
    AccountAdminStore, AccountFlags, InviteRecord, InviteTake, StoreError, UserId, UserRecord,
};

pub(super) const META_NEXT_INVITE_ID: &[u8] = b"next_invite_id";

impl FjallStore {
    fn invite_by_id(&self, id: u64) -> Result<Option<InviteRecord>, StoreError> {
        self.get(&self.invites, id.to_be_bytes())
    }

    fn commit_admin_batch(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        self.commit(batch)
    }
}

impl AccountAdminStore for FjallStore {
    fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError> {
        self.get(&self.user_flags, user.to_be_bytes())
    }

    fn set_user_flags(
        &self,
        user: UserId,
        flags: Option<&AccountFlags>,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        if self.view().get(&self.users, user.to_be_bytes())?.is_none() {
            return Ok(false);
        }
        let mut batch = self.batch();
        match flags {
            Some(f) => batch.insert(&self.user_flags, user.to_be_bytes(), encode(f)),
            None => batch.remove(&self.user_flags, user.to_be_bytes()),
        }
        self.commit_admin_batch(batch)?;
        Ok(true)
    }

    fn users_after(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        self.view()
            .range(&self.users, (after + 1).to_be_bytes()..)
            .take(limit)
            .map(|guard| decode(&guard.value()?))
            .collect()
    }

    fn put_invite(
        &self,
        invite: &InviteRecord,
        invites_max: usize,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let view = self.view();
        let mut batch = self.batch();
        let stored = view.iter(&self.invites).take(invites_max).count();
        if stored >= invites_max {
            // Full: drop what no registration can use any more, in the same write.
            let mut dropped = 0usize;
            for guard in view.iter(&self.invites) {
                let (key, value) = guard.into_inner()?;
                let old: InviteRecord = decode(&value)?;
                if !old.usable(now_ms) {
                    batch.remove(&self.invites, key);
                    batch.remove(&self.invite_codes, old.code_hash);
                    batch.remove(&self.invite_issuers, issuer_key(&old.issuer, old.id));
                    dropped += 1;
                }
            }
            if dropped == 0 {
                return Ok(None);
            }
        }
        let id = match view.get(&self.meta, META_NEXT_INVITE_ID)? {
            Some(v) => be_u64(&v)?,
            None => 1,
        };
        let record = InviteRecord {
            id,
            ..invite.clone()
        };
        batch.insert(&self.invites, id.to_be_bytes(), encode(&record));
        batch.insert(&self.invite_codes, record.code_hash, id.to_be_bytes());
        batch.insert(&self.invite_issuers, issuer_key(&record.issuer, id), []);
        batch.insert(&self.meta, META_NEXT_INVITE_ID, (id + 1).to_be_bytes());
        self.commit_admin_batch(batch)?;
        Ok(Some(id))
    }

    fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let Some(id) = self.view().get(&self.invite_codes, code_hash)? else {
            return Ok(InviteTake::Refused);
        };
        let Some(mut invite) = self.invite_by_id(be_u64(&id)?)? else {
            return Ok(InviteTake::Refused);
        };
        if !invite.usable(now_ms) {
            return Ok(InviteTake::Refused);
        }
        invite.uses += 1;
        let mut batch = self.batch();
        batch.insert(&self.invites, invite.id.to_be_bytes(), encode(&invite));
        self.commit_admin_batch(batch)?;
        Ok(InviteTake::Taken(invite))
    }

    fn return_invite(&self, id: u64) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let Some(mut invite) = self.invite_by_id(id)? else {
            return Ok(());
        };
        if invite.uses == 0 {
            return Ok(());
        }
        invite.uses -= 1;
        let mut batch = self.batch();
        batch.insert(&self.invites, id.to_be_bytes(), encode(&invite));
        self.commit_admin_batch(batch)
    }

    fn invites_before(&self, before: u64, limit: usize) -> Result<Vec<InviteRecord>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        self.view()
            .range(&self.invites, ..before.to_be_bytes())
            .rev()
            .take(limit)
            .map(|guard| decode(&guard.value()?))
            .collect()
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
        // Entries and records from one snapshot: every write keeps them in one batch.
        let view = self.view();
        let ids = view
            .range(
                &self.invite_issuers,
                issuer_prefix(issuer)..issuer_key(issuer, before),
            )
            .rev()
            .take(limit)
            .map(|guard| id_of_key(&guard.key()?))
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| match view.get(&self.invites, id.to_be_bytes())? {
                Some(v) => decode(&v),
                None => Err(StoreError::Corrupt(
                    format!("invite_issuers names invite {id}, which is not stored").into(),
                )),
            })
            .collect()
    }

    fn remove_invite(&self, id: u64) -> Result<bool, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let Some(invite) = self.invite_by_id(id)? else {
            return Ok(false);
        };
        let mut batch = self.batch();
        batch.remove(&self.invites, id.to_be_bytes());
        batch.remove(&self.invite_codes, invite.code_hash);
        batch.remove(&self.invite_issuers, issuer_key(&invite.issuer, id));
        self.commit_admin_batch(batch)?;
        Ok(true)
    }
}
