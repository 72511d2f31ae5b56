//! The owner node's bookkeeping for the rooms it owns: per room, each node's part (users and
//! sessions present there, as that node last reported it), the last `room_seq` given out and
//! the room's budget. Pure data: no I/O, no clock (times come in as `now_ms`).
//!
//! Parts are absolute counts, not deltas: a report sent twice, or one that overtakes nothing
//! (a link carries a node's items in order), leaves the right count, and a new owner learns a
//! room whole from one report per node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::super::budget::Budget;
use super::super::config::RoomsConfig;
use super::super::registry::RoomError;

/// One node's part of a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Part {
    /// Users with at least one session in the room on that node.
    pub users: u32,
    /// Sessions in the room on that node.
    pub sessions: u32,
}

/// A node's part as last reported, and when (the owner's clock): a part not reported again
/// within a lease is dropped ([`Book::expire`]).
struct Held {
    part: Part,
    reported_ms: u64,
}

struct Owned {
    /// The last `room_seq` given out, or the highest a node reported having delivered.
    seq: u64,
    /// By node id; a node with no session in the room has no entry. At most one per node of
    /// the view (the link takes room items only from nodes in the view).
    parts: HashMap<Arc<str>, Held, RandomState>,
    budget: Budget,
}

impl Owned {
    fn users(&self) -> u32 {
        self.parts
            .values()
            .map(|h| h.part.users)
            .fold(0, u32::saturating_add)
    }
}

/// What a numbered message is sent to: each node with sessions in the room (this node
/// included when it has some).
#[derive(Debug, PartialEq, Eq)]
pub struct Numbered {
    pub room_seq: u64,
    pub nodes: Vec<Arc<str>>,
}

pub struct Book {
    rooms: HashMap<Arc<str>, Owned, RandomState>,
    /// Rooms kept at once, at most: `rooms.max` × `cluster.nodes_max` (every node's rooms,
    /// each node holding at most `rooms.max`). Past it a new room is refused TOO_MANY_ROOMS,
    /// so no node, however it misbehaves, makes this one hold more.
    rooms_max: usize,
    members_max: u32,
    rate: u32,
    /// `rooms.persistent`: kept when empty, so their `room_seq` runs on.
    persistent: HashSet<String>,
}

impl Book {
    pub fn new(config: &RoomsConfig, rooms_max: usize) -> Self {
        Self {
            rooms: HashMap::default(),
            rooms_max,
            members_max: config.members_max,
            rate: config.messages_per_s_max,
            persistent: config.persistent.iter().cloned().collect(),
        }
    }

    /// Node `node`'s part of `room` is now `part`; it has delivered up to `delivered`. With
    /// `new_user` (a join that made a user new to the room there) the room may not pass
    /// `members_max`: refused `Full`, and that user is not counted. Returns the member count.
    ///
    /// The member count is the sum of the nodes' user counts: a user with sessions in the
    /// room on two nodes counts on each (the owner keeps counts, not users).
    pub fn set_part(
        &mut self,
        node: &str,
        room: &str,
        part: Part,
        delivered: u64,
        new_user: bool,
        now_ms: u64,
    ) -> Result<u32, RoomError> {
        if !self.rooms.contains_key(room) {
            if part.sessions == 0 {
                return Ok(0);
            }
            if self.rooms.len() >= self.rooms_max {
                return Err(RoomError::ServerHasTooMany(
                    u32::try_from(self.rooms_max).unwrap_or(u32::MAX),
                ));
            }
            let owned = Owned {
                seq: 0,
                parts: HashMap::default(),
                budget: Budget::full(self.rate, now_ms),
            };
            self.rooms.insert(Arc::from(room), owned);
        }
        let owned = self.rooms.get_mut(room).expect("found or inserted above");
        owned.seq = owned.seq.max(delivered);
        let others = owned
            .users()
            .saturating_sub(owned.parts.get(node).map_or(0, |h| h.part.users));
        let (part, refused) = if new_user && others.saturating_add(part.users) > self.members_max {
            // Counted without the newcomer; its node takes the join back and reports again.
            let without = Part {
                users: part.users.saturating_sub(1),
                sessions: part.sessions.saturating_sub(1),
            };
            (without, true)
        } else {
            (part, false)
        };
        if part.sessions == 0 {
            owned.parts.remove(node);
        } else {
            owned.parts.insert(
                Arc::from(node),
                Held {
                    part,
                    reported_ms: now_ms,
                },
            );
        }
        let count = others.saturating_add(part.users);
        self.drop_if_empty(room);
        if refused {
            return Err(RoomError::Full(self.members_max));
        }
        Ok(count)
    }

