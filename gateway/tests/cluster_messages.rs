//! Cluster mode, part 2: messages between users on different nodes (real `ringchat` nodes on
//! one PostgreSQL database and Redis). Each conversation is written by the node holding its
//! epoch; a node whose group is fenced answers UNAVAILABLE with `retry_after_ms` and the client
//! resends with the same `client_msg_id`. Until forwarding between nodes is built (ARCHITECTURE.md,
//! "Cluster: who writes what"), a conversation written from two nodes moves between them claim
//! by claim: these tests check that every acked message is stored exactly once, in order, with
//! gap-free seqs, and that Sync on any node returns what another wrote. Needs the servers
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::time::Duration;

use common::cluster::{redis_url, start_nodes, unique};
use common::groups::{create_id, send_body};
use common::{TestServer, WAIT_DEADLINE};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::time::Instant;

const ROUNDS: usize = 12;

fn direct(to: u64, id: &str) -> Body {
    Body::Send(v1::Send {
        client_msg_id: id.into(),
        to_user_id: to,
        content_type: v1::ContentType::Text as i32,
        content: id.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

/// Sends until acked, resending (same `client_msg_id`) after the pause an UNAVAILABLE asks
/// for, as a client does; panics on any other refusal or past the deadline.
async fn acked(c: &mut Client, body: Body) -> v1::SendAck {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        match c.request(body.clone()).await.expect("a reply") {
            Body::SendAck(ack) => return ack,
            Body::Error(e)
                if e.code == ErrorCode::Unavailable as i32 && Instant::now() < deadline =>
            {
                assert!(
                    e.retry_after_ms > 0,
                    "UNAVAILABLE says when to retry: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms)).await;
            }
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
}

/// The conversation's text messages as a node serves them: (seq, text).
async fn synced(c: &mut Client, conv: u64) -> Vec<(u64, String)> {
    c.sync_all(conv, 0)
        .await
        .expect("sync")
        .into_iter()
        .filter(|m| m.content_type == v1::ContentType::Text as i32)
        .map(|m| (m.seq, String::from_utf8_lossy(&m.content).into_owned()))
        .collect()
}

fn three_nodes() -> Vec<TestServer> {
    let db = common::store::fresh_database();
    let prefix = format!("rc_msgs_{}", unique());
    start_nodes(&db, &redis_url(), &prefix, &["n1", "n2", "n3"])
        .into_iter()
        .map(|(_, server)| server)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_across_nodes_are_stored_once_in_order_and_sync_anywhere() {
    let nodes = three_nodes();
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    // Alternating senders on two nodes: each turn moves the conversation's epoch.
    let mut acks = Vec::new();
    for i in 0..ROUNDS {
        let id = format!("a{i}");
        acks.push((acked(&mut alice, direct(b.user_id, &id)).await, id));
        let id = format!("b{i}");
        acks.push((acked(&mut bob, direct(a.user_id, &id)).await, id));
    }
    let conv = acks[0].0.conversation_id;
    let seqs: Vec<u64> = acks.iter().map(|(ack, _)| ack.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "acked in order with gap-free seqs");
    // A resend on the other node (alice's second device) is the same message, not a new one.
    let (mut alice3, _) = nodes[2].device("alice", "alice-dev3").await;
    let again = acked(&mut alice3, direct(b.user_id, "a0")).await;
    assert!(again.duplicate);
    assert_eq!(again.seq, 1);
    // Every node serves every acked message exactly once, at its acked seq.
    let want: Vec<(u64, String)> = acks.iter().map(|(ack, id)| (ack.seq, id.clone())).collect();
    assert_eq!(synced(&mut alice3, conv).await, want, "Sync on n3");
    assert_eq!(synced(&mut bob, conv).await, want, "Sync on n2");
    assert_eq!(synced(&mut alice, conv).await, want, "Sync on n1");
    // From the third send on, each turn found the other node's claim: its first try was fenced
    // (nothing written) and the resend went through after a claim.
    let fenced: f64 = nodes
        .iter()
        .map(|n| n.metric("ringchat_cluster_fenced_groups_total"))
        .sum();
    assert!(fenced >= (2 * ROUNDS - 2) as f64, "fenced groups: {fenced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_written_from_three_nodes_keeps_gap_free_seqs_on_every_node() {
    let nodes = three_nodes();
    let (mut alice, _) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    let (mut carol, c) = nodes[2].user("carol").await;
    let g = create_id(&mut alice, &[b.user_id, c.user_id], v1::JoinPolicy::Open).await;
    let mut sent = Vec::new();
    for i in 0..ROUNDS / 2 {
        for (who, client) in [("a", &mut alice), ("b", &mut bob), ("c", &mut carol)] {
            let id = format!("{who}{i}");
            let ack = acked(client, send_body(g, &id, &id, &[], false)).await;
            sent.push((ack.seq, id));
        }
    }
    let seqs: Vec<u64> = sent.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive seqs: {seqs:?}"
    );
    for (node, client) in [("n1", &mut alice), ("n2", &mut bob), ("n3", &mut carol)] {
        assert_eq!(synced(client, g).await, sent, "Sync on {node}");
    }
}
