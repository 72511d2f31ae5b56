//! Cursor rows (cursors, device cursors, the dedup window: one postcard [`CursorRow`] per
//! (conversation, user), written whole) and the recency index, both written by a commit
//! group's logged batches.

use futures_util::future::try_join_all;

use super::ScyllaStore;
use super::codec::{self, i, ordered, u, unordered};
use super::writes::{Writes, last_per_key};
use crate::store::{
    CommitGroup, ConvId, CursorRow, CursorStore, MembershipStore, StoreError, UserId,
};

impl ScyllaStore {
    /// Adds a group's cursor rows and recency moves to its logged batches.
    pub(super) fn write_cursors<'a>(&'a self, side: &mut Writes<'a>, group: &CommitGroup) {
        for (conv, user, row) in last_per_key(&group.cursor_rows, |(c, u, _)| (*c, *u)) {
            let data = codec::blob(row);
            let bytes = data.len();
            side.push(
                &self.st.cursor_put,
                (i(conv.to_wire()), i(*user), data),
                bytes,
            );
        }
        for m in &group.recency {
            let conv = ordered(m.conv.to_wire());
            if let Some(from) = m.from {
                side.push(&self.st.recent_del, (i(m.user), i(from), conv), 0);
            }
            side.push(&self.st.recent_put, (i(m.user), i(m.to), conv), 0);
        }
    }

    async fn cursor_row_async(
        &self,
        conv: ConvId,
        user: UserId,
    ) -> Result<Option<CursorRow>, StoreError> {
        self.record(&self.st.cursor_get, (i(conv.to_wire()), i(user)))
            .await
    }
}

impl CursorStore for ScyllaStore {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError> {
        self.run(self.cursor_row_async(conv, user))
    }

    fn cursor_rows(&self, keys: &[(ConvId, UserId)]) -> Result<Vec<Option<CursorRow>>, StoreError> {
        self.run(try_join_all(
            keys.iter().map(|(c, u)| self.cursor_row_async(*c, *u)),
        ))
    }
}

impl MembershipStore for ScyllaStore {
    fn recent_conversations(
        &self,
        user: UserId,
        buckets: std::ops::RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError> {
        if limit == 0 || buckets.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        // Buckets are hours since 1970: far below 2^63, so the bigint keeps their order.
        let from = i((*buckets.end()).min(i64::MAX as u64));
        let to = i((*buckets.start()).min(i64::MAX as u64));
        let rows =
            self.run(self.rows::<(i64, i64)>(&self.st.recent_list, (i(user), from, to, limit)))?;
        Ok(rows
            .into_iter()
            .map(|(b, c)| (u(b), ConvId::from_stored(unordered(c))))
            .collect())
    }
}
