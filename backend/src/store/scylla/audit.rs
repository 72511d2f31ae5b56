//! The audit log: entries bucketed by id ([`AUDIT_PER_BUCKET`]), newest first within a
//! bucket; `meta` keeps the last id written and the first id kept, so that pages and pruning
//! go straight to the partitions that hold entries (and read no pruned rows' tombstones).

use scylla::statement::batch::BatchType;

use super::ScyllaStore;
use super::codec::{self, AUDIT_PER_BUCKET, i, u};
use super::writes::Writes;
use crate::store::{AuditRecord, AuditStore, StoreError};

pub(super) const META_AUDIT_LAST: &str = "audit_last_id";
const META_AUDIT_FIRST: &str = "audit_first_id";

fn record_bytes(r: &AuditRecord) -> usize {
    r.actor.len() + r.action.len() + r.target.len() + r.from.len() + r.detail.len()
}

impl ScyllaStore {
    async fn audit_bounds(&self) -> Result<(u64, u64), StoreError> {
        let first = self.meta(META_AUDIT_FIRST).await?.unwrap_or(1);
        let last = self.meta(META_AUDIT_LAST).await?.unwrap_or(0);
        Ok((first, last))
    }
}

impl AuditStore for ScyllaStore {
    /// Logged batches: all of a batch or none of it. A call whose records pass
    /// `BATCH_BYTES_MAX` goes out as several, each whole.
    fn append_audit(&self, first_id: u64, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writable()?;
        let mut w = Writes::default();
        let mut last = first_id;
        for (id, record) in (first_id..).zip(records) {
            w.push(
                &self.st.audit_put,
                (i(id / AUDIT_PER_BUCKET), i(id), codec::blob(record)),
                record_bytes(record),
            );
            last = id;
        }
        w.push(&self.st.meta_put, (i(last), META_AUDIT_LAST), 0);
        self.run(self.send(BatchType::Logged, w))
    }

    fn last_audit_id(&self) -> Result<u64, StoreError> {
        Ok(self.run(self.meta(META_AUDIT_LAST))?.unwrap_or(0))
    }

    fn audit_page(&self, before: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        self.run(async {
            let (first, last) = self.audit_bounds().await?;
            let start = last.min(before - 1);
            let mut page = Vec::new();
            if start < first {
                return Ok(page);
            }
            for b in (first / AUDIT_PER_BUCKET..=start / AUDIT_PER_BUCKET).rev() {
                if page.len() >= limit {
                    break;
                }
                let want = i32::try_from(limit - page.len()).unwrap_or(i32::MAX);
                let rows = self
                    .rows::<(i64, Vec<u8>)>(&self.st.audit_before, (i(b), i(start + 1), want))
                    .await?;
                for (id, data) in rows {
                    page.push((u(id), codec::unblob(&data)?));
                }
            }
            Ok(page)
        })
    }

    fn prune_audit(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.writable()?;
        self.run(async {
            let (first, last) = self.audit_bounds().await?;
            let mut w = Writes::default();
            let (mut pruned, mut next_first) = (0usize, first);
            'buckets: for b in first / AUDIT_PER_BUCKET..=last / AUDIT_PER_BUCKET {
                if pruned >= limit || last < first {
                    break;
                }
                let want = i32::try_from(limit - pruned).unwrap_or(i32::MAX);
                let rows = self
                    .rows::<(i64, Vec<u8>)>(&self.st.audit_oldest, (i(b), i(next_first), want))
                    .await?;
                for (id, data) in rows {
                    let record: AuditRecord = codec::unblob(&data)?;
                    // The newest entry stays, so that ids continue after it.
                    if u(id) >= last || record.at_ms >= before_ms {
                        break 'buckets;
                    }
                    w.push(&self.st.audit_del, (i(b), id), 0);
                    pruned += 1;
                    next_first = u(id) + 1;
                }
            }
            if pruned == 0 {
                return Ok(0);
            }
            w.push(&self.st.meta_put, (i(next_first), META_AUDIT_FIRST), 0);
            self.send(BatchType::Logged, w).await?;
            Ok(pruned)
        })
    }
}
