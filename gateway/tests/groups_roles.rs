//! The roles table of docs/PROTOCOL.md "Groups", row by row over the real server: each action
//! by the owner, an admin and a member, allowed or refused with its code, and the target roles
//! each may act on.

mod common;

use common::TestServer;
use common::contacts::{ask, code};
use common::groups::{
    ack, applications, approve, create_id, dissolve, event_kind, invite, join, leave, mute, ok,
    recall, remove, send, send_body, set_role, transfer, update_name,
};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, GroupEventKind, GroupJoinState, GroupRole};

struct P {
    c: Client,
    id: u64,
}

/// A group with an owner, two admins and two members (invite-only), and whoever else a test
/// needs outside it.
struct Cast {
    _server: TestServer,
    g: u64,
    owner: P,
    admin: P,
    admin2: P,
    member: P,
    member2: P,
    outsiders: Vec<P>,
}

async fn cast(outsiders: usize) -> Cast {
    let server = TestServer::start(&[]);
    let mut people = Vec::new();
    for name in ["owner", "admin", "admin2", "member", "member2"]
        .into_iter()
        .map(String::from)
        .chain((0..outsiders).map(|i| format!("outsider{i}")))
    {
        let (c, login) = server.user(&name).await;
        people.push(P {
            c,
            id: login.user_id,
        });
    }
    let ids: Vec<u64> = people[1..5].iter().map(|p| p.id).collect();
    let rest = people.split_off(5);
    let mut it = people.into_iter();
    let mut owner = it.next().unwrap();
    let g = create_id(&mut owner.c, &ids, v1::JoinPolicy::InviteOnly).await;
    for id in &ids[..2] {
        ok(ask(&mut owner.c, set_role(g, *id, GroupRole::Admin)).await);
    }
    Cast {
        _server: server,
        g,
        owner,
        admin: it.next().unwrap(),
        admin2: it.next().unwrap(),
        member: it.next().unwrap(),
        member2: it.next().unwrap(),
        outsiders: rest,
    }
}

/// Per-user results, in user id order.
fn result_codes(o: &v1::GroupOk) -> Vec<(u64, ErrorCode)> {
    let mut out: Vec<_> = o
        .results
        .iter()
        .map(|r| (r.user_id, ErrorCode::try_from(r.code).unwrap()))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn send_update_mention_everyone_mute_and_mute_all() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        mut admin2,
        mut member,
        mut member2,
        ..
    } = cast(0).await;
    // send: everyone.
    for (i, p) in [&mut owner, &mut admin, &mut member]
        .into_iter()
        .enumerate()
    {
        ack(send(&mut p.c, g, &format!("s{i}"), "hi").await);
    }
    // update: owner and admins.
    ok(ask(&mut owner.c, update_name(g, "by owner")).await);
    ok(ask(&mut admin.c, update_name(g, "by admin")).await);
    assert_eq!(
        code(ask(&mut member.c, update_name(g, "by member")).await),
        ErrorCode::Forbidden
    );
    // mention everyone: owner and admins.
    ack(ask(&mut owner.c, send_body(g, "all-o", "@all", &[], true)).await);
    ack(ask(&mut admin.c, send_body(g, "all-a", "@all", &[], true)).await);
    assert_eq!(
        code(ask(&mut member.c, send_body(g, "all-m", "@all", &[], true)).await),
        ErrorCode::Forbidden
    );
    // mute a member: the owner mutes admins and members, an admin members only, a member nobody.
    let until = ringchat_backend::api::now_ms() + 60_000;
    assert_eq!(
        code(ask(&mut member.c, mute(g, member2.id, until)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&mut admin.c, mute(g, admin2.id, until)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&mut admin.c, mute(g, owner.id, until)).await),
        ErrorCode::Forbidden
    );
    ok(ask(&mut admin.c, mute(g, member.id, until)).await);
    assert_eq!(
        code(send(&mut member.c, g, "m1", "x").await),
        ErrorCode::Muted
    );
    ok(ask(&mut owner.c, mute(g, admin2.id, until)).await);
    assert_eq!(
        code(send(&mut admin2.c, g, "a2", "x").await),
        ErrorCode::Muted
    );
    ok(ask(&mut owner.c, mute(g, admin2.id, 0)).await);
    ack(send(&mut admin2.c, g, "a2", "unmuted").await);
    // mute-all (GroupMute user 0): owner and admins set it; then only they send.
    assert_eq!(
        code(ask(&mut member2.c, mute(g, 0, 1)).await),
        ErrorCode::Forbidden
    );
    ok(ask(&mut admin.c, mute(g, 0, 1)).await);
    assert_eq!(
        code(send(&mut member2.c, g, "m2", "x").await),
        ErrorCode::Muted
    );
    ack(send(&mut admin2.c, g, "a2-all", "admins speak").await);
    ack(send(&mut owner.c, g, "o-all", "the owner speaks").await);
    ok(ask(&mut owner.c, mute(g, 0, 0)).await);
    ack(send(&mut member2.c, g, "m2", "back").await);
}

