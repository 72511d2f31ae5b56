//! The schema's versions on a real server: an older schema is brought up to date, and a
//! newer one, one not made by ringchat's migrations and a database a copy into has not
//! finished are refused at open with an error that says which.

use std::path::Path;

use super::super::tests::{open_test_store, schema_of, test_config};
use super::{MIGRATIONS, check_history};
use crate::config::Durability;
use crate::store::dump::DumpStore;
use crate::store::{AccountAdminStore, InviteRecord, PgStore, StoreError};

fn reopen(dir: &Path) -> Result<PgStore, StoreError> {
    PgStore::open_in(&test_config(1), Durability::Fsync, Some(&schema_of(dir)))
}

fn latest() -> i32 {
    MIGRATIONS.last().unwrap().0
}

fn version(store: &PgStore) -> i32 {
    let row = store
        .row("SELECT max(version) FROM schema_migrations", &[])
        .unwrap()
        .unwrap();
    row.get(0)
}

#[test]
fn migrations_are_numbered_from_one_without_gaps() {
    for (at, (version, _, _)) in MIGRATIONS.iter().enumerate() {
        assert_eq!(*version as usize, at + 1);
    }
}

#[test]
fn a_history_that_is_not_this_ringchats_is_refused() {
    let ours = |n: usize| -> Vec<(i32, String)> {
        MIGRATIONS[..n]
            .iter()
            .map(|(v, name, _)| (*v, (*name).to_owned()))
            .collect()
    };
    assert_eq!(check_history(&[]).unwrap(), 0);
    assert_eq!(check_history(&ours(1)).unwrap(), 1);
    assert_eq!(check_history(&ours(MIGRATIONS.len())).unwrap(), latest());
    let mut newer = ours(MIGRATIONS.len());
    newer.push((latest() + 1, "future".into()));
    let err = check_history(&newer).unwrap_err().to_string();
    assert!(err.contains("newer than this ringchat knows"), "{err}");
    let renamed = vec![(1, "someone_elses".to_owned())];
    let err = check_history(&renamed).unwrap_err().to_string();
    assert!(err.contains("not one this ringchat knows"), "{err}");
    let gap = vec![(2, MIGRATIONS[1].1.to_owned())];
    let err = check_history(&gap).unwrap_err().to_string();
    assert!(err.contains("not one this ringchat knows"), "{err}");
}

#[test]
fn an_older_schema_is_migrated_at_open_and_a_newer_or_unknown_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_test_store(dir).unwrap();
    assert_eq!(version(&store), latest());

    // At version 1 (what the previous release made): brought up to date at open.
    store
        .execute("DELETE FROM schema_migrations WHERE version > 1", &[])
        .unwrap();
    store.execute("DROP TABLE import_in_progress", &[]).unwrap();
    store
        .execute("ALTER TABLE group_applications DROP COLUMN inviter", &[])
        .unwrap();
    store
        .execute("ALTER TABLE user_groups DROP COLUMN added", &[])
        .unwrap();
    store.execute("DROP INDEX invites_issuer_id", &[]).unwrap();
    // An invite stored before the index by issuer: listed by issuer once migrated.
    let invite = InviteRecord {
        id: 0,
        code_hash: [3; 32],
        issuer: "user:7".into(),
        created_ms: 1,
        expires_ms: 1_000,
        uses_max: 1,
        uses: 0,
        note: String::new(),
    };
    assert_eq!(store.put_invite(&invite, 10, 5).unwrap(), Some(1));
    drop(store);
    let store = reopen(dir).unwrap();
    assert_eq!(version(&store), latest());
    assert_eq!(store.unfinished_import().unwrap(), None);
    let listed = store
        .invites_of_issuer_before("user:7", u64::MAX, 10)
        .unwrap();
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), [1]);

    // A newer ringchat's migration: refused, and the schema left as it is.
    store
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')",
            &[&(latest() + 1)],
        )
        .unwrap();
    let err = reopen(dir).err().unwrap().to_string();
    assert!(err.contains("newer than this ringchat knows"), "{err}");
    store
        .execute(
            "DELETE FROM schema_migrations WHERE version > $1",
            &[&latest()],
        )
        .unwrap();

    // ringchat's tables without a history (made by hand, or by something else): refused
    // with what to do, not a raw "relation already exists".
    store.execute("DROP TABLE schema_migrations", &[]).unwrap();
    drop(store);
    let err = reopen(dir).err().unwrap().to_string();
    assert!(
        err.contains("but no schema_migrations") && err.contains("empty database"),
        "{err}"
    );
}

#[test]
fn a_database_a_copy_into_has_not_finished_is_refused_until_the_copy_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = open_test_store(dir).unwrap();
    store.mark_import(Some("embedded:/srv/old")).unwrap();
    match reopen(dir) {
        Err(e @ StoreError::UnfinishedImport(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("embedded:/srv/old") && msg.contains("ringchat migrate"),
                "{msg}"
            );
        }
        Err(other) => panic!("expected UnfinishedImport, got {other}"),
        Ok(_) => panic!("opened a database a copy into has not finished"),
    }
    store.mark_import(None).unwrap();
    reopen(dir).unwrap();
}
