//! Push tokens follow logins: a device's token is forgotten when it logs out, is revoked by
//! another device, is signed out by a password change, or its account is disabled; a device
//! that signs in again is not pushed to until it registers anew. And a token registered over
//! WebSocket (protobuf JSON, as the chat page speaks) is pushed to like one registered over
//! TCP. Against the real binary and a real HTTP receiver on loopback (`common/webhook.rs`).

mod common;

use std::time::Duration;

use common::admin::AdminClient;
use common::contacts::{ask, befriend};
use common::webhook::{Received, WebhookSink, register_token};
use common::ws::WsClient;
use common::{PASSWORD, TestServer, wait_until};
use ringchat_bench::client::{Client, password_login};
use ringchat_proto::Body;
use ringchat_proto::v1;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);
const NEW_PASSWORD: &str = "another horse, another battery";

fn start(sink: &WebhookSink) -> TestServer {
    let url = sink.url();
    TestServer::start(&[
        ("PUSH__URL", url.as_str()),
        ("PUSH__SECRET", "a push gateway secret of some length"),
    ])
}

/// Logs `device` of bob in with `password` (no token registered).
async fn bob(server: &TestServer, device: &str, password: &str) -> Client {
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let reply = c
        .request(Body::Login(password_login("bob", password, device)))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    c
}

/// Alice, and bob's two devices (`bob-d1`, `bob-d2`) with their tokens `tok-d1` and
/// `tok-d2` registered, friends with alice: `(alice, alice's id, bob's id, d1, d2)`.
async fn alice_and_bobs_two_devices(server: &TestServer) -> (Client, u64, u64, Client, Client) {
    let (mut alice, a) = server.user("alice").await;
    let (mut d1, b) = server.device("bob", "bob-d1").await;
    let b = b.user_id;
    befriend(&mut alice, a.user_id, &mut d1, b).await;
    register_token(&mut d1, "tok-d1").await;
    let mut d2 = bob(server, "bob-d2", PASSWORD).await;
    register_token(&mut d2, "tok-d2").await;
    (alice, a.user_id, b, d1, d2)
}

fn push_for(r: &Received, user: u64, seq: u64) -> Option<Value> {
    r.json()["pushes"]
        .as_array()?
        .iter()
        .find(|p| p["user_id"] == user && p["seq"] == seq)
        .cloned()
}

