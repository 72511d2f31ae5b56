//! Origin -> owner: who sequences a write (this node, another live node, or nobody known now),
//! the write queued for its owner's link, and the writes still waiting answered UNAVAILABLE
//! when that link goes down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::SpanKind;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};

use super::peer::Peer;
use super::{Link, fanout, pending, wire};
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, WriteRequest};
use crate::messaging::Submitted;
use crate::messaging::writer::{Write, first_conv_of};
use crate::observe::otlp::MsgSpan;

impl Link {
    /// Who sequences `write`: this node, another live node (its peer), or nobody known right
    /// now. Writes that name no conversation (group creation, the DM policy) stay here.
    pub(crate) fn owner_elsewhere(self: &Arc<Self>, write: &Write) -> Owner {
        match first_conv_of(write) {
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

    /// Whether this node's sequencer may claim a conversation it does not hold now
    /// (`ClusterView::claims_allowed`): refused UNAVAILABLE (with `retry_after_ms`) while this
    /// node has not joined, and once its view has been stale (Redis unreachable) for about
    /// `node_ttl_ms`, when the others may have moved its conversations. Epochs it holds are
    /// still written: the store's fence refuses them once another node claimed one.
    pub(crate) fn may_claim(&self) -> Result<(), Refusal> {
        let allowed = self.view_nodes().is_some_and(|view| {
            view.claims_allowed(
                crate::time::now_ms(),
                self.config.node_ttl_ms,
                self.config.heartbeat_interval_ms,
            )
        });
        if allowed {
            return Ok(());
        }
        metrics::counter!("ringchat_cluster_claims_refused_total").increment(1);
        Err(Refusal {
            code: v1::ErrorCode::Unavailable,
            message: STALE_VIEW.into(),
            retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
        })
    }

    /// Queues a write for its owner `peer`; the answer comes back through `serve.rs`. The
    /// write goes out under a forward id of this process (`pending.rs`) in place of the
    /// client's request id, which the answer gets back here.
    pub(crate) fn forward(
        &self,
        peer: &Peer,
        conn: ConnRef,
        user: u64,
        device_id: String,
        request_id: u64,
        request: WriteRequest,
    ) -> Submitted {
        let forward_id = if request_id == 0 {
            0
        } else {
            self.pending.next_id()
        };
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
        let trace = fanout::traceparent(span.as_ref().map(MsgSpan::traceparent));
        if request_id != 0
            && !self
                .pending
                .insert(forward_id, (conn, request_id), peer.slot, deadline, span)
        {
            metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => "pending_full")
                .increment(1);
            return Submitted::Refused(busy("too many writes wait for other nodes; retry"));
        }
        let item = NodeItem {
            item: Some(Item::Forward(v1::Forward {
                origin: Some(wire::origin(conn, self.tag)),
                user_id: user,
                device_id,
                request_id: forward_id,
                frame: wire::encode_write(request),
                traceparent: trace,
            })),
        };
        match peer.push_all(vec![item]) {
            Ok(()) => {
                self.forwarded.increment(1);
                Submitted::Queued
            }
            Err(why) => {
                self.pending.forget(forward_id, conn);
                metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => why.label())
                    .increment(1);
                Submitted::Refused(busy(
                    "the conversation's owner node cannot be reached right now; retry",
                ))
            }
        }
    }

    /// A link went down: its forwarded writes waiting here are answered UNAVAILABLE now.
    pub(super) fn link_down(self: &Arc<Self>, peer: &Peer, dropped: Vec<NodeItem>) {
        self.system_link_down(peer.slot);
        self.rooms_link_down(peer.slot, &dropped);
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

    pub(super) async fn answer_unavailable(&self, keys: Vec<pending::Key>, why: &str) {
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
}

/// Why a write's owner is not known (`Owner::Unknown`).
const NOT_JOINED: &str =
    "this node has not joined the cluster yet (the node registry in Redis not read); retry";
/// Why a claim is refused (`Link::may_claim`).
const STALE_VIEW: &str = "this node has not reached the cluster's registry (Redis) for too long to take \
     over conversations; retry";
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
pub(super) fn busy(message: &str) -> v1::Error {
    Refusal {
        code: v1::ErrorCode::Unavailable,
        message: message.into(),
        retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
    }
    .into_error()
}
