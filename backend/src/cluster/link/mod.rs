//! Node-to-node links (issue 14, parts 3–4): forwarded writes, their answers, and durable
//! groups' frames between the nodes of a cluster, over one long-lived `Node/Link` gRPC stream
//! per peer and direction (`node.proto`).
//!
//! - Origin → owner: a shard's write whose conversation another live node owns (`owner_of`)
//!   is queued for that node (`forward`) instead of the local sequencer; the origin keeps it in
//!   `pending` until the answer comes back (`pending.rs`: answered UNAVAILABLE on a deadline
//!   or when the link drops, so nothing hangs).
//! - Owner: the write goes through its sequencer as a write of a remote connection
//!   (`wire::remote`: a `ConnRef` with the remote bit); delivery gathers what a group sends to
//!   other nodes (`Outbound`) and `send_group` queues it once per destination node.
//! - Destination: `serve.rs` hands frames to its local sessions, one event per shard per batch.
//!
//! Every peer queue is bounded (`peer_queue_items_max`); a full queue or a link that is down
//! refuses at once: a forwarded write gets UNAVAILABLE with `retry_after_ms`, dropped frames
//! are caught up by seq (the batch after a drop carries `missed`, see `serve.rs`): the
//! receiving node tells its sessions to Sync (`hint.rs`).

mod hint;
mod kicks;
mod newcomers;
mod peer;
mod pending;
mod queue;
mod secret;
mod serve;
mod system;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};
use tokio::sync::watch;

pub use kicks::KickStores;
pub use serve::NodeService;
pub(crate) use wire::is_remote;

use super::{Cluster, ClusterConfig};
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, ShardEvent, ShardSender, WriteRequest};
use crate::groups::online::GroupOnline;
use crate::messaging::Submitted;
use crate::messaging::writer::{Write, convs_of};
use crate::observe::otlp::{MsgSpan, Traceparent};
use crate::sessions::SharedSessions;
use crate::store::ConvId;
use opentelemetry::trace::SpanKind;
use peer::Peer;
use pending::Pending;

/// How often forwarded writes past their deadline are answered.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// This node's links to its peers. Built with the backend (cluster mode); live once
/// `attach` has given it the node view and a runtime.
pub struct Link {
    me: String,
    /// This process's mark on the connections it names to other nodes (`wire::origin`): an
    /// answer meant for a connection of an earlier process of this node, still on its way
    /// when that process died, never reaches the connection that took its id since.
    tag: u8,
    config: ClusterConfig,
    attached: OnceLock<(Arc<Cluster>, tokio::runtime::Handle)>,
    /// `[cluster.tls]`, set by `attach`: peers are dialed over TLS, and a `Link` stream is
    /// taken only with a client certificate the CA signed.
    tls: OnceLock<super::tls::NodeTls>,
    peers: Mutex<Peers>,
    pending: Pending,
    shards: Vec<ShardSender>,
    sessions: SharedSessions,
    online: Arc<GroupOnline>,
    /// `groups.typing_members_max`: typing in a group is relayed by each node only while the
    /// group has at most this many online connections there.
    typing_members_max: usize,
    /// `limits.frame_bytes_max`: the links' item and message limits derive from it.
    frame_bytes_max: usize,
    stop: watch::Sender<bool>,
    /// `SyncNeeded` to every session here when a peer's pushes were lost (`hint.rs`).
    hints: hint::SyncHints,
    /// Peers that have had an incoming stream here: a new stream from one of them is a link
    /// that came back (frames for this node may have been lost meanwhile). One entry per
    /// node id of the view, bounded by `nodes_max`.
    streamed: Mutex<std::collections::HashSet<String>>,
    /// What a kick from another node is checked against before it ends a session
    /// (`kicks.rs`); set once by the backend. Unset (tests): kicks end what they name.
    kick_stores: OnceLock<KickStores>,
    /// System notification batches sent to their owners, awaiting answers (`system.rs`).
    system: system::SystemPending,
    /// Nodes entering the view are told they may have missed pushes (`newcomers.rs`).
    newcomers: newcomers::Newcomers,
}

