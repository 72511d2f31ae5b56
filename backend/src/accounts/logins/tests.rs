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

#[tokio::test]
async fn lowering_the_password_maximum_locks_nobody_out() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let long = "p".repeat(100);
    let req = v1::Register {
        username: "longpw".into(),
        password: long.clone(),
        ..Default::default()
    };
    b.accounts.register(peer(200), req).await.unwrap();
    let mut lowered = (*b.live().get()).clone();
    lowered.accounts.password_bytes_max = 64;
    assert_eq!(lowered.problems(), Vec::<String>::new());
    b.reconfigure(lowered);
    let name = login::Account::Username("longpw".into());
    assert_eq!(
        attempt(&b, 1, name, &long).await,
        ErrorCode::Unspecified,
        "a password set under the old maximum still logs in"
    );
    let refused = v1::Register {
        username: "newpw".into(),
        password: long,
        ..Default::default()
    };
    let code = b
        .accounts
        .register(peer(200), refused)
        .await
        .unwrap_err()
        .code;
    assert_eq!(
        code,
        ErrorCode::InvalidArgument,
        "new passwords obey the maximum"
    );
}

async fn token_attempt(b: &Backend, from: u8, token: &str) -> Result<(), crate::accounts::Refusal> {
    let req = v1::Login {
        credential: Some(login::Credential::Token(token.into())),
        device_id: "d".into(),
        ..Default::default()
    };
    b.accounts.authenticate(peer(from), &req).await.map(|_| ())
}

#[tokio::test]
async fn bogus_tokens_from_a_shared_address_never_shut_out_token_holders() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    register(&b, "bob", "").await;
    let req = v1::Login {
        account: Some(login::Account::Username("bob".into())),
        credential: Some(login::Credential::Password(PASSWORD.into())),
        device_id: "d".into(),
        ..Default::default()
    };
    let bobs = b.accounts.authenticate(peer(1), &req).await.unwrap().token;
    // A stranger behind the same address (carrier NAT) sends made-up tokens: more than the
    // password throttle lets fail.
    let cgnat = 9;
    for _ in 0..3 {
        let code = token_attempt(&b, cgnat, "made-up").await.unwrap_err().code;
        assert_eq!(code, ErrorCode::InvalidCredentials);
    }
    token_attempt(&b, cgnat, &bobs)
        .await
        .expect("a real token gets in from the same address");
    // Made-up tokens themselves are limited past their own bound.
    let left = super::super::unknown_tokens::UNKNOWN_TOKENS_PER_CLIENT - 3;
    for _ in 0..left {
        let code = token_attempt(&b, cgnat, "made-up").await.unwrap_err().code;
        assert_eq!(code, ErrorCode::InvalidCredentials);
    }
    let limited = token_attempt(&b, cgnat, "made-up").await.unwrap_err();
    assert_eq!(limited.code, ErrorCode::RateLimited);
    assert!(limited.retry_after_ms > 0);
    token_attempt(&b, cgnat, &bobs)
        .await
        .expect("a real token is never held back");
    // (Last: a password login of the device revokes its older token.)
    let password = login::Account::Username("bob".into());
    assert_eq!(
        attempt(&b, cgnat, password, PASSWORD).await,
        ErrorCode::Unspecified,
        "the address's password throttle was never charged by tokens"
    );
}

/// A hash of `PASSWORD` made with dearer parameters than the backend's (16 KiB, not 8).
fn older_parameters_hash() -> String {
    let older = crate::config::AccountsConfig {
        argon2_memory_kib: 16,
        argon2_iterations: 1,
        ..Default::default()
    };
    crate::accounts::hash_password(&older, PASSWORD).unwrap()
}

fn stored_hash(b: &Backend, user: u64) -> String {
    b.accounts
        .store
        .user_by_id(user)
        .unwrap()
        .unwrap()
        .password_hash
}

async fn wait_for_no_rehash_pending(b: &Backend) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.accounts.rehashes.pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rehash never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_login_stores_its_password_hashed_with_the_configured_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let alice = register(&b, "alice", "").await;
    // As if alice had registered before the operator changed the parameters.
    let registered = stored_hash(&b, alice);
    let older = older_parameters_hash();
    assert!(
        b.accounts
            .store
            .rehash_password(alice, &registered, &older)
            .unwrap()
    );
    assert!(crate::accounts::password::needs_rehash(
        &older,
        &b.accounts.accounts
    ));

    let name = || login::Account::Username("alice".into());
    assert_eq!(
        attempt(&b, 1, name(), PASSWORD).await,
        ErrorCode::Unspecified
    );
    wait_for_no_rehash_pending(&b).await;
    let now = stored_hash(&b, alice);
    assert_ne!(now, older);
    assert!(
        !crate::accounts::password::needs_rehash(&now, &b.accounts.accounts),
        "{now}"
    );
    assert_eq!(
        attempt(&b, 2, name(), PASSWORD).await,
        ErrorCode::Unspecified
    );
    assert_eq!(
        attempt(&b, 3, name(), "wrong").await,
        ErrorCode::InvalidCredentials
    );
    wait_for_no_rehash_pending(&b).await;
    assert_eq!(stored_hash(&b, alice), now, "a current hash is left alone");
}

#[tokio::test]
async fn a_password_changed_while_the_rehash_waits_stays() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let alice = register(&b, "alice", "").await;
    let older = older_parameters_hash();
    let registered = stored_hash(&b, alice);
    assert!(
        b.accounts
            .store
            .rehash_password(alice, &registered, &older)
            .unwrap()
    );
    // Every login permit held: the rehash a login of alice's asked for waits, and her
    // password changes meanwhile.
    let permits = u32::try_from(b.accounts.accounts.hash_concurrency).unwrap();
    let held = b.accounts.hashing.acquire_many(permits).await.unwrap();
    b.accounts.rehash_later(alice, older.clone(), PASSWORD);
    assert_eq!(b.accounts.rehashes.pending(), 1);
    b.accounts.rehash_later(alice, older.clone(), PASSWORD);
    assert_eq!(
        b.accounts.rehashes.pending(),
        1,
        "one rehash per user at a time"
    );
    let changed = crate::accounts::hash_password(&b.accounts.accounts, "a new password").unwrap();
    assert_eq!(
        b.accounts
            .store
            .set_password(alice, &changed, None, Some(&older))
            .unwrap(),
        Some(0)
    );
    drop(held);
    wait_for_no_rehash_pending(&b).await;
    assert_eq!(
        stored_hash(&b, alice),
        changed,
        "the change was not overwritten"
    );
    let name = || login::Account::Username("alice".into());
    assert_eq!(
        attempt(&b, 1, name(), PASSWORD).await,
        ErrorCode::InvalidCredentials
    );
    assert_eq!(
        attempt(&b, 2, name(), "a new password").await,
        ErrorCode::Unspecified
    );
}
