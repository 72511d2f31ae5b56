//! Who is in which room, in memory only: rooms, their audiences per shard, their `room_seq`,
//! and the budgets a send draws on. Pure data: no I/O, no clock (times come in as `now_ms`),
//! so the rules are unit-tested here and the service only turns answers into frames.
//!
//! A member is a session (`ConnRef`): a user's several sessions each get the messages, and the
//! user counts once in `member_count`, in `members_max` and in `per_user_max`.
//!
//! A room counts against the client network (an IPv4 /24, an IPv6 /48) of the session that
//! made it while it exists, at most `per_network_max`: `per_user_max` alone would let one
//! network's many accounts take all of `max` and lock everyone else out of new rooms.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use super::budget::Budget;
use super::config::RoomsConfig;
use crate::accounts::limiter::network_key;
use crate::api::{ConnId, ConnRef, ShardId, UserId};

/// Why a room request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("you are not in this room")]
    NotIn,
    #[error("the room has {0} members, the most it may have")]
    Full(u32),
    #[error("you are in {0} rooms, the most one user may be in")]
    UserHasTooMany(u32),
    #[error("the server has {0} rooms, the most it may have")]
    ServerHasTooMany(u32),
    #[error("your network made {0} of the rooms that exist, the most one network may")]
    NetworkHasTooMany(u32),
    #[error("the room carries at most {per_s} messages per second")]
    RoomRate { per_s: u32, retry_after_ms: u64 },
    #[error("you may send at most {per_s} room messages per second")]
    UserRate { per_s: u32, retry_after_ms: u64 },
    /// Cluster mode: the room's owner node is not known or did not answer (ownership moving).
    #[error("the room's owner node is changing or cannot be reached; retry")]
    Unsettled,
    /// Cluster mode: a join of this user to the room is still waiting for the room's owner
    /// node on this node (`Registry::join_to_ask`).
    #[error("your join of this room is still waiting for the room's owner node; retry")]
    JoinAsked,
}

/// One shard's part of a room's audience, and the list a message is sent with
/// (`Outgoing::Shared`): rebuilt on the first send after a join or a leave on this shard, then
/// shared by every message (one reference count each, no list built per message).
#[derive(Default)]
struct ShardAudience {
    conns: HashSet<ConnId, RandomState>,
    snapshot: Option<Arc<Vec<ConnId>>>,
}

impl ShardAudience {
    fn snapshot(&mut self) -> Arc<Vec<ConnId>> {
        let conns = &self.conns;
        Arc::clone(
            self.snapshot
                .get_or_insert_with(|| Arc::new(conns.iter().copied().collect())),
        )
    }
}

struct Room {
    /// One box: the last `room_seq` given out. Cluster mode: the highest delivered here
    /// (`cluster.rs`), since the room's owner node numbers.
    seq: u64,
    /// Sessions present (the audience), over all shards.
    sessions: u32,
    /// The network ([`network_key`]) of the session that made the room; `None`: a persistent
    /// room (`rooms.persistent`), kept when empty.
    made_by: Option<IpAddr>,
    /// Each user present, with how many of their sessions are.
    users: HashMap<UserId, u32, RandomState>,
    /// Indexed by shard.
    shards: Vec<ShardAudience>,
    budget: Budget,
}

impl Room {
    fn new(made_by: Option<IpAddr>, rate: u32, now_ms: u64) -> Self {
        Self {
            seq: 0,
            sessions: 0,
            made_by,
            users: HashMap::default(),
            shards: Vec::new(),
            budget: Budget::full(rate, now_ms),
        }
    }

    fn audience(&mut self, shard: ShardId) -> &mut ShardAudience {
        let i = usize::from(shard);
        if self.shards.len() <= i {
            self.shards.resize_with(i + 1, ShardAudience::default);
        }
        &mut self.shards[i]
    }

    fn has(&self, conn: ConnRef) -> bool {
        self.shards
            .get(usize::from(conn.shard))
            .is_some_and(|a| a.conns.contains(&conn.conn))
    }

    fn member_count(&self) -> u32 {
        u32::try_from(self.users.len()).unwrap_or(u32::MAX)
    }
}

/// A user present in at least one room, or in none since less than `BUDGET_REST_MS`.
struct Sender {
    /// Rooms the user is in, over all their sessions.
    rooms: u32,
    /// Shared by all the user's sessions and rooms. Kept for `BUDGET_REST_MS` once the user is
    /// in no room, so that leaving and joining again does not bring a fresh second's burst.
    budget: Budget,
    /// While `rooms` is 0: when the entry may go.
    rest_until_ms: u64,
}

/// How long a sender's budget outlives its last room: a bucket refills in one second.
const BUDGET_REST_MS: u64 = 1_000;

