//! Cluster mode: what a node does with a node view it cannot trust (real `ringchat` nodes on one
//! PostgreSQL database, each reaching a Redis of the test's own through a cuttable proxy). A
//! node that has not joined refuses writes UNAVAILABLE rather than taking them here; a Redis
//! restarted empty that one node reaches before the others shrinks no view (no conversation
//! stolen, no push lost unannounced); a node gone for good is no longer dialed, and is again
//! when it comes back; a node back after a cut from Redis gets its users' pushes again. Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_SERVER).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::cluster::{
    NODE_TTL_MS, NodeEnv, acked, contiguous_seq, direct, every_ack_once, free_port, metric_sum,
    owner, pushed, redis_url, route_fields, unique,
};
use common::proxy::CutProxy;
use common::{TestServer, WAIT_DEADLINE, wait_until_async};
use ringchat_backend::testkit::OwnRedis;
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::time::Instant;

/// Nodes `ids`, each reaching `redis` through a proxy of its own (returned, in order), with
/// `extra` settings. Proxies listed in `cut` are cut before their node starts.
async fn nodes_behind_proxies(
    db: &str,
    redis: &OwnRedis,
    prefix: &str,
    ids: &[&str],
    cut: &[usize],
    extra: &[(&str, &str)],
) -> (Vec<(NodeEnv, TestServer)>, Vec<CutProxy>) {
    let target = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let mut nodes = Vec::new();
    let mut proxies = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let proxy = CutProxy::start(target).await;
        if cut.contains(&i) {
            proxy.cut();
        }
        let url = format!("redis://{}/", proxy.addr);
        let mut env = NodeEnv::new(db, &url, prefix, id);
        env.vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let server = tokio::task::block_in_place(|| TestServer::start(&env.pairs()));
        nodes.push((env, server));
        proxies.push(proxy);
    }
    (nodes, proxies)
}

/// A user on `nodes[on]` whose direct conversation with `with` is owned by `nodes[owned_by]`.
async fn user_owned_by(
    nodes: &[&TestServer],
    ids: &[&str],
    on: usize,
    with: u64,
    owned_by: usize,
    tag: &str,
) -> (Client, u64) {
    for i in 0..64 {
        let (client, login) = nodes[on].user(&format!("{tag}{i}")).await;
        if owner(conversation_id(with, login.user_id), ids) == owned_by {
            return (client, login.user_id);
        }
    }
    panic!("none of 64 conversations is owned by {}", ids[owned_by]);
}

/// Waits until every node of `nodes` has a fresh view of `n` nodes.
async fn views(nodes: &[&TestServer], n: usize) {
    wait_until_async(&format!("every node sees {n} nodes, fresh"), || {
        nodes.iter().all(|s| {
            s.metric("ringchat_cluster_nodes") == n as f64
                && s.metric("ringchat_cluster_view_fresh") == 1.0
        })
    })
    .await;
}

fn fenced(nodes: &[&TestServer]) -> f64 {
    nodes
        .iter()
        .map(|n| n.metric("ringchat_cluster_fenced_groups_total"))
        .sum()
}

/// A node started while its Redis is unreachable has an empty view: a client's send there is
/// refused UNAVAILABLE (with when to retry), not acked by this node's own sequencer (which
/// would take the conversation from its owner); once it joins, the resend is acked and stored
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_joined_refuses_writes_instead_of_taking_them() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_join_{}", unique());
    let (nodes, proxies) = nodes_behind_proxies(&db, &redis, &prefix, &ids, &[2], &[]).await;
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers[..2], 2).await;
    assert_eq!(servers[2].metric("ringchat_cluster_joined"), 0.0);
    let (mut bob, bob_login) = servers[0].user("bob").await;
    let b = bob_login.user_id;
    let (mut alice, a) = servers[2].user("alice").await;
    let send = direct(b, "before-joining");
    match alice.request(send.clone()).await.expect("a reply") {
        Body::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unavailable as i32, "{e:?}");
            assert!(e.retry_after_ms > 0, "says when to retry: {e:?}");
        }
        other => panic!("a node that has not joined took the send: {other:?}"),
    }
    proxies[2].restore();
    wait_until_async("n3 joins", || {
        servers[2].metric("ringchat_cluster_joined") == 1.0
            && servers
                .iter()
                .all(|s| s.metric("ringchat_cluster_nodes") == 3.0)
    })
    .await;
    let ack = acked(&mut alice, send).await;
    let stored = common::cluster::synced(&mut bob, conversation_id(a.user_id, b)).await;
    assert_eq!(stored, vec![(ack.seq, "before-joining".to_owned())]);
    assert_eq!(fenced(&servers), 0.0, "no conversation changed hands");
}