#[derive(Default)]
struct Peers {
    by_id: HashMap<String, Arc<Peer>>,
    /// Indexed by slot; a slot is never given to another node id (a departed node's peer is
    /// parked, not removed, and takes its slot again if the node comes back). Bounded by
    /// `wire::SLOTS_MAX` distinct node ids per process: past it a write owned by a new node
    /// is refused UNAVAILABLE (`Owner::Unknown`).
    by_slot: Vec<Arc<Peer>>,
}

/// What one durable group sends to other nodes, gathered by delivery in outcome order.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    items: Vec<Out>,
    /// The trace context of the write whose items are being added (delivery sets it for a
    /// traced write's outcome): each item of it carries the context to the other node.
    pub(crate) trace: Option<Traceparent>,
}

#[derive(Debug)]
enum Out {
    Answer {
        conn: ConnRef,
        request_id: u64,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Users {
        users: Vec<u64>,
        except: ConnRef,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Group {
        g: u64,
        except: ConnRef,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Member {
        g: u64,
        user: u64,
        joined: bool,
    },
}

impl Outbound {
    pub(crate) fn answer(&mut self, conn: ConnRef, request_id: u64, frame: Bytes) {
        self.items.push(Out::Answer {
            conn,
            request_id,
            frame,
            trace: self.trace,
        });
    }

    pub(crate) fn users(&mut self, users: &[u64], except: ConnRef, frame: &Bytes) {
        self.items.push(Out::Users {
            users: users.to_vec(),
            except,
            frame: frame.clone(),
            trace: self.trace,
        });
    }

    pub(crate) fn group(&mut self, g: ConvId, except: ConnRef, frame: &Bytes) {
        self.items.push(Out::Group {
            g: g.to_wire(),
            except,
            frame: frame.clone(),
            trace: self.trace,
        });
    }

    pub(crate) fn member(&mut self, g: ConvId, user: u64, joined: bool) {
        self.items.push(Out::Member {
            g: g.to_wire(),
            user,
            joined,
        });
    }
}

/// An item's `traceparent` field: empty when not traced.
fn traceparent(trace: Option<Traceparent>) -> String {
    trace.map(|t| t.encode()).unwrap_or_default()
}

/// `except` as the destination at `slot` names it: its own connection, or none.
fn except_for(except: ConnRef, slot: u16) -> Option<v1::OriginConn> {
    wire::origin_of(except)
        .filter(|(s, _)| *s == slot)
        .map(|(_, o)| o)
}

impl Link {
    pub(crate) fn new(
        config: &ClusterConfig,
        shards: Vec<ShardSender>,
        sessions: SharedSessions,
        online: Arc<GroupOnline>,
        typing_members_max: usize,
        frame_bytes_max: usize,
    ) -> Result<Arc<Self>, String> {
        if shards.len() > wire::SHARDS_MAX {
            return Err(format!(
                "cluster mode: at most {} gateway shards per node (gateway.cores lists {})",
                wire::SHARDS_MAX,
                shards.len()
            ));
        }
        let mut tag = [0u8; 1];
        getrandom::fill(&mut tag).map_err(|e| format!("cluster: no random bytes: {e}"))?;
        Ok(Arc::new(Self {
            me: config.node_id.clone(),
            tag: tag[0].max(1),
            config: config.clone(),
            attached: OnceLock::new(),
            tls: OnceLock::new(),
            peers: Mutex::default(),
            pending: Pending::new(config.forwards_pending_max),
            shards,
            sessions,
            online,
            typing_members_max,
            frame_bytes_max,
            stop: watch::channel(false).0,
            hints: hint::SyncHints::default(),
            streamed: Mutex::default(),
            kick_stores: OnceLock::new(),
            system: system::SystemPending::default(),
            newcomers: newcomers::Newcomers::default(),
        }))
    }

    /// The largest item a link carries, in bytes (`wire::item_bytes_max`).
    fn item_bytes_max(&self) -> usize {
        wire::item_bytes_max(self.frame_bytes_max)
    }

    /// The gRPC message limit of the links, both ways, in bytes (`wire::message_bytes_max`).
    fn message_bytes_max(&self) -> usize {
        wire::message_bytes_max(self.config.peer_batch_bytes_max, self.frame_bytes_max)
    }

    /// The stores kicks from other nodes are checked against (`kicks.rs`).
    pub(crate) fn set_kick_stores(&self, stores: KickStores) {
        let _ = self.kick_stores.set(stores);
    }

    /// Goes live: peers are read from `cluster`'s view and their tasks run on `runtime`;
    /// `tls`: `[cluster.tls]`. Starts the sweeper of forwarded writes past their deadline.
    pub fn attach(
        self: &Arc<Self>,
        cluster: Arc<Cluster>,
        runtime: tokio::runtime::Handle,
        tls: Option<super::tls::NodeTls>,
    ) {
        if let Some(tls) = tls {
            let _ = self.tls.set(tls);
        }
        if self.attached.set((cluster, runtime.clone())).is_err() {
            return;
        }
        runtime.spawn(hint::run(Arc::clone(self)));
        let link = Arc::clone(self);
        runtime.spawn(async move {
            let mut stop = link.stop.subscribe();
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                link.welcome_newcomers();
                let expired = link.pending.take_where(Instant::now(), None);
                if !expired.is_empty() {
                    metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => "timeout")
                        .increment(expired.len() as u64);
                    link.answer_unavailable(expired, "the conversation's owner node did not answer in time; retry").await;
                }
            }
        });
    }

    /// Stops the peer tasks and the incoming streams (shutdown).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    fn view_nodes(&self) -> Option<Arc<super::ClusterView>> {
        self.attached.get().map(|(c, _)| c.view())
    }

