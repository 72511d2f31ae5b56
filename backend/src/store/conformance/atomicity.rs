//! Conformance: A commit group is all or nothing, for writers and readers alike.

use super::*;

// ---- atomicity --------------------------------------------------------------------------------

/// A group that writes one of everything.
fn full_group(ab: ConvId) -> CommitGroup {
    let m1 = msg(ab, 1);
    let m2 = MessageRecord {
        from: BOB,
        to: ALICE,
        ..msg(ab, 2)
    };
    let cursor = |delivered_seq, read_seq| CursorRecord {
        delivered_seq,
        read_seq,
    };
    CommitGroup {
        cursor_rows: vec![
            (
                ab,
                ALICE,
                row(cursor(2, 1), &[("phone", 2)], &[(&m1.client_msg_id, 1)]),
            ),
            (
                ab,
                BOB,
                row(cursor(2, 2), &[("laptop", 1)], &[(&m2.client_msg_id, 2)]),
            ),
        ],
        recalls: vec![],
        recency: vec![
            RecencyMove {
                user: ALICE,
                conv: ab,
                from: None,
                to: 5,
            },
            RecencyMove {
                user: BOB,
                conv: ab,
                from: None,
                to: 5,
            },
        ],
        next_msg_id: Some(3),
        messages: vec![m1, m2],
        contacts: crate::store::ContactWrites {
            relations: vec![(
                crate::store::RelationKey::new(BOB, crate::store::RelationKind::Block, DAVE),
                Some(crate::store::RelationRecord::default()),
            )],
            summaries: vec![crate::store::SummaryWrite {
                user: BOB,
                base: None,
                new: crate::store::ContactSummary::default(),
            }],
        },
        groups: crate::store::GroupWrites::default(),
        fences: vec![],
    }
}

fn assert_full_group_visible(store: &impl Store, ab: ConvId, group: &CommitGroup, when: &str) {
    for m in &group.messages {
        assert_eq!(
            store.message(ab, m.seq).unwrap().as_ref(),
            Some(m),
            "{when}"
        );
    }
    assert_eq!(all_after(store, ab), group.messages, "{when}");
    for (conv, user, row) in &group.cursor_rows {
        assert_eq!(
            store.cursor_row(*conv, *user).unwrap().as_ref(),
            Some(row),
            "{when}"
        );
    }
    for m in &group.recency {
        assert_eq!(
            store
                .recent_conversations(m.user, 0..=u64::MAX, 10)
                .unwrap(),
            vec![(m.to, m.conv)],
            "{when}"
        );
    }
    assert_eq!(
        store.next_msg_id().unwrap(),
        group.next_msg_id.unwrap(),
        "{when}"
    );
    for (key, record) in &group.contacts.relations {
        assert_eq!(&store.relation(*key).unwrap(), record, "{when}");
    }
    for w in &group.contacts.summaries {
        assert_eq!(
            store.contact_summary(w.user).unwrap().as_ref(),
            Some(&w.new),
            "{when}"
        );
    }
}

pub(crate) fn everything_in_a_group_is_visible_together_after_commit<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let group = full_group(ab);
    commit(&store, full_group(ab));
    assert_full_group_visible(&store, ab, &group, "after commit");
    let store = reopen::<A>(store, dir.path());
    assert_full_group_visible(&store, ab, &group, "after reopen");
}

fn assert_nothing_of_full_group(store: &impl Store, ab: ConvId, when: &str) {
    assert_eq!(store.message(ab, 1).unwrap(), None, "{when}");
    assert_eq!(store.last_message(ab).unwrap(), None, "{when}");
    assert_eq!(all_after(store, ab), Vec::new(), "{when}");
    assert_eq!(store.cursor_row(ab, ALICE).unwrap(), None, "{when}");
    assert_eq!(store.cursor_row(ab, BOB).unwrap(), None, "{when}");
    assert_eq!(
        store.recent_conversations(ALICE, 0..=u64::MAX, 10).unwrap(),
        vec![],
        "{when}"
    );
    assert_eq!(store.next_msg_id().unwrap(), 1, "{when}");
    assert_eq!(store.contact_summary(BOB).unwrap(), None, "{when}");
}

pub(crate) fn a_group_never_committed_leaves_nothing<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let group = full_group(ab);
    assert_nothing_of_full_group(&store, ab, "built, not committed");
    drop(group);
    let store = reopen::<A>(store, dir.path());
    assert_nothing_of_full_group(&store, ab, "after reopen");
}

pub(crate) fn a_concurrent_reader_never_sees_part_of_a_group<A: Adapter>() {
    const GROUPS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let ab = direct(ALICE, BOB);
    // Group k writes message k of ab, Alice's row (its recent send, cursors and device cursor
    // at k), a recall of message k - 1, next_msg_id k + 1 and a new conversation of Alice's;
    // every value only grows, so once a reader sees message k, whatever it reads next must show
    // group k or a later one.
    // The row keeps every send so far (the sequencer's window, unbounded here).
    let ids: Vec<String> = (1..=GROUPS).map(|k| msg(ab, k).client_msg_id).collect();
    let sends_up_to = |k: u64| -> Vec<(&str, u64)> {
        (1..=k).map(|s| (ids[s as usize - 1].as_str(), s)).collect()
    };
    let group = |k: u64| {
        let m = msg(ab, k);
        let cursor = CursorRecord {
            delivered_seq: k,
            read_seq: k,
        };
        CommitGroup {
            cursor_rows: vec![(ab, ALICE, row(cursor, &[("phone", k)], &sends_up_to(k)))],
            recalls: if k > 1 { vec![(ab, k - 1, k)] } else { vec![] },
            recency: vec![RecencyMove {
                user: ALICE,
                conv: direct(ALICE, DAVE + k),
                from: None,
                to: k,
            }],
            next_msg_id: Some(k + 1),
            messages: vec![m],
            ..CommitGroup::default()
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seen = 0;
            while !done.load(Ordering::Acquire) {
                let Some(head) = store.last_message(ab).unwrap() else {
                    continue;
                };
                let k = head.seq;
                assert!(k >= seen, "the head went back from {seen} to {k}");
                seen = k;
                let row = store.cursor_row(ab, ALICE).unwrap().unwrap_or_default();
                assert!(
                    row.maybe_sent(&head.client_msg_id).any(|s| s == k),
                    "group {k}: message without its recent send"
                );
                let c = row.cursor;
                assert!(c.read_seq >= k, "group {k}: message without cursor {c:?}");
                let dc = row.device_cursor("phone");
                assert!(
                    dc >= Some(k),
                    "group {k}: message without device cursor {dc:?}"
                );
                if k > 1 {
                    let before = store.message(ab, k - 1).unwrap().unwrap();
                    assert!(before.recalled, "group {k}: message without its recall");
                }
                let next = store.next_msg_id().unwrap();
                assert!(next > k, "group {k}: message without next_msg_id ({next})");
                let recent = store.recent_conversations(ALICE, 0..=u64::MAX, 1).unwrap();
                assert!(
                    recent.first().is_some_and(|(b, _)| *b >= k),
                    "group {k}: message without its recency entry: {recent:?}"
                );
                let all = store.messages_after(ab, 0, usize::MAX).unwrap();
                assert!(
                    all.len() as u64 >= k,
                    "group {k}: an earlier message is missing"
                );
            }
            seen
        })
    };
    for k in 1..=GROUPS {
        commit(&*store, group(k));
    }
    done.store(true, Ordering::Release);
    reader.join().expect("the reader saw only whole groups");
}
