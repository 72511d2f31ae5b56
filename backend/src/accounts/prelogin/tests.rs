//! Registrations before login over a real backend (embedded store, real accounts, the real
//! hasher's permits): bounded, dropped once their client has gone, and never in the way of a
//! password change.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::config::Settings;
use crate::service::Backend;

const PASSWORD: &str = "correct horse battery";
const WAITING_MAX: usize = 4;
/// How long an answer that is due may take on a loaded test machine, at most.
const DEADLINE: Duration = Duration::from_secs(30);

fn backend(dir: &tempfile::TempDir) -> Arc<Backend> {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    settings.accounts.hash_concurrency = 1;
    settings.accounts.registrations_per_ip_per_hour = 0;
    settings.accounts.registrations_waiting_max = WAITING_MAX;
    assert_eq!(settings.problems(), Vec::<String>::new());
    Backend::open(settings, Vec::new()).expect("backend opens")
}

fn peer() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}

fn register(name: &str) -> v1::Register {
    v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        ..Default::default()
    }
}

fn user_exists(b: &Backend, name: &str) -> bool {
    b.accounts.store.user_id_by_name(name).unwrap().is_some()
}

#[tokio::test]
async fn registrations_waiting_are_bounded_dropped_when_abandoned_and_never_starve_changes() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let alice = b
        .accounts
        .register(peer(), register("alice"))
        .await
        .unwrap();
    // The registration hasher is busy (as behind a long line of sign-ups): every Register
    // from now on waits for it.
    let hasher = b.accounts.registration_permit().await;
    let mut abandoned = Vec::new();
    for i in 0..WAITING_MAX {
        let (tx, rx) = oneshot::channel();
        b.spawn_register(peer(), register(&format!("gone{i}")), tx);
        abandoned.push(rx);
    }
    let (tx, rx) = oneshot::channel();
    b.spawn_register(peer(), register("onemore"), tx);
    let answer = timeout(DEADLINE, rx)
        .await
        .expect("answered at once")
        .unwrap();
    let Body::Error(refused) = answer else {
        panic!("one more than the bound: {answer:?}");
    };
    assert_eq!(refused.code, ErrorCode::Unavailable as i32);
    assert!(refused.retry_after_ms > 0, "told when to come back");
    // Their clients hang up.
    drop(abandoned);

    // A password change does not wait behind the registrations.
    let change = v1::ChangePassword {
        old_password: PASSWORD.into(),
        new_password: "a new horse battery".into(),
    };
    let changed = b.accounts.change_password(alice.user_id, change, "d", 0);
    timeout(DEADLINE, changed)
        .await
        .expect("a password change is not starved by registrations")
        .expect("password changed");

    // Once the hasher is free the abandoned registrations end without hashing or creating
    // anything, and give their places back.
    drop(hasher);
    let places = &b.accounts.prelogin.registers;
    let all = timeout(DEADLINE, places.acquire_many(WAITING_MAX as u32))
        .await
        .expect("the abandoned registrations end")
        .unwrap();
    for i in 0..WAITING_MAX {
        assert!(
            !user_exists(&b, &format!("gone{i}")),
            "nobody waits for gone{i}"
        );
    }
    drop(all);
    let (tx, rx) = oneshot::channel();
    b.spawn_register(peer(), register("later"), tx);
    let answer = timeout(DEADLINE, rx).await.expect("registered").unwrap();
    assert!(matches!(answer, Body::RegisterOk(_)), "{answer:?}");
    assert!(user_exists(&b, "later"));
}
