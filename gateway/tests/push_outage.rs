//! Offline push through a push gateway's outage, against a real HTTP receiver on loopback that
//! is down first and comes up later: a broadcast notification does not crowd direct messages'
//! pushes out of the queue; a user who came back online while the push waited gets none; a push
//! whose message grew older than `push.max_age_ms` while it waited is not sent, and counted;
//! nor is a group's push, resolved before the outage ended, whose request or retry comes when
//! it is too old or its member is back online.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use common::contacts::{ask, befriend};
use common::groups::{ack, create_id, send_body};
use common::push::{
    DEADLINE, env, go_offline, has_push, metric, pushes, user_with_token, wait_metric,
};
use common::webhook::{WebhookSink, free_port, register_token_of};
use ringchat_bench::client::Client;
use ringchat_proto::v1::{self, PushProvider};
use serde_json::json;

/// A server whose push receiver (at the returned address) is not up yet, retried often and
/// long; Alice online, and `offline` users (with push tokens) her friends and offline.
async fn receiver_down(
    extra: &[(&str, &str)],
    offline: &[&str],
) -> (TestServer, SocketAddr, Client, Vec<u64>) {
    let addr = free_port();
    let url = format!("http://{addr}/push");
    let mut vars = vec![
        ("PUSH__BACKOFF_MS", "50"),
        ("PUSH__BACKOFF_MS_MAX", "200"),
        ("PUSH__RETRIES_MAX", "100"),
    ];
    vars.extend_from_slice(extra);
    let server = TestServer::start(&env(&url, &vars));
    let (mut alice, a) = server.user("alice").await;
    let mut ids = Vec::new();
    for name in offline {
        let (mut c, id) = user_with_token(&server, name, &format!("apns-{name}")).await;
        befriend(&mut alice, a.user_id, &mut c, id).await;
        go_offline(&mut alice, c, id).await;
        ids.push(id);
    }
    (server, addr, alice, ids)
}

/// Notifies `users` by the admin API (its pushes wait for the receiver, which is down).
fn broadcast(server: &TestServer, users: &[u64]) {
    let admin = server.api_key("ops", "admin");
    let (status, _) = admin.post(
        "/api/notifications",
        json!({"text": "maintenance tonight", "to": {"users": users}}),
    );
    assert_eq!(status, 202);
}

/// A notification to more offline users than `push.queue_max`, made while the receiver is
/// down, leaves room for a direct message's push made after it: once the receiver is up it
/// is sent, and no message's push was dropped.
#[tokio::test]
async fn a_broadcast_notification_does_not_crowd_out_direct_pushes() {
    let (server, addr, mut alice, users) = receiver_down(
        &[("PUSH__QUEUE_MAX", "2")],
        &["bob", "carol", "dave", "erin"],
    )
    .await;
    broadcast(&server, &users);
    // The sender holds the notification's pushes, failing: the broadcast is queued.
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let bob = users[0];
    let sent = alice
        .send_text(bob, "d1", "are you coming?")
        .await
        .unwrap()
        .unwrap();
    let sink = WebhookSink::start_on(addr);
    // Bob's notification has the same seq (1) in his system conversation: match the kind.
    sink.wait_for("bob's direct message", DEADLINE, |r| {
        r.json()["pushes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user_id"] == bob && p["kind"] == "direct" && p["seq"] == sent.seq)
    });
    assert_eq!(metric(&server, "ringchat_push_dropped_total"), 0);
}

