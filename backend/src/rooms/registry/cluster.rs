//! The registry's side of cluster mode (`rooms/cluster/`): this node's part of a room for its
//! owner, a send's checks that stay on this node (membership, the user's budget), and the
//! delivery of a message the owner numbered, never one older than what was delivered here.

use std::sync::Arc;

use super::{Registry, RoomError, Targets};
use crate::api::{ConnRef, ShardId, UserId};
use crate::rooms::cluster::book::Part;

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