    /// Users in the room over every node (0 for a room not kept here).
    #[cfg(test)]
    pub fn member_count(&self, room: &str) -> u32 {
        self.rooms.get(room).map_or(0, Owned::users)
    }

    /// Numbers a message of `room` from a session on node `from` within the room's budget,
    /// above `floor` (the highest `room_seq` delivered on `from` and here). A room not kept
    /// here, or `from` with no part in it (its report has not come yet: ownership has just
    /// moved), is `Unsettled`.
    pub fn number(
        &mut self,
        room: &str,
        from: &str,
        floor: u64,
        now_ms: u64,
    ) -> Result<Numbered, RoomError> {
        let owned = self
            .rooms
            .get_mut(room)
            .filter(|o| o.parts.contains_key(from))
            .ok_or(RoomError::Unsettled)?;
        let rate = self.rate;
        owned
            .budget
            .check(rate, now_ms)
            .map_err(|retry_after_ms| RoomError::RoomRate {
                per_s: rate,
                retry_after_ms,
            })?;
        owned.budget.take();
        owned.seq = owned.seq.max(floor) + 1;
        let mut nodes: Vec<Arc<str>> = owned.parts.keys().cloned().collect();
        nodes.sort();
        Ok(Numbered {
            room_seq: owned.seq,
            nodes,
        })
    }

    /// The view changed: parts of nodes no longer in it go (their sessions went with them),
    /// and so do rooms this node no longer owns (their new owner learns them from the nodes).
    pub fn retain(&mut self, live: impl Fn(&str) -> bool, mine: impl Fn(&str) -> bool) {
        self.rooms.retain(|name, owned| {
            if !mine(name) {
                return false;
            }
            owned.parts.retain(|node, _| live(node));
            !owned.parts.is_empty() || self.persistent.contains(&**name)
        });
    }

    /// Drops the parts last reported before `before_ms` (their node sends every part again
    /// every refresh, so a part that stopped coming is one whose report of emptying was lost),
    /// and the rooms left with none (unless persistent). Returns the parts dropped.
    pub fn expire(&mut self, before_ms: u64) -> usize {
        let mut dropped = 0;
        self.rooms.retain(|name, owned| {
            let before = owned.parts.len();
            owned.parts.retain(|_, h| h.reported_ms >= before_ms);
            dropped += before - owned.parts.len();
            !owned.parts.is_empty() || self.persistent.contains(&**name)
        });
        dropped
    }

