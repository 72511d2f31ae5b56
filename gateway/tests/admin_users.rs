//! The admin API's users part against the real server: find, view, edit, disable / enable,
//! kick, reset passwords, each refused for viewers and anonymous callers and for bad input;
//! disabled users are kicked everywhere and cannot log in by password or token; users'
//! security events reach the audit log.

mod common;

use std::time::{Duration, Instant};

use common::account::{error_code, hello};
use common::admin::AdminClient;
use common::{PASSWORD, TestServer, expect_kicked_then_closed};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason, login};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

fn code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
}

/// Waits (bounded) until the audit log holds an entry with `action` and `target`.
fn wait_audit(client: &AdminClient, action: &str, target: &str) -> Value {
    wait_audit_where(client, action, "target", target)
}

/// Waits (bounded) until the audit log holds an entry with `action` and `field` = `value`.
fn wait_audit_where(client: &AdminClient, action: &str, field: &str, value: &str) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let reply = client.get("/api/audit?limit=200");
        assert_eq!(reply.0, 200, "{}", reply.1);
        if let Some(e) = reply.1["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action && e[field] == value)
        {
            return e.clone();
        }
        assert!(
            Instant::now() < end,
            "no audit entry {action} {field}={value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn password_login(server: &TestServer, name: &str, password: &str, device: &str) -> Body {
    let mut c = hello(server).await;
    c.request(Body::Login(v1::Login {
        account: Some(login::Account::Username(name.into())),
        credential: Some(login::Credential::Password(password.into())),
        device_id: device.into(),
        platform: v1::Platform::Web as i32,
        ..Default::default()
    }))
    .await
    .unwrap()
}

async fn token_login(server: &TestServer, token: &str, device: &str) -> Body {
    let mut c = hello(server).await;
    c.request(Body::Login(v1::Login {
        credential: Some(login::Credential::Token(token.into())),
        device_id: device.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
}

fn logged_in(body: &Body) -> bool {
    matches!(body, Body::LoginOk(_))
}

async fn alive(c: &mut Client) {
    c.ping().await.expect("the session is still open");
}

#[tokio::test]
async fn users_are_found_viewed_and_edited_and_viewers_change_nothing() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watch", "viewer");
    let anonymous = AdminClient::new(&server);
    let (_alice, alice) = server.user("alice").await;
    let (_albert, _) = server.user("albert").await;
    drop(server.user("bob").await);
    let r = admin.post(
        "/api/users",
        json!({"username": "carol", "password": PASSWORD, "email": "Carol@Example.org"}),
    );
    assert_eq!(r.0, 201, "{}", r.1);
    let carol = r.1["user_id"].as_u64().unwrap();
    assert!(
        r.1.get("password").is_none(),
        "a chosen password is not echoed"
    );

    // Every user, by id, paged.
    let r = viewer.get("/api/users?limit=2");
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["items"].as_array().unwrap().len(), 2);
    let cursor = r.1["next_cursor"].as_str().unwrap().to_owned();
    let r = viewer.get(&format!("/api/users?limit=10&cursor={cursor}"));
    let rest: Vec<&str> = r.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["bob", "carol"]);
    assert!(r.1.get("next_cursor").is_none());
    // By name prefix (any case), paged by name; by exact id; by e-mail address (any case).
    let r = viewer.get("/api/users?query=AL&limit=1");
    assert_eq!(r.1["items"][0]["username"], "albert");
    let cursor = r.1["next_cursor"].as_str().unwrap().to_owned();
    let r = viewer.get(&format!("/api/users?query=al&limit=1&cursor={cursor}"));
    assert_eq!(r.1["items"][0]["username"], "alice");
    assert_eq!(r.1["items"][0]["sessions_online"], 1);
    let r = viewer.get(&format!("/api/users?query={}", alice.user_id));
    assert_eq!(r.1["items"][0]["username"], "alice");
    let r = viewer.get("/api/users?query=carol%40example.ORG");
    assert_eq!(r.1["items"][0]["user_id"], carol);
    let r = viewer.get("/api/users?query=nobody");
    assert_eq!(r.1["items"], json!([]));

    // One user: profile and devices, online with their shard.
    let r = viewer.get(&format!("/api/users/{}", alice.user_id));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["username"], "alice");
    assert_eq!(r.1["disabled"], false);
    assert_eq!(r.1["devices"][0]["device_id"], "alice-dev1");
    assert_eq!(r.1["devices"][0]["online"], true);
    assert_eq!(r.1["devices"][0]["shards"].as_array().unwrap().len(), 1);
    assert!(r.1["last_seen_ms"].as_u64().unwrap() > 0);

    // Edit the profile, by the client's rules.
    let path = format!("/api/users/{}", alice.user_id);
    let r = admin.patch(&path, json!({"nickname": "Alice A.", "bio": "hi"}));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["profile"]["nickname"], "Alice A.");
    assert_eq!(r.1["profile"]["bio"], "hi");
    let r = admin.patch(&path, json!({"avatar_url": "javascript:alert(1)"}));
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.patch(&path, json!({"nick": "x"}));
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "unknown field");
    let r = admin.patch(&path, json!({"nickname": 5}));
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "wrong type");
    let r = admin.patch("/api/users/999999999", json!({"nickname": "x"}));
    assert_eq!((r.0, code(&r)), (404, "not_found"));
    wait_audit(&admin, "user.edit", &format!("user:{}", alice.user_id));

    // Refused: viewers change nothing; anonymous callers see nothing; bad ids and limits.
    for (method, p, body) in [
        ("PATCH", path.clone(), json!({"nickname": "v"})),
        ("POST", format!("{path}/disable"), json!({})),
        ("POST", format!("{path}/enable"), json!({})),
        ("POST", format!("{path}/kick"), json!({})),
        ("POST", format!("{path}/reset-password"), json!({})),
        ("POST", "/api/users".to_owned(), json!({"username": "v1x"})),
    ] {
        let r = viewer.call(method, &p, Some(body.to_string()));
        assert_eq!((r.0, code(&r)), (403, "forbidden"), "{method} {p}");
        let r = anonymous.call(method, &p, Some(body.to_string()));
        assert_eq!((r.0, code(&r)), (401, "unauthenticated"), "{method} {p}");
    }
    assert_eq!(anonymous.get("/api/users").0, 401);
    assert_eq!(anonymous.get(&path).0, 401);
    let r = viewer.get("/api/users/abc");
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    let r = viewer.get("/api/users/5");
    assert_eq!((r.0, code(&r)), (404, "not_found"));
    let r = viewer.get("/api/users?limit=0");
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = viewer.get("/api/users?cursor=zz");
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    let r = viewer.get("/api/users?sort=name");
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "unknown parameter");
    let r = admin.post(
        &format!("{path}/disable"),
        json!({"reason": "x".repeat(300)}),
    );
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.call("POST", &format!("{path}/kick"), Some("{not json".into()));
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
}

