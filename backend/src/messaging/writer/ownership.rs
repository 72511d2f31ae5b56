//! Cluster mode: the sequencer writes a conversation only while it holds the conversation's
//! epoch (`store/owners.rs`). Before a group is applied, every conversation its writes touch is
//! claimed (once: the epoch is remembered) and fenced in the group; a group the store refuses
//! as `Fenced` wrote nothing, and the conversation is forgotten (`lost`). Off (one box), none of
//! this runs: `Writer::ownership` is `None` and the group is built as before.
//!
//! Why the caches are dropped when a conversation is taken from another node: that node may
//! have appended since this one last cached the conversation's head, cursor rows, relations or
//! group; a seq handed out from a stale head would be handed out twice. The whole cache goes
//! (between groups, where nothing loaded is referenced): a rare event, and one place.

use super::*;
use crate::groups::GroupOpKind;
use crate::store::{Claim, OwnerStore};

/// Epochs remembered, at most; past it they are forgotten between groups and claimed again
/// (a claim of a conversation this node holds changes no cache).
const EPOCHS_MAX: usize = 1 << 20;

pub(crate) struct Ownership {
    /// This node's number (`cluster::rendezvous::node_number`).
    node: u64,
    owners: Arc<dyn OwnerStore>,
    /// The conversations this node holds and their epochs.
    epochs: Map<ConvId, u64>,
    /// Conversations already fenced in the group being built.
    in_group: Set<ConvId>,
    /// Scratch: one write's conversations.
    convs: Vec<ConvId>,
}

impl Ownership {
    pub(crate) fn new(node: u64, owners: Arc<dyn OwnerStore>) -> Self {
        Self {
            node,
            owners,
            epochs: Map::default(),
            in_group: Set::default(),
            convs: Vec::new(),
        }
    }

    /// The epoch this node holds `conv` at, if it does.
    #[cfg(test)]
    pub(crate) fn epoch(&self, conv: ConvId) -> Option<u64> {
        self.epochs.get(&conv).copied()
    }
}

/// What claiming a conversation did.
enum Claimed {
    /// Held at this epoch; `taken` when another node held it before (caches are stale).
    Held { epoch: u64, taken: bool },
    /// Another node claimed it first.
    Lost,
}

impl Ownership {
    fn claim(&mut self, conv: ConvId) -> Result<Claimed, StoreError> {
        if let Some(&epoch) = self.epochs.get(&conv) {
            return Ok(Claimed::Held {
                epoch,
                taken: false,
            });
        }
        let seen = self.owners.owner(conv)?;
        let seen_epoch = seen.map_or(0, |r| r.epoch);
        match self.owners.claim(conv, self.node, seen_epoch)? {
            Claim::Won(epoch) => {
                self.epochs.insert(conv, epoch);
                metrics::counter!("ringchat_cluster_claims_total").increment(1);
                Ok(Claimed::Held {
                    epoch,
                    taken: seen.is_some_and(|r| r.node != self.node),
                })
            }
            Claim::Lost(_) => Ok(Claimed::Lost),
        }
    }
}

