//! Invite codes issued by users (`CreateInvite`, `ListInvites`, `RevokeInvite`) over real
//! sockets: a code registers a new user until used up, expired or revoked; the day's allowance
//! is refused with RATE_LIMITED and `retry_after_ms`, also after a restart; a user lists and
//! revokes only their own; operators see them in `/api/invites` with the issuer and in the
//! audit log.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::account::{error_code, hello};
use common::contacts::ask;
use common::{PASSWORD, TestServer, wait_until};
use ringchat_bench::client::{Client, password_login};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use serde_json::json;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn register(server: &TestServer, name: &str, invite: &str) -> Body {
    let mut c = hello(server).await;
    c.request(Body::Register(v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        invite_code: invite.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
}

async fn login(server: &TestServer, name: &str) -> Client {
    let mut c = hello(server).await;
    let reply = c
        .request(Body::Login(password_login(
            name,
            PASSWORD,
            &format!("{name}-1"),
        )))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    c
}

async fn create(c: &mut Client, uses_max: u32, ttl_s: u64) -> Body {
    ask(c, Body::CreateInvite(v1::CreateInvite { uses_max, ttl_s })).await
}

/// The code and invite of a `CreateInvite` that must succeed.
async fn issue(c: &mut Client, uses_max: u32, ttl_s: u64) -> (String, v1::Invite) {
    match create(c, uses_max, ttl_s).await {
        Body::InviteCreated(v1::InviteCreated {
            invite: Some(invite),
            code,
        }) => (code, invite),
        other => panic!("CreateInvite: {other:?}"),
    }
}

async fn list(c: &mut Client, before_id: u64, limit: u32) -> v1::InviteList {
    match ask(c, Body::ListInvites(v1::ListInvites { before_id, limit })).await {
        Body::InviteList(l) => l,
        other => panic!("ListInvites: {other:?}"),
    }
}

async fn revoke(c: &mut Client, invite_id: u64) -> Body {
    ask(c, Body::RevokeInvite(v1::RevokeInvite { invite_id })).await
}

fn ids(l: &v1::InviteList) -> Vec<u64> {
    l.invites.iter().map(|i| i.invite_id).collect()
}

#[tokio::test]
async fn users_issue_invites_within_their_allowance_and_manage_only_their_own() {
    let mut server = TestServer::start(&[
        ("ACCOUNTS__REGISTRATION", "invite"),
        ("ACCOUNTS__USER_INVITES_PER_DAY", "4"),
        ("ACCOUNTS__USER_INVITE_USES_MAX", "2"),
    ]);
    let ops = server.api_key("ops", "admin");
    let r = ops.post("/api/invites", json!({"uses_max": 2}));
    assert_eq!(r.0, 201, "{}", r.1);
    let first = r.1["code"].as_str().unwrap().to_owned();
    let Body::RegisterOk(alice) = register(&server, "alice", &first).await else {
        panic!("alice registers")
    };
    assert!(matches!(
        register(&server, "mallory", &first).await,
        Body::RegisterOk(_)
    ));
    let mut a = login(&server, "alice").await;
    let mut m = login(&server, "mallory").await;

    // Single use by default; the code registers one user, then no more.
    let (c1, i1) = issue(&mut a, 0, 0).await;
    assert!(c1.starts_with("inv_"));
    assert_eq!((i1.uses_max, i1.uses, i1.usable), (1, 0, true));
    let week = 7 * 24 * 3600 * 1000;
    assert!(
        i1.expires_ms.abs_diff(i1.created_ms + week) < 1000,
        "{i1:?}"
    );
    assert!(matches!(
        register(&server, "zed", &c1).await,
        Body::RegisterOk(_)
    ));
    let used_up = register(&server, "yan", &c1).await;
    assert_eq!(error_code(&used_up), ErrorCode::InviteInvalid);

    // Over the configured bounds: refused, and nothing is issued.
    for (uses, ttl) in [(3, 0), (0, 7 * 24 * 3600 + 1)] {
        let reply = create(&mut a, uses, ttl).await;
        assert_eq!(
            error_code(&reply),
            ErrorCode::InvalidArgument,
            "{uses} {ttl}"
        );
    }

    // Expired.
    let (c2, i2) = issue(&mut a, 0, 1).await;
    while now_ms() <= i2.expires_ms {
        std::thread::sleep(Duration::from_millis(50));
    }
    let expired = register(&server, "xia", &c2).await;
    assert_eq!(error_code(&expired), ErrorCode::InviteInvalid);

    // Another user can neither revoke nor list it; its issuer can, once.
    let (c3, i3) = issue(&mut a, 2, 0).await;
    let reply = revoke(&mut m, i3.invite_id).await;
    assert_eq!(error_code(&reply), ErrorCode::NotFound);
    assert!(list(&mut m, 0, 0).await.invites.is_empty());
    assert_eq!(
        revoke(&mut a, i3.invite_id).await,
        Body::RevokeInviteOk(v1::RevokeInviteOk {
            invite_id: i3.invite_id
        })
    );
    let reply = revoke(&mut a, i3.invite_id).await;
    assert_eq!(error_code(&reply), ErrorCode::NotFound);
    let revoked = register(&server, "wendy", &c3).await;
    assert_eq!(error_code(&revoked), ErrorCode::InviteInvalid);

    // The fourth of the day is the last: a revoked one still counted.
    let (_c4, i4) = issue(&mut a, 0, 0).await;
    let Body::Error(e) = create(&mut a, 0, 0).await else {
        panic!("the fifth is refused")
    };
    assert_eq!(e.code, ErrorCode::RateLimited as i32, "{e:?}");
    assert!((1..=24 * 3600 * 1000).contains(&e.retry_after_ms), "{e:?}");
    // Mallory's allowance is her own.
    let (_, mine) = issue(&mut m, 0, 0).await;

    // Alice's own, newest first, paged.
    let page = list(&mut a, 0, 2).await;
    assert_eq!(ids(&page), vec![i4.invite_id, i2.invite_id]);
    assert_eq!(page.next_before_id, i2.invite_id);
    let page = list(&mut a, page.next_before_id, 2).await;
    assert_eq!(ids(&page), vec![i1.invite_id]);
    assert_eq!(page.next_before_id, 0);
    assert_eq!((page.invites[0].uses, page.invites[0].usable), (1, false));
    assert_eq!(ids(&list(&mut m, 0, 0).await), vec![mine.invite_id]);

    // Operators see users' invites with their issuer, and the audit log has them.
    let r = ops.get("/api/invites?limit=200");
    assert_eq!(r.0, 200, "{}", r.1);
    let items = r.1["items"].as_array().unwrap();
    let issuer_of = |id: u64| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["issuer"].as_str().unwrap().to_owned())
    };
    let alice_issuer = format!("user:{}", alice.user_id);
    assert_eq!(issuer_of(i4.invite_id), Some(alice_issuer.clone()));
    assert_eq!(issuer_of(i3.invite_id), None, "revoked");
    wait_until("the invites in the audit log", || {
        let r = ops.get("/api/audit?limit=200");
        let entries = r.1["items"].as_array().cloned().unwrap_or_default();
        let has = |action: &str| {
            entries
                .iter()
                .any(|e| e["actor"] == alice_issuer.as_str() && e["action"] == action)
        };
        has("invite.create") && has("invite.revoke")
    });

    // A restart does not reset the day: three of alice's stored invites are from today.
    drop((a, m));
    server.stop();
    server.restart();
    let mut a = login(&server, "alice").await;
    issue(&mut a, 0, 0).await;
    let reply = create(&mut a, 0, 0).await;
    assert_eq!(error_code(&reply), ErrorCode::RateLimited);
}

