//! Resume instead of resync, over the real server: a client that reconnects with its token and
//! a `Login.resume` gets exactly what it missed (direct and group conversations, nothing twice,
//! nothing of a stranger's conversation, nothing of a group after its removal) in the frames
//! that follow its `LoginOk`; and the cases it cannot serve say so (`Resumed{complete: false}`)
//! or, for a malformed resume, refuse the login.

mod common;

use common::TestServer;
use common::contacts::ask;
use common::groups::{ack, create_id, event_kind, ok, remove, send, texts};
use common::resume::{Device, listed, nothing_more, seqs};
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::v1::{self, ErrorCode, GroupEventKind, ResumeIncomplete};

#[tokio::test]
async fn resume_returns_exactly_what_was_missed() {
    let server = TestServer::start(&[]);
    let mut a = Device::new(&server, "alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let direct = conversation_id(a.user_id, bob.user_id);
    // Before the blip: one direct message and a group's creation, both processed.
    b.send_text(a.user_id, "d0", "before")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.push().await.seq, 1);
    let g = create_id(&mut b, &[a.user_id], v1::JoinPolicy::InviteOnly).await;
    let created = a.push().await;
    assert_eq!((created.conversation_id, created.seq), (g, 1));
    let since = a.since;
    // The blip: the connection is dropped; Bob writes 5 direct and 3 group messages, and
    // talks to Carol (a conversation Alice is not in).
    a.disconnect();
    for i in 0..5 {
        b.send_text(a.user_id, &format!("d{}", i + 1), &format!("direct {i}"))
            .await
            .unwrap()
            .unwrap();
    }
    for i in 0..3 {
        ack(send(&mut b, g, &format!("g{i}"), &format!("group {i}")).await);
    }
    let stranger = conversation_id(bob.user_id, carol.user_id);
    ask(&mut b, text_message(carol.user_id, "s0", "not for alice")).await;
    c.next_push().await.unwrap();
    // Back, with its token and seqs (and the stranger's conversation named, to no effect).
    let (mut back, resumed) = a
        .reconnect(&server, since, &[(direct, 1), (g, 1), (stranger, 0)])
        .await;
    let resumed = resumed.expect("token login with a resume");
    assert!(resumed.done.complete, "{:?}", resumed.done);
    let mut want: Vec<(u64, u64)> = (2..=6).map(|s| (direct, s)).collect();
    want.extend((2..=4).map(|s| (g, s)));
    let mut got = seqs(&resumed);
    // Conversations come most recent first; within one, in seq order.
    for batch in &resumed.batches {
        let s: Vec<u64> = batch.messages.iter().map(|m| m.seq).collect();
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "in seq order: {s:?}"
        );
        assert!(!batch.has_more);
    }
    got.sort_unstable();
    assert_eq!(got, want, "exactly the 8 missed messages, once each");
    let mut both = vec![direct, g];
    both.sort_unstable();
    assert_eq!(listed(&resumed), both, "no stranger's conversation");
    for conv in &resumed.done.conversations {
        assert!(conv.last_message.is_none());
        let max = if conv.conversation_id == direct { 6 } else { 4 };
        assert_eq!(conv.max_seq, max, "the list's cursors come along");
    }
    nothing_more(&mut back).await;
    // The session is a normal one: a new message is pushed.
    b.send_text(a.user_id, "d9", "after")
        .await
        .unwrap()
        .unwrap();
    let pushed = back.next_push().await.unwrap();
    assert_eq!((pushed.conversation_id, pushed.seq), (direct, 7));
}

