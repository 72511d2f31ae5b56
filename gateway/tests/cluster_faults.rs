//! Cluster mode under faults (real `ringchat` nodes on one PostgreSQL database and Redis):
//! pushes dropped between nodes make the receiving node's sessions Sync (`SyncNeeded`); the
//! offline push asks the routes whether a user is online on another node (and pushes once
//! that node was killed, before it leaves the view); a paused owner
//! (SIGSTOP) is fenced out once another node took its conversation; Redis restarted empty
//! under load loses nothing acked and routing rebuilds. Needs the servers `scripts/test.sh`
//! starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::cluster::{
    acked, contiguous_seq, direct, every_ack_once, metric_sum, owner, redis_url, route_fields,
    start_nodes_with, synced, unique, wait_for_views,
};
use common::push::{has_push, pushed_seqs};
use common::webhook::WebhookSink;
use common::{TestServer, WAIT_DEADLINE, wait_until, wait_until_async};
use ringchat_backend::testkit::OwnRedis;
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, PushProvider};
use tokio::time::Instant;

fn servers(nodes: Vec<(common::cluster::NodeEnv, TestServer)>) -> Vec<TestServer> {
    nodes.into_iter().map(|(_, s)| s).collect()
}

/// A user on `nodes[on]` whose direct conversation with `with` is owned by `nodes[owned_by]`.
async fn peer_owned_by(
    nodes: &[TestServer],
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

/// Pipelines sends `{tag}-{i}` to `to` (written on this node: nothing forwarded) and returns
/// their acks as (seq, id).
async fn burst(c: &mut Client, to: u64, tag: &str, n: usize) -> Vec<(u64, String)> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-{i}");
        sent.push((c.send(direct(to, &id)).await.expect("send"), id));
    }
    let mut acks = Vec::new();
    for (request, id) in sent {
        match c.reply_to(request).await.expect("a reply") {
            Body::SendAck(ack) => acks.push((ack.seq, id)),
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
    acks
}

/// Part 1: a tiny peer queue overflows under a burst; the batch after the drop carries
/// `missed`, and the receiving node tells its sessions to Sync; the recipient, catching up from
/// the last seq it holds with no gap, then has every acked message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_cross_node_pushes_make_the_recipient_sync_and_catch_up_every_acked_message() {
    let ids = ["n1", "n2"];
    let db = common::store::fresh_database();
    let prefix = format!("rc_hint_{}", unique());
    let nodes = servers(start_nodes_with(
        &db,
        &redis_url(),
        &prefix,
        &ids,
        &[
            ("CLUSTER__PEER_QUEUE_ITEMS_MAX", "16"),
            ("CLUSTER__SYNC_HINT_INTERVAL_MS", "200"),
        ],
    ));
    wait_for_views(&nodes, 2);
    let (mut alice, a) = nodes[0].user("alice").await;
    // bob on n2, his conversation with alice owned by n1: every push to him crosses the link.
    let (mut bob, b) = peer_owned_by(&nodes, &ids, 1, a.user_id, 0, "bob").await;
    let conv = conversation_id(a.user_id, b);
    let mut acks = Vec::new();
    let mut pushed: Vec<v1::Message> = Vec::new();
    // Counted on n1, not as `missed` on n2: n2 entering n1's view is announced with `missed`
    // too (link/newcomers.rs), at a time of its own, and then no burst was made at all.
    let dropped = || {
        nodes[0]
            .metrics()
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("ringchat_cluster_peer_items_dropped_total{")
                    && k.contains("reason=\"full\"")
            })
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    // Bursts until the queue to n2 dropped frames (a commit group's frames over 16 items are
    // refused whole), at most 20 rounds.
    let mut round = 0;
    while dropped() == 0.0 {
        assert!(round < 20, "no frames dropped after {round} bursts");
        acks.extend(burst(&mut alice, b, &format!("r{round}"), 200).await);
        round += 1;
    }
    // Skipping the one of bob's login check (`spread_ms` 0, cluster/login_check.rs), which
    // the conversation's activity since his login may bring: at most one.
    let mut hint = None;
    for _ in 0..2 {
        let got = tokio::time::timeout(WAIT_DEADLINE, bob.next_sync_needed(&mut pushed))
            .await
            .expect("SyncNeeded in time")
            .expect("SyncNeeded");
        if got.spread_ms != 0 {
            hint = Some(got);
            break;
        }
    }
    let hint = hint.expect("the hint of the dropped frames");
    assert_eq!(hint.spread_ms, 200, "spread over the hint interval");
    assert!(metric_sum(&nodes[1], "ringchat_cluster_sync_hints_total") >= 1.0);
    let pushes: Vec<u64> = pushed.iter().map(|m| m.seq).collect();
    assert!(
        pushes.windows(2).all(|w| w[0] < w[1]),
        "pushes in seq order, once: {pushes:?}"
    );
    // Catch up as the hint says: from the last seq held with nothing missing before it.
    let mut known = HashMap::from([(conv, contiguous_seq(&pushed, conv))]);
    let caught = bob.catch_up(&mut known).await.expect("catch up");
    let mut got: Vec<(u64, String)> = pushed
        .iter()
        .filter(|m| m.seq <= contiguous_seq(&pushed, conv))
        .chain(&caught)
        .map(|m| (m.seq, String::from_utf8_lossy(&m.content).into_owned()))
        .collect();
    got.sort();
    got.dedup();
    every_ack_once(&got, &acks);
    assert_eq!(got.len(), acks.len(), "nothing but the acked messages");
    eprintln!(
        "{} acked in {round} bursts, {} pushed before the hint, {} caught up",
        acks.len(),
        pushed.len(),
        caught.len()
    );
}

