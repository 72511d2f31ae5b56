//! PostgreSQL restarted under load (issue 13): the test runs its own PostgreSQL cluster
//! (`common/pg_cluster.rs`), puts a send load on the real server from several clients, stops
//! the database the way a crash does, and checks that requests needing it are answered
//! UNAVAILABLE with a `retry_after_ms` (sends, a login, a Sync, the conversation list) and
//! that `/readyz` says not ready; then starts it again and checks that the server recovered by
//! itself (ready again, every send retried by its `client_msg_id` acked), that every acked
//! message is stored exactly once with gap-free seqs, and that new sends work.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kill9::assert_gap_free;
use common::pg_cluster::PgCluster;
use common::{PASSWORD, TestServer, WAIT_DEADLINE, http_get, wait_until};
use ringchat_bench::client::{Client, conversation_id, password_login, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

const SENDERS: usize = 3;
/// Sends in flight per sender.
const WINDOW: usize = 4;
/// The server's dedup window in the scenario, in sends per (conversation, sender).
const DEDUP_WINDOW: usize = 1_024;
/// Sends per sender, at most (the load stops earlier, once the database is back). Kept within
/// the dedup window: a send committed just before the crash (its ack lost) is recognised when
/// resent only while fewer than `DEDUP_WINDOW` later sends of its sender are stored, and this
/// sender resends in no particular order after the outage (hundreds of ids fail meanwhile).
const SENDS_MAX: usize = 1_000;
const _: () = assert!(SENDS_MAX <= DEDUP_WINDOW);
/// Acks wanted before the stop, and again after the restart.
const ACKS_BEFORE: usize = 60;
const ACKS_AFTER: usize = 60;
/// The whole scenario's bound.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);

/// What the senders tell the test.
#[derive(Default)]
struct Load {
    acks: AtomicUsize,
    unavailable: AtomicUsize,
    /// No new sends from now on: finish what is in flight or waiting for a retry.
    stop: AtomicBool,
}

/// One sender's sends: `c{sender}-{i}` → (seq, acked as a duplicate).
type Acked = HashMap<String, (u64, bool)>;

fn body(id: &str) -> String {
    format!("message {id}")
}

/// Sends to `to` with `WINDOW` in flight until told to stop; a send answered UNAVAILABLE is
/// sent again, with the same client_msg_id, after the `retry_after_ms` it was given.
async fn sender(mut c: Client, me: usize, to: u64, load: Arc<Load>) -> Acked {
    let deadline = Instant::now() + SCENARIO_DEADLINE;
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut retries: Vec<(Instant, String)> = Vec::new();
    let mut acked = Acked::new();
    let mut next = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "sender {me}: load did not finish"
        );
        let stop = load.stop.load(Ordering::Acquire);
        while in_flight.len() < WINDOW {
            let now = Instant::now();
            let id = if let Some(due) = retries.iter().position(|(at, _)| *at <= now) {
                retries.swap_remove(due).1
            } else if !stop && next < SENDS_MAX {
                next += 1;
                format!("c{me}-{}", next - 1)
            } else {
                break;
            };
            let rid = c.send(text_message(to, &id, &body(&id))).await.unwrap();
            in_flight.insert(rid, id);
        }
        if stop && in_flight.is_empty() && retries.is_empty() {
            return acked;
        }
        // The next frame, or the moment the next retry is due (or the stop flag is looked at).
        let wake = retries
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
        let wait = if in_flight.is_empty() {
            wake.saturating_duration_since(Instant::now())
        } else {
            // Every request is answered within the store's timeouts (no hang).
            Duration::from_secs(15)
        };
        let frame = match tokio::time::timeout(wait, c.recv()).await {
            Ok(frame) => frame.unwrap().expect("the server keeps the connection"),
            Err(_) => {
                assert!(
                    in_flight.is_empty(),
                    "sender {me}: a send got no answer in 15 s"
                );
                continue;
            }
        };
        let Some(id) = in_flight.remove(&frame.request_id) else {
            continue;
        };
        match frame.body {
            Some(Body::SendAck(ack)) => {
                let earlier = acked.insert(id.clone(), (ack.seq, ack.duplicate));
                assert!(earlier.is_none(), "{id} acked twice");
                load.acks.fetch_add(1, Ordering::AcqRel);
            }
            Some(Body::Error(e)) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(e.retry_after_ms > 0, "UNAVAILABLE without retry_after_ms");
                load.unavailable.fetch_add(1, Ordering::AcqRel);
                let at = Instant::now() + Duration::from_millis(e.retry_after_ms);
                retries.push((at, id));
            }
            other => panic!("send {id} answered with {other:?}"),
        }
    }
}

