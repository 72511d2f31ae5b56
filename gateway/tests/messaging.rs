//! 1:1 messaging over the real server: delivery, sync, dedup, recall, cursors, receipts, typing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{PASSWORD, TestServer};
use ringchat_bench::client::{Client, conversation_id, text_message};
use ringchat_proto::v1::{self, ContentType, ErrorCode};
use ringchat_proto::{Body, Frame};

fn text(m: &v1::Message) -> &str {
    std::str::from_utf8(&m.content).unwrap()
}

#[tokio::test]
async fn online_delivery_reaches_every_device_of_both_users_once() {
    let server = TestServer::start(&[]);
    let (mut s1, sender) = server.user("sender").await;
    let (mut s2, _) = server.device("sender", "sender-laptop").await;
    let (mut r1, recipient) = server.user("recipient").await;
    let (mut r2, _) = server.device("recipient", "recipient-laptop").await;
    let conv = conversation_id(sender.user_id, recipient.user_id);

    let ack = s1
        .send_text(recipient.user_id, "m1", "hello")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ack.conversation_id, ack.seq, ack.duplicate),
        (conv, 1, false)
    );
    for device in [&mut r1, &mut r2, &mut s2] {
        let m = device.next_push().await.unwrap();
        assert_eq!(
            (m.seq, m.msg_id, m.from_user_id),
            (1, ack.msg_id, sender.user_id)
        );
        assert_eq!(m.to_user_id, recipient.user_id);
        assert_eq!(text(&m), "hello");
        assert_eq!(m.client_msg_id, "m1");
    }
    // The sending connection gets no push of its own message: the next push it sees is the
    // reply, and pushes leave in commit order.
    r1.send_text(sender.user_id, "r1", "hi back")
        .await
        .unwrap()
        .unwrap();
    let next = s1.next_push().await.unwrap();
    assert_eq!((next.seq, text(&next)), (2, "hi back"));
}

#[tokio::test]
async fn offline_messages_are_synced_in_pages() {
    synced_in_pages(&[]).await;
}

#[tokio::test]
async fn offline_messages_are_synced_in_pages_from_the_tail_cache() {
    if common::store::embedded_only(
        "offline_messages_are_synced_in_pages_from_the_tail_cache",
        "the tail cache is the embedded store's (a shared store has none)",
    ) {
        return;
    }
    synced_in_pages(&[("STORAGE__TAIL_CACHE_BYTES", "1048576")]).await;
}

/// Pages of 10 against a server whose largest page (`limits.sync_page_max`) is 10 too: a
/// client asking for more gets the cap's worth and `has_more`.
async fn synced_in_pages(env: &[(&str, &str)]) {
    let mut all = env.to_vec();
    all.push(("LIMITS__SYNC_PAGE_MAX", "10"));
    let server = TestServer::start(&all);
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    // The recipient goes offline (its connection from signup is gone).
    for i in 1..=25 {
        s.send_text(recipient.user_id, &format!("c{i}"), &format!("message {i}"))
            .await
            .unwrap()
            .unwrap();
    }
    let (mut r, _) = server.device("recipient", "phone").await;
    let convs = r.conversations().await.unwrap();
    assert_eq!(convs.len(), 1);
    let c = &convs[0];
    assert_eq!(
        (c.peer_user_id, c.max_seq, c.unread_count),
        (sender.user_id, 25, 25)
    );
    assert_eq!(text(c.last_message.as_ref().unwrap()), "message 25");

    let conv = c.conversation_id;
    let p1 = r.sync(conv, 0, 10).await.unwrap();
    assert_eq!(p1.messages.len(), 10);
    assert!(p1.has_more);
    let p2 = r.sync(conv, 10, 10).await.unwrap();
    assert!(p2.has_more);
    let p3 = r.sync(conv, 20, 10).await.unwrap();
    assert_eq!(p3.messages.len(), 5);
    assert!(!p3.has_more);
    let seqs: Vec<u64> = [p1, p2, p3]
        .iter()
        .flat_map(|p| p.messages.iter().map(|m| m.seq))
        .collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

    let newest = r.history(conv, 0, 10).await.unwrap();
    let hist: Vec<u64> = newest.messages.iter().map(|m| m.seq).collect();
    assert_eq!(hist, (16..=25).rev().collect::<Vec<_>>());
    assert!(newest.has_more);
    let oldest = r.history(conv, 6, 10).await.unwrap();
    assert_eq!(oldest.messages.len(), 5);
    assert!(!oldest.has_more);

    // A page larger than the server's maximum is clamped to it, not refused.
    let big = r.sync(conv, 0, 100_000).await.unwrap();
    let seqs: Vec<u64> = big.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert!(big.has_more);
    let big = r.history(conv, 0, 100_000).await.unwrap();
    let seqs: Vec<u64> = big.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (16..=25).rev().collect::<Vec<_>>());
    assert!(big.has_more);

    // The cache's counters are published with each write: one more, then they show whether
    // the reads above were served from memory.
    s.send_text(recipient.user_id, "c26", "message 26")
        .await
        .unwrap()
        .unwrap();
    let hits = server.metric("ringchat_tail_cache_hits_total");
    if env.is_empty() {
        assert_eq!(hits, 0.0, "the cache is off by default");
    } else {
        assert!(
            hits >= 5.0,
            "syncs and history pages served from the tail: {hits}"
        );
    }
}

