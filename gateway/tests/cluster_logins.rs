//! The status service under a login wave (issue 14): 3,000 device logins, each asking a
//! status node (`GET /assign`, round the three nodes) where to go and then logging in there,
//! end up spread over the three chat nodes, and every node holds the connections it was
//! assigned. Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL); fails without them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::cluster::{redis_url, start_nodes, unique};
use common::{PASSWORD, TestServer, http_get, wait_until};
use ringchat_bench::client::Client;
use serde_json::Value;

/// Users, and devices logged in per user (`accounts.devices_max` is 10): 3,000 logins.
const USERS: usize = 300;
const DEVICES_PER_USER: usize = 10;
/// Logins in flight at once (a login wave, bounded).
const CONCURRENCY: usize = 32;

/// `GET /assign` on a status node: the node id it sends the client to.
fn assigned_node(status: &TestServer) -> String {
    let body = http_get(status.ws, "/assign");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["node_id"].as_str().expect("node_id").to_owned()
}

/// Logged-in connections on a node, all shards.
fn logged_in(s: &TestServer) -> f64 {
    s.metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_authenticated_connections{"))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_service_spreads_3000_logins_over_the_nodes() {
    let db = common::store::fresh_database();
    let prefix = format!("lg_{}", unique());
    let ids = ["n1", "n2", "n3"];
    let nodes: Arc<Vec<TestServer>> = Arc::new(
        start_nodes(&db, &redis_url(), &prefix, &ids)
            .into_iter()
            .map(|(_, s)| s)
            .collect(),
    );
    for s in nodes.iter() {
        wait_until("every node sees three live nodes", || {
            s.metric("ringchat_cluster_nodes") == 3.0
        });
    }
    // The accounts exist before the wave (registration is not what is measured).
    for u in 0..USERS {
        let (c, _) = nodes[u % 3].user(&format!("wave{u}")).await;
        drop(c);
    }

    let logins: Vec<(usize, usize)> = (0..USERS)
        .flat_map(|u| (0..DEVICES_PER_USER).map(move |d| (u, d)))
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(logins));
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (nodes, queue) = (Arc::clone(&nodes), Arc::clone(&queue));
        tasks.push(tokio::spawn(async move {
            let mut held: Vec<(usize, Client)> = Vec::new();
            let mut n = worker;
            loop {
                let Some((u, d)) = queue.lock().unwrap().pop() else {
                    return held;
                };
                // Round the status nodes: each keeps its own count of whom it sent where.
                let status = n % 3;
                n += 1;
                let to = {
                    let nodes = Arc::clone(&nodes);
                    tokio::task::spawn_blocking(move || assigned_node(&nodes[status]))
                        .await
                        .unwrap()
                };
                let at = ids.iter().position(|id| *id == to).expect("a chat node");
                let (client, ok) = Client::signup(
                    nodes[at].tcp,
                    &format!("wave{u}"),
                    PASSWORD,
                    &format!("d{d}"),
                )
                .await
                .expect("login on the assigned node");
                assert!(ok.user_id > 0);
                held.push((at, client));
            }
        }));
    }
    let mut per_node: HashMap<usize, usize> = HashMap::new();
    let mut held = Vec::new();
    for task in tasks {
        for (at, client) in task.await.expect("login worker") {
            *per_node.entry(at).or_default() += 1;
            held.push(client);
        }
    }
    let total = USERS * DEVICES_PER_USER;
    assert_eq!(held.len(), total);
    // Evenly within a quarter: heartbeats (200 ms) bring each node's connections to the
    // others, and between two each status node counts the clients it sent.
    for (i, s) in nodes.iter().enumerate() {
        let got = per_node.get(&i).copied().unwrap_or(0);
        let fair = total / 3;
        assert!(
            got * 4 >= fair * 3 && got * 4 <= fair * 5,
            "node {} got {got} of {total} logins: {per_node:?}",
            ids[i]
        );
        wait_until("the node holds every login it was sent", || {
            logged_in(s) >= got as f64
        });
    }
    eprintln!("logins per node: {per_node:?}");
}