    /// The peer for a live node, made (and its task started) on first use.
    fn peer(self: &Arc<Self>, node_id: &str, addr: &str) -> Option<Arc<Peer>> {
        let (_, runtime) = self.attached.get()?;
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.by_id.get(node_id) {
            if let Ok(mut a) = p.addr.lock()
                && *a != addr
            {
                addr.clone_into(&mut *a);
            }
            // Back in the view after its task was parked (`park`): same slot, a new task.
            if p.parked.swap(false, Relaxed) {
                p.reopen();
                tracing::info!(peer = %node_id, "cluster: a departed peer is back in the view; dialing it again");
                runtime.spawn(peer::run(Arc::clone(self), Arc::clone(p)));
            }
            return Some(Arc::clone(p));
        }
        let slot = u16::try_from(peers.by_slot.len())
            .ok()
            .filter(|s| *s < wire::SLOTS_MAX)?;
        let peer = Arc::new(Peer::new(
            node_id.to_owned(),
            slot,
            addr.to_owned(),
            self.config.peer_queue_items_max,
            self.config.peer_kicks_pending_max,
        ));
        peers.by_id.insert(node_id.to_owned(), Arc::clone(&peer));
        peers.by_slot.push(Arc::clone(&peer));
        runtime.spawn(peer::run(Arc::clone(self), Arc::clone(&peer)));
        Some(peer)
    }

