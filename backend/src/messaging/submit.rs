//! The shards' direct line to the sequencer. A logged-in client's writes (send, delivery ack,
//! read, recall) are checked and queued on the shard's own thread, so a message crosses one
//! queue on its way in (shard → sequencer) instead of two (shard → request loop → sequencer).

use ringchat_proto::v1;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::writer::{CursorKind, CursorMove, NewMessage, Write, WriteOp};
use std::sync::Arc;
use std::time::Instant;

use super::{Target, conv_from_wire, validate_send};
use crate::accounts::Refusal;
use crate::api::{ConnRef, WriteRequest};
use crate::cluster::link::Owner;
use crate::contacts::op_of;
use crate::files::media::{Media, is_media};
use crate::groups::GroupsConfig;
use crate::groups::send::GroupMessage;
use crate::observe::otlp::MsgSpan;
use crate::per_user_rate::PerUserRate;
use crate::store::{ConvId, UserId};
use opentelemetry::trace::SpanKind;

/// A handle on the sequencer's queue, one per shard (cloned). The sequencer stops once every
/// handle is gone and the backend has finished.
#[derive(Clone)]
pub struct Writes {
    ops: mpsc::Sender<WriteOp>,
    message_bytes_max: usize,
    request_message_bytes_max: usize,
    groups: Arc<GroupsConfig>,
    /// Each user's group writes this minute (`groups.writes_per_min_max`), over all shards.
    group_writes: Arc<PerUserRate>,
    /// Cluster mode: writes whose conversation another node owns go to it (`cluster/link/`).
    link: Option<Arc<crate::cluster::link::Link>>,
    /// The check of media sends' FileRefs (`files/media.rs`); `None`: media sends are refused.
    media: Option<Arc<Media>>,
}

/// What became of a write handed to [`Writes::submit`].
#[derive(Debug)]
pub enum Submitted {
    /// Queued: its answer comes back on the shard's inbox once its group is durable.
    Queued,
    /// Refused without touching the store: send this error back.
    Refused(v1::Error),
    /// The queue is full: wait for room with [`Writes::queue`].
    Full(PendingWrite),
    /// The sequencer has stopped (the server is shutting down).
    Stopped,
    /// A media send whose file must be checked in storage first: await [`Writes::check`]
    /// (on the connection's task: later writes of the connection wait behind it, in order).
    Check(PendingCheck),
}

/// A checked write waiting for room in the sequencer's queue.
#[derive(Debug)]
pub struct PendingWrite(WriteOp);

/// A media send waiting for its FileRef check.
#[derive(Debug)]
pub struct PendingCheck {
    conn: ConnRef,
    user: UserId,
    request_id: u64,
    write: Write,
    /// Cluster mode: the request as it came, in case its owner is another node.
    original: Option<WriteRequest>,
}

impl Writes {
    pub(crate) fn new(
        ops: mpsc::Sender<WriteOp>,
        message_bytes_max: usize,
        request_message_bytes_max: usize,
        groups: Arc<GroupsConfig>,
    ) -> Self {
        Self {
            ops,
            message_bytes_max,
            request_message_bytes_max,
            group_writes: Arc::new(PerUserRate::new(groups.writes_per_min_max, "group changes")),
            groups,
            link: None,
            media: None,
        }
    }

    /// Media sends are checked by `media` (`None`: refused).
    pub(crate) fn with_media(mut self, media: Option<Arc<Media>>) -> Self {
        self.media = media;
        self
    }

    /// Cluster mode: forwards writes owned by other nodes over `link`.
    pub(crate) fn with_link(mut self, link: Option<Arc<crate::cluster::link::Link>>) -> Self {
        self.link = link;
        self
    }

    /// A handle with no sequencer behind it: every write is `Stopped`. For tests of the
    /// gateway that never write.
    #[doc(hidden)]
    pub fn unconnected() -> Self {
        let (ops, _) = mpsc::channel(1);
        Self::new(ops, 0, 0, Arc::default())
    }

    /// Checks what needs no storage and queues the write, without waiting. `device_id`: the
    /// connection's device (`SessionInfo::device_id`), kept by the shard since its login, so
    /// that a delivery ack takes no lock and allocates nothing for it.
    pub fn submit(
        &self,
        conn: ConnRef,
        user: UserId,
        device_id: &Arc<str>,
        request_id: u64,
        request: WriteRequest,
    ) -> Submitted {
        // Counted where the user is connected (a forwarded write is not counted again).
        if matches!(request, WriteRequest::Group(_))
            && let Err(refusal) = self.group_writes.take(user, 1)
        {
            return Submitted::Refused(refusal.into_error());
        }
        // Cluster mode: the request as it came, in case its owner is another node.
        let original = self.link.as_ref().map(|_| request.clone());
        let write = match self.write_of(user, request, || Arc::clone(device_id)) {
            Ok(write) => write,
            Err(refusal) => return Submitted::Refused(refusal.into_error()),
        };
        if media_content(&write).is_some() {
            return Submitted::Check(PendingCheck {
                conn,
                user,
                request_id,
                write,
                original,
            });
        }
        self.route(conn, user, request_id, write, original)
    }