/// A node that has just joined is missing from the others' views until their next read of the
/// registry: a push one of them sequences meanwhile for a user on the new node goes to no
/// node. Once the new node enters that view, it is told it may have missed pushes, and its
/// sessions are told to Sync: the message is pushed or announced, never lost unannounced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_sent_before_a_new_node_is_in_the_view_is_announced_to_it() {
    let db = common::store::fresh_database();
    let prefix = format!("rc_newcomer_{}", unique());
    let ttl = ("CLUSTER__NODE_TTL_MS", "30000");
    let start = |id: &str, extra: &[(&str, &str)]| {
        let mut env = NodeEnv::new(&db, &redis_url(), &prefix, &id);
        env.vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        tokio::task::block_in_place(|| TestServer::start(&env.pairs()))
    };
    // n1 reads the registry every 8 s: n2, started after it, stays missing from its view
    // for up to that long.
    let n1 = start("n1", &[("CLUSTER__HEARTBEAT_INTERVAL_MS", "8000"), ttl]);
    wait_until_async("n1 joins", || n1.metric("ringchat_cluster_joined") == 1.0).await;
    let (mut alice, _) = n1.user("alice").await;
    let n2 = start("n2", &[ttl]);
    wait_until_async("n2 sees n1", || n2.metric("ringchat_cluster_nodes") == 2.0).await;
    let (mut bob, bob_login) = n2.user("bob").await;
    let b = bob_login.user_id;
    let lacks_n2 = || n1.metric("ringchat_cluster_nodes") == 1.0;
    assert!(lacks_n2(), "n1's view caught up before the send");
    // n1 owns every conversation by its view and sends the push to the nodes of its view.
    let ack = acked(&mut alice, direct(b, "early")).await;
    assert!(lacks_n2(), "n1's view caught up before the push went out");
    let conv = ack.conversation_id;
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, bob.next_event())
            .await
            .expect("the push neither reached bob nor was announced by SyncNeeded")
            .ok()
            .flatten();
        match frame.and_then(|f| f.body) {
            Some(Body::Push(p)) if p.message.iter().any(|m| m.seq == ack.seq) => return,
            // Bob's own login check (`cluster/login_check.rs`, spread 0) may come first: it
            // is not the announcement this test is about, the newcomer's folded hint is.
            Some(Body::SyncNeeded(n)) if n.spread_ms > 0 => break,
            _ => {}
        }
    }
    let stored = common::cluster::synced(&mut bob, conv).await;
    assert_eq!(stored, vec![(ack.seq, "early".to_owned())]);
    assert!(metric_sum(&n1, "ringchat_cluster_peers_new_in_view_total") >= 1.0);
}

