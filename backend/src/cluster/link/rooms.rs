//! Chat rooms across the links (the rules are in `rooms/cluster/`): who owns a room by this
//! node's view, room items queued for a node, and the room items a peer sent handed to this
//! node's rooms. Items from a node not in the view are dropped: only the view's nodes (at
//! most `cluster.nodes_max`) hold parts of rooms here.

use std::sync::{Arc, Weak};

use ringchat_proto::v1::{self, NodeItem, node_item::Item};

use super::peer::Peer;
use super::{Link, Owner, wire};
use crate::api::ConnRef;
use crate::rooms::Rooms;

impl Link {
    /// This node's rooms, for the room items peers send (set once by the backend).
    pub(crate) fn set_rooms(&self, rooms: Weak<Rooms>) {
        let _ = self.rooms.set(rooms);
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.me
    }

    /// Who owns room `name` by this node's view: the same view and rendezvous as a
    /// conversation's owner, over the room's key (`rendezvous::room_key`).
    pub(crate) fn room_owner(self: &Arc<Self>, name: &str) -> Owner {
        self.owner(super::super::rendezvous::room_key(name))
    }

    /// The ids of the view's nodes, once this node has joined and is in it.
    pub(crate) fn live_nodes(&self) -> Option<Vec<String>> {
        let view = self.view_nodes()?;
        (view.joined && view.has(&self.me)).then(|| {
            view.nodes
                .iter()
                .map(|n| n.record.node_id.clone())
                .collect()
        })
    }

    /// A connection of this node as other nodes name it.
    pub(crate) fn origin_here(&self, conn: ConnRef) -> v1::OriginConn {
        wire::origin(conn, self.tag)
    }

    /// The connection of this process `origin` names, if any.
    pub(crate) fn conn_here(&self, origin: &v1::OriginConn) -> Option<ConnRef> {
        wire::local(origin, self.tag)
    }

    /// Queues `items` for node `node` of the view; `false` when they were not queued (no such
    /// peer, its link down or its queue full).
    pub(crate) fn push_to_node(self: &Arc<Self>, node: &str, items: Vec<NodeItem>) -> bool {
        self.peer_by_id(node)
            .is_some_and(|p| p.push_all(items).is_ok())
    }

    /// Queues `item` for `peer`; `false` when refused.
    pub(crate) fn push_room_item(peer: &Peer, item: NodeItem) -> bool {
        peer.push_all(vec![item]).is_ok()
    }

    fn rooms(&self) -> Option<Arc<Rooms>> {
        self.rooms.get().and_then(Weak::upgrade)
    }

    /// A room item from `from` (`peer`: its peer, `None` for a node not in the view).
    pub(super) async fn room_item(
        self: &Arc<Self>,
        from: &str,
        peer: Option<&Arc<Peer>>,
        item: Item,
    ) {
        let (Some(rooms), Some(peer)) = (self.rooms(), peer) else {
            metrics::counter!("ringchat_room_cluster_items_dropped_total", "reason" => "stranger")
                .increment(1);
            return;
        };
        match item {
            Item::RoomPart(p) => {
                if let Some(answer) = rooms.part_from(from, p) {
                    let _ = peer.push_all(vec![answer]);
                }
            }
            Item::RoomSend(s) => {
                let answer = rooms.send_from(from, s).await;
                // After the message's own item for that node: its sessions have it first.
                let _ = peer.push_all(vec![answer]);
            }
            Item::RoomAnswer(a) => rooms.answered(a),
            Item::RoomMessage(m) => rooms.message_from_owner(from, m).await,
            _ => {}
        }
    }

    /// A link went down: room asks waiting on it are answered UNAVAILABLE, and the room parts
    /// among `dropped` (queued for it, never sent) are sent again later.
    pub(super) fn rooms_link_down(&self, slot: u16, dropped: &[NodeItem]) {
        if let Some(rooms) = self.rooms() {
            let parts = dropped.iter().filter_map(|i| match &i.item {
                Some(Item::RoomPart(p)) => Some(p.room.as_str()),
                _ => None,
            });
            rooms.link_down(slot, parts);
        }
    }
}