/// Waits for the load's counter to reach `n`, within the scenario's deadline.
async fn wait_for(what: &str, counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + SCENARIO_DEADLINE;
    while counter.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An answer that must be UNAVAILABLE with a retry_after_ms.
fn assert_unavailable(what: &str, answer: Body) {
    match answer {
        Body::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unavailable as i32, "{what}: {e:?}");
            assert!(e.retry_after_ms > 0, "{what}: no retry_after_ms");
        }
        other => panic!("{what} while PostgreSQL is down answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_answers_unavailable_loses_nothing_and_recovers() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "2000"),
        ("STORAGE__POSTGRES__STATEMENT_TIMEOUT_MS", "5000"),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
        ("STORAGE__UNAVAILABLE_RETRY_AFTER_MS", "200"),
        // Every send of the scenario stays in its sender's dedup window.
        ("STORAGE__DEDUP_WINDOW_MESSAGES", &DEDUP_WINDOW.to_string()),
    ]);
    let (mut receiver, r) = server.user("receiver").await;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        senders.push(server.user(&format!("sender{s}")).await);
    }
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");

    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    let mut sender_ids = Vec::new();
    for (s, (client, ok)) in senders.into_iter().enumerate() {
        sender_ids.push(ok.user_id);
        tasks.push(tokio::spawn(sender(
            client,
            s,
            r.user_id,
            Arc::clone(&load),
        )));
    }
    wait_for("acks before the stop", &load.acks, ACKS_BEFORE).await;

    cluster.stop_immediate();
    wait_for("UNAVAILABLE answers to sends", &load.unavailable, 1).await;
    let conv = conversation_id(sender_ids[0], r.user_id);
    let sync = Body::Sync(v1::Sync {
        conversation_id: conv,
        after_seq: 0,
        limit: 0,
    });
    assert_unavailable("Sync", receiver.request(sync).await.unwrap());
    let list = Body::Conversations(v1::Conversations::default());
    assert_unavailable(
        "the conversation list",
        receiver.request(list).await.unwrap(),
    );
    let mut fresh = server.client().await;
    fresh.hello().await.unwrap();
    let login = Body::Login(password_login("receiver", PASSWORD, "receiver-dev2"));
    assert_unavailable("Login", fresh.request(login).await.unwrap());
    // Its check of the store is reused for up to a second (READY_CHECK_CACHE).
    wait_until("not ready", || {
        http_get(server.admin, "/readyz").starts_with("not ready")
    });
    assert_eq!(server.metric("ringchat_store_reachable"), 0.0);

    // Counted before the start: no send is acked while the database is down, and the retries
    // waiting since the outage may all be acked before /readyz (cached for a second) says ready,
    // with no new ids left to send (each sender may have used all of its ids during the outage).
    let acks_at_restart = load.acks.load(Ordering::Acquire);
    cluster.start();
    wait_until("ready again", || {
        http_get(server.admin, "/readyz") == "ready\n"
    });
    wait_for(
        "acks after the restart",
        &load.acks,
        acks_at_restart + ACKS_AFTER,
    )
    .await;
    load.stop.store(true, Ordering::Release);
    let mut acked: Vec<Acked> = Vec::new();
    for task in tasks {
        acked.push(
            tokio::time::timeout(WAIT_DEADLINE, task)
                .await
                .expect("every retried send acked")
                .expect("sender"),
        );
    }
    assert!(server.metric("ringchat_store_unavailable_total") > 0.0);
    assert_eq!(server.metric("ringchat_store_reachable"), 1.0);

    // Everything acked is stored once, at its seq, gap-free; no retry stored twice.
    let (mut check, _) = server.device("receiver", "receiver-dev3").await;
    for (s, acked) in acked.iter().enumerate() {
        let conv = conversation_id(sender_ids[s], r.user_id);
        let stored = check.sync_all(conv, 0).await.unwrap();
        assert_gap_free(&stored);
        let ids: HashSet<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(ids.len(), stored.len(), "a client_msg_id stored twice");
        // Every send was retried until acked, so what is stored is exactly what was acked.
        assert_eq!(stored.len(), acked.len(), "sender {s}: stored vs acked");
        let by_id: HashMap<&str, &v1::Message> = stored
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m))
            .collect();
        for (id, (seq, _)) in acked {
            let m = by_id
                .get(id.as_str())
                .unwrap_or_else(|| panic!("acked {id} lost"));
            assert_eq!(m.seq, *seq, "{id} acked with another seq");
            assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(id));
        }
        // New sends work and take the next seq.
        let ack = check
            .send_text(sender_ids[s], &format!("after-{s}"), "back")
            .await
            .unwrap()
            .unwrap();
        assert!(!ack.duplicate);
        assert_eq!(ack.seq, stored.len() as u64 + 1);
    }
}