#[tokio::test]
async fn disable_a_user_online_on_two_devices_kicks_both_and_refuses_every_login_until_enabled() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (mut phone, phone_ok) = server.user("alice").await;
    let (mut laptop, laptop_ok) = server.device("alice", "laptop").await;
    let (mut bob, _) = server.user("bob").await;
    let id = phone_ok.user_id;

    let r = admin.post(
        &format!("/api/users/{id}/disable"),
        json!({"reason": "spam reports"}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["sessions_kicked"], 2);
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::AccountDisabled
    );
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::AccountDisabled
    );
    alive(&mut bob).await;

    // No login: by password, by either device's token. A wrong password stays a wrong one.
    let body = password_login(&server, "alice", PASSWORD, "phone").await;
    assert_eq!(error_code(&body), ErrorCode::AccountDisabled);
    let body = token_login(&server, &phone_ok.token, "alice-dev1").await;
    assert_eq!(error_code(&body), ErrorCode::AccountDisabled);
    let body = token_login(&server, &laptop_ok.token, "laptop").await;
    assert_eq!(error_code(&body), ErrorCode::AccountDisabled);
    let body = password_login(&server, "alice", "not the password", "phone").await;
    assert_eq!(error_code(&body), ErrorCode::InvalidCredentials);

    let r = admin.get(&format!("/api/users/{id}"));
    assert_eq!(r.1["disabled"], true);
    assert_eq!(r.1["disabled_info"]["reason"], "spam reports");
    assert_eq!(r.1["disabled_info"]["by"], "key:ops");
    let e = wait_audit(&admin, "user.disable", &format!("user:{id}"));
    assert_eq!(e["actor"], "key:ops");
    assert_eq!(e["detail"], "spam reports");
    // The account the name belongs to, not the name as typed.
    wait_audit_where(
        &admin,
        "user.login_disabled",
        "actor",
        &format!("user:{id}"),
    );

    // Kept across a restart (stored durably), then enabled: both ways in work again.
    let mut server = server;
    server.stop();
    server.restart();
    let admin = AdminClient::new(&server).with_key(&admin_key(&server));
    let body = password_login(&server, "alice", PASSWORD, "phone").await;
    assert_eq!(error_code(&body), ErrorCode::AccountDisabled);
    let r = admin.post(&format!("/api/users/{id}/enable"), json!({}));
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(logged_in(
        &password_login(&server, "alice", PASSWORD, "phone").await
    ));
    assert!(logged_in(
        &token_login(&server, &laptop_ok.token, "laptop").await
    ));
    wait_audit(&admin, "user.enable", &format!("user:{id}"));
    let r = admin.post("/api/users/999999999/disable", json!({}));
    assert_eq!((r.0, code(&r)), (404, "not_found"));
}