/// A page is bounded in bytes as well as in messages: by the bound a resume keeps
/// (`login.resume_bytes_max`, held to half of `gateway.outbound_bytes_max`), so that a page of
/// large messages never fills the connection's queue alone. It ends early with `has_more`,
/// and paging on returns every message once.
#[tokio::test]
async fn sync_and_history_pages_end_at_half_the_outbound_byte_bound() {
    // A 1 MiB queue: pages of at most 512 KiB; 24 messages of 30,000 bytes are ~720 kB.
    const N: u64 = 24;
    let server = TestServer::start(&[("GATEWAY__OUTBOUND_BYTES_MAX", "1048576")]);
    let (mut s, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let body = |i: u64| format!("{i:05}{}", "x".repeat(29_995));
    for i in 1..=N {
        s.send_text(recipient.user_id, &format!("c{i}"), &body(i))
            .await
            .unwrap()
            .unwrap();
    }
    let (mut r, _) = server.device("recipient", "phone").await;
    let conv = r.conversations().await.unwrap()[0].conversation_id;
    let half = 512 * 1024;

    let mut synced = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = r.sync(conv, after, 0).await.unwrap();
        pages += 1;
        assert!(
            !page.messages.is_empty(),
            "a page holds at least one message"
        );
        assert!(
            prost::Message::encoded_len(&page) <= half + 64,
            "{} bytes",
            prost::Message::encoded_len(&page)
        );
        if pages == 1 {
            assert!((page.messages.len() as u64) < N && page.has_more);
        }
        after = page.messages.last().unwrap().seq;
        synced.extend(page.messages);
        if !page.has_more {
            break;
        }
        assert!(pages < N, "paging never ends");
    }
    let seqs: Vec<u64> = synced.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "each message once");
    assert!(synced.iter().all(|m| text(m) == body(m.seq)));

    let mut history = Vec::new();
    let mut before = 0;
    let mut pages = 0;
    loop {
        let page = r.history(conv, before, 0).await.unwrap();
        pages += 1;
        assert!(prost::Message::encoded_len(&page) <= half + 64);
        if pages == 1 {
            assert!((page.messages.len() as u64) < N && page.has_more);
        }
        before = page.messages.last().expect("a message").seq;
        history.extend(page.messages);
        if !page.has_more {
            break;
        }
        assert!(pages < N, "paging never ends");
    }
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=N).rev().collect::<Vec<_>>(), "each message once");
}

#[tokio::test]
async fn resends_with_the_same_client_msg_id_store_one_message() {
    let server = TestServer::start(&[]);
    let (mut s, _) = server.user("sender").await;
    let (mut s_other_device, _) = server.device("sender", "tablet").await;
    let recipient = server.user("recipient").await.1;
    let a = s
        .send_text(recipient.user_id, "id-a", "A")
        .await
        .unwrap()
        .unwrap();
    let b = s
        .send_text(recipient.user_id, "id-b", "B")
        .await
        .unwrap()
        .unwrap();
    // Out of order: A again after B, and B again from the sender's other device.
    let a2 = s
        .send_text(recipient.user_id, "id-a", "A")
        .await
        .unwrap()
        .unwrap();
    let b2 = s_other_device
        .send_text(recipient.user_id, "id-b", "B")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a2.seq, a2.msg_id, a2.duplicate), (a.seq, a.msg_id, true));
    assert_eq!((b2.seq, b2.msg_id, b2.duplicate), (b.seq, b.msg_id, true));
    // Pipelined duplicates inside one commit group are caught too.
    let ids: Vec<u64> =
        futures_free_pipeline(&mut s, recipient.user_id, &["id-c", "id-c", "id-c"]).await;
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    let all = s.sync_all(a.conversation_id, 0).await.unwrap();
    let got: Vec<(u64, &str)> = all
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_str()))
        .collect();
    assert_eq!(got, vec![(1, "id-a"), (2, "id-b"), (3, "id-c")]);
}