/// Sends of one load in `redis_restarted_empty_under_load_...`, at most: far more than it
/// makes before the test stops it (a few seconds of sends).
const LOAD_SENDS_MAX: usize = 1_000_000;

const PUSH_SECRET: &str = "a push gateway secret of some length";

/// Alice on n1; bob on n2 with a push token, n1 owning their conversation (so n1 decides
/// the pushes, with no session of bob's), his route in Redis (n2 flushed his login); a first
/// message pushed live to him while n1 counted him online elsewhere (no offline push).
/// Alice, bob, bob's id, that message's seq.
async fn bob_online_on_n2_with_a_push_token(
    nodes: &[TestServer],
    ids: &[&str],
    prefix: &str,
) -> (Client, Client, u64, u64) {
    wait_for_views(nodes, 2);
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = peer_owned_by(nodes, ids, 1, a.user_id, 0, "bob").await;
    let reply = bob
        .request(Body::RegisterPushToken(v1::RegisterPushToken {
            provider: PushProvider::Apns as i32,
            token: "bob-token".into(),
        }))
        .await
        .expect("a reply");
    assert!(matches!(reply, Body::PushTokenOk(_)), "{reply:?}");
    wait_until_async("bob's route in Redis", || {
        !route_fields(&redis_url(), prefix, b).is_empty()
    })
    .await;
    let online = acked(&mut alice, direct(b, "while-online")).await;
    assert_eq!(bob.next_push().await.expect("pushed live").seq, online.seq);
    wait_until_async("n1 decided the push", || {
        metric_sum(&nodes[0], "ringchat_push_online_elsewhere_total") >= 1.0
    })
    .await;
    (alice, bob, b, online.seq)
}

/// Part 2: the owner node decides "offline" from its own sessions; a user online on another
/// node (the routes say so) gets no push, and gets one once he is offline everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_online_on_another_node_gets_no_offline_push() {
    let ids = ["n1", "n2"];
    let sink = WebhookSink::start();
    let url = format!("http://{}/push", sink.addr);
    let db = common::store::fresh_database();
    let prefix = format!("rc_push_{}", unique());
    let nodes = servers(start_nodes_with(
        &db,
        &redis_url(),
        &prefix,
        &ids,
        &[("PUSH__URL", url.as_str()), ("PUSH__SECRET", PUSH_SECRET)],
    ));
    let (mut alice, bob, b, online_seq) =
        bob_online_on_n2_with_a_push_token(&nodes, &ids, &prefix).await;
    // bob goes offline everywhere: once his route is gone, a send is pushed to his device.
    drop(bob);
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut i = 0;
    let offline_seq = loop {
        acked(&mut alice, direct(b, &format!("offline-{i}"))).await;
        i += 1;
        let seqs = pushed_seqs(&sink, b);
        if let Some(seq) = seqs.first() {
            assert!(
                !seqs.contains(&online_seq),
                "no push for the message sent while bob was online on n2: {seqs:?}"
            );
            break *seq;
        }
        assert!(Instant::now() < deadline, "no push after bob went offline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(offline_seq > online_seq);
}

/// Part 2b: the node a user was on is killed (SIGKILL). It stays in the others' views, and
/// the user's route in Redis, for `node_ttl_ms` (a minute here, past the test's deadline), but
/// once its link is seen down it no longer counts as "online elsewhere": a message sent right
/// after is pushed to the user's phone (nothing would ask again once the node left the view).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_node_was_just_killed_gets_the_offline_push() {
    let ids = ["n1", "n2"];
    let sink = WebhookSink::start();
    let url = format!("http://{}/push", sink.addr);
    let db = common::store::fresh_database();
    let prefix = format!("rc_pushkill_{}", unique());
    let mut nodes = servers(start_nodes_with(
        &db,
        &redis_url(),
        &prefix,
        &ids,
        &[
            ("PUSH__URL", url.as_str()),
            ("PUSH__SECRET", PUSH_SECRET),
            ("CLUSTER__NODE_TTL_MS", "60000"),
        ],
    ));
    let (mut alice, bob, b, online_seq) =
        bob_online_on_n2_with_a_push_token(&nodes, &ids, &prefix).await;

    let downs = metric_sum(&nodes[0], "ringchat_cluster_peer_links_down_total");
    nodes[1].kill9();
    drop(bob);
    wait_until_async("n1 sees its link to n2 down", || {
        metric_sum(&nodes[0], "ringchat_cluster_peer_links_down_total") > downs
    })
    .await;
    let after = acked(&mut alice, direct(b, "after-kill")).await;
    sink.wait_for(
        "a push to bob after his node was killed",
        WAIT_DEADLINE,
        |r| has_push(r, b, after.seq),
    );
    let seqs = pushed_seqs(&sink, b);
    assert!(
        !seqs.contains(&online_seq),
        "no push for the message sent while n2 ran: {seqs:?}"
    );
    assert_eq!(
        nodes[0].metric("ringchat_cluster_nodes"),
        2.0,
        "pushed while n2 was still in n1's view (its route still in Redis)"
    );
    assert!(!route_fields(&redis_url(), &prefix, b).is_empty());
}

