//! Groups, written by a commit group's logged batches: records (bucketed by wire id so that
//! the list by id walks a few partitions), members, each user's groups and their count,
//! applications, mentions (counted by seq range), read histograms, and the name index
//! (partitioned by the folded name's first character, like the username index).

use futures_util::future::try_join_all;
use scylla::value::Counter;

use super::ScyllaStore;
use super::codec::{self, IDS_PER_BUCKET, i, u};
use super::contacts::within_prefix;
use super::writes::{Writes, last_per_key};
use crate::store::{
    ApplicationRecord, ConvId, GroupRecord, GroupStore, GroupWrites, MENTION_ALL_USER,
    MemberRecord, ReadHistogram, StoreError, UserGroupRecord, UserId, group_name_key,
};

pub(super) const META_NEXT_GROUP_ID: &str = "next_group_id";

pub(super) fn group_key(group: ConvId) -> (i64, i64) {
    let wire = group.to_wire();
    (i(wire / IDS_PER_BUCKET), i(wire))
}

fn corrupt_group(id: i64) -> StoreError {
    StoreError::Corrupt(format!("stored group id {id} is not a group's").into())
}

impl ScyllaStore {
    /// Adds a commit group's groups section to its logged batches; reads the name of each
    /// group record written (one point read per group write, never per message) to move its
    /// name index entry.
    pub(super) async fn write_groups<'a>(
        &'a self,
        side: &mut Writes<'a>,
        writes: &GroupWrites,
    ) -> Result<(), StoreError> {
        let stored = try_join_all(
            writes
                .groups
                .iter()
                .map(|(g, _)| self.record::<GroupRecord>(&self.st.group_get, group_key(*g))),
        )
        .await?;
        let mut named: Vec<(ConvId, String)> = Vec::new();
        // A group renamed twice in one commit group: only its stored name and its last one
        // matter to the index.
        for ((group, record), stored) in writes.groups.iter().zip(stored) {
            if named.iter().any(|(g, _)| g == group) {
                continue;
            }
            let last = writes
                .groups
                .iter()
                .rev()
                .find(|(g, _)| g == group)
                .map_or(record, |(_, r)| r);
            let new = group_name_key(&last.name);
            let old = stored.map(|r| group_name_key(&r.name));
            if old.as_deref() != Some(new.as_str()) {
                if let Some(old) = old {
                    side.push(
                        &self.st.group_name_del,
                        (codec::initial(&old), old.clone(), i(group.to_wire())),
                        old.len() * 2,
                    );
                }
                side.push(
                    &self.st.group_name_put,
                    (codec::initial(&new), new.clone(), i(group.to_wire())),
                    new.len() * 2,
                );
            }
            named.push((*group, new));
        }
        for (group, record) in last_per_key(&writes.groups, |(g, _)| *g) {
            let data = codec::blob(record);
            let bytes = data.len();
            let (b, id) = group_key(*group);
            side.push(&self.st.group_put, (b, id, data), bytes);
        }
        for (group, user, record) in last_per_key(&writes.members, |(g, u, _)| (*g, *u)) {
            let k = (i(group.to_wire()), i(*user));
            match record {
                Some(r) => side.push(&self.st.member_put, (k.0, k.1, codec::blob(r)), 32),
                None => side.push(&self.st.member_del, k, 0),
            }
        }
        for (user, group, record) in last_per_key(&writes.user_groups, |(u, g, _)| (*u, *g)) {
            let k = (i(*user), i(group.to_wire()));
            match record {
                Some(r) => side.push(&self.st.user_group_put, (k.0, k.1, codec::blob(r)), 32),
                None => side.push(&self.st.user_group_del, k, 0),
            }
        }
        for (group, user, record) in last_per_key(&writes.applications, |(g, u, _)| (*g, *u)) {
            let k = (i(group.to_wire()), i(*user));
            match record {
                Some(r) => {
                    let data = codec::blob(r);
                    let bytes = data.len();
                    side.push(&self.st.application_put, (k.0, k.1, data), bytes);
                }
                None => side.push(&self.st.application_del, k, 0),
            }
        }
        for (group, user, seq) in &writes.mentions {
            side.push(
                &self.st.mention_put,
                (i(group.to_wire()), i(*user), i(*seq)),
                0,
            );
        }
        for (group, user, seq) in &writes.mentions_removed {
            side.push(
                &self.st.mention_del,
                (i(group.to_wire()), i(*user), i(*seq)),
                0,
            );
        }
        for (group, histogram) in last_per_key(&writes.read_histograms, |(g, _)| *g) {
            let data = codec::blob(histogram);
            let bytes = data.len();
            side.push(&self.st.group_reads_put, (i(group.to_wire()), data), bytes);
        }
        if let Some(next) = writes.next_group_id {
            side.push(&self.st.meta_put, (i(next), META_NEXT_GROUP_ID), 0);
        }
        Ok(())
    }

    /// Adds a commit group's changes to its users' group counts: counter updates (a counter
    /// cannot share a logged batch with other rows), sent once the group's rows are written,
    /// each once (not idempotent: never resent after an ambiguous failure). A group that fails
    /// between its rows and these leaves a count off by its change (the module doc).
    pub(super) async fn add_group_counts(&self, writes: &GroupWrites) -> Result<(), StoreError> {
        try_join_all(
            writes
                .user_group_count_changes
                .iter()
                .filter(|(_, change)| *change != 0)
                .map(|(user, change)| {
                    self.exec(
                        &self.st.user_group_tally_add,
                        (i64::from(*change), i(*user)),
                    )
                }),
        )
        .await
        .map(drop)
    }

    /// Seqs in `first ..= last` mentioning `user`, at most `cap`.
    async fn mention_seqs(
        &self,
        group: ConvId,
        user: UserId,
        (first, last): (u64, u64),
        cap: i32,
    ) -> Result<Vec<u64>, StoreError> {
        let rows = self
            .rows::<(i64,)>(
                &self.st.mentions_range,
                (i(group.to_wire()), i(user), i(first), i(last), cap),
            )
            .await?;
        Ok(rows.into_iter().map(|(s,)| u(s)).collect())
    }

    /// A page `(user, record)` of a table keyed by (group or user, user or group).
    fn pairs_after<T: serde::de::DeserializeOwned>(
        &self,
        st: &scylla::statement::prepared::PreparedStatement,
        partition: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        if limit == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.run(self.rows::<(i64, Vec<u8>)>(st, (i(partition), i(after), limit)))?;
        rows.into_iter()
            .map(|(k, data)| Ok((u(k), codec::unblob(&data)?)))
            .collect()
    }
}

