//! Copies between PostgreSQL and the embedded store that an earlier run, or an older store,
//! makes hard: a copy resumed with other run cuts, a resumed copy from a source that changed
//! meanwhile, and users who share an e-mail address.

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use super::super::test_url;
use super::super::tests::{open_test_store, test_config};
use super::tests::StopAfter;
use crate::backup::commands;
use crate::backup::spec::StoreSpec;
use crate::backup::tests::message;
use crate::backup::{BackupError, copy, verify};
use crate::config::{Durability, PostgresConfig};
use crate::store::dump::{DumpItem, DumpStore, tally_all};
use crate::store::*;

/// Messages in the conversation the run-cut test copies.
const MESSAGES: u64 = 1_000;

/// Copies `source` into the PostgreSQL store `pg`, finished.
fn copy_into(source: &dyn DumpStore, pg: &PgStore, checkpoint: &Path, batch_records: usize) {
    let view = source.dump_view().unwrap();
    copy::copy(
        view.as_ref(),
        "source",
        pg,
        checkpoint,
        batch_records,
        &mut |_| {},
    )
    .unwrap();
    copy::finish(checkpoint, pg).unwrap();
}

/// PostgreSQL cuts runs at page boundaries: a batch imported by a copy that died before saving
/// its checkpoint is imported again, by the rerun, in other runs (a smaller `--batch-records`
/// here). The embedded store keeps each message once: it verifies, and reads return every
/// message once, in order.
#[test]
fn a_copy_resumed_with_other_run_cuts_reads_back_each_message_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let fjall = FjallStore::open(&tmp.path().join("a"), Durability::None).unwrap();
    let a = fjall.create_user("alice", "h", "", 1).unwrap().user_id;
    let b = fjall.create_user("bob", "h", "", 1).unwrap().user_id;
    let direct = ConvId::direct(a, b).unwrap();
    fjall.claim(direct, 1, 0).unwrap();
    for first in (1..=MESSAGES).step_by(100) {
        fjall
            .append(&CommitGroup {
                messages: (first..first + 100)
                    .map(|s| message(direct, s, a, b))
                    .collect(),
                next_msg_id: Some(first + 100),
                ..Default::default()
            })
            .unwrap();
    }
    let pg_dir = tmp.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let pg = open_test_store(&pg_dir).unwrap();
    copy_into(&fjall, &pg, &tmp.path().join("pg-checkpoint.json"), 10_000);

    let dest = FjallStore::open(&tmp.path().join("b"), Durability::None).unwrap();
    let checkpoint = tmp.path().join("b").join(copy::CHECKPOINT_FILE);
    let view = pg.dump_view().unwrap();
    // 600 records a batch: the second batch of messages (601..1000, runs 601..856 and
    // 857..1000) is imported, and the copy dies before its checkpoint says so.
    let dying = StopAfter {
        inner: &dest,
        batches: AtomicUsize::new(1),
        counted: |items| items.iter().any(|i| matches!(i, DumpItem::Messages(_))),
        import_last: true,
    };
    let died = copy::copy(view.as_ref(), "pg", &dying, &checkpoint, 600, &mut |_| {});
    assert!(
        died.is_err(),
        "the copy dies in the second batch of messages"
    );
    // The rerun reads 601..1000 again in runs of 70: none starts at 857.
    let report = copy::copy(view.as_ref(), "pg", &dest, &checkpoint, 70, &mut |_| {}).unwrap();
    assert!(report.resumed);

    let expected = tally_all(view.as_ref(), 1_000).unwrap();
    let found = tally_all(dest.dump_view().unwrap().as_ref(), 1_000).unwrap();
    verify::check(&verify::compare(&expected, &found)).unwrap();
    let after: Vec<u64> = dest
        .messages_after(direct, 0, 2 * MESSAGES as usize)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(after, (1..=MESSAGES).collect::<Vec<_>>());
    let before: Vec<u64> = dest
        .messages_before(direct, MESSAGES + 1, 2 * MESSAGES as usize)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(before, (1..=MESSAGES).rev().collect::<Vec<_>>());
    assert_eq!(
        dest.message(direct, 900).unwrap().unwrap().content,
        "message 900"
    );
}

/// A fresh database on the test server, dropped by [`Database::drop`].
struct Database {
    name: String,
    url: String,
    admin: PgStore,
}

impl Database {
    fn new(name: &str) -> Self {
        let name = format!("{name}_{}", std::process::id());
        let admin = PgStore::open_in(&test_config(1), Durability::Fsync, None).unwrap();
        admin
            .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
            .unwrap();
        admin
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .unwrap();
        let url = test_url();
        let (base, _) = url.rsplit_once('/').expect("a URL that names a database");
        let url = format!("{base}/{name}");
        Self { name, url, admin }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self
            .admin
            .execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name), &[]);
    }
}

