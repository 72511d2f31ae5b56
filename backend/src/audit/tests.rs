//! The audit writer on the real PostgreSQL test server (the store that refuses NUL in text and
//! can be unavailable): no entry takes another down, and an outage loses none, also one at
//! the writer's start. And what waits for room in a full queue (on the embedded store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::postgres_tests::{Session, open_test_store, open_test_store_timed};

fn page(audit: &Audit) -> Vec<AuditRecord> {
    tokio::task::block_in_place(|| audit.page(u64::MAX, 100))
        .expect("the audit log reads")
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Waits, with a deadline, until `what` holds.
fn wait_until(why: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !what() {
        assert!(Instant::now() < deadline, "timed out waiting until {why}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn control_characters_are_escaped_and_the_field_cut_after() {
    assert_eq!(storable("x\0y\u{1b}\n".into()), "x\\0y\\u{1b}\\n");
    assert_eq!(storable("plain ålice".into()), "plain ålice");
    let long = storable("\0".repeat(10_000));
    assert_eq!(long.len(), AUDIT_FIELD_BYTES_MAX);
    assert!(!long.chars().any(char::is_control));
    let wide = storable("é".repeat(AUDIT_FIELD_BYTES_MAX));
    assert_eq!(wide.len(), AUDIT_FIELD_BYTES_MAX);
}

/// A failed login's typed name and device id are anyone's text: one holding NUL (which
/// PostgreSQL refuses in text) is stored escaped, and the admin action queued with it is
/// stored too (the whole batch was dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_name_with_nul_is_stored_escaped_and_takes_no_other_entry_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_test_store(dir.path()).unwrap());
    let audit = Arc::new(Audit::new(store));
    audit.start();
    audit.record(
        Entry::new("username:x\0", "user.login_failed")
            .from("203.0.113.9")
            .detail("device d\0\u{1b}"),
    );
    audit
        .record_admin(Entry::new("admin:root", "user.disable").target("user:100000001"))
        .await;
    assert!(audit.flush_stored().await, "every entry stored");
    let stored = page(&audit);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1].actor, "username:x\\0");
    assert_eq!(stored[1].detail, "device d\\0\\u{1b}");
    assert_eq!(stored[0].action, "user.disable");
}

/// An entry the store refuses costs only itself: the batch is written again one entry at a
/// time (records here skip `fit`, so the store really refuses the NUL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_store_refuses_is_the_only_one_of_its_batch_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_test_store(dir.path()).unwrap());
    let record = |actor: &str| AuditRecord {
        at_ms: 1,
        actor: actor.into(),
        action: "user.disable".into(),
        target: String::new(),
        from: String::new(),
        detail: String::new(),
    };
    let batch = vec![record("admin:a"), record("admin:\0"), record("admin:c")];
    let audit_store: Arc<dyn AuditStore> = store.clone();
    let mut next_id = 1;
    let dropped = writer::store_batch(&audit_store, &mut next_id, batch).await;
    assert_eq!(dropped, 1);
    let audit = Audit::new(store);
    let actors: Vec<_> = page(&audit).into_iter().map(|r| r.actor).collect();
    assert_eq!(actors, ["admin:c", "admin:a"]);
}

/// While the store is unavailable (here: every append cut by the statement timeout behind a
/// lock on the audit table) the writer holds its batch and tries again; once the store is
/// back the entry is stored. It was dropped at the first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_while_the_store_is_unavailable_and_is_stored_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_test_store_timed(dir.path(), 300));
    let session = Session::open(dir.path());
    session.run("BEGIN");
    session.run("LOCK TABLE audit IN EXCLUSIVE MODE");
    let waiting =
        "SELECT count(*) FROM pg_locks WHERE relation = 'audit'::regclass AND NOT granted";

    let audit = Arc::new(Audit::new(store));
    audit.start();
    audit
        .record_admin(Entry::new("admin:root", "config.change").target("x"))
        .await;
    tokio::task::block_in_place(|| {
        wait_until("the append waits for the lock", || {
            session.count(waiting) > 0
        });
        wait_until("the statement timeout cut it", || {
            session.count(waiting) == 0
        });
    });
    session.run("COMMIT");
    let stored = tokio::time::timeout(Duration::from_secs(20), audit.flush_stored())
        .await
        .expect("the writer stores the batch once the store is back");
    assert!(stored, "no entry lost");
    let entries = page(&audit);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "config.change");
}

/// A store unavailable when the writer starts (here: its read of the last id cut by the
/// statement timeout behind a lock that keeps readers out) is waited for: the admin action
/// queued meanwhile is stored once the store is back. The writer gave up for good before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unavailable_when_the_writer_starts_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_test_store_timed(dir.path(), 300));
    let session = Session::open(dir.path());
    session.run("BEGIN");
    session.run("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE");
    let waiting =
        "SELECT count(*) FROM pg_locks WHERE relation = 'audit'::regclass AND NOT granted";

    let audit = Arc::new(Audit::new(store));
    audit.start();
    tokio::task::block_in_place(|| {
        wait_until("the writer's first read waits for the lock", || {
            session.count(waiting) > 0
        });
        wait_until("the statement timeout cut it", || {
            session.count(waiting) == 0
        });
    });
    audit
        .record_admin(Entry::new("admin:root", "user.disable").target("user:100000001"))
        .await;
    session.run("COMMIT");
    let stored = tokio::time::timeout(Duration::from_secs(20), audit.flush_stored())
        .await
        .expect("the writer starts once the store is back");
    assert!(stored, "the writer stopped: no entry kept");
    let entries = page(&audit);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].action, "user.disable");
}

/// A configuration change by `SIGHUP` (no operator, a blocking thread) is queued as an admin
/// action: with the queue full (the writer not started yet, so nothing drains it) users'
/// events are dropped, but the change waits for room and is stored. It was dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_by_sighup_waits_for_room_where_users_events_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::config::Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    let backend = crate::Backend::open(settings, Vec::new()).expect("backend opens");
    for n in 0..AUDIT_QUEUE_ENTRIES_MAX {
        backend
            .audit
            .record(Entry::new(format!("user:{n}"), "user.login").from("203.0.113.9"));
    }
    assert_eq!(backend.audit.tx.capacity(), 0, "the queue is full");

    let change = crate::live::KeyChange {
        key: "limits.messages_per_s_max".into(),
        old: 100.into(),
        new: 500.into(),
    };
    let b = Arc::clone(&backend);
    let queued =
        tokio::task::spawn_blocking(move || b.audit_config_change("signal:SIGHUP", &change));
    backend.audit.start();
    tokio::time::timeout(Duration::from_secs(20), queued)
        .await
        .expect("the change is queued once the writer makes room")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), backend.audit.flush())
        .await
        .expect("the audit log drains");
    let newest = tokio::task::block_in_place(|| backend.audit.page(u64::MAX, 1))
        .expect("the audit log reads");
    assert_eq!(newest.len(), 1);
    let entry = &newest[0].1;
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.action.as_str(),
            entry.target.as_str()
        ),
        (
            "signal:SIGHUP",
            "config.change",
            "limits.messages_per_s_max"
        ),
        "the change was dropped: {entry:?}"
    );
}