/// A broadcast's pushes go out a chunk (`push.batch_max`) at a time, each retried while the
/// push gateway fails: a direct message's push queued meanwhile goes next, not after every
/// chunk of the broadcast.
#[tokio::test]
async fn a_direct_push_goes_between_a_broadcasts_chunks() {
    let (server, addr, mut alice, users) = receiver_down(
        &[("PUSH__BATCH_MAX", "1")],
        &["bob", "carol", "dave", "erin"],
    )
    .await;
    let queued = metric(&server, "ringchat_push_queued_total");
    broadcast(&server, &users);
    // The sender holds the broadcast's first chunk, failing.
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let bob = users[0];
    let sent = alice
        .send_text(bob, "d1", "are you coming?")
        .await
        .unwrap()
        .unwrap();
    // The broadcast's four records and the message's one are queued before the receiver is up.
    wait_metric(&server, "ringchat_push_queued_total", queued + 5);
    let sink = WebhookSink::start_on(addr);
    common::wait_until("every push", || pushes(&sink).len() >= 5);
    let order: Vec<(u64, String)> = pushes(&sink)
        .iter()
        .map(|p| {
            (
                p["user_id"].as_u64().unwrap(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let direct = order
        .iter()
        .position(|(user, kind)| *user == bob && kind == "direct")
        .expect("the direct message's push");
    assert!(
        direct <= 1,
        "the direct push waited behind the broadcast's chunks: {order:?}"
    );
    assert!(
        pushes(&sink)
            .iter()
            .any(|p| p["kind"] == "direct" && p["seq"] == sent.seq)
    );
}

/// Delivery found Bob offline, but his push waited (the receiver was down) and he came back
/// meanwhile: he is online when it is resolved, so it is not sent.
#[tokio::test]
async fn a_user_back_online_while_the_push_waited_gets_none() {
    let (server, addr, mut alice, users) = receiver_down(&[], &["bob", "carol"]).await;
    let (bob, carol) = (users[0], users[1]);
    // Carol's push holds the sender (failing); Bob's waits behind it.
    let first = alice.send_text(carol, "c1", "hi").await.unwrap().unwrap();
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let to_bob = alice.send_text(bob, "b1", "hi bob").await.unwrap().unwrap();
    // Bob is back, and his device registers its token again (as clients do at every login):
    // only his being online keeps the push away.
    let (mut bob_again, _) = server.device("bob", "bob-dev1").await;
    register_token_of(&mut bob_again, PushProvider::Apns, "apns-bob").await;
    // Carol's next message is queued after Bob's: once it is pushed, Bob's was resolved.
    let after = alice
        .send_text(carol, "c2", "there?")
        .await
        .unwrap()
        .unwrap();
    let sink = WebhookSink::start_on(addr);
    sink.wait_for("carol's first", DEADLINE, |r| has_push(r, carol, first.seq));
    sink.wait_for("carol's second", DEADLINE, |r| {
        has_push(r, carol, after.seq)
    });
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| p["user_id"] == bob && p["seq"] == to_bob.seq),
        "a push went to a user who is online"
    );
}

/// A push that waited longer than `push.max_age_ms` for the sender is dropped unsent and
/// counted; one taken in time but still retried once that old is left out of its retry; fresh
/// ones are sent.
#[tokio::test]
async fn a_push_older_than_max_age_when_taken_or_retried_is_not_sent() {
    const MAX_AGE_MS: u64 = 1_000;
    // Carol's one retry comes after both messages are too old, whatever the time between
    // them: with retries every 200 ms, one could drop Carol's while Bob's was still fresh,
    // and Bob's was then taken in time (resolved, not expired).
    let (server, addr, mut alice, users) = receiver_down(
        &[
            ("PUSH__MAX_AGE_MS", "1000"),
            ("PUSH__BACKOFF_MS", "5000"),
            ("PUSH__BACKOFF_MS_MAX", "5000"),
        ],
        &["bob", "carol", "dave"],
    )
    .await;
    let (bob, carol, dave) = (users[0], users[1], users[2]);
    // Carol's push holds the sender (taken fresh, failing); Bob's waits behind it.
    let to_carol = alice.send_text(carol, "c1", "hi").await.unwrap().unwrap();
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let to_bob = alice
        .send_text(bob, "b1", "old news")
        .await
        .unwrap()
        .unwrap();
    // Wait (on the clock the server stamps messages with) until Bob's message is too old.
    let too_old = to_bob.server_time_ms + MAX_AGE_MS + 1;
    let end = std::time::Instant::now() + DEADLINE;
    while now_ms() <= too_old {
        assert!(std::time::Instant::now() < end, "the clock stood still");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sink = WebhookSink::start_on(addr);
    // Carol's, resolved in time, is left out of its next retry; Bob's is dropped when taken.
    assert_eq!(wait_metric(&server, &stale("expired"), 1), 1);
    assert_eq!(wait_metric(&server, "ringchat_push_expired_total", 1), 1);
    let fresh = alice.send_text(dave, "d1", "news").await.unwrap().unwrap();
    sink.wait_for("dave's fresh push", DEADLINE, |r| {
        has_push(r, dave, fresh.seq)
    });
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| (p["user_id"] == bob && p["seq"] == to_bob.seq)
                || (p["user_id"] == carol && p["seq"] == to_carol.seq)),
        "a push older than push.max_age_ms was sent"
    );
    assert_eq!(metric(&server, "ringchat_push_expired_total"), 1);
}

/// `ringchat_push_stale_total` of `reason`: pushes left out of a request or retry.
fn stale(reason: &str) -> String {
    format!("ringchat_push_stale_total{{reason=\"{reason}\"}}")
}

/// A group message resolves into one push per offline member, `push.batch_max` (1) per
/// request: the first is retried while the receiver is down, the others wait. Once they are
/// older than `push.max_age_ms`, none is sent, neither the retried one nor those whose request
/// comes after the receiver is back (and a member back online gets none either way).
#[tokio::test]
async fn a_groups_pushes_older_than_max_age_when_their_request_is_made_are_not_sent() {
    const MAX_AGE_MS: u64 = 1_000;
    let (server, addr, mut alice, users) = receiver_down(
        &[("PUSH__BATCH_MAX", "1"), ("PUSH__MAX_AGE_MS", "1000")],
        &["bob", "carol", "dave"],
    )
    .await;
    let carol = users[1];
    let g = create_id(&mut alice, &users, v1::JoinPolicy::InviteOnly).await;
    let expired = metric(&server, "ringchat_push_expired_total");
    let sent = ack(ask(&mut alice, send_body(g, "g1", "lunch?", &[], false)).await);
    // Taken fresh and resolved: the first member's request fails and is retried.
    wait_metric(&server, "ringchat_push_retries_total", 1);
    // Wait (on the clock the server stamps messages with) until the message is too old.
    let too_old = sent.server_time_ms + MAX_AGE_MS + 1;
    let end = std::time::Instant::now() + DEADLINE;
    while now_ms() <= too_old {
        assert!(std::time::Instant::now() < end, "the clock stood still");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut bob_again, _) = server.device("bob", "bob-dev1").await;
    register_token_of(&mut bob_again, PushProvider::Apns, "apns-bob").await;
    let sink = WebhookSink::start_on(addr);
    // Each of the three members' pushes is left out of its request or retry.
    assert_eq!(wait_metric(&server, &stale("expired"), 3), 3);
    let fresh = alice.send_text(carol, "c1", "news").await.unwrap().unwrap();
    sink.wait_for("carol's fresh push", DEADLINE, |r| {
        has_push(r, carol, fresh.seq)
    });
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| p["conversation_id"] == g && p["seq"] == sent.seq),
        "a push older than push.max_age_ms was sent: {:?}",
        pushes(&sink)
    );
    assert_eq!(
        metric(&server, "ringchat_push_expired_total"),
        expired,
        "the record was taken in time: only its pushes went stale"
    );
}

