//! After a group is durable: acks to senders, pushes to every other session of both users,
//! receipts to the other side. Each frame is encoded once and shared by all its recipients.

use ringchat_proto::Body;
use ringchat_proto::v1;
use tokio::sync::mpsc;

use super::to_wire;
use super::writer::Outcome;
use crate::Backend;
use crate::api::encoded;

impl Backend {
    /// Runs until the commit thread stops.
    pub(crate) async fn deliver(&self, mut outcomes: mpsc::Receiver<Vec<Outcome>>) {
        while let Some(group) = outcomes.recv().await {
            let stored = group
                .iter()
                .filter(|o| matches!(o, Outcome::Sent { .. }))
                .count();
            metrics::counter!("ringchat_messages_stored_total").increment(stored as u64);
            for outcome in group {
                self.deliver_one(outcome).await;
            }
            self.health.outcomes_passed_on();
        }
    }

    async fn deliver_one(&self, outcome: Outcome) {
        match outcome {
            Outcome::Sent {
                conn,
                request_id,
                message,
                members,
            } => {
                let ack = v1::SendAck {
                    msg_id: message.msg_id,
                    conversation_id: message.conv_id.to_wire(),
                    seq: message.seq,
                    server_time_ms: message.server_time_ms,
                    duplicate: false,
                };
                self.reply(conn, request_id, Body::SendAck(ack)).await;
                let targets = self.sessions_of(members.all(), Some(conn));
                let push = encoded(
                    0,
                    Body::Push(v1::Push {
                        message: Some(to_wire(message)),
                    }),
                );
                self.fanout(targets, push).await;
            }
            Outcome::Duplicate {
                conn,
                request_id,
                original,
            } => {
                let ack = v1::SendAck {
                    msg_id: original.msg_id,
                    conversation_id: original.conv_id.to_wire(),
                    seq: original.seq,
                    server_time_ms: original.server_time_ms,
                    duplicate: true,
                };
                self.reply(conn, request_id, Body::SendAck(ack)).await;
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
                self.reply(conn, request_id, Body::CursorOk(ok)).await;
                if moved {
                    let receipt = encoded(
                        0,
                        Body::Receipt(v1::Receipt {
                            conversation_id: conv.to_wire(),
                            user_id: user,
                            delivered_seq: cursor.delivered_seq,
                            read_seq: cursor.read_seq,
                        }),
                    );
                    let targets = self.sessions_of(members.all(), Some(conn));
                    self.fanout(targets, receipt).await;
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
                self.reply(conn, request_id, Body::RecallOk(ok)).await;
                if let Some(event) = event {
                    let targets = self.sessions_of(members.all(), Some(conn));
                    let push = encoded(
                        0,
                        Body::Push(v1::Push {
                            message: Some(to_wire(event)),
                        }),
                    );
                    self.fanout(targets, push).await;
                }
            }
            Outcome::Refused {
                conn,
                request_id,
                refusal,
            } => {
                self.reply(conn, request_id, Body::Error(refusal.into_error()))
                    .await;
            }
        }
    }
}
