//! Groups in the fjall store, written by `append` from a commit group's groups section (new
//! keyspaces, added without a layout change: an older store opens with them empty):
//!
//! - `groups`: group → [`GroupRecord`];
//! - `group_members`: (group, user) → [`MemberRecord`], paged by user id;
//! - `user_groups`: (user, group) → [`UserGroupRecord`], a user's groups by prefix;
//! - `user_group_counts`: user → rows in `user_groups` (what `groups.per_user_max` bounds);
//! - `group_applications`: (group, user) → [`ApplicationRecord`];
//! - `mentions`: (group, user or 0 for everyone, seq) → nothing, counted by range;
//! - `group_reads`: group → [`ReadHistogram`] (members by read cursor), written whole;
//! - `meta` `next_group_id`.

use fjall::{OwnedWriteBatch, Readable};

use super::{FjallStore, be_u64, decode, encode, key_u64, pair_key};
use crate::store::{
    ApplicationRecord, ConvId, GroupRecord, GroupStore, GroupWrites, MENTION_ALL_USER,
    MemberRecord, ReadHistogram, StoreError, UserGroupRecord, UserId,
};

pub(super) const META_NEXT_GROUP_ID: &[u8] = b"next_group_id";

pub(super) fn mention_key(group: ConvId, user: UserId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&pair_key(group.to_wire(), user));
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// A user's group count as stored: a big-endian `i32` (the sum of every change; a `u32` as
/// written before is the same bytes).
pub(super) fn count_bytes(count: i64) -> [u8; 4] {
    let clamped = count.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
    i32::try_from(clamped).unwrap_or_default().to_be_bytes()
}

impl FjallStore {
    /// A user's group count as stored, below 0 too (0: none stored). Eight bytes: a `u64`,
    /// which `finish_import` wrote before it wrote [`count_bytes`].
    pub(super) fn stored_group_count(&self, user: UserId) -> Result<i64, StoreError> {
        let Some(v) = self
            .view()
            .get(&self.user_group_counts, user.to_be_bytes())?
        else {
            return Ok(0);
        };
        let corrupt = || StoreError::Corrupt(postcard::Error::DeserializeUnexpectedEnd.into());
        match v.len() {
            4 => Ok(i64::from(i32::from_be_bytes(
                v.as_ref().try_into().map_err(|_| corrupt())?,
            ))),
            8 => be_u64(&v).map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            _ => Err(corrupt()),
        }
    }

    /// Up to `limit` entries `(second half of the key, value)` of a keyspace keyed by
    /// `(prefix, u64)` pairs, with a second half above `after`, ascending: one page of
    /// members, applications or a user's groups.
    fn pairs_after<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: &fjall::Keyspace,
        prefix: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        self.view()
            .range(
                keyspace,
                pair_key(prefix, after + 1)..=pair_key(prefix, u64::MAX),
            )
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                Ok((key_u64(&key, 8)?, decode(&value)?))
            })
            .collect()
    }
    /// Adds a commit group's groups section to its batch.
    pub(super) fn write_groups(
        &self,
        batch: &mut OwnedWriteBatch,
        writes: &GroupWrites,
    ) -> Result<(), StoreError> {
        self.write_names(batch, &writes.groups)?;
        for (group, record) in &writes.groups {
            batch.insert(&self.groups, group.to_wire().to_be_bytes(), encode(record));
        }
        for (group, user, record) in &writes.members {
            let key = pair_key(group.to_wire(), *user);
            match record {
                Some(r) => batch.insert(&self.group_members, key, encode(r)),
                None => batch.remove(&self.group_members, key),
            }
        }
        for (user, group, record) in &writes.user_groups {
            let key = pair_key(*user, group.to_wire());
            match record {
                Some(r) => batch.insert(&self.user_groups, key, encode(r)),
                None => batch.remove(&self.user_groups, key),
            }
        }
        // Added to what is stored: the caller holds the write lock, so the published view
        // has every earlier write, and no other write comes between.
        let mut changes: Vec<(UserId, i64)> = Vec::new();
        for (user, change) in &writes.user_group_count_changes {
            match changes.iter_mut().find(|(u, _)| u == user) {
                Some((_, sum)) => *sum += i64::from(*change),
                None => changes.push((*user, i64::from(*change))),
            }
        }
        for (user, change) in changes {
            let count = self.stored_group_count(user)? + change;
            batch.insert(
                &self.user_group_counts,
                user.to_be_bytes(),
                count_bytes(count),
            );
        }
        for (group, user, record) in &writes.applications {
            let key = pair_key(group.to_wire(), *user);
            match record {
                Some(r) => batch.insert(&self.group_applications, key, encode(r)),
                None => batch.remove(&self.group_applications, key),
            }
        }
        for (group, user, seq) in &writes.mentions {
            batch.insert(&self.mentions, mention_key(*group, *user, *seq), []);
        }
        for (group, user, seq) in &writes.mentions_removed {
            batch.remove(&self.mentions, mention_key(*group, *user, *seq));
        }
        for (group, histogram) in &writes.read_histograms {
            let key = group.to_wire().to_be_bytes();
            batch.insert(&self.group_reads, key, encode(histogram));
        }
        if let Some(next) = writes.next_group_id {
            batch.insert(&self.meta, META_NEXT_GROUP_ID, next.to_be_bytes());
        }
        Ok(())
    }

    /// Seqs in `after_seq + 1 ..= last_seq` mentioning `user`, ascending, at most `cap`.
    fn mention_seqs(
        &self,
        view: &fjall::Snapshot,
        group: ConvId,
        user: UserId,
        (after_seq, last_seq): (u64, u64),
        cap: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let Some(first) = after_seq.checked_add(1).filter(|f| *f <= last_seq) else {
            return Ok(Vec::new());
        };
        view.range(
            &self.mentions,
            mention_key(group, user, first)..=mention_key(group, user, last_seq),
        )
        .take(cap)
        .map(|guard| key_u64(&guard.key()?, 16))
        .collect()
    }
}

