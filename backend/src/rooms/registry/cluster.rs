//! The registry's side of cluster mode (`rooms/cluster/`): this node's part of a room for its
//! owner, a send's checks that stay on this node (membership, the user's budget), and the
//! delivery of a message the owner numbered, never one older than what was delivered here.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Registry, RoomError, Targets};
use crate::api::{ConnRef, ShardId, UserId};
use crate::rooms::cluster::book::Part;

/// What [`Registry::join_to_ask`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinMade {
    /// The user had no session in the room here: the owner admits them or not.
    pub new_user: bool,
    /// The session was not in the room: taken back out if the owner refuses.
    pub fresh: bool,
}

impl Registry {
    /// This node's part of `name` and the highest `room_seq` delivered here (zeros for a room
    /// that does not exist here).
    pub fn part(&self, name: &str) -> (Part, u64) {
        self.rooms.get(name).map_or((Part::default(), 0), |r| {
            let part = Part {
                users: u32::try_from(r.users.len()).unwrap_or(u32::MAX),
                sessions: r.sessions,
            };
            (part, r.seq)
        })
    }

    /// Whether `user` has a session in `name` here, and whether `conn` is one.
    pub fn presence(&self, name: &str, user: UserId, conn: ConnRef) -> (bool, bool) {
        self.rooms.get(name).map_or((false, false), |r| {
            (r.users.contains_key(&user), r.has(conn))
        })
    }

    /// A join made here (as [`Registry::join`]) before the room's owner is asked. A join that
    /// makes `user` new to the room here is the owner's to admit (`members_max` is counted
    /// there): until [`Registry::join_answered`], the user's other joins of the room on this
    /// node are refused `JoinAsked`. Asked as a member's, one would be admitted uncounted: a
    /// repeat from the same session answered RoomJoined while the refusal of the first takes
    /// the session out, another session let in past `members_max`.
    pub fn join_to_ask(
        &mut self,
        conn: ConnRef,
        user: UserId,
        peer: IpAddr,
        name: &str,
        now_ms: u64,
    ) -> Result<JoinMade, RoomError> {
        if self
            .asked
            .get(name)
            .is_some_and(|users| users.contains(&user))
        {
            return Err(RoomError::JoinAsked);
        }
        let (user_was_in, conn_was_in) = self.presence(name, user, conn);
        self.join(conn, user, peer, name, now_ms)?;
        if !user_was_in {
            let (key, _) = self.rooms.get_key_value(name).expect("joined above");
            self.asked.entry(Arc::clone(key)).or_default().push(user);
        }
        Ok(JoinMade {
            new_user: !user_was_in,
            fresh: !conn_was_in,
        })
    }

    /// The owner answered (or did not, in time) the join that made `user` new to `name` here:
    /// the user's other joins of the room go ahead again.
    pub fn join_answered(&mut self, name: &str, user: UserId) {
        if let Some(users) = self.asked.get_mut(name) {
            users.retain(|u| *u != user);
            if users.is_empty() {
                self.asked.remove(name);
            }
        }
    }

    /// Rooms with a session here, for their owners after the view changed.
    pub fn rooms_here(&self) -> Vec<Arc<str>> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.sessions > 0)
            .map(|(k, _)| Arc::clone(k))
            .collect()
    }

    /// A send's checks on the sender's node: membership and the user's budget (spent here;
    /// the room's budget is the owner's).
    pub fn may_send(
        &mut self,
        conn: ConnRef,
        user: UserId,
        name: &str,
        now_ms: u64,
    ) -> Result<(), RoomError> {
        self.rooms
            .get(name)
            .filter(|r| r.has(conn))
            .ok_or(RoomError::NotIn)?;
        let sender = self.users.get_mut(&user).ok_or(RoomError::NotIn)?;
        let rate = self.config.user_messages_per_s_max;
        sender
            .budget
            .check(rate, now_ms)
            .map_err(|retry_after_ms| RoomError::UserRate {
                per_s: rate,
                retry_after_ms,
            })?;
        sender.budget.take();
        Ok(())
    }

    /// The audience here of message `room_seq` of `name`, one list per shard (the shards skip
    /// `except`, the sender's connection when it is here); `None` when nobody is in the room
    /// here or a message as recent was delivered already (a message of an owner that lost the
    /// room, overtaken by its successor's): a session never sees `room_seq` go back.
    pub fn deliver(
        &mut self,
        name: &str,
        room_seq: u64,
        except: Option<ConnRef>,
    ) -> Option<Targets> {
        let room = self.rooms.get_mut(name)?;
        if room_seq <= room.seq {
            return None;
        }
        room.seq = room_seq;
        self.messages += 1;
        let skipped = except.is_some_and(|e| room.has(e));
        self.deliveries += u64::from(room.sessions - u32::from(skipped));
        let mut targets = Targets::new();
        for (shard, audience) in room.shards.iter_mut().enumerate() {
            if audience.conns.is_empty() {
                continue;
            }
            let shard = ShardId::try_from(shard).expect("a shard index fits ShardId");
            targets.push((shard, audience.snapshot()));
        }
        Some(targets)
    }
}
