//! Chat rooms across a cluster: a room name means one room on every node.
//!
//! A room has one owner node at a time: rendezvous hashing of the room's key
//! (`rendezvous::room_key`) over the view's live nodes, as a conversation's owner. The owner
//! keeps `book.rs`: each node's part of the room (its users and sessions there), the room's
//! `room_seq` and budget. Every node keeps its own sessions in the registry, as one box does,
//! and tells the owner its part whenever it changes (`NodeRoomPart`, absolute counts):
//!
//! - **Join** asks the owner (a round trip, `cluster.forward_timeout_ms` at most): the owner
//!   refuses ROOM_FULL past `rooms.members_max` over all nodes, else answers the member count.
//!   The join is made here first and taken back on a refusal or no answer (UNAVAILABLE).
//! - **Leave, close**: the new part, fire-and-forget. **Info** asks the owner, with the part.
//! - **Send**: membership and the user's budget are checked on the sender's node (the user
//!   budget stays per node); the owner applies the room's budget, numbers the message and
//!   queues one `NodeRoomMessage` per node with sessions in the room (not one per member);
//!   each node hands it to its sessions through the registry's per-shard lists. RoomSent is
//!   answered once the owner numbered it.
//! - **The view changes** (a node joins or leaves): every node sends the part of each of its
//!   rooms to the owner it now computes, with the highest `room_seq` delivered here; the owner
//!   drops the parts of nodes gone and the rooms it no longer owns, and numbers on from the
//!   highest `room_seq` reported. What was in flight at a lost owner is lost (rooms store
//!   nothing): a send with no answer in time is UNAVAILABLE, and members see a gap.
//! - **Order**: every delivery on a node (and the owner's numbering with its own delivery)
//!   holds `order`, and a node delivers only a `room_seq` above the last it delivered
//!   (`Registry::deliver`): a session never sees `room_seq` go back, even while two nodes
//!   both think they own a room (their views differ for a heartbeat or two).
//!
//! This file holds the asking side (parts, asks, answers, the view watch); `owner.rs` the
//! owner's side and the deliveries; `serve.rs` the client's requests; `book.rs` the owner's
//! data.
//!
//! `rooms.max` and `rooms.per_network_max` stay per node (they bound this node's memory);
//! `members_max` and the room's rate are the owner's, over all nodes.

pub(crate) mod book;
mod owner;
mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ringchat_proto::v1::{self, NodeItem, node_item::Item};
use tokio::sync::oneshot;

use super::Rooms;
use super::registry::RoomError;
use crate::accounts::Refusal;
use crate::api::{ConnRef, ShardSender, UserId};
use crate::cluster::link::{Link, Owner};
use book::{Book, Part};

