//! Blocks and the DM policy over the real server: what they stop, what the blocked user is
//! told, a send in flight racing a block, limits and paging.

mod common;

use common::TestServer;
use common::contacts::*;
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1::{
    self, DmPolicy, ErrorCode, FriendEventKind as Kind, FriendState as State,
};

fn block_ok(reply: Body, user_id: u64, blocked: bool) {
    match reply {
        Body::BlockOk(ok) => assert_eq!((ok.user_id, ok.blocked), (user_id, blocked)),
        other => panic!("expected BlockOk, got {other:?}"),
    }
}

#[tokio::test]
async fn a_block_stops_messages_and_requests_both_ways_without_naming_itself() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    b.send_text(a_id, "before", "hi").await.unwrap().unwrap();
    a.next_push().await.unwrap();
    block_ok(block(&mut a, b_id).await, b_id, true);

    // The blocked user learns only that Alice does not take this from them.
    let refused = b
        .send_text(a_id, "after", "hello?")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::NotAllowed);
    assert!(
        !refused.0.message.to_lowercase().contains("block"),
        "{refused}"
    );
    let e = error(request(&mut b, a_id, "").await);
    assert_eq!(e.code(), ErrorCode::NotAllowed);
    assert!(!e.message.to_lowercase().contains("block"), "{e:?}");
    // The blocker cannot write either, and is told why.
    let own = a.send_text(b_id, "mine", "x").await.unwrap().unwrap_err();
    assert_eq!(own.code(), ErrorCode::NotAllowed);
    assert!(own.0.message.contains("unblock"), "{own}");
    assert_eq!(code(request(&mut a, b_id, "").await), ErrorCode::NotAllowed);
    // What was stored before the block stays; nothing after it.
    let conv = conversation_id(a_id, b_id);
    let stored = a.sync_all(conv, 0).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect::<Vec<_>>(),
        ["before"]
    );
    assert!(
        sync_point(&mut a, a_id, b_id).await.is_empty(),
        "no push after the block"
    );

    // Blocking twice is fine; unblocking lets messages through again.
    block_ok(block(&mut a, b_id).await, b_id, true);
    block_ok(unblock(&mut a, b_id).await, b_id, false);
    block_ok(unblock(&mut a, b_id).await, b_id, false);
    b.send_text(a_id, "again", "back").await.unwrap().unwrap();
    assert_eq!(a.next_push().await.unwrap().client_msg_id, "again");
}

/// Read and delivery receipts across a block stay with the reader: the blocked user is not
/// told when the blocker reads (that would show the blocker active); the blocker's own other
/// sessions still are.
#[tokio::test]
async fn a_blockers_reads_are_not_told_to_the_blocked_user() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    let sent = b.send_text(a_id, "m1", "hi").await.unwrap().unwrap();
    a.next_push().await.unwrap();
    block_ok(block(&mut a, b_id).await, b_id, true);
    let (mut a2, _) = server.device("alice", "alice-dev2").await;
    a.read(conversation_id(a_id, b_id), sent.seq)
        .await
        .expect("CursorOk");
    let told = |frames: &[Body]| {
        frames
            .iter()
            .any(|f| matches!(f, Body::Receipt(r) if r.user_id == a_id))
    };
    assert!(
        told(&sync_point(&mut a2, a_id, b_id).await),
        "her own device"
    );
    assert!(
        !told(&sync_point(&mut b, b_id, a_id).await),
        "not the blocked user"
    );
}

/// The peer's cursors of `me`'s entry for `conv`: (delivered, read).
fn peer_cursors(list: &[v1::Conversation], conv: u64) -> (u64, u64) {
    let e = list
        .iter()
        .find(|c| c.conversation_id == conv)
        .expect("the conversation is listed");
    (e.peer_delivered_seq, e.peer_read_seq)
}

