//! What the admin listener shows of the cluster: the overview's `cluster` part (counts), the
//! pages of `GET /api/cluster/nodes` (`nodes_page`), the `ringchat_cluster_*` families of
//! `/metrics`, and the `/readyz` condition.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use utoipa::ToSchema;

use super::view::LiveNode;
use super::{Cluster, ClusterView, NodeRecord};

/// The cluster as this node sees it: counts only, so that the overview (fetched every few
/// seconds by the dashboard) stays small however many nodes there are (up to `nodes_max`
/// records of up to 16 KiB each); `GET /api/cluster/nodes` pages the records.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterOverview {
    pub node_id: String,
    /// This node's record has reached Redis.
    pub joined: bool,
    /// False while Redis cannot be reached: `nodes` is the last view read.
    pub fresh: bool,
    /// Why the last heartbeat failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the view was read from Redis (0: never).
    pub read_at_ms: u64,
    /// The live nodes in the view, this one included.
    pub live_nodes: usize,
    /// Client connections summed over the live nodes.
    pub total_connections: u64,
}

pub fn overview(cluster: &Cluster) -> ClusterOverview {
    let view = cluster.view();
    ClusterOverview {
        node_id: cluster.node_id().to_owned(),
        joined: view.joined,
        fresh: view.fresh,
        error: view.error.clone(),
        read_at_ms: view.read_at_ms,
        live_nodes: view.nodes.len(),
        total_connections: view.nodes.iter().map(|n| n.record.connections).sum(),
    }
}

/// Up to `limit` live nodes of `view` by id, from the first whose id sorts after `after` (the
/// previous page's last id); and that page's last id when more follow (the next cursor).
pub fn nodes_page(
    view: &ClusterView,
    after: Option<&str>,
    limit: usize,
) -> (Vec<NodeRecord>, Option<String>) {
    let start = after.map_or(0, |after| {
        view.nodes
            .partition_point(|n| n.record.node_id.as_str() <= after)
    });
    let rest = &view.nodes[start..];
    let items: Vec<NodeRecord> = rest.iter().take(limit).map(|n| n.record.clone()).collect();
    let next = if rest.len() > items.len() {
        items.last().map(|n| n.node_id.clone())
    } else {
        None
    };
    (items, next)
}

/// Why this node is not ready as a cluster node, or `None`.
pub fn not_ready(cluster: &Cluster) -> Option<String> {
    (!cluster.joined()).then(|| "not joined the cluster yet (Redis not reached)".to_owned())
}

/// The cluster's families, written at scrape time from the view (nodes come and go, so they
/// are not kept in the metrics registry, where a departed node's series would linger).
pub fn render_metrics(cluster: &Cluster, out: &mut String) {
    let view = cluster.view();
    let _ = writeln!(
        out,
        "# HELP ringchat_cluster_joined Whether this node's record has reached Redis.\n# TYPE ringchat_cluster_joined gauge\nringchat_cluster_joined {}",
        u8::from(view.joined)
    );
    let _ = writeln!(
        out,
        "# HELP ringchat_cluster_view_fresh Whether the last heartbeat read the node view from Redis (0: the view is stale).\n# TYPE ringchat_cluster_view_fresh gauge\nringchat_cluster_view_fresh {}",
        u8::from(view.fresh)
    );
    let _ = writeln!(
        out,
        "# HELP ringchat_cluster_nodes Live nodes in this node's view.\n# TYPE ringchat_cluster_nodes gauge\nringchat_cluster_nodes {}",
        view.nodes.len()
    );
    // Whether other nodes' changes are heard (a node that is not subscribed serves on, with
    // pushes to every node and stale presence: ARCHITECTURE.md, cluster section).
    if let Some(routes) = cluster.routes() {
        let _ = writeln!(
            out,
            "# HELP ringchat_cluster_routes_trusted Whether the route cache is trusted (subscribed to route changes, rebuilt).\n# TYPE ringchat_cluster_routes_trusted gauge\nringchat_cluster_routes_trusted {}",
            u8::from(routes.trusted())
        );
    }
    if let Some(presence) = cluster.presence() {
        let _ = writeln!(
            out,
            "# HELP ringchat_cluster_presence_subscribed Whether other nodes' presence changes are heard (subscribed).\n# TYPE ringchat_cluster_presence_subscribed gauge\nringchat_cluster_presence_subscribed {}",
            u8::from(presence.subscribed())
        );
    }
    per_node(
        out,
        &view.nodes,
        "ringchat_cluster_node_connections",
        "Client connections per live node, as it last published them.",
        |n| n.record.connections.to_string(),
    );
    per_node(
        out,
        &view.nodes,
        "ringchat_cluster_node_cpu_percent",
        "Process CPU per live node, in percent of one core.",
        |n| n.record.cpu_percent.to_string(),
    );
    per_node(
        out,
        &view.nodes,
        "ringchat_cluster_node_assigned",
        "Clients this node's status service sent to each node since its last heartbeat.",
        |n| n.assigned.load(Relaxed).to_string(),
    );
}

/// A gauge family with one series per live node.
fn per_node(
    out: &mut String,
    nodes: &[LiveNode],
    name: &str,
    help: &str,
    value: impl Fn(&LiveNode) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for n in nodes {
        let _ = writeln!(out, "{name}{{node=\"{}\"}} {}", n.record.node_id, value(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            advertise_addr: format!("{id}:7100"),
            client_addrs: vec![format!("ws://{id}:7001/ws")],
            started_at_ms: 1,
            heartbeat_at_ms: 1,
            connections: 0,
            cpu_percent: 0.0,
        }
    }

    #[test]
    fn pages_walk_every_node_once_in_id_order() {
        let ids: Vec<String> = (0..23).map(|i| format!("n{i:02}")).collect();
        let view = ClusterView::new(ids.iter().map(|id| record(id)).collect(), 1);
        for limit in [1, 4, 22, 23, 100] {
            let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
            loop {
                let (items, next) = nodes_page(&view, cursor.as_deref(), limit);
                assert!(items.len() <= limit);
                seen.extend(items.into_iter().map(|n| n.node_id));
                pages += 1;
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ids, "limit {limit}");
            assert_eq!(
                pages,
                ids.len().div_ceil(limit),
                "limit {limit}: no empty last page"
            );
        }
        // A cursor of a node that left meanwhile goes on from where it sorted.
        let (items, _) = nodes_page(&view, Some("n05x"), 2);
        let got: Vec<&str> = items.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(got, ["n06", "n07"]);
        assert_eq!(nodes_page(&view, Some("n22"), 5), (Vec::new(), None));
    }
}
