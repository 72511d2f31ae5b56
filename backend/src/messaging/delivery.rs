//! After a group is durable: acks to senders, pushes to every other session of the members,
//! receipts to the other side.
//!
//! A whole commit group is delivered as one batch: its frames are encoded into one shared
//! buffer (each frame once, however many recipients), the sessions are looked up under one
//! lock, and each shard gets one event with all of its frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use ringchat_proto::v1;
use ringchat_proto::{Body, Frame};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::in_flight::InFlight;
use super::operator::OperatorReplies;
use super::to_wire;
use super::writer::{Audience, Committed, Outcome};
use crate::api::{ConnId, ConnRef, Outgoing, ShardEvent, ShardSender};
use crate::cluster::link::{Link, Outbound, is_remote};
use crate::groups::GroupDone;
use crate::groups::online::GroupOnline;
use crate::observe::otlp::MsgSpan;
use crate::observe::{GroupFacts, Observe};
use crate::push::{PushQueue, PushRecord};
use crate::sessions::{Session, SharedSessions};
use crate::store::{ConvId, DedupRecord, Members, MessageRecord, StoreHealth, UserId};

/// Bytes the encoding buffer grows by: frames of a group share allocations of this size. A
/// shard copies frames under a quarter of it out of their chunk when they wait behind a
/// backlog (`COPY_BELOW_BYTES`, gateway `shard/outbound.rs`): change both together.
const ENCODE_CHUNK_BYTES: usize = 64 * 1024;
/// Below this much room left, the next frame starts a new chunk.
const ENCODE_SLACK_BYTES: usize = 1024;

/// One frame for the sessions of some members, except the connection that caused it.
struct Fanout {
    members: Members,
    except: ConnRef,
    frame: Bytes,
    /// Offline push: noted if this member turns out to have no session.
    push: Option<PushRecord>,
}

/// Frames of one commit group on their way to the shards.
struct Outbox {
    buf: BytesMut,
    /// Per shard, in order.
    per_shard: Vec<Vec<Outgoing>>,
    fanouts: Vec<Fanout>,
    /// Offline pushes of the group, offered to the push queue at once.
    pushes: Vec<PushRecord>,
    /// Frames for recipients (not replies), for `ringchat_deliveries_total`.
    deliveries: u64,
    /// Cluster mode: what the group sends to other nodes (answers to forwarded writes, the
    /// frames for their sessions); `None` on one box.
    remote: Option<Outbound>,
}

