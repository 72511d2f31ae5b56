//! Cluster presence: the aggregation rule (no Redis call), and nodes sharing presence through a
//! real Redis (`scripts/test.sh` starts one: RINGCHAT_TEST_REDIS_URL). Fails without it.

use arc_swap::ArcSwap;
use std::sync::Arc;

use super::*;
use crate::cluster::NodeRecord;
use crate::cluster::test_wait::{redis_url, until};

const USER: UserId = 7;

fn config(url: &str, prefix: &str, node: &str) -> ClusterConfig {
    crate::cluster::test_wait::quick_config(url, prefix, node)
}

fn view_of(nodes: &[&str]) -> ClusterView {
    let mut records: Vec<NodeRecord> = nodes
        .iter()
        .map(|n| NodeRecord {
            node_id: (*n).into(),
            advertise_addr: String::new(),
            client_addrs: Vec::new(),
            started_at_ms: 1,
            heartbeat_at_ms: 1,
            connections: 0,
            cpu_percent: 0.0,
        })
        .collect();
    records.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    ClusterView::new(records, crate::time::now_ms())
}

fn life(node: &str) -> NodeLife {
    NodeLife {
        node_id: node.into(),
        started_at_ms: 1,
    }
}

fn conn(n: u64) -> ConnRef {
    ConnRef { shard: 0, conn: n }
}

fn node(
    url: &str,
    prefix: &str,
    id: &str,
    view: &Arc<ArcSwap<ClusterView>>,
) -> Arc<ClusterPresence> {
    ClusterPresence::new(&config(url, prefix, id), 1, Arc::clone(view)).expect("presence")
}

