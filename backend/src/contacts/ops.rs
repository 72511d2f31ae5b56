//! The contacts writes as the sequencer applies them: friend requests and answers, deletes,
//! blocks and the DM policy. Each op reads what it needs (through the group's overlay), decides,
//! reads the profiles its events show, and only then changes the overlay: a refusal leaves
//! nothing behind.
//!
//! Blocks and the DM policy: `blocks.rs`.

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, FriendEventKind, FriendState};

use super::profiles::{bare_profile, base_profile};
use super::sequencer::{Relations, not_allowed};
use crate::accounts::Refusal;
use crate::store::{ContactSummary, DmPolicy, RelationKey, RelationKind, RelationRecord, UserId};

const DAY_MS: u64 = 86_400_000;

/// One contacts write, for the sequencer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContactOp {
    Request {
        user: UserId,
        other: UserId,
        message: String,
    },
    Respond {
        user: UserId,
        other: UserId,
        accept: bool,
    },
    Cancel {
        user: UserId,
        other: UserId,
    },
    Delete {
        user: UserId,
        other: UserId,
    },
    Block {
        user: UserId,
        other: UserId,
    },
    Unblock {
        user: UserId,
        other: UserId,
    },
    SetPrivacy {
        user: UserId,
        policy: Option<DmPolicy>,
    },
}

impl ContactOp {
    /// The other user, who must exist (answers and removals find their records instead).
    pub(crate) fn must_exist(&self) -> Option<UserId> {
        match self {
            Self::Request { other, .. } | Self::Block { other, .. } => Some(*other),
            _ => None,
        }
    }
}

/// An applied op: the reply, and the `FriendEvent`s for each user's sessions (all but the one
/// that acted).
#[derive(Debug)]
pub(crate) struct ContactDone {
    pub reply: Body,
    pub events: Vec<(UserId, Body)>,
}

/// An event for `to` about `about`.
pub(super) struct Event {
    pub to: UserId,
    pub about: UserId,
    /// `about` acted toward `to` or had a relation with them, so `to` sees `about`'s profile
    /// even when it is not searchable (otherwise: the id alone, `bare_profile`).
    pub about_took_part: bool,
    pub kind: FriendEventKind,
    pub state: FriendState,
    pub message: String,
}

/// What an op changes, decided before anything is changed.
pub(super) struct Plan {
    pub reply: Body,
    pub relations: Vec<(RelationKey, Option<RelationRecord>)>,
    pub summaries: Vec<(UserId, ContactSummary)>,
    pub events: Vec<Event>,
}

impl Plan {
    pub(super) fn reply(reply: Body) -> Self {
        Self {
            reply,
            relations: Vec::new(),
            summaries: Vec::new(),
            events: Vec::new(),
        }
    }

    pub(super) fn both_ways(
        &mut self,
        a: UserId,
        kind_a: RelationKind,
        b: UserId,
        kind_b: RelationKind,
        record: Option<RelationRecord>,
    ) {
        self.relations
            .push((RelationKey::new(a, kind_a, b), record.clone()));
        self.relations
            .push((RelationKey::new(b, kind_b, a), record));
    }

    /// The same kind of event to both users, each about the other.
    fn tell_both(
        &mut self,
        me: UserId,
        other: UserId,
        kind: FriendEventKind,
        mine: FriendState,
        theirs: FriendState,
        message: &str,
    ) {
        self.events.push(Event {
            to: other,
            about: me,
            about_took_part: true,
            kind,
            state: theirs,
            message: message.to_owned(),
        });
        // The other took part unless this user's own request is what the event is about.
        let other_took_part =
            !matches!(kind, FriendEventKind::Request | FriendEventKind::Cancelled);
        self.events.push(Event {
            to: me,
            about: other,
            about_took_part: other_took_part,
            kind,
            state: mine,
            message: message.to_owned(),
        });
    }
}

fn friend_ok(other: UserId, state: FriendState) -> Body {
    Body::FriendOk(v1::FriendOk {
        user_id: other,
        state: state as i32,
    })
}

pub(super) fn block_ok(other: UserId, blocked: bool) -> Body {
    Body::BlockOk(v1::BlockOk {
        user_id: other,
        blocked,
    })
}