#[tokio::test]
async fn invite_under_each_join_policy_and_answer_applications() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        mut member,
        mut outsiders,
        ..
    } = cast(5).await;
    let [x, y, z, w, v] = [0, 1, 2, 3, 4].map(|i| outsiders[i].id);
    let policy = |p: v1::JoinPolicy| {
        Body::GroupUpdate(v1::GroupUpdate {
            conversation_id: g,
            join_policy: Some(p as i32),
            ..Default::default()
        })
    };
    // INVITE_ONLY: owner and admins invite, a member may not.
    assert_eq!(
        code(ask(&mut member.c, invite(g, &[x])).await),
        ErrorCode::Forbidden
    );
    let by_admin = ok(ask(&mut admin.c, invite(g, &[x])).await);
    assert_eq!(by_admin.state, GroupJoinState::Joined as i32);
    ok(ask(&mut owner.c, policy(v1::JoinPolicy::Open)).await);
    // OPEN: a member's invite adds at once.
    let by_member = ok(ask(&mut member.c, invite(g, &[y])).await);
    assert_eq!(by_member.state, GroupJoinState::Joined as i32);
    ok(ask(&mut owner.c, policy(v1::JoinPolicy::Approval)).await);
    // APPROVAL: a member's invite becomes an application; an admin's adds.
    let filed = ok(ask(&mut member.c, invite(g, &[z])).await);
    assert_eq!(filed.state, GroupJoinState::Pending as i32);
    let added = ok(ask(&mut admin.c, invite(g, &[w])).await);
    assert_eq!(added.state, GroupJoinState::Joined as i32);
    ok(ask(&mut outsiders[4].c, join(g)).await);
    // Applications: listed and answered by the owner and admins only.
    assert_eq!(
        code(ask(&mut member.c, applications(g)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&mut member.c, approve(g, z, true)).await),
        ErrorCode::Forbidden
    );
    for p in [&mut owner, &mut admin] {
        match ask(&mut p.c, applications(g)).await {
            Body::GroupApplicationList(l) => {
                let ids: Vec<u64> = l
                    .applications
                    .iter()
                    .map(|a| a.profile.as_ref().unwrap().user_id)
                    .collect();
                assert_eq!(ids, [z, v]);
            }
            other => panic!("{other:?}"),
        }
    }
    let approved = ok(ask(&mut admin.c, approve(g, z, true)).await);
    assert_eq!(approved.state, GroupJoinState::Joined as i32);
    ok(ask(&mut owner.c, approve(g, v, false)).await);
    // The rejected applicant is told, and is not in.
    let told = loop {
        let m = outsiders[4].c.next_push().await.unwrap();
        if event_kind(&m) == Some(GroupEventKind::Rejected) {
            break m;
        }
    };
    assert_eq!(told.conversation_id, g);
    assert_eq!(
        code(send(&mut outsiders[4].c, g, "v", "x").await),
        ErrorCode::NotFound
    );
    ack(send(&mut outsiders[2].c, g, "z", "approved and in").await);
}

