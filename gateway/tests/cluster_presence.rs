//! Cluster mode: presence and typing across nodes (real `ringchat` nodes on one PostgreSQL
//! database and Redis). A user's shown state is the most present of all their devices on all
//! nodes; each node tells its own online friends, through its own quiet period; typing rides
//! the node links. Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use std::time::Duration;

use common::cluster::{NodeEnv, redis_url, route_fields, unique};
use common::contacts::*;
use common::groups::{create_id, send_body};
use common::{TestServer, WAIT_DEADLINE, wait_until};
use ringchat_backend::testkit::OwnRedis;
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, PresenceState as P};
use tokio::time::Instant;

/// The quiet period of the first test's nodes: offline is shown only after it.
const QUIET_MS: &str = "300";

/// Nodes on one fresh database and Redis prefix, once each sees them all and hears their
/// presence changes.
fn nodes(ids: &[&str], quiet_ms: &str) -> Vec<TestServer> {
    nodes_on(
        &redis_url(),
        &format!("rc_presence_{}", unique()),
        ids,
        quiet_ms,
    )
}

/// [`nodes`] on the Redis at `redis`, under `prefix`.
fn nodes_on(redis: &str, prefix: &str, ids: &[&str], quiet_ms: &str) -> Vec<TestServer> {
    nodes_with(redis, prefix, ids, quiet_ms, &[])
}

/// [`nodes_on`] with `extra` variables.
fn nodes_with(
    redis: &str,
    prefix: &str,
    ids: &[&str],
    quiet_ms: &str,
    extra: &[(&str, &str)],
) -> Vec<TestServer> {
    let db = common::store::fresh_database();
    let servers: Vec<TestServer> = ids
        .iter()
        .map(|id| {
            let mut env = NodeEnv::new(&db, redis, prefix, id);
            env.vars
                .push(("PRESENCE__QUIET_PERIOD_MS".into(), quiet_ms.into()));
            env.vars
                .extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
            TestServer::start(&env.pairs())
        })
        .collect();
    wait_until(&format!("every node sees {} nodes", ids.len()), || {
        servers
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == ids.len() as f64)
    });
    // A change published before a node subscribed is not heard there until the next one.
    wait_until("every node hears the others' presence changes", || {
        servers
            .iter()
            .all(|s| s.metric("ringchat_cluster_presence_subscribed") == 1.0)
    });
    servers
}

/// Every push queued for `c` before a request's reply arrives first: the Presence pushes among
/// them.
async fn presence_so_far(c: &mut Client) -> Vec<v1::Presence> {
    list_friends(c, 0, 1).await;
    let mut out = Vec::new();
    while c.pending_events() > 0 {
        if let Some(Body::Presence(p)) = c.next_event().await.unwrap().unwrap().body {
            out.push(p);
        }
    }
    out
}

/// The Presence pushes queued for `c` before a request's reply arrives (the request reads
/// nothing of presence, so it changes nothing a push would tell).
async fn presence_pushes(c: &mut Client) -> Vec<v1::Presence> {
    c.conversations().await.expect("conversations");
    let mut out = Vec::new();
    while c.pending_events() > 0 {
        if let Some(Body::Presence(p)) = c.next_event().await.unwrap().unwrap().body {
            out.push(p);
        }
    }
    out
}

/// The push that tells `c` that `user` went offline. Before it, `c` may be told `user` is
/// online: the other node's news of `user`'s login can reach this node after the friendship
/// began (a loaded machine), and then it is told to the new friend, late but true. Anything
/// else first is wrong.
async fn offline_after_late_online(c: &mut Client, user: u64) -> v1::Presence {
    let p = next_presence(c).await;
    if (p.user_id, p.state()) == (user, P::Online) {
        return expect_presence(c, user, P::Offline).await;
    }
    assert_eq!((p.user_id, p.state()), (user, P::Offline), "{p:?}");
    p
}

/// `user` was never shown anything but online in `pushes` (a late push of their first login
/// may be among them, see `offline_after_late_online`).
fn assert_only_online(pushes: Vec<v1::Presence>, user: u64) {
    assert!(
        pushes
            .iter()
            .all(|p| (p.user_id, p.state()) == (user, P::Online)),
        "{pushes:?}"
    );
}