/// A copy from PostgreSQL reads each run from its own snapshot: users written between an
/// interrupted run and the rerun are missing from the part the first run finished, and no
/// rerun can pass. The mismatch says so and how to start again; started again, it verifies.
#[test]
fn a_resumed_copy_from_a_postgresql_source_that_changed_says_to_start_again() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::new("rc_test_resumed_copy");
    let from = StoreSpec::Postgres(crate::backup::spec::PgUrl::new(db.url.clone()).unwrap());
    let source = PgStore::open_for_import(
        &PostgresConfig {
            url: db.url.clone(),
            ..test_config(2)
        },
        Durability::Fsync,
    )
    .unwrap();
    let fjall = crate::backup::tests::filled(&tmp.path().join("a"));
    copy_into(
        &fjall,
        &source,
        &tmp.path().join("pg-checkpoint.json"),
        10_000,
    );

    // The first run copies the users, then dies.
    let dir = tmp.path().join("b");
    let to = StoreSpec::Embedded(dir.clone());
    {
        let dest = FjallStore::open(&dir, Durability::Fsync).unwrap();
        let dying = StopAfter {
            inner: &dest,
            batches: AtomicUsize::new(1),
            counted: |items| !items.is_empty(),
            import_last: false,
        };
        let view = source.dump_view().unwrap();
        let died = copy::copy(
            view.as_ref(),
            &from.to_string(),
            &dying,
            &to.checkpoint_path().unwrap(),
            1_000,
            &mut |_| {},
        );
        assert!(died.is_err(), "the copy dies after the users");
    }
    // A server on the source registers someone.
    source.create_user("carol", "h", "", 3).unwrap();

    // Each rerun copies what is left and says why it cannot pass and what to do.
    for _ in 0..2 {
        match commands::migrate(&from, &to, 1_000, &mut |_| {}) {
            Err(BackupError::Mismatch(why)) => assert!(
                why.contains("users")
                    && why.contains("may have changed since the interrupted run")
                    && why.contains("Start again into an empty destination")
                    && why.contains(&format!("remove {}", dir.display())),
                "{why}"
            ),
            Err(other) => panic!("expected a mismatch, got {other}"),
            Ok(_) => panic!("a copy missing a user verified"),
        }
    }
    // As it says: into an empty destination, it verifies.
    std::fs::remove_dir_all(&dir).unwrap();
    let outcome = commands::migrate(&from, &to, 1_000, &mut |_| {}).unwrap();
    assert!(!outcome.copy.resumed);
    let dest = FjallStore::open(&dir, Durability::Fsync).unwrap();
    assert!(dest.user_id_by_name("carol").unwrap().is_some());
}

/// An embedded store from before the e-mail index, whose users share an address
/// (case-folded), copied into PostgreSQL and into the embedded store, whole and one user a
/// batch: the copies verify, and the address finds the lowest user id. Imported highest id
/// first (ScyllaDB exports in token order), the lowest still ends up with it.
#[test]
fn users_who_share_an_address_copy_with_it_kept_by_the_lowest_id() {
    let tmp = tempfile::tempdir().unwrap();
    let source = FjallStore::open(&tmp.path().join("a"), Durability::None).unwrap();
    let (a, b, c) = (USER_ID_FIRST, USER_ID_FIRST + 1, USER_ID_FIRST + 2);
    let user = |user_id, name: &str, email: &str| UserRecord {
        user_id,
        username: name.into(),
        password_hash: "h".into(),
        email: email.into(),
        created_at_ms: 1,
    };
    let users = [
        user(a, "alice", "Shared@Example.com"),
        user(b, "bob", "shared@example.COM "),
        user(c, "carol", "carol@example.com"),
    ];
    for u in &users {
        source.put_old_user(u);
    }
    let expected = tally_all(source.dump_view().unwrap().as_ref(), 1_000).unwrap();
    let check = |dest: &dyn DumpStore, accounts: &dyn AccountStore| {
        let found = tally_all(dest.dump_view().unwrap().as_ref(), 1_000).unwrap();
        verify::check(&verify::compare(&expected, &found)).unwrap();
        assert_eq!(
            accounts.user_id_by_email("SHARED@example.com").unwrap(),
            Some(a)
        );
        assert_eq!(
            accounts.user_id_by_email("carol@example.com").unwrap(),
            Some(c)
        );
        assert_eq!(
            accounts.user_by_id(b).unwrap().unwrap().email,
            users[1].email
        );
    };
    for batch_records in [1, 1_000] {
        let pg_dir = tmp.path().join(format!("pg-{batch_records}"));
        std::fs::create_dir_all(&pg_dir).unwrap();
        let pg = open_test_store(&pg_dir).unwrap();
        let checkpoint = tmp.path().join(format!("pg-{batch_records}.json"));
        copy_into(&source, &pg, &checkpoint, batch_records);
        check(&pg, &pg);
        let fjall = FjallStore::open(
            &tmp.path().join(format!("fjall-{batch_records}")),
            Durability::None,
        )
        .unwrap();
        let view = source.dump_view().unwrap();
        let checkpoint = tmp
            .path()
            .join(format!("fjall-{batch_records}"))
            .join(copy::CHECKPOINT_FILE);
        copy::copy(
            view.as_ref(),
            "a",
            &fjall,
            &checkpoint,
            batch_records,
            &mut |_| {},
        )
        .unwrap();
        check(&fjall, &fjall);
    }

    // Highest id first, one batch each, and each batch twice.
    let pg_dir = tmp.path().join("pg-reversed");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let pg = open_test_store(&pg_dir).unwrap();
    let fjall = FjallStore::open(&tmp.path().join("fjall-reversed"), Durability::None).unwrap();
    for u in users.iter().rev() {
        for dest in [&pg as &dyn DumpStore, &fjall] {
            dest.import(&[DumpItem::User(u.clone())]).unwrap();
            dest.import(&[DumpItem::User(u.clone())]).unwrap();
        }
    }
    for accounts in [&pg as &dyn AccountStore, &fjall] {
        assert_eq!(
            accounts.user_id_by_email("shared@example.com").unwrap(),
            Some(a)
        );
    }
}