/// While the server holds `accounts.invites_max` usable invites, a user's `CreateInvite` is
/// `UNAVAILABLE` with a `retry_after_ms` drawn in [60 s, 120 s): the users refused together do
/// not all come back in the same millisecond.
#[tokio::test]
async fn a_full_servers_refusals_spread_their_retries() {
    const REFUSALS: usize = 40;
    let server = TestServer::start(&[
        ("ACCOUNTS__REGISTRATION", "invite"),
        ("ACCOUNTS__INVITES_MAX", "1"),
        ("ACCOUNTS__USER_INVITES_PER_DAY", "100"),
    ]);
    let ops = server.api_key("ops", "admin");
    // Two uses: one registers alice, the other keeps it usable, so the server is full.
    let r = ops.post("/api/invites", json!({"uses_max": 2}));
    assert_eq!(r.0, 201, "{}", r.1);
    let Body::RegisterOk(_) = register(&server, "alice", r.1["code"].as_str().unwrap()).await
    else {
        panic!("alice registers")
    };
    let mut a = login(&server, "alice").await;
    let mut told = std::collections::HashSet::new();
    for _ in 0..REFUSALS {
        let Body::Error(e) = create(&mut a, 0, 0).await else {
            panic!("the server is full")
        };
        assert_eq!(e.code, ErrorCode::Unavailable as i32, "{e:?}");
        assert!(
            (60_000..120_000).contains(&e.retry_after_ms),
            "{}",
            e.retry_after_ms
        );
        told.insert(e.retry_after_ms);
    }
    assert!(told.len() > REFUSALS / 2, "in lockstep: {told:?}");
}