impl Outbox {
    fn new(shards: usize, cluster: bool) -> Self {
        Self {
            buf: BytesMut::new(),
            per_shard: vec![Vec::new(); shards],
            fanouts: Vec::new(),
            pushes: Vec::new(),
            deliveries: 0,
            remote: cluster.then(Outbound::default),
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
        match &mut self.remote {
            Some(remote) if is_remote(conn) => remote.answer(conn, request_id, frame),
            _ => self.to(conn, frame),
        }
    }

    fn shared(
        &mut self,
        shard: usize,
        conns: Arc<Vec<ConnId>>,
        except: Option<ConnId>,
        frame: Bytes,
    ) {
        if let Some(list) = self.per_shard.get_mut(shard) {
            self.deliveries += conns.len().saturating_sub(usize::from(except.is_some())) as u64;
            list.push(Outgoing::Shared {
                conns,
                except,
                frame,
            });
        }
    }

    fn to(&mut self, conn: ConnRef, frame: Bytes) {
        if let Some(list) = self.per_shard.get_mut(usize::from(conn.shard)) {
            list.push(Outgoing::One(conn.conn, frame));
        }
    }

    fn fanout(&mut self, members: Members, except: ConnRef, body: Body) {
        let frame = self.encode(0, body);
        self.fanout_frame(members, except, frame);
    }

    fn fanout_frame(&mut self, members: Members, except: ConnRef, frame: Bytes) {
        if let Some(remote) = &mut self.remote {
            remote.users(members.all(), except, &frame);
        }
        self.fanouts.push(Fanout {
            members,
            except,
            frame,
            push: None,
        });
    }

    /// [`Self::fanout`] of a stored message, noting an offline push for `push.user` if that
    /// member has no session.
    fn fanout_message(
        &mut self,
        members: Members,
        except: ConnRef,
        message: MessageRecord,
        push_to: Option<UserId>,
    ) {
        let push = push_to.map(|user| PushRecord::of(user, &message));
        let frame = self.encode(0, push_message(message));
        if let Some(remote) = &mut self.remote {
            remote.users(members.all(), except, &frame);
        }
        self.fanouts.push(Fanout {
            members,
            except,
            frame,
            push,
        });
    }
}

/// Groups of at most this many operations are passed on from the sequencer's thread when
/// nothing is queued ahead of them: under light load a message then crosses one queue on its
/// way out (sequencer → shard) instead of two. Bigger groups go to the delivery task, so that
/// encoding them overlaps the next group's write and fsync.
const INLINE_GROUP_OPS_MAX: usize = 16;

/// What the delivery task passes on: a whole group, or the frames the sequencer could not
/// hand over itself (a shard's inbox was full), indexed by shard.
pub(crate) enum ToDeliver {
    Group(Committed),
    Frames(Vec<Vec<Outgoing>>),
}

/// Passes durable groups' acks, pushes and receipts on to the shards' inboxes, in commit order
/// per shard.
pub(crate) struct Delivery {
    sessions: SharedSessions,
    /// Who of each group is online: group audiences are resolved here, in commit order.
    online: Arc<GroupOnline>,
    shards: Vec<ShardSender>,
    health: Arc<StoreHealth>,
    /// Counts and latencies for the admin overview and `/metrics`.
    observe: Arc<Observe>,
    /// Items handed to the delivery task and not yet passed on in full. The sequencer delivers
    /// a group itself only when this is 0, so no group overtakes an earlier one.
    queued: AtomicUsize,
    /// Operators waiting for the answers of their writes (`operator.rs`).
    operator: Arc<OperatorReplies>,
    /// Offline push, when `[push] url` is set.
    push: Option<Arc<PushQueue>>,
    /// Cluster mode: the links to the other nodes.
    link: Option<Arc<Link>>,
    /// When each commit group not yet routed to the shards began; shared with the groups'
    /// online index, whose repair waits on it as a login does.
    pub(crate) in_flight: Arc<InFlight>,
}

impl Delivery {
    pub(crate) fn new(
        sessions: SharedSessions,
        online: Arc<GroupOnline>,
        shards: Vec<ShardSender>,
        health: Arc<StoreHealth>,
        push: Option<Arc<PushQueue>>,
        observe: Arc<Observe>,
    ) -> Self {
        Self {
            sessions,
            online,
            shards,
            health,
            observe,
            queued: AtomicUsize::new(0),
            operator: Arc::default(),
            push,
            link: None,
            in_flight: Arc::default(),
        }
    }

    /// Cluster mode: each durable group's answers and frames for other nodes go on `link`.
    pub(crate) fn with_link(mut self, link: Option<Arc<Link>>) -> Self {
        self.link = link;
        self
    }

    pub(crate) fn operator_replies(&self) -> Arc<OperatorReplies> {
        Arc::clone(&self.operator)
    }

    /// A write's answer: to its connection, or to the operator who made it.
    fn reply(&self, outbox: &mut Outbox, conn: ConnRef, request_id: u64, body: Body) {
        if OperatorReplies::is_operator(conn) {
            self.operator.answer(request_id, body);
        } else {
            outbox.reply(conn, request_id, body);
        }
    }

    /// On the sequencer's thread, once a group is durable: delivers it right here when it is
    /// small and nothing waits ahead of it, else hands it to the delivery task. `Err` when the
    /// task has gone (shutdown).
    pub(crate) fn pass_on(
        &self,
        group: Committed,
        task: &mpsc::Sender<ToDeliver>,
    ) -> Result<(), ()> {
        // A notification batch is one op with many messages: counted by its messages.
        let size = group.outcomes.len().max(group.messages.len());
        if size > INLINE_GROUP_OPS_MAX || self.queued.load(Ordering::Acquire) > 0 {
            return self.hand_over(ToDeliver::Group(group), task);
        }
        let mut per_shard = self.route(group);
        for (shard, frames) in per_shard.iter_mut().enumerate() {
            if frames.is_empty() {
                continue;
            }
            match self.shards[shard].try_send(ShardEvent::Frames(std::mem::take(frames))) {
                // A shard that has stopped (shutdown) takes nothing more.
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(event)) => {
                    let ShardEvent::Frames(back) = event else {
                        unreachable!("try_send gives back the event it was given")
                    };
                    *frames = back;
                    return self.hand_over(ToDeliver::Frames(per_shard), task);
                }
            }
        }
        self.in_flight.end();
        self.health.outcomes_passed_on();
        Ok(())
    }