/// One list of connections per shard with someone to deliver to.
pub type Targets = SmallVec<[(ShardId, Arc<Vec<ConnId>>); 4]>;

/// What a send hands the service to deliver.
#[derive(Debug)]
pub struct Outgoing {
    pub room_seq: u64,
    /// One list per shard with someone to deliver to; the sender's own connection is among its
    /// shard's (the shard skips it), so the list stays shared.
    pub targets: Targets,
}

pub struct Registry {
    config: RoomsConfig,
    rooms: HashMap<Arc<str>, Room, RandomState>,
    /// Each session's rooms, so that a close needs no search.
    sessions: HashMap<ConnRef, SmallVec<[Arc<str>; 2]>, RandomState>,
    users: HashMap<UserId, Sender, RandomState>,
    /// Rooms that exist, per network that made them (no entry at 0).
    by_network: HashMap<IpAddr, u32, RandomState>,
    /// (rest over at, user) for each time a user left their last room, oldest first: their
    /// `Sender` goes once its rest is over and they have not come back. Each entry leaves the
    /// queue when its own rest is over (not the user's latest), so the queue holds at most
    /// `BUDGET_REST_MS` of leaves, however often one user joins and leaves.
    resting: VecDeque<(u64, UserId)>,
    /// Cluster mode: per room, the users whose join made them new to it here and whose
    /// owner node has not answered yet (`cluster.rs`). At most one entry per join waiting for
    /// an answer, which always ends (`cluster.forward_timeout_ms`).
    asked: HashMap<Arc<str>, SmallVec<[UserId; 2]>, RandomState>,
    /// Messages numbered, and frames handed to the shards for them, since start-up.
    pub messages: u64,
    pub deliveries: u64,
}

impl Registry {
    pub fn new(config: RoomsConfig, now_ms: u64) -> Self {
        let mut rooms = HashMap::default();
        for name in &config.persistent {
            rooms.insert(
                Arc::from(name.as_str()),
                Room::new(None, config.messages_per_s_max, now_ms),
            );
        }
        Self {
            config,
            rooms,
            sessions: HashMap::default(),
            users: HashMap::default(),
            by_network: HashMap::default(),
            resting: VecDeque::new(),
            asked: HashMap::default(),
            messages: 0,
            deliveries: 0,
        }
    }

    /// Adds the session (its client at `peer`) to the room (created if need be) and returns
    /// the member count. A session already in the room changes nothing.
    pub fn join(
        &mut self,
        conn: ConnRef,
        user: UserId,
        peer: IpAddr,
        name: &str,
        now_ms: u64,
    ) -> Result<u32, RoomError> {
        let config = &self.config;
        let user_rooms = self.users.get(&user).map_or(0, |u| u.rooms);
        let key = match self.rooms.get_key_value(name) {
            Some((key, room)) => {
                if room.has(conn) {
                    return Ok(room.member_count());
                }
                if !room.users.contains_key(&user) {
                    if room.users.len() >= config.members_max as usize {
                        return Err(RoomError::Full(config.members_max));
                    }
                    if user_rooms >= config.per_user_max {
                        return Err(RoomError::UserHasTooMany(config.per_user_max));
                    }
                }
                Arc::clone(key)
            }
            None => {
                if user_rooms >= config.per_user_max {
                    return Err(RoomError::UserHasTooMany(config.per_user_max));
                }
                if self.rooms.len() >= config.max as usize {
                    return Err(RoomError::ServerHasTooMany(config.max));
                }
                let network = network_key(peer);
                let made = self.by_network.entry(network).or_insert(0);
                if *made >= config.per_network_max {
                    return Err(RoomError::NetworkHasTooMany(config.per_network_max));
                }
                *made += 1;
                let key: Arc<str> = Arc::from(name);
                let room = Room::new(Some(network), config.messages_per_s_max, now_ms);
                self.rooms.insert(Arc::clone(&key), room);
                key
            }
        };
        let room = self.rooms.get_mut(&key).expect("found or inserted above");
        let sessions = room.users.entry(user).or_insert(0);
        *sessions += 1;
        if *sessions == 1 {
            let rate = config.user_messages_per_s_max;
            self.users
                .entry(user)
                .or_insert_with(|| Sender {
                    rooms: 0,
                    budget: Budget::full(rate, now_ms),
                    rest_until_ms: 0,
                })
                .rooms += 1;
        }
        let audience = room.audience(conn.shard);
        audience.conns.insert(conn.conn);
        audience.snapshot = None;
        room.sessions += 1;
        let count = room.member_count();
        self.sessions.entry(conn).or_default().push(key);
        Ok(count)
    }