#[tokio::test]
async fn resume_says_when_it_cannot_serve() {
    let server = TestServer::start(&[
        ("LOGIN__RESUME_CONVERSATIONS_MAX", "2"),
        ("LOGIN__RESUME_KNOWN_MAX", "3"),
    ]);
    let mut a = Device::new(&server, "alice").await;
    let since = a.since;
    a.disconnect();
    // Three conversations with news: one more than a resume serves.
    let mut peers = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let (mut p, ok) = server.user(name).await;
        p.send_text(a.user_id, "m1", "hi").await.unwrap().unwrap();
        peers.push((p, ok.user_id));
    }
    let known: Vec<(u64, u64)> = peers
        .iter()
        .map(|(_, id)| (conversation_id(a.user_id, *id), 0))
        .collect();
    // A malformed resume (more known entries than allowed) refuses the login itself; the
    // connection stays for another attempt.
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let mut too_many = known.clone();
    too_many.push((conversation_id(a.user_id, 1), 0));
    assert_eq!(
        a.resume_on(&mut c, since, &too_many).await.unwrap_err(),
        ErrorCode::InvalidArgument
    );
    // Too much news: complete = false, and no batch.
    let resumed = a.resume_on(&mut c, since, &known).await.expect("login");
    assert!(!resumed.done.complete);
    assert_eq!(
        resumed.done.reason,
        ResumeIncomplete::TooManyConversations as i32
    );
    assert!(resumed.batches.is_empty() && resumed.done.conversations.is_empty());
    // The fallback still works on the same session.
    assert_eq!(c.conversations().await.unwrap().len(), 3);
    drop(c);
    // Too old (beyond `login.resume_window_ms`), and never given: complete = false.
    for old in [1, 0] {
        let (_c, resumed) = a.reconnect(&server, old, &known).await;
        let resumed = resumed.expect("login");
        assert!(!resumed.done.complete);
        assert_eq!(resumed.done.reason, ResumeIncomplete::TooOld as i32);
        assert!(resumed.batches.is_empty());
    }
}

/// A resume's batches are bounded in frames by the connection's outbound queue
/// (`gateway.outbound_frames_max`, here 4: one conversation per resume): past it, the resume
/// says `TOO_MANY_CONVERSATIONS` instead of queuing more frames than the queue takes and
/// kicking its own client as a slow consumer.
#[tokio::test]
async fn resume_never_outgrows_the_outbound_queue() {
    let server = TestServer::start(&[("GATEWAY__OUTBOUND_FRAMES_MAX", "4")]);
    let mut a = Device::new(&server, "alice").await;
    let since = a.since;
    a.disconnect();
    for name in ["bob", "carol", "dave", "erin", "frank"] {
        let (mut p, _) = server.user(name).await;
        p.send_text(a.user_id, "m1", "hi").await.unwrap().unwrap();
    }
    let (mut back, resumed) = a.reconnect(&server, since, &[]).await;
    let resumed = resumed.expect("a token login, not a kick");
    assert!(!resumed.done.complete);
    assert_eq!(
        resumed.done.reason,
        ResumeIncomplete::TooManyConversations as i32
    );
    assert_eq!(back.conversations().await.unwrap().len(), 5);
}

/// A resume's batches are bounded in bytes (`login.resume_bytes_max`): within it, everything;
/// one conversation past it, a batch cut there like a Sync page (`has_more`: the client Syncs
/// on); several together past it, no batch at all and `TOO_LARGE` (the reads stop there, the
/// client syncs instead).
#[tokio::test]
async fn resume_stops_at_its_byte_budget() {
    let server = TestServer::start(&[("LOGIN__RESUME_BYTES_MAX", "65536")]);
    let mut a = Device::new(&server, "alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    let direct = conversation_id(a.user_id, bob.user_id);
    let big = "x".repeat(8_000);
    // 4 messages of 8 kB while away: within 64 KiB.
    let since = a.since;
    a.disconnect();
    for i in 0..4 {
        let id = format!("m{i}");
        b.send_text(a.user_id, &id, &big).await.unwrap().unwrap();
    }
    let (mut back, resumed) = a.reconnect(&server, since, &[]).await;
    let resumed = resumed.expect("login");
    assert!(resumed.done.complete, "{:?}", resumed.done.reason);
    assert_eq!(seqs(&resumed).len(), 4);
    nothing_more(&mut back).await;
    drop(back);
    // 9 more (72 kB) in the one conversation: its batch is the Sync page, which ends at the
    // same 64 KiB with `has_more`; Sync pages on from there.
    for i in 4..13 {
        let id = format!("m{i}");
        b.send_text(a.user_id, &id, &big).await.unwrap().unwrap();
    }
    let (mut back, resumed) = a.reconnect(&server, since, &[(direct, 4)]).await;
    let resumed = resumed.expect("login");
    assert!(resumed.done.complete, "{:?}", resumed.done.reason);
    let [batch] = resumed.batches.as_slice() else {
        panic!("one batch: {:?}", resumed.done);
    };
    assert!(
        batch.has_more && batch.messages.len() < 9,
        "{}",
        batch.messages.len()
    );
    let mut got: Vec<u64> = batch.messages.iter().map(|m| m.seq).collect();
    let rest = back.sync_all(direct, *got.last().unwrap()).await.unwrap();
    got.extend(rest.iter().map(|m| m.seq));
    assert_eq!(got, (5..=13).collect::<Vec<_>>());
    nothing_more(&mut back).await;
    drop(back);
    // 5 more from bob and 5 from carol (40 kB each): together past it.
    for i in 13..18 {
        let id = format!("m{i}");
        b.send_text(a.user_id, &id, &big).await.unwrap().unwrap();
        c.send_text(a.user_id, &id, &big).await.unwrap().unwrap();
    }
    let (mut back, resumed) = a.reconnect(&server, since, &[(direct, 13)]).await;
    let resumed = resumed.expect("login");
    assert!(!resumed.done.complete);
    assert_eq!(resumed.done.reason, ResumeIncomplete::TooLarge as i32);
    assert!(resumed.batches.is_empty() && resumed.done.conversations.is_empty());
    // The fallback: Sync pages through all of it on the same session.
    let synced = back.sync_all(direct, 13).await.unwrap();
    let seqs: Vec<u64> = synced.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (14..=18).collect::<Vec<_>>());
    nothing_more(&mut back).await;
}