/// Part 3: the owner of a conversation is paused (SIGSTOP) past its TTL; a survivor takes the
/// conversation; the paused node, continued, has writes in hand that the fence refuses (its
/// client gets UNAVAILABLE, never an ack for a seq another node gave), and the log stays
/// gap-free with each acked message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_out_and_the_log_stays_gap_free() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let prefix = format!("rc_pause_{}", unique());
    let nodes = servers(start_nodes_with(&db, &redis_url(), &prefix, &ids, &[]));
    wait_for_views(&nodes, 3);
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = peer_owned_by(&nodes, &ids, 1, a.user_id, 2, "bob").await;
    let conv = conversation_id(a.user_id, b);
    // alice's device on n3, the owner: its sends are written by n3 itself.
    let (mut alice3, _) = nodes[2].device("alice", "alice-dev3").await;
    let mut acks = vec![
        (
            acked(&mut alice, direct(b, "before-n1")).await.seq,
            "before-n1".to_owned(),
        ),
        (
            acked(&mut alice3, direct(b, "before-n3")).await.seq,
            "before-n3".to_owned(),
        ),
    ];
    nodes[2].signal("STOP");
    // Writes the paused owner takes in: they wait in its socket.
    let mut in_hand = Vec::new();
    for i in 0..5 {
        let id = format!("paused-{i}");
        in_hand.push((alice3.send(direct(b, &id)).await.expect("send"), id));
    }
    wait_until("n1 and n2 drop the paused n3", || {
        nodes[..2]
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == 2.0)
    });
    // A survivor takes the conversation: sends from n1 are acked again.
    for i in 0..5 {
        let id = format!("moved-{i}");
        acks.push((acked(&mut alice, direct(b, &id)).await.seq, id));
    }
    nodes[2].signal("CONT");
    let mut refused = Vec::new();
    for (request, id) in in_hand {
        match alice3
            .reply_to(request)
            .await
            .expect("an answer, never a hang")
        {
            Body::SendAck(ack) => acks.push((ack.seq, id)),
            Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(e.retry_after_ms > 0, "{e:?}");
                refused.push(id);
            }
            other => panic!("expected an ack or UNAVAILABLE, got {other:?}"),
        }
    }
    let fenced = nodes[2].metric("ringchat_cluster_fenced_groups_total");
    eprintln!(
        "paused owner: {} of its writes refused UNAVAILABLE, {fenced} groups fenced",
        refused.len()
    );
    // The client resends what was refused (same client_msg_id): stored once, wherever.
    for id in refused {
        acks.push((acked(&mut alice3, direct(b, &id)).await.seq, id));
    }
    // Every node serves the same log: gap-free, each acked message once at its acked seq.
    let mut seqs: Vec<u64> = acks.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), acks.len(), "no seq acked twice: {acks:?}");
    for (name, c) in [("n1", &mut alice), ("n3", &mut alice3)] {
        let stored = synced(c, conv).await;
        every_ack_once(&stored, &acks);
        assert_eq!(
            stored.len(),
            acks.len(),
            "on {name}: nothing unacked stored"
        );
    }
    // bob (on n2) was pushed by n3, then n1, then maybe n3 again: in seq order, each once (a
    // push n3 held through its pause is dropped, not sent after n1's: `queue::push_fresh_ms`).
    let last = acked(&mut alice, direct(b, "last")).await.seq;
    let mut pushed = Vec::new();
    while pushed.last() != Some(&last) {
        let m = tokio::time::timeout(WAIT_DEADLINE, bob.next_push())
            .await
            .expect("bob is pushed the last message in time")
            .expect("a push");
        if m.conversation_id == conv {
            pushed.push(m.seq);
        }
    }
    assert!(
        pushed.windows(2).all(|w| w[0] < w[1]),
        "bob's pushes in seq order, once: {pushed:?}"
    );
    wait_for_views(&nodes, 3);
}