/// The conversation list does not show the blocked user the blocker's cursors (a read cursor
/// that moves would show the blocker active), nor the other way round, in a resume either;
/// an unblock shows them again.
#[tokio::test]
async fn a_block_hides_each_sides_cursors_in_the_conversation_list() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let mut bob = common::resume::Device::new(&server, "bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    let conv = conversation_id(a_id, b_id);
    let b = bob.client.as_mut().expect("connected");
    // Alice writes seq 1 (read by her as its sender), Bob 2 and 3 and reads everything.
    a.send_text(b_id, "a1", "hi").await.unwrap().unwrap();
    b.send_text(a_id, "b1", "hello").await.unwrap().unwrap();
    b.send_text(a_id, "b2", "there").await.unwrap().unwrap();
    b.read(conv, 3).await.expect("CursorOk");
    assert_eq!(
        peer_cursors(&b.conversations().await.unwrap(), conv),
        (1, 1)
    );
    assert_eq!(
        peer_cursors(&a.conversations().await.unwrap(), conv),
        (3, 3)
    );

    block_ok(block(&mut a, b_id).await, b_id, true);
    a.read(conv, u64::MAX).await.expect("CursorOk");
    assert_eq!(
        peer_cursors(&b.conversations().await.unwrap(), conv),
        (0, 0),
        "the blocked user does not see the blocker read"
    );
    assert_eq!(
        peer_cursors(&a.conversations().await.unwrap(), conv),
        (0, 0),
        "nor the blocker the blocked user's cursors"
    );
    // A resume lists the conversation the same way.
    bob.disconnect();
    let (_b2, resumed) = bob.reconnect(&server, bob.since, &[(conv, 3)]).await;
    let resumed = resumed.expect("resumed");
    assert_eq!(peer_cursors(&resumed.done.conversations, conv), (0, 0));

    block_ok(unblock(&mut a, b_id).await, b_id, false);
    let (mut b3, _) = server.device("bob", "bob-dev3").await;
    assert_eq!(
        peer_cursors(&b3.conversations().await.unwrap(), conv),
        (3, 3),
        "unblocked: Alice's read shows"
    );
    assert_eq!(
        peer_cursors(&a.conversations().await.unwrap(), conv),
        (3, 3)
    );
}

/// Typing into the direct conversation of a blocked pair reaches neither of them, and is not
/// refused either (that would name the block); after an unblock it flows again.
#[tokio::test]
async fn a_block_stops_typing_both_ways_silently() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    let conv = conversation_id(a_id, b_id);
    let typing = || {
        Body::Typing(v1::Typing {
            conversation_id: conv,
            from_user_id: 0,
        })
    };
    block_ok(block(&mut a, b_id).await, b_id, true);
    let dropped = r#"ringchat_typing_dropped_total{reason="blocked"}"#;
    for (n, who) in [(1.0, &mut b), (2.0, &mut a)] {
        who.send(typing()).await.unwrap();
        common::wait_until_async("the typing dropped", || server.metric(dropped) >= n).await;
    }
    // Dropped for good: nothing reached either side (and no error came back).
    assert!(sync_point(&mut a, a_id, b_id).await.is_empty());
    assert!(sync_point(&mut b, b_id, a_id).await.is_empty());

    block_ok(unblock(&mut a, b_id).await, b_id, false);
    b.send(typing()).await.unwrap();
    expect_typing(&mut a, conv, b_id).await;
    assert_eq!(server.metric(dropped), 2.0);
}

