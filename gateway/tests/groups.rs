//! Groups over the real server: create, send and push, history visibility on join, nothing after
//! leaving, removal, events reaching an offline member by Sync, blocks, mute and mute-all,
//! mentions, dissolve, join policies, limits with their codes; profiles in member and
//! application lists, typing under a mute and after dissolution (former members:
//! `groups_former_members.rs`).

mod common;

use common::TestServer;
use common::contacts::{ask, block, code, profiles, set_privacy};
use common::groups::{
    ack, create, create_id, event_of, frames_so_far, ok, send, send_body, sync, texts,
};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, GroupEventKind, GroupJoinState};

#[tokio::test]
async fn members_chat_and_others_see_nothing() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, _carol) = server.user("carol").await;
    let created = create(
        &mut a,
        "team",
        &[bob.user_id],
        v1::JoinPolicy::InviteOnly,
        false,
    )
    .await;
    let g = created.group.as_ref().unwrap().conversation_id;
    assert_eq!(created.event_seq, 1);
    assert!(created.results.is_empty());
    assert_eq!(created.group.unwrap().member_count, 2);
    // Bob is told by the CREATED event.
    let ev = b.next_push().await.unwrap();
    assert_eq!(event_of(&ev).kind, GroupEventKind::Created as i32);
    // A message reaches the other member, once, with the group's seq.
    let sent = ack(send(&mut a, g, "m1", "hello team").await);
    assert_eq!(sent.seq, 2);
    let pushed = b.next_push().await.unwrap();
    assert_eq!(
        (pushed.conversation_id, pushed.seq, pushed.from_user_id),
        (g, 2, alice.user_id)
    );
    // A resend dedups.
    let again = ack(send(&mut a, g, "m1", "hello team").await);
    assert!(again.duplicate);
    assert_eq!(again.seq, 2);
    // A non-member: as if there were no such group, for every door.
    assert_eq!(
        code(send(&mut c, g, "x", "let me in").await),
        ErrorCode::NotFound
    );
    let s = ask(
        &mut c,
        Body::Sync(v1::Sync {
            conversation_id: g,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(code(s), ErrorCode::NotFound);
    let i = ask(
        &mut c,
        Body::GroupInfo(v1::GroupInfo { conversation_id: g }),
    )
    .await;
    assert_eq!(code(i), ErrorCode::NotFound);
    // Invite-only: a join is refused with its own code.
    let j = ask(
        &mut c,
        Body::GroupJoin(v1::GroupJoin {
            conversation_id: g,
            message: String::new(),
        }),
    )
    .await;
    assert_eq!(code(j), ErrorCode::JoinNotAllowed);
    // Exactly one of to_user_id and conversation_id.
    let both = Body::Send(v1::Send {
        client_msg_id: "both".into(),
        to_user_id: bob.user_id,
        conversation_id: g,
        content_type: v1::ContentType::Text as i32,
        content: b"x".to_vec().into(),
        ..Default::default()
    });
    assert_eq!(code(ask(&mut a, both).await), ErrorCode::InvalidArgument);
    assert_eq!(texts(&sync(&mut b, g).await), ["hello team"]);
}

#[tokio::test]
async fn history_visibility_on_join_and_nothing_after_leaving() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let hidden = create(&mut a, "hidden", &[], v1::JoinPolicy::Open, false).await;
    let shown = create(&mut a, "shown", &[], v1::JoinPolicy::Open, true).await;
    let (h, s) = (
        hidden.group.unwrap().conversation_id,
        shown.group.unwrap().conversation_id,
    );
    for g in [h, s] {
        ack(send(&mut a, g, &format!("before-{g}"), "before").await);
    }
    for g in [h, s] {
        let join = Body::GroupJoin(v1::GroupJoin {
            conversation_id: g,
            message: String::new(),
        });
        let joined = ok(ask(&mut b, join).await);
        assert_eq!(joined.state, GroupJoinState::Joined as i32);
    }
    assert_eq!(
        texts(&sync(&mut b, h).await),
        Vec::<String>::new(),
        "joined after it"
    );
    assert_eq!(texts(&sync(&mut b, s).await), ["before"], "history shown");
    // Carol joins, then leaves: she keeps what she saw, and gets nothing after.
    ok(ask(
        &mut c,
        Body::GroupJoin(v1::GroupJoin {
            conversation_id: h,
            message: String::new(),
        }),
    )
    .await);
    ack(send(&mut a, h, "while", "while carol is in").await);
    let m = c.next_push().await.unwrap();
    assert_eq!(texts(&[m]), ["while carol is in"]);
    let left = ok(ask(
        &mut c,
        Body::GroupLeave(v1::GroupLeave { conversation_id: h }),
    )
    .await);
    assert!(left.event_seq > 0);
    ack(send(&mut a, h, "after", "after carol left").await);
    // Bob (still in) gets it; Carol's Sync stops at her LEFT event.
    loop {
        let m = b.next_push().await.unwrap();
        if texts(std::slice::from_ref(&m)) == ["after carol left"] {
            break;
        }
    }
    let seen = sync(&mut c, h).await;
    assert_eq!(texts(&seen), ["while carol is in"]);
    assert_eq!(seen.last().unwrap().seq, left.event_seq);
    assert_eq!(code(send(&mut c, h, "x", "no").await), ErrorCode::NotFound);
    let _ = (bob, carol);
}

#[tokio::test]
async fn a_removed_member_learns_it_offline_by_sync_and_blocks_keep_users_out() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    // Carol blocked Alice: Alice cannot add her, and is told in the same words as for DMs.
    block(&mut c, _alice.user_id).await;
    // Dave takes direct messages and groups from friends only: a stranger cannot add him.
    let (mut d, dave) = server.user("dave").await;
    assert!(matches!(
        set_privacy(&mut d, v1::DmPolicy::Friends).await,
        Body::Privacy(_)
    ));
    let created = create(
        &mut a,
        "g",
        &[bob.user_id, carol.user_id, dave.user_id],
        v1::JoinPolicy::InviteOnly,
        false,
    )
    .await;
    assert_eq!(
        created.results,
        [carol.user_id, dave.user_id].map(|user_id| v1::MemberResult {
            user_id,
            code: ErrorCode::NotAllowed as i32
        })
    );
    let g = created.group.unwrap().conversation_id;
    drop(b);
    let removed = ok(ask(
        &mut a,
        Body::GroupRemove(v1::GroupRemove {
            conversation_id: g,
            user_ids: vec![bob.user_id],
        }),
    )
    .await);
    ack(send(&mut a, g, "later", "after bob").await);
    let (mut b, _) = server.user("bob").await;
    let seen = sync(&mut b, g).await;
    let last = seen.last().unwrap();
    assert_eq!(last.seq, removed.event_seq);
    let ev = event_of(last);
    assert_eq!(
        (ev.kind, ev.user_ids.clone()),
        (GroupEventKind::Removed as i32, vec![bob.user_id])
    );
    assert!(texts(&seen).is_empty());
}

