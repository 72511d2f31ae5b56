//! Conformance: cursors, device cursors and users' conversations by recency.

use super::*;

// ---- cursors ----------------------------------------------------------------------------------

pub(crate) fn cursors_and_device_cursors_round_trip_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    let cursor = |delivered_seq, read_seq| CursorRecord {
        delivered_seq,
        read_seq,
    };
    let rows = vec![
        (
            ab,
            ALICE,
            row(cursor(5, 3), &[("d", 5), ("d2", 2), ("平板-📱", 1)], &[]),
        ),
        (ab, BOB, row(cursor(4, 4), &[("d", 4)], &[])),
        (ac, ALICE, row(cursor(u64::MAX, 0), &[("", u64::MAX)], &[])),
    ];
    commit(
        &store,
        CommitGroup {
            cursor_rows: rows.clone(),
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        for (conv, user, row) in &rows {
            assert_eq!(cursor_of(store, *conv, *user), Some(row.cursor), "{when}");
            for device in &row.devices {
                assert_eq!(
                    device_cursor_of(store, *conv, *user, &device.device_id),
                    Some(device.delivered_seq),
                    "{when}: device {:?}",
                    device.device_id
                );
            }
        }
        assert_eq!(cursor_of(store, ac, CAROL), None, "{when}");
        assert_eq!(cursor_of(store, direct(BOB, CAROL), BOB), None, "{when}");
        assert_eq!(device_cursor_of(store, ab, ALICE, "d3"), None, "{when}");
        assert_eq!(device_cursor_of(store, ab, ALICE, "D"), None, "{when}");
        assert_eq!(device_cursor_of(store, ab, CAROL, "d"), None, "{when}");
        assert_eq!(device_cursor_of(store, ac, ALICE, "d"), None, "{when}");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn a_later_groups_cursor_value_wins<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let cursor = |delivered_seq, read_seq| CursorRecord {
        delivered_seq,
        read_seq,
    };
    let set = |store: &A::Store, c: CursorRecord, device_seq: u64| {
        commit(
            store,
            CommitGroup {
                cursor_rows: vec![(ab, ALICE, row(c, &[("phone", device_seq)], &[]))],
                ..CommitGroup::default()
            },
        );
    };
    set(&store, cursor(5, 3), 5);
    set(&store, cursor(7, 7), 9);
    assert_eq!(cursor_of(&store, ab, ALICE), Some(cursor(7, 7)));
    assert_eq!(device_cursor_of(&store, ab, ALICE, "phone"), Some(9));
    // The store keeps what it is given; "only forward" is the caller's rule.
    set(&store, cursor(2, 1), 1);
    assert_eq!(cursor_of(&store, ab, ALICE), Some(cursor(2, 1)));
    assert_eq!(device_cursor_of(&store, ab, ALICE, "phone"), Some(1));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        cursor_of(&store, ab, ALICE),
        Some(cursor(2, 1)),
        "after reopen"
    );
    assert_eq!(device_cursor_of(&store, ab, ALICE, "phone"), Some(1));
    set(&store, cursor(8, 8), 8);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(cursor_of(&store, ab, ALICE), Some(cursor(8, 8)));
    assert_eq!(device_cursor_of(&store, ab, ALICE, "phone"), Some(8));
}

// ---- recency ----------------------------------------------------------------------------------

pub(crate) fn recency_entries_list_newest_bucket_first_move_and_page<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac, ad, bc) = (
        direct(ALICE, BOB),
        direct(ALICE, CAROL),
        direct(ALICE, DAVE),
        direct(BOB, CAROL),
    );
    let mv = |user, conv, from, to| RecencyMove {
        user,
        conv,
        from,
        to,
    };
    commit(
        &store,
        CommitGroup {
            recency: vec![
                mv(ALICE, ab, None, 10),
                mv(ALICE, ac, None, 10),
                mv(ALICE, ad, None, 7),
                mv(BOB, bc, None, 12),
            ],
            ..CommitGroup::default()
        },
    );
    let list =
        |store: &A::Store, from, limit| store.recent_conversations(ALICE, 0..=from, limit).unwrap();
    // Newest bucket first; within a bucket the higher conversation id first.
    let (hi, lo) = if ac > ab { (ac, ab) } else { (ab, ac) };
    assert_eq!(
        list(&store, u64::MAX, 10),
        vec![(10, hi), (10, lo), (7, ad)]
    );
    assert_eq!(list(&store, u64::MAX, 2), vec![(10, hi), (10, lo)]);
    assert_eq!(list(&store, 9, 10), vec![(7, ad)], "from a bucket down");
    assert_eq!(list(&store, 6, 10), vec![], "nothing older");
    // A lower bound: one bucket alone, or a range, never running on into older buckets.
    let within = |store: &A::Store, buckets, limit| {
        store.recent_conversations(ALICE, buckets, limit).unwrap()
    };
    assert_eq!(within(&store, 10..=10, 10), vec![(10, hi), (10, lo)]);
    assert_eq!(within(&store, 10..=10, 1), vec![(10, hi)]);
    assert_eq!(within(&store, 8..=u64::MAX, 10), vec![(10, hi), (10, lo)]);
    assert_eq!(within(&store, 7..=9, 10), vec![(7, ad)]);
    assert_eq!(within(&store, 7..=7, 10), vec![(7, ad)]);
    assert_eq!(within(&store, 8..=9, 10), vec![], "no bucket in the range");
    let empty = std::ops::RangeInclusive::new(10, 7);
    assert_eq!(within(&store, empty, 10), vec![], "an empty range");
    // A move leaves its old bucket.
    commit(
        &store,
        CommitGroup {
            recency: vec![mv(ALICE, ad, Some(7), 11)],
            ..CommitGroup::default()
        },
    );
    let expected = vec![(11, ad), (10, hi), (10, lo)];
    assert_eq!(list(&store, u64::MAX, 10), expected);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(list(&store, u64::MAX, 10), expected, "after reopen");
    assert_eq!(
        store.recent_conversations(BOB, 0..=u64::MAX, 10).unwrap(),
        vec![(12, bc)],
        "another user's entries are their own"
    );
    assert_eq!(
        store.recent_conversations(CAROL, 0..=u64::MAX, 10).unwrap(),
        vec![]
    );
}
