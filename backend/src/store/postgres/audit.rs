//! The audit log on PostgreSQL: `audit`, keyed by id, so a page newest first is one backward
//! range of the primary key.

use super::append::{Batch, boxed};
use super::{PgStore, col, i, limit, u};
use crate::store::{AuditRecord, AuditStore, StoreError};

/// Entries by id, from `$1` ids and six columns of the records.
pub(super) const AUDIT_PUT: &str = "INSERT INTO audit (id, at_ms, actor, action, target, \
     from_addr, detail) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], \
     $4::text[], $5::text[], $6::text[], $7::text[]) \
     ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms, actor = excluded.actor, \
     action = excluded.action, target = excluded.target, \
     from_addr = excluded.from_addr, detail = excluded.detail";

/// Serializes appends to the log across the nodes sharing the database (any fixed number).
const AUDIT_APPEND_LOCK: i64 = 0x7269_6e67_6175_6474; // "ringaudt"

/// New entries numbered after the log's last one (under [`AUDIT_APPEND_LOCK`]), in array order.
const AUDIT_APPEND: &str = "INSERT INTO audit (id, at_ms, actor, action, target, from_addr, detail) \
     SELECT (SELECT coalesce(max(id), 0) FROM audit) + t.n, t.at_ms, t.actor, t.action, \
     t.target, t.from_addr, t.detail \
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
     WITH ORDINALITY AS t(at_ms, actor, action, target, from_addr, detail, n)";

/// The six columns after `at`, as [`AUDIT_PUT`] writes them.
pub(super) fn audit_of(row: &tokio_postgres::Row, at: usize) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        at_ms: u(row, at)?,
        actor: col(row, at + 1)?,
        action: col(row, at + 2)?,
        target: col(row, at + 3)?,
        from: col(row, at + 4)?,
        detail: col(row, at + 5)?,
    })
}

impl AuditStore for PgStore {
    /// Numbered after the log's last entry, not from `first_id`: the nodes of a cluster share
    /// this log, each with its own writer, and an id taken twice would overwrite an entry. One
    /// append at a time across them (a transaction-scoped advisory lock): entries are rare.
    fn append_audit(&self, _first_id: u64, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let text = |f: fn(&AuditRecord) -> &str| {
            boxed(records.iter().map(|r| f(r).to_owned()).collect::<Vec<_>>())
        };
        let mut batch = Batch::default();
        batch.push(
            "SELECT pg_advisory_xact_lock($1)",
            vec![boxed(AUDIT_APPEND_LOCK)],
        );
        batch.push(
            AUDIT_APPEND,
            vec![
                boxed(records.iter().map(|r| i(r.at_ms)).collect::<Vec<_>>()),
                text(|r| &r.actor),
                text(|r| &r.action),
                text(|r| &r.target),
                text(|r| &r.from),
                text(|r| &r.detail),
            ],
        );
        self.block(self.run_batch(&[], &batch))
    }

    fn last_audit_id(&self) -> Result<u64, StoreError> {
        match self.row("SELECT id FROM audit ORDER BY id DESC LIMIT 1", &[])? {
            Some(row) => u(&row, 0),
            None => Ok(0),
        }
    }

    fn audit_page(&self, before: u64, n: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        if n == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        self.rows(
            "SELECT id, at_ms, actor, action, target, from_addr, detail FROM audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
            &[&before, &limit(n)],
        )?
        .iter()
        .map(|row| Ok((u(row, 0)?, audit_of(row, 1)?)))
        .collect()
    }

    fn prune_audit(&self, before_ms: u64, n: usize) -> Result<usize, StoreError> {
        if n == 0 {
            return Ok(0);
        }
        // The oldest `n` but the newest, up to the first one at or after `before_ms`.
        let pruned = self.execute(
            "WITH oldest AS (SELECT id, at_ms FROM audit \
                 WHERE id < (SELECT id FROM audit ORDER BY id DESC LIMIT 1) \
                 ORDER BY id LIMIT $2), \
             stop AS (SELECT min(id) AS id FROM oldest WHERE at_ms >= $1) \
             DELETE FROM audit WHERE id IN (SELECT id FROM oldest \
                 WHERE id < coalesce((SELECT id FROM stop), 9223372036854775807))",
            &[&i64::try_from(before_ms).unwrap_or(i64::MAX), &limit(n)],
        )?;
        Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
    }
}