    fn peer_by_slot(&self, slot: u16) -> Option<Arc<Peer>> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.by_slot.get(usize::from(slot)).cloned()
    }

    /// The peer of `node_id`: by the view, or else the peer already made for it (a node
    /// missing from this view that still streams here is alive: its writes are taken, and
    /// answered on the link it already has).
    fn peer_by_id(self: &Arc<Self>, node_id: &str) -> Option<Arc<Peer>> {
        let view = self.view_nodes()?;
        match view.nodes.iter().find(|n| n.record.node_id == node_id) {
            Some(node) => self.peer(node_id, &node.record.advertise_addr),
            None => {
                let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
                peers
                    .by_id
                    .get(node_id)
                    .filter(|p| !p.parked.load(Relaxed))
                    .cloned()
            }
        }
    }

    /// Whether `node_id` is in this node's view.
    fn in_view(&self, node_id: &str) -> bool {
        self.view_nodes().is_some_and(|v| v.has(node_id))
    }

    /// Parks `peer`'s task (it ends after this) unless its node is in the view again: called
    /// by the task once the node has been out of the view for `node_ttl_ms`. Its slot stays
    /// its own; `peer` starts a new task if the node comes back. Under the peers' lock, so a
    /// concurrent `peer` either sees the peer parked (and restarts it) or it is not parked.
    fn park(&self, peer: &Peer) -> bool {
        let _peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if self.in_view(&peer.node_id) {
            return false;
        }
        peer.parked.store(true, Relaxed);
        true
    }

    /// Who sequences `write`: this node, another live node (its peer), or nobody known right
    /// now. Writes that name no conversation (group creation, the DM policy) stay here.
    pub(crate) fn owner_elsewhere(self: &Arc<Self>, write: &Write) -> Owner {
        let mut convs = Vec::new();
        convs_of(write, &mut convs);
        match convs.first() {
            Some(conv) => self.owner(conv.to_wire()),
            None => Owner::Here,
        }
    }

    /// Who sequences conversation `conv` (its wire id) by this node's view. `Unknown` until
    /// this node has joined and its view holds it (before that, or with Redis unreachable from
    /// the start, the view is empty or holds only what was read: a write taken here would
    /// claim a conversation another node owns, and the frames it sends would miss nodes the
    /// view lacks), and when no peer can be made for the owner: never "here" by default.
    pub(crate) fn owner(self: &Arc<Self>, conv: u64) -> Owner {
        let Some(view) = self.view_nodes() else {
            return Owner::Unknown(NOT_JOINED);
        };
        if !view.joined || !view.has(&self.me) {
            return Owner::Unknown(NOT_JOINED);
        }
        let Some(owner) = view.owner_of(conv) else {
            return Owner::Unknown(NOT_JOINED);
        };
        if owner.record.node_id == self.me {
            return Owner::Here;
        }
        match self.peer(&owner.record.node_id, &owner.record.advertise_addr) {
            Some(peer) => Owner::Elsewhere(peer),
            None => Owner::Unknown(NO_PEER),
        }
    }

    /// Queues a write for its owner `peer`; the answer comes back through `serve.rs`.
    pub(crate) fn forward(
        &self,
        peer: &Peer,
        conn: ConnRef,
        user: u64,
        device_id: String,
        request_id: u64,
        request: WriteRequest,
    ) -> Submitted {
        let key = (conn, request_id);
        let deadline = Instant::now() + Duration::from_millis(self.config.forward_timeout_ms);
        // A traced message's trace starts here, on its sender's node: this span lasts until
        // the owner's answer is back (or the write is answered UNAVAILABLE).
        let mut span = match request {
            WriteRequest::Send(_) => MsgSpan::root("ringchat.forward", SpanKind::Client),
            _ => None,
        };
        if let Some(span) = &mut span {
            span.set("ringchat.peer", peer.node_id.clone());
        }
        let trace = traceparent(span.as_ref().map(MsgSpan::traceparent));
        if request_id != 0 && !self.pending.insert(key, peer.slot, deadline, span) {
            metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => "pending_full")
                .increment(1);
            return Submitted::Refused(busy("too many writes wait for other nodes; retry"));
        }
        let item = NodeItem {
            item: Some(Item::Forward(v1::Forward {
                origin: Some(wire::origin(conn, self.tag)),
                user_id: user,
                device_id,
                request_id,
                frame: wire::encode_write(request),
                traceparent: trace,
            })),
        };
        match peer.push_all(vec![item]) {
            Ok(()) => {
                metrics::counter!("ringchat_cluster_forwarded_writes_total").increment(1);
                Submitted::Queued
            }
            Err(why) => {
                self.pending.forget(key);
                metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => why.label())
                    .increment(1);
                Submitted::Refused(busy(
                    "the conversation's owner node cannot be reached right now; retry",
                ))
            }
        }
    }

    /// The nodes a durable group's frames go to besides this one: for pushes to users, the
    /// nodes where the routes (`cluster/routes/`) place any of them (every other live node for
    /// users the routes do not know, or while they are not trusted); for group audiences and
    /// membership changes, every other live node (each node resolves a group's online members
    /// itself; the owner does not read member lists to route).
    fn destinations(self: &Arc<Self>, out: &Outbound) -> Vec<Arc<Peer>> {
        let Some(view) = self.view_nodes() else {
            return Vec::new();
        };
        let only_users = out
            .items
            .iter()
            .all(|i| matches!(i, Out::Answer { .. } | Out::Users { .. }));
        let routes = self.attached.get().and_then(|(c, _)| c.routes());
        let wanted: Option<Vec<Arc<str>>> = match routes {
            Some(routes) if only_users => {
                let mut users: Vec<u64> = out
                    .items
                    .iter()
                    .filter_map(|i| match i {
                        Out::Users { users, .. } => Some(users.iter().copied()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                users.sort_unstable();
                users.dedup();
                Some(
                    routes
                        .nodes_of(&users)
                        .nodes
                        .into_iter()
                        .map(|d| d.node_id)
                        .collect(),
                )
            }
            _ => None,
        };
        view.nodes
            .iter()
            .filter(|n| n.record.node_id != self.me)
            .filter(|n| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|id| **id == *n.record.node_id))
            })
            .filter_map(|n| self.peer(&n.record.node_id, &n.record.advertise_addr))
            .collect()
    }

    /// On the owner, after a durable group: its answers to their origin nodes, its frames to
    /// every destination node, each node's part queued at once (or dropped at once).
    pub(crate) fn send_group(self: &Arc<Self>, out: Outbound) {
        if out.items.is_empty() {
            return;
        }
        let fans = out.items.iter().any(|i| !matches!(i, Out::Answer { .. }));
        if fans && self.view_nodes().is_some_and(|v| !v.joined) {
            self.newcomers
                .fanned_unjoined
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut per_peer: Vec<(Arc<Peer>, Vec<NodeItem>)> = if fans {
            self.destinations(&out)
                .into_iter()
                .map(|p| (p, Vec::new()))
                .collect()
        } else {
            Vec::new()
        };
        for item in out.items {
            match item {
                Out::Answer {
                    conn,
                    request_id,
                    frame,
                    trace,
                } => {
                    let Some((slot, origin)) = wire::origin_of(conn) else {
                        continue;
                    };
                    let answer = NodeItem {
                        item: Some(Item::Answer(v1::Answer {
                            origin: Some(origin),
                            request_id,
                            frame,
                            traceparent: traceparent(trace),
                        })),
                    };
                    match per_peer.iter_mut().find(|(p, _)| p.slot == slot) {
                        Some((_, items)) => items.push(answer),
                        None => {
                            if let Some(p) = self.peer_by_slot(slot) {
                                per_peer.push((p, vec![answer]));
                            }
                        }
                    }
                }
                Out::Users {
                    users,
                    except,
                    frame,
                    trace,
                } => {
                    for (p, items) in &mut per_peer {
                        items.push(NodeItem {
                            item: Some(Item::ToUsers(v1::ToUsers {
                                user_ids: users.clone(),
                                except: except_for(except, p.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                            })),
                        });
                    }
                }
                Out::Group {
                    g,
                    except,
                    frame,
                    trace,
                } => {
                    for (p, items) in &mut per_peer {
                        items.push(NodeItem {
                            item: Some(Item::ToGroup(v1::ToGroup {
                                group_id: g,
                                except: except_for(except, p.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                            })),
                        });
                    }
                }
                Out::Member { g, user, joined } => {
                    for (_, items) in &mut per_peer {
                        items.push(NodeItem {
                            item: Some(Item::MemberChange(v1::NodeMemberChange {
                                group_id: g,
                                user_id: user,
                                joined,
                            })),
                        });
                    }
                }
            }
        }
        for (peer, items) in per_peer {
            if !items.is_empty() {
                // Refused: counted by the peer; answers lost are answered by the origin's
                // deadline, frames lost are caught up by seq.
                let _ = peer.push_all(items);
            }
        }
    }

    /// Typing, to the other nodes where it may have an audience: for a direct conversation
    /// (`to`: its other member) the nodes the routes place them on; for a group (`to` empty)
    /// every other live node (each resolves the group's online members itself). Best effort:
    /// never waits, dropped when a peer's queue is half full or its link is down.
    pub(crate) fn send_typing(self: &Arc<Self>, conversation_id: u64, from: u64, to: &[u64]) {
        let Some(view) = self.view_nodes() else {
            return;
        };
        let routes = self.attached.get().and_then(|(c, _)| c.routes());
        let wanted: Option<Vec<Arc<str>>> = match routes {
            Some(routes) if !to.is_empty() => Some(
                routes
                    .nodes_of(to)
                    .nodes
                    .into_iter()
                    .map(|d| d.node_id)
                    .collect(),
            ),
            _ => None,
        };
        for node in view.nodes.iter().filter(|n| n.record.node_id != self.me) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.iter().any(|id| **id == *node.record.node_id))
            {
                continue;
            }
            if let Some(peer) = self.peer(&node.record.node_id, &node.record.advertise_addr) {
                peer.push_best_effort(vec![NodeItem {
                    item: Some(Item::Typing(v1::NodeTyping {
                        conversation_id,
                        from_user_id: from,
                        user_ids: to.to_vec(),
                    })),
                }]);
            }
        }
    }

    /// A kick of a user's sessions (`device`'s only, when given), to every other live node:
    /// an operator's disable or a password change on this node ends the user's sessions
    /// everywhere. Each peer remembers it until that node confirms it applied it, and sends it
    /// again on each new stream meanwhile (`kicks.rs`): a link that is down or breaks delays a
    /// kick, it does not lose it.
    pub(crate) fn send_kick(
        self: &Arc<Self>,
        user_id: u64,
        device: Option<&str>,
        reason: v1::KickReason,
    ) {
        let Some(view) = self.view_nodes() else {
            return;
        };
        let kick = kicks::Kick {
            reason: reason as i32,
            issued_at_ms: crate::time::now_ms(),
        };
        for node in view.nodes.iter().filter(|n| n.record.node_id != self.me) {
            if let Some(peer) = self.peer(&node.record.node_id, &node.record.advertise_addr) {
                peer.kick(user_id, device, kick);
            }
        }
    }

    /// A link went down: its forwarded writes waiting here are answered UNAVAILABLE now.
    fn link_down(self: &Arc<Self>, peer: &Peer, dropped: Vec<NodeItem>) {
        self.system_link_down(peer.slot);
        let waiting = self.pending.take_where(Instant::now(), Some(peer.slot));
        let forwards = dropped
            .iter()
            .filter(|i| matches!(i.item, Some(Item::Forward(_))))
            .count();
        metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => "down")
            .increment(forwards as u64);
        if waiting.is_empty() {
            return;
        }
        let link = Arc::clone(self);
        if let Some((_, runtime)) = self.attached.get() {
            runtime.spawn(async move {
                link.answer_unavailable(
                    waiting,
                    "the link to the conversation's owner node went down; retry",
                )
                .await;
            });
        }
    }

    async fn answer_unavailable(&self, keys: Vec<pending::Key>, why: &str) {
        let error = ringchat_proto::Body::Error(busy(why));
        let mut per_shard: Vec<Vec<Outgoing>> = vec![Vec::new(); self.shards.len()];
        for (conn, request_id) in keys {
            if let Some(list) = per_shard.get_mut(usize::from(conn.shard)) {
                let frame = crate::api::encoded(request_id, error.clone());
                list.push(Outgoing::One(conn.conn, frame));
            }
        }
        self.to_shards(per_shard).await;
    }

    async fn to_shards(&self, per_shard: Vec<Vec<Outgoing>>) {
        for (shard, frames) in per_shard.into_iter().enumerate() {
            if !frames.is_empty() {
                // A shard that has stopped (shutdown) takes nothing more.
                let _ = self.shards[shard].send(ShardEvent::Frames(frames)).await;
            }
        }
    }

    /// Forwarded writes waiting for an answer on this node (for tests and the overview).
    pub fn forwards_waiting(&self) -> usize {
        self.pending.len()
    }
}

/// Why a write's owner is not known (`Owner::Unknown`).
const NOT_JOINED: &str =
    "this node has not joined the cluster yet (the node registry in Redis not read); retry";
const NO_PEER: &str = "the conversation's owner node cannot be linked to from this node; retry";

/// Who sequences a write (`Link::owner_elsewhere`).
pub(crate) enum Owner {
    /// This node's sequencer.
    Here,
    /// Another live node: forwarded on its link.
    Elsewhere(Arc<Peer>),
    /// Not known now: the write is refused UNAVAILABLE (why), never taken here.
    Unknown(&'static str),
}

impl Owner {
    /// The refusal for `Unknown`.
    pub(crate) fn refusal(why: &str) -> v1::Error {
        metrics::counter!("ringchat_cluster_owner_unknown_total").increment(1);
        busy(why)
    }
}

/// UNAVAILABLE with the usual pause: resend with the same client_msg_id.
fn busy(message: &str) -> v1::Error {
    Refusal {
        code: v1::ErrorCode::Unavailable,
        message: message.into(),
        retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
    }
    .into_error()
}
