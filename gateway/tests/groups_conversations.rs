//! The conversation list with groups, over the real server: groups merged with direct
//! conversations by last activity, paged across both sources, each group with its name, member
//! count, unread count (from the read cursor, nothing before joining), unread mentions and the
//! user's notification mute.

mod common;

use common::TestServer;
use common::contacts::ask;
use common::groups::{ack, create_id, join, ok, push_at, send, send_body};
use ringchat_bench::client::{Client, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ConversationKind};

/// Waits (at most a millisecond) for the wall clock, which the server on this host stamps
/// activity with, to pass the millisecond of the activity just acked: the list orders by the
/// millisecond and breaks ties by conversation id, so the next activity must be strictly newer
/// for the order this test expects.
fn next_millisecond() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let acked_at = now();
    while now() <= acked_at {
        std::hint::spin_loop();
    }
}

async fn page(
    c: &mut Client,
    limit: u32,
    before: Option<&v1::Conversation>,
) -> v1::ConversationList {
    let req = v1::Conversations {
        limit,
        before_time_ms: before.map_or(0, |b| b.last_message.as_ref().unwrap().server_time_ms),
        before_conversation_id: before.map_or(0, |b| b.conversation_id),
    };
    match ask(c, Body::Conversations(req)).await {
        Body::ConversationList(l) => l,
        other => panic!("expected ConversationList, got {other:?}"),
    }
}

/// Every page of `limit`, concatenated, each page checked for its size.
async fn all_pages(c: &mut Client, limit: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut last: Option<v1::Conversation> = None;
    loop {
        let p = page(c, limit, last.as_ref()).await;
        assert!(p.conversations.len() <= limit as usize);
        ids.extend(p.conversations.iter().map(|c| c.conversation_id));
        if !p.has_more {
            return ids;
        }
        last = Some(
            p.conversations
                .last()
                .expect("a page before has_more")
                .clone(),
        );
    }
}

#[tokio::test]
async fn groups_and_direct_conversations_share_one_list_paged_by_recency() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    // Activity, oldest first: a DM with Bob, group 1 (with Bob), a DM with Carol, group 2 (open,
    // Carol joins), then Bob writes in group 1 (mentioning Alice once).
    let dm_bob = ack(ask(&mut a, text_message(bob.user_id, "d1", "hi bob")).await).conversation_id;
    next_millisecond();
    let g1 = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::InviteOnly).await;
    ack(send(&mut a, g1, "g1-a", "hello group 1").await);
    next_millisecond();
    let dm_carol =
        ack(ask(&mut a, text_message(carol.user_id, "d2", "hi carol")).await).conversation_id;
    next_millisecond();
    let g2 = create_id(&mut a, &[], v1::JoinPolicy::Open).await;
    ok(ask(&mut c, join(g2)).await);
    next_millisecond();
    ack(ask(
        &mut b,
        send_body(g1, "g1-b1", "@alice look", &[alice.user_id], false),
    )
    .await);
    let last = ack(send(&mut b, g1, "g1-b2", "and this").await);
    push_at(&mut a, g1, last.seq).await;
    let newest_first = [g1, g2, dm_carol, dm_bob];
    assert_eq!(all_pages(&mut a, 500).await, newest_first);
    // A page boundary anywhere gives the same list, whichever source its entries came from.
    for limit in [1, 2, 3] {
        assert_eq!(
            all_pages(&mut a, limit).await,
            newest_first,
            "limit {limit}"
        );
    }
    let list = page(&mut a, 0, None).await.conversations;
    let e1 = &list[0];
    assert_eq!(e1.kind, ConversationKind::Group as i32);
    assert_eq!((e1.group_name.as_str(), e1.member_count), ("g", 2));
    assert_eq!(e1.peer_user_id, 0);
    // Alice's own send marked seq 2 read; Bob's two after it are unread, one mentions her.
    assert_eq!((e1.max_seq, e1.read_seq), (last.seq, 2));
    assert_eq!((e1.unread_count, e1.unread_mentions), (2, 1));
    assert!(!e1.muted);
    assert_eq!(list[2].kind, ConversationKind::Direct as i32);
    assert_eq!(list[2].peer_user_id, carol.user_id);
    // Muting the group and reading it: mentions and unread clear, muted shows.
    ok(ask(
        &mut a,
        Body::GroupSetNotify(v1::GroupSetNotify {
            conversation_id: g1,
            muted: true,
        }),
    )
    .await);
    a.read(g1, last.seq).await.unwrap();
    let e1 = page(&mut a, 1, None).await.conversations.remove(0);
    assert_eq!(e1.conversation_id, g1);
    assert_eq!(
        (e1.unread_count, e1.unread_mentions, e1.muted),
        (0, 0, true)
    );
    // Carol joined group 2 without its history: what came before her JOINED event is not
    // unread for her.
    let carols = page(&mut c, 0, None).await.conversations;
    let e2 = carols.iter().find(|e| e.conversation_id == g2).unwrap();
    assert_eq!(e2.unread_count, 1, "her own JOINED event only: {e2:?}");
    assert_eq!(e2.member_count, 2);
}

