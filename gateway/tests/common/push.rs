//! What the offline push tests share: a server pushing to a test receiver, users with push
//! tokens going offline, the receiver's pushes and the server's push counters.

use std::time::{Duration, Instant};

use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{PresenceState, PushProvider};
use serde_json::Value;

use super::TestServer;
use super::admin::AdminClient;
use super::webhook::{Received, WebhookSink, register_token_of};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET: &str = "a push gateway secret of some length";
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PUSH__URL", url),
        ("PUSH__SECRET", SECRET),
        // A friend's going offline is pushed at once: the tests wait on it.
        ("PRESENCE__QUIET_PERIOD_MS", "0"),
    ];
    env.extend_from_slice(extra);
    env
}

/// A logged-in user whose device (`NAME-dev1`) registered `token`.
pub async fn user_with_token(server: &TestServer, name: &str, token: &str) -> (Client, u64) {
    let (mut c, ok) = server.user(name).await;
    register_token_of(&mut c, PushProvider::Apns, token).await;
    (c, ok.user_id)
}

/// Closes `c` and waits until `friend` is told `user` is offline: the server has forgotten
/// the session by then.
pub async fn go_offline(friend: &mut Client, c: Client, user: u64) {
    drop(c);
    let wait = async {
        loop {
            let frame = friend.next_event_untimed().await.unwrap().expect("open");
            if let Some(Body::Presence(p)) = frame.body
                && p.user_id == user
                && p.state() == PresenceState::Offline
            {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("the friend is told in time");
}

pub fn verify(r: &Received) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        r.header("x-ringchat-signature"),
        Some(format!("sha256={want}").as_str()),
        "signed with the secret"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// Every push in every request the sink answered 200.
pub fn pushes(sink: &WebhookSink) -> Vec<Value> {
    sink.received()
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.json()["pushes"].as_array().unwrap().clone())
        .collect()
}

/// The seqs of `user`'s pushes in every request the sink answered 200, in arrival order.
pub fn pushed_seqs(sink: &WebhookSink, user: u64) -> Vec<u64> {
    pushes(sink)
        .iter()
        .filter(|p| p["user_id"] == user)
        .filter_map(|p| p["seq"].as_u64())
        .collect()
}

pub fn has_push(r: &Received, user: u64, seq: u64) -> bool {
    r.json()["pushes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["user_id"] == user && p["seq"] == seq)
}

/// A counter's value from `/metrics` (0 when absent).
pub fn metric(server: &TestServer, name: &str) -> u64 {
    let (_, _, text) = AdminClient::new(server).get_text("/metrics");
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

pub fn wait_metric(server: &TestServer, name: &str, at_least: u64) -> u64 {
    let end = Instant::now() + DEADLINE;
    loop {
        let v = metric(server, name);
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{name} stayed at {v}, wanted {at_least}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
