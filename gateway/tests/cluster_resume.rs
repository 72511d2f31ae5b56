//! Cluster mode: a device that reconnects to another node with `Login.resume` gets what it
//! missed from the store of record (real `ringchat` nodes on one PostgreSQL database and
//! Redis). Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    acked, direct, owner, redis_url, route_fields, start_nodes, start_nodes_with, synced, unique,
    wait_for_views,
};
use common::resume::{Device, listed, nothing_more, seqs};
use common::{TestServer, wait_until};
use ringchat_bench::client::conversation_id;
use ringchat_proto::Body;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_another_node_returns_what_was_missed() {
    let db = common::store::fresh_database();
    let prefix = format!("rc_resume_{}", unique());
    let nodes: Vec<TestServer> = start_nodes(&db, &redis_url(), &prefix, &["n1", "n2"])
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, 2);
    let mut a = Device::new(&nodes[0], "alice").await;
    let (mut b, bob) = nodes[1].user("bob").await;
    let conv = conversation_id(a.user_id, bob.user_id);
    acked(&mut b, direct(a.user_id, "m0")).await;
    assert_eq!(a.push().await.seq, 1, "pushed across nodes");
    let since = a.since;
    a.disconnect();
    for i in 1..=4 {
        acked(&mut b, direct(a.user_id, &format!("m{i}"))).await;
    }
    // Back on the other node: its reads are the shared store's.
    let (mut back, resumed) = a.reconnect(&nodes[1], since, &[(conv, 1)]).await;
    let resumed = resumed.expect("token login with a resume");
    assert!(resumed.done.complete, "{:?}", resumed.done);
    let want: Vec<(u64, u64)> = (2..=5).map(|s| (conv, s)).collect();
    assert_eq!(seqs(&resumed), want);
    assert_eq!(listed(&resumed), [conv]);
    nothing_more(&mut back).await;
}

/// The routes' window: alice resumes on n2 while n1, the conversation's owner, still has her
/// old route (n1) in its cache (`routes.flush_ms` is wide here), so bob's message right after
/// `Resumed{complete}` is pushed by that old route, not to n2. n2's check after the login
/// (`cluster/login_check.rs`) tells her `SyncNeeded` once the window closed; her Sync has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_the_routes_window_after_a_resume_is_announced() {
    const IDS: [&str; 2] = ["n1", "n2"];
    let db = common::store::fresh_database();
    let prefix = format!("rc_resumewin_{}", unique());
    let redis = redis_url();
    // Published changes 2 s late; the caches trusted (and routes rewritten) within 0.5 s.
    let env = [
        ("CLUSTER__ROUTES__FLUSH_MS", "2000"),
        ("CLUSTER__ROUTES__REFRESH_MS", "500"),
    ];
    let nodes: Vec<TestServer> = start_nodes_with(&db, &redis, &prefix, &IDS, &env)
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, 2);
    // Until then every push goes to every node.
    wait_until("both route caches trusted", || {
        nodes
            .iter()
            .all(|n| n.metric("ringchat_cluster_routes_trusted") == 1.0)
    });
    let mut a = Device::new(&nodes[0], "alice").await;
    wait_until("alice's route on n1 in Redis", || {
        !route_fields(&redis, &prefix, a.user_id).is_empty()
    });
    // Bob on n1 too, in a conversation n1 owns: its pushes go by n1's route cache.
    let mut found = None;
    for i in 0..64 {
        let (client, login) = nodes[0].user(&format!("bob{i}")).await;
        if owner(conversation_id(a.user_id, login.user_id), &IDS) == 0 {
            found = Some(client);
            break;
        }
    }
    let mut b = found.expect("one of 64 conversations is owned by n1");
    // The first push fills n1's cache: alice on n1.
    let m0 = acked(&mut b, direct(a.user_id, "m0")).await;
    let conv = m0.conversation_id;
    assert_eq!(a.push().await.seq, 1);
    wait_until("n1 cached alice's route", || {
        nodes[0].metric("ringchat_cluster_route_cache_users") >= 1.0
    });
    let since = a.since;
    a.disconnect();
    let (mut back, resumed) = a.reconnect(&nodes[1], since, &[(conv, 1)]).await;
    let resumed = resumed.expect("token login with a resume");
    assert!(resumed.done.complete, "{:?}", resumed.done);
    assert_eq!(seqs(&resumed), []);
    // Within the window: n1 does not know yet that alice is on n2.
    let m1 = acked(&mut b, direct(a.user_id, "m1")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, back.next_event_untimed())
            .await
            .expect("m1 was neither pushed to alice nor announced by SyncNeeded in 10 s")
            .expect("a frame")
            .expect("open");
        match frame.body {
            Some(Body::Push(p)) if p.message.iter().any(|m| m.seq == m1.seq) => break,
            // This session's (`spread_ms` 0), not a node-wide hint of a loss between the
            // nodes (`spread_ms` = `cluster.sync_hint_interval_ms`): n1's first batch to n2,
            // new in its view, says `missed`, and that hint may come at any time.
            Some(Body::SyncNeeded(h)) if h.spread_ms == 0 => break,
            _ => {}
        }
    }
    // n2's own check saw m1 (not only a node-wide hint for some other loss).
    wait_until("n2's login check found the activity", || {
        nodes[1].metric("ringchat_cluster_login_checks_total{outcome=\"active\"}") >= 1.0
    });
    let stored = synced(&mut back, conv).await;
    assert_eq!(stored, [(1, "m0".to_owned()), (m1.seq, "m1".to_owned())]);
}
