//! Cluster mode: the sequencer writes a conversation only while it holds the conversation's
//! epoch (`store/owners.rs`). Before a group is applied, every conversation its writes touch is
//! claimed (once: the epoch is remembered) and fenced in the group; a group the store refuses
//! as `Fenced` wrote nothing, and every conversation it names is forgotten at once (`lost`).
//! Off (one box), none of this runs: `Writer::ownership` is `None` and the group is built as
//! before.
//!
//! Why the caches are dropped when a conversation is taken from another node: that node may
//! have appended since this one last cached the conversation's head, cursor rows, relations or
//! group; a seq handed out from a stale head would be handed out twice. The whole cache goes
//! (between groups, where nothing loaded is referenced): a rare event, and one place.

use super::ids::IdBlocks;
use super::*;
use crate::groups::GroupOpKind;
use crate::store::{Claim, IdKind, OwnerRecord, OwnerStore, StaleFence, refuse_stale_fences};

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
    /// The id blocks this node hands out from (`ids.rs`).
    pub(super) ids: IdBlocks,
    /// An id could not be leased while the group was applied: the group is not committed.
    pub(super) ids_failed: Option<StoreError>,
    /// Says whether a conversation not held may be claimed now (`Link::may_claim`); unset
    /// (tests of the sequencer alone): always.
    gate: Option<Arc<crate::cluster::link::Link>>,
}

impl Ownership {
    pub(crate) fn new(
        node: u64,
        owners: Arc<dyn OwnerStore>,
        id_block_size: u64,
    ) -> std::io::Result<Self> {
        Ok(Self {
            node,
            ids: IdBlocks::new(Arc::clone(&owners), id_block_size)?,
            owners,
            epochs: Map::default(),
            in_group: Set::default(),
            ids_failed: None,
            gate: None,
        })
    }

    /// The epoch this node holds `conv` at, if it does.
    #[cfg(test)]
    pub(crate) fn epoch(&self, conv: ConvId) -> Option<u64> {
        self.epochs.get(&conv).copied()
    }
}

/// What claiming the conversations of a group did.
#[derive(Default)]
struct Claimed {
    /// Another node claimed these first.
    lost: Set<ConvId>,
    /// The claims failed (the store is away): every unheld conversation is refused so.
    failed: Option<Refusal>,
    /// Another node held one of them before (caches are stale).
    taken: bool,
}

impl Ownership {
    /// Claims `convs` (distinct, none held) in one round trip, after one read of their owners;
    /// `fresh` (new groups' ids, never claimed) need no read.
    fn claim_all(&mut self, convs: &[ConvId], fresh: &[ConvId]) -> Claimed {
        let mut out = Claimed::default();
        if let Some(Err(refusal)) = self.gate.as_ref().map(|link| link.may_claim()) {
            out.failed = Some(refusal);
            return out;
        }
        let read: Vec<ConvId> = convs
            .iter()
            .filter(|c| !fresh.contains(c))
            .copied()
            .collect();
        let seen = match self.owners.owners(&read) {
            Ok(seen) => seen,
            Err(err) => {
                out.failed = Some(Refusal::from(err));
                return out;
            }
        };
        let seen: Map<ConvId, OwnerRecord> = read
            .iter()
            .zip(seen)
            .filter_map(|(c, o)| Some((*c, o?)))
            .collect();
        let claims: Vec<(ConvId, u64)> = convs
            .iter()
            .map(|c| (*c, seen.get(c).map_or(0, |o| o.epoch)))
            .collect();
        let answers = match self.owners.claim_many(self.node, &claims) {
            Ok(answers) => answers,
            Err(err) => {
                out.failed = Some(Refusal::from(err));
                return out;
            }
        };
        metrics::counter!("ringchat_cluster_claim_round_trips_total").increment(1);
        for (&(conv, _), answer) in claims.iter().zip(answers) {
            match answer {
                Claim::Won(epoch) => {
                    self.epochs.insert(conv, epoch);
                    metrics::counter!("ringchat_cluster_claims_total").increment(1);
                    out.taken |= seen.get(&conv).is_some_and(|o| o.node != self.node);
                }
                Claim::Lost(_) => {
                    out.lost.insert(conv);
                }
            }
        }
        out
    }
}

