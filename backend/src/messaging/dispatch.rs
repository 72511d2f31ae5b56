//! A logged-in client's reads (on blocking threads) and typing (straight to the peer); and the
//! fan-out of one encoded frame to many connections. Writes do not pass here: `submit.rs`.

use std::sync::Arc;

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1;

use super::{conv_from_wire, conversations, members_with, reads};
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnId, ConnRef, Outgoing, SessionRequest, ShardEvent};
use crate::contacts::sequencer::{SendCheck, committed_send_check};
use crate::store::UserId;

/// The requests served from the store on a blocking thread.
enum Read {
    Sync(v1::Sync),
    History(v1::History),
    Conversations(v1::Conversations),
}

impl Backend {
    /// A logged-in client's reads and typing (its writes go from the shard straight to the
    /// sequencer: `Writes`).
    pub(crate) async fn session(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        request: SessionRequest,
    ) {
        match request {
            SessionRequest::Typing(typing) => {
                self.relay_typing(conn, user, request_id, typing).await;
            }
            SessionRequest::Sync(req) => {
                self.read(conn, user, request_id, Read::Sync(req)).await;
            }
            SessionRequest::History(req) => {
                self.read(conn, user, request_id, Read::History(req)).await;
            }
            SessionRequest::Conversations(req) => {
                self.read(conn, user, request_id, Read::Conversations(req))
                    .await;
            }
            SessionRequest::Contacts(query) => {
                self.contacts_query(conn, user, request_id, query).await;
            }
            SessionRequest::Account(req) => {
                self.account_request(conn, user, request_id, req).await;
            }
            SessionRequest::SetPresence(req) => {
                self.set_presence(conn, user, request_id, req).await;
            }
            SessionRequest::Group(query) => {
                self.group_query(conn, user, request_id, query).await;
            }
            SessionRequest::Room(req) => self.room(conn, user, request_id, req).await,
            SessionRequest::PushToken(req) => self.push_token(conn, user, request_id, req).await,
            SessionRequest::Invite(req) => self.user_invite(conn, user, request_id, req).await,
            SessionRequest::Resume(req) => self.resume(conn, user, request_id, req).await,
        }
    }