#[tokio::test]
async fn users_issue_no_invites_unless_registration_is_by_invite() {
    let server = TestServer::start(&[]);
    let (mut c, _) = server.user("alice").await;
    let reply = create(&mut c, 0, 0).await;
    assert_eq!(error_code(&reply), ErrorCode::Forbidden);
    assert!(list(&mut c, 0, 0).await.invites.is_empty());
}

/// A disabled user's codes register nobody (the use they would take is kept), and work again
/// once the user is enabled; operators list one issuer's invites with `?issuer=`.
#[tokio::test]
async fn a_disabled_users_invites_register_nobody_until_enabled() {
    let server = TestServer::start(&[("ACCOUNTS__REGISTRATION", "invite")]);
    let ops = server.api_key("ops", "admin");
    let r = ops.post("/api/invites", json!({}));
    assert_eq!(r.0, 201, "{}", r.1);
    let Body::RegisterOk(alice) = register(&server, "alice", r.1["code"].as_str().unwrap()).await
    else {
        panic!("alice registers")
    };
    let mut a = login(&server, "alice").await;
    let (code, invite) = issue(&mut a, 1, 0).await;

    let mine = format!("user:{}", alice.user_id);
    let listed = ops.get(&format!("/api/invites?issuer={mine}&limit=1"));
    assert_eq!(listed.0, 200, "{}", listed.1);
    assert_eq!(
        listed.1["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.1
    );
    assert_eq!(listed.1["items"][0]["id"], invite.invite_id);
    assert_eq!(listed.1["items"][0]["issuer"], mine.as_str());
    assert!(listed.1.get("next_cursor").is_none(), "{}", listed.1);
    // The operator's invite (used) is not hers.
    let all = ops.get("/api/invites").1["items"].as_array().unwrap().len();
    assert_eq!(all, 2);
    let nobody = ops.get("/api/invites?issuer=user:1");
    assert_eq!(nobody.1["items"], json!([]), "{}", nobody.1);
    let long = ops.get(&format!("/api/invites?issuer={}", "x".repeat(257)));
    assert_eq!(long.0, 422, "{}", long.1);

    let disabled = ops.post(
        &format!("/api/users/{}/disable", alice.user_id),
        json!({"reason": "spam"}),
    );
    assert_eq!(disabled.0, 200, "{}", disabled.1);
    let refused = register(&server, "bob", &code).await;
    assert_eq!(
        error_code(&refused),
        ErrorCode::InviteInvalid,
        "{refused:?}"
    );

    let enabled = ops.post(&format!("/api/users/{}/enable", alice.user_id), json!({}));
    assert_eq!(enabled.0, 200, "{}", enabled.1);
    assert!(
        matches!(register(&server, "bob", &code).await, Body::RegisterOk(_)),
        "the refused try took no use of the code"
    );
}
