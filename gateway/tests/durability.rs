//! The contract: once the sender holds an ack, the message is durable, appears exactly once, in
//! order, on every device, through crashes, concurrency and slow consumers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{PASSWORD, TestServer};
use ringchat_bench::client::{Client, conversation_id, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1;

use common::kill9::assert_gap_free;

#[tokio::test]
async fn a_kill_9_right_after_acks_loses_no_acknowledged_message() {
    common::kill9::acked_messages_survive_kill_9(&[], 400, 200).await;
}

/// Sends `count` messages with a window of `window`, returning acked (client_msg_id, seq) in
/// send order.
async fn send_many(
    c: &mut Client,
    to: u64,
    prefix: &str,
    count: usize,
    window: usize,
) -> Vec<(String, u64)> {
    let mut pending = std::collections::VecDeque::new();
    let mut out = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}-{i:04}");
        let rid = c.send(text_message(to, &id, &id)).await.unwrap();
        pending.push_back((rid, id));
        if pending.len() >= window {
            let (rid, id) = pending.pop_front().unwrap();
            let Body::SendAck(ack) = c.reply_to(rid).await.unwrap() else {
                panic!()
            };
            out.push((id, ack.seq));
        }
    }
    while let Some((rid, id)) = pending.pop_front() {
        let Body::SendAck(ack) = c.reply_to(rid).await.unwrap() else {
            panic!()
        };
        out.push((id, ack.seq));
    }
    out
}

#[tokio::test]
async fn a_hundred_senders_at_once_give_gap_free_increasing_seqs() {
    const SENDERS: usize = 100;
    const EACH: usize = 10;
    let server = TestServer::start(&[("ACCOUNTS__HASH_CONCURRENCY", "4")]);
    let (mut r, recipient) = server.user("recipient").await;
    let addr = server.tcp;
    let to = recipient.user_id;

    let receiver = tokio::spawn(async move {
        let mut per_conv: HashMap<u64, Vec<u64>> = HashMap::new();
        for _ in 0..SENDERS * EACH {
            let m = r.next_push().await.unwrap();
            per_conv.entry(m.conversation_id).or_default().push(m.seq);
        }
        per_conv
    });
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..SENDERS {
        tasks.spawn(async move {
            let name = format!("sender{n:03}");
            let (mut c, _) = Client::signup(addr, &name, PASSWORD, "d").await.unwrap();
            send_many(&mut c, to, &name, EACH, 4).await
        });
    }
    while let Some(acks) = tasks.join_next().await {
        let seqs: Vec<u64> = acks.unwrap().iter().map(|(_, s)| *s).collect();
        assert_eq!(
            seqs,
            (1..=EACH as u64).collect::<Vec<_>>(),
            "each sender's order is kept"
        );
    }
    let per_conv = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("all pushes arrive")
        .unwrap();
    assert_eq!(per_conv.len(), SENDERS);
    for seqs in per_conv.values() {
        assert_eq!(
            seqs,
            &(1..=EACH as u64).collect::<Vec<_>>(),
            "pushed once each, in order"
        );
    }
}

#[tokio::test]
async fn ten_devices_sending_into_one_conversation_share_one_gap_free_seq() {
    const DEVICES: usize = 10;
    const EACH: usize = 30;
    let server = TestServer::start(&[]);
    let recipient = server.user("recipient").await.1;
    let mut tasks = tokio::task::JoinSet::new();
    for d in 0..DEVICES {
        let (mut c, _) = server.device("multi", &format!("device-{d}")).await;
        let to = recipient.user_id;
        tasks.spawn(async move { send_many(&mut c, to, &format!("d{d}"), EACH, 8).await });
    }
    let mut acked = Vec::new();
    while let Some(acks) = tasks.join_next().await {
        let acks = acks.unwrap();
        let seqs: Vec<u64> = acks.iter().map(|(_, s)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a device's messages keep its order"
        );
        acked.extend(acks);
    }
    let (mut r, _) = server.device("recipient", "phone").await;
    let conv = conversation_id(
        recipient.user_id,
        r.conversations().await.unwrap()[0].peer_user_id,
    );
    let all = r.sync_all(conv, 0).await.unwrap();
    assert_eq!(all.len(), DEVICES * EACH);
    assert_gap_free(&all);
    let stored: HashMap<&str, u64> = all
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    for (id, seq) in &acked {
        assert_eq!(stored[id.as_str()], *seq);
    }
}

