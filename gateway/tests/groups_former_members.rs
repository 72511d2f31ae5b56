//! What a group's former members still see and may do, over the real server: the group as it
//! was when they left (info, list, conversation list), their own read cursor up to the event
//! they left by, hiding a group they left muted (and one a stranger put them in, muted), and a
//! resend of a message they sent before leaving.

mod common;

use common::TestServer;
use common::contacts::{ask, code, error};
use common::groups::{ack, create, create_id, frames_so_far, ok, send};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// A group the user asked to be in and left under a mute stays listed while the mute runs (it
/// carries the mute back), but a dissolved one takes nobody back: hiding it is never refused.
#[tokio::test]
async fn a_dissolved_group_left_muted_can_be_hidden() {
    let server = TestServer::start(&[]);
    let (mut a, mut b, g, _) = bob_muted_in_alices_group(&server).await;
    ok(ask(&mut b, common::groups::leave(g)).await);
    assert_eq!(
        code(ask(&mut b, common::groups::leave(g)).await),
        ErrorCode::Muted
    );
    ok(ask(&mut a, common::groups::dissolve(g)).await);
    ok(ask(&mut b, common::groups::leave(g)).await);
    assert_eq!(
        code(ask(&mut b, common::groups::leave(g)).await),
        ErrorCode::NotFound,
        "hidden: nothing left to leave"
    );
}

/// A mute ends in the future and at most `groups.mute_max_s` away: an endless one, or one
/// already over, is INVALID_ARGUMENT and changes nothing. Mute-all (user 0) is on / off.
#[tokio::test]
async fn a_mute_ends_in_the_future_within_mute_max_s() {
    let server = TestServer::start(&[("GROUPS__MUTE_MAX_S", "3600")]);
    let (mut a, _alice) = server.user("alice").await;
    let (_b, bob) = server.user("bob").await;
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::InviteOnly).await;
    let now = ringchat_backend::api::now_ms();
    for until in [u64::MAX, now + 3_660_000, now - 1_000, 1] {
        assert_eq!(
            code(ask(&mut a, common::groups::mute(g, bob.user_id, until)).await),
            ErrorCode::InvalidArgument,
            "until {until} (now {now})"
        );
    }
    let members = match ask(
        &mut a,
        Body::GroupMembers(v1::GroupMembers {
            conversation_id: g,
            ..Default::default()
        }),
    )
    .await
    {
        Body::GroupMemberList(l) => l.members,
        other => panic!("expected GroupMemberList, got {other:?}"),
    };
    assert!(
        members.iter().all(|m| m.muted_until_ms == 0),
        "nothing muted: {members:?}"
    );
    ok(ask(
        &mut a,
        common::groups::mute(g, bob.user_id, now + 3_000_000),
    )
    .await);
    ok(ask(&mut a, common::groups::mute(g, bob.user_id, 0)).await);
    ok(ask(&mut a, common::groups::mute(g, 0, u64::MAX)).await);
}

/// A member the group removed under a mute may hide the group at once: a stranger who put a
/// user in a group, muted and removed it cannot pin the group in the user's list (each row
/// counts toward `groups.per_user_max`). Back by an invitation after hiding, it is not muted.
#[tokio::test]
async fn a_member_removed_under_a_mute_may_hide_the_group() {
    let server = TestServer::start(&[]);
    let (mut a, mut b, g, bob) = bob_muted_in_alices_group(&server).await;
    ok(ask(&mut a, common::groups::remove(g, &[bob.user_id])).await);
    ok(ask(&mut b, common::groups::leave(g)).await);
    assert_eq!(
        code(ask(&mut b, common::groups::leave(g)).await),
        ErrorCode::NotFound,
        "hidden: nothing left to leave"
    );
    ok(ask(&mut a, common::groups::invite(g, &[bob.user_id])).await);
    ack(send(&mut b, g, "back", "unmuted").await);
}

/// Alice's group under APPROVAL with Bob in it by his own application, Bob muted for an hour:
/// (alice, bob, group, bob's login).
async fn bob_muted_in_alices_group(server: &TestServer) -> (Client, Client, u64, v1::LoginOk) {
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let g = create_id(&mut a, &[], v1::JoinPolicy::Approval).await;
    ok(ask(&mut b, common::groups::join(g)).await);
    ok(ask(&mut a, common::groups::approve(g, bob.user_id, true)).await);
    let until = ringchat_backend::api::now_ms() + 3_600_000;
    ok(ask(&mut a, common::groups::mute(g, bob.user_id, until)).await);
    (a, b, g, bob)
}

