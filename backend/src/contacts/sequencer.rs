//! The contacts state the sequencer owns: what it checks a send against, and the overlay of
//! relation changes of the group being built.
//!
//! Relations (friendship, requests, blocks) and contact summaries (counts, the DM policy) are
//! written only by the sequencer, in its commit groups, so a block and a send are ordered by one
//! thread: a send applied after a block in the sequencer's order is refused, and the block's
//! answer leaves only once its group is durable. There is no window in which an acknowledged
//! block lets a later send through.
//!
//! The per-send cost is one hash lookup in the common case: [`Relations::cached_send_check`]
//! finds the pair's entry (both blocks, friendship and both users' DM policies, as bits) by the
//! direct conversation id the send has already computed. It replaces the known-users lookup a
//! send made before, so a send to a cached pair costs no more lookups than it did. A DM-policy
//! change bumps a generation; an entry of an older generation re-reads the two policies from a
//! per-user map (two more lookups, once per entry and change) instead of the whole cache being
//! walked or dropped.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use ringchat_proto::v1::ErrorCode;

use super::config::ContactLimits;
use crate::accounts::Refusal;
use crate::store::{
    AccountStore, ContactStore, ContactSummary, ContactWrites, ConvId, DmPolicy, RelationKey,
    RelationKind, RelationRecord, StoreError, SummaryWrite, UserId,
};

/// Cached pairs and per-user policies, each at most; past it the cache starts over (the store
/// has everything, the cache only saves reads).
const ENTRIES_MAX: usize = 1 << 20;

type Map<K, V> = HashMap<K, V, RandomState>;

/// What is known of a pair, as bits; "low" is the lower user id of the pair.
#[derive(Debug, Clone, Copy)]
struct PairEntry {
    bits: u8,
    /// The policy generation the policy bits were read at.
    generation: u64,
}

const LOW_BLOCKS_HIGH: u8 = 1;
const HIGH_BLOCKS_LOW: u8 = 1 << 1;
const FRIENDS: u8 = 1 << 2;
const LOW_FRIENDS_ONLY: u8 = 1 << 3;
const HIGH_FRIENDS_ONLY: u8 = 1 << 4;
const POLICY_BITS: u8 = LOW_FRIENDS_ONLY | HIGH_FRIENDS_ONLY;

/// What a send from one user to another may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendCheck {
    Allowed,
    /// The recipient takes new conversations from friends only: allowed into a conversation
    /// that already has messages.
    OnlyIntoExisting,
    Refused(Refusal),
}

impl SendCheck {
    /// The refusal of a send under this check, if any: `has_messages` says whether the
    /// conversation has a message yet, and is asked only when the DM policy makes it matter.
    /// The one place the "who may start a direct conversation" rule is decided (a send, and a
    /// typing notice that must not reach whom a send could not).
    pub(crate) fn refusal<E>(
        self,
        has_messages: impl FnOnce() -> Result<bool, E>,
    ) -> Result<Option<Refusal>, E> {
        Ok(match self {
            SendCheck::Allowed => None,
            SendCheck::Refused(refusal) => Some(refusal),
            SendCheck::OnlyIntoExisting => (!has_messages()?).then(|| not_allowed(false)),
        })
    }
}

/// The check of a send from `from` into the direct conversation `conv`, read from committed
/// state (not the sequencer's cache): for a typing notice, which is not ordered with the
/// sequencer's writes anyway. One batched read of the pair's relations and one of the
/// recipient's summary; `dm_policy_default` is `contacts.dm_policy_default`.
pub(crate) fn committed_send_check(
    store: &dyn ContactStore,
    conv: ConvId,
    from: UserId,
    dm_policy_default: DmPolicy,
) -> Result<SendCheck, StoreError> {
    let members = conv.implied_members().expect("a direct conversation");
    let [low, high] = [members.all()[0], members.all()[1]];
    let found = store.relations_at(&[
        RelationKey::new(low, RelationKind::Block, high),
        RelationKey::new(high, RelationKind::Block, low),
        RelationKey::new(low, RelationKind::Friend, high),
    ])?;
    let to = if low == from { high } else { low };
    let to_policy = store
        .contact_summary(to)?
        .and_then(|s| s.dm_policy)
        .unwrap_or(dm_policy_default);
    // The sender's own policy does not bear on its send: taken as the default.
    let (low_policy, high_policy) = if to == high {
        (DmPolicy::Everyone, to_policy)
    } else {
        (to_policy, DmPolicy::Everyone)
    };
    let bits = bits_of(
        [found[0].is_some(), found[1].is_some(), found[2].is_some()],
        low_policy,
        high_policy,
    );
    Ok(send_check(conv, bits, from))
}

