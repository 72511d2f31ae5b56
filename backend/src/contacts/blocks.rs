//! Blocks and the DM policy as the sequencer applies them (the same shape as `ops.rs`).
//!
//! Blocking removes what stood between the two users, and the blocked user is told only what an
//! ordinary action would have told them: a friendship ends as a delete, the blocker's request as
//! a cancel, the blocked user's request as a rejection (docs/PROTOCOL.md).

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, FriendEventKind, FriendState};

use super::ops::{Event, Plan, block_ok};
use super::sequencer::{PairView, Relations};
use crate::accounts::Refusal;
use crate::store::{DmPolicy, RelationKey, RelationKind, RelationRecord, UserId};

impl Relations {
    pub(super) fn block(&mut self, me: UserId, other: UserId, now: u64) -> Result<Plan, Refusal> {
        let view = self.view(me, other)?;
        if view.i_block {
            return Ok(Plan::reply(block_ok(other, true)));
        }
        let mut mine = self.summary(me)?;
        if mine.blocks >= self.limits.blocks_max {
            return Err(Refusal::new(
                ErrorCode::TooManyBlocks,
                format!("at most {} blocked users", self.limits.blocks_max),
            ));
        }
        let mut theirs = self.summary(other)?;
        mine.blocks += 1;
        let mut plan = Plan::reply(block_ok(other, true));
        let since = RelationRecord {
            since_ms: now,
            message: String::new(),
        };
        plan.relations.push((
            RelationKey::new(me, RelationKind::Block, other),
            Some(since),
        ));
        let PairView {
            friends,
            sent,
            received,
            ..
        } = view;
        // What the blocked user is told: what an ordinary action would have told them.
        let tell_other = |kind| Event {
            to: other,
            about: me,
            about_took_part: true,
            kind,
            state: FriendState::None,
            message: String::new(),
        };
        if friends.is_some() {
            mine.friends = mine.friends.saturating_sub(1);
            theirs.friends = theirs.friends.saturating_sub(1);
            plan.both_ways(me, RelationKind::Friend, other, RelationKind::Friend, None);
            plan.events.push(tell_other(FriendEventKind::Deleted));
        }
        if sent.is_some() {
            mine.requests_out = mine.requests_out.saturating_sub(1);
            theirs.requests_in = theirs.requests_in.saturating_sub(1);
            plan.both_ways(
                me,
                RelationKind::RequestOut,
                other,
                RelationKind::RequestIn,
                None,
            );
            plan.events.push(tell_other(FriendEventKind::Cancelled));
        }
        if received.is_some() {
            mine.requests_in = mine.requests_in.saturating_sub(1);
            theirs.requests_out = theirs.requests_out.saturating_sub(1);
            plan.both_ways(
                other,
                RelationKind::RequestOut,
                me,
                RelationKind::RequestIn,
                None,
            );
            plan.events.push(tell_other(FriendEventKind::Rejected));
        }
        plan.summaries = vec![(me, mine), (other, theirs)];
        plan.events.push(Event {
            to: me,
            about: other,
            about_took_part: friends.is_some() || received.is_some(),
            kind: FriendEventKind::Blocked,
            state: FriendState::None,
            message: String::new(),
        });
        Ok(plan)
    }

    pub(super) fn unblock(&mut self, me: UserId, other: UserId) -> Result<Plan, Refusal> {
        let key = RelationKey::new(me, RelationKind::Block, other);
        if self.relation(key)?.is_none() {
            return Ok(Plan::reply(block_ok(other, false)));
        }
        let mut mine = self.summary(me)?;
        mine.blocks = mine.blocks.saturating_sub(1);
        let mut plan = Plan::reply(block_ok(other, false));
        plan.relations.push((key, None));
        plan.summaries = vec![(me, mine)];
        plan.events.push(Event {
            to: me,
            about: other,
            about_took_part: false,
            kind: FriendEventKind::Unblocked,
            state: FriendState::None,
            message: String::new(),
        });
        Ok(plan)
    }

    pub(super) fn set_privacy(
        &mut self,
        me: UserId,
        policy: Option<DmPolicy>,
    ) -> Result<Plan, Refusal> {
        let mut mine = self.summary(me)?;
        let default = self.limits.dm_policy_default;
        let effective = policy.unwrap_or(default);
        let mut plan = Plan::reply(Body::Privacy(v1::Privacy {
            dm_policy: super::wire_policy(effective) as i32,
        }));
        if mine.dm_policy != policy {
            let before = mine.dm_policy.unwrap_or(default);
            mine.dm_policy = policy;
            plan.summaries = vec![(me, mine)];
            if before != effective {
                self.policy_changed(me, effective);
            }
        }
        Ok(plan)
    }
}