#[tokio::test]
async fn a_slow_consumer_is_kicked_then_resyncs_everything() {
    slow_consumer_kicked_then_resyncs(&[("GATEWAY__OUTBOUND_FRAMES_MAX", "64")]).await;
}

/// The bytes waiting bound a connection too: 600 frames are far below the default 4,096, but
/// their 9.6 MB are past 1 MiB.
#[tokio::test]
async fn a_slow_consumer_is_kicked_by_the_bytes_waiting_then_resyncs_everything() {
    slow_consumer_kicked_then_resyncs(&[("GATEWAY__OUTBOUND_BYTES_MAX", "1048576")]).await;
}

/// A recipient that reads nothing while 600 messages of 16 KiB come its way is kicked as a slow
/// consumer (under `settings`), and gets every message by Sync after it reconnects.
async fn slow_consumer_kicked_then_resyncs(settings: &[(&str, &str)]) {
    const COUNT: usize = 600;
    const SIZE: usize = 16 * 1024;
    let server = TestServer::start(settings);
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    // The recipient logs in with a tiny receive window and then reads nothing.
    let mut slow = Client::connect_with_recv_buffer(server.tcp, 4096)
        .await
        .unwrap();
    slow.hello().await.unwrap();
    slow.login_password("recipient", PASSWORD, "phone")
        .await
        .unwrap()
        .unwrap();

    let payload = |i: usize| {
        let mut p = format!("{i:08}").into_bytes();
        p.resize(SIZE, b'x');
        p
    };
    let mut pending = std::collections::VecDeque::new();
    for i in 0..COUNT {
        let body = Body::Send(v1::Send {
            client_msg_id: format!("c{i}"),
            to_user_id: recipient.user_id,
            content_type: v1::ContentType::Custom as i32,
            content: payload(i).into(),
            ..Default::default()
        });
        pending.push_back(s.send(body).await.unwrap());
        if pending.len() >= 32 {
            let rid = pending.pop_front().unwrap();
            assert!(matches!(s.reply_to(rid).await.unwrap(), Body::SendAck(_)));
        }
    }
    for rid in pending {
        assert!(matches!(s.reply_to(rid).await.unwrap(), Body::SendAck(_)));
    }

    // The server gives up on the recipient: wait for that, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if slow_consumer_kicks(&server) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "slow consumer never kicked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever it still gets, the connection ends (possibly inside a frame whose write the
    // server had to cut, as on any dropped network).
    loop {
        match slow.recv_timeout().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.to_string().contains("inside a frame") => break,
            Err(e) => panic!("{e}"),
        }
    }

    let (mut again, _) = server.device("recipient", "phone").await;
    let conv = conversation_id(sender.user_id, recipient.user_id);
    let all = again.sync_all(conv, 0).await.unwrap();
    assert_eq!(all.len(), COUNT);
    assert_gap_free(&all);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(&m.content[..], &payload(i)[..], "content of message {i}");
    }
}

/// Connections kicked as slow consumers so far, on every shard.
fn slow_consumer_kicks(server: &TestServer) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_kicks_total") && k.contains("SLOW_CONSUMER"))
        .map(|(_, v)| v)
        .sum()
}

fn budget_kicks(server: &TestServer) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_outbound_budget_kicks_total"))
        .map(|(_, v)| v)
        .sum()
}

/// A message of `SIZE` bytes from the sender to `to`, numbered `i`.
fn numbered_send(to: u64, i: usize) -> Body {
    const SIZE: usize = 16 * 1024;
    let mut content = format!("{i:08}").into_bytes();
    content.resize(SIZE, b'x');
    Body::Send(v1::Send {
        client_msg_id: format!("c{i}"),
        to_user_id: to,
        content_type: v1::ContentType::Custom as i32,
        content: content.into(),
        ..Default::default()
    })
}