/// A pair's bits: [low blocks high, high blocks low, friends], and the two users' policies.
fn bits_of(relations: [bool; 3], low_policy: DmPolicy, high_policy: DmPolicy) -> u8 {
    let [low_blocks, high_blocks, friends] = relations;
    let mut bits = 0;
    for (set, bit) in [
        (low_blocks, LOW_BLOCKS_HIGH),
        (high_blocks, HIGH_BLOCKS_LOW),
        (friends, FRIENDS),
        (low_policy == DmPolicy::FriendsOnly, LOW_FRIENDS_ONLY),
        (high_policy == DmPolicy::FriendsOnly, HIGH_FRIENDS_ONLY),
    ] {
        if set {
            bits |= bit;
        }
    }
    bits
}

/// The refusal of a send or request between users where a block or the DM policy stands in the
/// way: one code, so that the refused user cannot tell which (docs/PROTOCOL.md).
pub(crate) fn not_allowed(you_blocked: bool) -> Refusal {
    if you_blocked {
        Refusal::new(
            ErrorCode::NotAllowed,
            "you blocked this user; unblock first",
        )
    } else {
        Refusal::new(
            ErrorCode::NotAllowed,
            "this user does not accept this from you",
        )
    }
}

/// A pair's relations as one of its users sees them, read through the group's overlay.
#[derive(Debug, Clone, Default)]
pub(crate) struct PairView {
    pub friends: Option<RelationRecord>,
    /// `me` asked `other`.
    pub sent: Option<RelationRecord>,
    /// `other` asked `me`.
    pub received: Option<RelationRecord>,
    pub i_block: bool,
    pub they_block: bool,
}

pub(crate) struct Relations {
    pub(super) store: Arc<dyn ContactStore>,
    pub(super) accounts: Arc<dyn AccountStore>,
    pub(super) limits: ContactLimits,
    /// Committed state, and what this group has applied so far (cleared if the group fails).
    pairs: Map<ConvId, PairEntry>,
    /// Effective DM policy per user.
    policies: Map<UserId, DmPolicy>,
    policy_generation: u64,
    /// The group being built.
    pending_relations: Map<RelationKey, Option<RelationRecord>>,
    /// Every summary the group read, with what it made of it (`base` = `new` if nothing).
    pending_summaries: Map<UserId, SummaryWrite>,
    /// (requester, rejecter) → until when (ms) the requester may not ask again. In memory
    /// (a restart forgets it: a pause, not a rule), at most [`REJECTIONS_MAX`] entries.
    rejections: Map<(UserId, UserId), u64>,
}

/// Rejections remembered at once; when full, the expired go, and if none has, all of them
/// (rejections are made by targets, not by the senders they slow down).
const REJECTIONS_MAX: usize = 65_536;

impl Relations {
    pub(crate) fn new(
        store: Arc<dyn ContactStore>,
        accounts: Arc<dyn AccountStore>,
        limits: ContactLimits,
    ) -> Self {
        Self {
            store,
            accounts,
            limits,
            pairs: Map::default(),
            policies: Map::default(),
            policy_generation: 0,
            pending_relations: Map::default(),
            pending_summaries: Map::default(),
            rejections: Map::default(),
        }
    }

    /// `rejecter` turned down `requester`'s request at `now`.
    pub(super) fn remember_rejection(&mut self, requester: UserId, rejecter: UserId, now: u64) {
        let pause = self.limits.request_after_reject_ms;
        if pause == 0 {
            return;
        }
        if self.rejections.len() >= REJECTIONS_MAX {
            self.rejections.retain(|_, until| *until > now);
            if self.rejections.len() >= REJECTIONS_MAX {
                self.rejections.clear();
            }
        }
        self.rejections
            .insert((requester, rejecter), now.saturating_add(pause));
    }

    /// How long (ms) `requester` must still wait to ask `rejecter` again, if at all.
    pub(super) fn rejected_for(
        &self,
        requester: UserId,
        rejecter: UserId,
        now: u64,
    ) -> Option<u64> {
        let until = *self.rejections.get(&(requester, rejecter))?;
        (until > now).then(|| until - now)
    }

    /// The hot path: a send's check from the cache, or `None` if the pair must be loaded
    /// ([`Self::load_send_check`]) after the caller made sure the recipient exists.
    #[inline]
    pub(crate) fn cached_send_check(&self, conv: ConvId, from: UserId) -> Option<SendCheck> {
        let entry = self.pairs.get(&conv)?;
        (entry.generation == self.policy_generation).then(|| send_check(conv, entry.bits, from))
    }

