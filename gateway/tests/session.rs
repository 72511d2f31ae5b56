//! The session: hello, register, login by password and token, heartbeats and timeouts.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{PASSWORD, TestServer, expect_error_then_closed, expect_kicked_then_closed};
use ringchat_bench::client::password_login;
use ringchat_proto::v1::{self, ErrorCode, KickReason, login};
use ringchat_proto::{Body, PROTOCOL_VERSION};

#[tokio::test]
async fn hello_announces_the_limits() {
    let server = TestServer::start(&[("GATEWAY__IDLE_TIMEOUT_MS", "45000")]);
    let mut c = server.client().await;
    let ok = c.hello().await.unwrap();
    assert_eq!(ok.protocol_version, PROTOCOL_VERSION);
    assert_eq!(ok.idle_timeout_ms, 45_000);
    assert_eq!(ok.heartbeat_interval_ms, 30_000);
    assert_eq!(ok.frame_bytes_max, 65_536);
    assert_eq!(ok.server_name, "ringchat");
}

#[tokio::test]
async fn register_then_login_by_password_then_by_token() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let user_id = c.register("alice", PASSWORD).await.unwrap().unwrap();
    assert!(
        (100_000_000..1_000_000_000).contains(&user_id),
        "9 digits: {user_id}"
    );
    let second = c.register("bob", PASSWORD).await.unwrap().unwrap();
    assert_ne!(second, user_id);
    let taken = c.register("ALICE", PASSWORD).await.unwrap().unwrap_err();
    assert_eq!(taken.code(), ErrorCode::UsernameTaken);

    let ok = c
        .login_password("alice", PASSWORD, "phone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.user_id, user_id);
    assert!(ok.token.len() >= 40);
    assert!(ok.token_expires_at_ms > ok.server_time_ms);
    // Logged in: a second login on this connection is refused.
    let again = c
        .login_password("alice", PASSWORD, "phone")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(again.code(), ErrorCode::AlreadyAuthenticated);

    let mut c2 = server.client().await;
    c2.hello().await.unwrap();
    let by_token = c2
        .login_token(user_id, &ok.token, "laptop")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_token.user_id, user_id);
    assert_eq!(by_token.token, ok.token);

    // Login by user id and password works too.
    let mut c3 = server.client().await;
    c3.hello().await.unwrap();
    let by_id = c3
        .login(v1::Login {
            account: Some(login::Account::UserId(user_id)),
            credential: Some(login::Credential::Password(PASSWORD.into())),
            device_id: "tablet".into(),
            platform: v1::Platform::Ios as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.user_id, user_id);
}

#[tokio::test]
async fn registration_input_is_validated() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    for (name, password) in [
        ("ab", PASSWORD),
        ("9lives", PASSWORD),
        ("carol", "short"),
        ("sp ace", PASSWORD),
    ] {
        let err = c.register(name, password).await.unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{name}/{password}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_error() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let wrong = c
        .login_password("alice", "not the password", "d")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::InvalidCredentials);
    let unknown = c
        .login_password("nobody", PASSWORD, "d")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::InvalidCredentials);
    assert_eq!(
        wrong.0.message, unknown.0.message,
        "no hint which one it was"
    );
    let bad_token = c
        .login_token(100_000_000, "made-up-token", "d")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(bad_token.code(), ErrorCode::InvalidCredentials);
    // The connection stays usable after failures.
    let ok = c
        .login_password("alice", PASSWORD, "d")
        .await
        .unwrap()
        .unwrap();
    assert!(ok.user_id > 0);
}