/// A group message's pushes are resolved while every member is offline; one member comes
/// back while the receiver is down: his push is left out of its request (or retry), the
/// others' are sent.
#[tokio::test]
async fn a_member_back_online_before_a_groups_push_request_gets_none() {
    let (server, addr, mut alice, users) =
        receiver_down(&[("PUSH__BATCH_MAX", "1")], &["bob", "carol"]).await;
    let (bob, carol) = (users[0], users[1]);
    let g = create_id(&mut alice, &users, v1::JoinPolicy::InviteOnly).await;
    let sent = ack(ask(&mut alice, send_body(g, "g1", "lunch?", &[], false)).await);
    // Resolved (both offline): the first request fails and is retried.
    wait_metric(&server, "ringchat_push_retries_total", 1);
    let (mut bob_again, _) = server.device("bob", "bob-dev1").await;
    register_token_of(&mut bob_again, PushProvider::Apns, "apns-bob").await;
    let sink = WebhookSink::start_on(addr);
    sink.wait_for("carol's push", DEADLINE, |r| has_push(r, carol, sent.seq));
    assert_eq!(wait_metric(&server, &stale("online"), 1), 1);
    assert!(
        !pushes(&sink)
            .iter()
            .any(|p| p["user_id"] == bob && p["seq"] == sent.seq),
        "a push went to a member who is online"
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}
