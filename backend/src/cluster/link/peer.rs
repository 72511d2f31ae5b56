//! One peer: its bounded queue and the task that dials it and writes the queue into one
//! long-lived `Node/Link` stream. Every step is bounded: dialing and each batch's hand-over
//! by `peer_connect_timeout_ms`; a failure closes the queue (writes for the peer are refused
//! at once: the breaker) for a backoff pause, doubling from 50 ms to `peer_backoff_max_ms`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

use arc_swap::ArcSwap;
use ringchat_proto::v1::NodeBatch;
use ringchat_proto::v1::NodeItem;
use ringchat_proto::v1::node_client::NodeClient;
use tokio::sync::{Notify, mpsc};

use super::Link;
use super::kicks::{self, KickRefused};
use super::queue::{self as queue, Queue, Refused};

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Batches handed to the HTTP/2 stream ahead of its flow control, at most.
const IN_FLIGHT_BATCHES: usize = 2;
/// Kicks per batch when a new stream sends the unconfirmed ones (a kick is at most ~100 bytes).
const KICKS_PER_BATCH: usize = 1_024;

pub(crate) struct Peer {
    pub(crate) node_id: String,
    pub(crate) slot: u16,
    /// Where to dial, from the latest view (read by every forwarded write: `Link::peer`).
    pub(crate) addr: ArcSwap<String>,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Kicks for this peer not confirmed yet (`kicks.rs`): sent again on every new stream.
    kicks: Mutex<kicks::Pending>,
    /// Its task has ended: the node left the view for good (`Link::park`). Changed only
    /// under the link's peers lock; its queue stays closed meanwhile.
    pub(crate) parked: AtomicBool,
    /// Its last link was lost or could not be made, and none is up since: the node is most
    /// likely gone (the offline push then does not count its sessions: `Link::known_down`).
    pub(crate) down: AtomicBool,
    /// This peer's metrics, looked up once: each item queued and each batch sent records.
    pub(super) metrics: PeerMetrics,
    /// What its queue ages items from (`queue::Heartbeats`), the link's.
    heartbeats: Arc<queue::Heartbeats>,
}

/// Handles of a peer's metrics (labelled by its node id).
pub(super) struct PeerMetrics {
    queue_items: metrics::Gauge,
    batches_sent: metrics::Counter,
    items_sent: metrics::Counter,
    pub(super) batches_received: metrics::Counter,
    pub(super) items_received: metrics::Counter,
}

impl PeerMetrics {
    fn new(node_id: &str) -> Self {
        Self {
            queue_items: metrics::gauge!("ringchat_cluster_peer_queue_items", "peer" => node_id.to_owned()),
            batches_sent: metrics::counter!("ringchat_cluster_peer_batches_sent_total", "peer" => node_id.to_owned()),
            items_sent: metrics::counter!("ringchat_cluster_peer_items_sent_total", "peer" => node_id.to_owned()),
            batches_received: metrics::counter!(
                "ringchat_cluster_peer_batches_received_total",
                "peer" => node_id.to_owned()
            ),
            items_received: metrics::counter!(
                "ringchat_cluster_peer_items_received_total",
                "peer" => node_id.to_owned()
            ),
        }
    }
}

impl Peer {
    pub(crate) fn new(
        node_id: String,
        slot: u16,
        addr: String,
        items_max: usize,
        kicks_users_max: usize,
        heartbeats: Arc<queue::Heartbeats>,
    ) -> Self {
        Self {
            heartbeats,
            slot,
            addr: ArcSwap::from_pointee(addr),
            queue: Mutex::new(Queue::new(items_max)),
            wake: Notify::new(),
            kicks: Mutex::new(kicks::Pending::new(kicks_users_max)),
            parked: AtomicBool::new(false),
            down: AtomicBool::new(false),
            metrics: PeerMetrics::new(&node_id),
            node_id,
        }
    }

    /// Frames for the peer were dropped before it had a queue here (it was not in the view):
    /// its next batch says so, sent at once.
    pub(crate) fn missed(&self) {
        self.queue().missed = true;
        self.wake.notify_one();
    }

    /// Takes items again (a parked peer whose node is back).
    pub(crate) fn reopen(&self) {
        self.queue().reopen();
    }

