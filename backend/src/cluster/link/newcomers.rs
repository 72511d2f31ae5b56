//! Nodes that enter this node's view. Until then this node sent them nothing: a push for a
//! user whose device is there, a group's frames for its members there, went to the nodes of
//! the view only, unannounced (a node that has just joined is missing from the others' views
//! for up to one of their heartbeats; a node away for `node_ttl_ms` left them). So a node
//! that enters the view gets `missed` on its peer's first batch (the peer is made, and dialed,
//! at once), and tells its sessions to Sync (`hint.rs`). Evidence, not a timer: however late
//! this node's view catches up, the announcement follows every frame it left out.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::Link;

#[derive(Default)]
pub(crate) struct Newcomers {
    /// The other nodes of the view as last looked at; `None` before this node joined.
    known: Mutex<Option<HashSet<String>>>,
    /// Frames were fanned out while this node had not joined (an owner taking forwarded writes
    /// in the moment between its record reaching Redis and its view being read): nobody got
    /// them, so every node of its first view is a newcomer.
    pub(crate) fanned_unjoined: AtomicBool,
}

impl Link {
    /// Marks `missed` for every node new in the view since the last look (run by the sweeper).
    pub(super) fn welcome_newcomers(self: &Arc<Self>) {
        let Some(view) = self.view_nodes() else {
            return;
        };
        if !view.joined {
            return;
        }
        let mut newcomers = Vec::new();
        let welcomed;
        {
            let mut known = self
                .newcomers
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let first = known.is_none();
            let known = known.get_or_insert_with(HashSet::new);
            let others = || view.nodes.iter().filter(|n| n.record.node_id != self.me);
            known.retain(|id| others().any(|n| n.record.node_id == *id));
            let missed = !first || self.newcomers.fanned_unjoined.swap(false, Relaxed);
            for node in others() {
                if known.insert(node.record.node_id.clone()) && missed {
                    newcomers.push((
                        node.record.node_id.clone(),
                        node.record.advertise_addr.clone(),
                    ));
                }
            }
            welcomed = known.len();
        }
        for (id, addr) in newcomers {
            if let Some(peer) = self.peer(&id, &addr) {
                metrics::counter!("ringchat_cluster_peers_new_in_view_total", "peer" => id.clone())
                    .increment(1);
                tracing::info!(peer = %id, "cluster: a node entered the view; it is told it may have missed pushes");
                peer.missed();
            }
        }
        // After the announcements: a node that shows every other node here has told each
        // newcomer (tests wait on it before they count `missed` batches).
        metrics::gauge!("ringchat_cluster_peers_welcomed").set(welcomed as f64);
    }
}
