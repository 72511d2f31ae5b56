//! Contacts in the fjall store: `relations` ((owner, kind, other) → [`RelationRecord`]) and
//! `contact_summaries` (user → [`ContactSummary`]) are written by `append` from a commit
//! group's contacts section; `profiles` (user → [`ProfileRecord`]) on its own. Search reads the
//! accounts' `usernames` index (case-folded name → user) by prefix.

use std::ops::Bound;

use fjall::{OwnedWriteBatch, Readable};

use super::{FjallStore, be_u64, decode, encode, key_u64};
use crate::store::{
    ContactStore, ContactSummary, ContactWrites, ProfileRecord, RelationKey, RelationKind,
    RelationRecord, StoreError, UserId, in_batches,
};

/// Key of a relation: owner, kind, other; big-endian, so one owner's relations of one kind are
/// contiguous and ordered by the other user's id.
pub(super) fn relation_key(owner: UserId, kind: RelationKind, other: UserId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..8].copy_from_slice(&owner.to_be_bytes());
    key[8] = kind as u8;
    key[9..].copy_from_slice(&other.to_be_bytes());
    key
}

impl FjallStore {
    /// Adds a commit group's contacts section to its batch.
    pub(super) fn write_contacts(
        &self,
        batch: &mut OwnedWriteBatch,
        writes: &ContactWrites,
    ) -> Result<(), StoreError> {
        for (key, record) in &writes.relations {
            let k = relation_key(key.owner, key.kind, key.other);
            match record {
                Some(record) => batch.insert(&self.relations, k, encode(record)),
                None => batch.remove(&self.relations, k),
            }
        }
        for w in &writes.summaries {
            // One writer (the commit thread): what is stored is what the group read, but the
            // rule is the port's, the same for every adapter.
            let stored = match w.base {
                Some(_) => self.contact_summary(w.user)?,
                None => None,
            };
            let summary = w.onto(stored);
            batch.insert(
                &self.contact_summaries,
                w.user.to_be_bytes(),
                encode(&summary),
            );
        }
        Ok(())
    }
}

impl ContactStore for FjallStore {
    fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError> {
        self.get(
            &self.relations,
            relation_key(key.owner, key.kind, key.other),
        )
    }

    fn relations_at(
        &self,
        keys: &[RelationKey],
    ) -> Result<Vec<Option<RelationRecord>>, StoreError> {
        in_batches(keys, |batch| {
            let view = self.view();
            batch
                .iter()
                .map(|k| {
                    view.get(&self.relations, relation_key(k.owner, k.kind, k.other))?
                        .map(|v| decode(&v))
                        .transpose()
                })
                .collect()
        })
    }

    fn relations(
        &self,
        owner: UserId,
        kind: RelationKind,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, RelationRecord)>, StoreError> {
        if limit == 0 || after == UserId::MAX {
            return Ok(Vec::new());
        }
        let start = relation_key(owner, kind, after + 1);
        let end = relation_key(owner, kind, UserId::MAX);
        self.view()
            .range(&self.relations, start..=end)
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                Ok((key_u64(&key, 9)?, decode(&value)?))
            })
            .collect()
    }

    fn contact_summary(&self, user: UserId) -> Result<Option<ContactSummary>, StoreError> {
        self.get(&self.contact_summaries, user.to_be_bytes())
    }

    fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.get(&self.profiles, user.to_be_bytes())
    }

    fn put_profile(&self, user: UserId, profile: &ProfileRecord) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        batch.insert(&self.profiles, user.to_be_bytes(), encode(profile));
        self.commit(batch)
    }

    /// Compared and written under the write lock, which every write of the store holds.
    fn put_profile_if(
        &self,
        user: UserId,
        expected: Option<&ProfileRecord>,
        profile: &ProfileRecord,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let stored: Option<ProfileRecord> = self.get(&self.profiles, user.to_be_bytes())?;
        if stored.as_ref() != expected {
            return Ok(false);
        }
        let mut batch = self.batch();
        batch.insert(&self.profiles, user.to_be_bytes(), encode(profile));
        self.commit(batch)?;
        Ok(true)
    }

    fn usernames_with_prefix(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = if after.as_bytes() >= prefix.as_bytes() {
            Bound::Excluded(after.as_bytes())
        } else {
            Bound::Included(prefix.as_bytes())
        };
        self.view()
            .range::<&[u8], _>(&self.usernames, (start, Bound::Unbounded))
            .map(|guard| guard.into_inner())
            .take_while(|kv| {
                kv.as_ref()
                    .map_or(true, |(k, _)| k.starts_with(prefix.as_bytes()))
            })
            .take(limit)
            .map(|kv| {
                let (key, value) = kv?;
                let name =
                    String::from_utf8(key.to_vec()).map_err(|e| StoreError::Corrupt(e.into()))?;
                Ok((name, be_u64(&value)?))
            })
            .collect()
    }
}