    /// Checks a media send's FileRef (storage reads on the backend's runtime), then queues it
    /// as [`Self::submit`] does: never [`Submitted::Check`] again.
    pub async fn check(&self, pending: PendingCheck) -> Submitted {
        let PendingCheck {
            conn,
            user,
            request_id,
            mut write,
            mut original,
        } = pending;
        let Some(media) = &self.media else {
            return Submitted::Refused(
                Refusal::new(
                    v1::ErrorCode::InvalidArgument,
                    "this server does not take files",
                )
                .into_error(),
            );
        };
        let Some((conv, content_type, content)) = media_content(&write) else {
            return self.route(conn, user, request_id, write, original);
        };
        let stored = match media
            .check_send(user, conv, content_type, content.clone())
            .await
        {
            Ok(stored) => stored,
            Err(refusal) => {
                // A resend of a message stored before (its ack was lost) gets that ack, whatever
                // its file has become since (recalled, removed): the sequencer answers after
                // its dedup check. Not so for a write another node owns (the owner does not
                // check files, so nothing unchecked is forwarded), nor a storage failure.
                let owner = self.link.as_ref().map(|link| link.owner_elsewhere(&write));
                if let Some(Owner::Unknown(why)) = owner {
                    return Submitted::Refused(Owner::refusal(why));
                }
                let owned_elsewhere = matches!(owner, Some(Owner::Elsewhere(_)));
                if refusal.code == v1::ErrorCode::Unavailable || owned_elsewhere {
                    return Submitted::Refused(refusal.into_error());
                }
                match &mut write {
                    Write::Send(m) => m.refused = Some(Box::new(refusal)),
                    Write::GroupSend(m) => m.refused = Some(Box::new(refusal)),
                    _ => {}
                }
                return self.route(conn, user, request_id, write, None);
            }
        };
        match &mut write {
            Write::Send(m) => m.content = stored.clone(),
            Write::GroupSend(m) => m.content = stored.clone(),
            _ => {}
        }
        if let Some(WriteRequest::Send(send)) = &mut original {
            send.content = stored;
        }
        self.route(conn, user, request_id, write, original)
    }

    /// Forwards a checked write to its owner node, or queues it here.
    fn route(
        &self,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        write: Write,
        original: Option<WriteRequest>,
    ) -> Submitted {
        if let Some(link) = &self.link {
            match (link.owner_elsewhere(&write), original) {
                (Owner::Here, _) => {}
                (Owner::Elsewhere(owner), Some(original)) => {
                    let device_id = match write {
                        Write::Cursor(c) => c.device_id.to_string(),
                        _ => String::new(),
                    };
                    return link.forward(&owner, conn, user, device_id, request_id, original);
                }
                // Cluster mode with no owner known (not joined yet, or no link to the owner):
                // refused, never taken here, which would steal the conversation from its owner.
                (Owner::Unknown(why), _) => return Submitted::Refused(Owner::refusal(why)),
                // A write without its request body cannot be forwarded (none such in cluster
                // mode with an owner elsewhere: `write_of` keeps it).
                (Owner::Elsewhere(_), None) => {
                    return Submitted::Refused(Owner::refusal(
                        "this write cannot be forwarded to its owner node; retry",
                    ));
                }
            }
        }
        // One vDSO clock read per send (no syscall): the start of its send-to-ack latency.
        let is_send = matches!(write, Write::Send(_) | Write::GroupSend(_));
        let queued_at = is_send.then(Instant::now);
        // Cluster mode with tracing on: a message's trace starts on its sender's node (its
        // frames for other nodes carry it). Off: one atomic load, no span.
        let trace = match &self.link {
            Some(_) if is_send => MsgSpan::root("ringchat.send", SpanKind::Server),
            _ => None,
        };
        let op = WriteOp {
            conn,
            request_id,
            write,
            queued_at,
            trace,
        };
        match self.ops.try_send(op) {
            Ok(()) => Submitted::Queued,
            Err(TrySendError::Full(op)) => Submitted::Full(PendingWrite(op)),
            Err(TrySendError::Closed(_)) => Submitted::Stopped,
        }
    }

    /// Waits for room and queues; `false` if the sequencer has stopped.
    pub async fn queue(&self, pending: PendingWrite) -> bool {
        self.ops.send(pending.0).await.is_ok()
    }