#[tokio::test]
async fn mutes_mute_all_mentions_and_dissolve() {
    let server = TestServer::start(&[("GROUPS__MENTIONS_MAX", "2")]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let created = create(&mut a, "g", &[], v1::JoinPolicy::Open, false).await;
    let g = created.group.unwrap().conversation_id;
    // Bob joins by himself: a group a user asked to be in stays listed while it is muted
    // there (one it was put in without asking may be hidden: `groups_former_members.rs`).
    ok(ask(&mut b, common::groups::join(g)).await);
    // Only owners and admins mention everyone; at most mentions_max ids.
    assert_eq!(
        code(ask(&mut b, send_body(g, "all", "@all", &[], true)).await),
        ErrorCode::Forbidden
    );
    let many = [alice.user_id, 100_000_100, 100_000_101];
    assert_eq!(
        code(ask(&mut b, send_body(g, "many", "x", &many, false)).await),
        ErrorCode::TooManyMentions
    );
    ack(ask(
        &mut a,
        send_body(g, "m", "hey bob", &[bob.user_id, 100_000_999], false),
    )
    .await);
    let m = loop {
        let m = b.next_push().await.unwrap();
        if m.content_type == v1::ContentType::Text as i32 {
            break m;
        }
    };
    assert_eq!(m.mention_user_ids, [bob.user_id], "non-members dropped");
    // Mute Bob for a minute: MUTED with the time left.
    let until = ringchat_backend::api::now_ms() + 60_000;
    ok(ask(
        &mut a,
        Body::GroupMute(v1::GroupMute {
            conversation_id: g,
            user_id: bob.user_id,
            until_ms: until,
        }),
    )
    .await);
    let e = match send(&mut b, g, "muted", "x").await {
        Body::Error(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.code, ErrorCode::Muted as i32);
    assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 60_000);
    // Leaving and joining again does not lift the mute, nor does hiding the group in between:
    // a group left muted stays listed until the mute ends.
    ok(ask(
        &mut b,
        Body::GroupLeave(v1::GroupLeave { conversation_id: g }),
    )
    .await);
    let hide = ask(
        &mut b,
        Body::GroupLeave(v1::GroupLeave { conversation_id: g }),
    )
    .await;
    let Body::Error(e) = hide else {
        panic!("hiding refused while muted: {hide:?}")
    };
    assert_eq!(e.code, ErrorCode::Muted as i32);
    assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 60_000);
    ok(ask(
        &mut b,
        Body::GroupJoin(v1::GroupJoin {
            conversation_id: g,
            message: String::new(),
        }),
    )
    .await);
    assert_eq!(code(send(&mut b, g, "again", "x").await), ErrorCode::Muted);
    // A member may not mute; a mute must end in the future (else INVALID_ARGUMENT); an
    // unmute (0) lets Bob speak.
    let past = ringchat_backend::api::now_ms() - 1;
    assert_eq!(
        code(ask(&mut a, common::groups::mute(g, bob.user_id, past)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(send(&mut b, g, "still", "x").await), ErrorCode::Muted);
    ok(ask(&mut a, common::groups::mute(g, bob.user_id, 0)).await);
    ack(send(&mut b, g, "free", "back").await);
    assert_eq!(
        code(
            ask(
                &mut b,
                Body::GroupMute(v1::GroupMute {
                    conversation_id: g,
                    user_id: alice.user_id,
                    until_ms: until
                })
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    // Mute-all: members are quiet, the owner is not.
    ok(ask(
        &mut a,
        Body::GroupMute(v1::GroupMute {
            conversation_id: g,
            user_id: 0,
            until_ms: 1,
        }),
    )
    .await);
    assert_eq!(code(send(&mut b, g, "quiet", "x").await), ErrorCode::Muted);
    ack(send(&mut a, g, "owner", "I may").await);
    // Leaving as the owner of a group with others: transfer first.
    assert_eq!(
        code(
            ask(
                &mut a,
                Body::GroupLeave(v1::GroupLeave { conversation_id: g })
            )
            .await
        ),
        ErrorCode::OwnerMustTransfer
    );
    // Dissolve: nothing new, history readable.
    assert_eq!(
        code(
            ask(
                &mut b,
                Body::GroupDissolve(v1::GroupDissolve { conversation_id: g })
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    ok(ask(
        &mut a,
        Body::GroupDissolve(v1::GroupDissolve { conversation_id: g }),
    )
    .await);
    assert_eq!(
        code(send(&mut a, g, "gone", "x").await),
        ErrorCode::GroupDissolved
    );
    assert!(texts(&sync(&mut b, g).await).contains(&"I may".to_owned()));
}

#[tokio::test]
async fn approval_applications_and_limits() {
    let server = TestServer::start(&[("GROUPS__MEMBERS_MAX", "3"), ("GROUPS__PER_USER_MAX", "2")]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let (mut d, dave) = server.user("dave").await;
    let g = create(&mut a, "club", &[], v1::JoinPolicy::Approval, false)
        .await
        .group
        .unwrap()
        .conversation_id;
    let applied = ok(ask(
        &mut b,
        Body::GroupJoin(v1::GroupJoin {
            conversation_id: g,
            message: "please".into(),
        }),
    )
    .await);
    assert_eq!(applied.state, GroupJoinState::Pending as i32);
    let list = match ask(
        &mut a,
        Body::GroupApplications(v1::GroupApplications {
            conversation_id: g,
            ..Default::default()
        }),
    )
    .await
    {
        Body::GroupApplicationList(l) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(list.applications.len(), 1);
    assert_eq!(list.applications[0].message, "please");
    let approved = ok(ask(
        &mut a,
        Body::GroupApprove(v1::GroupApprove {
            conversation_id: g,
            user_id: bob.user_id,
            accept: true,
        }),
    )
    .await);
    assert!(approved.event_seq > 0);
    ack(send(&mut b, g, "hi", "I am in").await);
    // A member's invite under APPROVAL becomes an application.
    let inv = ok(ask(
        &mut b,
        Body::GroupInvite(v1::GroupInvite {
            conversation_id: g,
            user_ids: vec![carol.user_id],
        }),
    )
    .await);
    assert_eq!(inv.state, GroupJoinState::Pending as i32);
    ok(ask(
        &mut a,
        Body::GroupApprove(v1::GroupApprove {
            conversation_id: g,
            user_id: carol.user_id,
            accept: true,
        }),
    )
    .await);
    // Full at 3 members.
    let full = ok(ask(
        &mut a,
        Body::GroupInvite(v1::GroupInvite {
            conversation_id: g,
            user_ids: vec![dave.user_id],
        }),
    )
    .await);
    assert_eq!(
        full.results,
        [v1::MemberResult {
            user_id: dave.user_id,
            code: ErrorCode::GroupFull as i32
        }]
    );
    // per_user_max 2: Dave creates two groups, the third is refused.
    create(&mut d, "d1", &[], v1::JoinPolicy::Open, false).await;
    create(&mut d, "d2", &[], v1::JoinPolicy::Open, false).await;
    let third = ask(
        &mut d,
        Body::GroupCreate(v1::GroupCreate {
            name: "d3".into(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(code(third), ErrorCode::TooManyGroups);
    // Roles: Bob is no admin; the owner makes him one and he can then remove Carol.
    assert_eq!(
        code(
            ask(
                &mut b,
                Body::GroupRemove(v1::GroupRemove {
                    conversation_id: g,
                    user_ids: vec![carol.user_id]
                })
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    ok(ask(
        &mut a,
        Body::GroupSetRole(v1::GroupSetRole {
            conversation_id: g,
            user_id: bob.user_id,
            role: v1::GroupRole::Admin as i32,
        }),
    )
    .await);
    let r = ok(ask(
        &mut b,
        Body::GroupRemove(v1::GroupRemove {
            conversation_id: g,
            user_ids: vec![carol.user_id, alice.user_id],
        }),
    )
    .await);
    assert_eq!(
        r.results,
        [v1::MemberResult {
            user_id: alice.user_id,
            code: ErrorCode::Forbidden as i32
        }]
    );
    // Transfer: Bob owns it, Alice is an admin.
    ok(ask(
        &mut a,
        Body::GroupTransfer(v1::GroupTransfer {
            conversation_id: g,
            user_id: bob.user_id,
        }),
    )
    .await);
    let info = match ask(
        &mut a,
        Body::GroupInfo(v1::GroupInfo { conversation_id: g }),
    )
    .await
    {
        Body::Group(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (info.owner_id, info.my_role),
        (bob.user_id, v1::GroupRole::Admin as i32)
    );
    let members = match ask(
        &mut c,
        Body::GroupMembers(v1::GroupMembers {
            conversation_id: g,
            ..Default::default()
        }),
    )
    .await
    {
        Body::Error(e) => e.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        members,
        ErrorCode::NotFound as i32,
        "removed: no member list"
    );
}

/// The profiles of a group's members, as the user sees them (one page holds them).
async fn member_profiles(c: &mut Client, g: u64) -> Vec<v1::Profile> {
    let body = Body::GroupMembers(v1::GroupMembers {
        conversation_id: g,
        ..Default::default()
    });
    match ask(c, body).await {
        Body::GroupMemberList(l) => l.members.into_iter().map(|m| m.profile.unwrap()).collect(),
        other => panic!("expected GroupMemberList, got {other:?}"),
    }
}

/// A group's member and application lists show people under the one profile rule: a hidden
/// user (not searchable) appears to a stranger by id alone, as GetProfiles would hide them,
/// and in full once they took part in something with the viewer.
#[tokio::test]
async fn group_member_and_application_lists_follow_the_profile_rule() {
    let server = TestServer::start(&[]);
    let (mut c, carol) = server.user("carol").await;
    let (mut s, stranger) = server.user("stranger").await;
    let (mut h, hidden) = server.user("hidden").await;
    for who in [&mut c, &mut h] {
        let hide = Body::UpdateProfile(v1::UpdateProfile {
            nickname: Some("Not Findable".into()),
            bio: Some("private".into()),
            searchable: Some(false),
            ..Default::default()
        });
        assert!(matches!(ask(who, hide).await, Body::Profile(_)));
    }
    let g = create(&mut c, "open", &[], v1::JoinPolicy::Open, false)
        .await
        .group
        .unwrap()
        .conversation_id;
    ok(ask(&mut s, common::groups::join(g)).await);
    let profile_of = |list: &[v1::Profile], id: u64| {
        list.iter()
            .find(|p| p.user_id == id)
            .cloned()
            .expect("listed")
    };
    // Hidden from the stranger: GetProfiles leaves Carol out, the member list names her id.
    assert!(profiles(&mut s, &[carol.user_id]).await.is_empty());
    let listed = member_profiles(&mut s, g).await;
    assert_eq!(
        profile_of(&listed, carol.user_id),
        v1::Profile {
            user_id: carol.user_id,
            ..Default::default()
        }
    );
    // The stranger itself (searchable) is shown to Carol as GetProfiles shows it.
    let to_carol = member_profiles(&mut c, g).await;
    assert_eq!(
        profile_of(&to_carol, stranger.user_id),
        profiles(&mut c, &[stranger.user_id]).await.remove(0)
    );
    // Once Carol took part in something with the stranger (her friend request), both show her.
    assert!(matches!(
        common::contacts::request(&mut c, stranger.user_id, "hi").await,
        Body::FriendOk(_)
    ));
    let shown = profiles(&mut s, &[carol.user_id]).await.remove(0);
    assert_eq!(shown.nickname, "Not Findable");
    assert_eq!(
        profile_of(&member_profiles(&mut s, g).await, carol.user_id),
        shown
    );

    // Applications: a hidden applicant is an id to the owner, as GetProfiles would have it.
    let club = create(&mut s, "club", &[], v1::JoinPolicy::Approval, false)
        .await
        .group
        .unwrap()
        .conversation_id;
    let applied = ok(ask(&mut h, common::groups::join(club)).await);
    assert_eq!(applied.state, GroupJoinState::Pending as i32);
    let apps = match ask(&mut s, common::groups::applications(club)).await {
        Body::GroupApplicationList(l) => l.applications,
        other => panic!("expected GroupApplicationList, got {other:?}"),
    };
    assert!(profiles(&mut s, &[hidden.user_id]).await.is_empty());
    assert_eq!(
        apps.iter()
            .map(|a| a.profile.clone().unwrap())
            .collect::<Vec<_>>(),
        [v1::Profile {
            user_id: hidden.user_id,
            ..Default::default()
        }]
    );
}

fn typing(g: u64) -> Body {
    Body::Typing(v1::Typing {
        conversation_id: g,
        from_user_id: 0,
    })
}

fn typings(frames: &[v1::Frame]) -> Vec<&v1::Typing> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::Typing(t)) => Some(t),
            _ => None,
        })
        .collect()
}

/// Typing in a group goes only where a message could: a muted member's is dropped, and in a
/// dissolved group it is refused (GROUP_DISSOLVED) and reaches nobody.
#[tokio::test]
async fn typing_stops_at_a_mute_and_at_dissolution() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::InviteOnly).await;
    // It flows while Bob may speak.
    b.send(typing(g)).await.unwrap();
    let t = loop {
        match a.next_event().await.unwrap().unwrap().body {
            Some(Body::Typing(t)) => break t,
            _ => continue,
        }
    };
    assert_eq!((t.conversation_id, t.from_user_id), (g, bob.user_id));
    // Muted: dropped, without an error.
    let until = ringchat_backend::api::now_ms() + 60_000;
    ok(ask(&mut a, common::groups::mute(g, bob.user_id, until)).await);
    let dropped = r#"ringchat_typing_dropped_total{reason="muted"}"#;
    b.send(typing(g)).await.unwrap();
    common::wait_until_async("the muted typing dropped", || server.metric(dropped) >= 1.0).await;
    assert!(typings(&frames_so_far(&mut a).await).is_empty());
    assert!(
        !frames_so_far(&mut b)
            .await
            .iter()
            .any(|f| matches!(f.body, Some(Body::Error(_)))),
        "no error for a muted typing"
    );
    // Dissolved: refused, for the owner as for the member, and relayed to nobody.
    ok(ask(&mut a, common::groups::dissolve(g)).await);
    assert_eq!(
        code(ask(&mut a, typing(g)).await),
        ErrorCode::GroupDissolved
    );
    assert_eq!(
        code(ask(&mut b, typing(g)).await),
        ErrorCode::GroupDissolved
    );
    assert!(typings(&frames_so_far(&mut a).await).is_empty());
    assert!(typings(&frames_so_far(&mut b).await).is_empty());
    assert_eq!(server.metric(dropped), 1.0);
    let _ = alice;
}