#[tokio::test]
async fn a_resend_is_recognised_within_the_senders_dedup_window_and_after_a_restart() {
    let mut server = TestServer::start(&[("STORAGE__DEDUP_WINDOW_MESSAGES", "2")]);
    let (mut s, sender) = server.user("sender").await;
    let (mut r, recipient) = server.user("recipient").await;
    let to = recipient.user_id;
    let a = s.send_text(to, "id-a", "A").await.unwrap().unwrap();
    // The recipient's messages do not push the sender's sends out of its window.
    for id in ["r1", "r2", "r3"] {
        r.send_text(sender.user_id, id, id).await.unwrap().unwrap();
    }
    let b = s.send_text(to, "id-b", "B").await.unwrap().unwrap();
    let again = s.send_text(to, "id-a", "A").await.unwrap().unwrap();
    assert_eq!(
        (again.seq, again.duplicate),
        (a.seq, true),
        "a is in the window"
    );
    let c = s.send_text(to, "id-c", "C").await.unwrap().unwrap();
    // The window now holds the sender's newest two sends, b and c, and survives a crash.
    drop((s, r));
    server.kill9();
    server.restart();
    let (mut s, _) = server.device("sender", "sender-dev1").await;
    let b2 = s.send_text(to, "id-b", "B").await.unwrap().unwrap();
    assert_eq!((b2.seq, b2.duplicate), (b.seq, true), "after a restart");
    let c2 = s.send_text(to, "id-c", "C").await.unwrap().unwrap();
    assert_eq!((c2.seq, c2.duplicate), (c.seq, true));
    let a2 = s.send_text(to, "id-a", "A").await.unwrap().unwrap();
    assert!(
        !a2.duplicate && a2.seq > c.seq,
        "past the window a resend is a new message: {a2:?}"
    );
}

#[tokio::test]
async fn the_conversation_list_pages_by_last_activity() {
    let server = TestServer::start(&[]);
    let (mut alice, me) = server.user("alice").await;
    let mut peers = Vec::new();
    for i in 0..5 {
        let (mut c, login) = server.user(&format!("peer{i}")).await;
        c.send_text(me.user_id, &format!("m{i}"), "hello")
            .await
            .unwrap()
            .unwrap();
        peers.push((c, login.user_id));
    }
    let convs: Vec<u64> = peers
        .iter()
        .map(|(_, id)| conversation_id(me.user_id, *id))
        .collect();
    let conv = |i: usize| convs[i];
    let ids = |l: &v1::ConversationList| -> Vec<u64> {
        l.conversations.iter().map(|c| c.conversation_id).collect()
    };
    // Newest first, two at a time.
    let first = conversations_page(&mut alice, 2, None).await;
    assert_eq!(
        (ids(&first), first.has_more),
        (vec![conv(4), conv(3)], true)
    );
    let second = conversations_page(&mut alice, 2, first.conversations.last()).await;
    assert_eq!(
        (ids(&second), second.has_more),
        (vec![conv(2), conv(1)], true)
    );
    let third = conversations_page(&mut alice, 2, second.conversations.last()).await;
    assert_eq!((ids(&third), third.has_more), (vec![conv(0)], false));
    assert_eq!(third.conversations[0].unread_count, 1);
    // New activity moves a conversation to the top.
    let (c0, _) = &mut peers[0];
    c0.send_text(me.user_id, "again", "again")
        .await
        .unwrap()
        .unwrap();
    let all = conversations_page(&mut alice, 0, None).await;
    assert_eq!(
        (ids(&all), all.has_more),
        (vec![conv(0), conv(4), conv(3), conv(2), conv(1)], false)
    );
    assert_eq!(all.conversations[0].unread_count, 2);
}

