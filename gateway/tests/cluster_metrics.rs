//! Cluster mode: every Prometheus family a node publishes keeps the rule the one-box server
//! keeps (`common::metrics::check_families`: a `# HELP`, a `ringchat_`/`process_` name,
//! `_total` on counters only), checked after a message each way between users on two nodes
//! (forwarding, claims, the links, routes and presence all record). Needs the servers
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::collections::HashMap;

use common::cluster::{acked, direct, fresh_nodes, metric_sum, pushed};
use common::{TestServer, http_get, wait_until_async};

/// Families every node of a two-node cluster records once users on both have talked.
const ON_EVERY_NODE: [&str; 9] = [
    "ringchat_cluster_nodes",
    "ringchat_cluster_grpc_conns",
    "ringchat_cluster_forwarded_writes_total",
    "ringchat_cluster_peer_queue_items",
    "ringchat_cluster_peer_items_sent_total",
    "ringchat_cluster_peer_items_received_total",
    "ringchat_cluster_route_writes_total",
    "ringchat_cluster_route_pubsub_messages_total",
    "ringchat_cluster_presence_messages_total",
];

/// Families the conversation's owner records (one of the two nodes).
const ON_THE_OWNER: [&str; 2] = [
    "ringchat_cluster_claims_total",
    "ringchat_cluster_claim_round_trips_total",
];

/// The families on `node`'s /metrics page, each with its type.
fn families(node: &TestServer) -> HashMap<String, String> {
    http_get(node.admin, "/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_of_a_cluster_node_has_help_and_follows_the_naming_rule() {
    let nodes = fresh_nodes("metrics", &["n1", "n2"], &[]);
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    // One of the two sends is forwarded to the conversation's owner on the other node, and
    // each push crosses to the recipient's node.
    acked(&mut alice, direct(b.user_id, "to-bob")).await;
    pushed(&mut bob, "to-bob").await;
    acked(&mut bob, direct(a.user_id, "to-alice")).await;
    pushed(&mut alice, "to-alice").await;
    assert!(
        nodes
            .iter()
            .map(|n| metric_sum(n, "ringchat_cluster_forwarded_writes_total"))
            .sum::<f64>()
            >= 1.0,
        "a send crossed to its owner"
    );
    // Routes and presence reach Redis within flush_ms: wait for what the traffic records.
    wait_until_async("the cluster families recorded on both nodes", || {
        let seen: Vec<HashMap<String, String>> = nodes.iter().map(families).collect();
        ON_EVERY_NODE
            .iter()
            .all(|f| seen.iter().all(|page| page.contains_key(*f)))
            && ON_THE_OWNER
                .iter()
                .all(|f| seen.iter().any(|page| page.contains_key(*f)))
    })
    .await;
    for node in &nodes {
        let types = common::metrics::check_families(&http_get(node.admin, "/metrics"));
        let cluster = types
            .keys()
            .filter(|f| f.starts_with("ringchat_cluster_"))
            .count();
        assert!(
            cluster >= ON_EVERY_NODE.len(),
            "cluster families: {cluster}"
        );
    }
}
