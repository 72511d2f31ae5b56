//! The owner's side of a room across the nodes: a node's part taken into the book, a message
//! numbered and sent once to every node with members, and a numbered message handed to this
//! node's sessions (on every node, the owner included) in `room_seq` order.

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};

use super::book::Part;
use super::{ClusterRooms, Rooms};
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, ShardEvent, UserId};
use crate::cluster::link::Owner;
use crate::rooms::name::valid_room_name;
use crate::rooms::registry::RoomError;

impl Rooms {
    /// On the owner: numbers a message from node `from` (its sender's connection `origin`
    /// there, which has delivered up to `delivered`), queues it once for every other node
    /// with sessions in the room and delivers it here. Returns its `room_seq`.
    #[allow(clippy::too_many_arguments)] // One message's fields, passed as they came.
    pub(super) async fn number_and_send(
        &self,
        c: &ClusterRooms,
        from: &str,
        origin: &v1::OriginConn,
        user: UserId,
        content_type: i32,
        content: &Bytes,
        room: &str,
        delivered: u64,
    ) -> Result<u64, RoomError> {
        let _order = c.order.lock().await;
        let now_ms = self.now_ms();
        // Above what the sender's node and this one delivered: an owner whose view lagged may
        // have numbered there past what this one heard when it took the room over, and a
        // message numbered below would be dropped there unseen.
        let floor = delivered.max(self.lock().part(room).1);
        let numbered = c.book().number(room, from, floor, now_ms)?;
        let frame = crate::api::encoded(
            0,
            Body::RoomMessage(v1::RoomMessage {
                room: room.to_owned(),
                room_seq: numbered.room_seq,
                from_user_id: user,
                content_type,
                content: content.clone(),
                server_time_ms: crate::time::now_ms(),
            }),
        );
        let me = c.link.node_id();
        let mut here = false;
        for node in &numbered.nodes {
            if **node == *me {
                here = true;
                continue;
            }
            let item = NodeItem {
                item: Some(Item::RoomMessage(v1::NodeRoomMessage {
                    room: room.to_owned(),
                    room_seq: numbered.room_seq,
                    except: (**node == *from).then_some(*origin),
                    frame: frame.clone(),
                })),
            };
            if !c.link.push_to_node(node, vec![item]) {
                // That node's members miss this one: a gap in their room_seq.
                metrics::counter!("ringchat_room_cluster_messages_dropped_total").increment(1);
            }
        }
        if here {
            let except = (from == me).then(|| c.link.conn_here(origin)).flatten();
            self.deliver_here(c, room, numbered.room_seq, except, frame)
                .await;
        }
        Ok(numbered.room_seq)
    }

    /// Hands message `room_seq` to this node's sessions in `room` but `except`; the caller
    /// holds `order`. `false` when nobody is in the room here or a message as recent was
    /// delivered already.
    async fn deliver_here(
        &self,
        c: &ClusterRooms,
        room: &str,
        room_seq: u64,
        except: Option<ConnRef>,
        frame: Bytes,
    ) -> bool {
        let Some(targets) = self.lock().deliver(room, room_seq, except) else {
            return false;
        };
        for (shard, conns) in targets {
            let except = except.filter(|e| e.shard == shard).map(|e| e.conn);
            let event = ShardEvent::Frames(vec![Outgoing::Shared {
                conns,
                except,
                frame: frame.clone(),
            }]);
            if let Some(tx) = c.shards.get(usize::from(shard)) {
                // A shard that has stopped (shutdown) takes nothing more.
                let _ = tx.send(event).await;
            }
        }
        true
    }

    /// On the owner: node `from`'s part of a room; the answer, when one is wanted (always
    /// when this node does not own the room by its view: it keeps nothing, and `from` sends
    /// the part again later).
    pub(crate) fn part_from(&self, from: &str, p: v1::NodeRoomPart) -> Option<NodeItem> {
        let c = self.cluster()?;
        let part = Part {
            users: p.users,
            sessions: p.sessions,
        };
        if !valid_room_name(&p.room) || part.users > part.sessions || part.users > c.members_max {
            metrics::counter!("ringchat_room_cluster_items_dropped_total", "reason" => "invalid")
                .increment(1);
            tracing::warn!(peer = %from, room = %p.room.escape_debug(), "cluster: a room part that no node of this version sends; dropped");
            return None;
        }
        if !matches!(c.link.room_owner(&p.room), Owner::Here) {
            // Kept, it would stay in this book, unowned, until this node's view changes (a
            // stale part then, if this node owns the room again).
            metrics::counter!("ringchat_room_cluster_items_dropped_total", "reason" => "not_owner")
                .increment(1);
            let refused = answer(p.request_id, Err(RoomError::Unsettled));
            return Some(item(v1::NodeRoomAnswer {
                room: p.room,
                ..refused
            }));
        }
        let now_ms = self.now_ms();
        let result = c
            .book()
            .set_part(from, &p.room, part, p.delivered_seq, p.new_user, now_ms)
            .map(|member_count| v1::NodeRoomAnswer {
                member_count,
                ..Default::default()
            });
        (p.request_id != 0).then(|| item(answer(p.request_id, result)))
    }

    /// On the owner: a member's message from node `from`; the answer for that node (UNAVAILABLE
    /// when this node does not own the room by its view: `from` sends its part again).
    pub(crate) async fn send_from(&self, from: &str, s: v1::NodeRoomSend) -> NodeItem {
        let result = match (self.cluster(), s.origin, valid_room_name(&s.room)) {
            (Some(c), Some(_), true) if !matches!(c.link.room_owner(&s.room), Owner::Here) => {
                Err(RoomError::Unsettled)
            }
            (Some(c), Some(origin), true) => self
                .number_and_send(
                    c,
                    from,
                    &origin,
                    s.from_user_id,
                    s.content_type,
                    &s.content,
                    &s.room,
                    s.delivered_seq,
                )
                .await
                .map(|room_seq| v1::NodeRoomAnswer {
                    room_seq,
                    ..Default::default()
                }),
            _ => Err(RoomError::NotIn),
        };
        item(answer(s.request_id, result))
    }

    /// A numbered message from node `from`, the room's owner by its view, for the sessions
    /// here.
    pub(crate) async fn message_from_owner(&self, from: &str, m: v1::NodeRoomMessage) {
        let Some(c) = self.cluster() else {
            return;
        };
        let except = m.except.as_ref().and_then(|o| c.link.conn_here(o));
        let delivered = {
            let _order = c.order.lock().await;
            self.deliver_here(c, &m.room, m.room_seq, except, m.frame)
                .await
        };
        if !delivered
            && matches!(c.link.room_owner(&m.room), Owner::Elsewhere(p) if p.node_id == from)
        {
            // Not newer than what was delivered here (from an owner whose view lagged), or
            // nobody here: the owner by this node's view is told, or it would go on numbering
            // messages dropped here unseen (or sending them to nobody).
            self.report(&m.room);
        }
    }
}

fn item(answer: v1::NodeRoomAnswer) -> NodeItem {
    NodeItem {
        item: Some(Item::RoomAnswer(answer)),
    }
}

fn answer(request_id: u64, result: Result<v1::NodeRoomAnswer, RoomError>) -> v1::NodeRoomAnswer {
    match result {
        Ok(a) => v1::NodeRoomAnswer { request_id, ..a },
        Err(e) => {
            let r = Refusal::from(e);
            v1::NodeRoomAnswer {
                request_id,
                error_code: r.code as i32,
                error_message: r.message,
                retry_after_ms: r.retry_after_ms,
                ..Default::default()
            }
        }
    }
}
