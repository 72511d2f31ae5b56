//! Raising the argon2 parameters later (`accounts.argon2_memory_kib`, `…_iterations`): a
//! password login of an account whose hash was made with the old ones stores the password
//! hashed with the new ones, after answering, and signs no device out. Otherwise the old,
//! cheaper hash stays for ever, and the account verifies faster than an unknown one (checked
//! against a dummy hash of the new parameters): a timing that tells which names exist.

mod common;

use std::time::{Duration, Instant};

use common::account::hello;
use common::{PASSWORD, TestServer};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// The parameters every test server hashes with (`common::base_env`) and dearer ones.
const CHEAP: [(&str, &str); 2] = [
    ("ACCOUNTS__ARGON2_MEMORY_KIB", "256"),
    ("ACCOUNTS__ARGON2_ITERATIONS", "1"),
];
const DEARER: [(&str, &str); 3] = [
    ("ACCOUNTS__ARGON2_MEMORY_KIB", "512"),
    ("ACCOUNTS__ARGON2_ITERATIONS", "2"),
    // One hash at a time, so the rehashes run in the order of the logins that asked for them.
    ("ACCOUNTS__HASH_CONCURRENCY", "1"),
];
/// Dear enough that the login's rehash is still hashing when the change reads the hash.
const DEAREST: [(&str, &str); 3] = [
    ("ACCOUNTS__ARGON2_MEMORY_KIB", "16384"),
    ("ACCOUNTS__ARGON2_ITERATIONS", "1"),
    ("ACCOUNTS__HASH_CONCURRENCY", "1"),
];
const REHASHES: &str = "ringchat_password_rehashes_total";

async fn password_login(server: &TestServer, name: &str, password: &str) -> Result<(), ErrorCode> {
    let mut c = hello(server).await;
    match c.login_password(name, password, "laptop").await.unwrap() {
        Ok(_) => Ok(()),
        Err(e) => Err(e.code()),
    }
}

fn wait_for_rehashes(server: &TestServer, n: f64) {
    let end = Instant::now() + Duration::from_secs(20);
    while server.metric(REHASHES) < n {
        assert!(
            Instant::now() < end,
            "{REHASHES} never reached {n}; log:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_login_after_the_argon2_parameters_were_raised_stores_the_password_hashed_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &CHEAP);
    let (_alice, alice_ok) = server.user("alice").await;
    drop(server.user("bob").await);
    server.stop();

    // The operator raises the parameters: alice's password login hashes it again.
    let mut server = TestServer::start_in(&data, &DEARER);
    assert_eq!(password_login(&server, "alice", PASSWORD).await, Ok(()));
    wait_for_rehashes(&server, 1.0);
    assert_eq!(
        password_login(&server, "alice", "not the password").await,
        Err(ErrorCode::InvalidCredentials)
    );
    // A rehash signs no device out: the token alice's phone had still logs in.
    let mut phone = hello(&server).await;
    phone
        .login_token(alice_ok.user_id, &alice_ok.token, "alice-dev1")
        .await
        .unwrap()
        .expect("the token from before the rehash still logs in");
    server.stop();

    // Started again with the dearer parameters: alice's stored hash has them (her login asks
    // for no rehash), bob's still has the old ones. Bob logs in after her: his rehash, queued
    // behind any of hers on the one hashing permit, is the only one counted.
    let server = TestServer::start_in(&data, &DEARER);
    assert_eq!(password_login(&server, "alice", PASSWORD).await, Ok(()));
    assert_eq!(password_login(&server, "bob", PASSWORD).await, Ok(()));
    wait_for_rehashes(&server, 1.0);
    assert_eq!(password_login(&server, "bob", PASSWORD).await, Ok(()));
    assert_eq!(
        server.metric(REHASHES),
        1.0,
        "alice's hash already had the configured parameters"
    );
}

/// The usual "change your password" right after a password login: the login's rehash lands
/// between the change's read of the hash and its write (the change reads while the rehash
/// hashes, then waits for the one hashing permit). The change is not refused as if the password had changed meanwhile.
#[tokio::test]
async fn a_password_change_right_after_a_login_that_rehashes_goes_through() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &CHEAP);
    drop(server.user("alice").await);
    server.stop();

    let server = TestServer::start_in(&data, &DEAREST);
    let mut c = hello(&server).await;
    c.login_password("alice", PASSWORD, "laptop")
        .await
        .unwrap()
        .expect("alice logs in");
    let reply = c
        .request(Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "a new password".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::ChangePasswordOk(_)), "{reply:?}");
    assert_eq!(
        password_login(&server, "alice", PASSWORD).await,
        Err(ErrorCode::InvalidCredentials),
        "the old password no longer logs in"
    );
    assert_eq!(
        password_login(&server, "alice", "a new password").await,
        Ok(())
    );
}
