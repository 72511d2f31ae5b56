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
