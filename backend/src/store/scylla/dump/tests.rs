//! Embedded → ScyllaDB → embedded with every part filled, on a real cluster (compiled in only
//! when `RINGCHAT_TEST_SCYLLA` names a node at build time, like the conformance suite:
//! `backend/build.rs` says "skipped" otherwise): tallies equal at each step, a copy stopped
//! after some batches and run again gives the same store, the same batches imported twice
//! change nothing, and the counters go on from where they were.

#![cfg(ringchat_test_scylla)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::tests::{keyspace_of, test_config};
use crate::backup::{copy, tests::filled, verify};
use crate::config::Durability;
use crate::store::dump::{DumpItem, DumpStore, DumpView, Part, tally_all};
use crate::store::*;

fn open(dir: &Path) -> ScyllaStore {
    let cfg = test_config().expect("RINGCHAT_TEST_SCYLLA is set at run time too");
    ScyllaStore::open_keyspace(&cfg, &keyspace_of(dir)).unwrap()
}

/// A destination that fails after `batches` imports: a copy that died part way.
struct StopAfter<'a> {
    inner: &'a ScyllaStore,
    batches: AtomicUsize,
}

impl DumpStore for StopAfter<'_> {
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError> {
        self.inner.dump_view()
    }

    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        if self.batches.fetch_sub(1, Ordering::SeqCst) == 0 {
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
fn every_part_round_trips_embedded_to_scylla_to_embedded_and_a_resumed_copy_is_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let expected = tally_all(source.dump_view().unwrap().as_ref(), 1).unwrap();
    for (part, tally) in &expected {
        assert!(tally.records > 0, "{} is exported", part.name());
    }

    let sc = open(tmp.path());
    assert!(sc.is_empty().unwrap());
    let checkpoint = tmp.path().join("scylla-checkpoint.json");
    let view = source.dump_view().unwrap();
    let stopping = StopAfter {
        inner: &sc,
        batches: AtomicUsize::new(5),
    };
    let stopped = copy::copy(view.as_ref(), "a", &stopping, &checkpoint, 2, &mut |_| {});
    assert!(stopped.is_err(), "the copy stops after 5 batches");
    assert!(!sc.is_empty().unwrap());
    let report = copy::copy(view.as_ref(), "a", &sc, &checkpoint, 2, &mut |_| {}).unwrap();
    assert!(report.resumed);
    // Pages of 1 and of 3 rows: the paging state resumes every part exactly.
    let in_sc = tally_all(sc.dump_view().unwrap().as_ref(), 3).unwrap();
    verify::check(&verify::compare(&expected, &in_sc)).unwrap();
    assert_eq!(
        tally_all(sc.dump_view().unwrap().as_ref(), 1).unwrap(),
        in_sc
    );

    // The same batches again (what a resumed copy does): the same rows.
    for part in Part::ALL {
        let page = view.export(part, None, usize::MAX).unwrap();
        sc.import(&page.items).unwrap();
    }
    sc.finish_import().unwrap();
    assert_eq!(
        tally_all(sc.dump_view().unwrap().as_ref(), 1000).unwrap(),
        in_sc
    );

    // What the server reads came along: names, e-mail, tokens, groups by name, recalls, counts.
    let alice = sc.user_id_by_name("ALICE").unwrap().unwrap();
    assert_eq!(
        sc.user_id_by_email("alice@example.com").unwrap(),
        Some(alice)
    );
    assert_eq!(sc.tokens_of_user(alice, 10).unwrap().len(), 1);
    assert_eq!(sc.groups_by_name("team", None, 10).unwrap().len(), 1);
    assert_eq!(sc.user_group_count(alice).unwrap(), 1);
    let direct = ConvId::direct(alice, alice + 1).unwrap();
    let recalled = sc.message(direct, 2).unwrap().unwrap();
    assert!(recalled.recalled && recalled.content.is_empty());
    assert_eq!(sc.message(direct, 3).unwrap().unwrap().content, "message 3");
    // New writes never take an id the old store gave.
    assert_eq!(sc.next_msg_id().unwrap(), 6);
    assert_eq!(sc.next_group_id().unwrap(), 2);
    let carol = sc.create_user("carol", "h", "", 9).unwrap().user_id;
    assert!(carol > alice + 1, "{carol}");
    assert_eq!(sc.last_audit_id().unwrap(), 1);

    // And back: ScyllaDB → a new embedded store, equal to the first (carol aside).
    let view = sc.dump_view().unwrap();
    let back = FjallStore::open(&tmp.path().join("c"), Durability::None).unwrap();
    let checkpoint = tmp.path().join("c-checkpoint.json");
    copy::copy(view.as_ref(), "scylla", &back, &checkpoint, 4, &mut |_| {}).unwrap();
    let in_back = tally_all(back.dump_view().unwrap().as_ref(), 5).unwrap();
    let in_sc = tally_all(view.as_ref(), 5).unwrap();
    verify::check(&verify::compare(&in_sc, &in_back)).unwrap();
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

/// Rows a crashed writer left past a conversation's head are not exported: they were never
/// acknowledged, and readers do not see them either.
#[test]
fn rows_past_the_published_head_are_not_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let sc = open(tmp.path());
    let conv = ConvId::direct(100_000_000, 100_000_001).unwrap();
    let message = |seq: u64| MessageRecord {
        conv_id: conv,
        seq,
        msg_id: seq,
        from: 100_000_000,
        to: 100_000_001,
        client_msg_id: format!("c{seq}"),
        content_type: 1,
        content: bytes::Bytes::from(format!("m{seq}")),
        server_time_ms: seq,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
        mentions: None,
    };
    sc.import(&[DumpItem::Messages(vec![message(1), message(2)])])
        .unwrap();
    // Seq 3's row without its head: what step 2 of a group that died before step 3 leaves.
    sc.run(sc.exec(
        &sc.st.msg_insert,
        (
            crate::store::scylla::codec::i(conv.to_wire()),
            0i64,
            3i64,
            3i64,
            100_000_000i64,
            100_000_001i64,
            "c3".to_owned(),
            1i32,
            b"m3".to_vec(),
            3i64,
            0i64,
            Vec::<i64>::new(),
            false,
            crate::store::scylla::codec::message_ts(0, 3),
        ),
    ))
    .unwrap();
    let tally = crate::store::dump::tally_part(sc.dump_view().unwrap().as_ref(), Part::Messages, 1)
        .unwrap();
    assert_eq!(tally.records, 2);
    assert_eq!(sc.last_message(conv).unwrap().unwrap().seq, 2);
}