/// Part 4: Redis is stopped and started again, empty, while cross-node sends run: every acked
/// message is stored once, gap-free; the nodes stay joined; the routes come back into Redis and
/// pushes go only to the recipient's node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_load_loses_nothing_and_routing_rebuilds() {
    let ids = ["n1", "n2", "n3"];
    let db = common::store::fresh_database();
    let mut redis = OwnRedis::start(common::cluster::free_port());
    let prefix = format!("rc_redis_{}", unique());
    let nodes = servers(start_nodes_with(
        &db,
        &redis.url(),
        &prefix,
        &ids,
        &[
            ("CLUSTER__ROUTES__REFRESH_MS", "500"),
            ("CLUSTER__ROUTES__TTL_MS", "5000"),
        ],
    ));
    wait_for_views(&nodes, 3);
    let (alice, a) = nodes[0].user("alice").await;
    // bob and erin on n2, their conversations with alice owned by n1 (alice's node).
    let (_bob, b) = peer_owned_by(&nodes, &ids, 1, a.user_id, 0, "bob").await;
    let (mut erin, e) = peer_owned_by(&nodes, &ids, 1, a.user_id, 0, "erin").await;
    // carol on n3 sends to bob: forwarded or not, crossing nodes.
    let (carol, _) = nodes[2].user("carol").await;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let load = |mut c: Client, to: u64, tag: &'static str| {
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
        tokio::spawn(async move {
            let (mut acks, mut conv) = (Vec::new(), 0);
            // Until the test says stop: its steps wait for more acks, and a load that ran out
            // of sends first (a fast store) left them waiting for acks that could not come.
            // The bound only ends a load the test forgot to stop.
            for i in 0..LOAD_SENDS_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("{tag}-{i}");
                let ack = acked(&mut c, direct(to, &id)).await;
                conv = ack.conversation_id;
                acks.push((ack.seq, id));
                count.fetch_add(1, Ordering::Relaxed);
            }
            (c, conv, acks)
        })
    };
    let loads = [load(alice, b, "a"), load(carol, b, "c")];
    let acked_now = || count.load(Ordering::Relaxed);
    let more = |n: usize| {
        let target = acked_now() + n;
        wait_until_async("the load to move on", move || acked_now() >= target)
    };
    more(20).await;
    redis.stop();
    for s in &nodes {
        wait_until_async("the views go stale", || {
            s.metric("ringchat_cluster_view_fresh") == 0.0
        })
        .await;
    }
    // Messages still flow with Redis away.
    more(20).await;
    let redis_again = OwnRedis::start(redis.port);
    for s in &nodes {
        wait_until_async("the views are fresh, all three nodes in them", || {
            s.metric("ringchat_cluster_view_fresh") == 1.0
                && s.metric("ringchat_cluster_nodes") == 3.0
        })
        .await;
    }
    // The routes are back in the empty Redis (each node rewrites its own every refresh_ms).
    for user in [b, e] {
        wait_until_async("the route is back in Redis", || {
            route_fields(&redis_again.url(), &prefix, user)
                .iter()
                .any(|f| f.starts_with("n2/"))
        })
        .await;
    }
    more(20).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for l in loads {
        all.push(
            tokio::time::timeout(WAIT_DEADLINE, l)
                .await
                .expect("load ends")
                .unwrap(),
        );
    }
    // Nothing acked is lost: every message once, at its acked seq, gap-free.
    for (c, conv, acks) in &mut all {
        let stored = synced(c, *conv).await;
        every_ack_once(&stored, acks);
        assert_eq!(stored.len(), acks.len(), "nothing unacked stored");
    }
    // Pushes narrow again: a send to erin (on n2) is routed from the cache to n2 alone, not
    // to every live node.
    let (alice, _, _) = &mut all[0];
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut i = 0;
    loop {
        let wide = |n: &TestServer| {
            metric_sum(n, "ringchat_cluster_route_everywhere_total")
                + n.metric("ringchat_cluster_route_cache_misses_total")
        };
        let before = wide(&nodes[0]);
        let ack = acked(alice, direct(e, &format!("narrow-{i}"))).await;
        assert_eq!(erin.next_push().await.expect("pushed").seq, ack.seq);
        i += 1;
        if wide(&nodes[0]) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pushes to erin still go everywhere"
        );
    }
    for s in &nodes {
        assert_eq!(s.metric("ringchat_cluster_nodes"), 3.0, "still joined");
        assert_eq!(common::http_get(s.admin, "/readyz"), "ready\n");
    }
    eprintln!("{} messages acked under the Redis restart", acked_now());
}
