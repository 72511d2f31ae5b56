//! Offline push against a real HTTP receiver on loopback (`common/webhook.rs`): a message for a
//! user with no device online becomes a webhook request signed with HMAC-SHA256, and one for an
//! online user does not; group messages push mentions and small groups' unmuted members; the
//! receiver refusing connections or answering 500 and then coming back gets the push after
//! retries; the queue bound drops and counts, and sends are acked all along.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::contacts::{ask, befriend};
use common::groups::{ack, create_id, send_body};
use common::push::{
    DEADLINE, env, go_offline, has_push, metric, pushes, user_with_token, verify, wait_metric,
};
use common::webhook::{WebhookSink, free_port, register_token, register_token_of};
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, PushProvider};
use serde_json::json;

#[tokio::test]
async fn an_offline_recipient_gets_a_signed_webhook_and_an_online_one_none() {
    let sink = WebhookSink::start();
    let url = sink.url();
    let server = TestServer::start(&env(&url, &[]));
    let (mut alice, a) = server.user("alice").await;
    let (bob, b) = user_with_token(&server, "bob", "apns-bob").await;
    let (_carol, c) = user_with_token(&server, "carol", "apns-carol").await;
    let mut bob = bob;
    befriend(&mut alice, a.user_id, &mut bob, b).await;
    go_offline(&mut alice, bob, b).await;

    // Carol is online: no push. Bob is not: one, signed, naming his device and token.
    alice.send_text(c, "c1", "hi carol").await.unwrap().unwrap();
    let sent = alice.send_text(b, "b1", "hi bob").await.unwrap().unwrap();
    let got = sink.wait_for("bob's message", DEADLINE, |r| has_push(r, b, sent.seq));
    let body = verify(&got);
    assert!(body["sent_at_ms"].as_u64().unwrap() > 0);
    let push = &body["pushes"][0];
    assert_eq!(push["user_id"], b);
    assert_eq!(
        push["devices"],
        json!([{"device_id": "bob-dev1", "provider": "apns", "token": "apns-bob"}])
    );
    assert_eq!(push["kind"], "direct");
    assert_eq!(push["conversation_id"], conversation_id(a.user_id, b));
    assert_eq!(push["from_user_id"], a.user_id);
    assert_eq!(push["seq"], sent.seq);
    assert_eq!(push["mention"], false);
    assert!(
        push.get("preview").is_none(),
        "no content without push.preview"
    );
    assert!(
        pushes(&sink).iter().all(|p| p["user_id"] != c),
        "nothing for the online user"
    );

    // A system notification for an offline user is pushed too, from the server.
    let admin = server.api_key("ops", "admin");
    let (status, _) = admin.post(
        "/api/notifications",
        json!({"text": "maintenance", "to": {"users": [b, c]}}),
    );
    assert_eq!(status, 202);
    let got = sink.wait_for("the notification", DEADLINE, |r| {
        r.json()["pushes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "system")
    });
    let push = verify(&got)["pushes"][0].clone();
    assert_eq!(
        (push["user_id"].as_u64(), push["from_user_id"].as_u64()),
        (Some(b), Some(0))
    );
    assert_eq!(push["conversation_id"], (2u64 << 62) | b);
    assert!(pushes(&sink).iter().all(|p| p["user_id"] != c));
    // Counted once the server has read the answer, which may be after the sink recorded it.
    wait_metric(&server, "ringchat_push_sent_total", 2);

    // A bad registration is refused; unregistering answers `registered: false`.
    let (mut dave, _) = server.user("dave").await;
    let reply = ask(
        &mut dave,
        Body::RegisterPushToken(v1::RegisterPushToken {
            provider: 0,
            token: "t".into(),
        }),
    )
    .await;
    assert!(matches!(reply, Body::Error(e) if e.code == v1::ErrorCode::InvalidArgument as i32));
    let reply = ask(
        &mut dave,
        Body::UnregisterPushToken(v1::UnregisterPushToken {}),
    )
    .await;
    assert_eq!(
        reply,
        Body::PushTokenOk(v1::PushTokenOk { registered: false })
    );
}

#[tokio::test]
async fn group_messages_push_mentions_and_small_groups_unmuted_members() {
    let sink = WebhookSink::start();
    let url = sink.url();
    let server = TestServer::start(&env(&url, &[]));
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = user_with_token(&server, "bob", "apns-bob").await;
    let (mut carol, c) = user_with_token(&server, "carol", "apns-carol").await;
    befriend(&mut alice, a.user_id, &mut bob, b).await;
    befriend(&mut alice, a.user_id, &mut carol, c).await;
    let g = create_id(&mut alice, &[b, c], v1::JoinPolicy::InviteOnly).await;
    // Bob mutes the group.
    let reply = ask(
        &mut bob,
        Body::GroupSetNotify(v1::GroupSetNotify {
            conversation_id: g,
            muted: true,
        }),
    )
    .await;
    assert!(matches!(reply, Body::GroupOk(_)), "{reply:?}");
    go_offline(&mut alice, bob, b).await;
    go_offline(&mut alice, carol, c).await;

    let plain = ack(ask(&mut alice, send_body(g, "p1", "lunch?", &[], false)).await);
    let mention = ack(ask(&mut alice, send_body(g, "p2", "@bob lunch?", &[b], false)).await);
    // Carol (small group, not muted) gets both; muted Bob only the mention.
    sink.wait_for("carol's plain message", DEADLINE, |r| {
        has_push(r, c, plain.seq)
    });
    let got = sink.wait_for("bob's mention", DEADLINE, |r| has_push(r, b, mention.seq));
    let body = verify(&got);
    let p = body["pushes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == b)
        .unwrap()
        .clone();
    assert_eq!(
        (p["kind"].as_str(), p["mention"].as_bool()),
        (Some("group"), Some(true))
    );
    assert_eq!(p["conversation_id"], g);
    sink.wait_for("carol's second", DEADLINE, |r| has_push(r, c, mention.seq));
    let all = pushes(&sink);
    assert!(
        !all.iter()
            .any(|p| p["user_id"] == b && p["seq"] == plain.seq),
        "a muted member gets no push without a mention"
    );
    assert!(
        all.iter().all(|p| p["user_id"] != a.user_id),
        "nor the sender"
    );
}

/// A block is not pierced by a group: a member who blocks the sender is not mentioned (the
/// mention is dropped as a non-member's is) and gets no push of the sender's group messages,
/// though a mention pierces a mute.
#[tokio::test]
async fn a_member_who_blocks_the_sender_is_neither_mentioned_nor_pushed() {
    let sink = WebhookSink::start();
    let url = sink.url();
    let server = TestServer::start(&env(&url, &[]));
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = user_with_token(&server, "bob", "apns-bob").await;
    let (mut carol, c) = user_with_token(&server, "carol", "apns-carol").await;
    befriend(&mut alice, a.user_id, &mut bob, b).await;
    befriend(&mut alice, a.user_id, &mut carol, c).await;
    befriend(&mut bob, b, &mut carol, c).await;
    let g = create_id(&mut alice, &[b, c], v1::JoinPolicy::InviteOnly).await;
    let reply = common::contacts::block(&mut bob, a.user_id).await;
    assert!(matches!(reply, Body::BlockOk(_)), "{reply:?}");
    go_offline(&mut carol, bob, b).await;
    go_offline(&mut alice, carol, c).await;

    let sent = ack(ask(
        &mut alice,
        send_body(g, "m1", "@bob @carol", &[b, c], false),
    )
    .await);
    sink.wait_for("carol's mention", DEADLINE, |r| has_push(r, c, sent.seq));
    assert!(
        !pushes(&sink).iter().any(|p| p["user_id"] == b),
        "bob blocks alice: no push of hers reaches him"
    );
    let stored = alice.sync_all(g, sent.seq - 1).await.unwrap();
    assert_eq!(stored[0].mention_user_ids, [c], "bob's mention dropped");
}

/// A server whose push receiver (at the returned address) is not up yet and retries often;
/// Alice online, Bob (with a push token) her friend and offline; returns both ids.
async fn receiver_down_bob_offline() -> (TestServer, std::net::SocketAddr, Client, u64, u64) {
    let addr = free_port();
    let url = format!("http://{addr}/push");
    let server = TestServer::start(&env(
        &url,
        &[
            ("PUSH__BACKOFF_MS", "50"),
            ("PUSH__BACKOFF_MS_MAX", "200"),
            ("PUSH__RETRIES_MAX", "100"),
        ],
    ));
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = user_with_token(&server, "bob", "apns-bob").await;
    befriend(&mut alice, a.user_id, &mut bob, b).await;
    go_offline(&mut alice, bob, b).await;
    (server, addr, alice, a.user_id, b)
}

/// The harness: the "receiver down" port is one no `bind(0)` or outgoing connection can be
/// handed meanwhile (the system's ephemeral range), so `start_on` can always take it later.
#[test]
fn the_receiver_down_port_is_outside_the_ephemeral_range() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let (low, high) = range.split_once(char::is_whitespace).unwrap();
    let ephemeral = low.trim().parse::<u16>().unwrap()..=high.trim().parse::<u16>().unwrap();
    for _ in 0..100 {
        let port = free_port().port();
        assert!(!ephemeral.contains(&port), "{port} is in {ephemeral:?}");
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_then_fails_then_comes_back_gets_the_push() {
    let (server, addr, mut alice, _, b) = receiver_down_bob_offline().await;
    let sent = alice
        .send_text(b, "m1", "are you there")
        .await
        .unwrap()
        .unwrap();
    // Connection refused, retried.
    wait_metric(&server, "ringchat_push_retries_total", 2);
    // The receiver is up but failing: still retried.
    let sink = WebhookSink::start_on(addr);
    sink.answer(500);
    let end = Instant::now() + DEADLINE;
    while !sink.received().iter().any(|r| r.status == 500) {
        assert!(Instant::now() < end, "no request while answering 500");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Back: the same signed body arrives.
    sink.answer(200);
    let got = sink.wait_for("the push after retries", DEADLINE, |r| {
        has_push(r, b, sent.seq)
    });
    verify(&got);
    let failed = sink
        .received()
        .into_iter()
        .find(|r| r.status == 500)
        .unwrap();
    assert_eq!(failed.body, got.body, "a retry sends the same body");
    wait_metric(&server, "ringchat_push_sent_total", 1);
    assert_eq!(metric(&server, "ringchat_push_failed_total"), 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_while_sends_are_acked() {
    let addr = free_port();
    let url = format!("http://{addr}/push");
    let server = TestServer::start(&env(
        &url,
        &[
            ("PUSH__QUEUE_MAX", "3"),
            ("PUSH__BACKOFF_MS", "60000"),
            ("PUSH__BACKOFF_MS_MAX", "60000"),
        ],
    ));
    let (mut alice, a) = server.user("alice").await;
    let mut offline = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        let (mut c, id) = user_with_token(&server, name, &format!("apns-{name}")).await;
        befriend(&mut alice, a.user_id, &mut c, id).await;
        go_offline(&mut alice, c, id).await;
        offline.push(id);
    }
    // The receiver is down and the sender waits a minute between tries: every push stays
    // queued. The sender holds Bob's first push (taken, failing, counted in the queue until it
    // is given up); Carol's and Dave's first pushes wait in the queue and fill it, their later
    // messages fold into them; every other push is dropped (Bob's later ones are not folded
    // into a push the sender has taken already). The message path does not notice: every
    // send is acked.
    let mut acked = 0;
    for round in 0..5u64 {
        for &to in &offline {
            let ack = alice
                .send_text(to, &format!("q{round}"), "queued")
                .await
                .unwrap()
                .expect("acked");
            assert_eq!(ack.seq, round + 1);
            acked += 1;
            if acked == 1 {
                wait_metric(&server, "ringchat_push_retries_total", 1);
            }
        }
    }
    assert_eq!(wait_metric(&server, "ringchat_push_dropped_total", 9), 9);
    assert_eq!(metric(&server, "ringchat_push_queued_total"), 3);
    assert_eq!(metric(&server, "ringchat_push_folded_total"), 8);
    let synced = alice
        .sync_all(conversation_id(a.user_id, offline[0]), 0)
        .await
        .unwrap();
    assert_eq!(synced.len(), 5, "every message stored");
}

#[tokio::test]
async fn a_push_resolved_late_skips_members_who_joined_after_the_message() {
    let (server, addr, mut alice, a, b) = receiver_down_bob_offline().await;
    // The receiver is down: Carol's direct message waits in retries, and what follows waits
    // behind it, not resolved yet. Carol stays offline throughout: a retry drops the push of a
    // user online by then (Bob, below), which would let the queue move on too early.
    let (mut carol, c) = user_with_token(&server, "carol", "apns-carol").await;
    befriend(&mut alice, a, &mut carol, c).await;
    go_offline(&mut alice, carol, c).await;
    let direct = alice.send_text(c, "d1", "hi").await.unwrap().unwrap();
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let g = create_id(&mut alice, &[], v1::JoinPolicy::Open).await;
    let before = ack(ask(&mut alice, send_body(g, "g1", "before bob", &[], false)).await);
    // Bob joins (the group hides its history from newcomers) and leaves for the night.
    let (mut bob, _) = server.device("bob", "bob-dev1").await;
    // A new login: its device registers its token again, as clients do at every login.
    register_token_of(&mut bob, PushProvider::Apns, "apns-bob").await;
    assert!(matches!(
        ask(&mut bob, common::groups::join(g)).await,
        Body::GroupOk(_)
    ));
    go_offline(&mut alice, bob, b).await;
    let after = ack(ask(&mut alice, send_body(g, "g2", "after bob", &[], false)).await);
    let sink = WebhookSink::start_on(addr);
    sink.wait_for("carol's direct message", DEADLINE, |r| {
        has_push(r, c, direct.seq)
    });
    sink.wait_for("the group message after he joined", DEADLINE, |r| {
        has_push(r, b, after.seq)
    });
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| p["user_id"] == b && p["conversation_id"] == g && p["seq"] == before.seq),
        "no preview of a message from before Bob joined"
    );
}

/// Devices pushed out of the login limit leave no push token behind to crowd out the live
/// ones; a disabled account gets no push.
#[tokio::test]
async fn signed_out_devices_leave_no_push_tokens_and_a_disabled_user_gets_no_push() {
    let sink = WebhookSink::start();
    let url = sink.url();
    let server = TestServer::start(&env(
        &url,
        &[
            ("LOGIN__DEVICES_MAX", "2"),
            ("LOGIN__DEVICE_TOKENS_MAX", "2"),
        ],
    ));
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = server.user("bob").await;
    befriend(&mut alice, a.user_id, &mut bob, b.user_id).await;
    // Three old devices ("a…" sort before the live one), each pushed out by the next logins;
    // each gone before the next logs in (at most 2 devices online).
    go_offline(&mut alice, bob, b.user_id).await;
    for old in ["a0", "a1", "a2"] {
        let (mut c, _) = server.device("bob", old).await;
        register_token(&mut c, &format!("fcm-{old}")).await;
        go_offline(&mut alice, c, b.user_id).await;
    }
    let (mut phone, _) = server.device("bob", "z-phone").await;
    register_token(&mut phone, "fcm-phone").await;
    go_offline(&mut alice, phone, b.user_id).await;
    let sent = alice
        .send_text(b.user_id, "m1", "hi bob")
        .await
        .unwrap()
        .unwrap();
    let got = sink.wait_for("bob's push", DEADLINE, |r| has_push(r, b.user_id, sent.seq));
    let devices = got.json()["pushes"][0]["devices"].clone();
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device_id"] == "z-phone"),
        "{devices}"
    );

    // Disabled: no push for bob; carol's, sent after, shows the queue got that far.
    let (carol, c) = user_with_token(&server, "carol", "apns-carol").await;
    let mut carol = carol;
    befriend(&mut alice, a.user_id, &mut carol, c).await;
    go_offline(&mut alice, carol, c).await;
    let admin = server.api_key("ops", "admin");
    let (status, _) = admin.post(
        &format!("/api/users/{}/disable", b.user_id),
        json!({"reason": "abuse"}),
    );
    assert_eq!(status, 200);
    let to_bob = alice
        .send_text(b.user_id, "m2", "still there?")
        .await
        .unwrap()
        .unwrap();
    let to_carol = alice.send_text(c, "m3", "hi carol").await.unwrap().unwrap();
    sink.wait_for("carol's push", DEADLINE, |r| has_push(r, c, to_carol.seq));
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| p["user_id"] == b.user_id && p["seq"] == to_bob.seq),
        "a disabled user was pushed to"
    );
}

