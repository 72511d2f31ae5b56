//! Contacts: relations and contact summaries (written by a commit group's logged batches),
//! profiles (written on their own), and the username index read by prefix, partitioned by
//! the folded name's first character.

use futures_util::future::try_join_all;

use super::ScyllaStore;
use super::codec::{self, i, u};
use super::writes::{Writes, last_per_key};
use crate::store::{
    ContactStore, ContactSummary, ContactWrites, ProfileRecord, RelationKey, RelationKind,
    RelationRecord, StoreError, UserId, in_batches,
};

impl ScyllaStore {
    /// A summary change is applied onto the stored summary read here: not atomic with a
    /// change another node makes meanwhile (ScyllaDB has no transaction across the two; the
    /// PostgreSQL adapter's is).
    pub(super) async fn write_contacts<'a>(
        &'a self,
        side: &mut Writes<'a>,
        writes: &ContactWrites,
    ) -> Result<(), StoreError> {
        for (key, record) in last_per_key(&writes.relations, |(k, _)| *k) {
            let k = (i(key.owner), i32::from(key.kind as u8), i(key.other));
            match record {
                Some(r) => {
                    let data = codec::blob(r);
                    let bytes = data.len();
                    side.push(&self.st.relation_put, (k.0, k.1, k.2, data), bytes);
                }
                None => side.push(&self.st.relation_del, k, 0),
            }
        }
        for w in last_per_key(&writes.summaries, |w| w.user) {
            let stored = match w.base {
                Some(_) => {
                    self.record::<ContactSummary>(&self.st.summary_get, (i(w.user),))
                        .await?
                }
                None => None,
            };
            let summary = w.onto(stored);
            side.push(&self.st.summary_put, (i(w.user), codec::blob(&summary)), 32);
        }
        Ok(())
    }
}

/// The entries of a prefix index page that start with `prefix`, in order (the page is sorted,
/// so the first entry past the prefix ends it).
pub(super) fn within_prefix<T>(prefix: &str, rows: Vec<(String, T)>) -> Vec<(String, T)> {
    rows.into_iter()
        .take_while(|(name, _)| name.starts_with(prefix))
        .collect()
}

impl ContactStore for ScyllaStore {
    fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError> {
        let k = (i(key.owner), i32::from(key.kind as u8), i(key.other));
        self.run(self.record(&self.st.relation_get, k))
    }

    fn relations_at(
        &self,
        keys: &[RelationKey],
    ) -> Result<Vec<Option<RelationRecord>>, StoreError> {
        // A batch's reads in flight together: one wait per batch, not per key.
        in_batches(keys, |batch| {
            self.run(try_join_all(batch.iter().map(|key| {
                let k = (i(key.owner), i32::from(key.kind as u8), i(key.other));
                self.record(&self.st.relation_get, k)
            })))
        })
    }

    fn relations(
        &self,
        owner: UserId,
        kind: RelationKind,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, RelationRecord)>, StoreError> {
        if limit == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.run(self.rows::<(i64, Vec<u8>)>(
            &self.st.relations_page,
            (i(owner), i32::from(kind as u8), i(after), limit),
        ))?;
        rows.into_iter()
            .map(|(other, data)| Ok((u(other), codec::unblob(&data)?)))
            .collect()
    }

    fn contact_summary(&self, user: UserId) -> Result<Option<ContactSummary>, StoreError> {
        self.run(self.record(&self.st.summary_get, (i(user),)))
    }

    fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.run(self.record(&self.st.profile_get, (i(user),)))
    }

    fn put_profile(&self, user: UserId, profile: &ProfileRecord) -> Result<(), StoreError> {
        self.writable()?;
        self.run(self.exec(&self.st.profile_put, (i(user), codec::blob(profile))))
            .map(drop)
    }

    /// LWTs (`IF NOT EXISTS`, `IF record = ?`): compare and write in one step, as the push
    /// tokens' puts are. A plain write and an LWT on one row carry timestamps of different
    /// clocks, so [`Self::put_profile`] is for restores, not beside these.
    fn put_profile_if(
        &self,
        user: UserId,
        expected: Option<&ProfileRecord>,
        profile: &ProfileRecord,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let data = codec::blob(profile);
        let done = match expected {
            None => self.run(self.lwt(&self.st.profile_put_new, (i(user), data)))?,
            Some(e) => {
                self.run(self.lwt(&self.st.profile_put_over, (data, i(user), codec::blob(e))))?
            }
        };
        Ok(done.applied)
    }

    /// An empty prefix lists nothing: the index is partitioned by first character, and a
    /// search always names one.
    fn usernames_with_prefix(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        if limit == 0 || prefix.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let initial = codec::initial(prefix);
        let rows =
            if after >= prefix {
                self.run(self.rows::<(String, i64)>(
                    &self.st.prefix_after,
                    (initial, after.to_owned(), limit),
                ))?
            } else {
                self.run(self.rows::<(String, i64)>(
                    &self.st.prefix_from,
                    (initial, prefix.to_owned(), limit),
                ))?
            };
        Ok(within_prefix(prefix, rows)
            .into_iter()
            .map(|(name, id)| (name, u(id)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_page_stops_at_the_first_name_past_the_prefix() {
        let rows = vec![
            ("ann".to_owned(), 1),
            ("anna".to_owned(), 2),
            ("anne".to_owned(), 3),
            ("anx".to_owned(), 4),
            ("anne2".to_owned(), 5),
        ];
        let kept: Vec<_> = within_prefix("ann", rows)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(kept, [1, 2, 3]);
    }
}