#[tokio::test]
async fn repeated_failures_are_slowed_down() {
    let server = TestServer::start(&[
        ("LOGIN__FAILURES_FREE", "2"),
        ("LOGIN__FAILURE_DELAY_MS", "60000"),
        ("LOGIN__FAILURE_DELAY_MS_MAX", "60000"),
    ]);
    drop(server.user("alice").await);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    for _ in 0..3 {
        let e = c
            .login_password("alice", "wrong password", "d")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidCredentials);
    }
    // Now even the right password waits: the account is in its delay.
    let limited = c
        .login_password("alice", PASSWORD, "d")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(limited.code(), ErrorCode::RateLimited);
    assert!(limited.0.retry_after_ms > 50_000, "{limited:?}");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    // A token of 2 s, used once before its expiry (accepted) and once after (refused). A machine
    // too slow to use it before it expires makes the first check say nothing: that is told
    // from the clock, and the scenario run again with a fresh user.
    const ATTEMPTS: usize = 5;
    let server = TestServer::start(&[("LOGIN__TOKEN_TTL_S", "2")]);
    for attempt in 0..ATTEMPTS {
        let (_c, ok) = server.user(&format!("alice{attempt}")).await;
        let expires = ok.token_expires_at_ms;
        let mut c = server.client().await;
        c.hello().await.unwrap();
        let asked = unix_ms();
        let answer = c.login_token(ok.user_id, &ok.token, "d2").await.unwrap();
        let answered = unix_ms();
        match answer {
            Ok(_) => assert!(
                asked < expires,
                "a token {asked} ms past {expires} was accepted"
            ),
            // The server looked at the clock no sooner than `asked` and no later than `answered`.
            Err(e) if e.code() == ErrorCode::TokenExpired && answered >= expires => {
                eprintln!("attempt {attempt}: the token expired before it could be used");
                continue;
            }
            Err(e) => {
                panic!("a token used before its expiry ({answered} < {expires}) was refused: {e:?}")
            }
        }

        // Wait for the instant the server said the token expires (plus clock granularity).
        let wait = expires.saturating_sub(unix_ms()) + 20;
        tokio::time::sleep(Duration::from_millis(wait)).await;

        let mut c = server.client().await;
        c.hello().await.unwrap();
        let expired = c
            .login_token(ok.user_id, &ok.token, "d3")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(expired.code(), ErrorCode::TokenExpired);
        return;
    }
    panic!("in every attempt the token expired before it could be used once");
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A session ends when its token expires, idle or not: `Kicked{TOKEN_EXPIRED}`.
#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let server = TestServer::start(&[("LOGIN__TOKEN_TTL_S", "2")]);
    let (mut c, ok) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    assert_eq!(
        expect_kicked_then_closed(&mut c).await,
        KickReason::TokenExpired
    );
    assert!(unix_ms() >= ok.token_expires_at_ms, "not before its expiry");
    // Bob's token (issued after alice's) ends in turn.
    assert_eq!(
        expect_kicked_then_closed(&mut bob).await,
        KickReason::TokenExpired
    );
}

#[tokio::test]
async fn a_token_only_opens_its_own_account() {
    let server = TestServer::start(&[]);
    let (_a, alice) = server.user("alice").await;
    let (_b, bob) = server.user("bob").await;
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let e = c
        .login_token(bob.user_id, &alice.token, "x")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidCredentials);
}

#[tokio::test]
async fn the_first_frame_must_be_hello() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.send(Body::Login(password_login("alice", PASSWORD, "d")))
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut c).await,
        ErrorCode::HelloRequired
    );
}

/// A first frame with no body, or with a body this server does not know, is no Hello either:
/// refused the same way, and closed (it was `UNEXPECTED_BODY`, left open).
#[tokio::test]
async fn a_first_frame_without_a_known_body_gets_hello_required_and_a_close() {
    let server = TestServer::start(&[]);
    let mut empty = server.client().await;
    empty
        .send_frame(&ringchat_proto::Frame {
            request_id: 3,
            body: None,
        })
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut empty).await,
        ErrorCode::HelloRequired
    );
    // request_id 3, then field 2000 (varint 1): a body from a newer protocol.
    let mut unknown = server.client().await;
    unknown
        .send_raw(&[0, 0, 0, 5, 0x08, 0x03, 0x80, 0x7d, 0x01])
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut unknown).await,
        ErrorCode::HelloRequired
    );
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_refused() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.send(Body::Hello(v1::Hello {
        protocol_version: 99,
        client_name: "future".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut c).await,
        ErrorCode::UnsupportedProtocolVersion
    );
}

