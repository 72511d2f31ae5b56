//! System notifications over the real server: `POST /api/notifications` to listed users, a
//! group and everyone; stored in each recipient's system conversation (pushed to the online,
//! synced by the offline), in seq order, exactly once even when the request is repeated; the
//! system conversation is read-only; viewers and bad input are refused with JSON errors.

mod common;

use common::TestServer;
use common::admin::AdminClient;
use common::contacts::{ask, code};
use common::groups::create_id;
use prost::Message as _;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType, ConversationKind, ErrorCode};
use serde_json::{Value, json};

fn system_conv(user: u64) -> u64 {
    (2 << 62) | user
}

fn notice(m: &v1::Message) -> v1::SystemNotice {
    assert_eq!(m.content_type, ContentType::SystemNotice as i32);
    assert_eq!(m.from_user_id, 0, "from the server");
    v1::SystemNotice::decode(m.content.as_ref()).expect("a SystemNotice")
}

fn texts(messages: &[v1::Message]) -> Vec<String> {
    messages.iter().map(|m| notice(m).text).collect()
}

fn error_code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
}

/// Sends and waits until it is done; returns its view.
fn send(admin: &AdminClient, body: Value) -> Value {
    let (status, accepted) = admin.post("/api/notifications", body);
    assert!(status == 202 || status == 200, "{status} {accepted}");
    let view = admin.notification_when_done(accepted["notification_id"].as_str().unwrap());
    assert_eq!(view["state"], "done", "{view}");
    view
}

async fn system_messages(c: &mut Client, user: u64) -> Vec<v1::Message> {
    c.sync_all(system_conv(user), 0).await.expect("sync")
}

