//! Groups go straight to the store under the cache (their writes arrive in commit groups,
//! which `append` passes on whole).

use super::TailCached;
use crate::store::{
    ApplicationRecord, ConvId, GroupRecord, GroupStore, MemberRecord, ReadHistogram, StoreError,
    UserGroupRecord, UserId,
};

impl<S: GroupStore> GroupStore for TailCached<S> {
    fn group(&self, g: ConvId) -> Result<Option<GroupRecord>, StoreError> {
        self.inner.group(g)
    }
    fn group_member(&self, g: ConvId, user: UserId) -> Result<Option<MemberRecord>, StoreError> {
        self.inner.group_member(g, user)
    }
    fn group_members(
        &self,
        g: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        self.inner.group_members(g, after, limit)
    }
    fn user_group(&self, user: UserId, g: ConvId) -> Result<Option<UserGroupRecord>, StoreError> {
        self.inner.user_group(user, g)
    }
    fn groups_of_user(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, UserGroupRecord)>, StoreError> {
        self.inner.groups_of_user(user, after, limit)
    }
    fn user_group_count(&self, user: UserId) -> Result<u32, StoreError> {
        self.inner.user_group_count(user)
    }
    fn application(
        &self,
        g: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.inner.application(g, user)
    }
    fn applications(
        &self,
        g: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, ApplicationRecord)>, StoreError> {
        self.inner.applications(g, after, limit)
    }
    fn unread_mentions(
        &self,
        g: ConvId,
        user: UserId,
        after_seq: u64,
        last_seq: u64,
        cap: u32,
    ) -> Result<u32, StoreError> {
        self.inner
            .unread_mentions(g, user, after_seq, last_seq, cap)
    }
    fn read_histogram(&self, g: ConvId) -> Result<Option<ReadHistogram>, StoreError> {
        self.inner.read_histogram(g)
    }
    fn next_group_id(&self) -> Result<u64, StoreError> {
        self.inner.next_group_id()
    }
    fn groups_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, GroupRecord)>, StoreError> {
        self.inner.groups_after(after, limit)
    }
    fn groups_by_name(
        &self,
        prefix: &str,
        after: Option<(&str, ConvId)>,
        limit: usize,
    ) -> Result<Vec<(String, ConvId)>, StoreError> {
        self.inner.groups_by_name(prefix, after, limit)
    }
}