impl GroupStore for ScyllaStore {
    fn group(&self, group: ConvId) -> Result<Option<GroupRecord>, StoreError> {
        self.run(self.record(&self.st.group_get, group_key(group)))
    }

    fn group_member(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.run(self.record(&self.st.member_get, (i(group.to_wire()), i(user))))
    }

    fn group_members(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        self.pairs_after(&self.st.members_page, group.to_wire(), after, limit)
    }

    fn user_group(
        &self,
        user: UserId,
        group: ConvId,
    ) -> Result<Option<UserGroupRecord>, StoreError> {
        self.run(self.record(&self.st.user_group_get, (i(user), i(group.to_wire()))))
    }

    fn groups_of_user(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, UserGroupRecord)>, StoreError> {
        Ok(self
            .pairs_after(&self.st.user_groups_page, user, after, limit)?
            .into_iter()
            .map(|(g, r)| (ConvId::from_stored(g), r))
            .collect())
    }

    fn user_group_count(&self, user: UserId) -> Result<u32, StoreError> {
        let (whole, tally) = self.run(futures_util::future::try_join(
            self.first::<(Option<i32>,)>(&self.st.user_group_count_get, (i(user),)),
            self.first::<(Option<Counter>,)>(&self.st.user_group_tally_get, (i(user),)),
        ))?;
        let whole = whole.and_then(|(n,)| n).map_or(0, i64::from);
        let tally = tally.and_then(|(n,)| n).map_or(0, |Counter(n)| n);
        Ok(u32::try_from(whole.saturating_add(tally).max(0)).unwrap_or(u32::MAX))
    }

    fn application(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.run(self.record(&self.st.application_get, (i(group.to_wire()), i(user))))
    }

    fn applications(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, ApplicationRecord)>, StoreError> {
        self.pairs_after(&self.st.applications_page, group.to_wire(), after, limit)
    }

    fn unread_mentions(
        &self,
        group: ConvId,
        user: UserId,
        after_seq: u64,
        last_seq: u64,
        cap: u32,
    ) -> Result<u32, StoreError> {
        let Some(first) = after_seq.checked_add(1).filter(|f| *f <= last_seq) else {
            return Ok(0);
        };
        if cap == 0 {
            return Ok(0);
        }
        let range = (first, last_seq.min(i64::MAX as u64));
        let cap_rows = i32::try_from(cap).unwrap_or(i32::MAX);
        self.run(async {
            let mut seqs = self.mention_seqs(group, user, range, cap_rows).await?;
            if user != MENTION_ALL_USER {
                seqs.extend(
                    self.mention_seqs(group, MENTION_ALL_USER, range, cap_rows)
                        .await?,
                );
                // A message that names the user and everyone counts once.
                seqs.sort_unstable();
                seqs.dedup();
            }
            Ok(seqs.len().min(cap as usize) as u32)
        })
    }

    fn read_histogram(&self, group: ConvId) -> Result<Option<ReadHistogram>, StoreError> {
        self.run(self.record(&self.st.group_reads_get, (i(group.to_wire()),)))
    }

    fn next_group_id(&self) -> Result<u64, StoreError> {
        Ok(self.run(self.meta(META_NEXT_GROUP_ID))?.unwrap_or(1))
    }

    fn groups_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, GroupRecord)>, StoreError> {
        let (Some(first), Some(end)) = (ConvId::group(1), ConvId::group(self.next_group_id()?))
        else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, Vec<u8>)> = self.run(self.walk_ids(
            &self.st.groups_page,
            (first.to_wire(), end.to_wire()),
            after,
            limit,
        ))?;
        rows.into_iter()
            .map(|(id, data)| {
                let group = ConvId::from_wire(u(id)).ok_or_else(|| corrupt_group(id))?;
                Ok((group, codec::unblob(&data)?))
            })
            .collect()
    }

    /// An empty prefix lists nothing (the index is partitioned by first character).
    fn groups_by_name(
        &self,
        prefix: &str,
        after: Option<(&str, ConvId)>,
        limit: usize,
    ) -> Result<Vec<(String, ConvId)>, StoreError> {
        if limit == 0 || prefix.is_empty() {
            return Ok(Vec::new());
        }
        let initial = codec::initial(prefix);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = match after {
            Some((name, group)) if name >= prefix => self.run(self.rows::<(String, i64)>(
                &self.st.group_names_after,
                (initial, name.to_owned(), i(group.to_wire()), limit),
            ))?,
            _ => self.run(self.rows::<(String, i64)>(
                &self.st.group_names_from,
                (initial, prefix.to_owned(), limit),
            ))?,
        };
        within_prefix(prefix, rows)
            .into_iter()
            .map(|(name, id)| {
                let group = ConvId::from_wire(u(id)).ok_or_else(|| corrupt_group(id))?;
                Ok((name, group))
            })
            .collect()
    }
}
