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
//!   While a join that made its user new to the room here waits, that user's other joins of
//!   the room here are refused UNAVAILABLE: asked as a member's (`new_user` false), the owner
//!   would admit them uncounted (`Registry::join_to_ask`).
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
//!   nothing): a send with no answer in time is UNAVAILABLE, and members see a gap. A node
//!   answers a part of a room it does not own by its view UNAVAILABLE and keeps nothing: the
//!   part's node sends it again later, when the views agree.
//! - **A part that did not reach the owner** (its link down or its queue full, dropped with a
//!   link that went down, or refused as above) is sent again, as the room then is, an empty
//!   room included (`resend.rs`). Parts are read and queued under the registry lock, so they
//!   leave in the order they changed here: the owner never takes an older over a newer.
//! - **Order**: every delivery on a node (and the owner's numbering with its own delivery)
//!   holds `order`, and a node delivers only a `room_seq` above the last it delivered
//!   (`Registry::deliver`): a session never sees `room_seq` go back, even while two nodes
//!   both think they own a room (their views differ for a heartbeat or two). So that the
//!   new owner's messages are not the ones dropped, it numbers above what the sender's node
//!   delivered (`NodeRoomSend.delivered_seq`) and its own; and a node that drops its owner's
//!   message as not newer sends that owner its part again, with what it delivered.
//!
//! This file holds the asking side (asks, answers, the view watch); `parts.rs` this node's
//! parts for the owners; `owner.rs` the owner's side and the deliveries; `serve.rs` the
//! client's requests; `book.rs` the owner's data; `resend.rs` the parts to send again.
//!
//! `rooms.max` and `rooms.per_network_max` stay per node (they bound this node's memory);
//! `members_max` and the room's rate are the owner's, over all nodes.

pub(crate) mod book;
mod owner;
mod parts;
mod resend;
mod serve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringchat_proto::v1::{self, NodeItem, node_item::Item};
use tokio::sync::oneshot;

use super::Rooms;
use super::registry::RoomError;
use crate::accounts::Refusal;
use crate::api::{ConnRef, ShardSender, UserId};
use crate::cluster::link::{Link, Owner, RequestIds};
use book::{Book, Part};
use resend::Resend;

/// Asks (joins, infos, sends) waiting for an owner's answer on this node, at most: past it a
/// request is refused UNAVAILABLE at once.
const ASKS_WAITING_MAX: usize = 4_096;
/// How often the view is compared with the last one seen (a change re-registers the parts),
/// and failed parts may be sent again.
const VIEW_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often every node sends every part of its rooms again, whatever happened. A part can
/// be lost where no one sees it: in flight on a link that broke, at an owner restarted under
/// the same node id (its view never changed for the others), in a refusal lost on its way
/// back. The owner would then number no message for that node's members, or count members
/// who left, until the next view change.
const PARTS_REFRESH_EVERY: Duration = Duration::from_secs(10);
/// A part its node has not reported again for this long is dropped by the owner: three
/// refreshes missed.
const PART_LEASE_MS: u64 = 3 * PARTS_REFRESH_EVERY.as_millis() as u64;

/// Ask id → (the owner's link slot, who waits).
type Waiting = HashMap<u64, (u16, oneshot::Sender<v1::NodeRoomAnswer>)>;

/// Cluster mode's part of `Rooms`.
pub(crate) struct ClusterRooms {
    link: Arc<Link>,
    shards: Vec<ShardSender>,
    /// The rooms this node owns by its view.
    book: Mutex<Book>,
    /// Ask id → (the owner's link slot, who waits). At most `ASKS_WAITING_MAX`.
    waiting: Mutex<Waiting>,
    /// Ask ids (a random start, as forward ids: a late answer to an ask of this node's
    /// previous process completes none of this one's).
    ids: RequestIds,
    /// Held by every delivery here (and the owner's numbering with it), across the shard
    /// sends: each shard gets a room's messages in `room_seq` order.
    order: tokio::sync::Mutex<()>,
    /// `cluster.forward_timeout_ms`: how long an ask waits for the owner.
    timeout: Duration,
    /// Rooms whose part did not reach its owner, to send again (at most
    /// `resend::RESEND_ROOMS_MAX`).
    resend: Mutex<Resend>,
    members_max: u32,
}

