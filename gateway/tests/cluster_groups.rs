//! Cluster mode: a user's list of groups is changed by the owners of all those groups (real
//! `ringchat` nodes on one PostgreSQL database and Redis). Joins, leaves and hides of one user
//! written by two owners at the same moment must all count: the stored count of the user's
//! groups (what `groups.per_user_max` is checked against) stays the number of its rows. Needs
//! the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{owner, redis_url, start_nodes_with, unique, wait_for_views};
use common::contacts::ask;
use common::groups::{create_id, join, leave};
use futures_util::future::join_all;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1;

const IDS: [&str; 2] = ["n1", "n2"];
/// Groups owned by each node that the user joins.
const GROUPS_PER_OWNER: usize = 24;
/// The user's devices on each node, each changing its share of the groups in turn.
const DEVICES_PER_NODE: usize = 4;

/// The user's stored group count and its rows in `user_groups`, read from the database.
async fn count_and_rows(db: &tokio_postgres::Client, user: u64) -> (i64, i64) {
    let user = user as i64;
    let count = db
        .query_opt(
            "SELECT count FROM user_group_counts WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .map_or(0, |r| i64::from(r.get::<_, i32>(0)));
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM user_groups WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    (count, rows)
}

/// Each device sends `body(g)` for its share of `groups` in turn, all devices at once; every
/// answer must be a GroupOk.
async fn all_at_once(devices: &mut [Client], groups: &[u64], body: fn(u64) -> Body) {
    let n = devices.len();
    let answers = join_all(devices.iter_mut().enumerate().map(|(d, c)| async move {
        let mut out = Vec::new();
        for g in groups.iter().skip(d).step_by(n) {
            out.push((*g, ask(c, body(*g)).await));
        }
        out
    }))
    .await;
    for (g, answer) in answers.into_iter().flatten() {
        assert!(matches!(answer, Body::GroupOk(_)), "group {g}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_leaves_and_hides_written_by_two_owners_at_once_all_count() {
    let db_url = common::store::fresh_database();
    let prefix = format!("rc_groups_{}", unique());
    let nodes: Vec<TestServer> = start_nodes_with(
        &db_url,
        &redis_url(),
        &prefix,
        &IDS,
        &[("GROUPS__WRITES_PER_MIN_MAX", "100000")],
    )
    .into_iter()
    .map(|(_, server)| server)
    .collect();
    wait_for_views(&nodes, IDS.len());
    let (db, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    // Open groups, as many owned by each node.
    let (mut maker, _) = nodes[0].user("maker").await;
    let mut owned: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..8 * GROUPS_PER_OWNER {
        if owned.iter().all(|o| o.len() == GROUPS_PER_OWNER) {
            break;
        }
        let g = create_id(&mut maker, &[], v1::JoinPolicy::Open).await;
        let by = &mut owned[owner(g, &IDS)];
        if by.len() < GROUPS_PER_OWNER {
            by.push(g);
        }
    }
    assert!(
        owned.iter().all(|o| o.len() == GROUPS_PER_OWNER),
        "groups on each owner"
    );

    // The user's devices: each node's change the groups that node owns (no forwarding, so
    // both owners write at the same moment).
    let (first, user) = nodes[0].user("user").await;
    let mut devices: [Vec<Client>; 2] = [vec![first], Vec::new()];
    for (at, node) in nodes.iter().enumerate() {
        while devices[at].len() < DEVICES_PER_NODE {
            let id = format!("dev-{at}-{}", devices[at].len());
            devices[at].push(node.device("user", &id).await.0);
        }
    }
    let [on_first, on_second] = &mut devices;
    let everything = 2 * GROUPS_PER_OWNER as i64;

    tokio::join!(
        all_at_once(on_first, &owned[0], join),
        all_at_once(on_second, &owned[1], join),
    );
    assert_eq!(
        count_and_rows(&db, user.user_id).await,
        (everything, everything),
        "(stored count, rows) after the joins"
    );
    // Leaving keeps the rows (former member) and the count; leaving again hides: both go.
    tokio::join!(
        all_at_once(on_first, &owned[0], leave),
        all_at_once(on_second, &owned[1], leave),
    );
    assert_eq!(
        count_and_rows(&db, user.user_id).await,
        (everything, everything),
        "(stored count, rows) after the leaves"
    );
    tokio::join!(
        all_at_once(on_first, &owned[0], leave),
        all_at_once(on_second, &owned[1], leave),
    );
    assert_eq!(
        count_and_rows(&db, user.user_id).await,
        (0, 0),
        "(stored count, rows) after hiding every group"
    );
}