    /// [`Self::load_send_check`] with both users' DM policies read again from the store. A
    /// cluster node's policy cache is not told of a change made on another node (the setting
    /// is a user's, written by whichever node took it): a send that opens a conversation, the
    /// only one a policy can refuse, takes this path there (a rare event: two reads).
    pub(crate) fn fresh_send_check(
        &mut self,
        conv: ConvId,
        from: UserId,
    ) -> Result<SendCheck, StoreError> {
        for user in conv.implied_members().expect("a direct conversation").all() {
            self.policies.remove(user);
        }
        self.load_send_check(conv, from)
    }

    /// Loads (or refreshes) the pair's entry through the overlay and checks the send.
    pub(crate) fn load_send_check(
        &mut self,
        conv: ConvId,
        from: UserId,
    ) -> Result<SendCheck, StoreError> {
        let bits = self.pair_bits(conv)?;
        Ok(send_check(conv, bits, from))
    }

    /// Whether `adder` may put `target` in a group: never across a block, and when the target
    /// did not ask to join (`target_asked` false: a create or an invite), only a friend may
    /// add a user whose DM policy is friends-only. `fresh`: the pair's blocks and friendship
    /// and the target's policy are read from the store, not the cache (a cluster node: a block
    /// or unfriend is written by the node owning the pair's direct conversation, and the group's
    /// node is not told; see [`Self::fresh_send_check`]).
    pub(crate) fn may_add_to_group(
        &mut self,
        adder: UserId,
        target: UserId,
        target_asked: bool,
        fresh: bool,
    ) -> Result<(), Refusal> {
        let Some(conv) = ConvId::direct(adder, target) else {
            return Ok(());
        };
        if fresh {
            self.pairs.remove(&conv);
            if !target_asked {
                self.policies.remove(&target);
            }
        }
        let bits = self.pair_bits(conv)?;
        let (adder_blocks, target_blocks) = blocks_from(conv, bits, adder);
        if adder_blocks || target_blocks {
            return Err(not_allowed(adder_blocks));
        }
        if !target_asked && matches!(send_check(conv, bits, adder), SendCheck::OnlyIntoExisting) {
            return Err(Refusal::new(
                ErrorCode::NotAllowed,
                "this user is added to groups by friends only",
            ));
        }
        Ok(())
    }

    /// Whether `blocker` blocks `user`, from the cache (loaded on a miss).
    pub(crate) fn blocks(&mut self, blocker: UserId, user: UserId) -> Result<bool, StoreError> {
        let Some(conv) = ConvId::direct(blocker, user) else {
            return Ok(false);
        };
        let bits = self.relation_bits(conv)?;
        Ok(blocks_from(conv, bits, blocker).0)
    }

    /// Whether either user of a direct conversation blocks the other, from the cache.
    pub(crate) fn blocked_either_way(&mut self, conv: ConvId) -> Result<bool, StoreError> {
        Ok(self.relation_bits(conv)? & (LOW_BLOCKS_HIGH | HIGH_BLOCKS_LOW) != 0)
    }

    /// The pair's block and friendship bits: a cached entry's as they are (they do not age
    /// with the policies' generation; a cursor move checks them on the hot path, so a hit
    /// costs one lookup), else loaded with the policies.
    fn relation_bits(&mut self, conv: ConvId) -> Result<u8, StoreError> {
        match self.pairs.get(&conv) {
            Some(entry) => Ok(entry.bits & !POLICY_BITS),
            None => self.pair_bits(conv),
        }
    }

    fn pair_bits(&mut self, conv: ConvId) -> Result<u8, StoreError> {
        let members = conv.implied_members().expect("a direct conversation");
        let [low, high] = [members.all()[0], members.all()[1]];
        let relations = match self.pairs.get(&conv) {
            Some(entry) => [
                entry.bits & LOW_BLOCKS_HIGH != 0,
                entry.bits & HIGH_BLOCKS_LOW != 0,
                entry.bits & FRIENDS != 0,
            ],
            None => [
                self.relation(RelationKey::new(low, RelationKind::Block, high))?
                    .is_some(),
                self.relation(RelationKey::new(high, RelationKind::Block, low))?
                    .is_some(),
                self.relation(RelationKey::new(low, RelationKind::Friend, high))?
                    .is_some(),
            ],
        };
        let bits = bits_of(relations, self.policy(low)?, self.policy(high)?);
        if self.pairs.len() >= ENTRIES_MAX {
            self.pairs.clear();
        }
        self.pairs.insert(
            conv,
            PairEntry {
                bits,
                generation: self.policy_generation,
            },
        );
        Ok(bits)
    }

