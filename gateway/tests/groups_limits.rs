//! Group limits over the real server, each at a small configured value and answered with its
//! code: admins, pending applications, name / intro / application sizes, invite batches, member
//! pages; and blocks (and, for a member's invitation, the invitee's policy) checked when an
//! application is approved.

mod common;

use common::TestServer;
use common::contacts::{ask, block, code, set_privacy, unblock};
use common::groups::{
    ack, approve, create_id, invite, join, leave, ok, push_at, send, set_role, sync, update_name,
};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, GroupJoinState, GroupRole};

#[tokio::test]
async fn admins_applications_sizes_batches_and_pages_have_limits() {
    let server = TestServer::start(&[
        ("GROUPS__ADMINS_MAX", "1"),
        ("GROUPS__APPLICATIONS_MAX", "1"),
        ("GROUPS__NAME_BYTES_MAX", "8"),
        ("GROUPS__INTRO_BYTES_MAX", "4"),
        ("GROUPS__APPLICATION_MESSAGE_BYTES_MAX", "3"),
        ("GROUPS__INVITE_BATCH_MAX", "2"),
        ("GROUPS__PAGE_MAX", "2"),
    ]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (_c, carol) = server.user("carol").await;
    let (mut d, dave) = server.user("dave").await;
    let (mut e, erin) = server.user("erin").await;
    // Sizes: name, intro, on create and on update.
    let long_name = Body::GroupCreate(v1::GroupCreate {
        name: "123456789".into(),
        ..Default::default()
    });
    assert_eq!(
        code(ask(&mut a, long_name).await),
        ErrorCode::InvalidArgument
    );
    let long_intro = Body::GroupCreate(v1::GroupCreate {
        name: "ok".into(),
        intro: "12345".into(),
        ..Default::default()
    });
    assert_eq!(
        code(ask(&mut a, long_intro).await),
        ErrorCode::InvalidArgument
    );
    // Invite batches: at most 2 ids.
    let three = Body::GroupCreate(v1::GroupCreate {
        name: "ok".into(),
        member_ids: vec![bob.user_id, carol.user_id, bob.user_id + 100],
        ..Default::default()
    });
    assert_eq!(code(ask(&mut a, three).await), ErrorCode::InvalidArgument);
    let g = create_id(
        &mut a,
        &[bob.user_id, carol.user_id],
        v1::JoinPolicy::Approval,
    )
    .await;
    assert_eq!(
        code(ask(&mut a, update_name(g, "123456789")).await),
        ErrorCode::InvalidArgument
    );
    ok(ask(&mut a, update_name(g, "12345678")).await);
    assert_eq!(
        code(ask(&mut a, invite(g, &[1, 2, 3])).await),
        ErrorCode::InvalidArgument
    );
    // Admins: one besides the owner.
    ok(ask(&mut a, set_role(g, bob.user_id, GroupRole::Admin)).await);
    let e2 = ask(&mut a, set_role(g, carol.user_id, GroupRole::Admin)).await;
    assert_eq!(code(e2), ErrorCode::TooManyAdmins);
    // Demoting frees the slot.
    ok(ask(&mut a, set_role(g, bob.user_id, GroupRole::Member)).await);
    ok(ask(&mut a, set_role(g, carol.user_id, GroupRole::Admin)).await);
    // Applications: the message is bounded, and one may be pending at a time.
    let long_message = Body::GroupJoin(v1::GroupJoin {
        conversation_id: g,
        message: "four".into(),
    });
    assert_eq!(
        code(ask(&mut d, long_message).await),
        ErrorCode::InvalidArgument
    );
    let pending = ok(ask(&mut d, join(g)).await);
    assert_eq!(pending.state, GroupJoinState::Pending as i32);
    assert_eq!(
        code(ask(&mut e, join(g)).await),
        ErrorCode::TooManyApplications
    );
    // A member's invite under APPROVAL files applications: refused per user past the limit.
    let filed = ok(ask(&mut b, invite(g, &[erin.user_id])).await);
    assert_eq!(
        filed.results,
        [v1::MemberResult {
            user_id: erin.user_id,
            code: ErrorCode::TooManyApplications as i32
        }]
    );
    // Answering one makes room.
    ok(ask(&mut a, approve(g, dave.user_id, false)).await);
    assert_eq!(
        ok(ask(&mut e, join(g)).await).state,
        GroupJoinState::Pending as i32
    );
    // Member pages: at most page_max.
    let page = ask(
        &mut a,
        Body::GroupMembers(v1::GroupMembers {
            conversation_id: g,
            limit: 100,
            ..Default::default()
        }),
    )
    .await;
    match page {
        Body::GroupMemberList(l) => {
            assert_eq!(l.members.len(), 2);
            assert!(l.has_more);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_block_is_checked_when_an_application_is_approved() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::Approval).await;
    ok(ask(&mut a, set_role(g, bob.user_id, GroupRole::Admin)).await);
    ok(ask(&mut c, join(g)).await);
    // Carol blocks Alice after applying: Alice cannot let her in, and is told as for DMs.
    block(&mut c, alice.user_id).await;
    assert_eq!(
        code(ask(&mut a, approve(g, carol.user_id, true)).await),
        ErrorCode::NotAllowed
    );
    // Bob (no block with Carol) may, the other way round too: Bob blocks Carol, then cannot.
    block(&mut b, carol.user_id).await;
    assert_eq!(
        code(ask(&mut b, approve(g, carol.user_id, true)).await),
        ErrorCode::NotAllowed
    );
    // Nothing changed: the application is still there for an unblocked admin.
    common::contacts::unblock(&mut b, carol.user_id).await;
    let approved = ok(ask(&mut b, approve(g, carol.user_id, true)).await);
    assert_eq!(approved.state, GroupJoinState::Joined as i32);
}

/// A member's invitation under APPROVAL is checked again when approved, against the inviter:
/// the invitee never asked, so its blocks and `dm_policy` as they are then decide, as for a
/// direct invitation. A user who asked itself is checked against the approver only.
#[tokio::test]
async fn a_members_invitation_is_checked_against_the_inviter_when_approved() {
    let server = TestServer::start(&[]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut s, sam) = server.user("sam").await;
    let (mut v, vic) = server.user("vic").await;
    let (mut w, wendy) = server.user("wendy").await;
    let g = create_id(&mut a, &[sam.user_id], v1::JoinPolicy::Approval).await;
    let filed = ok(ask(&mut s, invite(g, &[vic.user_id])).await);
    assert_eq!(filed.state, GroupJoinState::Pending as i32);
    // Vic blocks Sam, who invited him: no admin can let him in on Sam's word.
    block(&mut v, sam.user_id).await;
    let refused = ask(&mut a, approve(g, vic.user_id, true)).await;
    let Body::Error(e) = &refused else {
        panic!("approved against Vic's block: {refused:?}")
    };
    assert_eq!(e.code, ErrorCode::NotAllowed as i32);
    assert!(!e.message.contains("you blocked"), "{e:?}");
    // Unblocked, but groups from friends only now (Sam is none): still refused.
    unblock(&mut v, sam.user_id).await;
    set_privacy(&mut v, v1::DmPolicy::Friends).await;
    assert_eq!(
        code(ask(&mut a, approve(g, vic.user_id, true)).await),
        ErrorCode::NotAllowed
    );
    // Back to everyone: the invitation, still pending, goes through.
    set_privacy(&mut v, v1::DmPolicy::Everyone).await;
    let approved = ok(ask(&mut a, approve(g, vic.user_id, true)).await);
    assert_eq!(approved.state, GroupJoinState::Joined as i32);
    // Wendy asks herself, friends-only or not, and blocks Sam: Alice approves her.
    set_privacy(&mut w, v1::DmPolicy::Friends).await;
    block(&mut w, sam.user_id).await;
    ok(ask(&mut w, join(g)).await);
    let approved = ok(ask(&mut a, approve(g, wendy.user_id, true)).await);
    assert_eq!(approved.state, GroupJoinState::Joined as i32);
}

/// A user with more groups listed than `groups.per_user_max` (the limit was lowered since, or
/// joins on several cluster nodes each saw room) logs in: the login installs the first
/// `per_user_max` and says that it stopped there (a warning, a metric); a list just at the
/// limit says nothing.
#[tokio::test]
async fn a_login_past_per_user_max_is_logged_and_counted() {
    const CAPPED: &str = "ringchat_groups_login_capped_total";
    const WARNING: &str = "more groups than groups.per_user_max";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[("GROUPS__PER_USER_MAX", "3")]);
    let (mut a, _) = server.user("alice").await;
    let mut groups = Vec::new();
    for _ in 0..3 {
        groups.push(create_id(&mut a, &[], v1::JoinPolicy::Open).await);
    }
    // Another device logs in at the limit: pushed every group's messages, nothing counted (the
    // login's hook runs before LoginOk).
    let (mut again, _) = server.device("alice", "alice-dev2").await;
    let last = *groups.last().unwrap();
    let sent = ack(send(&mut a, last, "m", "to every device").await);
    assert_eq!(push_at(&mut again, last, sent.seq).await.seq, sent.seq);
    assert_eq!(server.metric(CAPPED), 0.0, "at the limit: nothing to say");
    drop((a, again));
    server.stop();

    let server = TestServer::start_in(&data, &[("GROUPS__PER_USER_MAX", "2")]);
    // The hook runs before LoginOk: counted once the login is answered.
    let (_a, _) = server.device("alice", "alice-dev3").await;
    assert_eq!(server.metric(CAPPED), 1.0);
    assert_eq!(server.log_lines_with(WARNING), 1);
}

#[tokio::test]
async fn members_invitations_leave_half_the_application_queue_to_those_who_ask() {
    let server = TestServer::start(&[("GROUPS__APPLICATIONS_MAX", "4")]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let mut strangers = Vec::new();
    for name in ["stranger1", "stranger2", "stranger3"] {
        strangers.push(server.user(name).await.1.user_id);
    }
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::Approval).await;
    // Bob's invitations file applications for two of the three: half of four.
    let filed = ok(ask(&mut b, invite(g, &strangers)).await);
    assert_eq!(
        filed.results,
        [v1::MemberResult {
            user_id: strangers[2],
            code: ErrorCode::TooManyApplications as i32
        }]
    );
    // Users who ask for themselves still find room.
    for name in ["asker1", "asker2"] {
        let (mut c, _) = server.user(name).await;
        assert_eq!(
            ok(ask(&mut c, join(g)).await).state,
            GroupJoinState::Pending as i32
        );
    }
    let (mut late, _) = server.user("asker3").await;
    assert_eq!(
        code(ask(&mut late, join(g)).await),
        ErrorCode::TooManyApplications
    );
}

/// Group changes have a per-user budget a minute (`groups.writes_per_min_max`): a member
/// churning join / leave stops at it, with `RATE_LIMITED` and the wait, and stores no event
/// past it; other users keep their own budget.
#[tokio::test]
async fn group_changes_have_a_budget_per_user_and_minute() {
    let server = TestServer::start(&[("GROUPS__WRITES_PER_MIN_MAX", "5")]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, _bob) = server.user("bob").await;
    // The budget is per clock minute: start well inside one, so that the test's few hundred
    // milliseconds do not straddle two.
    common::clock::inside_one_clock_minute(std::time::Duration::from_secs(10)).await;
    // Alice: the creation and 4 more changes.
    let g = create_id(&mut a, &[], v1::JoinPolicy::Open).await;
    for name in ["one", "two", "three", "four"] {
        ok(ask(&mut a, update_name(g, name)).await);
    }
    let refused = match ask(&mut a, update_name(g, "five")).await {
        Body::Error(e) => e,
        other => panic!("RATE_LIMITED, got {other:?}"),
    };
    assert_eq!(refused.code, ErrorCode::RateLimited as i32);
    assert!((1..=60_000).contains(&refused.retry_after_ms));
    // Bob: joins and leaves until his budget is spent; every change past it is refused.
    let mut done = 0;
    for _ in 0..4 {
        match ask(&mut b, join(g)).await {
            Body::GroupOk(_) => done += 1,
            other => assert_eq!(code(other), ErrorCode::RateLimited),
        }
        match ask(&mut b, leave(g)).await {
            Body::GroupOk(_) => done += 1,
            other => assert_eq!(code(other), ErrorCode::RateLimited),
        }
    }
    assert_eq!(done, 5, "Bob's own 5");
    // The group's log: created, 4 renames, and Bob's 5 changes (3 joins, 2 leaves).
    assert_eq!(sync(&mut a, g).await.len(), 10);
}
