//! `Routes` against a real Redis (`scripts/test.sh` starts one: RINGCHAT_TEST_REDIS_URL; the
//! restart test runs a Redis of its own from RINGCHAT_TEST_REDIS_SERVER). Fails without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::*;
use crate::cluster::NodeRecord;
use crate::cluster::test_wait::{eventually, redis_url};
use crate::testkit::OwnRedis;

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("rt_{}_{nanos}", std::process::id())
}

fn config(url: &str, prefix: &str, node: &str) -> ClusterConfig {
    crate::cluster::test_wait::quick_config(url, prefix, node)
}

fn record(node: &str, started_at_ms: u64) -> NodeRecord {
    NodeRecord {
        node_id: node.into(),
        advertise_addr: String::new(),
        client_addrs: Vec::new(),
        started_at_ms,
        heartbeat_at_ms: started_at_ms,
        connections: 0,
        cpu_percent: 0.0,
    }
}

/// A live-node view with these nodes (all started at 1).
fn view(nodes: &[&str]) -> Arc<ArcSwap<ClusterView>> {
    Arc::new(ArcSwap::from_pointee(view_of(nodes)))
}

fn view_of(nodes: &[&str]) -> ClusterView {
    let mut records: Vec<NodeRecord> = nodes.iter().map(|n| record(n, 1)).collect();
    records.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    ClusterView::new(records, crate::time::now_ms())
}

/// A running `Routes`; dropping it aborts its tasks like a node that dies.
struct Node {
    routes: Arc<Routes>,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    fn start(url: &str, prefix: &str, id: &str, view: &Arc<ArcSwap<ClusterView>>) -> Self {
        Self::start_with(&config(url, prefix, id), view)
    }

