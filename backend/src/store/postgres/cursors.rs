//! Cursor rows (`cursor_rows`, keyed by (conversation, user)) and users' conversation lists by
//! recency (`recent`, keyed by (user, bucket, conversation)); both written by `append.rs`.

use tokio_postgres::Row;

use super::append::conv_order;
use super::{PgStore, col, decode, i, limit, placed, u};
use crate::store::dedup_window::StoredWindow;
use crate::store::{
    ConvId, CursorRecord, CursorRow, CursorStore, MembershipStore, StoreError, UserId,
};

pub(super) fn cursor_row_of(row: &Row, at: usize) -> Result<CursorRow, StoreError> {
    Ok(CursorRow {
        cursor: CursorRecord {
            delivered_seq: u(row, at)?,
            read_seq: u(row, at + 1)?,
        },
        recent_sends: decode::<StoredWindow>(col::<&[u8]>(row, at + 2)?)?.0,
        devices: decode(col::<&[u8]>(row, at + 3)?)?,
    })
}

impl CursorStore for PgStore {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError> {
        self.row(
            "SELECT delivered_seq, read_seq, recent_sends, devices FROM cursor_rows \
             WHERE conv_id = $1 AND user_id = $2",
            &[&i(conv.to_wire()), &i(user)],
        )?
        .map(|row| cursor_row_of(&row, 0))
        .transpose()
    }

    fn cursor_rows(&self, keys: &[(ConvId, UserId)]) -> Result<Vec<Option<CursorRow>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let convs: Vec<i64> = keys.iter().map(|k| i(k.0.to_wire())).collect();
        let users: Vec<i64> = keys.iter().map(|k| i(k.1)).collect();
        // One statement for all: each key a primary-key lookup, found rows by their place.
        let rows = self.rows(
            "SELECT k.n, r.delivered_seq, r.read_seq, r.recent_sends, r.devices \
             FROM UNNEST($1::bigint[], $2::bigint[]) WITH ORDINALITY AS k(conv, usr, n) \
             JOIN cursor_rows r ON r.conv_id = k.conv AND r.user_id = k.usr",
            &[&convs, &users],
        )?;
        let mut out = vec![None; keys.len()];
        for row in &rows {
            out[placed(row, keys.len())?] = Some(cursor_row_of(row, 1)?);
        }
        Ok(out)
    }
}

impl MembershipStore for PgStore {
    fn recent_conversations(
        &self,
        user: UserId,
        buckets: std::ops::RangeInclusive<u64>,
        n: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError> {
        if n == 0 || buckets.is_empty() {
            return Ok(Vec::new());
        }
        let from = i64::try_from(*buckets.end()).unwrap_or(i64::MAX);
        let to = i64::try_from(*buckets.start()).unwrap_or(i64::MAX);
        self.rows(
            "SELECT bucket, conv_order FROM recent \
             WHERE user_id = $1 AND bucket <= $2 AND bucket >= $3 \
             ORDER BY bucket DESC, conv_order DESC LIMIT $4",
            &[&i(user), &from, &to, &limit(n)],
        )?
        .iter()
        .map(|row| {
            let conv = u(row, 1)? ^ (1 << 63);
            debug_assert_eq!(conv_order(conv), col::<i64>(row, 1)?);
            Ok((u(row, 0)?, ConvId::from_stored(conv)))
        })
        .collect()
    }
}