/// A stranger who puts a user in groups (creation, invitation: anyone may, under the default
/// `dm_policy`) and mutes it there for up to `groups.mute_max_s` cannot pin those groups in
/// the user's list, where each counts toward `groups.per_user_max`: once out, a user who never
/// asked to be in may hide such a group at once, and then create or join others. Before
/// hiding, the row still carries the mute back; after hiding, a return is unmuted. A group the
/// user joined itself stays listed, muted, as before.
#[tokio::test]
async fn groups_a_stranger_added_and_muted_a_user_in_do_not_fill_its_list() {
    let server = TestServer::start(&[("GROUPS__PER_USER_MAX", "2")]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut v, victim) = server.user("victim").await;
    let (mut c, _carol) = server.user("carol").await;
    let until = ringchat_backend::api::now_ms() + 3_600_000;
    let created = create_id(&mut a, &[victim.user_id], v1::JoinPolicy::Open).await;
    let invited = create_id(&mut a, &[], v1::JoinPolicy::Open).await;
    ok(ask(&mut a, common::groups::invite(invited, &[victim.user_id])).await);
    for g in [created, invited] {
        ok(ask(&mut a, common::groups::mute(g, victim.user_id, until)).await);
        ok(ask(&mut v, common::groups::leave(g)).await);
    }
    // The two left groups fill the victim's list.
    let carols = create_id(&mut c, &[], v1::JoinPolicy::Open).await;
    assert_eq!(
        code(ask(&mut v, common::groups::join(carols)).await),
        ErrorCode::TooManyGroups
    );
    // Back in one on its own before hiding it: muted again until the same time.
    ok(ask(&mut v, common::groups::join(invited)).await);
    assert_eq!(
        code(send(&mut v, invited, "i1", "x").await),
        ErrorCode::Muted
    );
    // Hiding the other needs no wait; then there is room.
    ok(ask(&mut v, common::groups::leave(created)).await);
    ok(ask(&mut v, common::groups::join(carols)).await);
    // Having joined by itself this time, leaving muted pins nothing but its own choice.
    ok(ask(&mut v, common::groups::leave(invited)).await);
    assert_eq!(
        code(ask(&mut v, common::groups::leave(invited)).await),
        ErrorCode::Muted
    );
    // Back in the hidden group: not muted (its admins may mute again).
    ok(ask(&mut v, common::groups::leave(carols)).await);
    ok(ask(&mut v, common::groups::leave(carols)).await);
    ok(ask(&mut v, common::groups::join(created)).await);
    ack(send(&mut v, created, "c1", "unmuted").await);
}

/// A muted user who joined by itself sheds nothing through a second account: put back in by
/// it while the mute it left under runs, the user still came in by its own request, so hiding
/// the group once out again is refused while the mute runs, and a return is muted again.
#[tokio::test]
async fn an_invitation_from_a_second_account_sheds_no_mute() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut m, muted) = server.user("muted").await;
    let (mut alt, _) = server.user("alt").await;
    let g = create_id(&mut a, &[], v1::JoinPolicy::Open).await;
    ok(ask(&mut m, common::groups::join(g)).await);
    ok(ask(&mut alt, common::groups::join(g)).await);
    let hour_ms = 3_600_000;
    let until = ringchat_backend::api::now_ms() + hour_ms;
    ok(ask(&mut a, common::groups::mute(g, muted.user_id, until)).await);
    ok(ask(&mut m, common::groups::leave(g)).await);
    ok(ask(&mut alt, common::groups::invite(g, &[muted.user_id])).await);
    assert_eq!(code(send(&mut m, g, "m1", "x").await), ErrorCode::Muted);
    ok(ask(&mut m, common::groups::leave(g)).await);
    let hiding = error(ask(&mut m, common::groups::leave(g)).await);
    assert_eq!(
        ErrorCode::try_from(hiding.code),
        Ok(ErrorCode::Muted),
        "{hiding:?}"
    );
    assert!((1..=hour_ms).contains(&hiding.retry_after_ms), "{hiding:?}");
    // Still listed, so the mute comes back with the user.
    ok(ask(&mut m, common::groups::join(g)).await);
    let refused = error(send(&mut m, g, "m2", "x").await);
    assert_eq!(ErrorCode::try_from(refused.code), Ok(ErrorCode::Muted));
    assert!(
        (1..=hour_ms).contains(&refused.retry_after_ms),
        "{refused:?}"
    );
}

/// A user a stranger put in and muted stays free to hide the group at once even when the
/// stranger puts it back in while the mute runs (else one more invitation would pin it).
#[tokio::test]
async fn a_user_put_back_in_by_a_stranger_under_a_mute_may_still_hide_the_group() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut v, victim) = server.user("victim").await;
    let g = create_id(&mut a, &[victim.user_id], v1::JoinPolicy::Open).await;
    let until = ringchat_backend::api::now_ms() + 3_600_000;
    ok(ask(&mut a, common::groups::mute(g, victim.user_id, until)).await);
    ok(ask(&mut v, common::groups::leave(g)).await);
    ok(ask(&mut a, common::groups::invite(g, &[victim.user_id])).await);
    assert_eq!(code(send(&mut v, g, "v1", "x").await), ErrorCode::Muted);
    ok(ask(&mut v, common::groups::leave(g)).await);
    ok(ask(&mut v, common::groups::leave(g)).await);
    assert_eq!(
        code(ask(&mut v, common::groups::leave(g)).await),
        ErrorCode::NotFound,
        "hidden: nothing left to leave"
    );
}