/// A fresh admin key for a restarted server (the CLI writes the credentials file).
fn admin_key(server: &TestServer) -> String {
    let out = server.admin_cli(&["add-key", "ops2", "--role", "admin"], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn kick_closes_one_device_or_every_device_and_the_user_may_come_back() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (mut phone, ok) = server.user("alice").await;
    let (mut laptop, _) = server.device("alice", "laptop").await;
    let kick = format!("/api/users/{}/kick", ok.user_id);

    let r = admin.post(&kick, json!({"device_id": "laptop"}));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["sessions_kicked"], 1);
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::KickedByOperator
    );
    alive(&mut phone).await;

    // No body at all: every device.
    // (The laptop's session may still be registered while its close is on its way.)
    let r = admin.call("POST", &kick, None);
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1["sessions_kicked"].as_u64().unwrap() >= 1, "{}", r.1);
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::KickedByOperator
    );
    assert!(logged_in(
        &token_login(&server, &ok.token, "alice-dev1").await
    ));
    let e = wait_audit(&admin, "user.kick", &format!("user:{}", ok.user_id));
    assert_eq!(e["actor"], "key:ops");
    let r = admin.post(&kick, json!({"device_id": "d".repeat(200)}));
    assert_eq!((r.0, code(&r)), (422, "invalid"));
}

#[tokio::test]
async fn reset_password_revokes_every_token_and_kicks_like_a_password_change() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (mut phone, ok) = server.user("alice").await;
    let reset = format!("/api/users/{}/reset-password", ok.user_id);

    let r = admin.post(&reset, json!({"password": "short"}));
    assert_eq!((r.0, code(&r)), (422, "invalid"), "the password rule");
    alive(&mut phone).await;

    let r = admin.post(&reset, json!({}));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["tokens_revoked"], 1);
    let new_password = r.1["password"].as_str().unwrap().to_owned();
    assert!(new_password.len() >= 20);
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::PasswordChanged
    );
    let body = token_login(&server, &ok.token, "alice-dev1").await;
    assert_eq!(error_code(&body), ErrorCode::InvalidCredentials);
    let body = password_login(&server, "alice", PASSWORD, "phone").await;
    assert_eq!(error_code(&body), ErrorCode::InvalidCredentials);
    assert!(logged_in(
        &password_login(&server, "alice", &new_password, "phone").await
    ));

    let r = admin.post(&reset, json!({"password": "chosen by ops 1"}));
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1.get("password").is_none());
    assert!(logged_in(
        &password_login(&server, "alice", "chosen by ops 1", "phone").await
    ));
    wait_audit(
        &admin,
        "user.reset_password",
        &format!("user:{}", ok.user_id),
    );
}

#[tokio::test]
async fn users_security_events_reach_the_audit_log() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (mut phone, ok) = server.user("alice").await;
    let (_laptop, _) = server.device("alice", "laptop").await;
    let target = format!("user:{}", ok.user_id);
    wait_audit(&admin, "user.register", &target);

    let body = phone
        .request(Body::RevokeDevice(v1::RevokeDevice {
            device_id: "laptop".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(body, Body::RevokeDeviceOk(_)), "{body:?}");
    let e = wait_audit(&admin, "user.device_revoke", &target);
    assert_eq!(e["detail"], "device laptop");

    let body = phone
        .request(Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "another password".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(body, Body::ChangePasswordOk(_)), "{body:?}");
    wait_audit(&admin, "user.password_change", &target);

    let body = phone.request(Body::Logout(v1::Logout {})).await.unwrap();
    assert!(matches!(body, Body::LogoutOk(_)), "{body:?}");
    let e = wait_audit(&admin, "user.logout", &target);
    assert_eq!(e["actor"], target);
}

/// A failed login is audited under the account its name belongs to, or a fixed marker when no
/// account has that name: never what was typed, which may be a password in the wrong field
/// (the audit log is read by every viewer). As the admin login does.
#[tokio::test]
async fn a_failed_login_never_audits_what_was_typed_as_the_name() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (_alice, ok) = server.user("alice").await;
    let typed = "Hunter2!pass";
    let body = password_login(&server, typed, "x", "phone").await;
    assert_eq!(error_code(&body), ErrorCode::InvalidCredentials);
    let body = password_login(&server, "alice", "not the password", "phone").await;
    assert_eq!(error_code(&body), ErrorCode::InvalidCredentials);
    wait_audit_where(
        &admin,
        "user.login_failed",
        "actor",
        &format!("user:{}", ok.user_id),
    );
    wait_audit_where(
        &admin,
        "user.login_failed",
        "actor",
        "user:(unknown account)",
    );
    let page = admin.get("/api/audit?limit=200");
    assert_eq!(page.0, 200, "{}", page.1);
    let text = page.1.to_string();
    assert!(!text.contains(typed), "{text}");
    assert!(!text.contains("username:"), "{text}");
}