    /// Runs a read on a blocking thread when the read gate lets it (`read_gate.rs`).
    async fn read(self: &Arc<Self>, conn: ConnRef, user: UserId, request_id: u64, read: Read) {
        let Some(ticket) = self.read_ticket(conn, request_id).await else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let ports = this.ports.clone();
            let page_max = this.settings.limits.sync_page_max;
            // A page within what a resume may send: at most half of the connection's queue.
            let bytes_max = this.settings.login.resume_bytes_max;
            let answer = tokio::task::spawn_blocking(move || match read {
                Read::Sync(req) => {
                    reads::sync(&ports, user, &req, page_max, bytes_max).map(Body::SyncBatch)
                }
                Read::History(req) => {
                    reads::history(&ports, user, &req, page_max, bytes_max).map(Body::HistoryBatch)
                }
                Read::Conversations(req) => {
                    conversations::conversations(&ports, user, &req).map(Body::ConversationList)
                }
            })
            .await;
            let body = match answer {
                Ok(Ok(body)) => body,
                Ok(Err(refusal)) => Body::Error(refusal.into_error()),
                Err(join) => Body::Error(Refusal::unavailable(join).into_error()),
            };
            this.reply(conn, request_id, body).await;
        });
    }

    /// A place for a typing check's read, or `None`: the typing is dropped (best effort, a
    /// client repeats it) and counted.
    fn typing_ticket(&self, conn: ConnRef) -> Option<crate::read_gate::Ticket> {
        let ticket = self.reads.ticket(conn).ok();
        if ticket.is_none() {
            metrics::counter!("ringchat_typing_dropped_total", "reason" => "busy").increment(1);
        }
        ticket
    }

    /// Typing is relayed to the peer's sessions and never stored; it has no reply.
    async fn relay_typing(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        typing: v1::Typing,
    ) {
        if let Ok(g) = conv_from_wire(typing.conversation_id)
            && g.kind() == crate::store::ConvKind::Group
        {
            self.relay_group_typing(conn, user, request_id, g).await;
            return;
        }
        let (conv, members) = match conv_from_wire(typing.conversation_id).and_then(|conv| {
            let members = members_with(conv, user)?;
            // Nobody types to the server: refused before any read or link item.
            if conv.kind() == crate::store::ConvKind::System {
                return Err(super::system_read_only());
            }
            Ok((conv, members))
        }) {
            Ok(found) => found,
            Err(refusal) => {
                self.refuse(conn, request_id, refusal).await;
                return;
            }
        };
        let others: smallvec::SmallVec<[UserId; 2]> = members.others(user).collect();
        // Nobody to tell (no session here, no other node): no read for nothing.
        if others.is_empty() || (self.link.is_none() && self.sessions_of(&others, None).is_empty())
        {
            return;
        }
        // Typing reaches only whom a send could: a block either way stops it as it stops
        // messages, and so does the peer's DM policy where a first message would be refused
        // (a stranger's typing to a friends-only user before they share a message), both as
        // silently (a block is not revealed; typing has no reply). The check is the send's own
        // rule (`SendCheck`) over committed state, a read: on the read pool, behind its gate;
        // when the gate is full the typing is dropped (best effort, a client repeats it).
        let Some(ticket) = self.typing_ticket(conn) else {
            return;
        };
        // As the sequencer has it (read at start).
        let dm_policy_default: crate::store::DmPolicy =
            self.settings.contacts.dm_policy_default.into();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let ports = this.ports.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let check = committed_send_check(&*ports.contacts, conv, user, dm_policy_default)?;
                let reason = match check {
                    SendCheck::Refused(_) => "blocked",
                    _ => "dm_policy",
                };
                // The conversation's head is read only when the policy makes it matter.
                let has_messages = || ports.log.last_message(conv).map(|m| m.is_some());
                Ok::<_, crate::store::StoreError>(check.refusal(has_messages)?.map(|_| reason))
            })
            .await;
            match checked {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(reason))) => {
                    metrics::counter!("ringchat_typing_dropped_total", "reason" => reason)
                        .increment(1);
                    return;
                }
                // The store failed the read: typing is best effort, dropped.
                _ => {
                    metrics::counter!("ringchat_typing_dropped_total", "reason" => "busy")
                        .increment(1);
                    return;
                }
            }
            let frame = crate::api::encoded(
                0,
                Body::Typing(v1::Typing {
                    conversation_id: typing.conversation_id,
                    from_user_id: user,
                }),
            );
            // An empty `to` means "a group's audience everywhere": never for this one.
            if let Some(link) = &this.link
                && !others.is_empty()
            {
                link.send_typing(typing.conversation_id, user, &others);
            }
            let targets = this.sessions_of(&others, None);
            this.fanout(targets, frame).await;
        });
    }

    /// Typing in a group goes to its online members, only while they are at most
    /// `groups.typing_members_max` (the fan-out is what costs). The sender must be an online
    /// member, which the index knows without a read; then the group must still take messages
    /// from it: one read of the group and of the sender's member row, on the read pool behind
    /// its gate as a direct conversation's block check is, with the send's own rule
    /// (`groups::send::may_not_speak`). A dissolved group refuses it (GROUP_DISSOLVED: its
    /// members are still in the index, as they are still members); a muted sender's typing is
    /// dropped silently, as is any when the gate is full (best effort, a client repeats it).
    async fn relay_group_typing(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        g: crate::store::ConvId,
    ) {
        if !self.group_online.is_online_member(g, user) {
            let refusal = Refusal::new(v1::ErrorCode::NotFound, "no such conversation");
            self.refuse(conn, request_id, refusal).await;
            return;
        }
        let Some(ticket) = self.typing_ticket(conn) else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let groups = Arc::clone(&this.ports.groups);
            let checked = tokio::task::spawn_blocking(move || {
                let (Some(group), Some(me)) = (groups.group(g)?, groups.group_member(g, user)?)
                else {
                    return Ok(Some(Refusal::new(
                        v1::ErrorCode::NotFound,
                        "no such conversation",
                    )));
                };
                let now = crate::time::now_ms();
                Ok::<_, crate::store::StoreError>(crate::groups::send::may_not_speak(
                    crate::groups::sequencer::GroupGate::of(&group),
                    &me,
                    now,
                ))
            })
            .await;
            match checked {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(refusal))) if refusal.code == v1::ErrorCode::Muted => {
                    metrics::counter!("ringchat_typing_dropped_total", "reason" => "muted")
                        .increment(1);
                    return;
                }
                Ok(Ok(Some(refusal))) => {
                    this.refuse(conn, request_id, refusal).await;
                    return;
                }
                // The store failed the read: typing is best effort, dropped.
                _ => {
                    metrics::counter!("ringchat_typing_dropped_total", "reason" => "busy")
                        .increment(1);
                    return;
                }
            }
            this.fan_out_group_typing(conn, user, g).await;
        });
    }

    /// Group typing that passed its checks, to the group's online connections (and the other
    /// nodes) but the sender's.
    async fn fan_out_group_typing(&self, conn: ConnRef, user: UserId, g: crate::store::ConvId) {
        // Connections, the sender's own included: a bound on the cost, not an exact count.
        if let Some(link) = &self.link {
            link.send_typing(g.to_wire(), user, &[]);
        }
        if self.group_online.online_conns(g) > self.settings.groups.typing_members_max as usize {
            return;
        }
        let frame = crate::api::encoded(
            0,
            Body::Typing(v1::Typing {
                conversation_id: g.to_wire(),
                from_user_id: user,
            }),
        );
        let mut per_shard = Vec::new();
        self.group_online.audience(g, |shard, conns| {
            let except = (usize::from(conn.shard) == shard).then_some(conn.conn);
            per_shard.push((shard, Arc::clone(conns), except));
        });
        for (shard, conns, except) in per_shard {
            let event = ShardEvent::Frames(vec![Outgoing::Shared {
                conns,
                except,
                frame: frame.clone(),
            }]);
            // Shard ids fit u16: they were made from u16 in the first place.
            self.send_to_shard(shard as u16, event).await;
        }
    }

    pub(crate) async fn refuse(&self, conn: ConnRef, request_id: u64, refusal: Refusal) {
        self.reply(conn, request_id, Body::Error(refusal.into_error()))
            .await;
    }

    /// Every session of these users (each named once), but `except`.
    pub(crate) fn sessions_of(&self, users: &[UserId], except: Option<ConnRef>) -> Vec<ConnRef> {
        let sessions = self.sessions.read();
        let mut out = Vec::new();
        for user in users {
            out.extend(
                sessions
                    .of_user(*user)
                    .iter()
                    .map(|s| s.conn)
                    .filter(|c| Some(*c) != except),
            );
        }
        out
    }

    /// Sends one encoded frame to many connections: one event per shard.
    pub(crate) async fn fanout(&self, targets: Vec<ConnRef>, frame: Bytes) {
        match targets.as_slice() {
            [] => {}
            [one] => {
                let event = ShardEvent::Frame {
                    conn: one.conn,
                    frame,
                };
                self.send_to_shard(one.shard, event).await;
            }
            _ => {
                let mut per_shard: Vec<Vec<ConnId>> = vec![Vec::new(); self.shards.len()];
                for t in &targets {
                    if let Some(list) = per_shard.get_mut(usize::from(t.shard)) {
                        list.push(t.conn);
                    }
                }
                for (shard, conns) in per_shard.into_iter().enumerate() {
                    if conns.is_empty() {
                        continue;
                    }
                    let event = ShardEvent::Fanout {
                        conns,
                        frame: frame.clone(),
                    };
                    // Shard ids fit u16: they were made from u16 in the first place.
                    self.send_to_shard(shard as u16, event).await;
                }
            }
        }
    }
}