    /// Rooms kept here.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    fn drop_if_empty(&mut self, room: &str) {
        if self.rooms.get(room).is_some_and(|o| o.parts.is_empty())
            && !self.persistent.contains(room)
        {
            self.rooms.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RoomsConfig {
        RoomsConfig {
            members_max: 3,
            messages_per_s_max: 2,
            persistent: vec!["lobby".into()],
            ..RoomsConfig::default()
        }
    }

    fn part(users: u32, sessions: u32) -> Part {
        Part { users, sessions }
    }

    #[test]
    fn members_max_counts_every_node_and_a_refused_newcomer_is_not_counted() {
        let mut b = Book::new(&config(), 10);
        assert_eq!(b.set_part("n1", "tea", part(1, 1), 0, true, 0), Ok(1));
        assert_eq!(b.set_part("n2", "tea", part(1, 2), 0, true, 0), Ok(2));
        assert_eq!(b.set_part("n3", "tea", part(1, 1), 0, true, 0), Ok(3));
        assert_eq!(
            b.set_part("n2", "tea", part(2, 3), 0, true, 0),
            Err(RoomError::Full(3))
        );
        assert_eq!(b.member_count("tea"), 3, "n2 keeps its one user");
        // Another session of a user already in: not a newcomer, never refused.
        assert_eq!(b.set_part("n2", "tea", part(1, 3), 0, false, 0), Ok(3));
        // A leave lowers the count for everyone; the last leave drops the room.
        assert_eq!(b.set_part("n3", "tea", part(0, 0), 0, false, 0), Ok(2));
        b.set_part("n1", "tea", part(0, 0), 0, false, 0).unwrap();
        b.set_part("n2", "tea", part(0, 0), 0, false, 0).unwrap();
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn numbering_goes_on_from_the_highest_seq_delivered_and_reaches_every_node_once() {
        let mut b = Book::new(&config(), 10);
        b.set_part("n2", "tea", part(1, 1), 41, false, 0).unwrap();
        b.set_part("n1", "tea", part(2, 5), 40, false, 0).unwrap();
        assert_eq!(
            b.number("tea", "n1", 0, 0),
            Ok(Numbered {
                room_seq: 42,
                nodes: vec![Arc::from("n1"), Arc::from("n2")],
            })
        );
        // A late report of a lower seq takes nothing back.
        b.set_part("n2", "tea", part(1, 1), 7, false, 0).unwrap();
        assert_eq!(b.number("tea", "n1", 0, 0).map(|n| n.room_seq), Ok(43));
        assert!(matches!(
            b.number("tea", "n1", 0, 0),
            Err(RoomError::RoomRate { per_s: 2, .. })
        ));
        assert_eq!(b.number("tea", "n2", 0, 500).map(|n| n.room_seq), Ok(44));
        assert_eq!(b.number("coffee", "n1", 0, 500), Err(RoomError::Unsettled));
        assert_eq!(
            b.number("tea", "n3", 0, 500),
            Err(RoomError::Unsettled),
            "a node whose part has not been reported"
        );
    }

    #[test]
    fn numbering_goes_above_what_the_sender_delivered() {
        // E took the room over when C had delivered 10; an owner whose view lagged went on
        // numbering to C, which has delivered 13 since.
        let mut b = Book::new(&config(), 10);
        b.set_part("c", "tea", part(1, 1), 10, false, 0).unwrap();
        assert_eq!(b.number("tea", "c", 13, 0).map(|n| n.room_seq), Ok(14));
        assert_eq!(
            b.number("tea", "c", 7, 0).map(|n| n.room_seq),
            Ok(15),
            "a lower floor takes nothing back"
        );
    }

    #[test]
    fn a_view_change_drops_departed_nodes_and_rooms_owned_elsewhere() {
        let mut b = Book::new(&config(), 10);
        b.set_part("n1", "tea", part(1, 1), 0, false, 0).unwrap();
        b.set_part("n2", "tea", part(2, 2), 0, false, 0).unwrap();
        b.set_part("n2", "coffee", part(1, 1), 0, false, 0).unwrap();
        b.set_part("n2", "lobby", part(1, 1), 9, false, 0).unwrap();
        b.retain(|node| node != "n2", |room| room != "coffee");
        assert_eq!(b.member_count("tea"), 1);
        assert_eq!(b.member_count("coffee"), 0);
        // A persistent room stays empty, and its seq runs on.
        assert_eq!(b.len(), 2);
        b.set_part("n1", "lobby", part(1, 1), 0, false, 0).unwrap();
        assert_eq!(b.number("lobby", "n1", 0, 0).map(|n| n.room_seq), Ok(10));
    }

    #[test]
    fn parts_not_reported_again_within_the_lease_expire() {
        let mut b = Book::new(&config(), 10);
        b.set_part("n1", "tea", part(1, 1), 0, false, 1_000)
            .unwrap();
        b.set_part("n2", "tea", part(2, 2), 0, false, 1_000)
            .unwrap();
        b.set_part("n2", "coffee", part(1, 1), 0, false, 1_000)
            .unwrap();
        b.set_part("n2", "lobby", part(1, 1), 0, false, 1_000)
            .unwrap();
        // n1 reports again; n2's reports (its room emptied there, say) never come.
        b.set_part("n1", "tea", part(1, 1), 0, false, 5_000)
            .unwrap();
        assert_eq!(b.expire(1_000), 0, "reported at the bound: kept");
        assert_eq!(b.expire(3_000), 3);
        assert_eq!(b.member_count("tea"), 1);
        assert_eq!(b.member_count("coffee"), 0);
        assert_eq!(b.len(), 2, "tea and the persistent lobby");
    }

    #[test]
    fn bounded_in_rooms_and_empty_reports_keep_nothing() {
        let mut b = Book::new(&config(), 1);
        assert_eq!(b.set_part("n1", "a", part(0, 0), 5, false, 0), Ok(0));
        assert_eq!(b.len(), 0, "an empty part makes no room");
        b.set_part("n1", "a", part(1, 1), 0, false, 0).unwrap();
        assert_eq!(
            b.set_part("n2", "b", part(1, 1), 0, false, 0),
            Err(RoomError::ServerHasTooMany(1))
        );
        assert_eq!(b.len(), 1);
    }
}