#[tokio::test]
async fn messaging_needs_a_login() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let reply = c
        .request(Body::Conversations(v1::Conversations::default()))
        .await
        .unwrap();
    let Body::Error(e) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(e.code, ErrorCode::NotAuthenticated as i32);
    // A server-only body from a client is refused, the connection stays.
    let reply = c.request(Body::Pong(v1::Pong::default())).await.unwrap();
    let Body::Error(e) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(e.code, ErrorCode::UnexpectedBody as i32);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn no_login_within_the_handshake_timeout_is_kicked() {
    // Long enough that a loaded machine still answers the Hello first; kicked no sooner than
    // half of it (the timer starts at accept, a little after `connected`).
    const TIMEOUT_MS: u64 = 2_000;
    let server = TestServer::start(&[("GATEWAY__HANDSHAKE_TIMEOUT_MS", &TIMEOUT_MS.to_string())]);
    let connected = std::time::Instant::now();
    let mut c = server.client().await;
    c.hello().await.unwrap();
    assert_eq!(
        expect_kicked_then_closed(&mut c).await,
        KickReason::HandshakeTimeout
    );
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS / 2),
        "kicked after {waited:?}, well before the {TIMEOUT_MS} ms handshake timeout"
    );
}

#[tokio::test]
async fn heartbeats_keep_a_session_while_an_idle_one_is_closed() {
    // Six pings per timeout: a ping delayed by a busy CI machine must not end the session.
    const IDLE_TIMEOUT_MS: u64 = 3_000;
    const HEARTBEAT_MS: u64 = 500;
    let server = TestServer::start(&[
        ("GATEWAY__IDLE_TIMEOUT_MS", &IDLE_TIMEOUT_MS.to_string()),
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", &HEARTBEAT_MS.to_string()),
    ]);
    let (mut active, _) = server.user("active").await;
    let (mut idle, _) = server.user("idle").await;
    let idle_kicked = tokio::spawn(async move { expect_kicked_then_closed(&mut idle).await });
    // Ping at the announced interval until the idle one is gone, then for two more timeouts.
    let mut ticker = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
    let mut idle_kicked = std::pin::pin!(idle_kicked);
    loop {
        tokio::select! {
            reason = &mut idle_kicked => {
                assert_eq!(reason.unwrap(), KickReason::IdleTimeout);
                break;
            }
            _ = ticker.tick() => { active.ping().await.unwrap(); }
        }
    }
    for _ in 0..2 * IDLE_TIMEOUT_MS / HEARTBEAT_MS {
        ticker.tick().await;
        active.ping().await.expect("the pinging session stays open");
    }
}

#[tokio::test]
async fn guesses_at_many_accounts_at_once_from_one_address_are_throttled_as_one() {
    let server = TestServer::start(&[
        ("LOGIN__FAILURES_FREE", "2"),
        ("LOGIN__FAILURE_DELAY_MS", "60000"),
        ("LOGIN__FAILURE_DELAY_MS_MAX", "60000"),
    ]);
    // 40 connections from 127.0.0.1, each guessing one account's password, all at once:
    // every guess passes the address's first check before any has failed.
    const GUESSES: usize = 40;
    let mut clients = Vec::new();
    for _ in 0..GUESSES {
        let mut c = server.client().await;
        c.hello().await.unwrap();
        clients.push(c);
    }
    let mut pending = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let id = c
            .send(Body::Login(v1::Login {
                account: Some(login::Account::Username(format!("someone{i}"))),
                credential: Some(login::Credential::Password("a common password".into())),
                device_id: "d".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        pending.push(id);
    }
    let (mut wrong, mut limited) = (0, 0);
    for (c, id) in clients.iter_mut().zip(pending) {
        match c.reply_to(id).await.unwrap() {
            Body::Error(e) if e.code() == ErrorCode::InvalidCredentials => wrong += 1,
            Body::Error(e) if e.code() == ErrorCode::RateLimited => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    // Three failures pass the address's throttle one after another; a few more may have been
    // hashing at once when they were recorded (accounts.hash_concurrency, 2).
    assert!(wrong <= 5, "{wrong} guesses answered, {limited} throttled");
    assert_eq!(wrong + limited, GUESSES);
}
