//! The conversation log on PostgreSQL: `messages` keyed by (conversation, seq), so every read
//! is one range of the primary key. Writes are `append.rs`.

use tokio_postgres::Row;

use super::{PgStore, col, decode, i, limit, placed, u};
use crate::store::{ConvId, ConversationLog, MessageRecord, StoreError, in_batches};

/// The columns [`message_of`] reads, as a literal for `concat!`.
macro_rules! message_columns {
    () => {
        "conv_id, seq, msg_id, from_user, to_user, client_msg_id, content_type, content, \
         server_time_ms, recall_of_seq, recall_event_seq, mentions"
    };
}

/// [`message_of`]'s columns, for other files.
pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

/// A seq bound as SQL's bigint: seqs never reach 2^63, so a larger bound is "no bound".
pub(super) fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn message_of(row: &Row) -> Result<MessageRecord, StoreError> {
    message_at(row, 0)
}

/// [`message_of`] with its columns from `at` on.
fn message_at(row: &Row, at: usize) -> Result<MessageRecord, StoreError> {
    let client_msg_id = String::from_utf8(col::<Vec<u8>>(row, at + 5)?)
        .map_err(|e| StoreError::Corrupt(e.into()))?;
    let recall_event_seq = u(row, at + 10)?;
    let mentions = col::<Option<&[u8]>>(row, at + 11)?
        .map(decode)
        .transpose()?
        .map(Box::new);
    Ok(MessageRecord {
        conv_id: ConvId::from_stored(u(row, at)?),
        seq: u(row, at + 1)?,
        msg_id: u(row, at + 2)?,
        from: u(row, at + 3)?,
        to: u(row, at + 4)?,
        client_msg_id,
        content_type: col(row, at + 6)?,
        content: col::<Vec<u8>>(row, at + 7)?.into(),
        server_time_ms: u(row, at + 8)?,
        recalled: recall_event_seq != 0,
        recall_of_seq: u(row, at + 9)?,
        recall_event_seq,
        mentions,
    })
}

fn messages_of(rows: &[Row]) -> Result<Vec<MessageRecord>, StoreError> {
    rows.iter().map(message_of).collect()
}

impl PgStore {
    /// A counter of `counters`, or `default` before it was first written.
    pub(super) fn counter(&self, name: &str, default: u64) -> Result<u64, StoreError> {
        match self.row("SELECT value FROM counters WHERE name = $1", &[&name])? {
            Some(row) => u(&row, 0),
            None => Ok(default),
        }
    }
}

impl ConversationLog for PgStore {
    fn append(&self, group: &crate::store::CommitGroup) -> Result<(), StoreError> {
        self.append_group(group)
    }

    fn next_msg_id(&self) -> Result<u64, StoreError> {
        self.counter("next_msg_id", 1)
    }

    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conv_id = $1 ORDER BY seq DESC LIMIT 1"
        );
        self.row(sql, &[&i(conv.to_wire())])?
            .as_ref()
            .map(message_of)
            .transpose()
    }

    fn last_messages(&self, convs: &[ConvId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        // One statement: each conversation's newest row by a backward index scan.
        let sql = concat!(
            "SELECT m.* FROM UNNEST($1::bigint[]) AS c(id) CROSS JOIN LATERAL (SELECT ",
            message_columns!(),
            " FROM messages WHERE conv_id = c.id ORDER BY seq DESC LIMIT 1) m"
        );
        let ids: Vec<i64> = convs.iter().map(|c| i(c.to_wire())).collect();
        let found = messages_of(&self.rows(sql, &[&ids])?)?;
        Ok(convs
            .iter()
            .map(|c| found.iter().find(|m| m.conv_id == *c).cloned())
            .collect())
    }

    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conv_id = $1 AND seq = $2"
        );
        self.row(sql, &[&i(conv.to_wire()), &seq_bound(seq)])?
            .as_ref()
            .map(message_of)
            .transpose()
    }

    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        in_batches(keys, |batch| {
            let convs: Vec<i64> = batch.iter().map(|(c, _)| i(c.to_wire())).collect();
            let seqs: Vec<i64> = batch.iter().map(|(_, s)| seq_bound(*s)).collect();
            // One statement for the batch: each key a primary-key lookup, found rows by place.
            let sql = concat!(
                "SELECT k.n, m.* FROM UNNEST($1::bigint[], $2::bigint[]) WITH ORDINALITY \
                 AS k(conv, seq, n) CROSS JOIN LATERAL (SELECT ",
                message_columns!(),
                " FROM messages WHERE conv_id = k.conv AND seq = k.seq) m"
            );
            let mut out = vec![None; batch.len()];
            for row in &self.rows(sql, &[&convs, &seqs])? {
                out[placed(row, batch.len())?] = Some(message_at(row, 1)?);
            }
            Ok(out)
        })
    }

    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        n: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if n == 0 || after_seq >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conv_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let params = (i(conv.to_wire()), seq_bound(after_seq), limit(n));
        messages_of(&self.rows(sql, &[&params.0, &params.1, &params.2])?)
    }

    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        n: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conv_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let params = (i(conv.to_wire()), seq_bound(before_seq), limit(n));
        messages_of(&self.rows(sql, &[&params.0, &params.1, &params.2])?)
    }
}
