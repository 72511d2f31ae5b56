//! After a group is durable: acks to senders, pushes to every other session of the members,
//! receipts to the other side.
//!
//! A whole commit group is delivered as one batch: its frames are encoded into one shared
//! buffer (each frame once, however many recipients), the sessions are looked up under one
//! lock, and each shard gets one event with all of its frames.

use bytes::{Bytes, BytesMut};
use ringchat_proto::v1;
use ringchat_proto::{Body, Frame};
use tokio::sync::mpsc;

use super::to_wire;
use super::writer::{Committed, Outcome};
use crate::Backend;
use crate::api::{ConnId, ConnRef, ShardEvent};
use crate::store::{DedupRecord, Members, MessageRecord};

/// Bytes the encoding buffer grows by: frames of a group share allocations of this size.
const ENCODE_CHUNK_BYTES: usize = 64 * 1024;
/// Below this much room left, the next frame starts a new chunk.
const ENCODE_SLACK_BYTES: usize = 1024;

/// One frame for the sessions of some members, except the connection that caused it.
struct Fanout {
    members: Members,
    except: ConnRef,
    frame: Bytes,
}

/// Frames of one commit group on their way to the shards.
struct Outbox {
    buf: BytesMut,
    /// Per shard: (connection, frame).
    per_shard: Vec<Vec<(ConnId, Bytes)>>,
    fanouts: Vec<Fanout>,
}

impl Outbox {
    fn new(shards: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            per_shard: vec![Vec::new(); shards],
            fanouts: Vec::new(),
        }
    }

    fn encode(&mut self, request_id: u64, body: Body) -> Bytes {
        let frame = Frame {
            request_id,
            body: Some(body),
        };
        // A frame that does not fit what is left gets a buffer of its own size from `encode`.
        if self.buf.capacity() - self.buf.len() < ENCODE_SLACK_BYTES {
            self.buf.reserve(ENCODE_CHUNK_BYTES);
        }
        ringchat_proto::codec::encode(&frame, &mut self.buf);
        self.buf.split().freeze()
    }

    fn reply(&mut self, conn: ConnRef, request_id: u64, body: Body) {
        let frame = self.encode(request_id, body);
        self.to(conn, frame);
    }

    fn to(&mut self, conn: ConnRef, frame: Bytes) {
        if let Some(list) = self.per_shard.get_mut(usize::from(conn.shard)) {
            list.push((conn.conn, frame));
        }
    }

    fn fanout(&mut self, members: Members, except: ConnRef, body: Body) {
        let frame = self.encode(0, body);
        self.fanouts.push(Fanout {
            members,
            except,
            frame,
        });
    }
}

impl Backend {
    /// Runs until the commit thread stops.
    pub(crate) async fn deliver(&self, mut committed: mpsc::Receiver<Committed>) {
        while let Some(group) = committed.recv().await {
            let stored = group
                .outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Sent { .. }))
                .count();
            metrics::counter!("ringchat_messages_stored_total").increment(stored as u64);
            let mut outbox = Outbox::new(self.shards.len());
            let mut messages: Vec<Option<MessageRecord>> =
                group.messages.into_iter().map(Some).collect();
            for outcome in group.outcomes {
                frames_of(outcome, &mut messages, &mut outbox);
            }
            self.resolve_fanouts(&mut outbox);
            for (shard, frames) in outbox.per_shard.into_iter().enumerate() {
                if !frames.is_empty() {
                    // Shard ids fit u16: they were made from u16 in the first place.
                    let shard = u16::try_from(shard).expect("shard ids fit u16");
                    self.send_to_shard(shard, ShardEvent::Frames(frames)).await;
                }
            }
            self.health.outcomes_passed_on();
        }
    }

    /// Turns each fanout into frames for the members' sessions, under one lock.
    fn resolve_fanouts(&self, outbox: &mut Outbox) {
        if outbox.fanouts.is_empty() {
            return;
        }
        let fanouts = std::mem::take(&mut outbox.fanouts);
        let sessions = self.lock_sessions();
        for f in fanouts {
            let users = f.members.all();
            for (i, user) in users.iter().enumerate() {
                if users[..i].contains(user) {
                    continue;
                }
                for s in sessions.of_user(*user) {
                    if s.conn != f.except {
                        outbox.to(s.conn, f.frame.clone());
                    }
                }
            }
        }
    }
}

/// The ack of a send: of the message stored for it, or (`duplicate`) of the one stored before.
fn send_ack(stored: &DedupRecord, duplicate: bool) -> Body {
    Body::SendAck(v1::SendAck {
        msg_id: stored.msg_id,
        conversation_id: stored.conv_id.to_wire(),
        seq: stored.seq,
        server_time_ms: stored.server_time_ms,
        duplicate,
    })
}

/// A stored message on its way to the members' sessions.
fn push(message: MessageRecord) -> Body {
    Body::Push(v1::Push {
        message: Some(to_wire(message)),
    })
}

/// The frames of one outcome; each message is taken out of `messages` by the one outcome that
/// names it.
fn frames_of(outcome: Outcome, messages: &mut [Option<MessageRecord>], outbox: &mut Outbox) {
    let mut take = |i: usize| {
        messages
            .get_mut(i)
            .and_then(Option::take)
            .expect("each stored message is named by exactly one outcome")
    };
    match outcome {
        Outcome::Sent {
            conn,
            request_id,
            message,
            members,
        } => {
            let message = take(message);
            outbox.reply(conn, request_id, send_ack(&(&message).into(), false));
            outbox.fanout(members, conn, push(message));
        }
        Outcome::Duplicate {
            conn,
            request_id,
            original,
        } => {
            outbox.reply(conn, request_id, send_ack(&original, true));
        }
        Outcome::Cursor {
            conn,
            request_id,
            conv,
            user,
            members,
            cursor,
            moved,
        } => {
            let ok = v1::CursorOk {
                conversation_id: conv.to_wire(),
                delivered_seq: cursor.delivered_seq,
                read_seq: cursor.read_seq,
            };
            outbox.reply(conn, request_id, Body::CursorOk(ok));
            if moved {
                let receipt = Body::Receipt(v1::Receipt {
                    conversation_id: conv.to_wire(),
                    user_id: user,
                    delivered_seq: cursor.delivered_seq,
                    read_seq: cursor.read_seq,
                });
                outbox.fanout(members, conn, receipt);
            }
        }
        Outcome::Recalled {
            conn,
            request_id,
            conv,
            members,
            seq,
            event_seq,
            event,
        } => {
            let ok = v1::RecallOk {
                conversation_id: conv.to_wire(),
                seq,
                event_seq,
            };
            outbox.reply(conn, request_id, Body::RecallOk(ok));
            if let Some(event) = event.map(&mut take) {
                outbox.fanout(members, conn, push(event));
            }
        }
        Outcome::Refused {
            conn,
            request_id,
            refusal,
        } => {
            outbox.reply(conn, request_id, Body::Error(refusal.into_error()));
        }
    }
}
