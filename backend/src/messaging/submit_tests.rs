//! A delivery ack through the real shard-facing handle, sequencer and embedded store: the
//! device it moves is the one the connection logged in with, given with the write, so the ack
//! takes no lock of the sessions registry (a login storm holds its write lock often).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1;
use tokio::sync::mpsc;

use crate::api::{ConnRef, Outgoing, ShardEvent, WriteRequest};
use crate::config::Settings;
use crate::messaging::{Submitted, conv_from_wire};
use crate::service::Backend;
use crate::store::UserId;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

fn conn(n: u64) -> ConnRef {
    ConnRef { shard: 0, conn: n }
}

async fn register(b: &Backend, name: &str) -> UserId {
    let req = v1::Register {
        username: name.into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    b.accounts.register(PEER, req).await.unwrap().user_id
}

/// The `SendAck` for connection `n` on the inbox: (wire conversation id, seq).
async fn send_ack(events: &mut mpsc::Receiver<ShardEvent>, n: u64) -> (u64, u64) {
    let found = async {
        loop {
            let Some(ShardEvent::Frames(out)) = events.recv().await else {
                continue;
            };
            for o in out {
                let Outgoing::One(to, frame) = o else {
                    continue;
                };
                let body = ringchat_proto::decode(&mut frame.as_ref().into(), 1 << 20)
                    .expect("a frame")
                    .expect("whole")
                    .body;
                if let (true, Some(Body::SendAck(ack))) = (to == n, body) {
                    return (ack.conversation_id, ack.seq);
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, found)
        .await
        .expect("the send is acked")
}

#[tokio::test]
async fn a_delivery_ack_moves_its_connections_device_without_the_sessions_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    assert_eq!(settings.problems(), Vec::<String>::new());
    let (shard_tx, mut events) = mpsc::channel(1024);
    let b = Backend::open(settings, vec![shard_tx]).expect("backend opens");
    let ann = register(&b, "ann").await;
    let bob = register(&b, "bob").await;
    let writes = b.writes().expect("the sequencer runs");

    let send = v1::Send {
        client_msg_id: "c1".into(),
        to_user_id: bob,
        content_type: v1::ContentType::Text as i32,
        content: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    let ann_device: Arc<str> = "ann-laptop".into();
    let submitted = writes.submit(conn(1), ann, &ann_device, 1, WriteRequest::Send(send));
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
    let (wire_conv, seq) = send_ack(&mut events, 1).await;
    let conv = conv_from_wire(wire_conv).expect("a conversation id");

    // A login storm's registrations: the registry's write lock, held on another thread.
    let sessions = b.sessions.clone();
    let released = Arc::new(AtomicBool::new(false));
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let released = Arc::clone(&released);
        std::thread::spawn(move || {
            let guard = sessions.write();
            held_tx.send(()).expect("the test waits");
            // Released when the test says, or after the deadline (the test has failed then).
            let _ = release_rx.recv_timeout(DEADLINE);
            released.store(true, Ordering::SeqCst);
            drop(guard);
        })
    };
    held.recv().expect("the lock is held");

    let phone: Arc<str> = "bob-phone".into();
    let ack = v1::DeliveryAck {
        conversation_id: wire_conv,
        seq,
    };
    let submitted = writes.submit(conn(2), bob, &phone, 2, WriteRequest::DeliveryAck(ack));
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
    assert!(
        !released.load(Ordering::SeqCst),
        "the ack waited for the sessions registry's write lock"
    );
    // Stored (the commit comes before delivery, which takes the lock): bob's phone has it.
    let cursors = Arc::clone(&b.ports.cursors);
    let stored = async {
        loop {
            let row = cursors.cursor_row(conv, bob).expect("the store reads");
            if row.is_some_and(|r| r.device_cursor("bob-phone") == Some(seq)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(DEADLINE, stored)
        .await
        .expect("bob's phone's delivery cursor is stored while the lock is held");
    assert!(!released.load(Ordering::SeqCst));
    release.send(()).expect("the holder waits");
    holder.join().expect("the holder ends");

    let row = b.ports.cursors.cursor_row(conv, bob).unwrap().unwrap();
    assert_eq!(row.device_cursor("bob-phone"), Some(seq));
    assert_eq!(
        row.device_cursor("ann-laptop"),
        None,
        "the ack moved bob's device only"
    );
    assert_eq!(row.cursor.delivered_seq, seq);
}

/// A write forwarded by another node (`submit_remote`): a send (whose device is not kept) is
/// stored and acked, and a delivery ack moves the device it names.
#[tokio::test]
async fn a_forwarded_delivery_ack_moves_the_device_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    let (shard_tx, mut events) = mpsc::channel(1024);
    let b = Backend::open(settings, vec![shard_tx]).expect("backend opens");
    let ann = register(&b, "ann").await;
    let bob = register(&b, "bob").await;
    let writes = b.writes().expect("the sequencer runs");
    let send = v1::Send {
        client_msg_id: "c1".into(),
        to_user_id: bob,
        content_type: v1::ContentType::Text as i32,
        content: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    writes
        .submit_remote(
            conn(1),
            ann,
            String::new(),
            1,
            WriteRequest::Send(send),
            None,
        )
        .expect("queued");
    let (wire_conv, seq) = send_ack(&mut events, 1).await;
    let conv = conv_from_wire(wire_conv).expect("a conversation id");
    let ack = v1::DeliveryAck {
        conversation_id: wire_conv,
        seq,
    };
    let request = WriteRequest::DeliveryAck(ack);
    writes
        .submit_remote(conn(2), bob, "bob-tablet".into(), 2, request, None)
        .expect("queued");
    let cursors = Arc::clone(&b.ports.cursors);
    let stored = async {
        loop {
            let row = cursors.cursor_row(conv, bob).expect("the store reads");
            if row.is_some_and(|r| r.device_cursor("bob-tablet") == Some(seq)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(DEADLINE, stored)
        .await
        .expect("bob's tablet's delivery cursor is stored");
}