    fn hand_over(&self, item: ToDeliver, task: &mpsc::Sender<ToDeliver>) -> Result<(), ()> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        task.blocking_send(item).map_err(drop)
    }

    /// The delivery task: runs until the sequencer stops.
    pub(crate) async fn run(&self, mut items: mpsc::Receiver<ToDeliver>) {
        while let Some(item) = items.recv().await {
            let per_shard = match item {
                ToDeliver::Group(group) => self.route(group),
                ToDeliver::Frames(frames) => frames,
            };
            for (shard, frames) in per_shard.into_iter().enumerate() {
                if !frames.is_empty() {
                    // A shard that has stopped (shutdown) takes nothing more; its clients
                    // resync later.
                    let _ = self.shards[shard].send(ShardEvent::Frames(frames)).await;
                }
            }
            self.in_flight.end();
            self.health.outcomes_passed_on();
            self.queued.fetch_sub(1, Ordering::Release);
        }
    }

    /// Encodes a group's frames and routes them: per shard, in order.
    fn route(&self, group: Committed) -> Vec<Vec<Outgoing>> {
        let stored = group
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Sent { .. } | Outcome::GroupSent { .. }))
            .count();
        metrics::counter!("ringchat_messages_stored_total").increment(stored as u64);
        let messages = &group.messages;
        self.observe.group(GroupFacts {
            send_started: &group.send_started,
            senders: group.outcomes.iter().filter_map(|o| match o {
                Outcome::Sent { message, .. } | Outcome::GroupSent { message, .. } => {
                    messages.get(*message).map(|m| m.from)
                }
                _ => None,
            }),
            stored: stored as u64,
            writes: group.outcomes.len() as u64,
        });
        let mut outbox = Outbox::new(self.shards.len(), self.link.is_some());
        let mut messages: Vec<Option<MessageRecord>> =
            group.messages.into_iter().map(Some).collect();
        let mut traces = group.traces;
        let mut traced = traces.iter_mut().peekable();
        for (i, outcome) in group.outcomes.into_iter().enumerate() {
            // A traced write's frames for other nodes carry its span's context.
            let span = traced.next_if(|(at, _)| *at == i).map(|(_, span)| span);
            if let (Some(span), Some(remote)) = (&span, &mut outbox.remote) {
                remote.trace = Some(span.traceparent());
            }
            if let Some(span) = span {
                trace_outcome(span, &outcome, &messages);
            }
            self.frames_of(outcome, &mut messages, &mut outbox);
            if let Some(remote) = &mut outbox.remote {
                remote.trace = None;
            }
        }
        self.resolve_fanouts(&mut outbox);
        if let (Some(link), Some(remote)) = (&self.link, outbox.remote.take()) {
            link.send_group(remote);
        }
        // Ends the spans: their writes' answers and frames are on their way.
        drop(traces);
        if let Some(push) = &self.push {
            push.offer(outbox.pushes);
        }
        self.observe.delivered(outbox.deliveries);
        outbox.per_shard
    }

    /// A frame for the group's online connections but `except`, resolved now (group audiences
    /// follow membership changes in outcome, that is commit, order): one shared list per
    /// shard, never a walk over the members.
    /// `seq`: the message the frame pushes (0: not a message): other nodes push it only to
    /// members who may see it (a login there may have read the store ahead of this frame).
    fn to_group(&self, outbox: &mut Outbox, g: ConvId, seq: u64, except: ConnRef, frame: &Bytes) {
        if let Some(remote) = &mut outbox.remote {
            remote.group(g, seq, except, frame);
        }
        self.online.audience(g, |shard, conns| {
            let except = (usize::from(except.shard) == shard).then_some(except.conn);
            outbox.shared(shard, Arc::clone(conns), except, frame.clone());
        });
    }

    fn to_audience(&self, outbox: &mut Outbox, audience: Audience, except: ConnRef, body: Body) {
        match audience {
            Audience::Members(members) => outbox.fanout(members, except, body),
            Audience::Group(g) => {
                let seq = match &body {
                    Body::Push(v1::Push { message: Some(m) }) => m.seq,
                    _ => 0,
                };
                let frame = outbox.encode(0, body);
                self.to_group(outbox, g, seq, except, &frame);
            }
        }
    }

    /// A group write's reply and events: members who joined are added before the events (they
    /// get them), members who left are taken out after (they get them, and nothing later).
    fn group_frames(
        &self,
        conn: ConnRef,
        request_id: u64,
        done: GroupDone,
        messages: &mut [Option<MessageRecord>],
        outbox: &mut Outbox,
    ) {
        self.reply(outbox, conn, request_id, done.reply);
        let g = done.group;
        for user in &done.joined {
            self.online.changed(g, *user, true);
            if let Some(remote) = &mut outbox.remote {
                remote.member(g, *user, true);
            }
        }
        for i in done.events {
            let event = take(messages, i);
            let seq = event.seq;
            let frame = outbox.encode(0, push_message(event));
            self.to_group(outbox, g, seq, conn, &frame);
            for user in &done.also {
                outbox.fanout_frame(Members::one(*user), conn, frame.clone());
            }
        }
        for user in &done.left {
            self.online.changed(g, *user, false);
            if let Some(remote) = &mut outbox.remote {
                remote.member(g, *user, false);
            }
        }
    }

    /// Turns each fanout into frames for the members' sessions, under one read lock. Fanouts
    /// in a row for the same members (a pair's messages in one group) look them up once.
    fn resolve_fanouts(&self, outbox: &mut Outbox) {
        if outbox.fanouts.is_empty() {
            return;
        }
        let fanouts = std::mem::take(&mut outbox.fanouts);
        let sessions = self.sessions.read();
        // The last fanout's members and their sessions, each member once.
        let mut last: &[UserId] = &[];
        let mut resolved: smallvec::SmallVec<[(UserId, &[Session]); 2]> = smallvec::SmallVec::new();
        for f in &fanouts {
            let users = f.members.all();
            if users != last {
                resolved.clear();
                for (i, user) in users.iter().enumerate() {
                    if !users[..i].contains(user) {
                        resolved.push((*user, sessions.of_user(*user)));
                    }
                }
                last = users;
            }
            for &(user, of_user) in &resolved {
                // The offline check costs nothing more: these sessions were looked up anyway.
                if of_user.is_empty()
                    && let Some(push) = f.push.filter(|p| p.user == user)
                {
                    outbox.pushes.push(push);
                }
                for s in of_user {
                    if s.conn != f.except {
                        outbox.deliveries += 1;
                        outbox.to(s.conn, f.frame.clone());
                    }
                }
            }
        }
    }
}