/// Redis is restarted empty, and one node reaches it before the others (their heartbeats fail
/// meanwhile): its first fresh read lists only itself. Its view keeps the other nodes (missing
/// from Redis for less than `node_ttl_ms`), so a send there for a conversation another node
/// owns is still forwarded to that owner (nothing claimed away from it: no fence), and its
/// push reaches the recipient on that node; before, it was taken here and its pushes went
/// nowhere, unannounced. Every acked message is pushed or announced by `SyncNeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_reached_by_one_node_first_shrinks_no_view() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let mut redis = OwnRedis::start(free_port());
    let prefix = format!("rc_empty_{}", unique());
    // A TTL long enough for the sends below (the others stay away from Redis meanwhile).
    let (nodes, proxies) = nodes_behind_proxies(
        &db,
        &redis,
        &prefix,
        &ids,
        &[],
        &[("CLUSTER__NODE_TTL_MS", "8000")],
    )
    .await;
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers, 3).await;
    let (mut alice, a) = servers[0].user("alice").await;
    // bob on n2, his conversation with alice owned by n2: alice's sends are forwarded there.
    let (mut bob, b) = user_owned_by(&servers, &ids, 1, a.user_id, 1, "bob").await;
    let conv = conversation_id(a.user_id, b);
    let mut acks = vec![{
        let ack = acked(&mut alice, direct(b, "warm-0")).await;
        (ack.seq, "warm-0".to_owned())
    }];
    let fenced_before = fenced(&servers);
    // Redis away for every node, then back empty for n1 only.
    for p in &proxies {
        p.cut();
    }
    for s in &servers {
        wait_until_async("the views go stale", || {
            s.metric("ringchat_cluster_view_fresh") == 0.0
        })
        .await;
    }
    redis.stop();
    let _redis = OwnRedis::start(redis.port);
    proxies[0].restore();
    wait_until_async("n1 reads the empty Redis", || {
        servers[0].metric("ringchat_cluster_view_fresh") == 1.0
    })
    .await;
    for i in 0..20 {
        let id = format!("alone-{i}");
        let ack = acked(&mut alice, direct(b, &id)).await;
        acks.push((ack.seq, id));
    }
    proxies[1].restore();
    proxies[2].restore();
    views(&servers, 3).await;
    // Once the views agree again, n2 sequences the conversation: had n1 claimed it meanwhile,
    // n2's next group for it would be fenced.
    for i in 0..5 {
        let id = format!("after-{i}");
        let ack = acked(&mut alice, direct(b, &id)).await;
        acks.push((ack.seq, id));
    }
    assert_eq!(
        fenced(&servers),
        fenced_before,
        "no conversation was taken from its owner"
    );
    // Every acked message reaches bob as a push, or bob is told to Sync.
    let wanted: BTreeSet<u64> = acks.iter().map(|(seq, _)| *seq).collect();
    let mut pushed: Vec<v1::Message> = Vec::new();
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut hinted = false;
    loop {
        let got: BTreeSet<u64> = pushed
            .iter()
            .filter(|m| m.conversation_id == conv)
            .map(|m| m.seq)
            .collect();
        if wanted.is_subset(&got) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, bob.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "acked messages neither pushed to bob nor announced by SyncNeeded: {:?}",
                    wanted.difference(&got).collect::<Vec<_>>()
                )
            })
            .ok()
            .flatten();
        match frame.and_then(|f| f.body) {
            Some(Body::Push(p)) => pushed.extend(p.message),
            Some(Body::SyncNeeded(_)) => {
                hinted = true;
                break;
            }
            _ => {}
        }
    }
    if hinted {
        let mut known = HashMap::from([(conv, contiguous_seq(&pushed, conv))]);
        pushed.extend(bob.catch_up(&mut known).await.expect("catch up"));
    }
    let mut got: Vec<(u64, String)> = pushed
        .iter()
        .filter(|m| m.conversation_id == conv)
        .map(|m| (m.seq, String::from_utf8_lossy(&m.content).into_owned()))
        .collect();
    got.sort();
    got.dedup();
    every_ack_once(&got, &acks);
    eprintln!("{} acked, SyncNeeded: {hinted}", acks.len());
}

