//! Cluster mode: a device that reconnects to another node with `Login.resume` gets what it
//! missed from the store of record (real `ringchat` nodes on one PostgreSQL database and
//! Redis). Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{acked, direct, redis_url, start_nodes, unique, wait_for_views};
use common::resume::{Device, listed, nothing_more, seqs};
use ringchat_bench::client::conversation_id;

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