impl GroupStore for FjallStore {
    fn group(&self, group: ConvId) -> Result<Option<GroupRecord>, StoreError> {
        self.get(&self.groups, group.to_wire().to_be_bytes())
    }

    fn group_member(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.get(&self.group_members, pair_key(group.to_wire(), user))
    }

    fn group_members(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        self.pairs_after(&self.group_members, group.to_wire(), after, limit)
    }

    fn user_group(
        &self,
        user: UserId,
        group: ConvId,
    ) -> Result<Option<UserGroupRecord>, StoreError> {
        self.get(&self.user_groups, pair_key(user, group.to_wire()))
    }

    fn groups_of_user(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, UserGroupRecord)>, StoreError> {
        Ok(self
            .pairs_after(&self.user_groups, user, after, limit)?
            .into_iter()
            .map(|(g, row)| (ConvId::from_stored(g), row))
            .collect())
    }

    fn user_group_count(&self, user: UserId) -> Result<u32, StoreError> {
        let count = self.stored_group_count(user)?.max(0);
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn application(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.get(&self.group_applications, pair_key(group.to_wire(), user))
    }

    fn applications(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, ApplicationRecord)>, StoreError> {
        self.pairs_after(&self.group_applications, group.to_wire(), after, limit)
    }

    fn unread_mentions(
        &self,
        group: ConvId,
        user: UserId,
        after_seq: u64,
        last_seq: u64,
        cap: u32,
    ) -> Result<u32, StoreError> {
        let view = self.view();
        let cap = cap as usize;
        let seqs_in = (after_seq, last_seq);
        let mut seqs = self.mention_seqs(&view, group, user, seqs_in, cap)?;
        if user != MENTION_ALL_USER {
            seqs.extend(self.mention_seqs(&view, group, MENTION_ALL_USER, seqs_in, cap)?);
            // A message that names the user and everyone counts once.
            seqs.sort_unstable();
            seqs.dedup();
        }
        Ok(seqs.len().min(cap) as u32)
    }

    fn read_histogram(&self, group: ConvId) -> Result<Option<ReadHistogram>, StoreError> {
        self.get(&self.group_reads, group.to_wire().to_be_bytes())
    }

    fn next_group_id(&self) -> Result<u64, StoreError> {
        match self.view().get(&self.meta, META_NEXT_GROUP_ID)? {
            Some(v) => be_u64(&v),
            None => Ok(1),
        }
    }

    fn groups_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, GroupRecord)>, StoreError> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        self.view()
            .range(&self.groups, (after + 1).to_be_bytes()..)
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                let group = ConvId::from_wire(be_u64(&key)?)
                    .ok_or_else(|| StoreError::Corrupt("group key".into()))?;
                Ok((group, decode(&value)?))
            })
            .collect()
    }

    fn groups_by_name(
        &self,
        prefix: &str,
        after: Option<(&str, ConvId)>,
        limit: usize,
    ) -> Result<Vec<(String, ConvId)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let view = self.view();
        let from = match after {
            None => prefix.as_bytes().to_vec(),
            Some((name, group)) => {
                // Just after that key: the same key with one more byte sorts right after it.
                let mut from = super::group_names::name_key(name, group);
                from.push(0);
                from
            }
        };
        for guard in view.range(&self.group_names, from..) {
            let key = guard.key()?;
            if !key.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push(super::group_names::parse_name_key(&key)?);
        }
        Ok(out)
    }
}
