//! Text PostgreSQL cannot store (NUL) on the server with PostgreSQL as the store: refused as
//! `INVALID_ARGUMENT` where it is typed, by the one text rule, so it never reaches a commit
//! group and never fails other people's writes (it failed the whole group, every op in it
//! answered `UNAVAILABLE`); and where such text is only recorded (a failed login's typed name in
//! the audit log), it is escaped. Needs the server that `scripts/test.sh` starts
//! (RINGCHAT_TEST_POSTGRES_URL); the harness gives the server a fresh database of its own.

mod common;

use common::TestServer;
use common::contacts::{ask, code, search};
use common::groups::{ack, create_id, send, send_body};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, login, search_users};

#[tokio::test]
async fn text_postgresql_cannot_store_is_invalid_argument_and_fails_no_other_write() {
    let server = TestServer::start(&[("STORAGE__ENGINE", "postgres")]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut d, _dave) = server.user("dave").await;
    let g = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::Open).await;
    let asks = create_id(&mut a, &[], v1::JoinPolicy::Approval).await;

    // A create with NUL in its name and Bob's send, in flight together: the create is refused
    // where it is typed, the send is stored.
    let create = a
        .send(Body::GroupCreate(v1::GroupCreate {
            name: "a\0".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let sent = b
        .send(send_body(g, "m1", "hello", &[], false))
        .await
        .unwrap();
    assert_eq!(
        code(a.reply_to(create).await.unwrap()),
        ErrorCode::InvalidArgument
    );
    let first = ack(b.reply_to(sent).await.unwrap()).seq;

    // Every group text field, on create, update and join.
    let update = |f: fn(&mut v1::GroupUpdate)| {
        let mut u = v1::GroupUpdate {
            conversation_id: g,
            ..Default::default()
        };
        f(&mut u);
        Body::GroupUpdate(u)
    };
    for body in [
        Body::GroupCreate(v1::GroupCreate {
            name: "ok".into(),
            intro: "x\0".into(),
            ..Default::default()
        }),
        Body::GroupCreate(v1::GroupCreate {
            name: "ok".into(),
            avatar_url: "https://a.example/\0.png".into(),
            ..Default::default()
        }),
        update(|u| u.name = Some("b\0".into())),
        update(|u| u.intro = Some("\0".into())),
        update(|u| u.avatar_url = Some("https://a.example/\0".into())),
    ] {
        assert_eq!(code(ask(&mut a, body).await), ErrorCode::InvalidArgument);
    }
    let join = Body::GroupJoin(v1::GroupJoin {
        conversation_id: asks,
        message: "let me in\0".into(),
    });
    assert_eq!(code(ask(&mut d, join).await), ErrorCode::InvalidArgument);
    // Newlines are fine where a field is several lines long.
    let join = Body::GroupJoin(v1::GroupJoin {
        conversation_id: asks,
        message: "hello,\nlet me in".into(),
    });
    assert!(
        matches!(ask(&mut d, join).await, Body::GroupOk(_)),
        "a multi-line application"
    );

    // Username searches, and a login's device id.
    for (query, after) in [
        (search_users::Query::UsernamePrefix("al\0".into()), ""),
        (search_users::Query::UsernamePrefix("al".into()), "\0"),
        (search_users::Query::Email("a\0@a.example".into()), ""),
    ] {
        assert_eq!(
            code(search(&mut b, query, after, 10).await),
            ErrorCode::InvalidArgument
        );
    }
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let refused = c
        .login(v1::Login {
            account: Some(login::Account::Username("bob".into())),
            credential: Some(login::Credential::Password(common::PASSWORD.into())),
            device_id: "phone\0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .expect_err("a device id with NUL is refused");
    assert_eq!(refused.0.code, ErrorCode::InvalidArgument as i32);

    // The group still takes writes.
    assert_eq!(
        ack(send(&mut b, g, "m2", "still here").await).seq,
        first + 1
    );
}

/// A failed login's typed name is anyone's text: one holding NUL is audited (as the unknown
/// account's marker: a typed name is never kept), and the admin action audited after it is
/// there too (when the name was kept, PostgreSQL refused the whole batch, and the audit writer
/// dropped it).
#[tokio::test]
async fn a_failed_login_with_nul_in_its_name_costs_no_audit_entry() {
    let server = TestServer::start(&[("STORAGE__ENGINE", "postgres")]);
    let admin = server.api_key("ops", "admin");
    let (_b, bob) = server.user("bob").await;
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let refused = c
        .login(v1::Login {
            account: Some(login::Account::Username("x\0".into())),
            credential: Some(login::Credential::Password("wrong".into())),
            device_id: "d".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .expect_err("no such account");
    assert_eq!(
        refused.0.code,
        ErrorCode::InvalidCredentials as i32,
        "{refused:?}"
    );
    let disabled = admin.post(
        &format!("/api/users/{}/disable", bob.user_id),
        serde_json::json!({}),
    );
    assert_eq!(disabled.0, 200, "{}", disabled.1);
    // The page is read once every entry queued before it is stored.
    let page = admin.get("/api/audit?limit=50");
    assert_eq!(page.0, 200, "{}", page.1);
    let items = page.1["items"].as_array().unwrap();
    let target = format!("user:{}", bob.user_id);
    assert!(
        items
            .iter()
            .any(|e| e["action"] == "user.disable" && e["target"] == target.as_str()),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|e| e["action"] == "user.login_failed" && e["actor"] == "user:(unknown account)"),
        "{items:?}"
    );
}
