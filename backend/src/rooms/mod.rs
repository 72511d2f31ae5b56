//! Ephemeral chat rooms: broadcast to everyone present, in the backend's memory only. Nothing
//! is stored, nothing passes the sequencer, there is no history, typing or presence. A room
//! exists while someone is in it, or always when `rooms.persistent` names it.
//!
//! `registry.rs` keeps who is where and numbers messages (`room_seq`), `budget.rs` is the
//! token bucket behind ROOM_RATE_LIMITED, `name.rs` the naming rule, `config.rs` `[rooms]`,
//! `serve.rs` the requests turned into frames.
//!
//! Every room request is served on the backend's request loop, one at a time: a message is
//! numbered and handed to the shards' inboxes before the next request is looked at, so each
//! shard sees a room's messages in `room_seq` order.
//!
//! In cluster mode a room spans the nodes: its owner node numbers its messages and knows
//! each node's part of it (`cluster/`, which says why and how).

mod budget;
pub(crate) mod cluster;
mod config;
mod name;
mod registry;
mod serve;

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

pub use config::RoomsConfig;
use registry::Registry;

/// The registry behind a lock that the request loop and the close path take briefly, never
/// across an `.await`.
pub(crate) struct Rooms {
    registry: Mutex<Registry>,
    /// Budgets run on this monotonic clock: a wall-clock step does not refill or drain them.
    started: Instant,
    /// Cluster mode: rooms span the nodes (`cluster/`). `None` on one box, whose room path
    /// is exactly as it was.
    cluster: Option<cluster::ClusterRooms>,
}

impl Rooms {
    pub fn new(config: RoomsConfig, cluster: Option<cluster::ClusterRooms>) -> Self {
        Self {
            registry: Mutex::new(Registry::new(config, 0)),
            started: Instant::now(),
            cluster,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Publishes the rooms' gauges and counters; called per scrape, so a message costs no
    /// metrics call.
    pub fn publish_metrics(&self) {
        let (rooms, sessions, messages, deliveries) = {
            let r = self.lock();
            (r.room_count(), r.session_count(), r.messages, r.deliveries)
        };
        metrics::gauge!("ringchat_rooms").set(rooms as f64);
        metrics::gauge!("ringchat_room_sessions").set(sessions as f64);
        metrics::counter!("ringchat_room_messages_total").absolute(messages);
        metrics::counter!("ringchat_room_deliveries_total").absolute(deliveries);
    }

    /// A logged-in session has gone: out of its rooms (a room left empty goes too); in
    /// cluster mode their owners are told.
    pub fn close(&self, conn: crate::api::ConnRef, user: crate::api::UserId) {
        let now_ms = self.now_ms();
        let left = self.lock().close(conn, user, now_ms);
        if self.cluster.is_some() {
            for room in left {
                self.report(&room);
            }
        }
    }
}
