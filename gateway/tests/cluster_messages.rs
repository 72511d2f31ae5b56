//! Cluster mode: messages between users on different nodes (real `ringchat` nodes on one
//! PostgreSQL database and Redis). Each conversation is written by its owner node (rendezvous
//! over the live nodes); a write arriving at another node is forwarded to the owner over the
//! node-to-node link and answered back, and each durable group's pushes go to every other node,
//! which hands them to its sessions. These tests check that every acked message is stored and
//! pushed exactly once, in order, with gap-free seqs, on every device on every node; and that a
//! killed owner makes writes answer UNAVAILABLE or move, never hang. Needs the servers
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::time::Duration;

use common::cluster::{
    acked, direct, owner, redis_url, start_nodes, synced, unique, wait_for_views,
};
use common::groups::{create_id, send_body};
use common::{TestServer, WAIT_DEADLINE};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::time::Instant;

const ROUNDS: usize = 12;

/// Three nodes, once each sees all three (so that they agree on every conversation's owner).
fn three_nodes() -> Vec<TestServer> {
    let db = common::store::fresh_database();
    let prefix = format!("rc_msgs_{}", unique());
    let nodes: Vec<TestServer> = start_nodes(&db, &redis_url(), &prefix, &["n1", "n2", "n3"])
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, 3);
    nodes
}

fn total(nodes: &[TestServer], metric: &str) -> f64 {
    nodes.iter().map(|n| n.metric(metric)).sum()
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
    // The conversation has one owner: the sends of the other two nodes were forwarded to it.
    let forwarded = total(&nodes, "ringchat_cluster_forwarded_writes_total");
    assert!(forwarded >= ROUNDS as f64, "forwarded writes: {forwarded}");
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

/// Pipelines `n` sends to `to` (ids `{tag}{i}`) and returns the acks in send order.
async fn pipelined(c: &mut Client, to: Body, tag: &str, n: usize) -> Vec<v1::SendAck> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut body = to.clone();
        if let Body::Send(s) = &mut body {
            s.client_msg_id = format!("{tag}{i}");
            s.content = format!("{tag}{i}").into_bytes().into();
        }
        ids.push(c.send(body).await.expect("send"));
    }
    let mut acks = Vec::with_capacity(n);
    for id in ids {
        match c.reply_to(id).await.expect("a reply") {
            Body::SendAck(ack) => acks.push(ack),
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
    acks
}

/// The next `n` pushes of conversation `conv` (other pushes fail the test): (seq, text).
async fn pushes(c: &mut Client, conv: u64, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = c.next_push().await.expect("a live push");
        assert_eq!(
            m.conversation_id, conv,
            "a push of another conversation: {m:?}"
        );
        out.push((m.seq, String::from_utf8_lossy(&m.content).into_owned()));
    }
    out
}

fn in_order_once(pushed: &[(u64, String)]) {
    assert!(
        pushed.windows(2).all(|w| w[0].0 < w[1].0),
        "pushed in seq order, each once: {pushed:?}"
    );
}