/// A node cut off from Redis (not from the store or its peers) stops taking conversations
/// over about `node_ttl_ms` into the cut: by then the others have dropped it from their views
/// and moved its conversations, and a claim here would fence their new owner, which claims
/// back, and so on for as long as the cut lasts (before, every write here did so). Its clients
/// get UNAVAILABLE with when to retry; nothing acked is lost; once Redis is back, their writes
/// go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_takes_no_conversation_over() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_cut_{}", unique());
    let (nodes, proxies) = nodes_behind_proxies(&db, &redis, &prefix, &ids, &[], &[]).await;
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers, 3).await;
    // bob on n2, alice on n1 (cut below), their conversation owned by n1.
    let (mut bob, bob_login) = servers[1].user("bob").await;
    let b = bob_login.user_id;
    let (mut alice, a) = user_owned_by(&servers, &ids, 0, b, 0, "alice").await;
    let conv = conversation_id(a, b);
    let mut acks = Vec::new();
    for (client, to, id) in [(&mut alice, b, "warm-a"), (&mut bob, a, "warm-b")] {
        acks.push((acked(client, direct(to, id)).await.seq, id.to_owned()));
    }
    proxies[0].cut();
    wait_until_async("n1 finds Redis away", || {
        servers[0].metric("ringchat_cluster_view_fresh") == 0.0
    })
    .await;
    let claims = || metric_sum(servers[0], "ringchat_cluster_claims_total");
    let (claims_before, fenced_before) = (claims(), fenced(&servers[1..]));
    // Both write on while the others drop n1 and for three TTLs of the cut in all.
    let cut_at = Instant::now();
    let long_enough = Duration::from_millis(3 * NODE_TTL_MS);
    let deadline = cut_at + long_enough + WAIT_DEADLINE;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let (mut refused_after_drop, mut i) = (0, 0);
    loop {
        pace.tick().await;
        let dropped = servers[1..]
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == 2.0);
        if dropped && refused_after_drop >= 3 && cut_at.elapsed() >= long_enough {
            break;
        }
        assert!(Instant::now() < deadline, "n2 and n3 never dropped n1");
        let id = format!("cut-a-{i}");
        match alice.request(direct(b, &id)).await.expect("a reply") {
            Body::SendAck(ack) => acks.push((ack.seq, id)),
            Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(e.retry_after_ms > 0, "says when to retry: {e:?}");
                refused_after_drop += u32::from(dropped);
            }
            other => panic!("expected an ack or UNAVAILABLE, got {other:?}"),
        }
        let id = format!("cut-b-{i}");
        acks.push((acked(&mut bob, direct(a, &id)).await.seq, id));
        i += 1;
    }
    assert_eq!(claims(), claims_before, "n1 claimed nothing while cut off");
    assert_eq!(
        fenced(&servers[1..]),
        fenced_before,
        "no group of n2's or n3's was fenced"
    );
    proxies[0].restore();
    views(&servers, 3).await;
    for (client, to, id) in [(&mut alice, b, "back-a"), (&mut bob, a, "back-b")] {
        acks.push((acked(client, direct(to, id)).await.seq, id.to_owned()));
    }
    every_ack_once(&common::cluster::synced(&mut bob, conv).await, &acks);
    eprintln!(
        "{} acked, {refused_after_drop} refused after n1 was dropped",
        acks.len()
    );
}

/// Items `node` dropped as stale instead of sending them (`link/queue.rs`).
fn stale_dropped(node: &TestServer) -> f64 {
    node.metrics()
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("ringchat_cluster_peer_items_dropped_total{")
                && k.contains("reason=\"stale\"")
        })
        .map(|(_, v)| v)
        .sum()
}