/// Asks (joins, infos, sends) waiting for an owner's answer on this node, at most: past it a
/// request is refused UNAVAILABLE at once.
const ASKS_WAITING_MAX: usize = 4_096;
/// How often the view is compared with the last one seen (a change re-registers the parts).
const VIEW_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Ask id → (the owner's link slot, who waits).
type Waiting = HashMap<u64, (u16, oneshot::Sender<v1::NodeRoomAnswer>)>;

/// Cluster mode's part of `Rooms`.
pub(crate) struct ClusterRooms {
    link: Arc<Link>,
    shards: Vec<ShardSender>,
    /// The rooms this node owns (or has been told of by nodes whose view says so).
    book: Mutex<Book>,
    /// Ask id → (the owner's link slot, who waits). At most `ASKS_WAITING_MAX`.
    waiting: Mutex<Waiting>,
    next: AtomicU64,
    /// Held by every delivery here (and the owner's numbering with it), across the shard
    /// sends: each shard gets a room's messages in `room_seq` order.
    order: tokio::sync::Mutex<()>,
    /// `cluster.forward_timeout_ms`: how long an ask waits for the owner.
    timeout: Duration,
    /// A part could not be queued for its owner: every part is sent again on the next check.
    dirty: AtomicBool,
    members_max: u32,
}

impl ClusterRooms {
    pub(crate) fn new(
        link: Arc<Link>,
        shards: Vec<ShardSender>,
        config: &super::RoomsConfig,
        nodes_max: usize,
        forward_timeout_ms: u64,
    ) -> Self {
        Self {
            link,
            shards,
            book: Mutex::new(Book::new(
                config,
                (config.max as usize).saturating_mul(nodes_max.max(1)),
            )),
            waiting: Mutex::default(),
            next: AtomicU64::new(1),
            order: tokio::sync::Mutex::new(()),
            timeout: Duration::from_millis(forward_timeout_ms),
            dirty: AtomicBool::new(false),
            members_max: config.members_max,
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An ask's outcome: answered at once (this node owns the room), or later by another node.
pub(crate) enum Asked {
    Now(Result<v1::NodeRoomAnswer, RoomError>),
    Later(u64, oneshot::Receiver<v1::NodeRoomAnswer>),
}

impl Rooms {
    pub(crate) fn cluster(&self) -> Option<&ClusterRooms> {
        self.cluster.as_ref()
    }

    /// Sends this node's part of `name` to its owner, wanting no answer (a leave, a close, a
    /// re-registration). Not queued: `dirty`, sent again on the next check.
    pub(crate) fn report(&self, name: &str) {
        let Some(c) = self.cluster() else {
            return;
        };
        let (part, delivered) = self.lock().part(name);
        let sent = match c.link.room_owner(name) {
            Owner::Here => {
                let now_ms = self.now_ms();
                let me = c.link.node_id();
                // A refusal (the book full) leaves the part out: sends from here are then
                // UNAVAILABLE, and the next check sends it again.
                c.book()
                    .set_part(me, name, part, delivered, false, now_ms)
                    .is_ok()
            }
            Owner::Elsewhere(peer) => {
                Link::push_room_item(&peer, part_item(0, name, part, delivered, false))
            }
            Owner::Unknown(_) => false,
        };
        if !sent {
            c.dirty.store(true, Relaxed);
        }
    }

    /// Asks the owner of `name` to take this node's part (a join with `new_user`, an info).
    pub(crate) fn ask_part(&self, name: &str, new_user: bool) -> Asked {
        let Some(c) = self.cluster() else {
            return Asked::Now(Err(RoomError::Unsettled));
        };
        let (part, delivered) = self.lock().part(name);
        match c.link.room_owner(name) {
            Owner::Here => {
                let now_ms = self.now_ms();
                let me = c.link.node_id();
                Asked::Now(
                    c.book()
                        .set_part(me, name, part, delivered, new_user, now_ms)
                        .map(|member_count| v1::NodeRoomAnswer {
                            member_count,
                            ..Default::default()
                        }),
                )
            }
            Owner::Elsewhere(peer) => self.ask(c, peer.slot, |id| {
                let item = part_item(id, name, part, delivered, new_user);
                Link::push_room_item(&peer, item)
            }),
            Owner::Unknown(_) => Asked::Now(Err(RoomError::Unsettled)),
        }
    }

    /// Registers an ask under a fresh id and queues it (`push`); `Now(Unsettled)` when too
    /// many wait or it could not be queued.
    fn ask(&self, c: &ClusterRooms, slot: u16, push: impl FnOnce(u64) -> bool) -> Asked {
        let id = c.next.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = c.waiting();
            if waiting.len() >= ASKS_WAITING_MAX {
                metrics::counter!("ringchat_room_cluster_refused_total", "reason" => "asks_full")
                    .increment(1);
                return Asked::Now(Err(RoomError::Unsettled));
            }
            waiting.insert(id, (slot, tx));
        }
        if !push(id) {
            c.waiting().remove(&id);
            metrics::counter!("ringchat_room_cluster_refused_total", "reason" => "not_queued")
                .increment(1);
            return Asked::Now(Err(RoomError::Unsettled));
        }
        Asked::Later(id, rx)
    }

    /// Waits for the answer to ask `id`, at most `cluster.forward_timeout_ms`.
    pub(crate) async fn answer(
        &self,
        id: u64,
        rx: oneshot::Receiver<v1::NodeRoomAnswer>,
    ) -> Result<v1::NodeRoomAnswer, Refusal> {
        let Some(c) = self.cluster() else {
            return Err(RoomError::Unsettled.into());
        };
        let got = tokio::time::timeout(c.timeout, rx).await;
        c.waiting().remove(&id);
        match got {
            Ok(Ok(a)) if a.error_code == 0 => Ok(a),
            Ok(Ok(a)) => Err(Refusal {
                code: v1::ErrorCode::try_from(a.error_code).unwrap_or(v1::ErrorCode::Unavailable),
                message: a.error_message,
                retry_after_ms: a.retry_after_ms,
            }),
            Ok(Err(_)) => {
                metrics::counter!("ringchat_room_cluster_refused_total", "reason" => "down")
                    .increment(1);
                Err(RoomError::Unsettled.into())
            }
            Err(_) => {
                metrics::counter!("ringchat_room_cluster_refused_total", "reason" => "timeout")
                    .increment(1);
                Err(RoomError::Unsettled.into())
            }
        }
    }

    /// A send from `conn` (its checks here passed): numbered here if this node owns the room,
    /// else queued for the owner.
    pub(crate) async fn send_clustered(
        &self,
        conn: ConnRef,
        user: UserId,
        send: &v1::RoomSend,
    ) -> Asked {
        let Some(c) = self.cluster() else {
            return Asked::Now(Err(RoomError::Unsettled));
        };
        let origin = c.link.origin_here(conn);
        match c.link.room_owner(&send.room) {
            Owner::Here => {
                let me = c.link.node_id().to_owned();
                let numbered = self
                    .number_and_send(
                        c,
                        &me,
                        &origin,
                        user,
                        send.content_type,
                        &send.content,
                        &send.room,
                    )
                    .await;
                Asked::Now(numbered.map(|room_seq| v1::NodeRoomAnswer {
                    room_seq,
                    ..Default::default()
                }))
            }
            Owner::Elsewhere(peer) => self.ask(c, peer.slot, |id| {
                let item = NodeItem {
                    item: Some(Item::RoomSend(v1::NodeRoomSend {
                        request_id: id,
                        room: send.room.clone(),
                        origin: Some(origin),
                        from_user_id: user,
                        content_type: send.content_type,
                        content: send.content.clone(),
                    })),
                };
                Link::push_room_item(&peer, item)
            }),
            Owner::Unknown(_) => Asked::Now(Err(RoomError::Unsettled)),
        }
    }

    /// On the asking node: an owner's answer, to whoever still waits for it.
    pub(crate) fn answered(&self, a: v1::NodeRoomAnswer) {
        let Some(c) = self.cluster() else {
            return;
        };
        if let Some((_, tx)) = c.waiting().remove(&a.request_id) {
            let _ = tx.send(a);
        }
    }

    /// The link to the owner at `slot` went down: its asks are answered UNAVAILABLE now.
    pub(crate) fn link_down(&self, slot: u16) {
        if let Some(c) = self.cluster() {
            // Dropping the sender wakes the waiter with an error.
            c.waiting().retain(|_, (s, _)| *s != slot);
        }
    }

    /// Re-registers this node's parts whenever the view changes (or a part could not be
    /// queued), and drops from the book what this node no longer owns. Runs until the
    /// runtime stops.
    pub(crate) async fn watch_view(self: Arc<Self>) {
        let Some(c) = self.cluster() else {
            return;
        };
        let mut seen: Option<Vec<String>> = None;
        let mut tick = tokio::time::interval(VIEW_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(nodes) = c.link.live_nodes() else {
                continue;
            };
            let changed = seen.as_ref() != Some(&nodes);
            if !changed && !c.dirty.swap(false, Relaxed) {
                continue;
            }
            if changed {
                let link = Arc::clone(&c.link);
                c.book().retain(
                    |node| nodes.iter().any(|n| n == node),
                    |room| matches!(link.room_owner(room), Owner::Here),
                );
                metrics::counter!("ringchat_room_cluster_reregistrations_total").increment(1);
                seen = Some(nodes);
            }
            c.dirty.store(false, Relaxed);
            let rooms = self.lock().rooms_here();
            for room in rooms {
                self.report(&room);
            }
            metrics::gauge!("ringchat_room_cluster_owned").set(c.book().len() as f64);
        }
    }
}

fn part_item(request_id: u64, room: &str, part: Part, delivered: u64, new_user: bool) -> NodeItem {
    NodeItem {
        item: Some(Item::RoomPart(v1::NodeRoomPart {
            request_id,
            room: room.to_owned(),
            users: part.users,
            sessions: part.sessions,
            delivered_seq: delivered,
            new_user,
        })),
    }
}
