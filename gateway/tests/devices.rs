//! Devices and sessions: change password, log out, list and revoke devices, token refresh.

mod common;

use common::account::{error_code, hello};
use common::{PASSWORD, TestServer, expect_kicked_then_closed};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason, login};

/// Logs `name` in with the password on a new connection, as `device` on `platform`.
async fn device(
    server: &TestServer,
    name: &str,
    device: &str,
    platform: v1::Platform,
) -> (Client, v1::LoginOk) {
    let mut c = hello(server).await;
    let ok = c
        .login(v1::Login {
            account: Some(login::Account::Username(name.into())),
            credential: Some(login::Credential::Password(PASSWORD.into())),
            device_id: device.into(),
            platform: platform as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    (c, ok)
}

async fn token_login(server: &TestServer, ok: &v1::LoginOk, device: &str) -> Body {
    let mut c = hello(server).await;
    c.request(Body::Login(v1::Login {
        account: None,
        credential: Some(login::Credential::Token(ok.token.clone())),
        device_id: device.into(),
        platform: v1::Platform::Desktop as i32,
        ..Default::default()
    }))
    .await
    .unwrap()
}

async fn devices_of(c: &mut Client) -> Vec<v1::Device> {
    match c
        .request(Body::ListDevices(v1::ListDevices {}))
        .await
        .unwrap()
    {
        Body::DeviceList(list) => list.devices,
        other => panic!("{other:?}"),
    }
}

/// The device ids `c`'s account has, sorted.
async fn device_names(c: &mut Client) -> Vec<String> {
    let mut names: Vec<String> = devices_of(c)
        .await
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    names.sort();
    names
}

/// A password login of `name` as `device` that the server refuses: its error code.
async fn refused_login(server: &TestServer, name: &str, device: &str) -> ErrorCode {
    let mut c = hello(server).await;
    c.login(v1::Login {
        account: Some(login::Account::Username(name.into())),
        credential: Some(login::Credential::Password(PASSWORD.into())),
        device_id: device.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .unwrap_err()
    .code()
}

/// Lists `c`'s devices until the server has seen `device` go (bounded); returns that device.
async fn until_offline(c: &mut Client, device: &str) -> v1::Device {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = devices_of(c).await;
        if let Some(d) = list.iter().find(|d| d.device_id == device && !d.online) {
            return d.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{device} still online: {list:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_password_change_kicks_the_other_sessions_and_revokes_their_tokens() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let (mut phone, phone_ok) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (mut laptop, laptop_ok) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let (mut tablet, _) = device(&server, "alice", "tablet", v1::Platform::Android).await;
    let (mut bob, bob_ok) = server.user("bob").await;

    let change = |old: &str, new: &str| {
        Body::ChangePassword(v1::ChangePassword {
            old_password: old.into(),
            new_password: new.into(),
        })
    };
    let wrong = phone
        .request(change("not it", "a new password"))
        .await
        .unwrap();
    assert_eq!(error_code(&wrong), ErrorCode::InvalidCredentials);
    let short = phone.request(change(PASSWORD, "short")).await.unwrap();
    assert_eq!(error_code(&short), ErrorCode::InvalidArgument);
    let Body::ChangePasswordOk(changed) = phone
        .request(change(PASSWORD, "a new password"))
        .await
        .unwrap()
    else {
        panic!("password changed")
    };
    assert_ne!(
        changed.token, phone_ok.token,
        "this device gets a fresh token"
    );
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::PasswordChanged
    );
    assert_eq!(
        expect_kicked_then_closed(&mut tablet).await,
        KickReason::PasswordChanged
    );
    // This session stays, other users are untouched.
    phone.ping().await.unwrap();
    bob.ping().await.unwrap();
    assert!(matches!(
        token_login(&server, &bob_ok, "bob-2").await,
        Body::LoginOk(_)
    ));

    for old in [&phone_ok, &laptop_ok] {
        let refused = token_login(&server, old, "x").await;
        assert_eq!(
            error_code(&refused),
            ErrorCode::InvalidCredentials,
            "old tokens are dead"
        );
    }
    let fresh = v1::LoginOk {
        token: changed.token.clone(),
        ..phone_ok.clone()
    };
    assert!(matches!(
        token_login(&server, &fresh, "phone-2").await,
        Body::LoginOk(_)
    ));
    let mut c = hello(&server).await;
    let old = c.login_password("alice", PASSWORD, "d").await.unwrap();
    assert_eq!(old.unwrap_err().code(), ErrorCode::InvalidCredentials);
    let new = c
        .login_password("alice", "a new password", "d")
        .await
        .unwrap();
    assert!(new.is_ok());
}

#[tokio::test]
async fn logout_revokes_this_token_and_closes_this_session_only() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let (mut phone, phone_ok) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (mut laptop, laptop_ok) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let reply = phone.request(Body::Logout(v1::Logout {})).await.unwrap();
    assert!(matches!(reply, Body::LogoutOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::LoggedOut
    );
    let refused = token_login(&server, &phone_ok, "phone").await;
    assert_eq!(error_code(&refused), ErrorCode::InvalidCredentials);
    laptop.ping().await.unwrap();
    // The laptop's token still logs in (as the laptop, replacing its session).
    let mut laptop2 = hello(&server).await;
    let reply = laptop2
        .request(Body::Login(v1::Login {
            credential: Some(login::Credential::Token(laptop_ok.token.clone())),
            device_id: "laptop".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::Replaced
    );
    let names = device_names(&mut laptop2).await;
    assert!(!names.contains(&"phone".to_owned()), "{names:?}");
}

/// A login that named no device is its token alone, which another connection may use too: a
/// Logout ends every session using that token here (as the other nodes do), and leaves the
/// other nameless logins (other tokens) alone.
#[tokio::test]
async fn logout_of_a_nameless_login_ends_every_session_using_its_token() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let (mut first, first_ok) = device(&server, "alice", "", v1::Platform::Web).await;
    let mut copy = hello(&server).await;
    let reply = copy
        .request(Body::Login(v1::Login {
            credential: Some(login::Credential::Token(first_ok.token.clone())),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    let (mut other, _) = device(&server, "alice", "", v1::Platform::Web).await;
    let reply = first.request(Body::Logout(v1::Logout {})).await.unwrap();
    assert!(matches!(reply, Body::LogoutOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut first).await,
        KickReason::LoggedOut
    );
    assert_eq!(
        expect_kicked_then_closed(&mut copy).await,
        KickReason::LoggedOut,
        "the same token on another connection is logged out too"
    );
    other.ping().await.expect("another nameless login stays");
}

#[tokio::test]
async fn devices_are_listed_with_platform_last_seen_and_whether_online() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    drop(server.user("bob").await);
    let before = ringchat_backend::api::now_ms();
    let (mut phone, _) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (laptop, laptop_ok) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    drop(laptop);
    until_offline(&mut phone, "laptop").await;
    let list = devices_of(&mut phone).await;
    let names: Vec<&str> = list.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "phone, laptop, and signup's alice-dev1: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("bob")),
        "only alice's devices"
    );
    let phone_d = list.iter().find(|d| d.device_id == "phone").unwrap();
    assert!(phone_d.online && phone_d.current);
    assert_eq!(phone_d.platform, v1::Platform::Ios as i32);
    let laptop_d = list.iter().find(|d| d.device_id == "laptop").unwrap();
    assert!(!laptop_d.online && !laptop_d.current);
    assert_eq!(laptop_d.platform, v1::Platform::Desktop as i32);
    assert!(laptop_d.last_seen_ms >= before, "{laptop_d:?}");
    assert_eq!(laptop_d.token_expires_at_ms, laptop_ok.token_expires_at_ms);
    assert_eq!(list[0].device_id, "phone", "online first: {names:?}");
}

#[tokio::test]
async fn a_revoked_device_is_kicked_and_its_token_stops_working() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let (mut phone, _) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (mut laptop, laptop_ok) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let (mut bob, _) = server.user("bob").await;
    let revoke = |id: &str| {
        Body::RevokeDevice(v1::RevokeDevice {
            device_id: id.into(),
        })
    };

    // Another user's device is not this user's to revoke: it is simply not found.
    let theirs = phone.request(revoke("bob-dev1")).await.unwrap();
    assert_eq!(error_code(&theirs), ErrorCode::NotFound);
    bob.ping().await.unwrap();
    let unknown = phone.request(revoke("toaster")).await.unwrap();
    assert_eq!(error_code(&unknown), ErrorCode::NotFound);
    let long = phone.request(revoke(&"x".repeat(129))).await.unwrap();
    assert_eq!(error_code(&long), ErrorCode::InvalidArgument);

    let Body::RevokeDeviceOk(ok) = phone.request(revoke("laptop")).await.unwrap() else {
        panic!("revoked")
    };
    assert_eq!((ok.tokens_revoked, ok.sessions_kicked), (1, 1));
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::DeviceRevoked
    );
    let refused = token_login(&server, &laptop_ok, "laptop").await;
    assert_eq!(error_code(&refused), ErrorCode::InvalidCredentials);
    let names = device_names(&mut phone).await;
    assert!(!names.contains(&"laptop".to_owned()), "{names:?}");
    phone.ping().await.unwrap();
}

#[tokio::test]
async fn a_token_used_under_another_device_name_is_still_its_device_and_is_revoked_with_it() {
    let server = TestServer::start(&[]);
    drop(server.user("alice").await);
    let (mut phone, phone_ok) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (mut laptop, _) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    // The phone's token, on another connection that calls itself "x": it is the phone.
    let mut other = hello(&server).await;
    let reply = other
        .request(Body::Login(v1::Login {
            credential: Some(login::Credential::Token(phone_ok.token.clone())),
            device_id: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::Replaced
    );
    let listed: Vec<(String, bool)> = devices_of(&mut laptop)
        .await
        .into_iter()
        .map(|d| (d.device_id, d.online))
        .collect();
    assert!(listed.contains(&("phone".to_owned(), true)), "{listed:?}");
    assert!(!listed.iter().any(|(name, _)| name == "x"), "{listed:?}");
    // Revoking the phone ends that session too.
    let Body::RevokeDeviceOk(ok) = laptop
        .request(Body::RevokeDevice(v1::RevokeDevice {
            device_id: "phone".into(),
        }))
        .await
        .unwrap()
    else {
        panic!("revoked")
    };
    assert_eq!((ok.tokens_revoked, ok.sessions_kicked), (1, 1));
    assert_eq!(
        expect_kicked_then_closed(&mut other).await,
        KickReason::DeviceRevoked
    );
}

#[tokio::test]
async fn a_token_login_late_in_the_tokens_life_gets_a_fresh_token() {
    // Long enough that the logins before half its life, and the five after it, each fit in
    // their window on a loaded machine and a slow store (with 4 s they had about 2 s each).
    const TTL_MS: u64 = 20_000;
    let server = TestServer::start(&[
        ("LOGIN__TOKEN_TTL_S", &(TTL_MS / 1000).to_string()),
        ("LOGIN__TOKEN_REFRESH_PERCENT", "50"),
    ]);
    drop(server.user("alice").await);
    let (_, first) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (_, nameless) = device(&server, "alice", "", v1::Platform::Web).await;
    let Body::LoginOk(early) = token_login(&server, &first, "phone").await else {
        panic!("token login")
    };
    assert_eq!(
        early.token, first.token,
        "early in its life: the same token"
    );
    assert!(!early.token_refreshed);

    // Past half its life: the next token login refreshes it.
    let half = first.token_expires_at_ms - TTL_MS / 2;
    let now = ringchat_backend::api::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(
        half.saturating_sub(now) + 100,
    ))
    .await;
    let Body::LoginOk(late) = token_login(&server, &first, "phone").await else {
        panic!("token login")
    };
    assert!(late.token_refreshed);
    assert_ne!(late.token, first.token);
    assert!(late.token_expires_at_ms > first.token_expires_at_ms);
    let Body::LoginOk(with_new) = token_login(&server, &late, "phone").await else {
        panic!("the fresh token works")
    };
    assert_eq!(with_new.token, late.token);
    assert!(
        !with_new.token_refreshed,
        "a fresh token is early in its life"
    );
    assert!(
        matches!(
            token_login(&server, &first, "phone").await,
            Body::LoginOk(_)
        ),
        "a device's old token lives on until its expiry (a lost reply costs nothing)"
    );
    // With no device id the old token ends at the refresh: no Logout could find it later.
    let Body::LoginOk(renamed) = token_login(&server, &nameless, "").await else {
        panic!("token login")
    };
    assert!(renamed.token_refreshed);
    assert_eq!(
        error_code(&token_login(&server, &nameless, "").await),
        ErrorCode::InvalidCredentials
    );
    assert!(matches!(
        token_login(&server, &renamed, "").await,
        Body::LoginOk(_)
    ));
}

/// A client that keeps logging in with a token in its refresh window, never using the fresh
/// one: each login refreshed it again, revoking the fresh token before (a store write, a log
/// line and a kick per login). Now the device gets one fresh token per part of the window.
#[tokio::test]
async fn a_token_looped_in_its_refresh_window_gets_one_fresh_token_not_one_per_login() {
    const LOGINS: usize = 20;
    // In its refresh window (99 % of 100 s) a second after it is issued: one part of the
    // window (a quarter, about 25 s) is far longer than the logins below take.
    let server = TestServer::start(&[
        ("LOGIN__TOKEN_TTL_S", "100"),
        ("LOGIN__TOKEN_REFRESH_PERCENT", "99"),
    ]);
    drop(server.user("alice").await);
    let (_, first) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    // Token logins until the server refreshes the token (bounded).
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    let fresh = loop {
        let Body::LoginOk(ok) = token_login(&server, &first, "phone").await else {
            panic!("token login")
        };
        if ok.token_refreshed {
            break ok;
        }
        assert_eq!(ok.token, first.token);
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for i in 0..LOGINS {
        let Body::LoginOk(ok) = token_login(&server, &first, "phone").await else {
            panic!("token login {i}")
        };
        assert!(
            !ok.token_refreshed && ok.token == first.token,
            "login {i} with the old token was refreshed again"
        );
    }
    // The one fresh token was never revoked by another, and is the device's.
    let Body::LoginOk(with_fresh) = token_login(&server, &fresh, "phone").await else {
        panic!("the fresh token still works")
    };
    assert_eq!(with_fresh.token, fresh.token);
    let (mut c, _) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let phone: Vec<_> = (devices_of(&mut c).await.into_iter())
        .filter(|d| d.device_id == "phone")
        .collect();
    assert_eq!(phone.len(), 1, "{phone:?}");
    assert_eq!(
        phone[0].token_expires_at_ms, fresh.token_expires_at_ms,
        "the device's newest token is the one fresh token"
    );
}

#[tokio::test]
async fn signed_in_devices_are_bounded_and_the_one_seen_longest_ago_goes() {
    let server = TestServer::start(&[
        ("LOGIN__DEVICES_MAX", "2"),
        ("LOGIN__DEVICE_TOKENS_MAX", "2"),
    ]);
    // d2 signs in after d1 but leaves first: it is the one seen longest ago, although its
    // token is the newer (the time of its leaving is not written yet: it waits in the batch).
    let (mut c1, d1) = server.device("alice", "d1").await;
    let (c2, d2) = device(&server, "alice", "d2", v1::Platform::Web).await;
    drop(c2);
    let gone = until_offline(&mut c1, "d2").await;
    // Two sightings in one millisecond would tie: let the clock pass d2's.
    while ringchat_backend::api::now_ms() <= gone.last_seen_ms {
        tokio::task::yield_now().await;
    }
    drop(c1);
    let (mut c3, _) = device(&server, "alice", "d3", v1::Platform::Web).await;
    let names = device_names(&mut c3).await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"d3".to_owned()) && names.contains(&"d1".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        error_code(&token_login(&server, &d2, "d2").await),
        ErrorCode::InvalidCredentials
    );
    assert!(matches!(
        token_login(&server, &d1, "d1").await,
        Body::LoginOk(_)
    ));
}

#[tokio::test]
async fn device_requests_need_a_login() {
    let server = TestServer::start(&[]);
    let mut c = hello(&server).await;
    for body in [
        Body::ListDevices(v1::ListDevices {}),
        Body::Logout(v1::Logout {}),
        Body::RevokeDevice(v1::RevokeDevice::default()),
        Body::ChangePassword(v1::ChangePassword::default()),
    ] {
        let reply = c.request(body).await.unwrap();
        assert_eq!(error_code(&reply), ErrorCode::NotAuthenticated);
    }
}

#[tokio::test]
async fn wrong_old_passwords_are_throttled_like_failed_logins() {
    let server = TestServer::start(&[("LOGIN__FAILURES_FREE", "1")]);
    let (mut alice, _) = server.user("alice").await;
    let change = |old: &str| {
        Body::ChangePassword(v1::ChangePassword {
            old_password: old.into(),
            new_password: "a new password".into(),
        })
    };
    for _ in 0..2 {
        let wrong = alice.request(change("not it")).await.unwrap();
        assert_eq!(error_code(&wrong), ErrorCode::InvalidCredentials);
    }
    let Body::Error(limited) = alice.request(change(PASSWORD)).await.unwrap() else {
        panic!("throttled, even with the right password")
    };
    assert_eq!(limited.code, ErrorCode::RateLimited as i32);
    assert!(limited.retry_after_ms > 0);
    // The same counters as logins (by name, id and address): a password login is throttled too.
    let mut c = hello(&server).await;
    let login = c.login_password("alice", PASSWORD, "x").await.unwrap();
    assert_eq!(login.unwrap_err().code(), ErrorCode::RateLimited);
    alice.ping().await.unwrap();
}

/// Password changes have a gate of their own, one change per connection: a client that floods
/// them is told to slow down (every request answered), and another user's reads do not wait
/// behind them.
#[tokio::test]
async fn a_flood_of_password_changes_is_refused_and_holds_no_read_slot() {
    // Hashing slow enough (tens of ms) that the flood arrives while the first change hashes.
    let server = TestServer::start(&[
        ("ACCOUNTS__ARGON2_MEMORY_KIB", "65536"),
        ("ACCOUNTS__ARGON2_ITERATIONS", "2"),
    ]);
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let change = Body::ChangePassword(v1::ChangePassword {
        old_password: PASSWORD.into(),
        new_password: PASSWORD.into(),
    });
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(alice.send(change.clone()).await.unwrap());
    }
    assert!(bob.conversations().await.unwrap().is_empty());
    let (mut changed, mut limited) = (0, 0);
    for id in ids {
        match alice.reply_to(id).await.unwrap() {
            Body::ChangePasswordOk(_) => changed += 1,
            Body::Error(e) if e.code() == ErrorCode::RateLimited => {
                assert!(e.retry_after_ms > 0, "{e:?}");
                limited += 1;
            }
            other => panic!("a change or RATE_LIMITED, got {other:?}"),
        }
    }
    assert!(
        changed >= 1 && limited >= 1,
        "{changed} changed, {limited} refused"
    );
    assert_eq!(changed + limited, 8);
}

#[tokio::test]
async fn of_two_password_changes_made_at_once_only_the_acknowledged_one_holds() {
    // Hashing slow enough (tens of ms) that both changes check the old password before either
    // writes: the one that writes second must not replace the first.
    let server = TestServer::start(&[
        ("ACCOUNTS__ARGON2_MEMORY_KIB", "65536"),
        ("ACCOUNTS__ARGON2_ITERATIONS", "2"),
    ]);
    drop(server.user("alice").await);
    let (mut phone, _) = device(&server, "alice", "phone", v1::Platform::Ios).await;
    let (mut laptop, _) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let change = |new: &str| {
        Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: new.into(),
        })
    };
    let (a, b) = ("password of the phone", "password of the laptop");
    let phone_id = phone.send(change(a)).await.unwrap();
    let laptop_id = laptop.send(change(b)).await.unwrap();
    let (phone_reply, laptop_reply) =
        tokio::join!(phone.reply_to(phone_id), laptop.reply_to(laptop_id));
    let acked = |r: &anyhow::Result<Body>| matches!(r, Ok(Body::ChangePasswordOk(_)));
    let acknowledged: Vec<&str> = [(a, &phone_reply), (b, &laptop_reply)]
        .into_iter()
        .filter(|(_, r)| acked(r))
        .map(|(p, _)| p)
        .collect();
    for (p, r) in [(a, &phone_reply), (b, &laptop_reply)] {
        if !acked(r)
            && let Ok(Body::Error(e)) = r
        {
            assert_eq!(e.code(), ErrorCode::InvalidCredentials, "{p}: {e:?}");
        }
    }
    assert_eq!(acknowledged.len(), 1, "{phone_reply:?} / {laptop_reply:?}");
    // The password that works is the one whose change was acknowledged, and only it.
    for (p, works) in [(a, acknowledged[0] == a), (b, acknowledged[0] == b)] {
        let mut c = hello(&server).await;
        let login = c
            .login(v1::Login {
                account: Some(login::Account::Username("alice".into())),
                credential: Some(login::Credential::Password(p.into())),
                device_id: "check".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(login.is_ok(), works, "{p}: {login:?}");
    }
}

#[tokio::test]
async fn a_login_refused_for_too_many_devices_leaves_no_token_behind() {
    let server = TestServer::start(&[
        ("LOGIN__DEVICES_MAX", "2"),
        ("LOGIN__DEVICE_TOKENS_MAX", "4"),
    ]);
    drop(server.user("alice").await);
    let (mut d1, _) = device(&server, "alice", "d1", v1::Platform::Ios).await;
    let (_d2, _) = device(&server, "alice", "d2", v1::Platform::Web).await;
    for _ in 0..3 {
        assert_eq!(
            refused_login(&server, "alice", "d3").await,
            ErrorCode::TooManyDevices
        );
    }
    let names = device_names(&mut d1).await;
    assert!(
        names.iter().all(|n| n != "d3"),
        "a refused login's token is a device: {names:?}"
    );
}

/// A token a login revokes ends the sessions still using it: here a nameless token refreshed
/// on another connection (the old one ends at the refresh: nothing else could end it).
#[tokio::test]
async fn a_session_whose_token_a_login_revoked_is_kicked() {
    let server = TestServer::start(&[("LOGIN__TOKEN_REFRESH_PERCENT", "100")]);
    drop(server.user("alice").await);
    let (mut laptop, _) = device(&server, "alice", "laptop", v1::Platform::Desktop).await;
    let (mut first, first_ok) = device(&server, "alice", "", v1::Platform::Web).await;
    let Body::LoginOk(refreshed) = token_login(&server, &first_ok, "").await else {
        panic!("token login")
    };
    assert!(refreshed.token_refreshed);
    assert_eq!(
        expect_kicked_then_closed(&mut first).await,
        KickReason::DeviceRevoked,
        "its token was revoked by the refresh"
    );
    assert_eq!(
        error_code(&token_login(&server, &first_ok, "").await),
        ErrorCode::InvalidCredentials,
        "the refreshed nameless token is gone"
    );
    laptop.ping().await.expect("other devices stay");
}

/// With `devices_max` = `device_tokens_max`, a login refused for too many devices pushes no
/// device out: before, it revoked the token of the device seen longest ago (an online one)
/// and was refused after.
#[tokio::test]
async fn a_login_refused_for_too_many_devices_revokes_no_device() {
    let server = TestServer::start(&[
        ("LOGIN__DEVICES_MAX", "2"),
        ("LOGIN__DEVICE_TOKENS_MAX", "2"),
    ]);
    let (mut d1, d1_ok) = server.device("alice", "d1").await;
    let (mut d2, d2_ok) = device(&server, "alice", "d2", v1::Platform::Web).await;
    assert_eq!(
        refused_login(&server, "alice", "d3").await,
        ErrorCode::TooManyDevices
    );
    let names = device_names(&mut d1).await;
    assert_eq!(names, vec!["d1", "d2"]);
    d2.ping().await.unwrap();
    // Both tokens still log in (each replacing its own device's session).
    for (ok, name) in [(&d1_ok, "d1"), (&d2_ok, "d2")] {
        let reply = token_login(&server, ok, name).await;
        assert!(matches!(reply, Body::LoginOk(_)), "{name}: {reply:?}");
    }
}

/// A nameless token refreshed by a login that is then refused for too many devices: the
/// client keeps the token it had (before, the refresh revoked it and the refusal deleted its
/// successor, leaving none).
#[tokio::test]
async fn a_refused_refresh_of_a_nameless_token_leaves_the_token_working() {
    let server = TestServer::start(&[
        ("LOGIN__DEVICES_MAX", "1"),
        ("LOGIN__TOKEN_REFRESH_PERCENT", "100"),
    ]);
    drop(server.user("alice").await);
    // Once the sign-up connection's close has reached the server, alice logs in on one device.
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    let (a, a_ok) = loop {
        let mut c = hello(&server).await;
        let login = c
            .login(v1::Login {
                account: Some(login::Account::Username("alice".into())),
                credential: Some(login::Credential::Password(PASSWORD.into())),
                platform: v1::Platform::Web as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        match login {
            Ok(ok) => break (c, ok),
            Err(e) if e.code() == ErrorCode::TooManyDevices => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the sign-up connection never closed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let refused = token_login(&server, &a_ok, "").await;
    assert_eq!(error_code(&refused), ErrorCode::TooManyDevices);
    drop(a);
    // Once a's close has reached the server, its token logs in again.
    loop {
        match token_login(&server, &a_ok, "").await {
            Body::LoginOk(_) => break,
            refused if error_code(&refused) == ErrorCode::TooManyDevices => {
                assert!(std::time::Instant::now() < deadline, "a never closed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("the token must still work: {other:?}"),
        }
    }
}

/// After `login.device_tokens_max` is lowered the account holds more devices than it until a
/// password login signs them out; ListDevices cuts the list after ordering it, so the asking
/// device is never the one left out (here its id sorts last of 21).
#[tokio::test]
async fn a_lowered_device_limit_never_leaves_the_asking_device_out_of_the_list() {
    let mut server = TestServer::start(&[
        ("LOGIN__DEVICES_MAX", "32"),
        ("LOGIN__DEVICE_TOKENS_MAX", "32"),
    ]);
    drop(server.user("alice").await);
    let mut last = None;
    for i in 0..20 {
        let (c, ok) = device(&server, "alice", &format!("d{i:02}"), v1::Platform::Desktop).await;
        drop(c);
        last = Some(ok);
    }
    let d19 = last.unwrap();
    server.stop();
    let lowered = TestServer::start_in(
        &server.data_dir,
        &[
            ("LOGIN__DEVICES_MAX", "10"),
            ("LOGIN__DEVICE_TOKENS_MAX", "10"),
        ],
    );
    // A token login signs nobody out: the 21 devices stay.
    let mut c = hello(&lowered).await;
    let reply = c
        .request(Body::Login(v1::Login {
            credential: Some(login::Credential::Token(d19.token.clone())),
            device_id: "d19".into(),
            platform: v1::Platform::Desktop as i32,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::LoginOk(_)), "{reply:?}");
    let list = devices_of(&mut c).await;
    let names: Vec<&str> = list.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(names.len(), 10, "bounded by the limit: {names:?}");
    assert_eq!(names[0], "d19", "the asking device first: {names:?}");
    assert!(list[0].current && list[0].online, "{:?}", list[0]);
}