    fn kicks(&self) -> MutexGuard<'_, kicks::Pending> {
        self.kicks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kick for this peer (`device` `None`: every device): remembered until the peer
    /// confirms it, and queued now (a refusal here is made up by the next stream).
    pub(crate) fn kick(&self, user: u64, device: Option<&str>, kick: kicks::Kick) {
        let recorded = self.kicks().record(user, device, kick);
        if let Err(KickRefused::Full) = recorded {
            metrics::counter!("ringchat_cluster_kicks_unremembered_total", "peer" => self.node_id.clone())
                .increment(1);
            tracing::error!(peer = %self.node_id, user, "cluster: cluster.peer_kicks_pending_max users' kicks wait for this peer already; this kick is sent once, not again if lost");
        }
        let _ = self.push_all(vec![kicks::item(user, device, kick)]);
    }

    /// The kick log handed to a node that entered the view (`newcomers.rs`): each kick is
    /// remembered until confirmed, as if sent when issued, and queued now in batches (a
    /// refusal is made up by the next stream, which starts with every kick remembered).
    pub(crate) fn seed_kicks(&self, log: &[(u64, Option<Box<str>>, kicks::Kick)]) {
        let unremembered = {
            let mut kicks = self.kicks();
            log.iter()
                .filter(|(user, device, kick)| {
                    kicks.record(*user, device.as_deref(), *kick).is_err()
                })
                .count()
        };
        if unremembered > 0 {
            metrics::counter!("ringchat_cluster_kicks_unremembered_total", "peer" => self.node_id.clone())
                .increment(unremembered as u64);
            tracing::error!(peer = %self.node_id, unremembered, "cluster: cluster.peer_kicks_pending_max users' kicks wait for this peer already; kicks of the log are sent once, not again if lost");
        }
        for chunk in log.chunks(KICKS_PER_BATCH) {
            let items = chunk
                .iter()
                .map(|(user, device, kick)| kicks::item(*user, device.as_deref(), *kick))
                .collect();
            if self.push_all(items).is_err() {
                break;
            }
        }
    }

    /// A kick queued once, not remembered (`Link::send_kick_once`): lost if the link is down.
    pub(crate) fn kick_once(&self, user: u64, device: Option<&str>, kick: kicks::Kick) {
        let _ = self.push_all(vec![kicks::item(user, device, kick)]);
    }

    /// What the peer sent back on a stream's response half: the kicks it applied.
    fn confirmed(&self, batch: &NodeBatch) {
        let mut kicks = self.kicks();
        for i in &batch.items {
            if let Some(ringchat_proto::v1::node_item::Item::Kick(k)) = &i.item {
                kicks.confirmed(k);
            }
        }
        metrics::gauge!("ringchat_cluster_kicks_pending_users", "peer" => self.node_id.clone())
            .set(kicks.len() as f64);
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `items` together, or refuses them all; wakes the sender task.
    pub(crate) fn push_all(&self, items: Vec<NodeItem>) -> Result<(), Refused> {
        let n = items.len() as u64;
        let at = self.heartbeats.aged_from(Instant::now());
        let (result, depth) = {
            let mut q = self.queue();
            (q.push_all_at(items, at), q.len())
        };
        self.metrics.queue_items.set(depth as f64);
        match result {
            Ok(()) => self.wake.notify_one(),
            Err(why) => {
                // The refusal may have set `missed` with nothing queued: woken, the sender
                // announces it now, not with whatever is queued next (maybe never).
                self.wake.notify_one();
                metrics::counter!("ringchat_cluster_peer_items_dropped_total", "peer" => self.node_id.clone(), "reason" => why.label())
                    .increment(n)
            }
        }
        result
    }
}

impl Peer {
    /// Queues best-effort items (typing): refused, and counted, when the queue is half full.
    pub(crate) fn push_best_effort(&self, items: Vec<NodeItem>) {
        let n = items.len() as u64;
        let at = self.heartbeats.aged_from(Instant::now());
        let result = self.queue().push_best_effort(items, at);
        match result {
            Ok(()) => self.wake.notify_one(),
            Err(why) => {
                metrics::counter!("ringchat_cluster_peer_items_dropped_total", "peer" => self.node_id.clone(), "reason" => why.label())
                    .increment(n)
            }
        }
    }
}

#[cfg(test)]
impl Peer {
    /// What is queued for the peer, taken out as its sender task would.
    pub(crate) fn take_queued(&self) -> Vec<NodeItem> {
        self.take_batches("test")
            .into_iter()
            .flat_map(|b| b.items)
            .collect()
    }

    /// The kicks remembered for the peer (a new stream starts with them).
    pub(crate) fn kicks_waiting(&self) -> Vec<NodeItem> {
        self.kicks().items()
    }