    /// Takes the session out of the room; a session not in it changes nothing.
    pub fn leave(&mut self, conn: ConnRef, user: UserId, name: &str, now_ms: u64) {
        let Some(rooms) = self.sessions.get_mut(&conn) else {
            return;
        };
        let Some(i) = rooms.iter().position(|r| &**r == name) else {
            return;
        };
        let key = rooms.swap_remove(i);
        if rooms.is_empty() {
            self.sessions.remove(&conn);
        }
        self.remove_member(conn, user, &key, now_ms);
        self.end_rests(now_ms);
    }

    /// The session has gone: out of every room it was in (returned).
    pub fn close(&mut self, conn: ConnRef, user: UserId, now_ms: u64) -> SmallVec<[Arc<str>; 2]> {
        let rooms = self.sessions.remove(&conn).unwrap_or_default();
        for key in &rooms {
            self.remove_member(conn, user, key, now_ms);
        }
        self.end_rests(now_ms);
        rooms
    }

    /// Forgets the budgets of users whose rest is over and who joined nothing since.
    fn end_rests(&mut self, now_ms: u64) {
        while let Some(&(rest_until_ms, user)) = self.resting.front() {
            if rest_until_ms > now_ms {
                break;
            }
            self.resting.pop_front();
            // A user who came back, or left again since, has a later rest (and a later entry).
            if self
                .users
                .get(&user)
                .is_some_and(|s| s.rooms == 0 && s.rest_until_ms <= now_ms)
            {
                self.users.remove(&user);
            }
        }
    }

    fn remove_member(&mut self, conn: ConnRef, user: UserId, key: &str, now_ms: u64) {
        let Some(room) = self.rooms.get_mut(key) else {
            debug_assert!(false, "a session's room exists");
            return;
        };
        let audience = room.audience(conn.shard);
        let removed = audience.conns.remove(&conn.conn);
        debug_assert!(removed, "the session was in the room");
        audience.snapshot = None;
        room.sessions -= 1;
        let Some(sessions) = room.users.get_mut(&user) else {
            debug_assert!(false, "a member's user is counted");
            return;
        };
        *sessions -= 1;
        if *sessions > 0 {
            return;
        }
        room.users.remove(&user);
        if room.users.is_empty()
            && let Some(network) = room.made_by
        {
            self.rooms.remove(key);
            if let Some(made) = self.by_network.get_mut(&network) {
                *made -= 1;
                if *made == 0 {
                    self.by_network.remove(&network);
                }
            }
        }
        if let Some(sender) = self.users.get_mut(&user) {
            sender.rooms -= 1;
            if sender.rooms == 0 {
                sender.rest_until_ms = now_ms + BUDGET_REST_MS;
                self.resting.push_back((sender.rest_until_ms, user));
            }
        }
    }

    /// A message from `conn`: checks membership and both budgets, then numbers it.
    pub fn send(
        &mut self,
        conn: ConnRef,
        user: UserId,
        name: &str,
        now_ms: u64,
    ) -> Result<Outgoing, RoomError> {
        let room = self
            .rooms
            .get_mut(name)
            .filter(|r| r.has(conn))
            .ok_or(RoomError::NotIn)?;
        let sender = self.users.get_mut(&user).ok_or(RoomError::NotIn)?;
        let (room_rate, user_rate) = (
            self.config.messages_per_s_max,
            self.config.user_messages_per_s_max,
        );
        // Both checked before either is spent: a refusal costs nothing.
        room.budget
            .check(room_rate, now_ms)
            .map_err(|retry_after_ms| RoomError::RoomRate {
                per_s: room_rate,
                retry_after_ms,
            })?;
        sender
            .budget
            .check(user_rate, now_ms)
            .map_err(|retry_after_ms| RoomError::UserRate {
                per_s: user_rate,
                retry_after_ms,
            })?;
        room.budget.take();
        sender.budget.take();
        room.seq += 1;
        self.messages += 1;
        self.deliveries += u64::from(room.sessions - 1);
        let mut targets = SmallVec::new();
        for (shard, audience) in room.shards.iter_mut().enumerate() {
            let others = audience.conns.len() - usize::from(usize::from(conn.shard) == shard);
            if others == 0 {
                continue;
            }
            // Shards are numbered by `ShardId` in the first place.
            let shard = ShardId::try_from(shard).expect("a shard index fits ShardId");
            targets.push((shard, audience.snapshot()));
        }
        Ok(Outgoing {
            room_seq: room.seq,
            targets,
        })
    }

    /// The member count, for a session in the room.
    pub fn info(&self, conn: ConnRef, name: &str) -> Result<u32, RoomError> {
        self.rooms
            .get(name)
            .filter(|r| r.has(conn))
            .map(Room::member_count)
            .ok_or(RoomError::NotIn)
    }

    /// Rooms that exist now, persistent ones included.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Sessions in at least one room.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

mod cluster;
#[cfg(test)]
mod tests;
