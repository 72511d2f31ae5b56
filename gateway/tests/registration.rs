//! The registration policy (`accounts.registration`): closed (only operators create users, by
//! the admin API or by `ringchat admin add-chat-user` while the server is stopped) and invite
//! (Register needs a code an operator issued: single- or N-use, expiring, revocable); and the
//! bound on registrations from one client address.

mod common;

use std::time::{Duration, Instant};

use common::account::{error_code, hello};
use common::store::{LOSE_ANSWER, sql_in};
use common::{PASSWORD, TestServer};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, login};
use serde_json::{Value, json};

fn code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
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

async fn login(server: &TestServer, name: &str, password: &str) -> Body {
    let mut c = hello(server).await;
    c.request(Body::Login(v1::Login {
        account: Some(login::Account::Username(name.into())),
        credential: Some(login::Credential::Password(password.into())),
        device_id: "d1".into(),
        ..Default::default()
    }))
    .await
    .unwrap()
}

fn registered(body: &Body) -> bool {
    matches!(body, Body::RegisterOk(_))
}

/// A closed server answers every Register REGISTRATION_CLOSED: a taken name is not revealed,
/// and no attempt uses up the address's registration budget (one here).
#[tokio::test]
async fn closed_registration_refuses_register_and_operators_create_users_who_can_log_in() {
    let server = TestServer::start(&[
        ("ACCOUNTS__REGISTRATION", "closed"),
        ("ACCOUNTS__REGISTRATIONS_PER_IP_PER_HOUR", "1"),
    ]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watch", "viewer");
    let body = register(&server, "alice", "").await;
    assert_eq!(error_code(&body), ErrorCode::RegistrationClosed);

    let r = admin.post(
        "/api/users",
        json!({"username": "alice", "password": PASSWORD, "email": "a@example.org"}),
    );
    assert_eq!(r.0, 201, "{}", r.1);
    assert!(matches!(
        login(&server, "alice", PASSWORD).await,
        Body::LoginOk(_)
    ));
    for name in ["alice", "ALICE", "zoe", "yann"] {
        let body = register(&server, name, "").await;
        assert_eq!(error_code(&body), ErrorCode::RegistrationClosed, "{name}");
    }
    // A generated password, shown once.
    let r = admin.post("/api/users", json!({"username": "bob"}));
    assert_eq!(r.0, 201, "{}", r.1);
    let password = r.1["password"].as_str().unwrap().to_owned();
    assert!(matches!(
        login(&server, "bob", &password).await,
        Body::LoginOk(_)
    ));

    // The client's rules, and conflicts.
    let r = admin.post(
        "/api/users",
        json!({"username": "ALICE", "password": PASSWORD}),
    );
    assert_eq!((r.0, code(&r)), (409, "conflict"), "{}", r.1);
    let r = admin.post(
        "/api/users",
        json!({"username": "carol", "password": PASSWORD, "email": "A@example.org"}),
    );
    assert_eq!((r.0, code(&r)), (409, "conflict"), "address taken");
    let r = admin.post(
        "/api/users",
        json!({"username": "1x", "password": PASSWORD}),
    );
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.post(
        "/api/users",
        json!({"username": "carol", "password": "short"}),
    );
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.post("/api/users", json!({"username": "carol", "role": "x"}));
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    let r = admin.call("POST", "/api/users", None);
    assert_eq!(r.0 / 100, 4, "no body: {}", r.1);
    let r = viewer.post("/api/users", json!({"username": "carol"}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
}

/// One client address registers at most `accounts.registrations_per_ip_per_hour` times. A
/// taken name is not counted (names are public, and a client that registers before each
/// login must not use up the budget); logins go on past the bound.
#[tokio::test]
async fn registrations_from_one_address_are_bounded() {
    let server = TestServer::start(&[("ACCOUNTS__REGISTRATIONS_PER_IP_PER_HOUR", "2")]);
    assert!(registered(&register(&server, "first", "").await));
    for _ in 0..3 {
        let taken = register(&server, "first", "").await;
        assert_eq!(error_code(&taken), ErrorCode::UsernameTaken);
    }
    assert!(registered(&register(&server, "second", "").await));
    let Body::Error(limited) = register(&server, "third", "").await else {
        panic!("a third registration from one address is refused")
    };
    assert_eq!(limited.code, ErrorCode::RateLimited as i32);
    assert!(limited.retry_after_ms > 0);
    let again = login(&server, "first", PASSWORD).await;
    assert!(matches!(again, Body::LoginOk(_)), "{again:?}");
}

/// On an invite server a missing or wrong code is answered INVITE_INVALID before anything
/// else, and uses up none of the address's registration budget (one here): the one
/// registration it allows still goes through with a valid code afterwards.
#[tokio::test]
async fn a_wrong_invite_is_answered_first_and_uses_no_registration_budget() {
    let server = TestServer::start(&[
        ("ACCOUNTS__REGISTRATION", "invite"),
        ("ACCOUNTS__REGISTRATIONS_PER_IP_PER_HOUR", "1"),
    ]);
    let admin = server.api_key("ops", "admin");
    let r = admin.post(
        "/api/users",
        json!({"username": "alice", "password": PASSWORD}),
    );
    assert_eq!(r.0, 201, "{}", r.1);
    for (name, invite) in [
        ("alice", ""),
        ("alice", "inv_wrong"),
        ("bob", ""),
        ("bob", "inv_wrong"),
        ("bob", "inv_wrong_again"),
    ] {
        let body = register(&server, name, invite).await;
        assert_eq!(
            error_code(&body),
            ErrorCode::InviteInvalid,
            "{name} {invite:?}"
        );
    }
    let r = admin.post("/api/invites", json!({}));
    assert_eq!(r.0, 201, "{}", r.1);
    let invite = r.1["code"].as_str().unwrap().to_owned();
    let body = register(&server, "bob", &invite).await;
    assert!(registered(&body), "{body:?}");
}

#[tokio::test]
async fn the_cli_creates_chat_users_only_while_the_server_is_stopped() {
    let mut server = TestServer::start(&[("ACCOUNTS__REGISTRATION", "closed")]);
    let out = server.admin_cli(&["add-chat-user", "dave"], &format!("{PASSWORD}\n"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("POST /api/users"), "{stderr}");

    server.stop();
    let out = server.admin_cli(
        &["add-chat-user", "dave", "--email", "d@example.org"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = server.admin_cli(&["add-chat-user", "dave"], &format!("{PASSWORD}\n"));
    assert!(!out.status.success(), "a taken name");
    let out = server.admin_cli(&["add-chat-user", "eve"], "short\n");
    assert!(!out.status.success(), "the password rule");
    server.restart();
    assert!(matches!(
        login(&server, "dave", PASSWORD).await,
        Body::LoginOk(_)
    ));
    // Its audit entry is moved into the log by the server.
    let admin = server.api_key("ops", "admin");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = admin.get("/api/audit?limit=200");
        let found = r.1["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "user.create" && e["actor"] == "cli:tester");
        if found {
            break;
        }
        assert!(Instant::now() < end, "no audit entry for the CLI's user");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn invite_codes_register_while_valid_and_never_when_reused_expired_revoked_or_wrong() {
    let server = TestServer::start(&[
        ("ACCOUNTS__REGISTRATION", "invite"),
        ("ACCOUNTS__INVITE_USES_MAX", "5"),
    ]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watch", "viewer");
    for (name, invite) in [
        ("alice", ""),
        ("alice", "inv_wrong"),
        ("alice", &"x".repeat(100)),
    ] {
        let body = register(&server, name, invite).await;
        assert_eq!(error_code(&body), ErrorCode::InviteInvalid, "{invite:?}");
    }

    // Single use.
    let r = admin.post("/api/invites", json!({"note": "for alice"}));
    assert_eq!(r.0, 201, "{}", r.1);
    let once = r.1["code"].as_str().unwrap().to_owned();
    assert!(once.starts_with("inv_"));
    assert!(registered(&register(&server, "bob", &once).await));
    let body = register(&server, "zed", &once).await;
    assert_eq!(error_code(&body), ErrorCode::InviteInvalid, "reused");
    // A registration that fails for another reason gives the use back.
    let r = admin.post("/api/invites", json!({}));
    let second = r.1["code"].as_str().unwrap().to_owned();
    let body = register(&server, "bob", &second).await;
    assert_eq!(error_code(&body), ErrorCode::UsernameTaken);
    assert!(registered(&register(&server, "carol", &second).await));
    let body = register(&server, "dave", &second).await;
    assert_eq!(error_code(&body), ErrorCode::InviteInvalid, "used up");

    // N uses.
    let r = admin.post("/api/invites", json!({"uses_max": 2, "ttl_s": 3600}));
    let twice = r.1["code"].as_str().unwrap().to_owned();
    assert!(registered(&register(&server, "erin", &twice).await));
    assert!(registered(&register(&server, "frank", &twice).await));
    let body = register(&server, "grace", &twice).await;
    assert_eq!(error_code(&body), ErrorCode::InviteInvalid);

    // Expired: the code's life ends at its expiry, whatever its uses.
    let r = admin.post("/api/invites", json!({"ttl_s": 1}));
    let brief = r.1["code"].as_str().unwrap().to_owned();
    let expires = r.1["expires_ms"].as_u64().unwrap();
    while ringchat_now_ms() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = register(&server, "heidi", &brief).await;
    assert_eq!(error_code(&body), ErrorCode::InviteInvalid, "expired");

    // Revoked.
    let r = admin.post("/api/invites", json!({}));
    let (revoked, id) = (
        r.1["code"].as_str().unwrap().to_owned(),
        r.1["id"].as_u64().unwrap(),
    );
    let r = viewer.delete(&format!("/api/invites/{id}"));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
    assert_eq!(admin.delete(&format!("/api/invites/{id}")).0, 200);
    assert_eq!(admin.delete(&format!("/api/invites/{id}")).0, 404);
    let body = register(&server, "ivan", &revoked).await;
    assert_eq!(error_code(&body), ErrorCode::InviteInvalid, "revoked");

    // Listed newest first, codes never shown again; bounds.
    let r = viewer.get("/api/invites?limit=2");
    assert_eq!(r.0, 200, "{}", r.1);
    let items = r.1["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.get("code").is_none()));
    assert!(r.1["next_cursor"].is_string());
    let r = admin.post("/api/invites", json!({"uses_max": 6}));
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.post("/api/invites", json!({"ttl_s": 0}));
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = admin.post("/api/invites", json!({"uses": 1}));
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    let r = viewer.post("/api/invites", json!({}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
}

/// A Register whose account write fails gives its invite's use back only when no account was
/// made. Refused by the store (another node took the name between the check and the write, as
/// a trigger says here) it gives it back; with the write's answer lost (a trigger fails it as
/// a lost connection does, `common::store::LOSE_ANSWER`: the account may exist, for all the
/// server knows) the use stays taken, so that a single-use code never makes two accounts.
#[tokio::test]
async fn a_failed_registration_gives_its_invite_back_only_when_it_made_no_account() {
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("ACCOUNTS__REGISTRATION", "invite"),
    ]);
    let admin = server.api_key("ops", "admin");
    sql_in(
        &server.data_dir,
        vec![
            LOSE_ANSWER.into(),
            "CREATE TRIGGER lose_register BEFORE INSERT ON users FOR EACH ROW \
             WHEN (NEW.username = 'lost') EXECUTE FUNCTION lose_answer()"
                .into(),
            "CREATE FUNCTION name_taken() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'taken meanwhile' USING ERRCODE = 'unique_violation', \
             CONSTRAINT = 'users_username_key'; END $$"
                .into(),
            "CREATE TRIGGER take_name BEFORE INSERT ON users FOR EACH ROW \
             WHEN (NEW.username = 'raced') EXECUTE FUNCTION name_taken()"
                .into(),
        ],
    )
    .unwrap();
    let single_use = || {
        let r = admin.post("/api/invites", json!({}));
        assert_eq!(r.0, 201, "{}", r.1);
        r.1["code"].as_str().unwrap().to_owned()
    };

    let refused = single_use();
    let body = register(&server, "raced", &refused).await;
    assert_eq!(error_code(&body), ErrorCode::UsernameTaken);
    assert!(registered(&register(&server, "carol", &refused).await));

    let lost = single_use();
    let body = register(&server, "lost", &lost).await;
    assert_eq!(error_code(&body), ErrorCode::Unavailable);
    let body = register(&server, "dave", &lost).await;
    assert_eq!(
        error_code(&body),
        ErrorCode::InviteInvalid,
        "used by 'lost'"
    );
}

fn ringchat_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
