//! Chat rooms over the real server: joining and leaving, member counts, broadcast to everyone
//! present but the sender in `room_seq` order exactly once, several sessions of a user, rooms
//! that go when empty and persistent ones that stay, and every limit with its code.
//!
//! Every room request of every connection is served in one queue, in order, so a room request
//! answered to a connection is a sync point: whatever room message was sent to it before has
//! arrived first (`barrier`).

mod common;

use std::time::Duration;

use common::TestServer;
use common::contacts::{ask, code, error};
use common::rooms::{
    WAIT, count, info, join, joined, leave, next_message, say, text, wait_for_count,
};
use ringchat_bench::client::Client;
use ringchat_proto::v1::{self, ContentType, ErrorCode};
use ringchat_proto::{Body, Frame};

/// A room request every connection may make (leaving a room it is not in): once answered,
/// every room message sent to `c` before it has arrived.
async fn barrier(c: &mut Client) {
    leave(c, "barrier").await;
}

/// The room messages `c` has been sent so far (after a barrier), taken.
async fn received(c: &mut Client) -> Vec<v1::RoomMessage> {
    barrier(c).await;
    let mut out = Vec::new();
    while c.pending_events() > 0 {
        match c.next_event().await.unwrap().expect("open").body {
            Some(Body::RoomMessage(m)) => out.push(m),
            other => panic!("expected only room messages, got {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn join_leave_and_member_count() {
    let server = TestServer::start(&[]);
    let (mut a1, _) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-dev2").await;
    let (mut b, _) = server.user("bob").await;
    assert_eq!(joined(&mut a1, "tea").await, 1);
    assert_eq!(joined(&mut a1, "tea").await, 1, "joining twice is harmless");
    assert_eq!(joined(&mut b, "tea").await, 2);
    // A second session of a member is in the audience but counts once.
    assert_eq!(joined(&mut a2, "tea").await, 2);
    assert_eq!(count(&mut b, "tea").await, 2);
    leave(&mut a1, "tea").await;
    assert_eq!(count(&mut b, "tea").await, 2, "alice is still in on dev2");
    leave(&mut a2, "tea").await;
    assert_eq!(count(&mut b, "tea").await, 1);
    leave(&mut a2, "tea").await;
    // Outside the room: neither its count nor a send.
    assert_eq!(code(info(&mut a1, "tea").await), ErrorCode::NotFound);
    assert_eq!(
        code(ask(&mut a1, text("tea", "hi")).await),
        ErrorCode::NotFound
    );
    assert_eq!(code(info(&mut a1, "nowhere").await), ErrorCode::NotFound);
    // Before login there are no rooms.
    let mut anon = server.client().await;
    anon.hello().await.unwrap();
    assert_eq!(
        code(join(&mut anon, "tea").await),
        ErrorCode::NotAuthenticated
    );
}

#[tokio::test]
async fn a_message_reaches_everyone_present_but_the_sender_in_order_exactly_once() {
    const EACH: u64 = 30;
    let server = TestServer::start(&[("ROOMS__USER_MESSAGES_PER_S_MAX", "1000")]);
    let (mut a1, alice) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-dev2").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    for member in [&mut a1, &mut a2, &mut b, &mut c] {
        joined(member, "hall").await;
    }
    // Alice (dev1) and Bob take turns; pipelined, then every answer collected.
    let mut sent = Vec::new();
    for i in 0..EACH {
        let ra = a1.send(text("hall", &format!("a{i}"))).await.unwrap();
        let rb = b.send(text("hall", &format!("b{i}"))).await.unwrap();
        sent.push((ra, rb));
    }
    let (mut seqs_a, mut seqs_b) = (Vec::new(), Vec::new());
    for (ra, rb) in sent {
        match a1.reply_to(ra).await.unwrap() {
            Body::RoomSent(s) => seqs_a.push(s.room_seq),
            other => panic!("{other:?}"),
        }
        match b.reply_to(rb).await.unwrap() {
            Body::RoomSent(s) => seqs_b.push(s.room_seq),
            other => panic!("{other:?}"),
        }
    }
    let mut all: Vec<u64> = seqs_a.iter().chain(&seqs_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2 * EACH).collect::<Vec<_>>(), "gap-free room_seq");

    let check = |got: &[v1::RoomMessage], want: &[u64], who: &str| {
        let seqs: Vec<u64> = got.iter().map(|m| m.room_seq).collect();
        assert_eq!(seqs, want, "{who}: every message once, in room_seq order");
        for m in got {
            assert_eq!(m.room, "hall");
            let from_alice = seqs_a.contains(&m.room_seq);
            let want_from = if from_alice {
                alice.user_id
            } else {
                bob.user_id
            };
            assert_eq!(m.from_user_id, want_from);
            assert_eq!(m.content_type(), ContentType::Text);
            let words = std::str::from_utf8(&m.content).unwrap();
            assert!(
                words.starts_with(if from_alice { 'a' } else { 'b' }),
                "{words}"
            );
            assert!(m.server_time_ms > 0);
        }
    };
    let mut only_b = seqs_b.clone();
    only_b.sort_unstable();
    let mut only_a = seqs_a.clone();
    only_a.sort_unstable();
    // The sender's own session gets nothing of its own; its other session gets everything.
    // Bob's messages that arrived while Alice waited for her answers were kept: all there.
    check(&received(&mut a1).await, &only_b, "alice dev1");
    check(&received(&mut a2).await, &all, "alice dev2");
    check(&received(&mut b).await, &only_a, "bob");
    check(&received(&mut c).await, &all, "carol");
    // Each message went to the three sessions besides its sender's.
    assert_eq!(
        server.metric("ringchat_room_messages_total"),
        2.0 * EACH as f64
    );
    assert_eq!(
        server.metric("ringchat_room_deliveries_total"),
        6.0 * EACH as f64
    );
    assert_eq!(server.metric("ringchat_rooms"), 1.0);
    assert_eq!(server.metric("ringchat_room_sessions"), 4.0);
}

#[tokio::test]
async fn leaving_stops_delivery_and_a_disconnect_removes_the_member() {
    let server = TestServer::start(&[]);
    let (mut a, _) = server.user("alice").await;
    let (mut b, _) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    for member in [&mut a, &mut b, &mut c] {
        joined(member, "hall").await;
    }
    leave(&mut b, "hall").await;
    assert_eq!(count(&mut a, "hall").await, 2);
    let seq = say(&mut a, "hall", "after bob left").await;
    assert_eq!(next_message(&mut c).await.room_seq, seq);
    assert!(received(&mut b).await.is_empty(), "bob left before it");

    drop(c);
    wait_for_count(&mut a, "hall", 1).await;
    // Bob comes back: the room counts him and Alice only.
    assert_eq!(joined(&mut b, "hall").await, 2);
    let seq2 = say(&mut a, "hall", "carol is gone").await;
    assert_eq!(seq2, seq + 1, "the room lives on with its numbering");
    assert_eq!(next_message(&mut b).await.room_seq, seq2);
}

#[tokio::test]
async fn an_empty_room_is_gone_and_a_persistent_room_is_kept() {
    let server = TestServer::start(&[("ROOMS__PERSISTENT", r#"["lobby", "news"]"#)]);
    let (mut a, _) = server.user("alice").await;
    let (mut b, _) = server.user("bob").await;
    assert_eq!(joined(&mut a, "tmp").await, 1);
    assert_eq!(joined(&mut b, "tmp").await, 2);
    say(&mut a, "tmp", "one").await;
    assert_eq!(say(&mut a, "tmp", "two").await, 2);
    leave(&mut a, "tmp").await;
    drop(b);
    // Alice rejoins once Bob's close has emptied the room: a new room, from the start.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = joined(&mut a, "tmp").await;
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never left");
        leave(&mut a, "tmp").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut b, _) = server.device("bob", "bob-dev2").await;
    assert_eq!(joined(&mut b, "tmp").await, 2);
    assert_eq!(
        say(&mut a, "tmp", "again").await,
        1,
        "a new room starts at 1"
    );

    // The persistent room keeps its numbering while nobody is in it.
    assert_eq!(joined(&mut a, "lobby").await, 1);
    say(&mut a, "lobby", "one").await;
    assert_eq!(say(&mut a, "lobby", "two").await, 2);
    leave(&mut a, "lobby").await;
    assert_eq!(joined(&mut b, "lobby").await, 1);
    assert_eq!(say(&mut b, "lobby", "three").await, 3);
    // And it is there without anyone having joined it first.
    assert_eq!(joined(&mut b, "news").await, 1);
}

#[tokio::test]
async fn request_id_zero_gets_no_room_sent() {
    let server = TestServer::start(&[]);
    let (mut a, _) = server.user("alice").await;
    let (mut b, _) = server.user("bob").await;
    joined(&mut a, "hall").await;
    joined(&mut b, "hall").await;
    a.send_frame(&Frame {
        request_id: 0,
        body: Some(text("hall", "fire and forget")),
    })
    .await
    .unwrap();
    // Served in order: once the barrier is answered, a RoomSent would have come before it.
    assert!(received(&mut a).await.is_empty());
    let m = next_message(&mut b).await;
    assert_eq!((m.room_seq, &m.content[..]), (1, &b"fire and forget"[..]));
    // With an id, the same send is answered.
    assert_eq!(say(&mut a, "hall", "answered").await, 2);
}

#[tokio::test]
async fn names_and_contents_are_checked() {
    let server = TestServer::start(&[("LIMITS__MESSAGE_BYTES_MAX", "1000")]);
    let (mut a, _) = server.user("alice").await;
    let long = "x".repeat(65);
    for bad in ["", "Hall", "two words", "café", "a/b", long.as_str()] {
        assert_eq!(
            code(join(&mut a, bad).await),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            code(ask(&mut a, text(bad, "hi")).await),
            ErrorCode::InvalidArgument
        );
        assert_eq!(code(info(&mut a, bad).await), ErrorCode::InvalidArgument);
    }
    assert_eq!(joined(&mut a, &"x".repeat(64)).await, 1);
    assert_eq!(joined(&mut a, "a.b-c_9").await, 1);
    let send = |content_type: ContentType, content: Vec<u8>| {
        Body::RoomSend(v1::RoomSend {
            room: "a.b-c_9".into(),
            content_type: content_type as i32,
            content: content.into(),
        })
    };
    let too_big = error(ask(&mut a, send(ContentType::Custom, vec![0; 1001])).await);
    assert_eq!(too_big.code(), ErrorCode::MessageTooLarge);
    for (t, content) in [
        (ContentType::Unspecified, b"x".to_vec()),
        (ContentType::Recall, b"x".to_vec()),
        (ContentType::Text, vec![]),
        (ContentType::Text, vec![0xff, 0xfe]),
    ] {
        assert_eq!(
            code(ask(&mut a, send(t, content)).await),
            ErrorCode::InvalidArgument,
            "{t:?}"
        );
    }
    for t in [ContentType::Image, ContentType::File, ContentType::Custom] {
        assert!(matches!(
            ask(&mut a, send(t, vec![0; 1000])).await,
            Body::RoomSent(_)
        ));
    }
}

#[tokio::test]
async fn room_and_server_limits_answer_with_their_codes() {
    let server = TestServer::start(&[
        ("ROOMS__MEMBERS_MAX", "2"),
        ("ROOMS__MAX", "3"),
        ("ROOMS__PER_USER_MAX", "2"),
    ]);
    let (mut a1, _) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-dev2").await;
    let (mut b, _) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    joined(&mut a1, "x").await;
    joined(&mut b, "x").await;
    let full = error(join(&mut c, "x").await);
    assert_eq!(full.code(), ErrorCode::RoomFull, "{full:?}");
    assert_eq!(
        joined(&mut a2, "x").await,
        2,
        "a member's other session fits"
    );
    // Two rooms per user, over all their sessions.
    joined(&mut a1, "y").await;
    assert_eq!(code(join(&mut a2, "z").await), ErrorCode::TooManyRooms);
    assert_eq!(joined(&mut a2, "y").await, 1, "a room alice is in already");
    // Three rooms on the server.
    joined(&mut b, "z").await;
    assert_eq!(code(join(&mut c, "w").await), ErrorCode::TooManyRooms);
    // A room that went frees its place.
    leave(&mut b, "z").await;
    assert_eq!(joined(&mut c, "w").await, 1);
}

/// Every test client connects from 127.0.0.1: one network, whose rooms are bounded however
/// many accounts it uses.
#[tokio::test]
async fn one_network_makes_at_most_per_network_max_rooms() {
    let server = TestServer::start(&[("ROOMS__PER_NETWORK_MAX", "2")]);
    let (mut a, _) = server.user("alice").await;
    let (mut b, _) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    joined(&mut a, "x").await;
    joined(&mut b, "y").await;
    let refused = error(join(&mut c, "z").await);
    assert_eq!(refused.code(), ErrorCode::TooManyRooms, "{refused:?}");
    assert!(refused.message.contains("network"), "{refused:?}");
    assert_eq!(
        joined(&mut c, "x").await,
        2,
        "an existing room may be joined"
    );
    // y goes with its last member, and frees the network's place.
    leave(&mut b, "y").await;
    assert_eq!(joined(&mut b, "z").await, 1);
}

#[tokio::test]
async fn message_budgets_per_room_and_per_user() {
    // One message a second per room and per user: each refusal below must come within a second
    // of the send that spent the budget. A machine too slow for that makes the run say nothing
    // (a refusal becomes a success): it is timed, and then run again with fresh users and rooms.
    const ATTEMPTS: usize = 5;
    let server = TestServer::start(&[
        ("ROOMS__MESSAGES_PER_S_MAX", "1"),
        ("ROOMS__USER_MESSAGES_PER_S_MAX", "1"),
    ]);
    for attempt in 0..ATTEMPTS {
        match message_budgets(&server, attempt).await {
            Ok(()) => return,
            Err(took) => {
                eprintln!("attempt {attempt}: the refusals came {took:?} after the spending send")
            }
        }
    }
    panic!("every attempt took a second or more between a send and the refusals it should cause");
}

/// One run of [`message_budgets_per_room_and_per_user`]; `Err(elapsed)` when the refusals could
/// not be checked: a send the budget should have refused came a second or more after the send
/// that spent it (refilled by then).
async fn message_budgets(server: &TestServer, attempt: usize) -> Result<(), Duration> {
    let (mut a, _) = server.user(&format!("alice{attempt}")).await;
    let (mut b, _) = server.user(&format!("bob{attempt}")).await;
    let (mut c, _) = server.user(&format!("carol{attempt}")).await;
    let (hall, side) = (format!("hall{attempt}"), format!("side{attempt}"));
    joined(&mut a, &hall).await;
    joined(&mut b, &hall).await;
    joined(&mut a, &side).await;
    joined(&mut c, &side).await;
    // Taken before the send: the budget is spent later, so a refill comes a second after this
    // at the soonest.
    let spent = std::time::Instant::now();
    assert_eq!(say(&mut a, &hall, "1").await, 1);
    // The room's budget: Bob has his own left, the hall has none.
    let room_reply = ask(&mut b, text(&hall, "2")).await;
    // The user's budget, over all their rooms: the side room has its own left, Alice has none.
    let user_reply = ask(&mut a, text(&side, "3")).await;
    let took = spent.elapsed();
    // 10 ms short of the second: the server's clock counts whole milliseconds.
    if took >= Duration::from_millis(990) {
        return Err(took);
    }
    let limited = error(room_reply);
    assert_eq!(limited.code(), ErrorCode::RoomRateLimited, "{limited:?}");
    assert!(limited.message.contains("room"), "{limited:?}");
    assert!((1..=1000).contains(&limited.retry_after_ms), "{limited:?}");
    let mine = error(user_reply);
    assert_eq!(mine.code(), ErrorCode::RoomRateLimited, "{mine:?}");
    assert!(mine.message.contains("you may send"), "{mine:?}");
    assert!((1..=1000).contains(&mine.retry_after_ms), "{mine:?}");
    assert_eq!(say(&mut c, &side, "4").await, 1, "Carol was not limited");
    // Waiting as told is enough, and the refusal took no room_seq.
    tokio::time::sleep(Duration::from_millis(limited.retry_after_ms)).await;
    assert_eq!(say(&mut b, &hall, "5").await, 2);
    Ok(())
}

#[tokio::test]
async fn a_member_that_reads_nothing_is_kicked_and_the_room_goes_on() {
    const SIZE: usize = 16 * 1024;
    const COUNT: u64 = 1024;
    const PIPELINE: u64 = 16;
    let server = TestServer::start(&[
        ("GATEWAY__OUTBOUND_FRAMES_MAX", "64"),
        ("ROOMS__MESSAGES_PER_S_MAX", "100000"),
        ("ROOMS__USER_MESSAGES_PER_S_MAX", "100000"),
    ]);
    let (mut sender, _) = server.user("sender").await;
    let (mut reader, _) = server.user("reader").await;
    let slow = Client::connect_with_recv_buffer(server.tcp, 4096)
        .await
        .unwrap();
    let (mut slow, _) = slow
        .login_or_register("slow", common::PASSWORD, "slow-dev")
        .await
        .unwrap();
    for member in [&mut sender, &mut reader, &mut slow] {
        joined(member, "flood").await;
    }
    // The sender sends a batch, then the reader takes it: the reader never has more than one
    // batch (well under the outbound limit) waiting, however the machine schedules the test,
    // while the slow member's backlog grows by a batch each round.
    let mut next = 1;
    while next <= COUNT {
        let mut pending = Vec::new();
        for _ in 0..PIPELINE {
            let body = Body::RoomSend(v1::RoomSend {
                room: "flood".into(),
                content_type: ContentType::Custom as i32,
                content: vec![b'x'; SIZE].into(),
            });
            pending.push(sender.send(body).await.unwrap());
        }
        for rid in pending {
            let reply = sender.reply_to(rid).await.unwrap();
            assert!(matches!(reply, Body::RoomSent(_)), "{reply:?}");
        }
        for _ in 0..PIPELINE {
            let m = next_message(&mut reader).await;
            assert_eq!(m.room_seq, next, "in order, none lost");
            next += 1;
        }
    }
    // The slow member was dropped (its queue overflowed), and with it its place in the room.
    wait_for_count(&mut reader, "flood", 2).await;
    let slow_kicks = || -> f64 {
        server
            .metrics()
            .iter()
            .filter(|(k, _)| {
                k.starts_with("ringchat_kicks_total{")
                    && k.contains("reason=\"KICK_REASON_SLOW_CONSUMER\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while slow_kicks() < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slow-consumer kick counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(slow);
}
