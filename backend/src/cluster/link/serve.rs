//! The receiving end of a link: the `Node/Link` gRPC service. Each incoming stream gets a
//! task that takes its batches in order: forwarded writes go to this node's sequencer (as
//! writes of a remote connection), answers to the origin connections still waiting, frames to
//! the local sessions of their recipients: one event per shard per batch. A peer's newer
//! stream supersedes its older ones (`Streams`): their pushes would follow the new stream's.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use ringchat_proto::Body;
use ringchat_proto::v1::node_item::Item;
use ringchat_proto::v1::node_server::{Node, NodeServer};
use ringchat_proto::v1::{self, NodeBatch, NodeItem};
use tonic::{Request, Response, Status, Streaming};

use super::{Link, wire};
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, encoded};
use crate::messaging::Writes;
use crate::observe::otlp::MsgSpan;
use crate::store::ConvId;
use opentelemetry::trace::SpanKind;

/// The `Node` service: needs the sequencer's queue (`Writes`), held only while a stream is
/// open and the link has not stopped (shutdown stops the link before the sequencer).
pub struct NodeService {
    link: Arc<Link>,
    writes: Writes,
    /// The listener's connections: a peer's stream keeps its own from being idle.
    conns: crate::cluster::grpc_conns::Conns,
}

impl NodeService {
    pub fn new(link: Arc<Link>, writes: Writes) -> Self {
        Self {
            link,
            writes,
            conns: Default::default(),
        }
    }

    pub(crate) fn with_conns(mut self, conns: crate::cluster::grpc_conns::Conns) -> Self {
        self.conns = conns;
        self
    }

    pub(crate) fn into_server(self) -> NodeServer<Self> {
        // Derived from the configuration, as the dialer's (`peer.rs`): a batch, or one item
        // as big as a client frame may be, always fits.
        let bytes_max = self.link.message_bytes_max();
        NodeServer::new(self)
            .max_decoding_message_size(bytes_max)
            .max_encoding_message_size(bytes_max)
    }
}

/// Confirmation batches waiting for the response half, at most (more are dropped: the sender
/// sends those kicks again on its next stream).
const ACK_BATCHES_MAX: usize = 64;

