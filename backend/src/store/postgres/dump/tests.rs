//! Embedded → PostgreSQL → embedded with every part filled, on a real server: tallies equal at
//! each step, a copy stopped after some batches and run again gives the same store, the same
//! batches imported twice change nothing, and the counters go on from where they were.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::tests::open_test_store;
use crate::backup::{copy, tests::filled, verify};
use crate::config::Durability;
use crate::store::dump::{DumpItem, DumpStore, DumpView, Part, tally_all};
use crate::store::*;

/// A destination that fails after `batches` imports (of those `counted` says count): a copy
/// that died part way. With `import_last`, the failing import is made first: a copy that died
/// after importing a batch and before saving its checkpoint.
pub(super) struct StopAfter<'a, S> {
    pub(super) inner: &'a S,
    pub(super) batches: AtomicUsize,
    pub(super) counted: fn(&[DumpItem]) -> bool,
    pub(super) import_last: bool,
}

impl<S: DumpStore> DumpStore for StopAfter<'_, S> {
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError> {
        self.inner.dump_view()
    }

    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        if (self.counted)(items) && self.batches.fetch_sub(1, Ordering::SeqCst) == 0 {
            if self.import_last {
                self.inner.import(items)?;
            }
            return Err(StoreError::Unavailable("the copy was stopped".into()));
        }
        self.inner.import(items)
    }

    fn finish_import(&self) -> Result<(), StoreError> {
        self.inner.finish_import()
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.is_empty()
    }

    fn mark_import(&self, source: Option<&str>) -> Result<(), StoreError> {
        self.inner.mark_import(source)
    }
}

#[test]
fn every_part_round_trips_embedded_to_postgres_to_embedded_and_a_resumed_copy_is_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let expected = tally_all(source.dump_view().unwrap().as_ref(), 1).unwrap();
    for (part, tally) in &expected {
        assert!(tally.records > 0, "{} is exported", part.name());
    }

    let pg_dir = tmp.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let pg = open_test_store(&pg_dir).unwrap();
    assert!(pg.is_empty().unwrap());
    let checkpoint = tmp.path().join("pg-checkpoint.json");
    let view = source.dump_view().unwrap();
    let stopping = StopAfter {
        inner: &pg,
        batches: AtomicUsize::new(5),
        counted: |_| true,
        import_last: false,
    };
    let stopped = copy::copy(view.as_ref(), "a", &stopping, &checkpoint, 2, &mut |_| {});
    assert!(stopped.is_err(), "the copy stops after 5 batches");
    assert!(!pg.is_empty().unwrap());
    // A server does not open the half-copied database (the checkpoint is not beside it).
    let refused = open_test_store(&pg_dir).err().unwrap();
    assert!(
        matches!(refused, StoreError::UnfinishedImport(ref s) if s == "a"),
        "{refused}"
    );
    let report = copy::copy(view.as_ref(), "a", &pg, &checkpoint, 2, &mut |_| {}).unwrap();
    assert!(report.resumed);
    let in_pg = tally_all(pg.dump_view().unwrap().as_ref(), 3).unwrap();
    verify::check(&verify::compare(&expected, &in_pg)).unwrap();
    copy::finish(&checkpoint, &pg).unwrap();
    drop(open_test_store(&pg_dir).unwrap());

    // The same batches again (what a resumed copy does): the same rows.
    for part in Part::ALL {
        let page = view.export(part, None, usize::MAX).unwrap();
        pg.import(&page.items).unwrap();
    }
    pg.finish_import().unwrap();
    assert_eq!(
        tally_all(pg.dump_view().unwrap().as_ref(), 1000).unwrap(),
        in_pg
    );

    // What the server reads came along: names, e-mail, tokens, groups by name, recalls, counts.
    let alice = pg.user_id_by_name("ALICE").unwrap().unwrap();
    assert_eq!(
        pg.user_id_by_email("alice@example.com").unwrap(),
        Some(alice)
    );
    assert_eq!(pg.tokens_of_user(alice, 10).unwrap().len(), 1);
    assert_eq!(pg.groups_by_name("team", None, 10).unwrap().len(), 1);
    assert_eq!(pg.user_group_count(alice).unwrap(), 1);
    let direct = ConvId::direct(alice, alice + 1).unwrap();
    let recalled = pg.message(direct, 2).unwrap().unwrap();
    assert!(recalled.recalled && recalled.content.is_empty());
    assert_eq!(pg.message(direct, 3).unwrap().unwrap().content, "message 3");
    // New writes never take an id the old store gave.
    assert_eq!(pg.next_msg_id().unwrap(), 6);
    assert_eq!(pg.next_group_id().unwrap(), 2);
    let carol = pg.create_user("carol", "h", "", 9).unwrap().user_id;
    assert!(carol > alice + 1, "{carol}");
    assert_eq!(pg.last_audit_id().unwrap(), 1);

    // And back: PostgreSQL → a new embedded store, equal to the first (carol aside).
    let view = pg.dump_view().unwrap();
    let back = FjallStore::open(&tmp.path().join("c"), Durability::None).unwrap();
    let checkpoint = tmp.path().join("c-checkpoint.json");
    copy::copy(view.as_ref(), "pg", &back, &checkpoint, 4, &mut |_| {}).unwrap();
    let in_back = tally_all(back.dump_view().unwrap().as_ref(), 5).unwrap();
    let in_pg = tally_all(view.as_ref(), 5).unwrap();
    verify::check(&verify::compare(&in_pg, &in_back)).unwrap();
    let differ: Vec<Part> = verify::compare(&expected, &in_back)
        .into_iter()
        .filter(|c| !c.matches())
        .map(|c| c.part)
        .collect();
    assert_eq!(
        differ,
        [Part::Users, Part::Counters],
        "only carol and her id"
    );
    assert_eq!(back.user_id_by_name("carol").unwrap(), Some(carol));
    assert!(back.message(direct, 2).unwrap().unwrap().recalled);
}
