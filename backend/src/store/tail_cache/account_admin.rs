//! What operators keep about accounts goes straight to the store under the cache.

use super::TailCached;
use crate::store::{
    AccountAdminStore, AccountFlags, InviteRecord, InviteTake, StoreError, UserId, UserRecord,
};

impl<S: AccountAdminStore> AccountAdminStore for TailCached<S> {
    fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError> {
        self.inner.user_flags(user)
    }
    fn set_user_flags(
        &self,
        user: UserId,
        flags: Option<&AccountFlags>,
    ) -> Result<bool, StoreError> {
        self.inner.set_user_flags(user, flags)
    }
    fn users_after(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.inner.users_after(after, limit)
    }
    fn put_invite(
        &self,
        invite: &InviteRecord,
        invites_max: usize,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.put_invite(invite, invites_max, now_ms)
    }
    fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError> {
        self.inner.take_invite(code_hash, now_ms)
    }
    fn return_invite(&self, id: u64) -> Result<(), StoreError> {
        self.inner.return_invite(id)
    }
    fn invites_before(&self, before: u64, limit: usize) -> Result<Vec<InviteRecord>, StoreError> {
        self.inner.invites_before(before, limit)
    }
    fn invites_of_issuer_before(
        &self,
        issuer: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        self.inner.invites_of_issuer_before(issuer, before, limit)
    }
    fn remove_invite(&self, id: u64) -> Result<bool, StoreError> {
        self.inner.remove_invite(id)
    }
}