#[tokio::test]
async fn remove_by_role_and_target_role() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        admin2,
        mut member,
        member2,
        ..
    } = cast(0).await;
    assert_eq!(
        code(ask(&mut member.c, remove(g, &[member2.id])).await),
        ErrorCode::Forbidden
    );
    // An admin removes members only: the owner and the other admin are refused, one by one.
    let r = ok(ask(&mut admin.c, remove(g, &[admin2.id, owner.id, member2.id])).await);
    let mut refused = [
        (admin2.id, ErrorCode::Forbidden),
        (owner.id, ErrorCode::Forbidden),
    ];
    refused.sort_unstable();
    assert_eq!(result_codes(&r), refused);
    assert!(r.event_seq > 0, "member2 was removed");
    // The owner removes admins and members; nobody removes the owner.
    ok(ask(&mut owner.c, remove(g, &[admin2.id, member.id])).await);
    let r = ok(ask(&mut admin.c, remove(g, &[owner.id])).await);
    assert_eq!(result_codes(&r), [(owner.id, ErrorCode::Forbidden)]);
    assert_eq!(r.event_seq, 0);
    // Removed: the door is shut for them.
    assert_eq!(
        code(send(&mut member.c, g, "gone", "x").await),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn set_role_transfer_and_dissolve_are_the_owners() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        admin2,
        mut member,
        member2,
        ..
    } = cast(0).await;
    for (p, target) in [(&mut admin, member2.id), (&mut member, member2.id)] {
        assert_eq!(
            code(ask(&mut p.c, set_role(g, target, GroupRole::Admin)).await),
            ErrorCode::Forbidden
        );
    }
    assert_eq!(
        code(ask(&mut admin.c, set_role(g, admin2.id, GroupRole::Member)).await),
        ErrorCode::Forbidden
    );
    ok(ask(&mut owner.c, set_role(g, admin2.id, GroupRole::Member)).await);
    ok(ask(&mut owner.c, set_role(g, member2.id, GroupRole::Admin)).await);
    for p in [&mut admin, &mut member] {
        assert_eq!(
            code(ask(&mut p.c, transfer(g, member2.id)).await),
            ErrorCode::Forbidden
        );
        assert_eq!(code(ask(&mut p.c, dissolve(g)).await), ErrorCode::Forbidden);
    }
    // A muted admin who becomes the owner is not muted any more: nobody could lift it.
    let an_hour = ringchat_backend::api::now_ms() + 3_600_000;
    ok(ask(&mut owner.c, mute(g, admin.id, an_hour)).await);
    assert_eq!(
        code(send(&mut admin.c, g, "m0", "x").await),
        ErrorCode::Muted
    );
    // The owner hands over and becomes an admin; the new owner dissolves.
    ok(ask(&mut owner.c, transfer(g, admin.id)).await);
    ack(send(&mut admin.c, g, "m1", "x").await);
    assert_eq!(
        code(ask(&mut owner.c, dissolve(g)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&mut owner.c, set_role(g, member.id, GroupRole::Admin)).await),
        ErrorCode::Forbidden,
        "an admin now"
    );
    ok(ask(&mut admin.c, dissolve(g)).await);
    assert_eq!(
        code(send(&mut member.c, g, "late", "x").await),
        ErrorCode::GroupDissolved
    );
}