/// `push.url` and `observe.otlp.endpoint` may carry credentials (`user:password@`, a
/// `?token=`): the log lines naming them, which a viewer reads at `/api/logs`, hide them, the
/// push gateway's address at start and in a request's error alike.
#[tokio::test]
async fn credentials_in_push_url_and_otlp_endpoint_stay_out_of_the_logs() {
    // Nothing listens there: the push fails at once and, with no retries, is given up.
    let addr = free_port();
    let url = format!("http://u:s3cret@{addr}/x?token=t0ken");
    let server = TestServer::start(&env(
        &url,
        &[
            ("PUSH__RETRIES_MAX", "0"),
            ("OBSERVE__OTLP__ENDPOINT", "http://u:s3cret@127.0.0.1:9"),
        ],
    ));
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = user_with_token(&server, "bob", "apns-bob").await;
    befriend(&mut alice, a.user_id, &mut bob, b).await;
    go_offline(&mut alice, bob, b).await;
    alice.send_text(b, "m1", "hi bob").await.unwrap().unwrap();

    let viewer = server.api_key("watch", "viewer");
    let lines = |q: &str| -> Vec<serde_json::Value> {
        let (status, page) = viewer.get(&format!("/api/logs?q={q}&limit=100"));
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    };
    let mut named = Vec::new();
    common::wait_until_async("the push and OTLP lines in the logs", || {
        named = [
            "offline%20push%20to%20the%20push%20gateway",
            "observe.otlp%3A%20exporting",
            "pushes%20given%20up",
        ]
        .iter()
        .map(|q| lines(q))
        .collect();
        named.iter().all(|found| !found.is_empty())
    })
    .await;
    let text = |found: &[serde_json::Value]| serde_json::to_string(found).unwrap();
    assert!(
        text(&named[0]).contains(&format!("http://u:(hidden)@{addr}/x?token=(hidden)")),
        "the address is still told: {}",
        text(&named[0])
    );
    assert!(
        text(&named[1]).contains("http://u:(hidden)@127.0.0.1:9"),
        "{}",
        text(&named[1])
    );
    for secret in ["s3cret", "t0ken"] {
        let leaked = lines(secret);
        assert!(leaked.is_empty(), "{secret} in the logs: {}", text(&leaked));
    }
}
