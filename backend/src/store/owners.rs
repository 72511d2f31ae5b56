//! Who sequences a conversation. On one box the answer never changes and nothing here is
//! used; in a cluster each conversation is sequenced by one node at a time, and the store of
//! record is the referee: a node takes a conversation by advancing its epoch with a
//! conditional write ([`super::OwnerStore::claim`]), and every commit group it writes is
//! fenced by that epoch ([`super::CommitGroup::fences`]), so a paused or partitioned former
//! owner can never write a seq.

use serde::{Deserialize, Serialize};

/// The stored owner of a conversation. Epochs start at 1 and only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub epoch: u64,
    /// The owning node's id (`[cluster] node_id`).
    pub node: u64,
}

/// What [`super::OwnerStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claimant owns the conversation at this epoch.
    Won(u64),
    /// The stored epoch was not the one the claimant saw: nothing changed; here is the owner.
    Lost(OwnerRecord),
}

/// The id counters leased in blocks in cluster mode ([`super::OwnerStore::lease_ids`]): the
/// same counters one box advances from its commit groups (`next_msg_id`, `next_group_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Message,
    Group,
}

/// A fence of a commit group that names another epoch than the stored one (`stored` is 0 for
/// a conversation nobody claimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleFence {
    pub conv: u64,
    pub fenced: u64,
    pub stored: u64,
}

/// Stale fences named in an error message, at most: a group may fence thousands.
const STALE_FENCES_NAMED_MAX: usize = 8;

/// `Fenced`'s message: the count and the first few stale fences.
pub(super) fn describe_stale(stale: &[StaleFence]) -> String {
    let mut out = String::new();
    for s in stale.iter().take(STALE_FENCES_NAMED_MAX) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&format!(
            "conversation {} at epoch {}, not {}",
            s.conv, s.stored, s.fenced
        ));
    }
    if stale.len() > STALE_FENCES_NAMED_MAX {
        out.push_str(&format!(
            " and {} more",
            stale.len() - STALE_FENCES_NAMED_MAX
        ));
    }
    out
}

/// The fence check every store makes before writing a group: `Fenced` naming **every** fence
/// whose epoch is not the stored one (`stored_epoch` answers 0 for no owner), so that the
/// sequencer forgets them all at once rather than one refused group each.
pub(crate) fn refuse_stale_fences(
    fences: &[(super::ConvId, u64)],
    mut stored_epoch: impl FnMut(super::ConvId) -> Result<u64, super::StoreError>,
) -> Result<(), super::StoreError> {
    let mut stale = Vec::new();
    for &(conv, fenced) in fences {
        let stored = stored_epoch(conv)?;
        if stored != fenced {
            stale.push(StaleFence {
                conv: conv.to_wire(),
                fenced,
                stored,
            });
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(super::StoreError::Fenced { stale })
    }
}