/// What a traced write came to, on its span.
fn trace_outcome(span: &mut MsgSpan, outcome: &Outcome, messages: &[Option<MessageRecord>]) {
    match outcome {
        Outcome::Sent { message, .. } | Outcome::GroupSent { message, .. } => {
            if let Some(Some(m)) = messages.get(*message) {
                span.set("ringchat.conversation_id", m.conv_id.to_wire() as i64);
                span.set("ringchat.seq", m.seq as i64);
                span.set("ringchat.msg_id", m.msg_id as i64);
            }
        }
        Outcome::Duplicate { .. } => span.set("ringchat.duplicate", true),
        Outcome::Refused { refusal, .. } => {
            span.set("ringchat.refused", refusal.message.to_string());
            span.fail("refused");
        }
        _ => {}
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
fn push_message(message: MessageRecord) -> Body {
    Body::Push(v1::Push {
        message: Some(to_wire(message)),
    })
}

/// The frames of one outcome; each message is taken out of `messages` by the one outcome that
/// names it.
fn take(messages: &mut [Option<MessageRecord>], i: usize) -> MessageRecord {
    messages
        .get_mut(i)
        .and_then(Option::take)
        .expect("each stored message is named by exactly one outcome")
}

impl Delivery {
    fn frames_of(
        &self,
        outcome: Outcome,
        messages: &mut [Option<MessageRecord>],
        outbox: &mut Outbox,
    ) {
        match outcome {
            Outcome::Sent {
                conn,
                request_id,
                message,
                members,
            } => {
                let message = take(messages, message);
                outbox.reply(conn, request_id, send_ack(&(&message).into(), false));
                let push_to = self.push.as_ref().map(|_| message.to);
                outbox.fanout_message(members, conn, message, push_to);
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
                audience,
                cursor,
                moved,
            } => {
                // Request id 0: the client wants no answer (a delivery ack per read batch).
                if request_id != 0 {
                    let ok = v1::CursorOk {
                        conversation_id: conv.to_wire(),
                        delivered_seq: cursor.delivered_seq,
                        read_seq: cursor.read_seq,
                    };
                    outbox.reply(conn, request_id, Body::CursorOk(ok));
                }
                if moved {
                    let receipt = Body::Receipt(v1::Receipt {
                        conversation_id: conv.to_wire(),
                        user_id: user,
                        delivered_seq: cursor.delivered_seq,
                        read_seq: cursor.read_seq,
                    });
                    self.to_audience(outbox, audience, conn, receipt);
                }
            }
            Outcome::Recalled {
                conn,
                request_id,
                conv,
                audience,
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
                if let Some(event) = event.map(|i| take(messages, i)) {
                    self.to_audience(outbox, audience, conn, push_message(event));
                }
            }
            Outcome::Refused {
                conn,
                request_id,
                refusal,
            } => {
                self.reply(outbox, conn, request_id, Body::Error(refusal.into_error()));
            }
            Outcome::Contact {
                conn,
                request_id,
                done,
            } => {
                outbox.reply(conn, request_id, done.reply);
                for (user, event) in done.events {
                    outbox.fanout(Members::one(user), conn, event);
                }
            }
            Outcome::GroupSent {
                conn,
                request_id,
                message,
                group,
                member_count,
            } => {
                let message = take(messages, message);
                outbox.reply(conn, request_id, send_ack(&(&message).into(), false));
                // Whom of the group it concerns is the push sender's to work out, off this path.
                if let Some(push) = &self.push
                    && (message.mentions.is_some() || member_count <= push.group_members_max)
                {
                    outbox.pushes.push(PushRecord::of(0, &message));
                }
                let seq = message.seq;
                let frame = outbox.encode(0, push_message(message));
                self.to_group(outbox, group, seq, conn, &frame);
            }
            Outcome::System(system) => {
                let crate::notifications::SystemOutcome {
                    reply,
                    result,
                    messages: stored,
                } = system;
                for i in stored {
                    let message = take(messages, i);
                    let user = message
                        .conv_id
                        .system_user()
                        .expect("a system conversation");
                    let push_to = self.push.as_ref().map(|_| user);
                    outbox.fanout_message(
                        Members::one(user),
                        crate::notifications::NO_CONN,
                        message,
                        push_to,
                    );
                }
                // The job may have gone (shutdown); nothing to do then.
                let _ = reply.send(result);
            }
            Outcome::Group {
                conn,
                request_id,
                done,
            } => {
                self.group_frames(conn, request_id, done, messages, outbox);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Refusal;
    use crate::sessions::Sessions;
    use ringchat_proto::v1::ErrorCode;

    /// A group of one refusal for connection `conn` of shard 0: one frame, easy to tell apart.
    fn group(request_id: u64) -> Committed {
        Committed {
            outcomes: vec![Outcome::Refused {
                conn: ConnRef { shard: 0, conn: 7 },
                request_id,
                refusal: Refusal::new(ErrorCode::InvalidArgument, "x"),
            }],
            messages: Vec::new(),
            send_started: Vec::new(),
            traces: Vec::new(),
        }
    }

    fn request_ids(event: ShardEvent) -> Vec<u64> {
        let ShardEvent::Frames(frames) = event else {
            panic!("expected frames, got {event:?}")
        };
        frames
            .into_iter()
            .map(|outgoing| {
                let Outgoing::One(_, bytes) = outgoing else {
                    panic!("expected frames for one connection")
                };
                ringchat_proto::decode(&mut bytes.as_ref().into(), 1 << 20)
                    .expect("a frame")
                    .expect("whole")
                    .request_id
            })
            .collect()
    }

    /// Fanouts in a row for the same members share their sessions' lookup; each still reaches
    /// every session of its members but the one excepted, and notes an offline member's push.
    #[test]
    fn fanouts_reach_every_session_of_their_members_but_the_excepted() {
        let conn = |conn| ConnRef { shard: 0, conn };
        let session = |c, device: &str| crate::sessions::Session {
            conn: conn(c),
            device_id: device.into(),
            platform: v1::Platform::Ios,
            token_hash: [0; 32],
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            opened_at_ms: 0,
            token_expires_at_ms: u64::MAX,
        };
        // Users 1, 2 and 3 (user ids start at USER_ID_FIRST); 3 is offline.
        let [u1, u2, u3] = [1, 2, 3].map(|n| crate::store::USER_ID_FIRST + n);
        let mut sessions = Sessions::new(4, Vec::new());
        sessions.open(u1, session(10, "phone")).unwrap();
        sessions.open(u1, session(11, "laptop")).unwrap();
        sessions.open(u2, session(20, "phone")).unwrap();
        let delivery = Delivery::new(
            SharedSessions::new(sessions),
            Arc::new(GroupOnline::new(1)),
            Vec::new(),
            Arc::default(),
            None,
            Arc::new(Observe::in_memory()),
        );
        let members = |a, b| ConvId::direct(a, b).unwrap().implied_members().unwrap();
        let frame = |b: &'static [u8]| Bytes::from_static(b);
        let mut outbox = Outbox::new(1, false);
        outbox.fanout_frame(members(u1, u2), conn(10), frame(b"a"));
        outbox.fanout_frame(members(u1, u2), conn(20), frame(b"b"));
        let push = PushRecord {
            user: u3,
            conv: ConvId::direct(u1, u3).unwrap(),
            seq: 1,
            from: u1,
            server_time_ms: 5,
        };
        outbox.fanouts.push(Fanout {
            members: members(u1, u3),
            except: conn(10),
            frame: frame(b"c"),
            push: Some(push),
        });
        outbox.fanout_frame(members(u1, u2), conn(11), frame(b"d"));
        delivery.resolve_fanouts(&mut outbox);
        let sent: Vec<(ConnId, &[u8])> = outbox.per_shard[0]
            .iter()
            .map(|o| match o {
                Outgoing::One(c, f) => (*c, &f[..]),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: [(ConnId, &[u8]); 7] = [
            (11, b"a"),
            (20, b"a"),
            (10, b"b"),
            (11, b"b"),
            (11, b"c"),
            (10, b"d"),
            (20, b"d"),
        ];
        assert_eq!(sent, want);
        assert_eq!(outbox.deliveries, 7);
        assert_eq!(outbox.pushes, [push]);
    }

    #[test]
    fn groups_behind_a_full_inbox_wait_for_the_task_and_keep_their_order() {
        let (shard_tx, mut shard_rx) = mpsc::channel(1);
        let (task_tx, task_rx) = mpsc::channel(8);
        let delivery = Arc::new(Delivery::new(
            SharedSessions::new(Sessions::new(1, Vec::new())),
            Arc::new(GroupOnline::new(1)),
            vec![shard_tx],
            Arc::default(),
            None,
            Arc::new(Observe::in_memory()),
        ));
        // On this thread, as on the sequencer's (no runtime): room for one event, so the first
        // group goes straight to the inbox.
        delivery.pass_on(group(1), &task_tx).unwrap();
        assert_eq!(delivery.queued.load(Ordering::Acquire), 0);
        // The inbox is full: the second group's frames go to the task, and so does the third
        // (however small), so that it cannot overtake the second.
        delivery.pass_on(group(2), &task_tx).unwrap();
        delivery.pass_on(group(3), &task_tx).unwrap();
        assert_eq!(delivery.queued.load(Ordering::Acquire), 2);
        drop(task_tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let seen = rt.block_on(async {
            let task = tokio::spawn({
                let delivery = Arc::clone(&delivery);
                async move { delivery.run(task_rx).await }
            });
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let event = shard_rx.recv().await.expect("three frames");
                seen.extend(request_ids(event));
            }
            task.await.unwrap();
            seen
        });
        assert_eq!(seen, [1, 2, 3]);
        // Nothing waits any more: the next small group is delivered by the sequencer again.
        assert_eq!(delivery.queued.load(Ordering::Acquire), 0);
    }
}
