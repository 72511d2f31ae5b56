//! The peers of this node: one per node id seen, made on first use, kept by id and by slot
//! (a slot names a peer in the connections this node hands to others), parked when their node
//! has left the view.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use super::Link;
use super::peer::{self, Peer};
use super::wire;

#[derive(Default)]
pub(super) struct Peers {
    by_id: HashMap<String, Arc<Peer>>,
    /// Indexed by slot; a slot is never given to another node id (a departed node's peer is
    /// parked, not removed, and takes its slot again if the node comes back). Bounded by
    /// `wire::SLOTS_MAX` distinct node ids per process: past it a write owned by a new node
    /// is refused UNAVAILABLE (`Owner::Unknown`).
    by_slot: Vec<Arc<Peer>>,
}

impl Link {
    fn peers_read(&self) -> RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_write(&self) -> RwLockWriteGuard<'_, Peers> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer for a live node, made (and its task started) on first use. Every forwarded
    /// write asks: a peer running at the view's address is found under the read lock, which
    /// the shards share; only a new, moved or returning peer takes the write lock.
    pub(super) fn peer(self: &Arc<Self>, node_id: &str, addr: &str) -> Option<Arc<Peer>> {
        let (_, runtime) = self.attached.get()?;
        if let Some(p) = self.peers_read().by_id.get(node_id)
            && !p.parked.load(Relaxed)
            && **p.addr.load() == addr
        {
            return Some(Arc::clone(p));
        }
        let mut peers = self.peers_write();
        if let Some(p) = peers.by_id.get(node_id) {
            if **p.addr.load() != addr {
                p.addr.store(Arc::new(addr.to_owned()));
            }
            // Back in the view after its task was parked (`park`): same slot, a new task.
            if p.parked.swap(false, Relaxed) {
                p.reopen();
                tracing::info!(peer = %node_id, "cluster: a departed peer is back in the view; dialing it again");
                runtime.spawn(peer::run(Arc::clone(self), Arc::clone(p)));
            }
            return Some(Arc::clone(p));
        }
        let slot = u16::try_from(peers.by_slot.len())
            .ok()
            .filter(|s| *s < wire::SLOTS_MAX)?;
        let peer = Arc::new(Peer::new(
            node_id.to_owned(),
            slot,
            addr.to_owned(),
            self.config.peer_queue_items_max,
            self.config.peer_kicks_pending_max,
            Arc::clone(&self.heartbeats),
        ));
        peers.by_id.insert(node_id.to_owned(), Arc::clone(&peer));
        peers.by_slot.push(Arc::clone(&peer));
        runtime.spawn(peer::run(Arc::clone(self), Arc::clone(&peer)));
        Some(peer)
    }

    pub(super) fn peer_by_slot(&self, slot: u16) -> Option<Arc<Peer>> {
        self.peers_read().by_slot.get(usize::from(slot)).cloned()
    }

    /// The peer of `node_id`: by the view, or else the peer already made for it (a node
    /// missing from this view that still streams here is alive: its writes are taken, and
    /// answered on the link it already has).
    pub(super) fn peer_by_id(self: &Arc<Self>, node_id: &str) -> Option<Arc<Peer>> {
        let view = self.view_nodes()?;
        match view.nodes.iter().find(|n| n.record.node_id == node_id) {
            Some(node) => self.peer(node_id, &node.record.advertise_addr),
            None => self
                .peers_read()
                .by_id
                .get(node_id)
                .filter(|p| !p.parked.load(Relaxed))
                .cloned(),
        }
    }

    /// Whether this node's link to `node_id` is down now (lost or refused, not up again): a
    /// lock-free read once the peers' read lock is taken. A node never dialed is not known down.
    pub(crate) fn known_down(&self, node_id: &str) -> bool {
        self.peers_read()
            .by_id
            .get(node_id)
            .is_some_and(|p| p.down.load(Relaxed))
    }

    /// Whether `node_id` is in this node's view.
    pub(super) fn in_view(&self, node_id: &str) -> bool {
        self.view_nodes().is_some_and(|v| v.has(node_id))
    }

    /// Parks `peer`'s task (it ends after this) unless its node is in the view again: called
    /// by the task once the node has been out of the view for `node_ttl_ms`. Its slot stays
    /// its own; `peer` starts a new task if the node comes back. Under the peers' write lock, so a
    /// concurrent `peer` either sees the peer parked (and restarts it) or it is not parked.
    pub(super) fn park(&self, peer: &Peer) -> bool {
        let _peers = self.peers_write();
        if self.in_view(&peer.node_id) {
            return false;
        }
        peer.parked.store(true, Relaxed);
        true
    }
}
