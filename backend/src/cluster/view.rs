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
    /// This node's clock, in ms, when a heartbeat of the node was last seen to advance (a
    /// fresh read with a new `heartbeat_at_ms`), or when Redis was read again after an outage.
    /// A node missing from Redis stays in the view until `node_ttl_ms` past this.
    pub seen_at_ms: u64,
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
    /// Times this node came back into the cluster: its first join, and each fresh read after
    /// a gap since the last one long enough for another node to have dropped it from its view
    /// ([`may_have_been_dropped`], counted by `Cluster::heartbeat`). Only grows; the link
    /// watches it to check its sessions against the store then, since kicks issued elsewhere
    /// meanwhile could not reach this node (`link/recheck.rs`).
    pub returns: u64,
}

/// Whether another node may have dropped this one from its view between two of its
/// successful heartbeats `gap_ms` apart (their start times). Another node drops this one once
/// it has not seen its heartbeat advance for `ttl_ms` (`node_ttl_ms`, [`ClusterView::next`]),
/// and sees an advance at its own next read, up to `interval_ms` (`heartbeat_interval_ms`)
/// late; a heartbeat's write lands up to `timeout_ms` (`redis_timeout_ms`) after its start.
/// So a gap below `ttl_ms - interval_ms - timeout_ms` kept this node in every view. The first
/// join counts too (nobody had this node in its view before).
pub fn may_have_been_dropped(gap_ms: u64, ttl_ms: u64, interval_ms: u64, timeout_ms: u64) -> bool {
    gap_ms
        >= ttl_ms
            .saturating_sub(interval_ms)
            .saturating_sub(timeout_ms)
}