const PIPELINED: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_direct_messages_are_pushed_live_once_in_order_to_every_device_on_every_node() {
    let nodes = three_nodes();
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    let (mut bob3, _) = nodes[2].device("bob", "bob-dev3").await;
    let to_bob = direct(b.user_id, "x");
    let to_alice = direct(a.user_id, "x");
    let (from_alice, from_bob) = tokio::join!(
        pipelined(&mut alice, to_bob, "a", PIPELINED),
        pipelined(&mut bob, to_alice, "b", PIPELINED)
    );
    let conv = from_alice[0].conversation_id;
    let mut seqs: Vec<u64> = from_alice.iter().chain(&from_bob).map(|a| a.seq).collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (1..=2 * PIPELINED as u64).collect();
    assert_eq!(seqs, want, "every send stored once, gap-free");
    for acks in [&from_alice, &from_bob] {
        assert!(
            acks.windows(2).all(|w| w[0].seq < w[1].seq),
            "a connection's sends keep their order"
        );
    }
    // Live pushes (not Sync): alice gets bob's, bob gets alice's, bob's device on n3 gets both.
    let to_alice = pushes(&mut alice, conv, PIPELINED).await;
    let to_bob = pushes(&mut bob, conv, PIPELINED).await;
    let to_bob3 = pushes(&mut bob3, conv, 2 * PIPELINED).await;
    for p in [&to_alice, &to_bob, &to_bob3] {
        in_order_once(p);
    }
    assert!(to_alice.iter().all(|(_, t)| t.starts_with('b')));
    assert!(to_bob.iter().all(|(_, t)| t.starts_with('a')));
    let all: Vec<u64> = to_bob3.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        all, want,
        "the other device gets every message, in order, once"
    );
    // Stored as acked, on every node.
    let mut stored = synced(&mut bob3, conv).await;
    stored.sort();
    assert_eq!(stored, {
        let mut t = to_bob3.clone();
        t.sort();
        t
    });
    let forwarded = total(&nodes, "ringchat_cluster_forwarded_writes_total");
    // Whichever node owns the conversation, the sends of at least one side were forwarded.
    assert!(
        forwarded >= PIPELINED as f64,
        "forwarded writes: {forwarded}"
    );
    // Per-peer families carry a `peer` label: summed over it.
    let received: f64 = nodes
        .iter()
        .flat_map(|n| n.metrics())
        .filter(|(k, _)| k.starts_with("ringchat_cluster_peer_batches_received_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(received > 0.0, "batches received: {received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_across_three_nodes_gets_every_message_live_on_every_node() {
    let nodes = three_nodes();
    let (mut alice, _) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    let (mut carol, c) = nodes[2].user("carol").await;
    let g = create_id(&mut alice, &[b.user_id, c.user_id], v1::JoinPolicy::Open).await;
    let body = send_body(g, "x", "x", &[], false);
    let (a, b, c) = tokio::join!(
        pipelined(&mut alice, body.clone(), "a", PIPELINED),
        pipelined(&mut bob, body.clone(), "b", PIPELINED),
        pipelined(&mut carol, body.clone(), "c", PIPELINED)
    );
    let mut seqs: Vec<u64> = a.iter().chain(&b).chain(&c).map(|x| x.seq).collect();
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free: {seqs:?}"
    );
    // Each member gets the other two members' messages pushed, in order, once.
    for (who, client) in [("a", &mut alice), ("b", &mut bob), ("c", &mut carol)] {
        let got = texts_pushed(client, g, 2 * PIPELINED).await;
        in_order_once(&got);
        assert!(
            got.iter().all(|(_, t)| !t.starts_with(who)),
            "{who} got its own sends"
        );
    }
}

/// Like [`pushes`], passing over the group's events (the creation's, a member's join).
async fn texts_pushed(c: &mut Client, conv: u64, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = c.next_push().await.expect("a live push");
        assert_eq!(m.conversation_id, conv);
        if m.content_type == v1::ContentType::Text as i32 {
            out.push((m.seq, String::from_utf8_lossy(&m.content).into_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_makes_sends_answer_unavailable_or_move_never_hang() {
    let mut nodes = three_nodes();
    let ids = ["n1", "n2", "n3"];
    let (mut alice, a) = nodes[0].user("alice").await;
    // A peer of alice's on n2 whose conversation with her n3 owns.
    let mut peer = None;
    for i in 0..40 {
        let name = format!("bob{i}");
        let (client, login) = nodes[1].user(&name).await;
        let conv = ringchat_bench::client::conversation_id(a.user_id, login.user_id);
        if owner(conv, &ids) == 2 {
            peer = Some((client, login));
            break;
        }
    }
    let (_bob, b) = peer.expect("one of 40 conversations is n3's");
    let first = acked(&mut alice, direct(b.user_id, "before")).await;
    assert_eq!(first.seq, 1);
    assert!(nodes[0].metric("ringchat_cluster_forwarded_writes_total") >= 1.0);
    nodes[2].kill9();
    // Every send is answered (the client's own timeout would fail this test on a hang):
    // UNAVAILABLE while n3 is still in the view, then acked by the new owner.
    let mut unavailable = 0;
    let deadline = Instant::now() + WAIT_DEADLINE;
    let ack = loop {
        match alice
            .request(direct(b.user_id, "after"))
            .await
            .expect("an answer, never a hang")
        {
            Body::SendAck(ack) => break ack,
            Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(e.retry_after_ms > 0);
                assert!(Instant::now() < deadline, "still refused at the deadline");
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms)).await;
            }
            other => panic!("expected an ack or UNAVAILABLE, got {other:?}"),
        }
    };
    assert_eq!(ack.seq, 2, "exactly once after the move, gap-free");
    let again = acked(&mut alice, direct(b.user_id, "after")).await;
    assert!(again.duplicate && again.seq == 2);
    eprintln!("answered UNAVAILABLE {unavailable} times before the move");
}
