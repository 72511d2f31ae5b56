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
    /// Whole summaries, at most one per user per group.
    pub summaries: Vec<(UserId, ContactSummary)>,
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