#[tokio::test]
async fn listed_users_get_it_pushed_or_by_sync_in_order_and_once() {
    let server = TestServer::start(&[("NOTIFICATIONS__BATCH_USERS", "2")]);
    let (mut alice, a) = server.user("alice").await;
    let (bob_conn, b) = server.user("bob").await;
    drop(bob_conn);
    let (_carol, c) = server.user("carol").await;
    let admin = server.api_key("ops", "admin");

    let to = json!({"users": [a.user_id, b.user_id, a.user_id]});
    let (status, accepted) = admin.post(
        "/api/notifications",
        json!({"id": "maint-1", "title": "Maintenance", "text": "down at noon", "to": to}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["notification_id"], "maint-1");
    assert_eq!(accepted["recipients"], 2, "a user listed twice counts once");
    // Online: pushed, in the system conversation, seq 1, from the server.
    let pushed = alice.next_push().await.unwrap();
    assert_eq!(
        (pushed.conversation_id, pushed.seq),
        (system_conv(a.user_id), 1)
    );
    let n = notice(&pushed);
    assert_eq!(
        (
            n.notification_id.as_str(),
            n.title.as_str(),
            n.text.as_str()
        ),
        ("maint-1", "Maintenance", "down at noon")
    );
    assert_eq!(n.content_type, "text/plain");
    let view = admin.notification_when_done("maint-1");
    assert_eq!(view["recipients_done"], 2);
    assert_eq!(view["recipients_total"], 2);
    assert_eq!(view["operator"], "key:ops");

    // The same request again (a client's retry) is the same notification: nothing new.
    let (status, again) = admin.post(
        "/api/notifications",
        json!({"id": "maint-1", "title": "Maintenance", "text": "down at noon", "to": to}),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["repeated"], true);
    // The same id with other content is a conflict.
    let (status, other) = admin.post(
        "/api/notifications",
        json!({"id": "maint-1", "text": "something else", "to": to}),
    );
    assert_eq!((status, error_code(&(status, other))), (409, "conflict"));

    send(
        &admin,
        json!({"text": "second", "to": {"users": [a.user_id, b.user_id]}}),
    );
    let pushed = alice.next_push().await.unwrap();
    assert_eq!((pushed.seq, notice(&pushed).text.as_str()), (2, "second"));

    // Online or not, each has both, once, in order; carol, not listed, has none.
    assert_eq!(
        texts(&system_messages(&mut alice, a.user_id).await),
        ["down at noon", "second"]
    );
    let (mut bob, _) = server.device("bob", "bob-dev2").await;
    let got = system_messages(&mut bob, b.user_id).await;
    assert_eq!(texts(&got), ["down at noon", "second"]);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    let (mut carol, _) = server.device("carol", "carol-dev2").await;
    assert!(system_messages(&mut carol, c.user_id).await.is_empty());

    // In the conversation list as kind SYSTEM, with its unread count.
    let list = bob.conversations().await.unwrap();
    let sys = list
        .iter()
        .find(|c| c.conversation_id == system_conv(b.user_id))
        .expect("the system conversation is listed");
    assert_eq!(sys.kind, ConversationKind::System as i32);
    assert_eq!((sys.max_seq, sys.unread_count), (2, 2));
    assert_eq!(sys.peer_user_id, 0);
    // Read moves the user's cursor there like anywhere.
    let ok = bob.read(system_conv(b.user_id), 2).await.unwrap();
    assert_eq!(ok.read_seq, 2);
    // History, newest first.
    let h = bob.history(system_conv(b.user_id), 0, 10).await.unwrap();
    assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 1]);

    // Nobody sends into it (their own: FORBIDDEN; another's: as if it did not exist).
    let into = |conv: u64| {
        Body::Send(v1::Send {
            client_msg_id: "x1".into(),
            conversation_id: conv,
            content_type: ContentType::Text as i32,
            content: "hi".into(),
            ..Default::default()
        })
    };
    let reply = ask(&mut bob, into(system_conv(b.user_id))).await;
    assert_eq!(code(reply), ErrorCode::Forbidden);
    let reply = ask(&mut bob, into(system_conv(a.user_id))).await;
    assert_eq!(code(reply), ErrorCode::NotFound);
    // Nor reads another's.
    let reply = ask(
        &mut bob,
        Body::Sync(v1::Sync {
            conversation_id: system_conv(a.user_id),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::NotFound);
    // A recall of the server's message is refused.
    let reply = ask(
        &mut bob,
        Body::Recall(v1::Recall {
            conversation_id: system_conv(b.user_id),
            seq: 1,
        }),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::Forbidden);

    // The history lists both, newest first, paged.
    let (status, page) = admin.get("/api/notifications?limit=1");
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_ne!(page["items"][0]["notification_id"], "maint-1");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, next) = admin.get(&format!("/api/notifications?limit=1&cursor={cursor}"));
    assert_eq!(next["items"][0]["notification_id"], "maint-1");
    assert!(next.get("next_cursor").is_none());

    // Audited.
    let (_, audit) = admin.get("/api/audit?limit=50");
    let sends = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "notification.send")
        .count();
    assert_eq!(sends, 2, "one entry per notification, none for the repeat");
}

