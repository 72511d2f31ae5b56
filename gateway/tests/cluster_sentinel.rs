//! Cluster mode on Redis Sentinel: real processes — a Redis primary, its replica
//! (`--replicaof`), one sentinel watching them, and two `ringchat` nodes configured with
//! `sentinel_addrs` and `sentinel_master` (no `redis_url`). The nodes find the primary through
//! the sentinel and see each other; after `SENTINEL FAILOVER` they heartbeat through the new
//! primary (their records reappear there after being deleted), their views are fresh, and a
//! message between users on the two nodes still goes through; with the old primary killed,
//! their route and presence subscriptions come back on the new one. Needs PostgreSQL
//! (RINGCHAT_TEST_POSTGRES_URL) and `redis-server` (RINGCHAT_TEST_REDIS_SERVER or on PATH).

mod common;

use common::cluster::{NodeEnv, acked, direct, free_port, synced, unique, wait_for_views};
use common::{TestServer, wait_until};
use ringchat_backend::testkit::OwnRedis;

const MASTER: &str = "chat";

fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()
}

/// `cmd` on the server at `port`; an error (or no server) as `Err`.
fn ask<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut connection(port)?)
}

/// The primary's port as the sentinel names it now.
fn primary_port(sentinel: u16) -> Option<u16> {
    let addr: Vec<String> = ask(
        sentinel,
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER),
    )
    .ok()?;
    addr.get(1)?.parse().ok()
}

fn node_key_exists(port: u16, prefix: &str, id: &str) -> bool {
    ask::<bool>(
        port,
        redis::cmd("EXISTS").arg(format!("{prefix}:node:{id}")),
    )
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_sentinel_failover_and_keep_heartbeating() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, ps) = (free_port(), free_port(), free_port());
    // A replica's full sync writes an RDB file: in the test's directory.
    let dir_arg = dir.path().to_str().expect("a UTF-8 path");
    let mut primary = OwnRedis::start_with(p1, &["--dir", dir_arg]);
    let _replica = OwnRedis::start_with(
        p2,
        &[
            "--dir",
            dir_arg,
            "--replicaof",
            "127.0.0.1",
            &p1.to_string(),
        ],
    );
    wait_until("the replica is in sync with the primary", || {
        ask::<String>(p2, redis::cmd("INFO").arg("replication"))
            .is_ok_and(|info| info.contains("master_link_status:up"))
    });
    let _sentinel = OwnRedis::start_sentinel(ps, MASTER, p1, dir.path());
    assert_eq!(primary_port(ps), Some(p1));

    let db = common::store::fresh_database();
    let prefix = format!("sn_{}", unique());
    let nodes: Vec<TestServer> = ["s1", "s2"]
        .iter()
        .map(|id| {
            let mut env = NodeEnv::new(&db, "", &prefix, id);
            env.vars.retain(|(k, _)| k != "CLUSTER__REDIS_URL");
            env.vars.extend([
                (
                    "CLUSTER__SENTINEL_ADDRS".to_owned(),
                    format!("[\"127.0.0.1:{ps}\"]"),
                ),
                ("CLUSTER__SENTINEL_MASTER".to_owned(), MASTER.to_owned()),
                // A resubscribed route cache is trusted again after refresh_ms.
                ("CLUSTER__ROUTES__REFRESH_MS".to_owned(), "500".to_owned()),
            ]);
            TestServer::start(&env.pairs())
        })
        .collect();
    wait_for_views(&nodes, 2);
    assert!(node_key_exists(p1, &prefix, "s1") && node_key_exists(p1, &prefix, "s2"));
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    let mut want = vec![(
        acked(&mut alice, direct(b.user_id, "before")).await,
        "before",
    )];

    // The sentinel promotes the replica (retried while it has not yet found the replica good).
    wait_until("SENTINEL FAILOVER is accepted", || {
        ask::<()>(ps, redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER)).is_ok()
    });
    wait_until("the sentinel names the replica as primary", || {
        primary_port(ps) == Some(p2)
    });
    // The old primary as Sentinel demotes it (a few seconds later: after failover-timeout and
    // its next INFO): a replica now, it answers the nodes' writes with READONLY.
    let _: () = ask(
        p1,
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(p2.to_string()),
    )
    .expect("REPLICAOF on the old primary");
    // Only a node writing to the new primary brings its record back there.
    let _: () = ask(
        p2,
        redis::cmd("DEL")
            .arg(format!("{prefix}:node:s1"))
            .arg(format!("{prefix}:node:s2")),
    )
    .expect("DEL on the new primary");
    wait_until("both nodes heartbeat through the new primary", || {
        node_key_exists(p2, &prefix, "s1") && node_key_exists(p2, &prefix, "s2")
    });
    wait_for_views(&nodes, 2);
    wait_until("both views are fresh", || {
        nodes
            .iter()
            .all(|n| n.metric("ringchat_cluster_view_fresh") == 1.0)
    });

    // Messages still cross between the nodes, both ways.
    want.push((
        acked(&mut alice, direct(b.user_id, "after-a")).await,
        "after-a",
    ));
    want.push((
        acked(&mut bob, direct(a.user_id, "after-b")).await,
        "after-b",
    ));
    let conv = want[0].0.conversation_id;
    let want: Vec<(u64, String)> = want
        .iter()
        .map(|(ack, id)| (ack.seq, (*id).to_owned()))
        .collect();
    assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(synced(&mut bob, conv).await, want, "Sync on s2");
    assert_eq!(synced(&mut alice, conv).await, want, "Sync on s1");

    // The old primary dies: the route and presence subscriptions it still held (a replica
    // gets every PUBLISH) come back on the primary Sentinel names.
    let subscribed = |n: &TestServer| {
        n.log_lines_with("subscribed to route changes")
            + n.log_lines_with("subscribed to presence changes")
    };
    let before: Vec<usize> = nodes.iter().map(subscribed).collect();
    primary.stop();
    wait_until("both nodes subscribe again", || {
        nodes
            .iter()
            .zip(&before)
            .all(|(n, b)| subscribed(n) >= b + 2)
    });
    wait_until(
        "both nodes trust their routes and hear presence again",
        || {
            nodes.iter().all(|n| {
                n.metric("ringchat_cluster_routes_trusted") == 1.0
                    && n.metric("ringchat_cluster_presence_subscribed") == 1.0
            })
        },
    );
    wait_for_views(&nodes, 2);
}
