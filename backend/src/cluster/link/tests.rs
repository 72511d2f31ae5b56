//! The link's origin and owner sides with real `Link`s, peers and queues: what a peer sends is
//! read from the real queue of its `Peer`, what comes back goes through `receive` as a batch
//! from the real stream would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, NodeBatch, NodeItem, node_item::Item};
use tokio::sync::mpsc;

use super::Link;
use super::peer::Peer;
use crate::api::{ConnRef, Outgoing, ShardEvent, WriteRequest, encoded};
use crate::cluster::ClusterConfig;
use crate::groups::online::GroupOnline;
use crate::messaging::{Submitted, Writes};
use crate::sessions::{Sessions, SharedSessions};

/// A link of node `me` with one shard, and what that shard is sent.
fn link(config: &ClusterConfig) -> (Arc<Link>, mpsc::Receiver<ShardEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let link = Link::new(
        config,
        vec![tx],
        SharedSessions::new(Sessions::new(4, vec![])),
        Arc::new(GroupOnline::new(1)),
        100,
        64 << 10,
    )
    .expect("one shard");
    (link, rx)
}

/// The frames shard 0 was sent so far: (connection, request id, body).
fn sent(rx: &mut mpsc::Receiver<ShardEvent>) -> Vec<(u64, u64, Body)> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let ShardEvent::Frames(frames) = event else {
            panic!("only frames are sent");
        };
        for f in frames {
            let Outgoing::One(conn, bytes) = f else {
                panic!("answers go to one connection");
            };
            let frame = ringchat_proto::decode(&mut bytes[..].into(), 1 << 20)
                .expect("a frame")
                .expect("whole");
            out.push((conn, frame.request_id, frame.body.expect("a body")));
        }
    }
    out
}

fn send(client_msg_id: &str) -> WriteRequest {
    WriteRequest::Send(v1::Send {
        client_msg_id: client_msg_id.into(),
        to_user_id: 2,
        content: bytes::Bytes::from_static(b"hi"),
        ..Default::default()
    })
}

/// The one write queued for the owner.
fn forwarded(owner: &Peer) -> v1::Forward {
    match &owner.take_queued()[..] {
        [
            NodeItem {
                item: Some(Item::Forward(f)),
            },
        ] => f.clone(),
        other => panic!("one forwarded write, got {other:?}"),
    }
}

/// The owner's answer to `f`, as its delivery builds it (`fanout.rs`).
fn answer(f: &v1::Forward, body: Body) -> NodeItem {
    NodeItem {
        item: Some(Item::Answer(v1::Answer {
            origin: f.origin,
            request_id: f.request_id,
            frame: encoded(f.request_id, body),
            traceparent: String::new(),
        })),
    }
}

/// A client's request id is reused once answered (PROTOCOL.md): a write answered UNAVAILABLE
/// on the origin's deadline whose owner still acks it later must not have that ack taken as
/// the answer to the next request with the same id, nor lose that request's own answer.
#[tokio::test]
async fn a_late_answer_never_reaches_a_later_request_with_the_same_id() {
    let config = ClusterConfig {
        node_id: "n1".into(),
        ..ClusterConfig::default()
    };
    let (origin, mut shard) = link(&config);
    let owner = Peer::new("n2".into(), 0, "127.0.0.1:9".into(), 64, 64);
    let conn = ConnRef { shard: 0, conn: 5 };
    let queued = |s| matches!(s, Submitted::Queued);
    assert!(queued(origin.forward(
        &owner,
        conn,
        1,
        "d".into(),
        7,
        send("A")
    )));
    let a = forwarded(&owner);
    // The owner does not answer within forward_timeout_ms: the client is told UNAVAILABLE.
    let expired = origin
        .pending
        .take_where(Instant::now() + Duration::from_secs(3_600), None);
    origin.answer_unavailable(expired, "late").await;
    let got = sent(&mut shard);
    assert!(
        matches!(&got[..], [(5, 7, Body::Error(e))] if e.code == v1::ErrorCode::Unavailable as i32),
        "{got:?}"
    );
    // The client sends B under request id 7; the owner refuses it.
    assert!(queued(origin.forward(
        &owner,
        conn,
        1,
        "d".into(),
        7,
        send("B")
    )));
    let b = forwarded(&owner);
    let late_ack = answer(
        &a,
        Body::SendAck(v1::SendAck {
            msg_id: 42,
            seq: 1,
            ..Default::default()
        }),
    );
    let refusal = answer(
        &b,
        Body::Error(v1::Error {
            code: v1::ErrorCode::Forbidden as i32,
            message: "not a friend".into(),
            ..Default::default()
        }),
    );
    let (ops, _) = mpsc::channel(1);
    let writes = Writes::new(
        ops,
        SharedSessions::new(Sessions::new(4, vec![])),
        1 << 20,
        1 << 20,
        Arc::default(),
    );
    let (acks, _acks) = mpsc::channel(1);
    for items in [vec![late_ack], vec![refusal]] {
        let batch = NodeBatch {
            from_node: "n2".into(),
            items,
            missed: false,
            sent_at_ms: 0,
        };
        origin.receive(batch, &writes, &acks).await;
    }
    let got = sent(&mut shard);
    assert!(
        matches!(&got[..], [(5, 7, Body::Error(e))] if e.code == v1::ErrorCode::Forbidden as i32),
        "request 7 is answered with B's refusal, once, and never with A's ack: {got:?}"
    );
    assert_eq!(origin.forwards_waiting(), 0);
}