/// A resend whose ack was lost gets the original ack (`duplicate`) even once the sender left
/// the group or was removed: dedup comes before the membership check. Anything new is still
/// NOT_FOUND, and so is the resend once the sender hid the group.
#[tokio::test]
async fn a_resend_after_leaving_gets_the_original_ack() {
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
    // Acks the clients lost: the server stored the messages all the same.
    let bobs = ack(send(&mut b, g, "x", "before leaving").await);
    let carols = ack(send(&mut c, g, "x", "before removal").await);
    ok(ask(&mut b, common::groups::leave(g)).await);
    ok(ask(&mut a, common::groups::remove(g, &[carol.user_id])).await);
    for (client, original) in [(&mut b, &bobs), (&mut c, &carols)] {
        let again = ack(send(client, g, "x", "resent").await);
        assert!(again.duplicate, "{again:?}");
        assert_eq!(
            (again.msg_id, again.seq, again.server_time_ms),
            (original.msg_id, original.seq, original.server_time_ms)
        );
        assert_eq!(
            code(send(client, g, "new", "after").await),
            ErrorCode::NotFound
        );
    }
    ok(ask(&mut b, common::groups::leave(g)).await);
    assert_eq!(
        code(send(&mut b, g, "x", "resent").await),
        ErrorCode::NotFound,
        "hidden: the group is no longer the user's"
    );
}

async fn info(c: &mut Client, g: u64) -> v1::Group {
    match ask(c, Body::GroupInfo(v1::GroupInfo { conversation_id: g })).await {
        Body::Group(i) => i,
        other => panic!("expected Group, got {other:?}"),
    }
}

/// The group in the user's ListGroups (one page holds it).
async fn listed(c: &mut Client, g: u64) -> v1::Group {
    let list = match ask(c, Body::ListGroups(v1::ListGroups::default())).await {
        Body::GroupList(l) => l,
        other => panic!("expected GroupList, got {other:?}"),
    };
    list.groups
        .into_iter()
        .find(|x| x.conversation_id == g)
        .expect("the group is listed")
}

/// The group's entry in the user's conversation list (one page holds it).
async fn conversation(c: &mut Client, g: u64) -> v1::Conversation {
    let list = match ask(c, Body::Conversations(v1::Conversations::default())).await {
        Body::ConversationList(l) => l,
        other => panic!("expected ConversationList, got {other:?}"),
    };
    list.conversations
        .into_iter()
        .find(|x| x.conversation_id == g)
        .expect("the group is in the list")
}