    fn start_with(config: &ClusterConfig, view: &Arc<ArcSwap<ClusterView>>) -> Self {
        let routes = Routes::new(config, 1, Arc::clone(view)).expect("routes");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&routes).run(async {
            let _ = stopped.await;
        }));
        Self {
            routes,
            task,
            stop: Some(stop),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        (&mut self.task).await.expect("routes task");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

async fn route(url: &str, prefix: &str, user: UserId) -> Vec<(String, String)> {
    let mut c = conn(url).await;
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(wire::route_key(prefix, user))
        .query_async(&mut c)
        .await
        .expect("HGETALL");
    fields.sort();
    fields
}

/// Nodes n1 and n2, each subscribed and trusted.
async fn two_trusted_nodes(url: &str, prefix: &str, v: &Arc<ArcSwap<ClusterView>>) -> (Node, Node) {
    let a = Node::start(url, prefix, "n1", v);
    let b = Node::start(url, prefix, "n2", v);
    for n in [&a, &b] {
        eventually("subscribed and trusted", || async {
            n.routes.trusted().then_some(())
        })
        .await;
    }
    (a, b)
}

fn c(shard: u16, conn: u64) -> ConnRef {
    ConnRef { shard, conn }
}

/// `nodes_of` as (node, users) pairs, sorted.
fn dests(routes: &Routes, users: &[UserId]) -> (Vec<(String, Vec<UserId>)>, bool) {
    let d = routes.nodes_of(users);
    let mut nodes: Vec<(String, Vec<UserId>)> = d
        .nodes
        .into_iter()
        .map(|d| {
            let mut u = d.users;
            u.sort_unstable();
            (d.node_id.to_string(), u)
        })
        .collect();
    nodes.sort();
    (nodes, d.everywhere)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_set_refreshed_past_its_ttl_and_removed_on_close() {
    let (url, prefix) = (redis_url(), unique());
    let node = Node::start(&url, &prefix, "n1", &view(&["n1"]));
    node.routes.opened(7, c(0, 1), "phone", "PLATFORM_IOS");
    node.routes.opened(7, c(1, 2), "laptop", "PLATFORM_WEB");
    let want = vec![
        ("n1/1/0/1".to_owned(), "PLATFORM_IOS/phone".to_owned()),
        ("n1/1/1/2".to_owned(), "PLATFORM_WEB/laptop".to_owned()),
    ];
    let got = eventually("both devices in Redis", || async {
        let r = route(&url, &prefix, 7).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(got, want);
    let mut r = conn(&url).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(wire::route_key(&prefix, 7))
        .query_async(&mut r)
        .await
        .expect("PTTL");
    assert!((1..=1_000).contains(&ttl), "{ttl}");

    // Three TTLs later the route is still there: the node refreshes it.
    let until = Instant::now() + Duration::from_millis(3_000);
    eventually("three TTLs pass with the route kept", || async {
        assert_eq!(
            route(&url, &prefix, 7).await,
            want,
            "refreshed, never expired"
        );
        (Instant::now() >= until).then_some(())
    })
    .await;

    node.routes.closed(7, c(0, 1));
    eventually("one device left", || async {
        (route(&url, &prefix, 7).await == want[1..]).then_some(())
    })
    .await;
    node.routes.closed(7, c(1, 2));
    eventually("the route gone at the last close", || async {
        route(&url, &prefix, 7).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(node.routes.local_users(), 0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_routes_expire_and_a_stopped_nodes_are_removed() {
    let (url, prefix) = (redis_url(), unique());
    let v = view(&["n1", "n2"]);
    let dead = Node::start(&url, &prefix, "n1", &v);
    let stopped = Node::start(&url, &prefix, "n2", &v);
    dead.routes.opened(1, c(0, 1), "d", "PLATFORM_IOS");
    stopped.routes.opened(2, c(0, 1), "d", "PLATFORM_IOS");
    for user in [1, 2] {
        eventually("routes written", || async {
            (!route(&url, &prefix, user).await.is_empty()).then_some(())
        })
        .await;
    }
    drop(dead); // Killed: nothing removes its route but the TTL.
    stopped.stop().await;
    assert!(route(&url, &prefix, 2).await.is_empty(), "removed on stop");
    eventually("the dead node's route expires", || async {
        route(&url, &prefix, 1).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_learns_from_redis_and_follows_published_changes() {
    let (url, prefix) = (redis_url(), unique());
    let v = view(&["n1", "n2", "n3"]);
    let (a, b) = two_trusted_nodes(&url, &prefix, &v).await;
    b.routes.opened(10, c(0, 1), "d", "PLATFORM_IOS");
    a.routes.opened(11, c(0, 1), "d", "PLATFORM_IOS");
    eventually("bob's route written", || async {
        (!route(&url, &prefix, 10).await.is_empty()).then_some(())
    })
    .await;

    // Unknown users go to every other live node while the cache is filled; then precisely.
    let both = vec![
        ("n2".to_owned(), vec![10, 12]),
        ("n3".to_owned(), vec![10, 12]),
    ];
    assert_eq!(dests(&a.routes, &[10, 12]), (both, true));
    eventually("bob on n2, carol nowhere", || async {
        (dests(&a.routes, &[10, 12]) == (vec![("n2".into(), vec![10])], false)).then_some(())
    })
    .await;
    assert!(dests(&a.routes, &[11]).1, "a local user is not cached yet");
    eventually("this node's own users leave it out", || async {
        (dests(&a.routes, &[11]) == (vec![], false)).then_some(())
    })
    .await;

    // Changes arrive through pub/sub into the cached entries.
    b.routes.opened(12, c(0, 2), "d", "PLATFORM_WEB");
    eventually("carol's login reaches n1", || async {
        (dests(&a.routes, &[10, 12]) == (vec![("n2".into(), vec![10, 12])], false)).then_some(())
    })
    .await;
    b.routes.closed(10, c(0, 1));
    eventually("bob's close reaches n1", || async {
        (dests(&a.routes, &[10, 12]) == (vec![("n2".into(), vec![12])], false)).then_some(())
    })
    .await;

    // A node out of the view gets nothing, at once; back in the view it does again.
    v.store(Arc::new(view_of(&["n1", "n3"])));
    assert_eq!(dests(&a.routes, &[10, 12]), (vec![], false));
    v.store(Arc::new(view_of(&["n1", "n2", "n3"])));
    assert_eq!(
        dests(&a.routes, &[12]),
        (vec![("n2".into(), vec![12])], false)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_every_live_node_is_a_destination() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let node = Node::start(&url, "down", "n1", &view(&["n1", "n2", "n3"]));
    node.routes.opened(1, c(0, 1), "d", "PLATFORM_IOS");
    let all = vec![("n2".to_owned(), vec![1, 2]), ("n3".to_owned(), vec![1, 2])];
    assert_eq!(dests(&node.routes, &[1, 2]), (all.clone(), true));
    // Still so after the writes and the subscription have failed a few times.
    let until = Instant::now() + Duration::from_millis(1_000);
    eventually("a second passes", || async {
        assert_eq!(dests(&node.routes, &[1, 2]), (all.clone(), true));
        (Instant::now() >= until).then_some(())
    })
    .await;
    assert!(!node.routes.trusted());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_routes_and_the_cache_are_rebuilt() {
    let mut redis = OwnRedis::start_on_free_port();
    let port = redis.port;
    let url = redis.url();
    let v = view(&["n1", "n2"]);
    let a = Node::start(&url, "rs", "n1", &v);
    let b = Node::start(&url, "rs", "n2", &v);
    b.routes.opened(5, c(0, 1), "d", "PLATFORM_IOS");
    let precise = (vec![("n2".to_owned(), vec![5])], false);
    eventually("n1 knows where user 5 is", || async {
        (dests(&a.routes, &[5]) == precise).then_some(())
    })
    .await;

    redis.stop();
    eventually("the cache is not trusted with Redis gone", || async {
        dests(&a.routes, &[5]).1.then_some(())
    })
    .await;
    let _redis = OwnRedis::start(port);
    eventually("n2 writes its route into the empty Redis", || async {
        let mut c = redis::Client::open(url.as_str())
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(wire::route_key("rs", 5))
            .query_async(&mut c)
            .await
            .ok()?;
        (fields == ["n2/1/0/1"]).then_some(())
    })
    .await;
    eventually("n1 answers precisely again", || async {
        (dests(&a.routes, &[5]) == precise).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_key_lost_under_a_live_subscription_is_found_again_after_a_refresh() {
    let (url, prefix) = (redis_url(), unique());
    let v = view(&["n1", "n2"]);
    let (a, b) = two_trusted_nodes(&url, &prefix, &v).await;
    b.routes.opened(20, c(0, 1), "d", "PLATFORM_IOS");
    let fields = eventually("the route written", || async {
        let fields = route(&url, &prefix, 20).await;
        (!fields.is_empty()).then_some(fields)
    })
    .await;
    // n2 stops refreshing (its task ends; it stays in the view), then Redis loses the key
    // with n1's subscription up (a failover that lost writes, a flush): n1's fill reads
    // "on no node".
    drop(b);
    let key = wire::route_key(&prefix, 20);
    let mut redis = conn(&url).await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    eventually("n1 caches 'nowhere'", || async {
        (dests(&a.routes, &[20]) == (vec![], false)).then_some(())
    })
    .await;
    // n2's next refresh writes the route again: n1 believes "nowhere" for a refresh at most.
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for (field, value) in &fields {
        hset.arg(field).arg(value);
    }
    let _: () = hset.query_async(&mut redis).await.expect("HSET");
    eventually("n1 finds the user on n2 again", || async {
        (dests(&a.routes, &[20]) == (vec![("n2".into(), vec![20])], false)).then_some(())
    })
    .await;
    a.stop().await;
}

/// Redis restarted empty while a node had nothing to write (so none of its writes failed): it
/// rewrites its routes as soon as its route-change subscription is back, not at its next
/// `refresh_ms` tick (a minute here), so the other nodes, which trust their caches
/// `refresh_ms` after their own subscription is back, find them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_a_node_rewrites_its_routes_once_resubscribed() {
    let mut redis = OwnRedis::start_on_free_port();
    let port = redis.port;
    let url = redis.url();
    let v = view(&["n1", "n2"]);
    let mut slow = config(&url, "rr", "n2");
    slow.routes.ttl_ms = 120_000;
    slow.routes.refresh_ms = 60_000;
    let b = Routes::new(&slow, 1, Arc::clone(&v)).expect("routes");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Arc::clone(&b).run(async {
        let _ = stopped.await;
    }));
    let subscribed =
        |r: &Routes| r.trusted_from_ms.load(std::sync::atomic::Ordering::Relaxed) != NOT_SUBSCRIBED;
    eventually("n2 subscribed", || async { subscribed(&b).then_some(()) }).await;
    b.opened(5, c(0, 1), "d", "PLATFORM_IOS");
    eventually("n2 writes its route", || async {
        (!route(&url, "rr", 5).await.is_empty()).then_some(())
    })
    .await;

    redis.stop();
    eventually("n2 sees its subscription lost", || async {
        (!subscribed(&b)).then_some(())
    })
    .await;
    let _redis = OwnRedis::start(port);
    eventually("n2's route is back in the empty Redis", || async {
        (route(&url, "rr", 5).await.len() == 1).then_some(())
    })
    .await;
    let _ = stop.send(());
    task.await.expect("routes task");
}

/// A node out of the view (cut from Redis past `node_ttl_ms`, still serving its users) keeps
/// its routes until it has been out of the view for `ttl_ms`, counted from when it left, not
/// from its start (a node that had run longer than `ttl_ms` lost them the moment it left, and
/// the entry filled without it sent nothing to it for ever once it was back). Past that its
/// fields are pruned; when it comes back (rewriting them, which publishes nothing), an entry
/// filled without it is asked again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_the_view_keeps_its_routes_until_long_gone_and_is_found_when_back() {
    let (url, prefix) = (redis_url(), unique());
    let v = view(&["n1", "n2"]);
    let mut a_config = config(&url, &prefix, "n1");
    a_config.routes.ttl_ms = 10_000;
    // n2 rewrites its routes rarely: what n1's fills delete stays deleted.
    let mut b_config = config(&url, &prefix, "n2");
    b_config.routes.ttl_ms = 120_000;
    b_config.routes.refresh_ms = 60_000;
    let a = Node::start_with(&a_config, &v);
    let b = Node::start_with(&b_config, &v);
    eventually("n1 subscribed and trusted", || async {
        a.routes.trusted().then_some(())
    })
    .await;
    let now = crate::time::now_ms;
    a.routes.set_view(view_of(&["n1", "n2"]), now());
    for user in [30, 31] {
        a.routes.opened(user, c(0, user), "d", "PLATFORM_IOS");
        b.routes.opened(user, c(0, user), "d", "PLATFORM_IOS");
        eventually("both routes written", || async {
            (route(&url, &prefix, user).await.len() == 2).then_some(())
        })
        .await;
    }

    // n2 leaves n1's view; n1 fills user 30 meanwhile.
    a.routes.set_view(view_of(&["n1"]), now());
    assert_eq!(dests(&a.routes, &[30]), (vec![], true), "a miss");
    eventually("n1 caches user 30", || async {
        (dests(&a.routes, &[30]) == (vec![], false)).then_some(())
    })
    .await;
    a.routes.set_view(view_of(&["n1", "n2"]), now());
    assert_eq!(
        dests(&a.routes, &[30]),
        (vec![("n2".into(), vec![30])], false),
        "n2 back in the view gets user 30's pushes"
    );
    assert_eq!(route(&url, &prefix, 30).await.len(), 2, "n2's route kept");

    // Out of the view for longer than ttl_ms (it left 20 s ago by n1's clock): its fields go.
    a.routes.set_view(view_of(&["n1"]), now() - 20_000);
    assert_eq!(dests(&a.routes, &[31]), (vec![], true), "a miss");
    eventually("n2's route of user 31 pruned", || async {
        (route(&url, &prefix, 31).await.len() == 1).then_some(())
    })
    .await;
    // n2 comes back and rewrites its route (as after a cut from Redis: nothing published).
    let field = wire::field("n2", 1, c(0, 31));
    let mut redis = conn(&url).await;
    let _: () = redis::cmd("HSET")
        .arg(wire::route_key(&prefix, 31))
        .arg(&field)
        .arg("PLATFORM_IOS/d")
        .query_async(&mut redis)
        .await
        .expect("HSET");
    a.routes.set_view(view_of(&["n1", "n2"]), now());
    assert_eq!(
        dests(&a.routes, &[31]),
        (vec![("n2".into(), vec![31])], true),
        "the entry filled without n2 is asked again (every node meanwhile)"
    );
    eventually("n1 finds user 31 on n2 again", || async {
        (dests(&a.routes, &[31]) == (vec![("n2".into(), vec![31])], false)).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}