#[tokio::test]
async fn recall_of_others_messages_by_role() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        mut admin2,
        mut member,
        mut member2,
        ..
    } = cast(0).await;
    let seq = |reply: Body| ack(reply).seq;
    let by_owner = seq(send(&mut owner.c, g, "o", "owner's").await);
    let by_admin2 = seq(send(&mut admin2.c, g, "a2", "admin2's").await);
    let by_member = seq(send(&mut member.c, g, "m", "member's").await);
    let by_member2 = seq(send(&mut member2.c, g, "m2", "member2's").await);
    let recalled = |reply: Body| match reply {
        Body::RecallOk(r) => r,
        other => panic!("expected RecallOk, got {other:?}"),
    };
    // A member recalls its own messages only.
    assert_eq!(
        code(ask(&mut member.c, recall(g, by_member2)).await),
        ErrorCode::Forbidden
    );
    recalled(ask(&mut member.c, recall(g, by_member)).await);
    // An admin recalls members' messages, not an admin's or the owner's.
    for s in [by_admin2, by_owner] {
        assert_eq!(
            code(ask(&mut admin.c, recall(g, s)).await),
            ErrorCode::Forbidden
        );
    }
    recalled(ask(&mut admin.c, recall(g, by_member2)).await);
    // The owner recalls admins' (and members') messages.
    recalled(ask(&mut owner.c, recall(g, by_admin2)).await);
    // Events are never recalled.
    assert_eq!(
        code(ask(&mut owner.c, recall(g, 1)).await),
        ErrorCode::InvalidArgument
    );
}

/// An admin recalls only what it may read: in a group that hides its history, what came before
/// it joined is NOT_FOUND, the same answer as a seq never sent (events and messages alike), so
/// that a recall cannot probe the hidden history.
#[tokio::test]
async fn an_admin_cannot_recall_or_probe_history_hidden_from_it() {
    let server = TestServer::start(&[]);
    let (mut owner, _) = server.user("owner").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut a, alice) = server.user("alice").await;
    let g = common::groups::create(
        &mut owner,
        "hidden",
        &[bob.user_id],
        v1::JoinPolicy::InviteOnly,
        false,
    )
    .await
    .group
    .expect("a group")
    .conversation_id;
    let before = ack(send(&mut b, g, "b1", "before alice").await).seq;
    ok(ask(&mut owner, invite(g, &[alice.user_id])).await);
    ok(ask(&mut owner, set_role(g, alice.user_id, GroupRole::Admin)).await);
    for seq in [1, before, 999] {
        assert_eq!(
            code(ask(&mut a, recall(g, seq)).await),
            ErrorCode::NotFound,
            "seq {seq}"
        );
    }
    // What came after the join is hers to recall as an admin.
    let after = ack(send(&mut b, g, "b2", "after alice").await).seq;
    match ask(&mut a, recall(g, after)).await {
        Body::RecallOk(r) => assert_eq!(r.seq, after),
        other => panic!("expected RecallOk, got {other:?}"),
    }
    // The owner, who reads from the start, still recalls the older one.
    match ask(&mut owner, recall(g, before)).await {
        Body::RecallOk(r) => assert_eq!(r.seq, before),
        other => panic!("expected RecallOk, got {other:?}"),
    }
}

#[tokio::test]
async fn leave_by_role_and_the_last_owner_dissolves() {
    let Cast {
        _server,
        g,
        mut owner,
        mut admin,
        admin2,
        mut member,
        member2,
        ..
    } = cast(0).await;
    assert_eq!(
        code(ask(&mut owner.c, leave(g)).await),
        ErrorCode::OwnerMustTransfer
    );
    assert!(ok(ask(&mut admin.c, leave(g)).await).event_seq > 0);
    assert!(ok(ask(&mut member.c, leave(g)).await).event_seq > 0);
    ok(ask(&mut owner.c, remove(g, &[admin2.id, member2.id])).await);
    // Alone, the owner may leave: the group is dissolved by it.
    let last = ok(ask(&mut owner.c, leave(g)).await);
    let info = match ask(
        &mut owner.c,
        Body::GroupInfo(v1::GroupInfo { conversation_id: g }),
    )
    .await
    {
        Body::Group(i) => i,
        other => panic!("{other:?}"),
    };
    assert!(info.dissolved);
    assert_eq!(info.max_seq, last.event_seq);
    let events = owner.c.sync_all(g, 0).await.unwrap();
    assert_eq!(
        event_kind(events.last().unwrap()),
        Some(GroupEventKind::Dissolved)
    );
}
