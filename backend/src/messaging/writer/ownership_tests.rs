//! The fence path, through two real `Writer`s (two nodes' sequencers) over one fjall store: a
//! node that lost a conversation has its group refused with nothing written, answers
//! UNAVAILABLE with a pause, forgets what it cached, and a resend continues the stored seqs.

use std::sync::Arc;

use bytes::Bytes;

use super::super::{NewMessage, Outcome, RowPolicy, Write, WriteOp, Writer};
use crate::api::ConnRef;
use crate::config::Durability;
use crate::contacts::ContactsConfig;
use crate::groups::GroupsConfig;
use crate::store::{AccountStore, ConvId, FjallStore, Ports, UserId};
use ringchat_proto::v1::ErrorCode;

fn writer(ports: &Ports) -> Writer {
    let policy = RowPolicy {
        dedup_window: 64,
        device_cursor_ttl_ms: u64::MAX,
    };
    Writer::new(
        ports,
        120_000,
        64,
        policy,
        ContactsConfig::default().limits(),
        GroupsConfig::default(),
    )
    .expect("writer")
}

fn send(from: UserId, to: UserId, id: &str) -> WriteOp {
    WriteOp {
        conn: ConnRef { shard: 0, conn: 1 },
        request_id: 7,
        write: Write::Send(NewMessage {
            from,
            to,
            client_msg_id: id.into(),
            content_type: 1,
            content: Bytes::from_static(b"hi"),
        }),
        queued_at: None,
    }
}

/// Commits one send; the seq it got, or the refusal's code and pause.
fn commit(w: &mut Writer, op: WriteOp) -> Result<u64, (ErrorCode, u64)> {
    let mut batch = vec![op];
    let done = w.commit(&mut batch);
    match &done.outcomes[..] {
        [Outcome::Sent { message, .. }] => Ok(done.messages[*message].seq),
        [Outcome::Duplicate { original, .. }] => Ok(original.seq),
        [Outcome::Refused { refusal, .. }] => Err((refusal.code, refusal.retry_after_ms)),
        other => panic!("unexpected outcome {other:?}"),
    }
}

struct Two {
    _dir: tempfile::TempDir,
    ports: Ports,
    a: UserId,
    b: UserId,
}

fn two_users() -> Two {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).expect("store"));
    let a = store.create_user("a", "x", "", 1).expect("a").user_id;
    let b = store.create_user("b", "x", "", 1).expect("b").user_id;
    Two {
        _dir: dir,
        ports: Ports::of(store),
        a,
        b,
    }
}

#[test]
fn a_fenced_node_writes_nothing_and_a_resend_continues_the_stored_seqs() {
    let t = two_users();
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    let mut n1 = writer(&t.ports).with_ownership(1, Arc::clone(&t.ports.owners));
    let mut n2 = writer(&t.ports).with_ownership(2, Arc::clone(&t.ports.owners));

    assert_eq!(commit(&mut n1, send(t.a, t.b, "m1")), Ok(1));
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), Some(1));
    // Node 2 takes the conversation (its view moved it there) and writes on.
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    assert_eq!(
        t.ports
            .owners
            .owner(conv)
            .expect("owner")
            .map(|r| (r.epoch, r.node)),
        Some((2, 2))
    );

    // Node 1 still believes it holds epoch 1 and has seq 1 as the head in its cache: fenced.
    let (code, pause) = commit(&mut n1, send(t.a, t.b, "m3")).expect_err("fenced");
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(pause > 0, "the refusal says when to retry");
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), None);
    assert_eq!(
        t.ports
            .log
            .conversation(conv)
            .expect("head")
            .map(|h| h.max_seq),
        Some(2)
    );

    // The client resends; node 1 claims again and continues from the stored head, not its
    // stale cache: seq 3, not a second seq 2.
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m3")), Ok(3));
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), Some(3));
    // And node 2, fenced in turn, finds m2 by dedup when its client resends it.
    assert!(commit(&mut n2, send(t.b, t.a, "m4")).is_err());
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    let seqs: Vec<u64> = t
        .ports
        .log
        .messages_after(conv, 0, 100)
        .expect("read")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn taking_a_conversation_from_another_node_drops_the_stale_cache() {
    let t = two_users();
    let mut n1 = writer(&t.ports).with_ownership(1, Arc::clone(&t.ports.owners));
    let mut n2 = writer(&t.ports).with_ownership(2, Arc::clone(&t.ports.owners));
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m1")), Ok(1));
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    // Node 1 forgets its epoch without a fenced group (as after its epoch cache was trimmed):
    // its claim takes the conversation from node 2, so its cached head (seq 1) must go.
    n1.lost(ConvId::direct(t.a, t.b).expect("conv").to_wire());
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m3")), Ok(3));
}

#[test]
fn one_box_claims_nothing() {
    let t = two_users();
    let mut w = writer(&t.ports);
    assert_eq!(commit(&mut w, send(t.a, t.b, "m1")), Ok(1));
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    assert_eq!(t.ports.owners.owner(conv).expect("owner"), None);
}