    fn policy(&mut self, user: UserId) -> Result<DmPolicy, StoreError> {
        if let Some(p) = self.policies.get(&user) {
            return Ok(*p);
        }
        let policy = self
            .summary(user)?
            .dm_policy
            .unwrap_or(self.limits.dm_policy_default);
        if self.policies.len() >= ENTRIES_MAX {
            self.policies.clear();
            // Entries of the old generation re-read their users' policies.
            self.policy_generation += 1;
        }
        self.policies.insert(user, policy);
        Ok(policy)
    }

    // ---- reads through the overlay ----------------------------------------------------------

    pub(super) fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError> {
        match self.pending_relations.get(&key) {
            Some(pending) => Ok(pending.clone()),
            None => self.store.relation(key),
        }
    }

    /// The user's summary through the overlay; the first read in a group is its change's base.
    pub(super) fn summary(&mut self, user: UserId) -> Result<ContactSummary, StoreError> {
        if let Some(w) = self.pending_summaries.get(&user) {
            return Ok(w.new);
        }
        let base = self.store.contact_summary(user)?.unwrap_or_default();
        self.pending_summaries.insert(
            user,
            SummaryWrite {
                user,
                base: Some(base),
                new: base,
            },
        );
        Ok(base)
    }

    pub(super) fn view(&self, me: UserId, other: UserId) -> Result<PairView, StoreError> {
        let get = |owner, kind, other| self.relation(RelationKey::new(owner, kind, other));
        Ok(PairView {
            friends: get(me, RelationKind::Friend, other)?,
            sent: get(me, RelationKind::RequestOut, other)?,
            received: get(me, RelationKind::RequestIn, other)?,
            i_block: get(me, RelationKind::Block, other)?.is_some(),
            they_block: get(other, RelationKind::Block, me)?.is_some(),
        })
    }

    // ---- writes to the overlay (infallible: every read came first) --------------------------

    pub(super) fn put(&mut self, key: RelationKey, record: Option<RelationRecord>) {
        self.pending_relations.insert(key, record);
        // The pair is read again, through the overlay, by its next send.
        if let Some(conv) = ConvId::direct(key.owner, key.other) {
            self.pairs.remove(&conv);
        }
    }

    pub(super) fn put_summary(&mut self, user: UserId, summary: ContactSummary) {
        let w = self
            .pending_summaries
            .get_mut(&user)
            .expect("a summary is read before it is changed");
        w.new = summary;
    }

    /// A user's effective DM policy changed: cached pairs re-read it (see the module's doc).
    pub(super) fn policy_changed(&mut self, user: UserId, policy: DmPolicy) {
        self.policies.insert(user, policy);
        self.policy_generation += 1;
    }

    /// Moves the group's overlay into its commit group.
    pub(crate) fn drain_into(&mut self, writes: &mut ContactWrites) {
        writes.relations.extend(self.pending_relations.drain());
        writes.summaries.extend(
            self.pending_summaries
                .drain()
                .map(|(_, w)| w)
                .filter(|w| w.base != Some(w.new)),
        );
    }

    /// The group failed: forget what it applied and what the caches may have learnt from it.
    pub(crate) fn discard(&mut self) {
        self.pending_relations.clear();
        self.pending_summaries.clear();
        self.pairs.clear();
        self.policies.clear();
        self.policy_generation += 1;
    }
}

/// Whether `from` is the pair's lower user id: bits only, from the direct id's layout.
fn from_is_low(conv: ConvId, from: UserId) -> bool {
    (conv.to_wire() >> 32) == from
}

/// Whether (`from` blocks the other, the other blocks `from`).
fn blocks_from(conv: ConvId, bits: u8, from: UserId) -> (bool, bool) {
    let low_blocks = bits & LOW_BLOCKS_HIGH != 0;
    let high_blocks = bits & HIGH_BLOCKS_LOW != 0;
    if from_is_low(conv, from) {
        (low_blocks, high_blocks)
    } else {
        (high_blocks, low_blocks)
    }
}

fn send_check(conv: ConvId, bits: u8, from: UserId) -> SendCheck {
    let (from_blocks, to_blocks) = blocks_from(conv, bits, from);
    if from_blocks || to_blocks {
        return SendCheck::Refused(not_allowed(from_blocks));
    }
    let to_friends_only = if from_is_low(conv, from) {
        bits & HIGH_FRIENDS_ONLY != 0
    } else {
        bits & LOW_FRIENDS_ONLY != 0
    };
    if to_friends_only && bits & FRIENDS == 0 {
        SendCheck::OnlyIntoExisting
    } else {
        SendCheck::Allowed
    }
}