impl Relations {
    pub(crate) fn apply(&mut self, op: ContactOp, now_ms: u64) -> Result<ContactDone, Refusal> {
        let plan = match op {
            ContactOp::Request {
                user,
                other,
                message,
            } => self.request(user, other, message, now_ms)?,
            ContactOp::Respond {
                user,
                other,
                accept,
            } => self.respond(user, other, accept, now_ms)?,
            ContactOp::Cancel { user, other } => self.cancel(user, other)?,
            ContactOp::Delete { user, other } => self.delete(user, other)?,
            ContactOp::Block { user, other } => self.block(user, other, now_ms)?,
            ContactOp::Unblock { user, other } => self.unblock(user, other)?,
            ContactOp::SetPrivacy { user, policy } => self.set_privacy(user, policy)?,
        };
        self.carry_out(plan, now_ms)
    }

    fn request(
        &mut self,
        me: UserId,
        other: UserId,
        message: String,
        now: u64,
    ) -> Result<Plan, Refusal> {
        let view = self.view(me, other)?;
        if view.i_block || view.they_block {
            return Err(not_allowed(view.i_block));
        }
        if view.friends.is_some() {
            return Ok(Plan::reply(friend_ok(other, FriendState::Friends)));
        }
        if view.sent.is_some() {
            // Asked already: the same answer, and the other user is not told twice.
            return Ok(Plan::reply(friend_ok(other, FriendState::RequestSent)));
        }
        let mut mine = self.summary(me)?;
        let mut theirs = self.summary(other)?;
        if view.received.is_some() {
            // They asked first: asking back is accepting.
            return self.befriend(me, &mut mine, other, &mut theirs, now);
        }
        if let Some(wait) = self.rejected_for(me, other, now) {
            // The sender was told of the rejection: saying so again reveals nothing.
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                message: "this user turned down your request; ask again later".into(),
                retry_after_ms: wait,
            });
        }
        let limits = self.limits;
        if mine.friends >= limits.friends_max {
            return Err(too_many_friends(true, limits.friends_max));
        }
        let day = now / DAY_MS;
        if mine.request_day != day {
            mine.request_day = day;
            mine.requests_today = 0;
        }
        if mine.requests_today >= limits.requests_per_day_max {
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                message: format!(
                    "at most {} friend requests a day",
                    limits.requests_per_day_max
                ),
                retry_after_ms: (day + 1) * DAY_MS - now,
            });
        }
        if mine.requests_out >= limits.requests_pending_max {
            return Err(Refusal::new(
                ErrorCode::TooManyFriendRequests,
                format!(
                    "you have {} friend requests waiting for an answer; cancel one first",
                    mine.requests_out
                ),
            ));
        }
        if theirs.requests_in >= limits.requests_received_max {
            return Err(Refusal::new(
                ErrorCode::TooManyFriendRequests,
                "this user has too many friend requests waiting",
            ));
        }
        mine.requests_out += 1;
        mine.requests_today += 1;
        theirs.requests_in += 1;
        let mut plan = Plan::reply(friend_ok(other, FriendState::RequestSent));
        let record = RelationRecord {
            since_ms: now,
            message,
        };
        plan.both_ways(
            me,
            RelationKind::RequestOut,
            other,
            RelationKind::RequestIn,
            Some(record.clone()),
        );
        plan.summaries = vec![(me, mine), (other, theirs)];
        plan.tell_both(
            me,
            other,
            FriendEventKind::Request,
            FriendState::RequestSent,
            FriendState::RequestReceived,
            &record.message,
        );
        Ok(plan)
    }

    /// `other`'s request to `me` becomes a friendship.
    fn befriend(
        &mut self,
        me: UserId,
        mine: &mut ContactSummary,
        other: UserId,
        theirs: &mut ContactSummary,
        now: u64,
    ) -> Result<Plan, Refusal> {
        let max = self.limits.friends_max;
        if mine.friends >= max {
            return Err(too_many_friends(true, max));
        }
        if theirs.friends >= max {
            return Err(too_many_friends(false, max));
        }
        mine.requests_in = mine.requests_in.saturating_sub(1);
        theirs.requests_out = theirs.requests_out.saturating_sub(1);
        mine.friends += 1;
        theirs.friends += 1;
        let mut plan = Plan::reply(friend_ok(other, FriendState::Friends));
        plan.both_ways(
            other,
            RelationKind::RequestOut,
            me,
            RelationKind::RequestIn,
            None,
        );
        let since = RelationRecord {
            since_ms: now,
            message: String::new(),
        };
        plan.both_ways(
            me,
            RelationKind::Friend,
            other,
            RelationKind::Friend,
            Some(since),
        );
        plan.summaries = vec![(me, *mine), (other, *theirs)];
        plan.tell_both(
            me,
            other,
            FriendEventKind::Accepted,
            FriendState::Friends,
            FriendState::Friends,
            "",
        );
        Ok(plan)
    }

    fn respond(
        &mut self,
        me: UserId,
        other: UserId,
        accept: bool,
        now: u64,
    ) -> Result<Plan, Refusal> {
        let view = self.view(me, other)?;
        if view.received.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                "no friend request from this user",
            ));
        }
        let mut mine = self.summary(me)?;
        let mut theirs = self.summary(other)?;
        if accept {
            return self.befriend(me, &mut mine, other, &mut theirs, now);
        }
        mine.requests_in = mine.requests_in.saturating_sub(1);
        theirs.requests_out = theirs.requests_out.saturating_sub(1);
        self.remember_rejection(other, me, now);
        let mut plan = Plan::reply(friend_ok(other, FriendState::None));
        plan.both_ways(
            other,
            RelationKind::RequestOut,
            me,
            RelationKind::RequestIn,
            None,
        );
        plan.summaries = vec![(me, mine), (other, theirs)];
        plan.tell_both(
            me,
            other,
            FriendEventKind::Rejected,
            FriendState::None,
            FriendState::None,
            "",
        );
        Ok(plan)
    }

    fn cancel(&mut self, me: UserId, other: UserId) -> Result<Plan, Refusal> {
        let view = self.view(me, other)?;
        if view.sent.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                "no friend request to this user",
            ));
        }
        let mut mine = self.summary(me)?;
        let mut theirs = self.summary(other)?;
        // The day's count stays: cancelling and asking again is not a way around it.
        mine.requests_out = mine.requests_out.saturating_sub(1);
        theirs.requests_in = theirs.requests_in.saturating_sub(1);
        let mut plan = Plan::reply(friend_ok(other, FriendState::None));
        plan.both_ways(
            me,
            RelationKind::RequestOut,
            other,
            RelationKind::RequestIn,
            None,
        );
        plan.summaries = vec![(me, mine), (other, theirs)];
        plan.tell_both(
            me,
            other,
            FriendEventKind::Cancelled,
            FriendState::None,
            FriendState::None,
            "",
        );
        Ok(plan)
    }

    fn delete(&mut self, me: UserId, other: UserId) -> Result<Plan, Refusal> {
        let view = self.view(me, other)?;
        if view.friends.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                "not friends with this user",
            ));
        }
        let mut mine = self.summary(me)?;
        let mut theirs = self.summary(other)?;
        mine.friends = mine.friends.saturating_sub(1);
        theirs.friends = theirs.friends.saturating_sub(1);
        let mut plan = Plan::reply(friend_ok(other, FriendState::None));
        plan.both_ways(me, RelationKind::Friend, other, RelationKind::Friend, None);
        plan.summaries = vec![(me, mine), (other, theirs)];
        plan.tell_both(
            me,
            other,
            FriendEventKind::Deleted,
            FriendState::None,
            FriendState::None,
            "",
        );
        Ok(plan)
    }

    /// Reads the events' profiles (the last reads), then changes the overlay.
    fn carry_out(&mut self, plan: Plan, now: u64) -> Result<ContactDone, Refusal> {
        let mut events = Vec::with_capacity(plan.events.len());
        for e in plan.events {
            let profile = base_profile(
                &*self.accounts,
                &*self.store,
                self.limits.searchable_default,
                e.about,
            )?;
            let mut profile = match profile {
                Some(p) if p.searchable || e.about_took_part => p,
                _ => bare_profile(e.about),
            };
            profile.friend_state = e.state as i32;
            profile.blocked = e.kind == FriendEventKind::Blocked;
            let event = v1::FriendEvent {
                kind: e.kind as i32,
                user_id: e.about,
                state: e.state as i32,
                message: e.message,
                time_ms: now,
                profile: Some(profile),
            };
            events.push((e.to, Body::FriendEvent(event)));
        }
        for (key, record) in plan.relations {
            self.put(key, record);
        }
        for (user, summary) in plan.summaries {
            self.put_summary(user, summary);
        }
        Ok(ContactDone {
            reply: plan.reply,
            events,
        })
    }
}

fn too_many_friends(yours: bool, max: u32) -> Refusal {
    let whose = if yours { "your" } else { "this user's" };
    Refusal::new(
        ErrorCode::TooManyFriends,
        format!("{whose} friend list is full ({max})"),
    )
}
