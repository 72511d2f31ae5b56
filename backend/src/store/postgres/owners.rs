//! Conversation ownership (`store/owners.rs`) on PostgreSQL: `conv_owners`. A claim is one
//! conditional statement (the epoch advances only from the one the claimant saw), so of two
//! claims that saw the same epoch exactly one wins; the fence is checked in `append.rs`.

use super::{PgStore, i, u};
use crate::store::{Claim, ConvId, OwnerRecord, OwnerStore, StoreError};

impl OwnerStore for PgStore {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        // Epoch 0 is a placeholder a fenced group locked: nobody owns it yet.
        self.row(
            "SELECT epoch, node FROM conv_owners WHERE conv_id = $1 AND epoch > 0",
            &[&i(conv.to_wire())],
        )?
        .map(|row| {
            Ok(OwnerRecord {
                epoch: u(&row, 0)?,
                node: u(&row, 1)?,
            })
        })
        .transpose()
    }

    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError> {
        let c = i(conv.to_wire());
        let won = if seen_epoch == 0 {
            self.row(
                "INSERT INTO conv_owners (conv_id, epoch, node) VALUES ($1, 1, $2) \
                 ON CONFLICT (conv_id) DO UPDATE SET epoch = 1, node = excluded.node \
                 WHERE conv_owners.epoch = 0 RETURNING epoch",
                &[&c, &i(node)],
            )?
        } else {
            self.row(
                "UPDATE conv_owners SET epoch = epoch + 1, node = $2 \
                 WHERE conv_id = $1 AND epoch = $3 RETURNING epoch",
                &[&c, &i(node), &i(seen_epoch)],
            )?
        };
        match won {
            Some(row) => Ok(Claim::Won(u(&row, 0)?)),
            None => Ok(Claim::Lost(
                self.owner(conv)?
                    .unwrap_or(OwnerRecord { epoch: 0, node: 0 }),
            )),
        }
    }
}