/// Message ids a write takes, about (to hold them before the group is applied: a guess
/// too low only means a lease while applying).
fn ids_of(write: &Write) -> usize {
    match write {
        Write::System(batch) => batch.users.len(),
        Write::Cursor(_) | Write::Contact(_) => 0,
        _ => 1,
    }
}

fn creates_group(write: &Write) -> bool {
    matches!(write, Write::Group(op) if matches!(op.kind, GroupOpKind::Create { .. }))
}

/// The conversations a write touches (see ARCHITECTURE.md, "Cluster: who writes what").
/// Group creation (its id is not known yet) and the DM-policy setting (a user's row) touch none.
pub(crate) fn convs_of(write: &Write, out: &mut impl Extend<ConvId>) {
    match write {
        Write::Send(m) => out.extend(ConvId::direct(m.from, m.to)),
        Write::Cursor(c) => out.extend([c.conv]),
        Write::Recall { conv, .. } => out.extend([*conv]),
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
        Write::GroupSend(m) => out.extend([m.g]),
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
            | GroupOpKind::SetNotify { g, .. } => out.extend([*g]),
        },
        Write::System(batch) => out.extend(batch.users.iter().filter_map(|&u| ConvId::system(u))),
    }
}

/// The first conversation a write touches (`convs_of`), found without a list: what decides
/// where a forwarded write goes, once per write on the cluster's message path.
pub(crate) fn first_conv_of(write: &Write) -> Option<ConvId> {
    struct First(Option<ConvId>);
    impl Extend<ConvId> for First {
        fn extend<I: IntoIterator<Item = ConvId>>(&mut self, iter: I) {
            if self.0.is_none() {
                self.0 = iter.into_iter().next();
            }
        }
    }
    let mut first = First(None);
    convs_of(write, &mut first);
    first.0
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
    /// Holds conversation ownership from now on (cluster mode), as node `node`, handing out
    /// ids from blocks of `id_block_size`.
    pub(crate) fn with_ownership(
        mut self,
        node: u64,
        owners: Arc<dyn OwnerStore>,
        id_block_size: u64,
    ) -> std::io::Result<Self> {
        self.ownership = Some(Ownership::new(node, owners, id_block_size)?);
        Ok(self)
    }

    /// Claims only what `link` allows (`Link::may_claim`): a node cut off from Redis for
    /// about `node_ttl_ms` takes no conversation over, held ones are still written.
    pub(crate) fn set_claim_gate(&mut self, link: Arc<crate::cluster::link::Link>) {
        if let Some(own) = self.ownership.as_mut() {
            own.gate = Some(link);
        }
    }

    /// Cluster mode, before a group is applied: holds the ids it will take, claims the
    /// conversations of `batch` this node does not hold yet (one round trip for them all),
    /// new groups' included, and fences them all in the group. Returns, per operation, a
    /// refusal for those that must not be applied (another node won the claim, or the store
    /// is away); empty when ownership is off.
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
        own.ids_failed = None;
        let ids: usize = batch.iter().map(|op| ids_of(&op.write)).sum();
        if let Err(err) = own.ids.ensure(IdKind::Message, ids as u64) {
            // Taking an id leases again, and refuses the group if that fails too.
            tracing::warn!(%err, "cluster: leasing message ids failed");
        }
        // A new group's conversation is claimed before its first commit like any other.
        let creates = batch.iter().filter(|op| creates_group(&op.write)).count();
        let fresh: Result<Vec<ConvId>, Refusal> = match creates {
            0 => Ok(Vec::new()),
            n => own
                .ids
                .peek(IdKind::Group, n)
                .map(|ids| ids.into_iter().filter_map(ConvId::group).collect())
                .map_err(Refusal::from),
        };
        let mut all = Vec::new();
        let mut per_op = Vec::with_capacity(batch.len());
        for op in batch {
            let start = all.len();
            convs_of(&op.write, &mut all);
            per_op.push(start..all.len());
        }
        let mut unheld: Vec<ConvId> = all
            .iter()
            .chain(fresh.iter().flatten())
            .filter(|c| !own.epochs.contains_key(*c))
            .copied()
            .collect();
        // One order for every node: two claim batches never wait on each other's locks.
        unheld.sort_unstable();
        unheld.dedup();
        let claimed = if unheld.is_empty() {
            Claimed::default()
        } else {
            own.claim_all(&unheld, fresh.as_deref().unwrap_or_default())
        };
        let refusal_of = |own: &Ownership, conv: &ConvId| -> Option<Refusal> {
            if own.epochs.contains_key(conv) {
                None
            } else if claimed.lost.contains(conv) {
                Some(moved())
            } else {
                Some(claimed.failed.clone().unwrap_or_else(moved))
            }
        };
        let fresh_refused = match &fresh {
            Ok(convs) => convs.iter().find_map(|c| refusal_of(own, c)),
            Err(refusal) => Some(refusal.clone()),
        };
        if fresh_refused.is_some() && !claimed.lost.is_empty() {
            // A new group's id another node holds: never hand it out.
            own.ids.skip(IdKind::Group, creates);
        }
        let mut refusals = Vec::with_capacity(batch.len());
        for (op, range) in batch.iter().zip(per_op) {
            let convs = &all[range];
            let creates = creates_group(&op.write);
            let mut refusal = convs.iter().find_map(|c| refusal_of(own, c));
            if refusal.is_none() && creates {
                refusal.clone_from(&fresh_refused);
            }
            if refusal.is_none() {
                let new: &[ConvId] = match &fresh {
                    Ok(convs) if creates => convs,
                    _ => &[],
                };
                for &conv in convs.iter().chain(new) {
                    if own.in_group.insert(conv) {
                        self.group.fences.push((conv, own.epochs[&conv]));
                    }
                }
            }
            refusals.push(refusal);
        }
        if claimed.taken {
            self.forget_cached();
        }
        refusals
    }

    /// Cluster mode, a group that writes nothing (a cursor that does not move, a resend, a
    /// repeated recall): the fences its append would have checked, read in one round trip, so
    /// that a node another one took a conversation from does not answer from its stale caches
    /// (a read cursor going backwards). `Fenced` as the append says it (the same rule,
    /// `refuse_stale_fences`); `Ok` on one box.
    pub(super) fn fences_held(&self) -> Result<(), StoreError> {
        let fences = &self.group.fences;
        let Some(own) = self.ownership.as_ref().filter(|_| !fences.is_empty()) else {
            return Ok(());
        };
        let convs: Vec<ConvId> = fences.iter().map(|(conv, _)| *conv).collect();
        let mut stored = own.owners.owners(&convs)?.into_iter();
        refuse_stale_fences(fences, |_| {
            Ok(stored.next().flatten().map_or(0, |o| o.epoch))
        })
    }

    /// A group was refused as fenced on `stale` (every stale fence of it): another node holds
    /// those conversations now. All are forgotten at once, so the next group claims them
    /// again instead of being refused once for each.
    pub(super) fn lost(&mut self, stale: &[StaleFence]) {
        if let Some(own) = self.ownership.as_mut() {
            for conv in stale.iter().filter_map(|s| ConvId::from_wire(s.conv)) {
                own.epochs.remove(&conv);
            }
        }
        metrics::counter!("ringchat_cluster_fenced_groups_total").increment(1);
        tracing::info!(
            convs = stale.len(),
            first = stale.first().map(|s| s.conv),
            "cluster: a commit group was fenced (another node owns its conversations now)"
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
pub(super) mod tests;
