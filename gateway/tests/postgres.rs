//! The server on PostgreSQL (`[storage] engine = "postgres"`): messages between two users,
//! pipelined; a kill -9 with sends in flight; after the restart every acked message is there,
//! once, with its seq and content, and resends are recognised. Needs the server that
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL); fails without it.

mod common;

use std::collections::HashMap;

use common::TestServer;
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;

/// A fresh database on the test server, for this test's server alone; returns its URL.
async fn fresh_database() -> String {
    let url = std::env::var("RINGCHAT_TEST_POSTGRES_URL").expect(
        "RINGCHAT_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
         (`bash scripts/test.sh` starts one; README \"PostgreSQL as the store\")",
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    let name = format!(
        "ringchat_it_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let (base, _) = url
        .rsplit_once('/')
        .expect("a URL of the form postgres://user@host:port/database");
    format!("{base}/{name}")
}

#[tokio::test]
async fn acked_messages_survive_a_kill_9_with_postgresql_as_the_store() {
    const TOTAL: usize = 300;
    const KILL_AFTER_ACKS: usize = 150;
    const WINDOW: usize = 32;
    let url = fresh_database().await;
    let env = [
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__DEDUP_WINDOW_MESSAGES", "1024"),
    ];
    let mut server = TestServer::start(&env);
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let conv = conversation_id(sender.user_id, recipient.user_id);
    let body = |i: usize| format!("stored in PostgreSQL {i}");

    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut next = 0;
    while acked.len() < KILL_AFTER_ACKS {
        while in_flight.len() < WINDOW && next < TOTAL {
            let rid = s
                .send(text_message(
                    recipient.user_id,
                    &format!("c{next}"),
                    &body(next),
                ))
                .await
                .unwrap();
            in_flight.insert(rid, next);
            next += 1;
        }
        let frame = s.recv_timeout().await.unwrap().expect("server alive");
        if let Some(i) = in_flight.remove(&frame.request_id) {
            match frame.body {
                Some(Body::SendAck(ack)) => {
                    acked.insert(i, ack.seq);
                }
                other => panic!("send c{i} answered with {other:?}"),
            }
        }
    }
    server.kill9();
    drop(s);
    server.restart();

    let (mut r, _) = server.device("recipient", "phone").await;
    let stored = r.sync_all(conv, 0).await.unwrap();
    for (at, m) in stored.iter().enumerate() {
        assert_eq!(m.seq, at as u64 + 1, "seqs gap-free and in order");
    }
    let by_id: HashMap<&str, _> = stored
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "no client_msg_id stored twice");
    for (i, seq) in &acked {
        let m = by_id
            .get(format!("c{i}").as_str())
            .unwrap_or_else(|| panic!("acked message c{i} lost"));
        assert_eq!(m.seq, *seq);
        assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(*i));
    }
    // Resends of the acked ones are recognised, and the rest are stored once each.
    let (mut s, _) = server.device("sender", "laptop").await;
    for i in 0..TOTAL {
        let ack = s
            .send_text(recipient.user_id, &format!("c{i}"), &body(i))
            .await
            .unwrap()
            .unwrap();
        if let Some(seq) = acked.get(&i) {
            assert!(ack.duplicate, "resend of acked c{i}");
            assert_eq!(ack.seq, *seq);
        }
    }
    assert_eq!(r.sync_all(conv, 0).await.unwrap().len(), TOTAL);
}