/// Sends messages `from..to` of `numbered_send`, every one acked.
async fn send_acked(s: &mut Client, to_user: u64, from: usize, to: usize) {
    let mut ids = Vec::new();
    for i in from..to {
        ids.push(s.send(numbered_send(to_user, i)).await.unwrap());
    }
    for id in ids {
        assert!(matches!(s.reply_to(id).await.unwrap(), Body::SendAck(_)));
    }
}

/// A device of `user` with a tiny receive window, logged in; it reads only when told to.
async fn unread_device(server: &TestServer, user: &str, device: &str) -> Client {
    let mut c = Client::connect_with_recv_buffer(server.tcp, 4096)
        .await
        .unwrap();
    c.hello().await.unwrap();
    c.login_password(user, PASSWORD, device)
        .await
        .unwrap()
        .unwrap();
    c
}

/// Connections that each stay under their own limit cannot together pin a shard's memory: past
/// `gateway.outbound_bytes_per_shard_max` the one whose kick frees the most (here the two hold
/// the same) is kicked as a slow consumer (its backlog dropped), and the other keeps every
/// message.
#[tokio::test]
async fn past_the_shards_outbound_budget_the_largest_backlog_is_kicked() {
    // One shard, whose budget is one connection's own limit: two backlogs of ~60% each cross it.
    const BUDGET: usize = 8 << 20;
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__OUTBOUND_BYTES_MAX", "8388608"),
        ("GATEWAY__OUTBOUND_BYTES_PER_SHARD_MAX", "8388608"),
    ]);
    let (mut s, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let mut devices = [
        unread_device(&server, "recipient", "phone").await,
        unread_device(&server, "recipient", "laptop").await,
    ];
    // Every message goes to both devices, which read nothing. The budget kick is counted when
    // the shard chooses it (the kick itself is counted once its stalled write is given up): the
    // sends stop there, with the other device's backlog at about half the budget.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while budget_kicks(&server) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "nobody kicked after {sent} messages"
        );
        send_acked(&mut s, recipient.user_id, sent, sent + 8).await;
        sent += 8;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_consumer_kicks(&server) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the chosen connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        2 * sent * 16 * 1024 > BUDGET,
        "kicked after {sent} messages: before the budget was crossed"
    );
    // One is gone; the other reads its whole backlog, then answers.
    let mut alive = Vec::new();
    for device in &mut devices {
        if device.ping().await.is_ok() {
            let mut pushes = 0;
            while device.pending_events() > 0 {
                if let Some(Body::Push(_)) = device.next_event().await.unwrap().unwrap().body {
                    pushes += 1;
                }
            }
            alive.push(pushes);
        }
    }
    assert_eq!(alive, [sent], "one device kept every message");
    assert_eq!(slow_consumer_kicks(&server), 1.0);
}

/// A client that reads a little now and then is never idle and never past a limit, yet would
/// hold its backlog for ever: a backlog that has not once drained within
/// `gateway.outbound_drain_timeout_ms` is kicked as a slow consumer.
#[tokio::test]
async fn a_trickle_reader_that_never_drains_its_backlog_is_kicked() {
    let server = TestServer::start(&[("GATEWAY__OUTBOUND_DRAIN_TIMEOUT_MS", "2000")]);
    let (mut s, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let mut slow = unread_device(&server, "recipient", "phone").await;
    // 8 MiB, far below every limit, and past what the kernel's buffers hold (the server's
    // send buffer grows to 4 MiB).
    let queued = Instant::now();
    send_acked(&mut s, recipient.user_id, 0, 512).await;
    // A frame every 200 ms (~80 KB/s): the backlog would take ~100 s to drain.
    let deadline = queued + Duration::from_secs(20);
    let mut closed = false;
    while !closed && slow_consumer_kicks(&server) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the trickle reader was never kicked"
        );
        closed = !matches!(slow.recv_timeout().await, Ok(Some(_)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Counted before its socket closes.
    assert_eq!(slow_consumer_kicks(&server), 1.0);
    assert!(
        queued.elapsed() >= Duration::from_millis(2000),
        "kicked after {:?}, before the drain timeout",
        queued.elapsed()
    );
}
