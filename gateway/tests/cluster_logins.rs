//! The status service under a login wave (issue 14): 3,000 device logins, each asking a
//! status node (`GET /assign`, round the three nodes) where to go and then logging in there,
//! end up spread over the three chat nodes, and every node holds the connections it was
//! assigned; and e-mail codes work across nodes. Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL); fails without them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::account::{error_code, hello, login_email, other_than, register, request_code, reset};
use common::cluster::{redis_url, start_nodes, unique};
use common::mail::SmtpSink;
use common::{PASSWORD, TestServer, http_get, wait_until};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{EmailCodePurpose, ErrorCode};
use serde_json::Value;

const RESET: EmailCodePurpose = EmailCodePurpose::ResetPassword;

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

/// E-mail codes are the cluster's, not a node's: a code asked for on one node resets the
/// password on another (a client reconnects wherever the status service sends it), a wrong
/// try on either node uses up the same code, and the per-address limit counts both nodes.
#[tokio::test]
async fn an_email_code_asked_for_on_one_node_works_on_another() {
    let mut sink = SmtpSink::start();
    let mail_env = sink.env();
    let mut extra: Vec<(&str, &str)> = mail_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("EMAIL__CODES_PER_ADDRESS_MAX", "2"));
    extra.push(("EMAIL__CODE_RESEND_INTERVAL_S", "0"));
    let nodes = common::cluster::fresh_nodes("codes", &["a", "b"], &extra);
    let mut on_a = hello(&nodes[0]).await;
    let mut on_b = hello(&nodes[1]).await;
    assert!(matches!(
        register(&mut on_a, "alice", "alice@example.com", "").await,
        Body::RegisterOk(_)
    ));

    let sent = request_code(&mut on_a, "alice@example.com", RESET).await;
    assert!(matches!(sent, Body::EmailCodeSent(_)), "{sent:?}");
    let code = sink.next_mail_to("alice@example.com").code();
    let wrong = reset(
        &mut on_b,
        "alice@example.com",
        &other_than(&code),
        "new password 1",
    )
    .await;
    assert_eq!(error_code(&wrong), ErrorCode::EmailCodeInvalid);
    let ok = reset(&mut on_b, "alice@example.com", &code, "new password 1").await;
    assert!(matches!(ok, Body::ResetPasswordOk(_)), "{ok:?}");
    let used = reset(&mut on_a, "alice@example.com", &code, "new password 2").await;
    assert_eq!(
        error_code(&used),
        ErrorCode::EmailCodeInvalid,
        "a code works once"
    );

    // The second code of the hour on node b, then none on either node.
    let second = request_code(&mut on_b, "alice@example.com", RESET).await;
    assert!(matches!(second, Body::EmailCodeSent(_)), "{second:?}");
    for c in [&mut on_a, &mut on_b] {
        let third = request_code(c, "alice@example.com", RESET).await;
        assert_eq!(error_code(&third), ErrorCode::RateLimited, "{third:?}");
    }
    let mut d = hello(&nodes[0]).await;
    let login = login_email(&mut d, "alice@example.com", "new password 1", "phone").await;
    assert!(matches!(login, Body::LoginOk(_)), "{login:?}");
}
