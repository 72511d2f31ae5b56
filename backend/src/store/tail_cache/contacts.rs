//! Contacts go straight to the store under the cache (relations and summaries arrive in
//! commit groups, which `append` passes on whole).

use super::TailCached;
use crate::store::{
    ContactStore, ContactSummary, ProfileRecord, RelationKey, RelationKind, RelationRecord,
    StoreError, UserId,
};

impl<S: ContactStore> ContactStore for TailCached<S> {
    fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError> {
        self.inner.relation(key)
    }
    fn relations_at(
        &self,
        keys: &[RelationKey],
    ) -> Result<Vec<Option<RelationRecord>>, StoreError> {
        self.inner.relations_at(keys)
    }
    fn relations(
        &self,
        owner: UserId,
        kind: RelationKind,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, RelationRecord)>, StoreError> {
        self.inner.relations(owner, kind, after, limit)
    }
    fn contact_summary(&self, user: UserId) -> Result<Option<ContactSummary>, StoreError> {
        self.inner.contact_summary(user)
    }
    fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.inner.profile(user)
    }
    fn put_profile(&self, user: UserId, profile: &ProfileRecord) -> Result<(), StoreError> {
        self.inner.put_profile(user, profile)
    }
    fn put_profile_if(
        &self,
        user: UserId,
        expected: Option<&ProfileRecord>,
        profile: &ProfileRecord,
    ) -> Result<bool, StoreError> {
        self.inner.put_profile_if(user, expected, profile)
    }
    fn usernames_with_prefix(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        self.inner.usernames_with_prefix(prefix, after, limit)
    }
}