/// An id names its recipients too: sent again to other users it is a conflict (409), not a
/// repeat that would answer 200 and reach none of them; the same users in another order or
/// named twice are a repeat.
#[tokio::test]
async fn an_id_sent_again_to_other_users_is_a_conflict() {
    let server = TestServer::start(&[]);
    let (_alice, a) = server.user("alice").await;
    let (_bob, b) = server.user("bob").await;
    let admin = server.api_key("ops", "admin");
    let to = |users: Value| json!({"id": "n1", "text": "x", "to": {"users": users}});
    send(&admin, to(json!([a.user_id])));
    for users in [
        json!([b.user_id]),
        json!([a.user_id, b.user_id]),
        json!([b.user_id, a.user_id, a.user_id]),
    ] {
        let reply = admin.post("/api/notifications", to(users.clone()));
        assert_eq!(
            (reply.0, error_code(&reply)),
            (409, "conflict"),
            "to {users}: {}",
            reply.1
        );
    }
    let (status, again) = admin.post("/api/notifications", to(json!([a.user_id, a.user_id])));
    assert_eq!(
        (status, again["repeated"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    let (mut bob, _) = server.device("bob", "bob-dev2").await;
    assert!(system_messages(&mut bob, b.user_id).await.is_empty());
    let (_, audit) = admin.get("/api/audit?limit=50");
    let sends = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "notification.send")
        .count();
    assert_eq!(sends, 1, "only the first was sent");
}

#[tokio::test]
async fn a_groups_members_get_it_and_others_do_not() {
    let server = TestServer::start(&[("NOTIFICATIONS__BATCH_USERS", "1")]);
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = server.user("bob").await;
    let (mut carol, c) = server.user("carol").await;
    let g = create_id(&mut alice, &[b.user_id], v1::JoinPolicy::InviteOnly).await;
    let admin = server.api_key("ops", "admin");
    let view = send(
        &admin,
        json!({"text": "team note", "content_type": "text/markdown", "to": {"group": g.to_string()}}),
    );
    assert_eq!(
        (view["recipients_total"].as_u64(), view["target"].as_str()),
        (Some(2), Some("group"))
    );
    // In decimal, as a string: a JavaScript number would round it.
    assert!(g > 1 << 53);
    assert_eq!(view["group"], g.to_string());
    for (client, user) in [(&mut alice, a.user_id), (&mut bob, b.user_id)] {
        let got = system_messages(client, user).await;
        assert_eq!(texts(&got), ["team note"]);
        assert_eq!(notice(&got[0]).content_type, "text/markdown");
    }
    assert!(system_messages(&mut carol, c.user_id).await.is_empty());
    let (status, r) = admin.post(
        "/api/notifications",
        json!({"text": "x", "to": {"group": ((1u64 << 62) | 999_999).to_string()}}),
    );
    assert_eq!((status, error_code(&(status, r))), (404, "not_found"));
    // A JSON number is refused: one rounded by a JavaScript client names another group.
    let (status, r) = admin.post(
        "/api/notifications",
        json!({"text": "x", "to": {"group": g}}),
    );
    assert_eq!(
        (status, error_code(&(status, r.clone()))),
        (400, "bad_request")
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decimal string"),
        "{r}"
    );
}

#[tokio::test]
async fn everyone_is_walked_in_pages_and_each_gets_it_once() {
    const USERS: usize = 300;
    let server = TestServer::start(&[("NOTIFICATIONS__BATCH_USERS", "7")]);
    let mut ids = Vec::new();
    let (mut online, first) = server.user("u000").await;
    ids.push(first.user_id);
    for i in 1..USERS {
        let (_c, ok) = server.user(&format!("u{i:03}")).await;
        ids.push(ok.user_id);
    }
    let admin = server.api_key("ops", "admin");
    let (status, accepted) = admin.post(
        "/api/notifications",
        json!({"id": "all-1", "text": "hello everyone", "to": {"all": true}}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["recipients"], USERS);
    let pushed = online.next_push().await.unwrap();
    assert_eq!(notice(&pushed).text, "hello everyone");
    let view = admin.notification_when_done("all-1");
    assert_eq!(view["state"], "done");
    assert_eq!(view["recipients_done"], USERS, "{view}");
    // A retried request after it finished: nothing is sent again.
    let (status, again) = admin.post(
        "/api/notifications",
        json!({"id": "all-1", "text": "hello everyone", "to": {"all": true}}),
    );
    assert_eq!((status, again["repeated"].as_bool()), (200, Some(true)));
    // Every 23rd user, and the last, has exactly one.
    for (i, user) in ids.iter().enumerate() {
        if i % 23 != 0 && i != USERS - 1 {
            continue;
        }
        let (mut c, _) = server.device(&format!("u{i:03}"), "check").await;
        let got = system_messages(&mut c, *user).await;
        assert_eq!(texts(&got), ["hello everyone"], "user {i}");
    }
}

#[tokio::test]
async fn viewers_are_refused_and_bad_input_gets_json_errors() {
    let server = TestServer::start(&[("NOTIFICATIONS__USERS_PER_REQUEST_MAX", "3")]);
    let (_a, a) = server.user("alice").await;
    let admin = server.operator("root", "admin");
    let viewer = server.api_key("watch", "viewer");
    let ok = json!({"text": "x", "to": {"users": [a.user_id]}});
    let r = viewer.post("/api/notifications", ok.clone());
    assert_eq!((r.0, error_code(&r)), (403, "forbidden"));
    let r = AdminClient::new(&server).post("/api/notifications", ok.clone());
    assert_eq!((r.0, error_code(&r)), (401, "unauthenticated"));
    // A session without its CSRF token.
    let mut no_csrf = admin.clone();
    no_csrf.send_csrf = false;
    let r = no_csrf.post("/api/notifications", ok.clone());
    assert_eq!((r.0, error_code(&r)), (403, "csrf_missing"));
    // Viewers read.
    assert_eq!(viewer.get("/api/notifications").0, 200);

    let big = "x".repeat(4097);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"to": {"all": true}}), 400, "bad_request"),
        (json!({"text": 5, "to": {"all": true}}), 400, "bad_request"),
        (
            json!({"text": "x", "to": {"all": true}, "extra": 1}),
            400,
            "bad_request",
        ),
        (
            json!({"text": "x", "to": {"everyone": true}}),
            400,
            "bad_request",
        ),
        (
            json!({"text": "x", "to": {"users": [-1]}}),
            400,
            "bad_request",
        ),
        (json!({"text": "x", "to": {}}), 422, "invalid"),
        (
            json!({"text": "x", "to": {"all": true, "group": "5"}}),
            422,
            "invalid",
        ),
        (json!({"text": "x", "to": {"all": false}}), 422, "invalid"),
        (json!({"text": " ", "to": {"all": true}}), 422, "invalid"),
        (json!({"text": big, "to": {"all": true}}), 422, "invalid"),
        (
            json!({"text": "x", "title": "t".repeat(257), "to": {"all": true}}),
            422,
            "invalid",
        ),
        (
            json!({"text": "x", "content_type": "plain", "to": {"all": true}}),
            422,
            "invalid",
        ),
        (
            json!({"text": "x", "id": "has space", "to": {"all": true}}),
            422,
            "invalid",
        ),
        (json!({"text": "x", "to": {"users": []}}), 422, "invalid"),
        (
            json!({"text": "x", "to": {"users": [1, 2, 3, 4]}}),
            422,
            "invalid",
        ),
        (
            json!({"text": "x", "to": {"users": [a.user_id, 999_999_999]}}),
            422,
            "invalid",
        ),
        (json!({"text": "x", "to": {"users": [7]}}), 422, "invalid"),
        (
            json!({"text": "x", "to": {"group": a.user_id.to_string()}}),
            404,
            "not_found",
        ),
        (
            json!({"text": "x", "to": {"group": "99999999999999999999"}}),
            404,
            "not_found",
        ),
        (json!({"text": "x", "to": {"group": "+5"}}), 422, "invalid"),
        (json!({"text": "x", "to": {"group": ""}}), 422, "invalid"),
        (json!({"text": "x", "to": {"group": 5}}), 400, "bad_request"),
    ];
    for (body, status, want) in cases {
        let r = admin.post("/api/notifications", body.clone());
        assert_eq!((r.0, error_code(&r)), (status, want), "{body}: {}", r.1);
    }
    let r = admin.call("POST", "/api/notifications", Some("{not json".into()));
    assert_eq!((r.0, error_code(&r)), (400, "bad_request"));
    // Nothing was sent by any of them.
    let (_, page) = admin.get("/api/notifications");
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    let r = admin.get("/api/notifications/nope");
    assert_eq!((r.0, error_code(&r)), (404, "not_found"));
    let r = admin.get("/api/notifications?limit=0");
    assert_eq!((r.0, error_code(&r)), (422, "invalid"));
    let r = admin.get("/api/notifications?cursor=zz");
    assert_eq!((r.0, error_code(&r)), (400, "bad_request"));
    // The document describes the endpoints.
    let (_, doc) = admin.get("/api/openapi.json");
    assert!(doc["paths"]["/api/notifications"]["post"].is_object());
    assert!(doc["paths"]["/api/notifications/{id}"]["get"].is_object());
    // Group ids are strings there, as on the wire.
    for schema in ["Recipients", "NotificationView"] {
        let group = &doc["components"]["schemas"][schema]["properties"]["group"];
        assert!(
            group.to_string().contains("\"string\""),
            "{schema}: {group}"
        );
    }
}
