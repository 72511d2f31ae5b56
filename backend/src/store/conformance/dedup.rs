//! Conformance: Dedup entries.

use super::*;

// ---- dedup ------------------------------------------------------------------------------------

pub(crate) fn dedup_entries_are_found_by_sender_and_client_msg_id<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    let record = |conv, seq| dedup_of(&msg(conv, seq));
    let entries = vec![
        (ALICE, "a".to_owned(), record(ab, 1)),
        (BOB, "a".to_owned(), record(ab, 2)),
        (ALICE, "ab".to_owned(), record(ac, 1)),
        (ALICE, "b".to_owned(), record(ab, 3)),
    ];
    commit(
        &store,
        CommitGroup {
            dedup: entries.clone(),
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        for (user, id, record) in &entries {
            assert_eq!(
                store.dedup(*user, id).unwrap(),
                Some(*record),
                "{when}: {user} {id}"
            );
        }
        assert_eq!(
            store.dedup(CAROL, "a").unwrap(),
            None,
            "{when}: another sender"
        );
        assert_eq!(
            store.dedup(ALICE, "A").unwrap(),
            None,
            "{when}: ids are exact"
        );
        assert_eq!(
            store.dedup(ALICE, "").unwrap(),
            None,
            "{when}: no prefix match"
        );
        assert_eq!(store.dedup(BOB, "ab").unwrap(), None, "{when}");
        assert_eq!(store.dedup(ALICE, "abc").unwrap(), None, "{when}");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn for_each_dedup_key_visits_each_stored_entry_once<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let keys: Vec<(UserId, &str)> = vec![
        (ALICE, "a"),
        (ALICE, "ab"),
        (ALICE, "z"),
        (BOB, "a"),
        (CAROL, "ид-😀"),
        (USER_ID_LAST, "last"),
    ];
    let mut expected = BTreeSet::new();
    for (seq, (user, id)) in (1..).zip(&keys) {
        commit(
            &store,
            CommitGroup {
                dedup: vec![(*user, (*id).to_owned(), dedup_of(&msg(ab, seq)))],
                ..CommitGroup::default()
            },
        );
        expected.insert((*user, id.as_bytes().to_vec()));
    }
    // The same key again, in a later group and twice in one group: still one entry.
    commit(
        &store,
        CommitGroup {
            dedup: vec![
                (ALICE, "a".into(), dedup_of(&msg(ab, 50))),
                (ALICE, "a".into(), dedup_of(&msg(ab, 51))),
            ],
            ..CommitGroup::default()
        },
    );
    let visit = |store: &A::Store| {
        let mut seen = Vec::new();
        store
            .for_each_dedup_key(&mut |user, id| seen.push((user, id.to_vec())))
            .unwrap();
        seen.sort();
        seen
    };
    let expected: Vec<_> = expected.into_iter().collect();
    assert_eq!(visit(&store), expected, "after commit");
    assert_eq!(
        store.dedup(ALICE, "a").unwrap(),
        Some(dedup_of(&msg(ab, 51))),
        "the last write of a key wins"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(visit(&store), expected, "after reopen");
}