    /// On the owner node: a write forwarded by another node for its connection `conn`
    /// (`cluster/link/`), checked like a local one and queued; `trace`: its span on this node
    /// when the origin traces it. Never waits: with the sequencer's queue full it is refused
    /// UNAVAILABLE with `retry_after_ms` (the client resends with the same `client_msg_id`),
    /// so the link's receiving task, which also hands out answers, frames and kicks, never
    /// stalls behind a slow sequencer (a stalled stream would make its dialer end the link).
    pub(crate) fn submit_remote(
        &self,
        conn: ConnRef,
        user: UserId,
        device_id: String,
        request_id: u64,
        request: WriteRequest,
        trace: Option<MsgSpan>,
    ) -> Result<(), Refusal> {
        // A media send was checked on the node it arrived at (`Writes::check`) before it came.
        // The device is made an `Arc` only for the cursor writes that keep it: a forwarded
        // send allocates nothing for it.
        let write = self.write_of(user, request, move || Arc::from(device_id))?;
        let queued_at = matches!(write, Write::Send(_) | Write::GroupSend(_)).then(Instant::now);
        let op = WriteOp {
            conn,
            request_id,
            write,
            queued_at,
            trace,
        };
        self.try_queue_remote(op)
    }

    /// A system notification's batch sent by another node (cluster mode: this node owns the
    /// recipients' system conversations); like `submit_remote`, never waits for room.
    pub(crate) fn submit_system(
        &self,
        batch: crate::notifications::SystemBatch,
    ) -> Result<(), Refusal> {
        self.try_queue_remote(WriteOp {
            conn: crate::notifications::NO_CONN,
            request_id: 0,
            write: Write::System(batch),
            queued_at: None,
            trace: None,
        })
    }

    /// Queues a write that came from another node if the sequencer has room; refuses it
    /// UNAVAILABLE otherwise.
    fn try_queue_remote(&self, op: WriteOp) -> Result<(), Refusal> {
        match self.ops.try_send(op) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("ringchat_cluster_forward_refused_total", "reason" => "owner_busy")
                    .increment(1);
                Err(Refusal {
                    code: v1::ErrorCode::Unavailable,
                    message: "the conversation's owner node is busy; retry".into(),
                    retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
                })
            }
            Err(TrySendError::Closed(_)) => Err(Refusal::store_away("this node is shutting down")),
        }
    }

    /// `device_id`: the device of the connection the write came on, asked for only by the
    /// cursor writes (the only ones that keep it).
    fn write_of(
        &self,
        user: UserId,
        request: WriteRequest,
        device_id: impl FnOnce() -> Arc<str>,
    ) -> Result<Write, Refusal> {
        Ok(match request {
            WriteRequest::Send(send) => match validate_send(user, &send, self.message_bytes_max)? {
                Target::User(to) => Write::Send(NewMessage {
                    from: user,
                    to,
                    client_msg_id: send.client_msg_id,
                    content_type: send.content_type,
                    content: send.content,
                    refused: None,
                }),
                Target::Group(g) => Write::GroupSend(GroupMessage {
                    from: user,
                    g,
                    client_msg_id: send.client_msg_id,
                    content_type: send.content_type,
                    content: send.content,
                    mention_user_ids: send.mention_user_ids,
                    mention_all: send.mention_all,
                    refused: None,
                }),
            },
            WriteRequest::DeliveryAck(ack) => {
                let conv = conv_from_wire(ack.conversation_id)?;
                Write::Cursor(CursorMove {
                    user,
                    device_id: device_id(),
                    conv,
                    kind: CursorKind::Delivered,
                    seq: ack.seq,
                })
            }
            WriteRequest::Read(read) => Write::Cursor(CursorMove {
                user,
                device_id: device_id(),
                conv: conv_from_wire(read.conversation_id)?,
                kind: CursorKind::Read,
                seq: read.seq,
            }),
            WriteRequest::Recall(recall) => Write::Recall {
                user,
                conv: conv_from_wire(recall.conversation_id)?,
                seq: recall.seq,
            },
            WriteRequest::Contact(write) => {
                Write::Contact(op_of(user, write, self.request_message_bytes_max)?)
            }
            WriteRequest::Group(write) => {
                Write::Group(crate::groups::op_of(user, write, &self.groups)?)
            }
        })
    }
}

/// A conversation send of media content: its conversation (`None` for a target the sequencer
/// refuses), content type and content.
fn media_content(write: &Write) -> Option<(Option<ConvId>, i32, &bytes::Bytes)> {
    let (conv, content_type, content) = match write {
        Write::Send(m) => (ConvId::direct(m.from, m.to), m.content_type, &m.content),
        Write::GroupSend(m) => (Some(m.g), m.content_type, &m.content),
        _ => return None,
    };
    is_media(content_type).then_some((conv, content_type, content))
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