/// How long a live node's heartbeat can go unseen here, in ms: three heartbeat intervals
/// (`interval_ms`: this node reads once per interval, a read can just miss a write, and the
/// other node's write can miss an interval when it lands late) plus two Redis calls'
/// deadlines (`timeout_ms`: a write lands up to one late, and `seen_at_ms` is this node's
/// heartbeat's start, its read up to one call later). A live node stays within it; one quiet
/// for longer has most likely died, though it stays in the view until `node_ttl_ms`: the
/// offline push does not count its sessions ([`ClusterView::heard_within`]). Two intervals and
/// one deadline was the bare minimum, and a live node fell out of it on a loaded machine.
/// This node's own heartbeat failing or late by more than this makes every node unheard:
/// its pushes then go to users online elsewhere too (duplicates) until its next fresh read.
pub fn push_quiet_ms(interval_ms: u64, timeout_ms: u64) -> u64 {
    interval_ms
        .saturating_mul(3)
        .saturating_add(timeout_ms.saturating_mul(2))
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
                    seen_at_ms: read_at_ms,
                })
                .collect(),
            fresh: true,
            joined: true,
            read_at_ms,
            error: None,
            returns: 0,
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
                    seen_at_ms: n.seen_at_ms,
                })
                .collect(),
            fresh: false,
            joined: self.joined,
            read_at_ms: self.read_at_ms,
            error: Some(error),
            returns: self.returns,
        }
    }

    /// The view after a fresh read of `records` at `now_ms`. A node of this view missing from
    /// `records` is kept until `ttl_ms` (`node_ttl_ms`) past the last time its heartbeat was
    /// seen to advance: one read is no proof that a node left (a Redis restarted empty holds
    /// only the nodes that heartbeated since; a partial read), and a node that did leave has
    /// its key expire `node_ttl_ms` after its last heartbeat anyway, so it leaves about as
    /// soon. After an outage (this view stale or never read) the time missing counts from this
    /// read: nodes had no way to heartbeat meanwhile. At most `nodes_max` nodes kept so.
    pub fn next(
        &self,
        records: Vec<NodeRecord>,
        now_ms: u64,
        ttl_ms: u64,
        nodes_max: usize,
    ) -> Self {
        let mut next = Self::new(records, now_ms);
        next.returns = self.returns;
        for node in &mut next.nodes {
            if let Ok(i) = self.index_of(&node.record.node_id)
                && self.nodes[i].record.heartbeat_at_ms == node.record.heartbeat_at_ms
            {
                // Not advanced since: seen when it last did (or at the outage's end).
                node.seen_at_ms = if self.fresh {
                    self.nodes[i].seen_at_ms
                } else {
                    now_ms
                };
            }
        }
        let mut kept = false;
        for old in &self.nodes {
            if next.nodes.len() >= nodes_max {
                break;
            }
            if next.index_of(&old.record.node_id).is_ok() {
                continue;
            }
            let seen_at_ms = if self.fresh { old.seen_at_ms } else { now_ms };
            if now_ms.saturating_sub(seen_at_ms) < ttl_ms {
                next.nodes.push(LiveNode {
                    record: old.record.clone(),
                    number: old.number,
                    assigned: AtomicU64::new(0),
                    seen_at_ms,
                });
                kept = true;
            }
        }
        if kept {
            next.nodes
                .sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        }
        next
    }

    /// Whether this node may claim conversations it does not hold yet, at `now_ms`. A stale
    /// view (Redis unreachable) allows it only until `ttl_ms - interval_ms` (`node_ttl_ms`,
    /// `heartbeat_interval_ms`) past the last read: this node's record, written by that
    /// heartbeat, expires `ttl_ms` after it and the others then move its conversations; a claim
    /// taken here after that would fence their new owner, whose claim back fences this node,
    /// and so on for as long as the cut lasts (one heartbeat of margin for the others' reads).
    /// A fresh view older than `ttl_ms` (this process was paused) waits for its next read.
    pub fn claims_allowed(&self, now_ms: u64, ttl_ms: u64, interval_ms: u64) -> bool {
        let limit = if self.fresh {
            ttl_ms
        } else {
            ttl_ms.saturating_sub(interval_ms)
        };
        self.joined && now_ms.saturating_sub(self.read_at_ms) < limit
    }

    /// Where node `node_id` is in `nodes` (sorted by id).
    fn index_of(&self, node_id: &str) -> Result<usize, usize> {
        self.nodes
            .binary_search_by(|n| n.record.node_id.as_str().cmp(node_id))
    }

    /// Whether `node_id` is in this view.
    pub fn has(&self, node_id: &str) -> bool {
        self.index_of(node_id).is_ok()
    }

    /// Whether `node_id`'s heartbeat was seen to advance within `quiet_ms` before `now_ms`
    /// ([`push_quiet_ms`]); a node not in the view was not.
    pub fn heard_within(&self, node_id: &str, now_ms: u64, quiet_ms: u64) -> bool {
        self.index_of(node_id)
            .is_ok_and(|i| now_ms.saturating_sub(self.nodes[i].seen_at_ms) <= quiet_ms)
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

    fn beat(id: &str, at_ms: u64) -> NodeRecord {
        NodeRecord {
            heartbeat_at_ms: at_ms,
            ..node(id, 0)
        }
    }

    fn ids(view: &ClusterView) -> Vec<&str> {
        view.nodes
            .iter()
            .map(|n| n.record.node_id.as_str())
            .collect()
    }

    /// Test settings: node_ttl_ms 1 500, heartbeat 200, Redis deadline 150: a gap of 1 150 ms
    /// between two successful heartbeats may have let another node drop this one.
    #[test]
    fn a_gap_between_heartbeats_past_ttl_less_a_read_and_a_write_counts_as_a_return() {
        assert!(!may_have_been_dropped(200, 1_500, 200, 150));
        assert!(!may_have_been_dropped(1_149, 1_500, 200, 150));
        assert!(may_have_been_dropped(1_150, 1_500, 200, 150));
        assert!(
            may_have_been_dropped(0, 100, 200, 150),
            "a TTL below the margins"
        );
        let view = ClusterView::new(vec![beat("a", 1)], 1);
        let view = ClusterView { returns: 3, ..view };
        assert_eq!(view.stale("away".into()).returns, 3, "kept when stale");
        assert_eq!(view.next(vec![beat("a", 2)], 2, 1_000, 8).returns, 3);
    }

    #[test]
    fn a_node_missing_from_one_read_stays_until_node_ttl_past_its_last_heartbeat() {
        let ttl = 1_000;
        let view = ClusterView::new(vec![beat("a", 100), beat("b", 100), beat("c", 100)], 100);
        // b's heartbeat stops advancing at 100; c's goes on; then both are missing from Redis.
        let view = view.next(
            vec![beat("a", 500), beat("b", 100), beat("c", 500)],
            500,
            ttl,
            8,
        );
        let view = view.next(vec![beat("a", 900)], 900, ttl, 8);
        assert_eq!(ids(&view), ["a", "b", "c"], "missing for less than the TTL");
        assert!(view.has("b") && !view.has("d"));
        let view = view.next(vec![beat("a", 1_100)], 1_100, ttl, 8);
        assert_eq!(ids(&view), ["a", "c"], "b unseen since 100");
        let view = view.next(vec![beat("a", 1_500)], 1_500, ttl, 8);
        assert_eq!(ids(&view), ["a"]);
        // Bounded by nodes_max.
        let view = ClusterView::new(vec![beat("a", 1), beat("b", 1), beat("c", 1)], 1);
        assert_eq!(ids(&view.next(vec![beat("a", 2)], 2, ttl, 2)), ["a", "b"]);
    }

    #[test]
    fn a_stale_view_allows_claims_only_until_one_heartbeat_before_the_ttl() {
        let (ttl, interval) = (1_000, 200);
        let view = ClusterView::new(vec![beat("a", 100)], 100);
        assert!(
            view.claims_allowed(1_099, ttl, interval),
            "fresh: until the TTL"
        );
        assert!(
            !view.claims_allowed(1_100, ttl, interval),
            "paused past the TTL"
        );
        let stale = view.stale("redis away".into());
        assert!(stale.claims_allowed(100, ttl, interval));
        assert!(stale.claims_allowed(899, ttl, interval));
        assert!(
            !stale.claims_allowed(900, ttl, interval),
            "the others may drop it next read"
        );
        assert!(!stale.claims_allowed(10_000, ttl, interval));
        assert!(
            !ClusterView::default().claims_allowed(1, ttl, interval),
            "never joined"
        );
        // Back: the next fresh read allows them again.
        let back = stale.next(vec![beat("a", 10_000)], 10_000, ttl, 8);
        assert!(back.claims_allowed(10_000, ttl, interval));
    }

    /// Test settings: heartbeat 200, Redis deadline 150: quiet past 900 ms.
    #[test]
    fn a_node_whose_heartbeat_stalls_is_unheard_long_before_it_leaves_the_view() {
        let (ttl, quiet) = (1_500, push_quiet_ms(200, 150));
        assert_eq!(quiet, 900);
        let view = ClusterView::new(vec![beat("a", 100), beat("b", 100)], 100);
        // b is killed after its heartbeat at 100; a goes on.
        let view = view.next(vec![beat("a", 300), beat("b", 100)], 300, ttl, 8);
        assert!(view.heard_within("b", 1_000, quiet));
        let view = view.next(vec![beat("a", 900), beat("b", 100)], 900, ttl, 8);
        assert!(view.heard_within("b", 1_000, quiet), "seen at 100");
        assert!(!view.heard_within("b", 1_001, quiet));
        assert!(view.heard_within("a", 1_800, quiet));
        assert!(view.has("b"), "still in the view until node_ttl_ms");
        assert!(!view.heard_within("c", 700, quiet), "not in the view");
    }

    #[test]
    fn after_an_outage_the_time_missing_counts_from_the_first_fresh_read() {
        let ttl = 1_000;
        let view = ClusterView::new(vec![beat("a", 100), beat("b", 100)], 100);
        // Redis away for 10 s, then back empty: only a has written itself again.
        let stale = view.stale("redis away".into());
        let view = stale.next(vec![beat("a", 10_100)], 10_100, ttl, 8);
        assert_eq!(ids(&view), ["a", "b"], "b had no Redis to heartbeat to");
        let view = view.next(vec![beat("a", 10_500)], 10_500, ttl, 8);
        assert_eq!(ids(&view), ["a", "b"]);
        let view = view.next(vec![beat("a", 11_100)], 11_100, ttl, 8);
        assert_eq!(
            ids(&view),
            ["a"],
            "b missing for the TTL since Redis came back"
        );
    }
}
