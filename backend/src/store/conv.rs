//! Conversation ids and members. An id is opaque above the store: code asks it for its kind and
//! asks the membership for its members, never "who is the peer".
//!
//! Layout of the `u64` (the wire's `conversation_id`), kind in the top two bits:
//! - `00` direct: bits 32..62 the lower user id, bits 0..32 the higher one. Both sides derive
//!   it with no lookup, and it is the layout 1:1 conversations always had, so stored data needs
//!   no migration.
//! - `01` group: the low 62 bits number the group (their members are stored: the groups issue).
//! - `10` system: the low 62 bits name the one user a system conversation speaks to.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{USER_ID_FIRST, USER_ID_LAST, UserId};

const KIND_SHIFT: u32 = 62;
const KIND_DIRECT: u64 = 0;
const KIND_GROUP: u64 = 1;
const KIND_SYSTEM: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConvId(u64);

/// What a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// Two users; members derived from the id.
    Direct,
    /// Many users; members stored.
    Group,
    /// One user and the server (notifications).
    System,
}

fn is_user(u: UserId) -> bool {
    (USER_ID_FIRST..=USER_ID_LAST).contains(&u)
}

impl ConvId {
    /// The direct conversation of two different users.
    pub fn direct(a: UserId, b: UserId) -> Option<Self> {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        (is_user(low) && is_user(high) && low < high).then_some(Self((low << 32) | high))
    }

    /// Group number `n` (1 ..= 2^62 - 1).
    pub fn group(n: u64) -> Option<Self> {
        (n > 0 && n >> KIND_SHIFT == 0).then_some(Self((KIND_GROUP << KIND_SHIFT) | n))
    }

    /// The system conversation of `user`: derived, never looked up.
    pub fn system(user: UserId) -> Option<Self> {
        is_user(user).then_some(Self((KIND_SYSTEM << KIND_SHIFT) | user))
    }

    /// A client-supplied or stored id, if it is one a conversation can have.
    pub fn from_wire(raw: u64) -> Option<Self> {
        let id = Self(raw);
        match raw >> KIND_SHIFT {
            KIND_DIRECT => id.direct_members().map(|_| id),
            KIND_GROUP => Some(id),
            KIND_SYSTEM => id.system_user().map(|_| id),
            _ => None,
        }
    }

    /// An id the store wrote itself: trusted as it is.
    pub(crate) fn from_stored(raw: u64) -> Self {
        Self(raw)
    }

    pub fn to_wire(self) -> u64 {
        self.0
    }

    pub fn kind(self) -> ConvKind {
        match self.0 >> KIND_SHIFT {
            KIND_DIRECT => ConvKind::Direct,
            KIND_GROUP => ConvKind::Group,
            _ => ConvKind::System,
        }
    }

    /// The two members of a direct conversation, derived with no read.
    fn direct_members(self) -> Option<[UserId; 2]> {
        if self.0 >> KIND_SHIFT != KIND_DIRECT {
            return None;
        }
        let (low, high) = (self.0 >> 32, self.0 & 0xffff_ffff);
        (is_user(low) && is_user(high) && low < high).then_some([low, high])
    }

    /// The one user a system conversation speaks to.
    pub fn system_user(self) -> Option<UserId> {
        let user = self.0 & !(3 << KIND_SHIFT);
        (self.0 >> KIND_SHIFT == KIND_SYSTEM && is_user(user)).then_some(user)
    }

    /// Members known from the id alone: a direct conversation's two users, a system
    /// conversation's one. `None` for kinds whose members are stored.
    pub fn implied_members(self) -> Option<Members> {
        if let Some(user) = self.system_user() {
            return Some(Members::one(user));
        }
        self.direct_members()
            .map(|pair| Members(SmallVec::from_buf(pair)))
    }
}

impl std::fmt::Display for ConvId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The users of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members(SmallVec<[UserId; 2]>);

impl Members {
    /// One user alone: the audience of a user's own events (contacts).
    pub fn one(user: UserId) -> Self {
        Self(SmallVec::from_buf_and_len([user, 0], 1))
    }

    pub fn contains(&self, user: UserId) -> bool {
        self.0.contains(&user)
    }

    pub fn all(&self) -> &[UserId] {
        &self.0
    }

    /// Everyone but `user`.
    pub fn others(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.0.iter().copied().filter(move |u| *u != user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_are_symmetric_and_keep_the_stored_layout() {
        let (a, b) = (100_000_007, 123_456_789);
        let conv = ConvId::direct(a, b).unwrap();
        assert_eq!(Some(conv), ConvId::direct(b, a));
        // The layout 1:1 conversations were stored under before kinds existed.
        assert_eq!(conv.to_wire(), (a << 32) | b);
        assert_eq!(ConvId::from_wire(conv.to_wire()), Some(conv));
        assert_eq!(conv.kind(), ConvKind::Direct);
        let members = conv.implied_members().unwrap();
        assert_eq!(members.all(), &[a, b]);
        assert_eq!(members.others(a).collect::<Vec<_>>(), vec![b]);
        assert!(!members.contains(100_000_008));
        assert_eq!(ConvId::direct(a, a), None);
        assert_eq!(ConvId::direct(5, a), None);
    }

    #[test]
    fn kinds_are_told_apart_and_bad_ids_refused() {
        let g = ConvId::from_wire((1 << 62) | 42).unwrap();
        assert_eq!(g.kind(), ConvKind::Group);
        assert_eq!(ConvId::from_wire(g.to_wire()), Some(g));
        assert_eq!(g.implied_members(), None);
        assert_eq!(ConvId::from_wire(42), None, "not two user ids");
        assert_eq!(ConvId::from_wire(3 << 62), None, "no such kind");
        let sys = ConvId::from_wire((2 << 62) | 100_000_001).unwrap();
        assert_eq!(sys.kind(), ConvKind::System);
        assert_eq!(ConvId::system(100_000_001), Some(sys));
        assert_eq!(sys.system_user(), Some(100_000_001));
        assert_eq!(sys.implied_members().unwrap().all(), &[100_000_001]);
        assert_eq!(ConvId::from_wire(2 << 62), None, "names no user");
        assert_eq!(ConvId::system(5), None);
        assert_eq!(g.system_user(), None);
    }
}