/// A member who was removed, or left, keeps seeing the group as it was right after that:
/// renames, new details, a new owner, members coming and going later reach none of GroupInfo,
/// ListGroups and the conversation list; current members see them.
#[tokio::test]
async fn a_former_member_sees_the_group_as_it_was_when_it_left() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (_c, carol) = server.user("carol").await;
    let (mut d, dave) = server.user("dave").await;
    let g = create(
        &mut a,
        "before",
        &[bob.user_id, carol.user_id],
        v1::JoinPolicy::InviteOnly,
        false,
    )
    .await
    .group
    .unwrap()
    .conversation_id;
    let edit = |name: &str, intro: &str, avatar: &str, policy: v1::JoinPolicy| {
        Body::GroupUpdate(v1::GroupUpdate {
            conversation_id: g,
            name: Some(name.into()),
            intro: Some(intro.into()),
            avatar_url: Some(avatar.into()),
            join_policy: Some(policy as i32),
            ..Default::default()
        })
    };
    ok(ask(
        &mut a,
        edit(
            "before",
            "old intro",
            "https://a.example/old.png",
            v1::JoinPolicy::InviteOnly,
        ),
    )
    .await);
    let removed = ok(ask(&mut a, common::groups::remove(g, &[bob.user_id])).await);
    // Everything changes after Bob: details, policy, owner, members.
    ok(ask(
        &mut a,
        edit(
            "after",
            "new intro",
            "https://a.example/new.png",
            v1::JoinPolicy::Open,
        ),
    )
    .await);
    ok(ask(&mut a, common::groups::invite(g, &[dave.user_id])).await);
    ok(ask(&mut a, common::groups::transfer(g, carol.user_id)).await);
    ack(send(&mut a, g, "later", "after bob").await);

    let as_left = v1::Group {
        conversation_id: g,
        name: "before".into(),
        avatar_url: "https://a.example/old.png".into(),
        intro: "old intro".into(),
        owner_id: alice.user_id,
        join_policy: v1::JoinPolicy::InviteOnly as i32,
        member_count: 2,
        max_seq: removed.event_seq,
        my_role: v1::GroupRole::Member as i32,
        my_visible_from_seq: 1,
        ..Default::default()
    };
    let seen = info(&mut b, g).await;
    assert_eq!(
        v1::Group {
            created_ms: 0,
            ..seen.clone()
        },
        as_left,
        "GroupInfo"
    );
    assert!(seen.created_ms > 0, "the group's own creation time");
    assert_eq!(listed(&mut b, g).await, seen, "ListGroups");
    let entry = conversation(&mut b, g).await;
    assert_eq!(
        (entry.group_name.as_str(), entry.member_count, entry.max_seq),
        ("before", 2, removed.event_seq),
        "Conversations"
    );
    // The members see the group as it is.
    let now = info(&mut a, g).await;
    assert_eq!(
        (
            now.name.as_str(),
            now.intro.as_str(),
            now.owner_id,
            now.member_count
        ),
        ("after", "new intro", carol.user_id, 3)
    );
    assert_eq!(conversation(&mut a, g).await.group_name, "after");

    // Leaving by oneself keeps the group as it was then, the same way.
    let left = ok(ask(&mut d, common::groups::leave(g)).await);
    ok(ask(&mut a, common::groups::update_name(g, "latest")).await);
    let seen = info(&mut d, g).await;
    assert_eq!(
        (
            seen.name.as_str(),
            seen.intro.as_str(),
            seen.owner_id,
            seen.member_count,
            seen.join_policy,
            seen.max_seq
        ),
        (
            "after",
            "new intro",
            carol.user_id,
            2,
            v1::JoinPolicy::Open as i32,
            left.event_seq
        )
    );
    assert_eq!(listed(&mut d, g).await, seen);
    let entry = conversation(&mut d, g).await;
    assert_eq!(
        (entry.group_name.as_str(), entry.member_count),
        ("after", 2)
    );
    // And Bob still sees it as he left it.
    assert_eq!(info(&mut b, g).await.name, "before");
}

/// A member removed while offline finds the group unread up to its REMOVED event, and clears
/// that by reading, as in any conversation: its cursor stops at the event, only its own
/// sessions hear of it, and the group's read count (current members) does not count it.
#[tokio::test]
async fn a_removed_member_clears_its_unread_count_by_reading() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (b, bob) = server.user("bob").await;
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::InviteOnly).await;
    drop(b);
    ack(send(&mut a, g, "m1", "one").await);
    ack(send(&mut a, g, "m2", "two").await);
    let removed = ok(ask(&mut a, common::groups::remove(g, &[bob.user_id])).await);
    ack(send(&mut a, g, "m3", "after bob").await);

    let (mut b, _) = server.user("bob").await;
    let (mut b2, _) = server.device("bob", "bob-laptop").await;
    let entry = conversation(&mut b, g).await;
    assert_eq!(
        (entry.max_seq, entry.read_seq, entry.unread_count),
        (removed.event_seq, 0, removed.event_seq)
    );
    // Reading past the event reads up to it.
    let read = b
        .read(g, removed.event_seq + 10)
        .await
        .expect("a former member reads");
    assert_eq!(
        (read.read_seq, read.delivered_seq),
        (removed.event_seq, removed.event_seq)
    );
    let entry = conversation(&mut b, g).await;
    assert_eq!(
        (entry.read_seq, entry.unread_count, entry.unread_mentions),
        (removed.event_seq, 0, 0)
    );
    // Bob's other session is told (to clear its badge); Alice is not.
    let receipt = loop {
        match b2.next_event().await.unwrap().unwrap().body {
            Some(Body::Receipt(r)) => break r,
            _ => continue,
        }
    };
    assert_eq!(
        (receipt.conversation_id, receipt.user_id, receipt.read_seq),
        (g, bob.user_id, removed.event_seq)
    );
    let to_alice = frames_so_far(&mut a).await;
    assert!(
        !to_alice
            .iter()
            .any(|f| matches!(f.body, Some(Body::Receipt(_)))),
        "{to_alice:?}"
    );
    let counted = common::groups::read_count(&mut a, g, removed.event_seq).await;
    assert_eq!((counted.read_count, counted.member_count), (1, 1));
    // A group hidden by leaving again is not Bob's to read any more.
    ok(ask(&mut b, common::groups::leave(g)).await);
    assert_eq!(
        code(
            ask(
                &mut b,
                Body::Read(v1::Read {
                    conversation_id: g,
                    seq: 1
                })
            )
            .await
        ),
        ErrorCode::NotFound
    );
    let _ = alice;
}