impl ClusterRooms {
    pub(crate) fn new(
        link: Arc<Link>,
        shards: Vec<ShardSender>,
        config: &super::RoomsConfig,
        nodes_max: usize,
        forward_timeout_ms: u64,
    ) -> Result<Self, String> {
        Ok(Self {
            link,
            shards,
            book: Mutex::new(Book::new(
                config,
                (config.max as usize).saturating_mul(nodes_max.max(1)),
            )),
            waiting: Mutex::default(),
            ids: RequestIds::random()?,
            order: tokio::sync::Mutex::new(()),
            timeout: Duration::from_millis(forward_timeout_ms),
            resend: Mutex::new(Resend::new(Instant::now())),
            members_max: config.members_max,
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resend(&self) -> MutexGuard<'_, Resend> {
        self.resend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The part of `room` is to be sent again (`refused`: its owner refused it).
    fn failed(&self, room: &str, refused: bool) {
        let mut resend = self.resend();
        let kept = if refused {
            resend.refused(room)
        } else {
            resend.failed(room)
        };
        if !kept {
            metrics::counter!("ringchat_room_cluster_resend_overflows_total").increment(1);
        }
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

    /// Asks the owner of `name` to take this node's part (a join with `new_user`, an info).
    pub(crate) fn ask_part(&self, name: &str, new_user: bool) -> Asked {
        let Some(c) = self.cluster() else {
            return Asked::Now(Err(RoomError::Unsettled));
        };
        // Read and queued under the registry lock, as `report`'s parts.
        let registry = self.lock();
        let (part, delivered) = registry.part(name);
        let asked = match c.link.room_owner(name) {
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
        };
        drop(registry);
        asked
    }

    /// Registers an ask under a fresh id and queues it (`push`); `Now(Unsettled)` when too
    /// many wait or it could not be queued.
    fn ask(&self, c: &ClusterRooms, slot: u16, push: impl FnOnce(u64) -> bool) -> Asked {
        let id = c.ids.next();
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
        let delivered = self.lock().part(&send.room).1;
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
                        delivered,
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
                        delivered_seq: delivered,
                    })),
                };
                Link::push_room_item(&peer, item)
            }),
            Owner::Unknown(_) => Asked::Now(Err(RoomError::Unsettled)),
        }
    }

    /// On the asking node: an owner's answer, to whoever still waits for it. One naming a
    /// room refused this node's part (not the room's owner by its view): sent again later.
    pub(crate) fn answered(&self, a: v1::NodeRoomAnswer) {
        let Some(c) = self.cluster() else {
            return;
        };
        if !a.room.is_empty() {
            c.failed(&a.room, true);
        }
        if let Some((_, tx)) = c.waiting().remove(&a.request_id) {
            let _ = tx.send(a);
        }
    }

    /// The link to the node at `slot` went down: its asks are answered UNAVAILABLE now, and
    /// the parts of `dropped` rooms (queued for it, never sent) are sent again later.
    pub(crate) fn link_down<'a>(&self, slot: u16, dropped: impl Iterator<Item = &'a str>) {
        if let Some(c) = self.cluster() {
            // Dropping the sender wakes the waiter with an error.
            c.waiting().retain(|_, (s, _)| *s != slot);
            for room in dropped {
                c.failed(room, false);
            }
        }
    }

    /// Re-registers this node's parts whenever the view changes and every
    /// `PARTS_REFRESH_EVERY`, drops from the book what this node no longer owns and the parts
    /// not reported within `PART_LEASE_MS`, and sends again the parts that did not reach their
    /// owner.
    /// Runs until the runtime stops.
    pub(crate) async fn watch_view(self: Arc<Self>) {
        let Some(c) = self.cluster() else {
            return;
        };
        let mut seen: Option<Vec<String>> = None;
        let mut refreshed = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(VIEW_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(nodes) = c.link.live_nodes() {
                let changed = seen.as_ref() != Some(&nodes);
                if changed {
                    let link = Arc::clone(&c.link);
                    c.book().retain(
                        |node| nodes.iter().any(|n| n == node),
                        |room| matches!(link.room_owner(room), Owner::Here),
                    );
                    metrics::counter!("ringchat_room_cluster_reregistrations_total").increment(1);
                    seen = Some(nodes);
                }
                if changed || refreshed.elapsed() >= PARTS_REFRESH_EVERY {
                    refreshed = tokio::time::Instant::now();
                    let expired = c.book().expire(self.now_ms().saturating_sub(PART_LEASE_MS));
                    metrics::counter!("ringchat_room_cluster_parts_expired_total")
                        .increment(expired as u64);
                    let rooms = self.lock().rooms_here();
                    let mut down = Vec::new();
                    for room in rooms {
                        self.report_skipping(&room, &mut down);
                    }
                }
                self.resend_due(c);
            }
            metrics::gauge!("ringchat_room_cluster_owned").set(c.book().len() as f64);
            metrics::gauge!("ringchat_room_cluster_resend_rooms").set(c.resend().len() as f64);
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