#[tokio::test]
async fn the_most_present_part_of_the_live_nodes_wins() {
    let view = Arc::new(ArcSwap::from_pointee(view_of(&["a", "b", "c"])));
    // Never connects: nothing here reaches Redis.
    let p = node("redis://127.0.0.1:1", "unit", "a", &view);
    let away = p.set_device(USER, conn(1), Some(DeviceState::Away), 10);
    assert_eq!(away.state, State::Away);
    p.update(USER, 0, [(life("b"), State::Online)].into_iter().collect());
    assert_eq!(p.take_elsewhere(), vec![USER]);
    // What the tracker does next: friends here are told.
    p.publish(USER, p.current(USER));
    assert_eq!(p.current(USER).state, State::Online, "b's device wins");
    p.update(
        USER,
        0,
        [(life("b"), State::Busy), (life("a"), State::Offline)]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        p.current(USER).state,
        State::Busy,
        "this node's own part is its devices'"
    );
    // b leaves the view (it died): its part stops counting at once.
    view.store(Arc::new(view_of(&["a", "c"])));
    assert_eq!(p.current(USER).state, State::Away);
    // A part of b's older life does not count either.
    view.store(Arc::new(view_of(&["a", "b"])));
    p.update(
        USER,
        0,
        [(
            NodeLife {
                node_id: "b".into(),
                started_at_ms: 0,
            },
            State::Online,
        )]
        .into_iter()
        .collect(),
    );
    assert_eq!(p.current(USER).state, State::Away);
    // Offline everywhere: last seen is the latest of this node's and Redis's.
    p.update(USER, 5, Parts::new());
    let gone = p.set_device(USER, conn(1), None, 20);
    assert_eq!((gone.state, gone.last_seen_ms), (State::Offline, 20));
    p.update(USER, 30, Parts::new());
    assert_eq!(p.current(USER).last_seen_ms, 30);
    // Told offline and present nowhere: nothing is kept for the user.
    p.publish(USER, p.current(USER));
    assert_eq!(p.known_users(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_presence_through_redis() {
    let url = redis_url();
    let prefix = format!("pt_{}_{}", std::process::id(), crate::time::now_ms());
    let view = Arc::new(ArcSwap::from_pointee(view_of(&["a", "b", "c"])));
    let a = node(&url, &prefix, "a", &view);
    let b = node(&url, &prefix, "b", &view);
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for p in [&a, &b] {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(Arc::clone(p).run(async {
            let _ = stopped.await;
        })));
    }
    // Both subscribed before the change (a change published earlier is not heard).
    until("both subscribed", || a.subscribed() && b.subscribed()).await;

    a.set_device(USER, conn(1), Some(DeviceState::Online), 100);
    until("b hears that the user is online on a", || {
        b.current(USER).state == State::Online
    })
    .await;
    assert!(b.take_elsewhere().contains(&USER));
    // A device on b too; the one on a leaves: online all along on b.
    b.set_device(USER, conn(2), Some(DeviceState::Away), 200);
    a.set_device(USER, conn(1), None, 300);
    until("a hears that the user is away on b", || {
        a.current(USER).state == State::Away
    })
    .await;
    // What a's tracker does next: friends there are told.
    a.publish(USER, a.current(USER));
    b.set_device(USER, conn(2), None, 400);
    until("a hears that the user left b", || {
        a.current(USER)
            == Shown {
                state: State::Offline,
                last_seen_ms: 400,
            }
    })
    .await;

    // A node that never heard of a user reads them from Redis for a friends list.
    b.set_device(USER + 1, conn(3), Some(DeviceState::Busy), 500);
    let c = node(&url, &prefix, "c", &view);
    until("b's part reached Redis", || {
        a.current(USER + 1).state == State::Busy
    })
    .await;
    let listed = {
        let c = Arc::clone(&c);
        tokio::task::spawn_blocking(move || c.listed(&[USER, USER + 1, USER + 2]))
            .await
            .expect("listed")
    };
    assert_eq!(
        listed,
        vec![
            Shown {
                state: State::Offline,
                last_seen_ms: 400
            },
            Shown {
                state: State::Busy,
                last_seen_ms: 0
            },
            Shown::default(),
        ]
    );

    // Leaving removes the node's parts, and the others hear it.
    let _ = stops.remove(1).send(());
    tasks.remove(1).await.expect("b stops");
    until("a hears that b left", || {
        a.current(USER + 1).state == State::Offline
    })
    .await;
    let _ = stops.remove(0).send(());
    tasks.remove(0).await.expect("a stops");
}

/// Redis loses a node's part of a user (a FLUSHALL; here the user's key is deleted) and another
/// node's change is published without it: that node's friends would be told the user went
/// offline. The owning node's next rewrite finds its part missing and publishes the whole
/// state again, which corrects them (a silent rewrite never would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_finds_its_part_missing_publishes_the_state_again() {
    let url = redis_url();
    let prefix = format!("pr_{}_{}", std::process::id(), crate::time::now_ms());
    let view = Arc::new(ArcSwap::from_pointee(view_of(&["a", "b"])));
    let a = node(&url, &prefix, "a", &view);
    let b = node(&url, &prefix, "b", &view);
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for p in [&a, &b] {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(Arc::clone(p).run(async {
            let _ = stopped.await;
        })));
    }
    until("both subscribed", || a.subscribed() && b.subscribed()).await;
    a.set_device(USER, conn(1), Some(DeviceState::Online), 100);
    until("b hears that the user is online on a", || {
        b.current(USER).state == State::Online
    })
    .await;
    b.take_elsewhere();

    let mut c = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis");
    let _: () = redis::cmd("DEL")
        .arg(wire::presence_key(&prefix, USER))
        .query_async(&mut c)
        .await
        .expect("DEL");
    // A device of the user's on b comes and goes: b publishes the state Redis has now.
    b.set_device(USER, conn(2), Some(DeviceState::Online), 200);
    b.set_device(USER, conn(2), None, 300);
    until("b hears a change of the user", || {
        b.take_elsewhere().contains(&USER)
    })
    .await;
    until("b shows the user online on a again", || {
        b.current(USER).state == State::Online
    })
    .await;

    for (stop, task) in stops.into_iter().zip(tasks) {
        let _ = stop.send(());
        task.await.expect("stops");
    }
}