#[tokio::test]
async fn blocking_ends_friendship_and_requests_as_ordinary_events_would() {
    let server = TestServer::start(&[]);
    let (mut a1, alice) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-laptop").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let (mut d, dave) = server.user("dave").await;
    let (a_id, b_id, c_id, d_id) = (alice.user_id, bob.user_id, carol.user_id, dave.user_id);

    // Friends with Bob: the block reads to Bob as a delete.
    befriend(&mut a1, a_id, &mut b, b_id).await;
    expect_event(&mut a2, Kind::Request, b_id, State::RequestSent).await;
    expect_event(&mut a2, Kind::Accepted, b_id, State::Friends).await;
    expect_event(&mut a1, Kind::Accepted, b_id, State::Friends).await;
    expect_event(&mut b, Kind::Request, a_id, State::RequestReceived).await;
    block_ok(block(&mut a1, b_id).await, b_id, true);
    expect_event(&mut b, Kind::Deleted, a_id, State::None).await;
    let e = expect_event(&mut a2, Kind::Blocked, b_id, State::None).await;
    assert!(e.profile.unwrap().blocked);
    assert!(list_friends(&mut a1, 0, 0).await.friends.is_empty());
    assert!(list_friends(&mut b, 0, 0).await.friends.is_empty());

    // Carol's request to Alice: the block reads to Carol as a rejection.
    friend_ok(request(&mut c, a_id, "hi").await, a_id, State::RequestSent);
    expect_event(&mut a1, Kind::Request, c_id, State::RequestReceived).await;
    expect_event(&mut a2, Kind::Request, c_id, State::RequestReceived).await;
    block_ok(block(&mut a1, c_id).await, c_id, true);
    expect_event(&mut c, Kind::Rejected, a_id, State::None).await;
    expect_event(&mut a2, Kind::Blocked, c_id, State::None).await;
    assert!(
        list_requests(&mut c, v1::RequestDirection::Outgoing, 0, 0)
            .await
            .requests
            .is_empty()
    );

    // Alice's request to Dave: the block reads to Dave as a cancel.
    friend_ok(request(&mut a1, d_id, "").await, d_id, State::RequestSent);
    expect_event(&mut a2, Kind::Request, d_id, State::RequestSent).await;
    expect_event(&mut d, Kind::Request, a_id, State::RequestReceived).await;
    block_ok(block(&mut a1, d_id).await, d_id, true);
    expect_event(&mut d, Kind::Cancelled, a_id, State::None).await;
    assert!(
        list_requests(&mut d, v1::RequestDirection::Incoming, 0, 0)
            .await
            .requests
            .is_empty()
    );

    // Nobody was told of a block itself, and the blocker's list has all three, by name.
    for (client, me) in [(&mut b, b_id), (&mut c, c_id), (&mut d, d_id)] {
        let rest = sync_point(client, me, a_id).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
    let blocks = list_blocks(&mut a1, 0, 0).await;
    let names: Vec<&str> = blocks
        .users
        .iter()
        .map(|u| u.profile.as_ref().unwrap().username.as_str())
        .collect();
    assert_eq!(names, ["bob", "carol", "dave"]);
    assert!(
        blocks
            .users
            .iter()
            .all(|u| u.since_ms > 0 && u.profile.as_ref().unwrap().blocked)
    );
}

#[tokio::test]
async fn a_send_in_flight_racing_a_block_is_stored_before_it_or_not_at_all() {
    /// Sends Bob keeps in flight.
    const WINDOW: usize = 32;
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    // Bob sends without pause, WINDOW in flight, until he is refused; his answers in order.
    let sender = tokio::spawn(async move {
        let mut in_flight = std::collections::VecDeque::new();
        let mut answers = Vec::new();
        let mut i = 0u64;
        loop {
            while in_flight.len() < WINDOW {
                in_flight.push_back(
                    b.send(text_message(a_id, &format!("m{i}"), "x"))
                        .await
                        .unwrap(),
                );
                i += 1;
            }
            let id = in_flight.pop_front().unwrap();
            let answer = b.reply_to(id).await.unwrap();
            let refused = matches!(answer, Body::Error(_));
            answers.push(answer);
            if refused {
                for id in in_flight {
                    answers.push(b.reply_to(id).await.unwrap());
                }
                return (b, answers);
            }
        }
    });
    // Alice blocks once Bob's messages are arriving, while more are in flight.
    a.next_push().await.unwrap();
    block_ok(block(&mut a, b_id).await, b_id, true);
    let (mut b, answers) = sender.await.unwrap();

    // Bob's sends commit in order: acks, then refusals only.
    let acked = answers
        .iter()
        .take_while(|r| matches!(r, Body::SendAck(_)))
        .count();
    for r in &answers[acked..] {
        assert_eq!(code(r.clone()), ErrorCode::NotAllowed);
    }
    assert!(
        acked >= 1 && answers.len() > acked,
        "acked {acked} of {}",
        answers.len()
    );
    // Exactly the acked messages are stored and reached Alice: nothing after the block.
    let stored = a.sync_all(conversation_id(a_id, b_id), 0).await.unwrap();
    assert_eq!(stored.len(), acked);
    let mut pushed = 1; // the one that started the block
    for frame in sync_point(&mut a, a_id, b_id).await {
        if matches!(frame, Body::Push(_)) {
            pushed += 1;
        }
    }
    assert_eq!(pushed, acked);
    // And a send after the block was acknowledged is refused.
    assert_eq!(
        b.send_text(a_id, "late", "x")
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        ErrorCode::NotAllowed
    );
}

#[tokio::test]
async fn friends_only_users_take_new_conversations_from_friends_only() {
    let server = TestServer::start(&[]);
    let (mut y, you) = server.user("picky").await;
    let (mut s, stranger) = server.user("stranger").await;
    let (mut f, friend) = server.user("friend").await;
    let (y_id, s_id, f_id) = (you.user_id, stranger.user_id, friend.user_id);
    befriend(&mut f, f_id, &mut y, y_id).await;
    match set_privacy(&mut y, DmPolicy::Friends).await {
        Body::Privacy(p) => assert_eq!(p.dm_policy(), DmPolicy::Friends),
        other => panic!("{other:?}"),
    }
    let own = profiles(&mut y, &[y_id]).await;
    assert_eq!(own[0].dm_policy(), DmPolicy::Friends);
    assert_eq!(
        s.send_text(y_id, "s1", "hi")
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        ErrorCode::NotAllowed
    );
    f.send_text(y_id, "f1", "hi").await.unwrap().unwrap();
    // Once picky starts the conversation, the stranger may answer.
    y.send_text(s_id, "y1", "hello stranger")
        .await
        .unwrap()
        .unwrap();
    s.send_text(y_id, "s2", "hello back")
        .await
        .unwrap()
        .unwrap();
    // Back to the server's default (everyone).
    match set_privacy(&mut y, DmPolicy::Unspecified).await {
        Body::Privacy(p) => assert_eq!(p.dm_policy(), DmPolicy::Everyone),
        other => panic!("{other:?}"),
    }
    let (mut n, _) = server.user("newcomer").await;
    n.send_text(y_id, "n1", "hi").await.unwrap().unwrap();
    assert_eq!(
        code(ask(&mut y, Body::SetPrivacy(v1::SetPrivacy { dm_policy: 7 })).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn the_server_default_policy_applies_until_a_user_chooses() {
    let server = TestServer::start(&[("CONTACTS__DM_POLICY_DEFAULT", "friends")]);
    let (mut y, you) = server.user("picky").await;
    let (mut s, _) = server.user("stranger").await;
    assert_eq!(
        s.send_text(you.user_id, "s1", "hi")
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        ErrorCode::NotAllowed
    );
    assert_eq!(
        profiles(&mut y, &[you.user_id]).await[0].dm_policy(),
        DmPolicy::Friends
    );
    set_privacy(&mut y, DmPolicy::Everyone).await;
    s.send_text(you.user_id, "s1", "hi").await.unwrap().unwrap();
}

#[tokio::test]
async fn block_limits_bad_targets_and_paging() {
    let server = TestServer::start(&[("CONTACTS__BLOCKS_MAX", "3")]);
    let (mut a, alice) = server.user("alice").await;
    let mut ids = Vec::new();
    for name in ["b1-user", "b2-user", "b3-user", "b4-user"] {
        ids.push(server.user(name).await.1.user_id);
    }
    for id in &ids[..3] {
        block_ok(block(&mut a, *id).await, *id, true);
    }
    assert_eq!(code(block(&mut a, ids[3]).await), ErrorCode::TooManyBlocks);
    block_ok(block(&mut a, ids[0]).await, ids[0], true);
    assert_eq!(
        code(block(&mut a, alice.user_id).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(block(&mut a, 999_999_999).await),
        ErrorCode::UserNotFound
    );
    assert_eq!(code(block(&mut a, 7).await), ErrorCode::UserNotFound);
    let first = list_blocks(&mut a, 0, 2).await;
    let page_ids = |l: &v1::BlockList| {
        l.users
            .iter()
            .map(|u| u.profile.as_ref().unwrap().user_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (page_ids(&first), first.has_more),
        (ids[..2].to_vec(), true)
    );
    let rest = list_blocks(&mut a, ids[1], 2).await;
    assert_eq!(
        (page_ids(&rest), rest.has_more),
        (ids[2..3].to_vec(), false)
    );
    // An unblock makes room.
    block_ok(unblock(&mut a, ids[0]).await, ids[0], false);
    block_ok(block(&mut a, ids[3]).await, ids[3], true);
}

/// The typing events `frames` hold, as (conversation, from).
/// The next event `c` gets is a Typing in `conv` from `from`.
async fn expect_typing(c: &mut ringchat_bench::client::Client, conv: u64, from: u64) {
    match c.next_event().await.unwrap().unwrap().body {
        Some(Body::Typing(t)) => assert_eq!((t.conversation_id, t.from_user_id), (conv, from)),
        other => panic!("expected Typing, got {other:?}"),
    }
}

fn typings(frames: &[Body]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Body::Typing(t) => Some((t.conversation_id, t.from_user_id)),
            _ => None,
        })
        .collect()
}

/// A friends-only user gets no typing from a stranger they share no message with (a send
/// would be refused: typing must not reach further), and the stranger is not told; a friend's
/// typing still arrives, and so does the stranger's once the conversation has a message.
#[tokio::test]
async fn friends_only_users_get_no_typing_from_strangers_before_a_conversation() {
    let server = TestServer::start(&[]);
    let (mut y, you) = server.user("picky").await;
    let (mut s, stranger) = server.user("stranger").await;
    let (mut f, friend) = server.user("friend").await;
    let (y_id, s_id, f_id) = (you.user_id, stranger.user_id, friend.user_id);
    befriend(&mut f, f_id, &mut y, y_id).await;
    set_privacy(&mut y, DmPolicy::Friends).await;
    let typing = |conv| {
        Body::Typing(v1::Typing {
            conversation_id: conv,
            from_user_id: 0,
        })
    };
    let (with_s, with_f) = (conversation_id(s_id, y_id), conversation_id(f_id, y_id));
    let dropped = r#"ringchat_typing_dropped_total{reason="dm_policy"}"#;

    // The stranger's typing, then the friend's: the friend's is the fence (picky reads on
    // until it), then whatever else came before a request's answer; the counter shows the
    // stranger's typing was looked at and dropped (it will not come later).
    s.send(typing(with_s)).await.unwrap();
    f.send(typing(with_f)).await.unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(with_f, f_id)) {
        let frame = y.next_event().await.unwrap().expect("an event");
        seen.extend(typings(frame.body.as_slice()));
    }
    seen.extend(typings(&sync_point(&mut y, y_id, s_id).await));
    assert!(
        !seen.contains(&(with_s, s_id)),
        "a stranger's typing: {seen:?}"
    );
    common::wait_until_async("the stranger's typing dropped", || {
        server.metric(dropped) >= 1.0
    })
    .await;
    // Not refused either: the stranger gets no answer (a send's refusal is its answer).
    assert!(sync_point(&mut s, s_id, y_id).await.is_empty());

    // Once picky has written, the conversation exists and the stranger's typing arrives.
    y.send_text(s_id, "y1", "hello").await.unwrap().unwrap();
    s.next_push().await.unwrap();
    s.send(typing(with_s)).await.unwrap();
    expect_typing(&mut y, with_s, s_id).await;
    assert_eq!(server.metric(dropped), 1.0);
}

/// A recall across a block is stored (the blocked user may hide its own message) but does
/// not reach the blocker: the recaller gets RecallOk, the blocker no push, no unread and no
/// move up their list; the recaller's own other devices hear of it.
#[tokio::test]
async fn a_recall_across_a_block_stays_with_the_recaller() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let (a_id, b_id, c_id) = (alice.user_id, bob.user_id, carol.user_id);
    let conv = conversation_id(a_id, b_id);
    let sent = b.send_text(a_id, "b1", "oops").await.unwrap().unwrap();
    a.next_push().await.unwrap();
    // Carol writes after Bob: her conversation is on top of Alice's list.
    c.send_text(a_id, "c1", "hi").await.unwrap().unwrap();
    a.next_push().await.unwrap();
    let entry = |list: &[v1::Conversation]| {
        list.iter()
            .find(|e| e.conversation_id == conv)
            .cloned()
            .expect("listed")
    };
    let before = a.conversations().await.unwrap();
    assert_eq!(before[0].conversation_id, conversation_id(a_id, c_id));
    assert_eq!(entry(&before).unread_count, 1);

    block_ok(block(&mut a, b_id).await, b_id, true);
    let (mut b2, _) = server.device("bob", "bob-dev2").await;
    let ok = b.recall(conv, sent.seq).await.unwrap().unwrap();
    assert_eq!((ok.seq, ok.event_seq), (1, 2));
    // Bob's other device hears of it; Alice does not.
    let event = b2.next_push().await.unwrap();
    assert_eq!((event.seq, event.recall_of_seq), (2, 1));
    let pushed = |frames: &[Body]| frames.iter().any(|f| matches!(f, Body::Push(_)));
    assert!(!pushed(&sync_point(&mut a, a_id, b_id).await), "no push");
    // Stored: Bob's message is hidden for both.
    let stored = a.sync_all(conv, 0).await.unwrap();
    assert!(stored[0].recalled);
    // Alice has nothing left to read there, and her list did not move.
    let after = a.conversations().await.unwrap();
    assert_eq!(after[0].conversation_id, conversation_id(a_id, c_id));
    let e = entry(&after);
    assert!(e.unread_count <= 1, "unread went up: {e:?}");
    assert_eq!(e.unread_count, 0, "only a recalled message was unread");
    assert_eq!(
        e.last_message.map(|m| m.server_time_ms),
        entry(&before).last_message.map(|m| m.server_time_ms)
    );
}

/// A recall across a block names the conversation's other member as `to_user_id`, in the push
/// to the recaller's other devices and in the stored event, as any recall does: the block
/// narrows who is told, not whom the event is to (a client files a message under its peer).
#[tokio::test]
async fn a_recall_across_a_block_is_still_to_the_other_member() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    let conv = conversation_id(a_id, b_id);
    let sent = a.send_text(b_id, "a1", "oops").await.unwrap().unwrap();
    assert_eq!(sent.seq, 1);
    b.next_push().await.unwrap();
    // Blocked both ways: whichever side's block it is, the recall stays with Alice.
    block_ok(block(&mut b, a_id).await, a_id, true);
    block_ok(block(&mut a, b_id).await, b_id, true);
    let (mut a2, _) = server.device("alice", "alice-dev2").await;

    let ok = a.recall(conv, sent.seq).await.unwrap().unwrap();
    assert_eq!((ok.seq, ok.event_seq), (1, 2));
    let event = a2.next_push().await.unwrap();
    assert_eq!((event.seq, event.recall_of_seq), (ok.event_seq, 1));
    assert_eq!((event.from_user_id, event.to_user_id), (a_id, b_id));
    // Stored so: a later Sync (any device, any time) reads the same.
    let page = a2.sync(conv, ok.event_seq - 1, 1).await.unwrap();
    let stored = page.messages.first().expect("the recall event");
    assert_eq!(stored.seq, ok.event_seq);
    assert_eq!((stored.from_user_id, stored.to_user_id), (a_id, b_id));
}