/// Waits until `user` has no session, sends `user` a message from `alice` and returns the
/// `(device, token)` pairs its push names.
async fn pushed_devices(
    admin: &AdminClient,
    sink: &WebhookSink,
    alice: &mut Client,
    user: u64,
    label: &str,
) -> Vec<(String, String)> {
    wait_until("bob to be offline", || {
        admin.get(&format!("/api/users/{user}")).1["sessions_online"] == 0
    });
    let sent = alice.send_text(user, label, label).await.unwrap().unwrap();
    let got = sink.wait_for(label, DEADLINE, |r| push_for(r, user, sent.seq).is_some());
    let push = push_for(&got, user, sent.seq).unwrap();
    push["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().to_owned(),
                d["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(d, t)| ((*d).to_owned(), (*t).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_signed_out_device_loses_its_push_token() {
    let sink = WebhookSink::start();
    let server = start(&sink);
    let ops = server.api_key("ops", "admin");
    let (mut alice, _, b, d1, d2) = alice_and_bobs_two_devices(&server).await;
    drop((d1, d2));
    let both = pushed_devices(&ops, &sink, &mut alice, b, "before").await;
    assert_eq!(both, pairs(&[("bob-d1", "tok-d1"), ("bob-d2", "tok-d2")]));

    // Logout: d1 signs in again but is not pushed to until it registers anew.
    let mut d1 = bob(&server, "bob-d1", PASSWORD).await;
    assert_eq!(
        ask(&mut d1, Body::Logout(v1::Logout {})).await,
        Body::LogoutOk(v1::LogoutOk {})
    );
    drop(d1);
    drop(bob(&server, "bob-d1", PASSWORD).await);
    let got = pushed_devices(&ops, &sink, &mut alice, b, "after-logout").await;
    assert_eq!(got, pairs(&[("bob-d2", "tok-d2")]));

    // Revoked by another device.
    let mut d1 = bob(&server, "bob-d1", PASSWORD).await;
    register_token(&mut d1, "tok-d1-b").await;
    let mut d2 = bob(&server, "bob-d2", PASSWORD).await;
    register_token(&mut d2, "tok-d2").await;
    let reply = ask(
        &mut d2,
        Body::RevokeDevice(v1::RevokeDevice {
            device_id: "bob-d1".into(),
        }),
    )
    .await;
    assert!(matches!(reply, Body::RevokeDeviceOk(_)), "{reply:?}");
    drop((d1, d2));
    drop(bob(&server, "bob-d1", PASSWORD).await);
    let got = pushed_devices(&ops, &sink, &mut alice, b, "after-revoke").await;
    assert_eq!(got, pairs(&[("bob-d2", "tok-d2")]));

    // Disabled by an operator: every device's token goes.
    let mut d1 = bob(&server, "bob-d1", PASSWORD).await;
    register_token(&mut d1, "tok-d1-c").await;
    let (status, body) = ops.post(&format!("/api/users/{b}/disable"), json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = ops.post(&format!("/api/users/{b}/enable"), json!({}));
    assert_eq!(status, 200, "{body}");
    drop(d1);
    drop(bob(&server, "bob-d1", PASSWORD).await);
    let mut d2 = bob(&server, "bob-d2", PASSWORD).await;
    register_token(&mut d2, "tok-d2-c").await;
    drop(d2);
    let got = pushed_devices(&ops, &sink, &mut alice, b, "after-disable").await;
    assert_eq!(got, pairs(&[("bob-d2", "tok-d2-c")]), "d2's new token only");

    // A password change signs the other devices out, and their tokens go; this one's stays.
    let mut d1 = bob(&server, "bob-d1", PASSWORD).await;
    register_token(&mut d1, "tok-d1-d").await;
    let mut d2 = bob(&server, "bob-d2", PASSWORD).await;
    register_token(&mut d2, "tok-d2-c").await;
    let reply = ask(
        &mut d2,
        Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: NEW_PASSWORD.into(),
        }),
    )
    .await;
    assert!(matches!(reply, Body::ChangePasswordOk(_)), "{reply:?}");
    drop((d1, d2));
    drop(bob(&server, "bob-d1", NEW_PASSWORD).await);
    let got = pushed_devices(&ops, &sink, &mut alice, b, "after-password").await;
    assert_eq!(got, pairs(&[("bob-d2", "tok-d2-c")]));

    // A new password login of a device is a new login: its earlier token (say of a login that
    // expired, or was pushed out by newer devices) is not pushed to until it registers anew.
    let mut d1 = bob(&server, "bob-d1", NEW_PASSWORD).await;
    register_token(&mut d1, "tok-d1-e").await;
    drop(d1);
    drop(bob(&server, "bob-d2", NEW_PASSWORD).await);
    let got = pushed_devices(&ops, &sink, &mut alice, b, "after-new-login").await;
    assert_eq!(got, pairs(&[("bob-d1", "tok-d1-e")]));
}

#[tokio::test]
async fn a_token_registered_over_websocket_is_pushed_to() {
    let sink = WebhookSink::start();
    let server = start(&sink);
    let ops = server.api_key("ops", "viewer");
    let (mut alice, a) = server.user("alice").await;
    let (mut tcp_bob, b) = server.device("bob", "bob-tcp").await;
    let b = b.user_id;
    befriend(&mut alice, a.user_id, &mut tcp_bob, b).await;
    drop(tcp_bob);

    let mut ws = WsClient::connect(server.ws).await;
    ws.request_json(r#"{"requestId":"1","hello":{"protocolVersion":1,"clientName":"web"}}"#)
        .await;
    let login = ws
        .request_json(&format!(
            r#"{{"requestId":"2","login":{{"username":"bob","password":"{PASSWORD}","deviceId":"bob-web","platform":"PLATFORM_WEB"}}}}"#
        ))
        .await;
    assert!(login["loginOk"]["token"].is_string(), "{login}");
    let ok = ws
        .request_json(r#"{"requestId":"3","registerPushToken":{"provider":"PUSH_PROVIDER_WEB_PUSH","token":"https://push.example/sub/abc"}}"#)
        .await;
    assert_eq!(ok["pushTokenOk"]["registered"], true, "{ok}");
    drop(ws);

    let got = pushed_devices(&ops, &sink, &mut alice, b, "to-web").await;
    assert_eq!(got, pairs(&[("bob-web", "https://push.example/sub/abc")]));
    let provider = sink
        .received()
        .iter()
        .filter_map(|r| r.json()["pushes"].as_array().cloned())
        .flatten()
        .find(|p| p["user_id"] == b)
        .map(|p| p["devices"][0]["provider"].clone());
    assert_eq!(provider, Some(json!("web_push")));
}

/// The push gateway's answer may name dead tokens: those of the request are forgotten (the
/// device gets no push until it registers anew); one the request did not carry is not, even
/// if it exists.
#[tokio::test]
async fn tokens_the_push_gateway_names_dead_are_forgotten() {
    let sink = WebhookSink::start();
    let server = start(&sink);
    let ops = server.api_key("ops", "viewer");
    let (mut alice, a, b, d1, d2) = alice_and_bobs_two_devices(&server).await;
    let (mut carol, c) = server.device("carol", "carol-d1").await;
    let c = c.user_id;
    befriend(&mut alice, a, &mut carol, c).await;
    register_token(&mut carol, "tok-carol").await;
    drop((d1, d2, carol));
    sink.answer_body(
        &json!({"dead_tokens": [
            {"user_id": b, "device_id": "bob-d1", "token": "tok-d1"},
            {"user_id": c, "device_id": "carol-d1", "token": "tok-carol"},
        ]})
        .to_string(),
    );

    let both = pushed_devices(&ops, &sink, &mut alice, b, "first").await;
    assert_eq!(both, pairs(&[("bob-d1", "tok-d1"), ("bob-d2", "tok-d2")]));
    let got = pushed_devices(&ops, &sink, &mut alice, b, "second").await;
    assert_eq!(
        got,
        pairs(&[("bob-d2", "tok-d2")]),
        "the dead token is gone"
    );
    let got = pushed_devices(&ops, &sink, &mut alice, c, "to-carol").await;
    assert_eq!(
        got,
        pairs(&[("carol-d1", "tok-carol")]),
        "a token the request did not carry stays"
    );
}