/// A node cut off from Redis, not from the store or its peers, still commits the conversations
/// it holds (nobody has claimed them since) after its record expired and the others dropped
/// it. Any other node may claim one at any moment and push later seqs, which a push of this
/// node queued behind must not follow; so once its last heartbeat that reached Redis is
/// `node_ttl_ms` less half a heartbeat old its pushes are dropped, not sent: bob is told to
/// Sync instead, and finds the message there. Before, the push went out as if just queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_sends_no_push_once_its_record_has_expired() {
    let ids = ["n1", "n2"];
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_cut_push_{}", unique());
    let (nodes, proxies) = nodes_behind_proxies(&db, &redis, &prefix, &ids, &[], &[]).await;
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers, 2).await;
    // bob on n2, alice on n1 (cut below), their conversation owned (and claimed) by n1.
    let (mut bob, bob_login) = servers[1].user("bob").await;
    let b = bob_login.user_id;
    let (mut alice, a) = user_owned_by(&servers, &ids, 0, b, 0, "alice").await;
    let conv = conversation_id(a, b);
    let mut acks = vec![(
        acked(&mut alice, direct(b, "before")).await.seq,
        "before".to_owned(),
    )];
    pushed(&mut bob, "before").await;
    proxies[0].cut();
    // n2 drops n1 `node_ttl_ms` after n1's last heartbeat.
    wait_until_async("n2 drops n1", || {
        servers[1].metric("ringchat_cluster_nodes") == 1.0
    })
    .await;
    let stale_before = stale_dropped(servers[0]);
    let ack = acked(&mut alice, direct(b, "cut")).await;
    acks.push((ack.seq, "cut".to_owned()));
    wait_until_async("n1 drops its push to n2 as stale", || {
        stale_dropped(servers[0]) > stale_before
    })
    .await;
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, bob.next_event())
            .await
            .expect("bob was not told to Sync")
            .ok()
            .flatten();
        match frame.and_then(|f| f.body) {
            Some(Body::Push(p)) if p.message.iter().any(|m| m.seq == ack.seq) => {
                panic!("n1's push after its record expired reached bob")
            }
            Some(Body::SyncNeeded(_)) => break,
            _ => {}
        }
    }
    every_ack_once(&common::cluster::synced(&mut bob, conv).await, &acks);
    proxies[0].restore();
}

/// The links-down count of `node` for peer `peer`.
fn links_down(node: &TestServer, peer: &str) -> f64 {
    node.metrics()
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("ringchat_cluster_peer_links_down_total{")
                && k.contains(&format!("peer=\"{peer}\""))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A node stopped for good leaves the view after `node_ttl_ms`; `node_ttl_ms` later its peer
/// on the others is parked: no longer dialed (its links-down count stops growing, where it
/// grew every backoff for ever). Started again with the same id, it is dialed again and owns
/// its conversations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_node_is_no_longer_dialed_and_is_again_when_back() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_departed_{}", unique());
    // Dialing a dead peer every 200 ms at most.
    let extra = [("CLUSTER__PEER_BACKOFF_MAX_MS", "200")];
    let (mut nodes, _proxies) = nodes_behind_proxies(&db, &redis, &prefix, &ids, &[], &extra).await;
    {
        let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
        views(&servers, 3).await;
    }
    let (mut alice, a) = nodes[0].1.user("alice").await;
    // carol on n3, her conversation with alice owned by n3: n1 links to n3 for it.
    let (_carol, c) = {
        let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
        user_owned_by(&servers, &ids, 2, a.user_id, 2, "carol").await
    };
    acked(&mut alice, direct(c, "while-up")).await;
    let (env3, n3) = nodes.pop().expect("n3");
    drop(n3);
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers, 2).await;
    // Parked within node_ttl_ms (plus a backoff) of leaving the view: the count stops growing
    // (stable over 5 backoffs).
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let before = links_down(servers[0], "n3");
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let after = links_down(servers[0], "n3");
        assert!(before > 0.0, "the link to n3 went down");
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1 still dials n3 long after it left: {after} links down"
        );
    }
    assert!(metric_sum(servers[0], "ringchat_cluster_peers_parked_total") >= 1.0);
    // Back with the same id: dialed again (the same slot), and its conversations forwarded.
    let n3 = tokio::task::block_in_place(|| TestServer::start(&env3.pairs()));
    let all = [servers[0], servers[1], &n3];
    views(&all, 3).await;
    acked(&mut alice, direct(c, "back")).await;
}