/// The conversations a write touches (see ARCHITECTURE.md, "Cluster: who writes what").
/// Group creation (its id is not known yet) and the DM-policy setting (a user's row) touch none.
pub(crate) fn convs_of(write: &Write, out: &mut Vec<ConvId>) {
    match write {
        Write::Send(m) => out.extend(ConvId::direct(m.from, m.to)),
        Write::Cursor(c) => out.push(c.conv),
        Write::Recall { conv, .. } => out.push(*conv),
        Write::Contact(op) => {
            use crate::contacts::ops::ContactOp as C;
            match op {
                C::Request { user, other, .. }
                | C::Respond { user, other, .. }
                | C::Cancel { user, other }
                | C::Delete { user, other }
                | C::Block { user, other }
                | C::Unblock { user, other } => out.extend(ConvId::direct(*user, *other)),
                C::SetPrivacy { .. } => {}
            }
        }
        Write::GroupSend(m) => out.push(m.g),
        Write::Group(op) => match &op.kind {
            GroupOpKind::Create { .. } => {}
            GroupOpKind::Update { g, .. }
            | GroupOpKind::Invite { g, .. }
            | GroupOpKind::Join { g, .. }
            | GroupOpKind::Approve { g, .. }
            | GroupOpKind::Leave { g }
            | GroupOpKind::Remove { g, .. }
            | GroupOpKind::SetRole { g, .. }
            | GroupOpKind::Mute { g, .. }
            | GroupOpKind::Transfer { g, .. }
            | GroupOpKind::Dissolve { g }
            | GroupOpKind::OperatorDissolve { g }
            | GroupOpKind::SetNotify { g, .. } => out.push(*g),
        },
        Write::System(batch) => out.extend(batch.users.iter().filter_map(|&u| ConvId::system(u))),
    }
}

/// The answer to a write whose conversation another node holds now: resend (same
/// `client_msg_id`) after the usual pause; the owner, or this node once it holds it, takes it.
fn moved() -> Refusal {
    Refusal {
        code: ErrorCode::Unavailable,
        message: "the conversation moved to another node; retry".into(),
        retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
    }
}

impl Writer {
    /// Holds conversation ownership from now on (cluster mode), as node `node`.
    pub(crate) fn with_ownership(mut self, node: u64, owners: Arc<dyn OwnerStore>) -> Self {
        self.ownership = Some(Ownership::new(node, owners));
        self
    }

    /// Cluster mode, before a group is applied: claims the conversations of `batch` this node
    /// does not hold yet and fences them all in the group. Returns, per operation, a refusal
    /// for those that must not be applied (another node won the claim, or the store is away);
    /// empty when ownership is off.
    pub(super) fn fence_group(&mut self, batch: &[WriteOp]) -> Vec<Option<Refusal>> {
        let Some(own) = self.ownership.as_mut() else {
            return Vec::new();
        };
        if own.epochs.len() > EPOCHS_MAX {
            own.epochs.clear();
        }
        own.in_group.clear();
        // A group that came to nothing is not committed, nor cleared: its fences linger.
        self.group.fences.clear();
        let mut refusals = Vec::with_capacity(batch.len());
        let mut stale = false;
        for op in batch {
            let mut convs = std::mem::take(&mut own.convs);
            convs.clear();
            convs_of(&op.write, &mut convs);
            let mut refusal = None;
            for &conv in &convs {
                match own.claim(conv) {
                    Ok(Claimed::Held { epoch, taken }) => {
                        stale |= taken;
                        if own.in_group.insert(conv) {
                            self.group.fences.push((conv, epoch));
                        }
                    }
                    Ok(Claimed::Lost) => refusal = Some(moved()),
                    Err(err) => refusal = Some(Refusal::from(err)),
                }
                if refusal.is_some() {
                    break;
                }
            }
            own.convs = convs;
            refusals.push(refusal);
        }
        if stale {
            self.forget_cached();
        }
        refusals
    }

    /// A group was refused as fenced on `conv`: another node holds it now.
    pub(super) fn lost(&mut self, conv: u64) {
        if let (Some(own), Some(conv)) = (self.ownership.as_mut(), ConvId::from_wire(conv)) {
            own.epochs.remove(&conv);
        }
        metrics::counter!("ringchat_cluster_fenced_groups_total").increment(1);
        tracing::info!(
            conv,
            "cluster: a commit group was fenced (another node owns the conversation now)"
        );
    }

    /// Drops every cache of committed state; each is read again from the store when needed.
    /// Only between groups (no overlay is pending).
    fn forget_cached(&mut self) {
        debug_assert!(self.pending_convs.is_empty() && self.pending_cursors.is_empty());
        self.convs.clear();
        self.cursors.clear();
        self.contacts.discard();
        self.groups.discard();
    }
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;