    /// What is queued for the peer, as the batches its sender task would send from `from`.
    pub(crate) fn take_batches(&self, from: &str) -> Vec<NodeBatch> {
        let mut q = self.queue();
        std::iter::from_fn(|| q.drain(from, usize::MAX, usize::MAX)).collect()
    }
}

/// Dials `peer` and writes its queue until the link stops; reconnects with backoff.
pub(crate) async fn run(link: Arc<Link>, peer: Arc<Peer>) {
    let mut stop = link.stop.subscribe();
    let mut backoff = BACKOFF_FIRST;
    let timeout = Duration::from_millis(link.config.peer_connect_timeout_ms);
    let backoff_max = Duration::from_millis(link.config.peer_backoff_max_ms);
    let node_ttl = Duration::from_millis(link.config.node_ttl_ms);
    // Since when the peer's node is missing from the view, as seen after a link failure.
    let mut absent_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let connected = tokio::select! {
            r = connect_and_write(&link, &peer, timeout, &mut backoff) => r,
            _ = stop.changed() => break,
        };
        peer.down.store(true, Relaxed);
        let addr = peer.addr.load_full();
        let result = if connected { "lost" } else { "failed" };
        metrics::counter!("ringchat_cluster_peer_links_down_total", "peer" => peer.node_id.clone(), "result" => result).increment(1);
        tracing::warn!(peer = %peer.node_id, %addr, result, pause_ms = backoff.as_millis() as u64, "cluster: link to peer down; writes for it are refused until it is back");
        // The breaker: nothing waits for a peer that is away.
        let dropped = peer.queue().close();
        link.link_down(&peer, dropped);
        // A node out of the view for `node_ttl_ms` (after its own record expired) has left:
        // stop dialing it (no warning, metric and pending scan every backoff, for ever).
        if link.in_view(&peer.node_id) {
            absent_since = None;
        } else {
            let since = *absent_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= node_ttl && link.park(&peer) {
                metrics::counter!("ringchat_cluster_peers_parked_total", "peer" => peer.node_id.clone()).increment(1);
                tracing::info!(peer = %peer.node_id, "cluster: peer out of the view for node_ttl_ms; no longer dialed");
                break;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(backoff_max);
        peer.queue().reopen();
    }
}

/// One connection's life: `true` if the stream was up (then lost), `false` if dialing failed.
async fn connect_and_write(
    link: &Link,
    peer: &Peer,
    timeout: Duration,
    backoff: &mut Duration,
) -> bool {
    let addr = peer.addr.load_full();
    let tls = link.tls.get();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let Ok(mut endpoint) = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
    else {
        tracing::error!(peer = %peer.node_id, %addr, "cluster: the peer's advertise_addr is not host:port");
        return false;
    };
    if let Some(tls) = tls {
        // Checks the peer's certificate against the CA and the host of its advertise_addr.
        endpoint = match endpoint.tls_config(tls.client()) {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(peer = %peer.node_id, %addr, %err, "cluster: TLS to the peer cannot be set up");
                return false;
            }
        };
    }
    let endpoint = endpoint
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(err)) if tls.is_some() => {
            // Often a certificate the CA did not sign, or one without the peer's host name.
            tracing::warn!(peer = %peer.node_id, %addr, err = %crate::cluster::tls::error_chain(&err), "cluster: TLS connection to the peer failed");
            return false;
        }
        _ => return false,
    };
    // Pushes past this age are not sent (`queue::push_fresh_ms`): checked when the queue is
    // drained, and again when the stream takes a batch (this process may have been paused
    // between the two, with its batches waiting here).
    let fresh_for = Duration::from_millis(queue::push_fresh_ms(
        link.config.node_ttl_ms,
        link.config.heartbeat_interval_ms,
    ));
    let stale_dropped = metrics::counter!("ringchat_cluster_peer_items_dropped_total", "peer" => peer.node_id.clone(), "reason" => "stale");
    // Each batch with the time its oldest ordered item was queued.
    let (tx, rx) = mpsc::channel::<(Instant, NodeBatch)>(IN_FLIGHT_BATCHES);
    let outbound = futures_util::stream::unfold(
        (rx, stale_dropped.clone()),
        move |(mut rx, stale_dropped)| async move {
            let (queued_at, mut batch) = rx.recv().await?;
            let stale = queue::strip_stale(&mut batch, queued_at, Instant::now(), fresh_for);
            stale_dropped.increment(stale);
            Some((batch, (rx, stale_dropped)))
        },
    );
    let message_bytes_max = link.message_bytes_max();
    let mut client = NodeClient::new(channel)
        .max_decoding_message_size(message_bytes_max)
        .max_encoding_message_size(message_bytes_max);
    let mut request = tonic::Request::new(outbound);
    // The proof is bound to the address dialled and the start of the process the view
    // names there (`secret.rs`): one caught by whoever that address really is opens nothing.
    let started_at_ms = link
        .view_nodes()
        .and_then(|v| {
            v.nodes
                .iter()
                .find(|n| n.record.node_id == peer.node_id && n.record.advertise_addr == *addr)
                .map(|n| n.record.started_at_ms)
        })
        .unwrap_or(0);
    super::secret::attach(
        &mut request,
        &link.config.peer_secret,
        &link.me,
        super::secret::Target {
            node_id: &peer.node_id,
            addr: &addr,
            started_at_ms,
        },
    );
    let response = match tokio::time::timeout(timeout, client.link(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
            // Another secret, clocks too far apart, a view older than the peer's restart (or
            // its record names another address), or a node of a version before.
            tracing::error!(peer = %peer.node_id, %addr, why = %status.message(), "cluster: the peer refused this node's proof of cluster.peer_secret");
            return false;
        }
        _ => return false,
    };
    let mut inbound = response.into_inner();
    *backoff = BACKOFF_FIRST;
    peer.down.store(false, Relaxed);
    metrics::counter!("ringchat_cluster_peer_links_up_total", "peer" => peer.node_id.clone())
        .increment(1);
    tracing::info!(peer = %peer.node_id, %addr, "cluster: link to peer up");
    let bytes_max = link.config.peer_batch_bytes_max;
    let item_bytes_max = link.item_bytes_max();
    // The kicks not confirmed yet go first (lost with an earlier stream, or refused while the
    // link was down), a bounded number per batch.
    let waiting = peer.kicks().items();
    for chunk in waiting.chunks(KICKS_PER_BATCH) {
        let batch = NodeBatch {
            from_node: link.me.clone(),
            items: chunk.to_vec(),
            missed: false,
            sent_at_ms: crate::time::now_ms(),
        };
        if !matches!(
            tokio::time::timeout(timeout, tx.send((Instant::now(), batch))).await,
            Ok(Ok(()))
        ) {
            return true;
        }
    }
    loop {
        loop {
            let now = Instant::now();
            let (batch, queued_at, oversized, stale) = {
                let mut q = peer.queue();
                let stale = q.drop_stale(now, fresh_for);
                let queued_at = q.oldest_ordered().unwrap_or(now);
                let batch = q.drain(&link.me, bytes_max, item_bytes_max);
                (batch, queued_at, std::mem::take(&mut q.oversized), stale)
            };
            if stale > 0 {
                stale_dropped.increment(stale);
                tracing::warn!(peer = %peer.node_id, stale, fresh_for_ms = fresh_for.as_millis() as u64, "cluster: pushes queued too long ago for their seq order to hold were dropped; the peer's sessions are told to Sync");
            }
            if oversized > 0 {
                metrics::counter!("ringchat_cluster_peer_items_dropped_total", "peer" => peer.node_id.clone(), "reason" => "oversized")
                    .increment(oversized);
                tracing::error!(peer = %peer.node_id, oversized, item_bytes_max, "cluster: items over the links' item limit were dropped, not sent");
            }
            let Some(mut batch) = batch else { break };
            // Stamped at hand-over: a kick's age is measured up to here (`kicks.rs`).
            batch.sent_at_ms = crate::time::now_ms();
            let items = batch.items.len() as u64;
            match tokio::time::timeout(timeout, tx.send((queued_at, batch))).await {
                Ok(Ok(())) => {
                    peer.metrics.batches_sent.increment(1);
                    peer.metrics.items_sent.increment(items);
                }
                // The stream took nothing within the deadline (the peer stalls) or ended.
                _ => return true,
            }
        }
        peer.metrics.queue_items.set(peer.queue().len() as f64);
        tokio::select! {
            () = peer.wake.notified() => {}
            // The response half carries only the kicks the peer applied; it ends (or fails)
            // when the link does.
            m = inbound.message() => match m {
                Ok(Some(batch)) => peer.confirmed(&batch),
                _ => return true,
            }
        }
    }
}
