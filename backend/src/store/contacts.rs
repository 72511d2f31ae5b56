//! What the store keeps about contacts: relations between two users (friendship, pending
//! requests, blocks), each user's contact summary (counts, limits' windows, the DM policy), and
//! profiles. Relations and summaries are written by the sequencer in its commit groups
//! ([`ContactWrites`]), so a block and a send are ordered by one thread; profiles are written by
//! the contacts service on their own.

use serde::{Deserialize, Serialize};

use super::UserId;

/// What one user has with another. Friendship and requests are stored on both sides, so that
/// each user lists theirs by prefix; a block only on the blocker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum RelationKind {
    /// `owner` and `other` are friends (stored under both).
    Friend = 1,
    /// `owner` asked `other` to be friends.
    RequestOut = 2,
    /// `other` asked `owner` (the mirror of `RequestOut`).
    RequestIn = 3,
    /// `owner` blocked `other`.
    Block = 4,
}

impl RelationKind {
    pub const ALL: [RelationKind; 4] = [
        RelationKind::Friend,
        RelationKind::RequestOut,
        RelationKind::RequestIn,
        RelationKind::Block,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// One relation's key: `owner`'s relation of `kind` with `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationKey {
    pub owner: UserId,
    pub kind: RelationKind,
    pub other: UserId,
}

impl RelationKey {
    pub fn new(owner: UserId, kind: RelationKind, other: UserId) -> Self {
        Self { owner, kind, other }
    }
}

/// A relation's value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RelationRecord {
    /// When it began (the request was sent, the friendship accepted, the block made).
    pub since_ms: u64,
    /// A request's message; empty for the other kinds.
    pub message: String,
}

/// Who may start a direct conversation with a user (stored; `None` follows the server default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DmPolicy {
    Everyone,
    FriendsOnly,
}

/// One user's contact summary: the counts the limits check, without a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactSummary {
    pub friends: u32,
    pub requests_out: u32,
    pub requests_in: u32,
    pub blocks: u32,
    /// The day (ms since the epoch / a day) `requests_today` counts.
    pub request_day: u64,
    pub requests_today: u32,
    /// `None`: the server's default.
    pub dm_policy: Option<DmPolicy>,
}

/// A user's profile, apart from the username (which the accounts own).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub nickname: String,
    pub avatar_url: String,
    pub bio: String,
    /// `None`: the server's default.
    pub searchable: Option<bool>,
    pub updated_ms: u64,
    /// Friends are not told when this user was last seen.
    pub hide_last_seen: bool,
}

/// The contacts section of a commit group.
#[derive(Debug, Default)]
pub struct ContactWrites {
    /// Put (`Some`) or remove (`None`), at most one per key per group.
    pub relations: Vec<(RelationKey, Option<RelationRecord>)>,
    /// Summary changes, at most one per user per group.
    pub summaries: Vec<SummaryWrite>,
}

/// A user's summary as a commit group changes it: `new` is what the sequencer made of `base`,
/// the summary it read. An adapter stores [`SummaryWrite::onto`] what it holds, not `new`: in
/// a cluster one user's summary is written by the owners of all their direct conversations,
/// so another node may have changed it since `base` was read, and both changes must count.
/// `base: None` puts `new` whole (a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryWrite {
    pub user: UserId,
    pub base: Option<ContactSummary>,
    pub new: ContactSummary,
}

/// What a [`SummaryWrite`] changes, as an adapter applies it (PostgreSQL in SQL, the others
/// through [`SummaryWrite::onto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryDelta {
    pub friends: i64,
    pub requests_out: i64,
    pub requests_in: i64,
    pub blocks: i64,
    /// The day the group's requests count on, and how many it added that day.
    pub request_day: u64,
    pub requests_today: i64,
    /// The policy, if the group set it.
    pub dm_policy: Option<Option<DmPolicy>>,
}

impl SummaryWrite {
    /// What the group changed; `None` for a whole put.
    pub fn delta(&self) -> Option<SummaryDelta> {
        let (b, n) = (self.base.as_ref()?, &self.new);
        let by = |f: fn(&ContactSummary) -> u32| i64::from(f(n)) - i64::from(f(b));
        let counted_before = if b.request_day == n.request_day {
            b.requests_today
        } else {
            0
        };
        Some(SummaryDelta {
            friends: by(|s| s.friends),
            requests_out: by(|s| s.requests_out),
            requests_in: by(|s| s.requests_in),
            blocks: by(|s| s.blocks),
            request_day: n.request_day,
            requests_today: i64::from(n.requests_today) - i64::from(counted_before),
            dm_policy: (n.dm_policy != b.dm_policy).then_some(n.dm_policy),
        })
    }

    /// The summary to store over `stored` (`None`: nothing stored): counts move by what the
    /// group changed (never below 0), a day's request count follows the later day, and the
    /// policy is the group's only if the group set it.
    pub fn onto(&self, stored: Option<ContactSummary>) -> ContactSummary {
        let Some(d) = self.delta() else {
            return self.new;
        };
        let s = stored.unwrap_or_default();
        let add = |v: u32, by: i64| u32::try_from((i64::from(v) + by).max(0)).unwrap_or(u32::MAX);
        let (request_day, requests_today) = match s.request_day.cmp(&d.request_day) {
            std::cmp::Ordering::Equal => (s.request_day, add(s.requests_today, d.requests_today)),
            std::cmp::Ordering::Greater => (s.request_day, s.requests_today),
            std::cmp::Ordering::Less => (d.request_day, add(0, d.requests_today)),
        };
        ContactSummary {
            friends: add(s.friends, d.friends),
            requests_out: add(s.requests_out, d.requests_out),
            requests_in: add(s.requests_in, d.requests_in),
            blocks: add(s.blocks, d.blocks),
            request_day,
            requests_today,
            dm_policy: d.dm_policy.unwrap_or(s.dm_policy),
        }
    }
}

impl ContactWrites {
    pub fn clear(&mut self) {
        self.relations.clear();
        self.summaries.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty() && self.summaries.is_empty()
    }
}
