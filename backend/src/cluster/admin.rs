//! What the admin listener shows of the cluster: the overview's `cluster` part, the
//! `ringchat_cluster_*` families of `/metrics`, and the `/readyz` condition.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use utoipa::ToSchema;

use super::view::LiveNode;
use super::{Cluster, NodeRecord};

/// The cluster as this node sees it.
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
    /// When `nodes` was read from Redis (0: never).
    pub read_at_ms: u64,
    /// The live nodes, by id, this one included.
    pub nodes: Vec<NodeRecord>,
    /// Sums over `nodes`.
    pub total_connections: u64,
}

pub fn overview(cluster: &Cluster) -> ClusterOverview {
    let view = cluster.view();
    let nodes: Vec<NodeRecord> = view.nodes.iter().map(|n| n.record.clone()).collect();
    ClusterOverview {
        node_id: cluster.node_id().to_owned(),
        joined: view.joined,
        fresh: view.fresh,
        error: view.error.clone(),
        read_at_ms: view.read_at_ms,
        total_connections: nodes.iter().map(|n| n.connections).sum(),
        nodes,
    }
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
