//! A notification's writes through the real `Writer` over a fjall store: each recipient gets
//! the next seq of their own system conversation, a repeat of the notification id (in a later
//! commit group or the same one) stores nothing, and the conversation enters the recipient's
//! recency index (the conversation list).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{NO_CONN, SystemBatch, SystemDone};
use crate::accounts::Refusal;
use crate::config::Durability;
use crate::contacts::ContactsConfig;
use crate::groups::GroupsConfig;
use crate::messaging::writer::{Outcome, RowPolicy, Write, WriteOp, Writer};
use crate::store::{AccountStore, ConvId, FjallStore, Ports, UserId};

fn setup() -> (tempfile::TempDir, Ports, Writer, Vec<UserId>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let users = (0..3)
        .map(|i| {
            store
                .create_user(&format!("u{i}"), "x", "", 1)
                .unwrap()
                .user_id
        })
        .collect();
    let ports = Ports::of(store);
    let policy = RowPolicy {
        dedup_window: 8,
        device_cursor_ttl_ms: u64::MAX,
    };
    let writer = Writer::new(
        &ports,
        120_000,
        64,
        policy,
        ContactsConfig::default().limits(),
        GroupsConfig::default(),
    )
    .unwrap();
    (dir, ports, writer, users)
}

type Answer = oneshot::Receiver<Result<SystemDone, Refusal>>;

fn batch(id: &str, users: &[UserId]) -> (WriteOp, Answer) {
    let (reply, answer) = oneshot::channel();
    let op = WriteOp {
        conn: NO_CONN,
        request_id: 0,
        write: Write::System(SystemBatch {
            notification_id: id.into(),
            content: Bytes::from_static(b"notice"),
            users: users.to_vec(),
            reply,
        }),
        queued_at: None,
        trace: None,
    };
    (op, answer)
}

/// Commits the ops as one group; returns each op's result and the seqs it stored.
fn commit(writer: &mut Writer, ops: Vec<WriteOp>) -> Vec<(SystemDone, Vec<u64>)> {
    let mut ops = ops;
    let committed = writer.commit(&mut ops);
    committed
        .outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::System(s) => {
                let seqs = s
                    .messages
                    .iter()
                    .map(|i| committed.messages[*i].seq)
                    .collect();
                (s.result.expect("stored"), seqs)
            }
            other => panic!("expected a system outcome, got {other:?}"),
        })
        .collect()
}

#[test]
fn each_recipient_gets_the_next_seq_once_per_notification() {
    let (_dir, ports, mut writer, users) = setup();
    let (op, _) = batch("n1", &users[..2]);
    let done = commit(&mut writer, vec![op]);
    assert_eq!(
        done[0].0,
        SystemDone {
            stored: 2,
            repeats: 0
        }
    );
    assert_eq!(done[0].1, [1, 1], "each in their own conversation");

    // Again (a retried batch), and again within one group with a new recipient: only the new
    // one is stored, once.
    let (again, _) = batch("n1", &users);
    let (twice, _) = batch("n1", &[users[2], users[2]]);
    let done = commit(&mut writer, vec![again, twice]);
    assert_eq!(
        done[0].0,
        SystemDone {
            stored: 1,
            repeats: 2
        }
    );
    assert_eq!(
        done[1].0,
        SystemDone {
            stored: 0,
            repeats: 1
        }
    );

    let (next, _) = batch("n2", &users[..1]);
    assert_eq!(commit(&mut writer, vec![next])[0].1, [2]);
    let conv = ConvId::system(users[0]).unwrap();
    let stored = ports.log.messages_after(conv, 0, 10).unwrap();
    let ids: Vec<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"]);
    assert!(stored.iter().all(|m| m.from == 0));
    // In the recipient's recency index, so the conversation list finds it.
    let recent = ports
        .memberships
        .recent_conversations(users[0], 0..=u64::MAX, 10)
        .unwrap();
    assert!(recent.iter().any(|(_, c)| *c == conv), "{recent:?}");
}

#[test]
fn ids_that_are_no_users_are_skipped() {
    let (_dir, _ports, mut writer, users) = setup();
    let (op, _) = batch("n1", &[0, 5, users[0]]);
    assert_eq!(commit(&mut writer, vec![op])[0].0.stored, 1);
}