/// One page of the conversation list, after `before` (the previous page's last entry).
async fn conversations_page(
    c: &mut Client,
    limit: u32,
    before: Option<&v1::Conversation>,
) -> v1::ConversationList {
    let req = v1::Conversations {
        limit,
        before_time_ms: before.map_or(0, |b| b.last_message.as_ref().unwrap().server_time_ms),
        before_conversation_id: before.map_or(0, |b| b.conversation_id),
    };
    match c.request(Body::Conversations(req)).await.unwrap() {
        Body::ConversationList(l) => l,
        other => panic!("Conversations answered with {other:?}"),
    }
}

/// Sends several messages back to back before reading any ack; returns the acked seqs in order.
async fn futures_free_pipeline(c: &mut Client, to: u64, ids: &[&str]) -> Vec<u64> {
    let mut request_ids = Vec::new();
    for id in ids {
        request_ids.push(c.send(text_message(to, id, "same")).await.unwrap());
    }
    let mut seqs = Vec::new();
    for rid in request_ids {
        let Body::SendAck(ack) = c.reply_to(rid).await.unwrap() else {
            panic!()
        };
        seqs.push(ack.seq);
    }
    seqs
}

#[tokio::test]
async fn bad_sends_are_refused_with_clear_codes() {
    let server = TestServer::start(&[("LIMITS__MESSAGE_BYTES_MAX", "100")]);
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let code = |r: Result<v1::SendAck, ringchat_bench::client::ServerError>| r.unwrap_err().code();
    assert_eq!(
        code(s.send_text(999_999_999, "x1", "hi").await.unwrap()),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(s.send_text(sender.user_id, "x2", "hi").await.unwrap()),
        ErrorCode::InvalidArgument
    );
    let long = "x".repeat(101);
    assert_eq!(
        code(s.send_text(recipient.user_id, "x3", &long).await.unwrap()),
        ErrorCode::MessageTooLarge
    );
    assert_eq!(
        code(s.send_text(recipient.user_id, "", "hi").await.unwrap()),
        ErrorCode::InvalidArgument
    );
    // Another pair's conversation is not readable.
    let stranger = server.user("stranger").await.1;
    let foreign = conversation_id(recipient.user_id, stranger.user_id);
    let Body::Error(e) = s
        .request(Body::Sync(v1::Sync {
            conversation_id: foreign,
            after_seq: 0,
            limit: 10,
        }))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::NotFound as i32);
    // And nothing was stored by the refusals.
    let conv = conversation_id(sender.user_id, recipient.user_id);
    assert!(s.sync_all(conv, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn recall_inside_the_window_reaches_everyone_and_sync_shows_the_marker() {
    let server = TestServer::start(&[]);
    let (mut s, sender) = server.user("sender").await;
    let (mut r, recipient) = server.user("recipient").await;
    let ack = s
        .send_text(recipient.user_id, "m1", "oops")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&r.next_push().await.unwrap()), "oops");

    // Only the sender may recall.
    let denied = r
        .recall(ack.conversation_id, ack.seq)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.code(), ErrorCode::Forbidden);

    let ok = s
        .recall(ack.conversation_id, ack.seq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ok.seq, ok.event_seq), (1, 2));
    let event = r.next_push().await.unwrap();
    assert_eq!(event.content_type, ContentType::Recall as i32);
    assert_eq!(
        (event.seq, event.recall_of_seq, event.from_user_id),
        (2, 1, sender.user_id)
    );
    // Recalling again answers the same, and appends nothing.
    let again = s
        .recall(ack.conversation_id, ack.seq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.event_seq, 2);

    let all = r.sync_all(ack.conversation_id, 0).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].recalled);
    assert!(all[0].content.is_empty(), "the content is gone");
    assert_eq!(all[1].recall_of_seq, 1);
    let missing = s
        .recall(ack.conversation_id, 99)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn recall_outside_the_window_is_refused() {
    let server = TestServer::start(&[("LIMITS__RECALL_WINDOW_S", "1")]);
    let (mut s, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let ack = s
        .send_text(recipient.user_id, "m1", "too late")
        .await
        .unwrap()
        .unwrap();
    // Wait until the server's window for this message has passed.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let wait = (ack.server_time_ms + 1_000).saturating_sub(now_ms) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let late = s
        .recall(ack.conversation_id, ack.seq)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(late.code(), ErrorCode::RecallWindowPassed);
    let all = s.sync_all(ack.conversation_id, 0).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(!all[0].recalled);
}

#[tokio::test]
async fn read_cursors_drive_unread_counts_and_receipts() {
    let server = TestServer::start(&[]);
    let (mut s, sender) = server.user("sender").await;
    let (mut r, recipient) = server.user("recipient").await;
    let (mut r_other, _) = server.device("recipient", "recipient-tablet").await;
    for i in 1..=5 {
        s.send_text(recipient.user_id, &format!("c{i}"), "x")
            .await
            .unwrap()
            .unwrap();
    }
    let conv = conversation_id(sender.user_id, recipient.user_id);
    let before = r.conversations().await.unwrap();
    assert_eq!(before[0].unread_count, 5);
    // The sender has read its own messages.
    assert_eq!(s.conversations().await.unwrap()[0].unread_count, 0);

    let delivered = r.delivery_ack(conv, 5).await.unwrap();
    assert_eq!((delivered.delivered_seq, delivered.read_seq), (5, 0));
    let ok = r.read(conv, 3).await.unwrap();
    assert_eq!((ok.delivered_seq, ok.read_seq), (5, 3));
    // Cursors never move back, and never past the last message.
    assert_eq!(r.read(conv, 2).await.unwrap().read_seq, 3);
    assert_eq!(r.read(conv, 0).await.unwrap().read_seq, 3);

    let mut receipts = Vec::new();
    while receipts.len() < 2 {
        let frame = s.next_event().await.unwrap().unwrap();
        if let Some(Body::Receipt(rc)) = frame.body {
            receipts.push(rc);
        }
    }
    assert_eq!(receipts[0].user_id, recipient.user_id);
    assert_eq!((receipts[0].delivered_seq, receipts[0].read_seq), (5, 0));
    assert_eq!((receipts[1].delivered_seq, receipts[1].read_seq), (5, 3));
    // The recipient's other device hears of the read too, to clear its badge.
    loop {
        let frame = r_other.next_event().await.unwrap().unwrap();
        if let Some(Body::Receipt(rc)) = frame.body
            && rc.read_seq == 3
        {
            break;
        }
    }
    let after = r.conversations().await.unwrap();
    assert_eq!((after[0].unread_count, after[0].read_seq), (2, 3));
    let seen_by_sender = s.conversations().await.unwrap();
    assert_eq!(
        (
            seen_by_sender[0].peer_read_seq,
            seen_by_sender[0].peer_delivered_seq
        ),
        (3, 5)
    );
    assert_eq!(r.read(conv, 1_000).await.unwrap().read_seq, 5);
}

#[tokio::test]
async fn a_delivery_ack_with_request_id_0_moves_the_cursor_without_a_reply() {
    let server = TestServer::start(&[]);
    let (mut s, sender) = server.user("sender0").await;
    let (mut r, recipient) = server.user("recipient0").await;
    for i in 1..=3 {
        s.send_text(recipient.user_id, &format!("z{i}"), "x")
            .await
            .unwrap()
            .unwrap();
    }
    let conv = conversation_id(sender.user_id, recipient.user_id);
    let ack = Frame {
        request_id: 0,
        body: Some(Body::DeliveryAck(v1::DeliveryAck {
            conversation_id: conv,
            seq: 3,
        })),
    };
    r.send_frame(&ack).await.unwrap();
    // The sender's receipt shows the ack was stored.
    loop {
        let frame = s.next_event().await.unwrap().expect("a receipt");
        if let Some(Body::Receipt(rc)) = frame.body {
            assert_eq!((rc.user_id, rc.delivered_seq), (recipient.user_id, 3));
            break;
        }
    }
    // The ack and this read go through the same queue in order, so a CursorOk for the ack would
    // have come before the read's and been kept aside as an event.
    let ok = r.read(conv, 1).await.unwrap();
    assert_eq!((ok.delivered_seq, ok.read_seq), (3, 1));
    while r.pending_events() > 0 {
        let frame = r.next_event().await.unwrap().unwrap();
        assert!(
            !matches!(frame.body, Some(Body::CursorOk(_))),
            "no CursorOk answers a request id 0: {frame:?}"
        );
    }
    // An ack for a conversation that is not the user's still gets its error, with id 0.
    let bad = Frame {
        request_id: 0,
        body: Some(Body::DeliveryAck(v1::DeliveryAck {
            conversation_id: conversation_id(sender.user_id, sender.user_id + 7),
            seq: 1,
        })),
    };
    r.send_frame(&bad).await.unwrap();
    let frame = r.recv_timeout().await.unwrap().expect("an error");
    match frame.body {
        Some(Body::Error(e)) => assert_eq!(
            (frame.request_id, e.code),
            (0, v1::ErrorCode::NotFound as i32)
        ),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test]
async fn typing_is_relayed_to_the_peer() {
    let server = TestServer::start(&[]);
    let (mut s, sender) = server.user("sender").await;
    let (mut r, recipient) = server.user("recipient").await;
    let conv = conversation_id(sender.user_id, recipient.user_id);
    s.send(Body::Typing(v1::Typing {
        conversation_id: conv,
        from_user_id: 0,
    }))
    .await
    .unwrap();
    let frame = r.next_event().await.unwrap().unwrap();
    let Some(Body::Typing(t)) = frame.body else {
        panic!("{frame:?}")
    };
    assert_eq!((t.conversation_id, t.from_user_id), (conv, sender.user_id));
    // Not stored: the conversation is still empty.
    assert!(r.sync_all(conv, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sender_over_its_rate_gets_retry_hints_not_a_disconnect() {
    let server = TestServer::start(&[("LIMITS__MESSAGES_PER_S_MAX", "20")]);
    let (mut s, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let mut request_ids = Vec::new();
    for i in 0..60 {
        request_ids.push(
            s.send(text_message(recipient.user_id, &format!("c{i}"), "x"))
                .await
                .unwrap(),
        );
    }
    let (mut acked, mut limited) = (0, 0);
    for rid in request_ids {
        match s.reply_to(rid).await.unwrap() {
            Body::SendAck(_) => acked += 1,
            Body::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited as i32);
                assert!(e.retry_after_ms > 0);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        acked >= 20 && limited > 0,
        "acked {acked}, limited {limited}"
    );
    s.ping().await.expect("still connected");
}

#[tokio::test]
async fn a_user_has_at_most_devices_max_sessions() {
    let server = TestServer::start(&[("LOGIN__DEVICES_MAX", "2")]);
    let _a = server.user("alice").await;
    let _b = server.device("alice", "second").await;
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let e = c
        .login_password("alice", PASSWORD, "third")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TooManyDevices);
}

async fn replaced_per_policy(driver: &str) {
    let server = TestServer::start(&[
        (
            "LOGIN__POLICY",
            "{ ios = \"replace\", android = \"coexist\" }",
        ),
        ("GATEWAY__DRIVER", driver),
    ]);
    drop(server.user("alice").await);
    let login = |device: &str, platform: v1::Platform| v1::Login {
        account: Some(v1::login::Account::Username("alice".into())),
        credential: Some(v1::login::Credential::Password(PASSWORD.into())),
        device_id: device.into(),
        platform: platform as i32,
        ..Default::default()
    };
    let addr = server.tcp;
    let connect = |l: v1::Login| logged_in(addr, l);
    let mut ios_old = connect(login("iphone-1", v1::Platform::Ios)).await;
    let mut android_1 = connect(login("pixel-1", v1::Platform::Android)).await;
    let _ios_new = connect(login("iphone-2", v1::Platform::Ios)).await;
    assert_eq!(
        common::expect_kicked_then_closed(&mut ios_old).await,
        v1::KickReason::Replaced
    );
    let _android_2 = connect(login("pixel-2", v1::Platform::Android)).await;
    android_1
        .ping()
        .await
        .expect("other platforms keep their sessions");
    // The same device id always replaces its older session.
    let _android_1_again = connect(login("pixel-1", v1::Platform::Android)).await;
    assert_eq!(
        common::expect_kicked_then_closed(&mut android_1).await,
        v1::KickReason::Replaced
    );
}

async fn logged_in(addr: std::net::SocketAddr, login: v1::Login) -> Client {
    let mut c = Client::connect(addr).await.unwrap();
    c.hello().await.unwrap();
    c.login(login).await.unwrap().unwrap();
    // Traffic first, so the connection has been read and sits idle when the kick comes.
    c.ping().await.unwrap();
    c
}

#[tokio::test]
async fn a_device_is_replaced_per_policy_on_io_uring() {
    replaced_per_policy("io_uring").await;
}

#[tokio::test]
async fn a_device_is_replaced_per_policy_on_epoll() {
    replaced_per_policy("epoll").await;
}