/// What `c`'s friends list shows of `friend`.
async fn listed(c: &mut Client, friend: u64) -> v1::Presence {
    let list = list_friends(c, 0, 100).await;
    list.friends
        .iter()
        .find(|f| f.profile.as_ref().is_some_and(|p| p.user_id == friend))
        .and_then(|f| f.presence)
        .expect("the friend, with presence")
}

/// Waits until `c`'s friends list shows `friend` online. A node writes a login to Redis within
/// `routes.flush_ms` (a login never waits on it), and a loaded machine can delay it past a
/// friendship that began meanwhile: until this node has heard of the login, or read it for a
/// list, it has shown the friend nothing, and a quick logout then is a flap it need not show.
async fn listed_online(c: &mut Client, friend: u64) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while listed(c, friend).await.state() != P::Online {
        assert!(Instant::now() < deadline, "{friend} never listed online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_on_different_nodes_see_each_other_come_online_go_away_and_go_offline() {
    let nodes = nodes(&["n1", "n2"], QUIET_MS);
    let (mut a, alice) = nodes[0].user("alice").await;
    let (mut b, bob) = nodes[1].user("bob").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    let me = alice.user_id;
    listed_online(&mut b, me).await;
    // Alice's only device leaves n1: bob, on n2, is told after the quiet period.
    let left = Instant::now();
    drop(a);
    let gone = offline_after_late_online(&mut b, me).await;
    assert!(left.elapsed() >= Duration::from_millis(QUIET_MS.parse().unwrap()));
    assert!(gone.last_seen_ms > 0, "{gone:?}");

    let mut a = device_with_presence(&nodes[0], "alice", "phone", P::Online).await;
    expect_presence(&mut b, me, P::Online).await;
    // Alice on n1 sees bob, on n2, in her friends list.
    assert_eq!(listed(&mut a, bob.user_id).await.state(), P::Online);
    assert_eq!(set_presence(&mut a, P::Away).await, P::Away);
    expect_presence(&mut b, me, P::Away).await;
    assert_eq!(listed(&mut b, me).await.state(), P::Away);

    drop(a);
    let gone = expect_presence(&mut b, me, P::Offline).await;
    assert!(gone.last_seen_ms > 0, "{gone:?}");
    let snapshot = listed(&mut b, me).await;
    assert_eq!(
        (snapshot.state(), snapshot.last_seen_ms),
        (P::Offline, gone.last_seen_ms)
    );
    // Bob leaves n2: alice, back on n1, is told.
    let mut a = device_with_presence(&nodes[0], "alice", "phone", P::Online).await;
    expect_presence(&mut b, me, P::Online).await;
    drop(b);
    expect_presence(&mut a, bob.user_id, P::Offline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_devices_on_two_nodes_stays_online_while_one_leaves() {
    let nodes = nodes(&["n1", "n2"], "0");
    let (mut phone, alice) = nodes[0].user("alice").await;
    let (mut b, bob) = nodes[1].user("bob").await;
    befriend(&mut phone, alice.user_id, &mut b, bob.user_id).await;
    let me = alice.user_id;
    // Every count is read before the change it waits for: a decision can come within
    // `routes.flush_ms` of the change, before a count read after it.
    let decided = || nodes[1].metric("ringchat_cluster_presence_decided_total");
    let before = decided();
    let mut desktop = device_with_presence(&nodes[1], "alice", "desktop", P::Online).await;
    // n2 decides on its own news of the desktop too; waited for, so that it cannot pass for
    // the phone's leaving below.
    wait_until("n2 decided about alice's desktop", || decided() > before);
    assert_only_online(presence_so_far(&mut b).await, me);

    // The phone leaves n1; n2 hears it and decides: alice is still online on n2.
    let before = decided();
    drop(phone);
    wait_until("n2 decided about alice after the phone left", || {
        decided() > before
    });
    assert_only_online(presence_so_far(&mut b).await, me);
    assert_eq!(listed(&mut b, me).await.state(), P::Online);

    // A device of hers on n1 (away) and the one on n2 leaving: away, not offline.
    let before = decided();
    let _tablet = device_with_presence(&nodes[0], "alice", "tablet", P::Away).await;
    wait_until("n2 heard of the tablet", || decided() > before);
    assert_eq!(set_presence(&mut desktop, P::Invisible).await, P::Away);
    expect_presence(&mut b, me, P::Away).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_go_offline_for_friends_on_other_nodes() {
    let mut nodes = nodes(&["n1", "n2"], "0");
    let (a, alice, mut b) = friends_on_two_nodes(&nodes).await;
    let killed = ringchat_backend::api::now_ms();
    nodes[0].kill9();
    // Once n1 is out of n2's view (node_ttl_ms), alice shows offline, last seen about then
    // (n1's news of her login may reach n2 after the friendship began: told late, but true).
    let gone = offline_after_late_online(&mut b, alice.user_id).await;
    assert!(gone.last_seen_ms >= killed, "{gone:?}");
    drop(a);
}

/// Alice on the first node and Bob on the second, friends, Bob seeing her online: her
/// client, her login, his client.
async fn friends_on_two_nodes(nodes: &[TestServer]) -> (Client, v1::LoginOk, Client) {
    let (mut a, alice) = nodes[0].user("alice").await;
    let (mut b, bob) = nodes[1].user("bob").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    listed_online(&mut b, alice.user_id).await;
    (a, alice, b)
}

/// A user's last seen in Redis (`{prefix}:seen:{user}`), 0 when absent.
fn seen_in_redis(redis: &str, prefix: &str, user: u64) -> u64 {
    redis::Client::open(redis)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| {
            redis::cmd("GET")
                .arg(format!("{prefix}:seen:{user}"))
                .query::<Option<u64>>(&mut c)
        })
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// A killed node never writes its users' going offline, the one write of last seen there
/// was: a friend listing them later (read from Redis once the node left the view) saw the
/// last seen from before their whole session, or none. The periodic rewrite moves a present
/// user's last seen forward, so a kill loses at most `routes.refresh_ms` of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_are_listed_last_seen_about_when_it_died() {
    let prefix = format!("rc_presence_seen_{}", unique());
    let mut nodes = nodes_with(
        &redis_url(),
        &prefix,
        &["n1", "n2"],
        "0",
        &[("CLUSTER__ROUTES__REFRESH_MS", "300")],
    );
    let (a, alice, mut b) = friends_on_two_nodes(&nodes).await;
    let online_at = ringchat_backend::api::now_ms();
    let mut seen = 0;
    common::wait_until_async(
        "a refresh moved alice's last seen to while she is online",
        || {
            seen = seen_in_redis(&redis_url(), &prefix, alice.user_id);
            seen >= online_at
        },
    )
    .await;
    nodes[0].kill9();
    offline_after_late_online(&mut b, alice.user_id).await;
    let listed = listed(&mut b, alice.user_id).await;
    assert_eq!(listed.state(), P::Offline, "{listed:?}");
    assert!(
        listed.last_seen_ms >= seen,
        "listed last seen {} is from before the refresh at {seen}",
        listed.last_seen_ms
    );
    drop(a);
}

/// Redis restarts empty while alice (on n1) and her friend bob (on n2) are online. A node
/// whose subscription comes back reads again the users it knows, and trusts what Redis says:
/// n2 must not read alice before n1 has put her part back, or, if it does, must hear n1
/// publish it (the periodic rewrite is silent), or bob is told she went offline for good.
/// n1 rewrites its parts as soon as its own subscription is back, publishing those Redis
/// lacked. The subscriptions are dropped once more after the restart (`CLIENT KILL`), with
/// Redis healthy: right after the restart n2's re-read may fail (its breaker is open from the
/// outage) and miss the point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_friends_on_other_nodes_still_see_a_user_online() {
    let mut redis = OwnRedis::start(common::cluster::free_port());
    let prefix = format!("rc_presence_restart_{}", unique());
    // Quiet period 0: bob is told of an offline alice at once, so that a wrong one shows.
    let nodes = nodes_on(&redis.url(), &prefix, &["n1", "n2"], "0");
    let (mut a, alice) = nodes[0].user("alice").await;
    let (mut b, bob) = nodes[1].user("bob").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    let me = alice.user_id;
    listed_online(&mut b, me).await;
    let mut pushes = presence_pushes(&mut b).await;

    redis.stop();
    wait_until("both nodes lost the presence subscription", || {
        nodes
            .iter()
            .all(|s| s.metric("ringchat_cluster_presence_subscribed") == 0.0)
    });
    let redis_again = OwnRedis::start(redis.port);
    wait_until("both nodes subscribed again, each seeing both", || {
        nodes.iter().all(|s| {
            s.metric("ringchat_cluster_presence_subscribed") == 1.0
                && s.metric("ringchat_cluster_view_fresh") == 1.0
                && s.metric("ringchat_cluster_nodes") == 2.0
        })
    });
    wait_until("alice's route is back in Redis", || {
        route_fields(&redis_again.url(), &prefix, me)
            .iter()
            .any(|f| f.starts_with("n1/"))
    });
    // Every subscription drops and comes back: n2 reads alice again, Redis answering.
    let decided = || nodes[1].metric("ringchat_cluster_presence_decided_total");
    let before = decided();
    let mut c = redis::Client::open(redis_again.url())
        .and_then(|c| c.get_connection())
        .expect("connect to the test's Redis");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut c)
        .expect("CLIENT KILL");
    wait_until("n2 decided about alice after reading her again", || {
        decided() > before
    });
    // A publish of n1's follows its rewrite within `routes.flush_ms`: a grace for it to reach
    // bob, then bob's last word on alice must be online.
    let grace_end = Instant::now() + Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        pushes.extend(presence_pushes(&mut b).await);
        let last = pushes.iter().rev().find(|p| p.user_id == me);
        let online = last.is_none_or(|p| p.state() == P::Online);
        if online && Instant::now() >= grace_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob was told alice went offline and never told otherwise: {pushes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed(&mut b, me).await.state(), P::Online);
    drop(a);
}

/// Sends typing in `conv` until `to` sees it from `from_id` (typing is best effort: a client
/// repeats it), skipping other pushes (and earlier typing); within the deadline.
async fn typing_reaches(from: &mut Client, from_id: u64, to: &mut Client, conv: u64) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        from.send(Body::Typing(v1::Typing {
            conversation_id: conv,
            from_user_id: 0,
        }))
        .await
        .unwrap();
        let seen = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let frame = to.next_event_untimed().await.unwrap().expect("open");
                if let Some(Body::Typing(t)) = frame.body
                    && (t.conversation_id, t.from_user_id) == (conv, from_id)
                {
                    return;
                }
            }
        })
        .await;
        if seen.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "typing in {conv} never arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_crosses_nodes_direct_and_in_groups() {
    let nodes = nodes(&["n1", "n2", "n3"], "0");
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    let (mut carol, c) = nodes[2].user("carol").await;

    let direct = conversation_id(a.user_id, b.user_id);
    typing_reaches(&mut alice, a.user_id, &mut bob, direct).await;
    typing_reaches(&mut bob, b.user_id, &mut alice, direct).await;

    let g = create_id(&mut alice, &[b.user_id, c.user_id], v1::JoinPolicy::Open).await;
    // The members' nodes know they are in the group once its messages reach them.
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        match ask(&mut alice, send_body(g, "hello", "hello", &[], false)).await {
            Body::SendAck(_) => break,
            // The group's owner may be taking it over: resend (the same id is stored once).
            Body::Error(e)
                if e.code == ErrorCode::Unavailable as i32 && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms)).await;
            }
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
    typing_reaches(&mut alice, a.user_id, &mut bob, g).await;
    typing_reaches(&mut alice, a.user_id, &mut carol, g).await;
    typing_reaches(&mut carol, c.user_id, &mut bob, g).await;
}
