//! The audit log in the fjall store: `audit` (id, big-endian → [`AuditRecord`]), append-only,
//! so a page newest first is one reverse range read.

use fjall::Readable;

use super::{FjallStore, decode, encode};
use crate::store::{AuditRecord, AuditStore, StoreError};

impl AuditStore for FjallStore {
    fn append_audit(&self, first_id: u64, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        for (id, record) in (first_id..).zip(records) {
            batch.insert(&self.audit, id.to_be_bytes(), encode(record));
        }
        self.commit(batch)
    }

    fn last_audit_id(&self) -> Result<u64, StoreError> {
        match self.view().iter(&self.audit).next_back() {
            None => Ok(0),
            Some(guard) => {
                let key = guard.key()?;
                let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("audit key of {} bytes", key.len()).into())
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    fn audit_page(&self, before: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let mut page = Vec::with_capacity(limit.min(1024));
        if limit == 0 || before == 0 {
            return Ok(page);
        }
        for guard in self
            .view()
            .range(&self.audit, ..before.to_be_bytes())
            .rev()
            .take(limit)
        {
            let (key, value) = guard.into_inner()?;
            let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("audit key of {} bytes", key.len()).into())
            })?;
            page.push((u64::from_be_bytes(bytes), decode(&value)?));
        }
        Ok(page)
    }

    fn prune_audit(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        let mut pruned = 0usize;
        let newest = self.last_audit_id()?.to_be_bytes();
        for guard in self.view().iter(&self.audit).take(limit) {
            let (key, value) = guard.into_inner()?;
            if *key == newest {
                break;
            }
            let record: AuditRecord = decode(&value)?;
            if record.at_ms >= before_ms {
                break;
            }
            batch.remove(&self.audit, key);
            pruned += 1;
        }
        if pruned == 0 {
            return Ok(0);
        }
        self.commit(batch)?;
        Ok(pruned)
    }
}
