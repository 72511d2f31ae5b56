//! Node-to-node links (issue 14, parts 3–4): forwarded writes, their answers, and durable
//! groups' frames between the nodes of a cluster, over one long-lived `Node/Link` gRPC stream
//! per peer and direction (`node.proto`).
//!
//! - Origin → owner (`forward.rs`): a shard's write whose conversation another live node owns
//!   (`owner_of`) is queued for that node (`forward`) instead of the local sequencer; the origin keeps it in
//!   `pending` until the answer comes back (`pending.rs`: answered UNAVAILABLE on a deadline
//!   or when the link drops, so nothing hangs).
//! - Owner: the write goes through its sequencer as a write of a remote connection
//!   (`wire::remote`: a `ConnRef` with the remote bit); delivery gathers what a group sends to
//!   other nodes (`Outbound`) and `send_group` queues it once per destination node
//!   (`fanout.rs`).
//! - Destination: `serve.rs` hands frames to its local sessions, one event per shard per batch.
//!
//! Every peer queue is bounded (`peer_queue_items_max`); a full queue or a link that is down
//! refuses at once: a forwarded write gets UNAVAILABLE with `retry_after_ms`, dropped frames
//! are caught up by seq (the batch after a drop carries `missed`, see `serve.rs`): the
//! receiving node tells its sessions to Sync (`hint.rs`).
//!
//! `peers.rs` keeps the peers by node id and slot; `peer.rs` is one peer's dialer and
//! sender; this file holds `Link` itself, its start (`attach`) and the sweeper.

mod fanout;
mod forward;
mod hint;
mod ids;
mod kicks;
mod newcomers;
mod peer;
mod peers;
mod pending;
mod queue;
mod recheck;
mod rooms;
mod secret;
mod serve;
mod system;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub(crate) use fanout::Outbound;
pub(crate) use forward::Owner;
pub(crate) use ids::RequestIds;
pub use kicks::KickStores;
pub use serve::NodeService;
pub(crate) use wire::is_remote;

use super::{Cluster, ClusterConfig};
use crate::api::{Outgoing, ShardEvent, ShardSender};
use crate::groups::online::GroupOnline;
use crate::sessions::SharedSessions;
use peers::Peers;
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
    /// Read by every forwarded write (`peers.rs`), written when a peer is made or moves.
    peers: RwLock<Peers>,
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
    /// Peers that have had an incoming stream here, and which of their streams is the newest
    /// (`serve.rs`): a new stream from one of them is a link that came back (frames for this
    /// node may have been lost meanwhile), and ends the older ones. One entry per node id that
    /// ever streamed here since start, never pruned: a node that left the view and came back
    /// must still be known as one whose link came back. It grows only with node ids (a few
    /// dozen bytes each), and only a holder of `cluster.peer_secret` can stream here.
    streamed: Mutex<std::collections::HashMap<String, serve::Streams>>,
    /// When this node's heartbeat last reached Redis, for the peers' queues (`queue.rs`).
    heartbeats: Arc<queue::Heartbeats>,
    /// What a kick from another node is checked against before it ends a session
    /// (`kicks.rs`); set once by the backend. Unset (tests): kicks end what they name.
    kick_stores: OnceLock<KickStores>,
    /// Peer proofs that opened a stream here lately, refused if presented again (`secret.rs`).
    proofs: secret::Seen,
    /// System notification batches sent to their owners, awaiting answers (`system.rs`).
    system: system::SystemPending,
    /// Nodes entering the view are told they may have missed pushes and handed the kick log
    /// (`newcomers.rs`, `kicks.rs`).
    newcomers: newcomers::Newcomers,
    /// Sessions checked against the store when this node comes back (`recheck.rs`).
    recheck: recheck::Recheck,
    /// `ringchat_cluster_forwarded_writes_total`, looked up once (one per forwarded write).
    forwarded: metrics::Counter,
    /// This node's chat rooms, for the room items peers send (`rooms.rs`).
    rooms: OnceLock<std::sync::Weak<crate::rooms::Rooms>>,
}

impl Link {
    /// Asks for one `SyncNeeded` to every session here (`hint.rs`: folded, one per interval).
    pub(crate) fn request_sync_hint(&self, why: &'static str) {
        self.hints.request(why);
    }

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
            peers: RwLock::default(),
            pending: Pending::new(
                shards.len(),
                config.forwards_pending_max,
                RequestIds::random()?,
            ),
            shards,
            sessions,
            online,
            typing_members_max,
            frame_bytes_max,
            stop: watch::channel(false).0,
            hints: hint::SyncHints::default(),
            streamed: Mutex::default(),
            heartbeats: Arc::new(queue::Heartbeats::new(config.heartbeat_interval_ms)),
            kick_stores: OnceLock::new(),
            proofs: secret::Seen::default(),
            system: system::SystemPending::new(RequestIds::random()?),
            newcomers: newcomers::Newcomers::new(
                config.peer_kicks_pending_max,
                kicks::kick_log_window_ms(config),
            ),
            recheck: recheck::Recheck::default(),
            forwarded: metrics::counter!("ringchat_cluster_forwarded_writes_total"),
            rooms: OnceLock::new(),
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
        self.heartbeats.attach(Arc::clone(&cluster));
        if self.attached.set((cluster, runtime.clone())).is_err() {
            return;
        }
        runtime.spawn(hint::run(Arc::clone(self)));
        runtime.spawn(Arc::clone(self).run_rechecks());
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
                if let Some(view) = link.view_nodes() {
                    link.note_returns(&view);
                }
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
