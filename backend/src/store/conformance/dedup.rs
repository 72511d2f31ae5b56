//! Conformance: the dedup window, kept in each sender's (conversation, user) row.

use super::*;

// ---- dedup ------------------------------------------------------------------------------------

pub(crate) fn a_senders_recent_sends_are_kept_in_its_row<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    let none = CursorRecord::default();
    let rows = vec![
        (
            ab,
            ALICE,
            row(none, &[], &[("a", 1), ("b", 3), ("ид-😀", 4)]),
        ),
        (ab, BOB, row(none, &[], &[("a", 2)])),
        (ac, ALICE, row(none, &[], &[("ab", 1)])),
    ];
    commit(
        &store,
        CommitGroup {
            cursor_rows: rows.clone(),
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        let sent = |conv, user, id: &str| -> Vec<u64> {
            store
                .cursor_row(conv, user)
                .unwrap()
                .map(|r| r.maybe_sent(id).collect())
                .unwrap_or_default()
        };
        assert_eq!(sent(ab, ALICE, "a"), [1], "{when}");
        assert_eq!(sent(ab, ALICE, "ид-😀"), [4], "{when}");
        assert_eq!(sent(ab, BOB, "a"), [2], "{when}: per sender");
        assert_eq!(sent(ac, ALICE, "ab"), [1], "{when}: per conversation");
        assert_eq!(sent(ab, ALICE, "A"), Vec::<u64>::new(), "{when}: exact");
        assert_eq!(sent(ab, ALICE, ""), Vec::<u64>::new(), "{when}");
        assert_eq!(sent(ab, CAROL, "a"), Vec::<u64>::new(), "{when}");
        for (conv, user, expected) in &rows {
            let stored = store.cursor_row(*conv, *user).unwrap();
            assert_eq!(stored.as_ref(), Some(expected), "{when}");
        }
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn a_resend_is_recognised_by_hash_and_confirmed_by_the_stored_message<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let group = msgs(ab, 1..=3);
    let sends: Vec<(&str, u64)> = group
        .messages
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    let alice = row(CursorRecord::default(), &[], &sends);
    commit(
        &store,
        CommitGroup {
            cursor_rows: vec![(ab, ALICE, alice)],
            ..msgs(ab, 1..=3)
        },
    );
    // What the sequencer does with a resend of "c2": the row's window names seq 2, and the
    // message stored there confirms sender and client_msg_id.
    let row = store.cursor_row(ab, ALICE).unwrap().unwrap();
    let seqs: Vec<u64> = row.maybe_sent("c2").collect();
    assert_eq!(seqs, [2]);
    let original = store.message(ab, 2).unwrap().unwrap();
    assert_eq!(
        (original.from, original.client_msg_id.as_str()),
        (ALICE, "c2")
    );
}