/// A node cut off from Redis past `node_ttl_ms` (still reaching its peers and the store, its
/// users still logged in there) leaves the others' views. A route cache fill on another node
/// meanwhile must neither delete its users' routes nor cache them without it for good: once
/// it is back, pushes reach its sessions again. Before, the fill judged a node missing from
/// the view by its start time, so a node that had run longer than `routes.ttl_ms` lost its
/// routes to that fill at once; the entry cached without it never expired (not empty), and
/// the node's rewrite of its routes publishes nothing: every later push of that owner to the
/// user went to the other node only, with no `SyncNeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_a_redis_cut_gets_its_users_pushes_again() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_routes_back_{}", unique());
    // Routes' TTL short enough that n3 has outlived it by the time it leaves the views.
    let extra = [
        ("CLUSTER__ROUTES__TTL_MS", "1000"),
        ("CLUSTER__ROUTES__REFRESH_MS", "400"),
    ];
    let (nodes, proxies) = nodes_behind_proxies(&db, &redis, &prefix, &ids, &[], &extra).await;
    let servers: Vec<&TestServer> = nodes.iter().map(|(_, s)| s).collect();
    views(&servers, 3).await;
    // bob on n2 and n3; alice on n1, their conversation owned by n1. Nothing sent yet: n1's
    // route cache does not know bob.
    let (mut bob2, bob_login) = servers[1].user("bob").await;
    let b = bob_login.user_id;
    let (mut bob3, _) = servers[2].device("bob", "bob-dev2").await;
    let (mut alice, a) = user_owned_by(&servers, &ids, 0, b, 0, "alice").await;
    let bob_on_n3 = || {
        route_fields(&redis.url(), &prefix, b)
            .iter()
            .any(|f| f.starts_with("n3/"))
    };
    wait_until_async("bob's route on n3 written", bob_on_n3).await;

    // n3 cut from Redis until n1 and n2 drop it; n1 fills bob's route meanwhile.
    proxies[2].cut();
    wait_until_async("n1 and n2 drop n3", || {
        servers[..2]
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == 2.0)
    })
    .await;
    let hits = || servers[0].metric("ringchat_cluster_route_cache_hits_total");
    let (misses_before, hits_before) = (
        servers[0].metric("ringchat_cluster_route_cache_misses_total"),
        hits(),
    );
    let mut acks = Vec::new();
    let mut i = 0;
    // The first send misses the cache (its fill starts); a later one hits the filled entry.
    while i == 0 || hits() == hits_before {
        assert!(i < 200, "n1's route cache never filled bob's entry");
        let id = format!("cut-{i}");
        acks.push((acked(&mut alice, direct(b, &id)).await.seq, id));
        i += 1;
    }
    assert!(
        servers[0].metric("ringchat_cluster_route_cache_misses_total") > misses_before,
        "bob's route was filled during the cut"
    );
    pushed(&mut bob2, &acks[acks.len() - 1].1).await;
    assert_eq!(
        servers[2].metric("ringchat_cluster_nodes"),
        3.0,
        "n3's view is stale, not shrunk"
    );

    proxies[2].restore();
    views(&servers, 3).await;
    wait_until_async("n3's route of bob back in Redis", bob_on_n3).await;
    // Past n3's return (its SyncNeeded for the pushes it missed is skipped): every push from
    // n1 reaches bob on n3 again.
    for id in ["back-0", "back-1"] {
        let ack = acked(&mut alice, direct(b, id)).await;
        acks.push((ack.seq, id.to_owned()));
        pushed(&mut bob2, id).await;
        pushed(&mut bob3, id).await;
    }
    every_ack_once(
        &common::cluster::synced(&mut bob3, conversation_id(a, b)).await,
        &acks,
    );
}