/// The entry of group `g` in `c`'s first page.
async fn entry_of(c: &mut Client, g: u64) -> v1::Conversation {
    page(c, 0, None)
        .await
        .conversations
        .into_iter()
        .find(|e| e.conversation_id == g)
        .expect("the group is listed")
}

/// A recalled message mentions nobody any more: the list's mention badge clears for those it
/// named (by name or as everyone), and Sync shows it naming nobody.
#[tokio::test]
async fn a_recalled_mention_is_no_unread_mention_and_names_nobody() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let g = create_id(
        &mut a,
        &[bob.user_id, carol.user_id],
        v1::JoinPolicy::InviteOnly,
    )
    .await;
    let body = send_body(g, "m", "@bob @everyone", &[bob.user_id], true);
    let sent = ack(ask(&mut a, body).await);
    assert_eq!(entry_of(&mut b, g).await.unread_mentions, 1);
    assert_eq!(entry_of(&mut c, g).await.unread_mentions, 1);
    match ask(&mut a, common::groups::recall(g, sent.seq)).await {
        Body::RecallOk(_) => {}
        other => panic!("expected RecallOk, got {other:?}"),
    }
    for who in [&mut b, &mut c] {
        let e = entry_of(who, g).await;
        assert_eq!(e.unread_mentions, 0, "{e:?}");
        let synced = common::groups::sync(who, g).await;
        let m = synced.iter().find(|m| m.seq == sent.seq).unwrap();
        assert!(m.recalled);
        assert_eq!(
            (m.mention_user_ids.as_slice(), m.mention_all),
            (&[][..], false)
        );
    }
}

/// Joining a group that shows its history: the history is readable, but none of it is unread
/// (nor an unread mention) for the new member; only its own JOINED event is.
#[tokio::test]
async fn a_new_members_unread_count_starts_at_its_join_even_with_the_history_shown() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut c, _carol) = server.user("carol").await;
    let g = common::groups::create(&mut a, "open book", &[], v1::JoinPolicy::Open, true)
        .await
        .group
        .expect("a group")
        .conversation_id;
    for i in 0..4 {
        ack(send(&mut a, g, &format!("m{i}"), "old news").await);
    }
    ack(ask(&mut a, send_body(g, "all", "@everyone", &[], true)).await);
    ok(ask(&mut c, join(g)).await);
    let e = entry_of(&mut c, g).await;
    // CREATED at 1, five messages, JOINED at 7.
    assert_eq!(e.max_seq, 7);
    assert_eq!(
        (e.unread_count, e.unread_mentions),
        (1, 0),
        "its own JOINED event only: {e:?}"
    );
    let history = common::groups::sync(&mut c, g).await;
    assert_eq!(
        history.first().map(|m| m.seq),
        Some(1),
        "the history is shown"
    );
    assert_eq!(common::groups::texts(&history).len(), 5);
}
