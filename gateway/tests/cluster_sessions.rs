//! Cluster mode: ending a user's sessions ends them on every node (real `ringchat` nodes on one
//! PostgreSQL database and Redis). A revoked device, a changed password and an operator's
//! disable are asked on one node; the user's sessions on the others get the same kick. Needs
//! the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use common::cluster::{fresh_nodes, metric_sum, two_nodes_behind_proxy};
use common::proxy::CutProxy;
use common::{PASSWORD, TestServer, expect_kicked_then_closed, wait_until_async};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, KickReason};
use serde_json::json;

/// Dials to a cut peer back off briefly, so its link comes back soon after `restore`.
const FAST: [(&str, &str); 1] = [("CLUSTER__PEER_BACKOFF_MAX_MS", "200")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_and_a_disabled_account_are_kicked_on_every_node() {
    let nodes = fresh_nodes("sessions", &["n1", "n2"], &[]);
    let (mut laptop, alice) = nodes[0].device("alice", "laptop").await;
    let (mut phone, _) = nodes[1].device("alice", "phone").await;
    let (mut tablet, _) = nodes[1].device("alice", "tablet").await;

    // The laptop, on n1, revokes the phone, on n2: the phone's session there ends.
    let reply = laptop
        .request(Body::RevokeDevice(v1::RevokeDevice {
            device_id: "phone".into(),
        }))
        .await
        .unwrap();
    let Body::RevokeDeviceOk(ok) = reply else {
        panic!("revoked: {reply:?}")
    };
    assert_eq!(ok.tokens_revoked, 1);
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::DeviceRevoked
    );
    tablet.ping().await.unwrap();

    // A login that named no device is a device too: revoking it leaves the others alone.
    let (mut nameless, _) = Client::signup(nodes[1].tcp, "alice", PASSWORD, "")
        .await
        .expect("a login with no device id");
    let reply = laptop
        .request(Body::RevokeDevice(v1::RevokeDevice {
            device_id: String::new(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::RevokeDeviceOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut nameless).await,
        KickReason::DeviceRevoked
    );
    tablet.ping().await.unwrap();

    // The watch's token, used on n2 as well, is the same device: its session on n1 is
    // replaced (cluster_devices.rs); the copy logs out on n2, and no session of it is left.
    let (mut watch, watch_ok) = nodes[0].device("alice", "watch").await;
    let mut copy = common::account::hello(&nodes[1]).await;
    let reply = copy
        .request(Body::Login(v1::Login {
            credential: Some(v1::login::Credential::Token(watch_ok.token.clone())),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut watch).await,
        KickReason::Replaced
    );
    let reply = copy.request(Body::Logout(v1::Logout {})).await.unwrap();
    assert!(matches!(reply, Body::LogoutOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut copy).await,
        KickReason::LoggedOut
    );
    tablet.ping().await.unwrap();

    // A login that named no device, its token used on n2 as well, beside another nameless
    // login there: it logs out on n1, and its copy on n2 ends, the other stays.
    let (mut nameless, nameless_ok) = Client::signup(nodes[0].tcp, "alice", PASSWORD, "")
        .await
        .expect("a login with no device id");
    let mut copy = common::account::hello(&nodes[1]).await;
    let reply = copy
        .request(Body::Login(v1::Login {
            credential: Some(v1::login::Credential::Token(nameless_ok.token.clone())),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    let (mut other, _) = Client::signup(nodes[1].tcp, "alice", PASSWORD, "")
        .await
        .expect("another login with no device id");
    let reply = nameless.request(Body::Logout(v1::Logout {})).await.unwrap();
    assert!(matches!(reply, Body::LogoutOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut copy).await,
        KickReason::LoggedOut
    );
    other.ping().await.expect("the other nameless login stays");

    // The laptop changes the password: the tablet, on n2, is signed out.
    let reply = laptop
        .request(Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "a new password 2".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::ChangePasswordOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut tablet).await,
        KickReason::PasswordChanged
    );
    let (mut tablet, _) = Client::signup(nodes[1].tcp, "alice", "a new password 2", "tablet")
        .await
        .expect("login with the new password");

    // An operator disables alice on n1: her sessions on both nodes end.
    let admin = nodes[0].api_key("ops", "admin");
    let r = admin.post(
        &format!("/api/users/{}/disable", alice.user_id),
        json!({"reason": "abuse"}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        expect_kicked_then_closed(&mut tablet).await,
        KickReason::AccountDisabled
    );
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::AccountDisabled
    );
}

/// A password login revokes tokens (the device's older one; past `login.device_tokens_max` the
/// device seen longest ago): their sessions on the other node end too, not only those here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_tokens_a_login_revoked_end_on_every_node() {
    let nodes = fresh_nodes(
        "loginrevoke",
        &["n1", "n2"],
        &[
            ("LOGIN__DEVICES_MAX", "3"),
            ("LOGIN__DEVICE_TOKENS_MAX", "3"),
        ],
    );
    // The phone logs in on n2, then again (a password login) on n1: its older token is
    // revoked, and its session on n2 ends, replaced (as on one node).
    let (mut phone_on_n2, _) = nodes[1].device("alice", "phone").await;
    let (mut phone, _) = nodes[0].device("alice", "phone").await;
    assert_eq!(
        expect_kicked_then_closed(&mut phone_on_n2).await,
        KickReason::Replaced
    );
    // Sessions count on every node (`login.devices_max`): the phone's closed one on n2 counts
    // among n2's until its close has reached n2, and so would the desk's below.
    let n2_empty = || nodes[1].metric("ringchat_online_users") == 0.0;
    wait_until_async("n2 has closed the phone's session", n2_empty).await;
    // The desk signs in on n2 and goes: a device with a token, seen after the phone's login.
    drop(nodes[1].device("alice", "desk").await);
    wait_until_async("n2 has closed the desk's session", n2_empty).await;
    // The laptop logs in on n2, then the tablet, one device past the three kept: the phone
    // goes (n2 keeps the device online on it, the laptop, and knows of the phone only its
    // last login), and its session on n1 ends.
    let (mut laptop, _) = nodes[1].device("alice", "laptop").await;
    let (mut tablet, _) = nodes[1].device("alice", "tablet").await;
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::DeviceRevoked
    );
    laptop
        .ping()
        .await
        .expect("the device online where the login was stays");
    tablet.ping().await.unwrap();
}

/// Cuts n1's link to n2 (once up: n1 dials a peer on first use) and waits until n1 has seen
/// it go down.
async fn cut_link(nodes: &[TestServer], proxy: &CutProxy) {
    wait_until_async("n1's link to n2 is up", || {
        metric_sum(&nodes[0], "ringchat_cluster_peer_links_up_total") > 0.0
    })
    .await;
    let downs = |n: &TestServer| metric_sum(n, "ringchat_cluster_peer_links_down_total");
    let before = downs(&nodes[0]);
    proxy.cut();
    wait_until_async("n1 sees its link to n2 go down", || {
        downs(&nodes[0]) > before
    })
    .await;
}

/// A password change on n1 while n1's link to n2 is down (a proxy in front of n2's gRPC
/// listener is cut): the kick is not lost; once the link is back, the session on n2 ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_sent_while_the_link_is_down_ends_the_session_once_it_is_back() {
    let (nodes, proxy) = two_nodes_behind_proxy("kickdown", 1, &FAST).await;
    let (mut laptop, _) = nodes[0].device("alice", "laptop").await;
    let (mut phone, _) = nodes[1].device("alice", "phone").await;
    let (mut tablet, _) = nodes[1].device("alice", "tablet").await;
    // The link n1 -> n2 is up (a revoked tablet on n2 is kicked through it).
    let reply = laptop
        .request(Body::RevokeDevice(v1::RevokeDevice {
            device_id: "tablet".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::RevokeDeviceOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut tablet).await,
        KickReason::DeviceRevoked
    );
    cut_link(&nodes, &proxy).await;
    let reply = laptop
        .request(Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "a new password 2".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::ChangePasswordOk(_)), "{reply:?}");
    proxy.restore();
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::PasswordChanged
    );
    // The laptop, which changed it, stays.
    laptop.ping().await.unwrap();
}

/// An operator kicks every session of alice on n1 while n1's link to n2 is down; alice then
/// logs in again on n2. When the link is back, n1 sends the kick again: it ends the session
/// that was there when it was issued, not the login made since (an operator's kick checks
/// nothing in the store: before, it ended whatever it named on arrival).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_kick_sent_again_spares_a_login_made_after_it() {
    let (nodes, proxy) = two_nodes_behind_proxy("kickfresh", 1, &FAST).await;
    let (_laptop, alice) = nodes[0].device("alice", "laptop").await;
    let (mut phone, _) = nodes[1].device("alice", "phone").await;
    let (mut watch, _) = nodes[1].device("alice", "watch").await;
    let admin = nodes[0].api_key("ops", "admin");
    // A kick of a device alice does not use: n1 links to n2 for it.
    let r = admin.post(
        &format!("/api/users/{}/kick", alice.user_id),
        json!({"device_id": "none"}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    cut_link(&nodes, &proxy).await;
    let downs_at_kick = metric_sum(&nodes[0], "ringchat_cluster_peer_links_down_total");
    let r = admin.post(&format!("/api/users/{}/kick", alice.user_id), json!({}));
    assert_eq!(r.0, 200, "{}", r.1);
    // The receiver's cut is late by the kick's time in transit (tens of ms on a loaded test
    // machine): the logins below come after n1 has failed to dial n2 twice more since the
    // kick (a backoff pause of 50 ms or more each), well clear of it.
    wait_until_async("n1 dials n2 twice more, in vain", || {
        metric_sum(&nodes[0], "ringchat_cluster_peer_links_down_total") >= downs_at_kick + 2.0
    })
    .await;
    // After the kick: new logins on n2, on a device of their own and on the watch's (which
    // replaces the watch's session from before).
    let (mut tablet, _) = nodes[1].device("alice", "tablet").await;
    let (mut watch_again, _) = nodes[1].device("alice", "watch").await;
    assert_eq!(
        expect_kicked_then_closed(&mut watch).await,
        KickReason::Replaced
    );
    proxy.restore();
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::KickedByOperator,
        "the session there when the kick was issued ends"
    );
    // n2 confirms a kick after handing its session kicks to the shards: once n1 has no kick
    // waiting for n2, any kick of the tablet is on its way to it.
    wait_until_async("n2 confirms the kick to n1", || {
        nodes[0]
            .metrics()
            .iter()
            .any(|(k, v)| k.starts_with("ringchat_cluster_kicks_pending_users{") && *v == 0.0)
    })
    .await;
    tablet
        .ping()
        .await
        .expect("the login made after the kick stays");
    watch_again
        .ping()
        .await
        .expect("so does the watch's new login");
    assert!(metric_sum(&nodes[1], "ringchat_cluster_kicks_spared_total") >= 1.0);
}

/// The nodes share one audit log in the store of record, each with its own writer: an entry
/// written on one node never takes the id of one written on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_on_every_node_are_each_kept_in_the_shared_audit_log() {
    const LOGINS_PER_NODE: usize = 6;
    let nodes = fresh_nodes("audit", &["n1", "n2"], &[]);
    let mut users = Vec::new();
    for i in 0..LOGINS_PER_NODE {
        for node in &nodes {
            users.push(node.user(&format!("u{}{i}", users.len())).await.1.user_id);
        }
    }
    let admin = nodes[0].api_key("ops", "admin");
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    loop {
        let r = admin.get("/api/audit?limit=200");
        assert_eq!(r.0, 200, "{}", r.1);
        let items = r.1["items"].as_array().unwrap().clone();
        let logged_in: std::collections::BTreeSet<String> = items
            .iter()
            .filter(|e| e["action"] == "user.login")
            .map(|e| e["actor"].as_str().unwrap_or_default().to_owned())
            .collect();
        let ids: std::collections::BTreeSet<u64> =
            items.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), items.len(), "ids taken twice: {items:?}");
        if users
            .iter()
            .all(|u| logged_in.contains(&format!("user:{u}")))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logins missing from the audit log: {logged_in:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