#[tokio::test]
async fn resume_shows_a_removed_member_nothing_after_the_removal() {
    let server = TestServer::start(&[]);
    let mut a = Device::new(&server, "alice").await;
    let (mut b, _bob) = server.user("bob").await;
    let (_c, carol) = server.user("carol").await;
    let g = create_id(
        &mut b,
        &[a.user_id, carol.user_id],
        v1::JoinPolicy::InviteOnly,
    )
    .await;
    assert_eq!(a.push().await.seq, 1);
    let since = a.since;
    a.disconnect();
    ack(send(&mut b, g, "m1", "while alice is in").await);
    ok(ask(&mut b, remove(g, &[a.user_id])).await);
    let after = ack(send(&mut b, g, "m2", "after alice left").await);
    let (mut back, resumed) = a.reconnect(&server, since, &[(g, 1)]).await;
    let resumed = resumed.expect("login");
    assert!(resumed.done.complete);
    assert_eq!(listed(&resumed), [g]);
    let [batch] = resumed.batches.as_slice() else {
        panic!("one batch: {:?}", resumed.batches);
    };
    assert_eq!(texts(&batch.messages), ["while alice is in"]);
    let last = batch.messages.last().unwrap();
    assert_eq!(event_kind(last), Some(GroupEventKind::Removed));
    assert!(batch.messages.iter().all(|m| m.seq < after.seq));
    nothing_more(&mut back).await;
}

/// A user may hold more group rows than `groups.per_user_max` (an operator lowered it, or
/// joins on two cluster nodes each passed it by one): the list and a resume still carry every
/// group, the newest too. They read the first `per_user_max` rows by id only, and the
/// newest groups' messages were in neither (and the resume said it was complete).
#[tokio::test]
async fn groups_past_a_lowered_per_user_max_stay_in_the_list_and_the_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[("GROUPS__PER_USER_MAX", "3")]);
    let mut a = Device::new(&server, "alice").await;
    let mut groups = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let (mut p, _) = server.user(name).await;
        groups.push(create_id(&mut p, &[a.user_id], v1::JoinPolicy::InviteOnly).await);
        a.push().await;
    }
    let since = a.since;
    a.disconnect();
    server.stop();

    let server = TestServer::start_in(&data, &[("GROUPS__PER_USER_MAX", "2")]);
    let newest = *groups.iter().max().unwrap();
    let creator = ["bob", "carol", "dave"][groups.iter().position(|g| *g == newest).unwrap()];
    let (mut p, _) = server.device(creator, "second").await;
    ack(send(&mut p, newest, "m1", "after the restart").await);
    let (mut back, resumed) = a.reconnect(&server, since, &[]).await;
    let resumed = resumed.expect("login");
    assert!(resumed.done.complete, "{:?}", resumed.done);
    assert!(
        seqs(&resumed).contains(&(newest, 2)),
        "the newest group's message: {:?}",
        seqs(&resumed)
    );
    let mut in_list: Vec<u64> = back
        .conversations()
        .await
        .unwrap()
        .iter()
        .map(|c| c.conversation_id)
        .collect();
    in_list.sort_unstable();
    groups.sort_unstable();
    assert_eq!(in_list, groups, "every group in the list");
}
