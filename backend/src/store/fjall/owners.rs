//! Conversation ownership (`store/owners.rs`) on fjall: `owners` maps a conversation to its
//! [`OwnerRecord`]. One writer at a time (`writes`) makes the claim's compare and set atomic.

use super::{FjallStore, encode};
use crate::store::{Claim, CommitGroup, ConvId, OwnerRecord, OwnerStore, StoreError};

impl FjallStore {
    /// Refuses a group one of whose fences names an epoch that is not the stored one. Called
    /// under the write lock, before anything of the group is written.
    pub(super) fn check_fences(&self, group: &CommitGroup) -> Result<(), StoreError> {
        for (conv, fenced) in &group.fences {
            let stored = self.owner(*conv)?.map_or(0, |o| o.epoch);
            if stored != *fenced {
                return Err(StoreError::Fenced {
                    conv: conv.to_wire(),
                    fenced: *fenced,
                    stored,
                });
            }
        }
        Ok(())
    }
}

impl OwnerStore for FjallStore {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        self.get(&self.owners, conv.to_wire().to_be_bytes())
    }

    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        if let Some(current) = self.owner(conv)? {
            if current.epoch != seen_epoch {
                return Ok(Claim::Lost(current));
            }
        } else if seen_epoch != 0 {
            // Nobody ever claimed it: a claimant that saw an epoch is confused, not owed one.
            return Ok(Claim::Lost(OwnerRecord { epoch: 0, node: 0 }));
        }
        let won = OwnerRecord {
            epoch: seen_epoch + 1,
            node,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.owners, conv.to_wire().to_be_bytes(), encode(&won));
        self.written(batch.commit().map_err(StoreError::from))?;
        self.persist()?;
        Ok(Claim::Won(won.epoch))
    }
}