type Empty = Pin<Box<dyn Stream<Item = Result<NodeBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    type LinkStream = Empty;

    async fn link(
        &self,
        request: Request<Streaming<NodeBatch>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        // With [cluster.tls], a peer must have presented a certificate (the handshake
        // checked it against the CA); the status service on this listener needs none.
        if self.link.tls.get().is_some() && request.peer_certs().is_none_or(|c| c.is_empty()) {
            metrics::counter!("ringchat_cluster_peer_refused_total").increment(1);
            return Err(Status::unauthenticated(
                "not a node of this cluster: no client certificate signed by cluster.tls.ca_path",
            ));
        }
        // The node id its proof names: its batches must carry it. A proof names this
        // process: its advertise address and its start, as its record says.
        let me = super::secret::Target {
            node_id: &self.link.me,
            addr: self.link.config.advertised(),
            started_at_ms: self
                .link
                .attached
                .get()
                .map_or(0, |(c, _)| c.started_at_ms()),
        };
        let dialer = super::secret::check(
            &request,
            &self.link.config.peer_secret,
            me,
            crate::time::now_ms(),
            &self.link.proofs,
        )?;
        // A peer's link holds its connection for as long as it streams.
        let serving = self.conns.serving(request.remote_addr());
        let inbound = request.into_inner();
        let link = Arc::clone(&self.link);
        let writes = self.writes.clone();
        let stop = link.stop.subscribe();
        if *stop.borrow() {
            return Err(Status::unavailable("this node is shutting down"));
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        // The response half: the kicks applied here, confirmed to the sender (`kicks.rs`).
        let (acks, acks_rx) = tokio::sync::mpsc::channel::<NodeBatch>(ACK_BATCHES_MAX);
        tokio::spawn(async move {
            let _done = done_tx;
            let _serving = serving;
            link.serve_stream(inbound, dialer, writes, acks, stop).await;
        });
        // Only kicks' confirmations are sent back: the stream ends when the receiving task
        // does, which tells the dialer the link is gone.
        let out =
            futures_util::stream::unfold((acks_rx, done_rx), |(mut acks, mut done)| async move {
                tokio::select! {
                    Some(batch) = acks.recv() => Some((Ok(batch), (acks, done))),
                    _ = &mut done => None,
                }
            });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A peer's incoming streams (`Link::streamed`). The peer dials one stream at a time, but the
/// task of the one it gave up on (it took no batch within `peer_connect_timeout_ms`: blocked
/// on a full shard inbox here) may still hold batches it read before the new one began:
/// delivered after the new stream's, their pushes would reach clients out of seq order.
pub(super) struct Streams {
    /// The newest stream's number: an older stream's pushes are dropped, lost, and it ends.
    newest: u64,
    /// Held while a batch of the peer's is delivered: an older stream's batch already under
    /// way (blocked on a full shard inbox) is handed over whole before a newer stream's.
    delivering: Arc<tokio::sync::Mutex<()>>,
}

/// Which of its peer's streams an incoming stream is.
pub(super) struct StreamOf {
    from: String,
    number: u64,
    delivering: Arc<tokio::sync::Mutex<()>>,
}

impl Link {
    /// Takes one incoming stream's batches in order until it ends, the link stops, or the
    /// same peer opens a newer stream. `dialer`: the node id its proof named.
    pub(super) async fn serve_stream<S>(
        self: Arc<Self>,
        mut inbound: S,
        dialer: Option<String>,
        writes: Writes,
        acks: tokio::sync::mpsc::Sender<NodeBatch>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        S: Stream<Item = Result<NodeBatch, Status>> + Unpin,
    {
        // Which of the peer's streams this is, once its first batch named the peer.
        let mut stream: Option<StreamOf> = None;
        loop {
            let message = tokio::select! {
                m = inbound.next() => m,
                _ = stop.changed() => return,
            };
            match message {
                Some(Ok(batch)) => {
                    if dialer.as_ref().is_some_and(|d| *d != batch.from_node) {
                        tracing::warn!(proof = ?dialer, from = %batch.from_node, "cluster: an incoming link's batch names another node than its proof; link ended");
                        break;
                    }
                    let of = match &stream {
                        Some(of) => of,
                        None => stream.insert(self.stream_began(&batch.from_node)),
                    };
                    if !self.receive_on(of, batch, &writes, &acks).await {
                        tracing::info!(peer = %of.from, "cluster: the peer opened a newer stream; this one's pushes still here were dropped and it ended");
                        break;
                    }
                }
                None => break,
                Some(Err(status)) => {
                    tracing::info!(%status, "cluster: an incoming link ended");
                    break;
                }
            }
        }
        // The peer's frames in flight (queued there, or in the stream's buffers) are lost
        // with the stream: the sessions here catch up by seq.
        if stream.is_some() {
            self.repair_groups();
            self.hints.request("link_lost");
        }
    }

    /// A peer's stream began: from now on it is the peer's newest. A peer that streamed here
    /// before is a link that came back: what it sent meanwhile was dropped (its queue refuses
    /// while the link is down).
    fn stream_began(self: &Arc<Self>, from: &str) -> StreamOf {
        let (of, again) = {
            let mut streamed = self.streamed.lock().unwrap_or_else(|p| p.into_inner());
            let again = streamed.contains_key(from);
            let streams = streamed.entry(from.to_owned()).or_insert_with(|| Streams {
                newest: 0,
                delivering: Arc::default(),
            });
            streams.newest += 1;
            let of = StreamOf {
                from: from.to_owned(),
                number: streams.newest,
                delivering: Arc::clone(&streams.delivering),
            };
            (of, again)
        };
        if again {
            self.repair_groups();
            self.hints.request("link_back");
        }
        of
    }

    /// Whether `of` is still its peer's newest stream.
    fn newest(&self, of: &StreamOf) -> bool {
        self.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&of.from)
            .is_some_and(|s| s.newest == of.number)
    }

    /// One batch of stream `of`, after the peer's batches under way. Once a newer stream of
    /// the peer has begun, its pushes (in seq order: `queue::strip_ordered`) are dropped and
    /// announced as lost (`missed`: the sessions here Sync), the rest taken (answers, kicks);
    /// `false` then: the stream is to end.
    async fn receive_on(
        self: &Arc<Self>,
        of: &StreamOf,
        mut batch: NodeBatch,
        writes: &Writes,
        acks: &tokio::sync::mpsc::Sender<NodeBatch>,
    ) -> bool {
        let _one = of.delivering.lock().await;
        let newest = self.newest(of);
        if !newest {
            let dropped = super::queue::strip_ordered(&mut batch);
            metrics::counter!("ringchat_cluster_peer_items_superseded_total", "peer" => of.from.clone())
                .increment(dropped);
        }
        self.receive(batch, writes, acks).await;
        newest
    }

    /// One incoming batch, in order.
    pub(super) async fn receive(
        self: &Arc<Self>,
        batch: NodeBatch,
        writes: &Writes,
        acks: &tokio::sync::mpsc::Sender<NodeBatch>,
    ) {
        let from = batch.from_node;
        let sent_at_ms = batch.sent_at_ms;
        let peer = self.peer_by_id(&from);
        match &peer {
            Some(peer) => {
                peer.metrics.batches_received.increment(1);
                peer.metrics
                    .items_received
                    .increment(batch.items.len() as u64);
            }
            None => {
                metrics::counter!("ringchat_cluster_peer_batches_received_total", "peer" => from.clone())
                    .increment(1);
                metrics::counter!("ringchat_cluster_peer_items_received_total", "peer" => from.clone())
                    .increment(batch.items.len() as u64);
            }
        }
        if batch.missed {
            // Frames for this node were dropped on the way (a full queue or a link that
            // was down): the sessions here catch up by seq.
            self.missed_frames(&from);
        }
        let mut per_shard: Vec<Vec<Outgoing>> = vec![Vec::new(); self.shards.len()];
        let mut answers = Vec::new();
        // Traced items' spans on this node, ended once their frames are with the shards.
        let mut spans: Vec<MsgSpan> = Vec::new();
        let mut kicks = Vec::new();
        for item in batch.items {
            match item.item {
                Some(Item::Forward(f)) => {
                    let Some(peer) = &peer else {
                        tracing::warn!(peer = %from, "cluster: a write forwarded by a node not in the view; dropped (its origin answers UNAVAILABLE on its deadline)");
                        continue;
                    };
                    if let Some(answer) = self.forwarded(peer.slot, f, writes) {
                        answers.push(answer);
                    }
                }
                Some(Item::Answer(a)) => self.answered(a, &mut per_shard, &mut spans),
                Some(Item::ToUsers(t)) => {
                    spans.extend(fanout_span(&t.traceparent, &from));
                    let except = t.except.as_ref().and_then(|o| wire::local(o, self.tag));
                    let sessions = self.sessions.read();
                    for (i, user) in t.user_ids.iter().enumerate() {
                        if t.user_ids[..i].contains(user) {
                            continue;
                        }
                        for s in sessions.of_user(*user) {
                            if Some(s.conn) != except {
                                push(&mut per_shard, s.conn, t.frame.clone());
                            }
                        }
                    }
                }
                Some(Item::ToGroup(t)) => {
                    let Some(g) = ConvId::from_wire(t.group_id) else {
                        continue;
                    };
                    spans.extend(fanout_span(&t.traceparent, &from));
                    let except = t.except.as_ref().and_then(|o| wire::local(o, self.tag));
                    self.online.remote_audience(g, t.seq, |shard, conns| {
                        if let Some(list) = per_shard.get_mut(shard) {
                            list.push(Outgoing::Shared {
                                conns: Arc::clone(conns),
                                except: except
                                    .filter(|e| usize::from(e.shard) == shard)
                                    .map(|e| e.conn),
                                frame: t.frame.clone(),
                            });
                        }
                    });
                }
                Some(Item::Typing(t)) => self.typing_here(&t, &mut per_shard),
                Some(Item::Kick(k)) => kicks.push(k),
                Some(Item::SystemBatch(b)) => match &peer {
                    Some(p) => self.system_received(Arc::clone(p), b, writes),
                    None => {
                        tracing::warn!(peer = %from, "cluster: a notification batch from a node not in the view; dropped (its sender sends it again)");
                    }
                },
                Some(Item::SystemDone(d)) => self.system_answered(d),
                Some(Item::MemberChange(m)) => {
                    if let Some(g) = ConvId::from_wire(m.group_id) {
                        self.online.changed(g, m.user_id, m.joined);
                    }
                }
                Some(
                    item @ (Item::RoomPart(_)
                    | Item::RoomSend(_)
                    | Item::RoomAnswer(_)
                    | Item::RoomMessage(_)),
                ) => self.room_item(&from, peer.as_ref(), item).await,
                // An item of a later version this one does not know: dropped.
                None => {}
            }
        }
        if !kicks.is_empty() {
            self.apply_kicks(kicks, sent_at_ms, acks.clone());
        }
        self.to_shards(per_shard).await;
        drop(spans);
        if let (Some(peer), false) = (peer, answers.is_empty()) {
            let _ = peer.push_all(answers);
        }
    }

    /// An owner's answer to a write forwarded from here: to its connection if it still waits
    /// (not answered UNAVAILABLE on the deadline or a link loss already), with the client's
    /// request id put back in place of the forward id (`pending.rs`).
    fn answered(&self, a: v1::Answer, per_shard: &mut [Vec<Outgoing>], spans: &mut Vec<MsgSpan>) {
        let Some(conn) = a.origin.as_ref().and_then(|o| wire::local(o, self.tag)) else {
            // For a connection of this node's previous process.
            metrics::counter!("ringchat_cluster_stale_answers_total").increment(1);
            return;
        };
        let frame = if a.request_id == 0 {
            a.frame
        } else {
            let Some((request_id, forward_span)) = self.pending.take(a.request_id, conn) else {
                // Late: its client was answered UNAVAILABLE, and may use its request id again.
                metrics::counter!("ringchat_cluster_stale_answers_total").increment(1);
                return;
            };
            spans.extend(forward_span);
            self.with_request_id(&a.frame, request_id)
        };
        push(per_shard, conn, frame);
        spans.extend(MsgSpan::child(
            "ringchat.answer",
            SpanKind::Consumer,
            &a.traceparent,
        ));
    }

    /// An owner's answer frame (encoded with the forward id) under the client's request id.
    /// A frame that does not decode (a peer bug) becomes UNAVAILABLE: the client waits for an
    /// answer and must get one.
    fn with_request_id(&self, frame: &[u8], request_id: u64) -> bytes::Bytes {
        let mut buf = bytes::BytesMut::from(frame);
        match ringchat_proto::decode(&mut buf, self.item_bytes_max()) {
            Ok(Some(mut f)) => {
                f.request_id = request_id;
                ringchat_proto::encode_to_bytes(&f)
            }
            _ => {
                tracing::error!("cluster: an owner's answer is not a frame; answered UNAVAILABLE");
                encoded(
                    request_id,
                    Body::Error(super::forward::busy(
                        "the owner node's answer was unreadable; retry",
                    )),
                )
            }
        }
    }

    /// Typing from another node, to the sessions here it is for (see `Link::send_typing`).
    fn typing_here(&self, t: &v1::NodeTyping, per_shard: &mut [Vec<Outgoing>]) {
        let frame = encoded(
            0,
            Body::Typing(v1::Typing {
                conversation_id: t.conversation_id,
                from_user_id: t.from_user_id,
            }),
        );
        match ConvId::from_wire(t.conversation_id) {
            Some(g) if g.kind() == crate::store::ConvKind::Group => {
                // The same bound as on the sender's node, on this node's share of the group.
                if self.online.online_conns(g) > self.typing_members_max {
                    return;
                }
                self.online.remote_audience(g, 0, |shard, conns| {
                    if let Some(list) = per_shard.get_mut(shard) {
                        list.push(Outgoing::Shared {
                            conns: Arc::clone(conns),
                            except: None,
                            frame: frame.clone(),
                        });
                    }
                });
            }
            _ => {
                let sessions = self.sessions.read();
                for (i, user) in t.user_ids.iter().enumerate() {
                    if t.user_ids[..i].contains(user) {
                        continue;
                    }
                    for s in sessions.of_user(*user) {
                        push(per_shard, s.conn, frame.clone());
                    }
                }
            }
        }
    }

    /// A forwarded write into this node's sequencer; a refusal before it gets there (the
    /// sequencer's queue full included: never waited for) is answered at once.
    fn forwarded(&self, slot: u16, f: v1::Forward, writes: &Writes) -> Option<NodeItem> {
        let origin = f.origin?;
        let conn = wire::remote(slot, &origin)?;
        // The owner's part of a traced message: from here to its commit and delivery.
        let mut span = MsgSpan::child("ringchat.commit", SpanKind::Server, &f.traceparent);
        let trace = span.as_ref().map(MsgSpan::traceparent);
        let refusal = match wire::decode_write(&f.frame) {
            None => Refusal::new(v1::ErrorCode::InvalidArgument, "not a write"),
            Some(request) => {
                match writes.submit_remote(
                    conn,
                    f.user_id,
                    f.device_id,
                    f.request_id,
                    request,
                    span.take(),
                ) {
                    Ok(()) => return None,
                    Err(refusal) => refusal,
                }
            }
        };
        if let Some(span) = &mut span {
            span.fail("refused");
        }
        (f.request_id != 0).then(|| NodeItem {
            item: Some(Item::Answer(v1::Answer {
                origin: Some(origin),
                request_id: f.request_id,
                frame: encoded(f.request_id, Body::Error(refusal.into_error())),
                traceparent: trace.map(|t| t.encode()).unwrap_or_default(),
            })),
        })
    }

    /// Pushes were lost on the way here: every local session is told to catch up by seq.
    fn missed_frames(self: &Arc<Self>, from: &str) {
        metrics::counter!("ringchat_cluster_peer_missed_total", "peer" => from.to_owned())
            .increment(1);
        // Before this batch's frames: a lost `MemberChange` must not let them through.
        self.repair_groups();
        tracing::warn!(peer = %from, "cluster: frames from a peer were dropped on the way; sessions here are told to Sync");
        self.hints.request("missed");
    }
}

impl Link {
    /// A peer's frames may have been lost, a `MemberChange` among them: other nodes' group
    /// frames are held until the online users' groups are re-read (`groups/online/repair.rs`),
    /// then every session here is told to Sync (what was held is served by seq).
    fn repair_groups(self: &Arc<Self>) {
        if self.online.repair_wanted() {
            let link = Arc::clone(self);
            tokio::spawn(async move {
                link.online.repair().await;
                link.hints.request("groups_repaired");
            });
        }
    }
}

/// The destination's part of a traced message: handing its frames to the local sessions.
fn fanout_span(traceparent: &str, from: &str) -> Option<MsgSpan> {
    let mut span = MsgSpan::child("ringchat.fanout", SpanKind::Consumer, traceparent)?;
    span.set("ringchat.from_node", from.to_owned());
    Some(span)
}

fn push(per_shard: &mut [Vec<Outgoing>], conn: ConnRef, frame: bytes::Bytes) {
    if let Some(list) = per_shard.get_mut(usize::from(conn.shard)) {
        list.push(Outgoing::One(conn.conn, frame));
    }
}

#[cfg(test)]
impl Link {
    /// The newest incoming stream's number of peer `from` (1 for its first).
    pub(super) fn stream_number(&self, from: &str) -> Option<u64> {
        self.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(from)
            .map(|s| s.newest)
    }
}
