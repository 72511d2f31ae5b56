//! Password logins' throttling over a real backend (embedded store, real accounts): what a
//! refusal may tell a stranger.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ringchat_proto::v1::{self, ErrorCode, login};

use crate::config::Settings;
use crate::service::Backend;

const PASSWORD: &str = "correct horse battery";

/// A backend whose logins are throttled from the third failure on, for a minute.
fn backend(dir: &tempfile::TempDir) -> Arc<Backend> {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    settings.login.failures_free = 2;
    settings.login.failure_delay_ms = 60_000;
    settings.login.failure_delay_ms_max = 60_000;
    assert_eq!(settings.problems(), Vec::<String>::new());
    Backend::open(settings, Vec::new()).expect("backend opens")
}

/// Each attempt from an address of its own: only the account's throttle is in play.
fn peer(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
}

async fn attempt(b: &Backend, from: u8, account: login::Account, password: &str) -> ErrorCode {
    let req = v1::Login {
        account: Some(account),
        credential: Some(login::Credential::Password(password.into())),
        device_id: "d".into(),
        ..Default::default()
    };
    match b.accounts.authenticate(peer(from), &req).await {
        Ok(_) => ErrorCode::Unspecified,
        Err(r) => r.code,
    }
}

async fn register(b: &Backend, name: &str, email: &str) -> u64 {
    let req = v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        email: email.into(),
        ..Default::default()
    };
    b.accounts.register(peer(200), req).await.unwrap().user_id
}

#[tokio::test]
async fn failures_by_e_mail_address_never_throttle_the_accounts_name_or_id() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let alice = register(&b, "alice", "alice@example.org").await;
    let email = || login::Account::Email("Alice@Example.org".into());
    for i in 0..3 {
        assert_eq!(
            attempt(&b, i, email(), "wrong").await,
            ErrorCode::InvalidCredentials
        );
    }
    assert_eq!(
        attempt(&b, 3, email(), "wrong").await,
        ErrorCode::RateLimited
    );
    // A stranger who guessed alice's address cannot confirm it through her name or id: both
    // answer as for any other account.
    let name = login::Account::Username("alice".into());
    assert_eq!(
        attempt(&b, 4, name, "wrong").await,
        ErrorCode::InvalidCredentials
    );
    let id = login::Account::UserId(alice);
    assert_eq!(
        attempt(&b, 5, id, "wrong").await,
        ErrorCode::InvalidCredentials
    );
    // Alice logs in by name, which lets her off the address's counter too.
    let name = login::Account::Username("ALICE".into());
    assert_eq!(attempt(&b, 6, name, PASSWORD).await, ErrorCode::Unspecified);
    assert_eq!(
        attempt(&b, 7, email(), PASSWORD).await,
        ErrorCode::Unspecified
    );
}

#[tokio::test]
async fn failures_by_an_unknown_id_never_tell_which_ids_exist() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let alice = register(&b, "alice", "").await;
    let unknown = alice + 1_000;
    for i in 0..3 {
        let code = attempt(&b, i, login::Account::UserId(unknown), "wrong").await;
        assert_eq!(code, ErrorCode::InvalidCredentials);
    }
    let other = login::Account::UserId(unknown + 1);
    assert_eq!(
        attempt(&b, 3, other, "wrong").await,
        ErrorCode::InvalidCredentials,
        "another unknown id is not throttled either, just as alice's is not"
    );
    let id = login::Account::UserId(alice);
    assert_eq!(
        attempt(&b, 4, id, "wrong").await,
        ErrorCode::InvalidCredentials
    );
}
