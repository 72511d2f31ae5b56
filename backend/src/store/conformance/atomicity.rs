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
    CommitGroup {
        user_conversations: vec![(ALICE, ab), (BOB, ab)],
        dedup: vec![
            (ALICE, m1.client_msg_id.clone(), dedup_of(&m1)),
            (BOB, m2.client_msg_id.clone(), dedup_of(&m2)),
        ],
        cursors: vec![
            (
                ab,
                ALICE,
                CursorRecord {
                    delivered_seq: 2,
                    read_seq: 1,
                },
            ),
            (
                ab,
                BOB,
                CursorRecord {
                    delivered_seq: 2,
                    read_seq: 2,
                },
            ),
        ],
        device_cursors: vec![
            (ab, ALICE, "phone".into(), 2),
            (ab, BOB, "laptop".into(), 1),
        ],
        next_msg_id: Some(3),
        messages: vec![m1, m2],
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
    for (user, conv) in &group.user_conversations {
        assert_eq!(convs_of(store, *user), BTreeSet::from([*conv]), "{when}");
    }
    for (user, client_msg_id, record) in &group.dedup {
        assert_eq!(
            store.dedup(*user, client_msg_id).unwrap(),
            Some(*record),
            "{when}"
        );
    }
    for (conv, user, record) in &group.cursors {
        assert_eq!(store.cursor(*conv, *user).unwrap(), Some(*record), "{when}");
    }
    for (conv, user, device, seq) in &group.device_cursors {
        assert_eq!(
            store.device_cursor(*conv, *user, device).unwrap(),
            Some(*seq),
            "{when}"
        );
    }
    assert_eq!(
        store.next_msg_id().unwrap(),
        group.next_msg_id.unwrap(),
        "{when}"
    );
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
    assert_eq!(convs_of(store, ALICE), BTreeSet::new(), "{when}");
    assert_eq!(store.dedup(ALICE, "c1").unwrap(), None, "{when}");
    assert_eq!(store.cursor(ab, ALICE).unwrap(), None, "{when}");
    assert_eq!(
        store.device_cursor(ab, ALICE, "phone").unwrap(),
        None,
        "{when}"
    );
    assert_eq!(store.next_msg_id().unwrap(), 1, "{when}");
    let mut keys = 0;
    store.for_each_dedup_key(&mut |_, _| keys += 1).unwrap();
    assert_eq!(keys, 0, "{when}");
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
    // Group k writes message k of ab, its dedup entry, cursors at k, next_msg_id k + 1 and a
    // new conversation of Alice's; every value only grows, so once a reader sees message k,
    // whatever it reads next must show group k or a later one.
    let group = |k: u64| {
        let m = msg(ab, k);
        CommitGroup {
            user_conversations: vec![(ALICE, direct(ALICE, DAVE + k))],
            dedup: vec![(ALICE, m.client_msg_id.clone(), dedup_of(&m))],
            cursors: vec![(
                ab,
                ALICE,
                CursorRecord {
                    delivered_seq: k,
                    read_seq: k,
                },
            )],
            device_cursors: vec![(ab, ALICE, "phone".into(), k)],
            next_msg_id: Some(k + 1),
            messages: vec![m],
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
                let d = store.dedup(ALICE, &head.client_msg_id).unwrap();
                assert_eq!(d, Some(dedup_of(&head)), "group {k}: message without dedup");
                let c = store.cursor(ab, ALICE).unwrap().unwrap_or_default();
                assert!(c.read_seq >= k, "group {k}: message without cursor {c:?}");
                let dc = store.device_cursor(ab, ALICE, "phone").unwrap();
                assert!(
                    dc >= Some(k),
                    "group {k}: message without device cursor {dc:?}"
                );
                let next = store.next_msg_id().unwrap();
                assert!(next > k, "group {k}: message without next_msg_id ({next})");
                let convs = store.user_conversations(ALICE, usize::MAX).unwrap();
                assert!(
                    convs.contains(&direct(ALICE, DAVE + k)),
                    "group {k}: message without its user_conversations entry"
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
