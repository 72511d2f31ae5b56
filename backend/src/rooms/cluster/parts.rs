//! This node's parts of its rooms, for their owners: sent on every change, in the order they
//! changed (read and queued under the registry lock), and sent again when they did not reach
//! the owner (`resend.rs`).

use std::time::Instant;

use super::{ClusterRooms, part_item};
use crate::cluster::link::{Link, Owner};
use crate::rooms::Rooms;

impl Rooms {
    /// Sends this node's part of `name` to its owner, wanting no answer (a leave, a close, a
    /// re-registration); one that cannot be queued is sent again later (`resend.rs`).
    pub(crate) fn report(&self, name: &str) {
        self.report_skipping(name, &mut Vec::new());
    }

    /// `report`, but a room whose owner's link is in `down` is left to send again without
    /// trying; a link that refuses the part joins `down`. Returns whether it was queued.
    pub(super) fn report_skipping(&self, name: &str, down: &mut Vec<u16>) -> bool {
        let Some(c) = self.cluster() else {
            return true;
        };
        // Read, queued and noted under the registry lock: parts are absolute, so one read
        // before a change and queued after the change's would win at the owner.
        let registry = self.lock();
        let (part, delivered) = registry.part(name);
        let sent = match c.link.room_owner(name) {
            Owner::Here => {
                let now_ms = self.now_ms();
                let me = c.link.node_id();
                // A refusal (the book full) leaves the part out: sends from here are then
                // UNAVAILABLE, and it is sent again.
                c.book()
                    .set_part(me, name, part, delivered, false, now_ms)
                    .is_ok()
            }
            Owner::Elsewhere(peer) if down.contains(&peer.slot) => false,
            Owner::Elsewhere(peer) => {
                let queued =
                    Link::push_room_item(&peer, part_item(0, name, part, delivered, false));
                if !queued {
                    down.push(peer.slot);
                }
                queued
            }
            Owner::Unknown(_) => false,
        };
        if sent {
            c.resend().sent(name);
        } else {
            c.failed(name, false);
        }
        drop(registry);
        sent
    }

    /// Sends again the parts that did not reach their owner, once the pause after the last
    /// failed try is over (`resend.rs`).
    pub(super) fn resend_due(&self, c: &ClusterRooms) {
        let now = Instant::now();
        let Some(due) = c.resend().take_due(now) else {
            return;
        };
        let mut rooms = due.rooms;
        if due.all_here {
            rooms.extend(self.lock().rooms_here());
        }
        let mut down = Vec::new();
        let mut failed = false;
        for room in rooms {
            failed |= !self.report_skipping(&room, &mut down);
        }
        c.resend().passed(failed, now);
    }
}
