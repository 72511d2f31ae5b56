//! Conversation ownership (`store/owners.rs`) on fjall: `owners` maps a conversation to its
//! [`OwnerRecord`]. One writer at a time (`writes`) makes the claim's compare and set atomic.

use std::ops::Range;

use super::{FjallStore, encode};
use crate::store::{
    Claim, CommitGroup, ConvId, IdKind, OwnerRecord, OwnerStore, StoreError, refuse_stale_fences,
};

impl FjallStore {
    /// Refuses a group whose fences name epochs that are not the stored ones (every stale one
    /// reported). Called under the write lock, before anything of the group is written.
    pub(super) fn check_fences(&self, group: &CommitGroup) -> Result<(), StoreError> {
        refuse_stale_fences(&group.fences, |conv| {
            Ok(self.owner(conv)?.map_or(0, |o| o.epoch))
        })
    }
}

impl OwnerStore for FjallStore {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        self.get(&self.owners, conv.to_wire().to_be_bytes())
    }

    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError> {
        Ok(self.claim_many(node, &[(conv, seen_epoch)])?[0])
    }

    fn owners(&self, convs: &[ConvId]) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        convs.iter().map(|c| self.owner(*c)).collect()
    }

    /// Under the write lock, in one batch with one fsync.
    fn claim_many(&self, node: u64, claims: &[(ConvId, u64)]) -> Result<Vec<Claim>, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        // A conversation named twice: the second claim sees what the first one did.
        let mut won: Vec<(ConvId, OwnerRecord)> = Vec::new();
        let mut answers = Vec::with_capacity(claims.len());
        for &(conv, seen_epoch) in claims {
            let current = match won.iter().rev().find(|(c, _)| *c == conv) {
                Some((_, record)) => Some(*record),
                None => self.owner(conv)?,
            };
            let stored = current.map_or(0, |o| o.epoch);
            if stored != seen_epoch {
                // Never claimed (epoch 0): a claimant that saw an epoch is confused, not owed one.
                answers.push(Claim::Lost(
                    current.unwrap_or(OwnerRecord { epoch: 0, node: 0 }),
                ));
                continue;
            }
            let record = OwnerRecord {
                epoch: seen_epoch + 1,
                node,
            };
            batch.insert(&self.owners, conv.to_wire().to_be_bytes(), encode(&record));
            won.push((conv, record));
            answers.push(Claim::Won(record.epoch));
        }
        if !won.is_empty() {
            self.commit(batch)?;
        }
        Ok(answers)
    }

    /// Under the write lock (the commit groups of one box write the same keys).
    fn lease_ids(&self, kind: IdKind, count: u64) -> Result<Range<u64>, StoreError> {
        assert!(count > 0, "an empty lease");
        let _writing = self.write_lock();
        self.writable()?;
        let (key, first) = match kind {
            IdKind::Message => (
                super::log::META_NEXT_MSG_ID,
                crate::store::ConversationLog::next_msg_id(self)?,
            ),
            IdKind::Group => (
                super::groups::META_NEXT_GROUP_ID,
                crate::store::GroupStore::next_group_id(self)?,
            ),
        };
        let end = first
            .checked_add(count)
            .ok_or_else(|| StoreError::Engine(format!("{kind:?} ids are exhausted").into()))?;
        let mut batch = self.batch();
        batch.insert(&self.meta, key, end.to_be_bytes());
        self.commit(batch)?;
        Ok(first..end)
    }
}
