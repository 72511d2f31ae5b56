//! Cluster mode: the device rules hold for the user, not per node (real `ringchat` nodes on one
//! PostgreSQL database and Redis). A login of a device replaces its session on any node
//! (`Kicked{REPLACED}`), ListDevices' `online` counts every node, and `login.devices_max`
//! counts the user's sessions on every node. Needs the servers `scripts/test.sh` starts
//! (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use common::cluster::{fresh_nodes, metric_sum, two_nodes_behind_proxy};
use common::{PASSWORD, TestServer, expect_kicked_then_closed, wait_until_async};
use ringchat_backend::cluster::NODE_CLOCKS_APART_MAX_MS;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};

/// A token login of `token` on `node` (the device the token was issued to).
async fn token_login(node: &TestServer, token: &str) -> (Client, v1::LoginOk) {
    let mut c = common::account::hello(node).await;
    let ok = c
        .login(v1::Login {
            credential: Some(v1::login::Credential::Token(token.to_owned())),
            ..Default::default()
        })
        .await
        .unwrap()
        .expect("token login");
    (c, ok)
}

/// `c`'s ListDevices: (device id, online), by device id.
async fn devices(c: &mut Client) -> Vec<(String, bool)> {
    let Body::DeviceList(list) = c
        .request(Body::ListDevices(v1::ListDevices {}))
        .await
        .unwrap()
    else {
        panic!("a device list")
    };
    let mut out: Vec<(String, bool)> = list
        .devices
        .into_iter()
        .map(|d| (d.device_id, d.online))
        .collect();
    out.sort();
    out
}

/// Asks ListDevices on `c` until `device` is `online` (a login reaches Redis within
/// `cluster.routes.flush_ms`).
async fn wait_online(c: &mut Client, device: &str, online: bool) {
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    loop {
        let list = devices(c).await;
        if list.iter().any(|(d, o)| d == device && *o == online) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{device} never became online={online}: {list:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A half-open phone on n1 logs in again with its token through n2: its session on n1 is
/// replaced, as on one node; the other device on n1 stays. A password login of the phone back
/// on n1 replaces the one on n2 the same way (not DEVICE_REVOKED for its older token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_of_a_device_replaces_its_session_on_the_other_node() {
    let nodes = fresh_nodes("devreplace", &["n1", "n2"], &[]);
    let (mut laptop, _) = nodes[0].device("alice", "laptop").await;
    let (mut phone_on_n1, phone) = nodes[0].device("alice", "phone").await;

    let (mut phone_on_n2, _) = token_login(&nodes[1], &phone.token).await;
    assert_eq!(
        expect_kicked_then_closed(&mut phone_on_n1).await,
        KickReason::Replaced
    );
    phone_on_n2.ping().await.expect("the new session stays");
    laptop.ping().await.expect("another device stays");

    let (mut phone_again, _) = nodes[0].device("alice", "phone").await;
    assert_eq!(
        expect_kicked_then_closed(&mut phone_on_n2).await,
        KickReason::Replaced
    );
    phone_again.ping().await.expect("the newest session stays");
    laptop.ping().await.unwrap();
    wait_online(&mut laptop, "phone", true).await;
}

/// n1's `REPLACED` kick of the phone is held up on its way to n2 (a congested link) while the
/// phone, having given up on n1, logs in again through n2: that session opened after the one
/// the kick is for, so the kick, arriving at last, leaves it; the newer login's own kick ends
/// the older session on n1. (The kick's cut was the time it was sent, late by its whole time
/// in transit: it ended the session the device was using.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replaced_kick_spares_a_newer_login_of_the_device_on_another_node() {
    let (nodes, proxy) = two_nodes_behind_proxy("devlate", 1, &[]).await;
    let (mut laptop, _) = nodes[1].device("alice", "laptop").await;
    proxy.hold();
    let (mut phone_on_n1, phone) = nodes[0].device("alice", "phone").await;
    // The new session's open time must be later than the old one's by more than two nodes'
    // clocks may differ (the bound a kick's cut is taken within): that much time passes.
    tokio::time::sleep(std::time::Duration::from_millis(
        NODE_CLOCKS_APART_MAX_MS + 500,
    ))
    .await;
    let (mut phone_on_n2, _) = token_login(&nodes[1], &phone.token).await;
    assert_eq!(
        expect_kicked_then_closed(&mut phone_on_n1).await,
        KickReason::Replaced,
        "the older session ends"
    );
    let spared = || metric_sum(&nodes[1], "ringchat_cluster_kicks_spared_total");
    let spared_before = spared();
    proxy.release();
    wait_until_async(
        "n2 applies n1's kick of the phone and spares the newer session",
        || spared() > spared_before,
    )
    .await;
    phone_on_n2.ping().await.expect("the newer session stays");
    laptop.ping().await.expect("another device stays");
}

/// ListDevices on n2 shows the laptop, connected to n1, online; offline once it has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_devices_shows_a_device_on_another_node_online() {
    let nodes = fresh_nodes("devlist", &["n1", "n2"], &[]);
    let (laptop, _) = nodes[0].device("alice", "laptop").await;
    let (mut phone, _) = nodes[1].device("alice", "phone").await;
    wait_online(&mut phone, "laptop", true).await;
    assert!(
        devices(&mut phone).await.contains(&("phone".into(), true)),
        "the asking device is online"
    );
    drop(laptop);
    wait_online(&mut phone, "laptop", false).await;
}

/// `login.devices_max` = 2: the laptop on n1 and the phone on n2 fill it; a third device on
/// either node is refused, while a login of a device already in (its token, on the other
/// node) replaces it and is let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_max_counts_the_sessions_on_every_node() {
    let nodes = fresh_nodes("devmax", &["n1", "n2"], &[("LOGIN__DEVICES_MAX", "2")]);
    let (mut laptop, laptop_ok) = nodes[0].device("alice", "laptop").await;
    let (mut phone, _) = nodes[1].device("alice", "phone").await;
    // n2 reads the laptop's route (as the login below will).
    wait_online(&mut phone, "laptop", true).await;
    wait_online(&mut laptop, "phone", true).await;

    for node in &nodes {
        let mut tablet = common::account::hello(node).await;
        let refused = tablet
            .login_password("alice", PASSWORD, "tablet")
            .await
            .unwrap()
            .expect_err("a third device");
        assert_eq!(refused.code(), ErrorCode::TooManyDevices, "{refused:?}");
    }

    let (mut laptop_on_n2, _) = token_login(&nodes[1], &laptop_ok.token).await;
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::Replaced
    );
    laptop_on_n2.ping().await.unwrap();
    phone.ping().await.unwrap();
}
