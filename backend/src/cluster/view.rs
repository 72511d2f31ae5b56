//! The live nodes as this node last read them: one immutable snapshot behind an `ArcSwap`,
//! replaced every heartbeat, read by anyone (a shard answering `/assign`, the admin API, gRPC)
//! without a lock or an await.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::registry::NodeRecord;

/// One live node and the clients this node sent it since the snapshot was taken.
#[derive(Debug)]
pub struct LiveNode {
    pub record: NodeRecord,
    /// `rendezvous::node_number` of the record's id, computed once per snapshot.
    pub number: u64,
    /// Assignments made from this snapshot: a burst of `Assign` calls within one heartbeat
    /// spreads over the nodes instead of all landing on the one that looked least loaded.
    pub assigned: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ClusterView {
    /// Sorted by node id; this node included once it has registered.
    pub nodes: Vec<LiveNode>,
    /// False when the last heartbeat could not reach Redis: `nodes` is the last view read.
    pub fresh: bool,
    /// This node's record reached Redis at least once.
    pub joined: bool,
    /// When `nodes` was read from Redis (0: never).
    pub read_at_ms: u64,
    /// Why the last heartbeat failed, when it did.
    pub error: Option<String>,
}

impl ClusterView {
    pub fn new(records: Vec<NodeRecord>, read_at_ms: u64) -> Self {
        Self {
            nodes: records
                .into_iter()
                .map(|record| LiveNode {
                    number: super::rendezvous::node_number(&record.node_id),
                    record,
                    assigned: AtomicU64::new(0),
                })
                .collect(),
            fresh: true,
            joined: true,
            read_at_ms,
            error: None,
        }
    }

    /// The same nodes, marked stale (Redis unreachable); their assignment counts start over.
    pub fn stale(&self, error: String) -> Self {
        Self {
            nodes: self
                .nodes
                .iter()
                .map(|n| LiveNode {
                    record: n.record.clone(),
                    number: n.number,
                    assigned: AtomicU64::new(n.assigned.load(Relaxed)),
                })
                .collect(),
            fresh: false,
            joined: self.joined,
            read_at_ms: self.read_at_ms,
            error: Some(error),
        }
    }

    /// The node that sequences conversation `conv` (its wire id) by this view: rendezvous
    /// hashing over the live nodes (`rendezvous.rs`); `None` while no node is known. Allocates
    /// nothing: read per write by the shards.
    pub fn owner_of(&self, conv: u64) -> Option<&LiveNode> {
        super::rendezvous::owner(conv, self.nodes.iter().map(|n| (n, n.number)))
    }

    /// The least-loaded node, counted as its connections plus the clients sent to it since
    /// this snapshot; ties go to the lower CPU, then the node id. Counts the assignment.
    pub fn assign(&self) -> Option<&NodeRecord> {
        let node = self.nodes.iter().min_by(|a, b| {
            let load = |n: &LiveNode| n.record.connections + n.assigned.load(Relaxed);
            load(a)
                .cmp(&load(b))
                .then(a.record.cpu_percent.total_cmp(&b.record.cpu_percent))
                .then(a.record.node_id.cmp(&b.record.node_id))
        })?;
        node.assigned.fetch_add(1, Relaxed);
        Some(&node.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, connections: u64) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            advertise_addr: format!("{id}:7100"),
            client_addrs: vec![format!("ws://{id}:7001/ws")],
            started_at_ms: 1,
            heartbeat_at_ms: 1,
            connections,
            cpu_percent: 0.0,
        }
    }

    #[test]
    fn assign_fills_the_least_loaded_first_then_spreads() {
        let view = ClusterView::new(vec![node("a", 5), node("b", 2), node("c", 3)], 1);
        let picks: Vec<String> = (0..6)
            .map(|_| view.assign().expect("nodes").node_id.clone())
            .collect();
        // b (2) first; then b and c tie at 3 and the id decides; a (5) once the others reach 5.
        assert_eq!(picks, ["b", "b", "c", "b", "c", "a"]);
        assert!(ClusterView::default().assign().is_none());
    }

    #[test]
    fn owner_of_agrees_with_rendezvous_and_survives_a_stale_copy() {
        use super::super::rendezvous::{node_number, owner_index};
        let view = ClusterView::new(vec![node("a", 0), node("b", 0), node("c", 0)], 1);
        let numbers: Vec<u64> = ["a", "b", "c"].iter().map(|id| node_number(id)).collect();
        let stale = view.stale("redis away".into());
        for conv in 1..1000 {
            let owner = view.owner_of(conv).expect("nodes");
            let i = owner_index(conv, &numbers).expect("nodes");
            assert_eq!(owner.number, numbers[i]);
            assert_eq!(stale.owner_of(conv).expect("nodes").number, owner.number);
        }
        assert!(ClusterView::default().owner_of(1).is_none());
    }
}
