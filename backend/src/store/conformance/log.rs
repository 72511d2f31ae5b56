//! Conformance: The conversation log: messages by seq, heads, paging, values.

use super::*;

// ---- the conversation log ---------------------------------------------------------------------

pub(crate) fn committed_messages_are_readable_by_seq_after_commit_and_after_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    assert_eq!(store.message(ab, 1).unwrap(), None);
    commit(&store, msgs(ab, 1..=3));
    for seq in 1..=3 {
        assert_eq!(
            store.message(ab, seq).unwrap(),
            Some(msg(ab, seq)),
            "seq {seq}"
        );
    }
    assert_eq!(store.message(ab, 0).unwrap(), None);
    assert_eq!(store.message(ab, 4).unwrap(), None);
    assert_eq!(store.message(direct(ALICE, CAROL), 1).unwrap(), None);

    let store = reopen::<A>(store, dir.path());
    for seq in 1..=3 {
        assert_eq!(
            store.message(ab, seq).unwrap(),
            Some(msg(ab, seq)),
            "seq {seq}"
        );
    }
    assert_eq!(store.message(ab, 4).unwrap(), None);
}

/// Two conversations with adjacent wire ids, interleaved in each group, so that a read that
/// strays into its neighbour shows.
fn two_neighbouring_conversations<A: Adapter>(dir: &Path) -> (A::Store, ConvId, ConvId) {
    let store = A::open(dir);
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    assert_eq!(ab.to_wire() + 1, ac.to_wire());
    for first in [1, 6] {
        let mut group = msgs(ab, first..first + 5);
        group.messages.extend(msgs(ac, first..first + 2).messages);
        commit(&store, group);
    }
    // ab has seqs 1..=10; ac has 1, 2, 6, 7.
    (store, ab, ac)
}

pub(crate) fn messages_after_is_ascending_and_pages_at_its_edges<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ab, ac) = two_neighbouring_conversations::<A>(dir.path());
    let after = |conv, seq, limit| seqs(&store.messages_after(conv, seq, limit).unwrap());
    assert_eq!(after(ab, 0, 100), (1..=10).collect::<Vec<_>>());
    assert_eq!(after(ab, 0, usize::MAX), (1..=10).collect::<Vec<_>>());
    assert_eq!(after(ab, 0, 0), Vec::<u64>::new(), "limit 0");
    assert_eq!(after(ab, 0, 1), vec![1], "limit 1");
    assert_eq!(after(ab, 0, 3), vec![1, 2, 3]);
    assert_eq!(after(ab, 3, 3), vec![4, 5, 6], "the next page");
    assert_eq!(after(ab, 9, 5), vec![10], "a short last page");
    assert_eq!(after(ab, 10, 5), Vec::<u64>::new(), "after the last seq");
    assert_eq!(after(ab, 11, 5), Vec::<u64>::new());
    assert_eq!(after(ab, u64::MAX - 1, 5), Vec::<u64>::new());
    assert_eq!(after(ab, u64::MAX, 5), Vec::<u64>::new(), "after u64::MAX");
    assert_eq!(after(ac, 0, 100), vec![1, 2, 6, 7], "only its own messages");
    assert_eq!(after(ac, 2, 1), vec![6], "across a hole in the seqs");
    assert_eq!(after(direct(BOB, CAROL), 0, 100), Vec::<u64>::new());
    let page = store.messages_after(ab, 4, 2).unwrap();
    assert_eq!(page, vec![msg(ab, 5), msg(ab, 6)], "whole records");
}

pub(crate) fn messages_at_answers_each_key_in_order_and_none_where_there_is_none<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ab, ac) = two_neighbouring_conversations::<A>(dir.path());
    // ab's seq 2 recalled by its event at 11: read back as recalled, like `message`.
    let event = MessageRecord {
        content: bytes::Bytes::new(),
        recall_of_seq: 2,
        ..msg(ab, 11)
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![event.clone()],
            recalls: vec![(ab, 2, 11)],
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.messages_at(&[]).unwrap(), Vec::new());
    let bc = direct(BOB, CAROL);
    let keys = [
        (ac, 6),
        (ab, 3),
        (ab, 0),
        (ac, 3),
        (ab, 12),
        (bc, 1),
        (ab, 2),
        (ab, 3),
        (ab, u64::MAX),
        (ab, 11),
    ];
    let recalled = MessageRecord {
        recalled: true,
        content: bytes::Bytes::new(),
        recall_event_seq: 11,
        ..msg(ab, 2)
    };
    assert_eq!(
        store.messages_at(&keys).unwrap(),
        vec![
            Some(msg(ac, 6)),
            Some(msg(ab, 3)),
            None,
            None,
            None,
            None,
            Some(recalled),
            Some(msg(ab, 3)),
            None,
            Some(event),
        ],
        "in the order asked, a repeated key answered twice"
    );
    // More keys than one batch: split, and still in order.
    let many: Vec<(ConvId, u64)> = (0..POINT_READS_MAX as u64 * 2 + 3)
        .map(|i| {
            if i % 3 == 0 {
                (ac, i % 8)
            } else {
                (ab, i % 13)
            }
        })
        .collect();
    let one_by_one: Vec<Option<MessageRecord>> = many
        .iter()
        .map(|(c, s)| store.message(*c, *s).unwrap())
        .collect();
    assert_eq!(store.messages_at(&many).unwrap(), one_by_one);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.messages_at(&[(ab, 10), (ac, 7)]).unwrap(),
        vec![Some(msg(ab, 10)), Some(msg(ac, 7))],
        "after reopen"
    );
}

pub(crate) fn messages_before_is_newest_first_and_pages_at_its_edges<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ab, ac) = two_neighbouring_conversations::<A>(dir.path());
    let before = |conv, seq, limit| seqs(&store.messages_before(conv, seq, limit).unwrap());
    assert_eq!(
        before(ab, u64::MAX, 100),
        (1..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        before(ab, u64::MAX, usize::MAX),
        (1..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(before(ab, u64::MAX, 0), Vec::<u64>::new(), "limit 0");
    assert_eq!(before(ab, u64::MAX, 1), vec![10], "limit 1: the newest");
    assert_eq!(before(ab, 11, 3), vec![10, 9, 8]);
    assert_eq!(before(ab, 8, 3), vec![7, 6, 5], "the next page");
    assert_eq!(before(ab, 10, 1), vec![9], "before is exclusive");
    assert_eq!(before(ab, 2, 5), vec![1], "a short last page");
    assert_eq!(before(ab, 1, 5), Vec::<u64>::new(), "before seq 1");
    assert_eq!(before(ab, 0, 5), Vec::<u64>::new(), "before seq 0");
    assert_eq!(before(ac, u64::MAX, 100), vec![7, 6, 2, 1], "only its own");
    assert_eq!(before(ac, 6, 1), vec![2], "across a hole in the seqs");
    assert_eq!(before(direct(BOB, CAROL), u64::MAX, 100), Vec::<u64>::new());
    let page = store.messages_before(ab, 7, 2).unwrap();
    assert_eq!(page, vec![msg(ab, 6), msg(ab, 5)], "whole records");
}

pub(crate) fn last_message_is_the_conversations_head<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    assert_eq!(store.last_message(ab).unwrap(), None);
    assert_eq!(store.conversation(ab).unwrap(), None);
    commit(&store, msgs(ab, [1]));
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 1)));
    commit(&store, msgs(ab, [2, 3, 4]));
    commit(&store, msgs(ac, [1]));
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 4)));
    assert_eq!(
        store.conversation(ab).unwrap(),
        Some(ConvRecord {
            max_seq: 4,
            last_time_ms: msg(ab, 4).server_time_ms,
        })
    );
    assert_eq!(store.last_message(ac).unwrap(), Some(msg(ac, 1)));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 4)));
    assert_eq!(store.last_message(direct(BOB, CAROL)).unwrap(), None);
}

pub(crate) fn seqs_stay_gap_free_across_reopens<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let ab = direct(ALICE, BOB);
    let mut store = A::open(dir.path());
    let mut next = 1;
    for round in 0..3 {
        // What the commit thread does at start-up: continue from the head.
        let head = store.last_message(ab).unwrap().map_or(0, |m| m.seq);
        assert_eq!(head + 1, next, "round {round}: the head after a reopen");
        for _ in 0..4 {
            commit(&store, msgs(ab, next..next + 3));
            next += 3;
        }
        store = reopen::<A>(store, dir.path());
    }
    let all = all_after(&store, ab);
    assert_eq!(seqs(&all), (1..next).collect::<Vec<_>>());
    assert_eq!(all, (1..next).map(|seq| msg(ab, seq)).collect::<Vec<_>>());
}

pub(crate) fn large_empty_and_binary_content_round_trips_exactly<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let every_byte: Vec<u8> = (0..=255).collect();
    let contents: Vec<Vec<u8>> = vec![
        vec![b'x'],
        vec![0],
        Vec::new(),
        every_byte.iter().rev().copied().collect(),
        every_byte.repeat(128), // 32 KiB exactly
        (0..32 * 1024 - 1).map(|i| (i * 7 % 251) as u8).collect(), // just under
        (0..32 * 1024 + 1).map(|i| (i % 3) as u8).collect(), // just over
        vec![0xff; 511],
        vec![0xfe; 512],
        vec![0xfd; 513],
        "日本語 ✓ \u{0}\u{10ffff}".as_bytes().to_vec(),
    ];
    let group = CommitGroup {
        messages: contents
            .iter()
            .zip(1..)
            .map(|(content, seq)| MessageRecord {
                content: content.clone().into(),
                content_type: seq as i32 - 5,
                ..msg(ab, seq)
            })
            .collect(),
        ..CommitGroup::default()
    };
    let expected = group.messages.clone();
    commit(&store, group);
    let check = |store: &A::Store, when: &str| {
        for m in &expected {
            let stored = store.message(ab, m.seq).unwrap().expect("stored");
            assert_eq!(
                stored.content.len(),
                m.content.len(),
                "{when}: seq {}",
                m.seq
            );
            assert_eq!(&stored, m, "{when}: seq {} by seq", m.seq);
        }
        assert_eq!(&all_after(store, ab), &expected, "{when}: messages_after");
        let mut newest_first = store.messages_before(ab, u64::MAX, usize::MAX).unwrap();
        newest_first.reverse();
        assert_eq!(&newest_first, &expected, "{when}: messages_before");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn unicode_client_msg_ids_round_trip<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let ids = ["ünï-😀-ид", "ÜNÏ-😀-ИД", "客户端-1", "a\u{0}b", ""];
    let messages: Vec<_> = ids
        .iter()
        .zip(1..)
        .map(|(id, seq)| MessageRecord {
            client_msg_id: (*id).to_owned(),
            ..msg(ab, seq)
        })
        .collect();
    let sends: Vec<(&str, u64)> = messages
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    commit(
        &store,
        CommitGroup {
            cursor_rows: vec![(ab, ALICE, row(CursorRecord::default(), &[], &sends))],
            messages: messages.clone(),
            ..CommitGroup::default()
        },
    );
    let store = reopen::<A>(store, dir.path());
    let alice = store.cursor_row(ab, ALICE).unwrap().unwrap();
    for m in &messages {
        assert_eq!(store.message(ab, m.seq).unwrap().as_ref(), Some(m));
        assert!(
            alice.maybe_sent(&m.client_msg_id).any(|s| s == m.seq),
            "dedup by {:?}",
            m.client_msg_id
        );
    }
    assert_eq!(alice.maybe_sent("ünï-😀").count(), 0, "no prefix match");
}

pub(crate) fn next_msg_id_starts_at_one_and_is_persisted_by_the_group<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 1, "on an empty store");
    let ab = direct(ALICE, BOB);
    commit(
        &store,
        CommitGroup {
            next_msg_id: Some(42),
            ..msgs(ab, [1])
        },
    );
    assert_eq!(store.next_msg_id().unwrap(), 42);
    commit(&store, msgs(ab, [2]));
    assert_eq!(
        store.next_msg_id().unwrap(),
        42,
        "a group without one keeps it"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 42, "after reopen");
    commit(
        &store,
        CommitGroup {
            next_msg_id: Some(1 << 40),
            ..CommitGroup::default()
        },
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 1 << 40);
}

pub(crate) fn a_recall_marks_the_stored_message_and_keeps_the_event<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    commit(&store, msgs(ab, 1..=2));
    let event = MessageRecord {
        content: bytes::Bytes::new(),
        recall_of_seq: 1,
        ..msg(ab, 3)
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![event.clone()],
            recalls: vec![(ab, 1, 3)],
            ..CommitGroup::default()
        },
    );
    let recalled = MessageRecord {
        recalled: true,
        content: bytes::Bytes::new(),
        recall_event_seq: 3,
        ..msg(ab, 1)
    };
    let expected = vec![recalled.clone(), msg(ab, 2), event.clone()];
    assert_eq!(store.message(ab, 1).unwrap(), Some(recalled.clone()));
    assert_eq!(all_after(&store, ab), expected, "one record per seq");
    let newest_first: Vec<_> = expected.iter().rev().cloned().collect();
    assert_eq!(
        store.messages_before(ab, u64::MAX, 10).unwrap(),
        newest_first
    );
    assert_eq!(store.last_message(ab).unwrap(), Some(event));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(all_after(&store, ab), expected, "after reopen");
    assert_eq!(
        store.message(ab, 1).unwrap(),
        Some(recalled),
        "after reopen"
    );
}

pub(crate) fn a_recall_in_the_group_of_its_original_marks_it<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let event = MessageRecord {
        content: bytes::Bytes::new(),
        recall_of_seq: 1,
        ..msg(ab, 2)
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![msg(ab, 1), event.clone()],
            recalls: vec![(ab, 1, 2)],
            ..CommitGroup::default()
        },
    );
    let recalled = MessageRecord {
        recalled: true,
        content: bytes::Bytes::new(),
        recall_event_seq: 2,
        ..msg(ab, 1)
    };
    assert_eq!(all_after(&store, ab), vec![recalled, event]);
}

pub(crate) fn one_groups_messages_of_many_conversations_read_back_per_conversation<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac, bc) = (direct(ALICE, BOB), direct(ALICE, CAROL), direct(BOB, CAROL));
    // Interleaved as the sequencer takes them, in several groups, so that each conversation's
    // messages are split over several stored runs.
    let mut next = [1u64; 3];
    for group_size in [1usize, 5, 2, 7, 3] {
        let mut group = CommitGroup::default();
        for i in 0..group_size * 3 {
            let (k, conv) = [(0, ab), (1, ac), (2, bc)][i % 3];
            group.messages.push(msg(conv, next[k]));
            next[k] += 1;
        }
        commit(&store, group);
    }
    for (k, conv) in [(0, ab), (1, ac), (2, bc)] {
        let last = next[k] - 1;
        assert_eq!(last, 18);
        let expected: Vec<MessageRecord> = (1..=last).map(|s| msg(conv, s)).collect();
        assert_eq!(all_after(&store, conv), expected, "{conv:?}");
        for after in 0..=last {
            for limit in [1, 2, 4, 100] {
                let page = store.messages_after(conv, after, limit).unwrap();
                let want: Vec<u64> = (after + 1..=last).take(limit).collect();
                assert_eq!(seqs(&page), want, "after {after} limit {limit}");
            }
        }
        for before in 0..=last + 1 {
            let page = store.messages_before(conv, before, 3).unwrap();
            let want: Vec<u64> = (1..before).rev().take(3).collect();
            assert_eq!(seqs(&page), want, "before {before}");
        }
        for seq in 1..=last {
            assert_eq!(store.message(conv, seq).unwrap(), Some(msg(conv, seq)));
        }
        assert_eq!(store.message(conv, last + 1).unwrap(), None);
        assert_eq!(store.last_message(conv).unwrap(), Some(msg(conv, last)));
    }
}

/// Pages holding many recalls (the first and last of a page, neighbours, lone ones between
/// messages kept) are marked exactly, in both directions, at every page edge.
pub(crate) fn a_page_with_many_recalls_marks_each_recalled_message<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    // 40 messages over runs of several sizes.
    for seqs in [1..=1, 2..=9, 10..=10, 11..=27, 28..=40] {
        commit(&store, msgs(ab, seqs));
    }
    let recalled_seqs = [1, 2, 3, 10, 17, 20, 21, 39, 40];
    let mut expected: Vec<MessageRecord> = (1..=40).map(|seq| msg(ab, seq)).collect();
    // The recalls' events at 41.., two groups of them.
    for (chunk, first_event) in [(&recalled_seqs[..4], 41), (&recalled_seqs[4..], 45)] {
        let mut group = CommitGroup::default();
        for (i, &of) in chunk.iter().enumerate() {
            let event = MessageRecord {
                content: bytes::Bytes::new(),
                recall_of_seq: of,
                ..msg(ab, first_event + i as u64)
            };
            group.messages.push(event.clone());
            group.recalls.push((ab, of, event.seq));
            expected.push(event);
            let held = &mut expected[of as usize - 1];
            held.recalled = true;
            held.content = bytes::Bytes::new();
            held.recall_event_seq = first_event + i as u64;
        }
        commit(&store, group);
    }
    let last = expected.len() as u64;
    assert_eq!(last, 49);
    let check = |store: &A::Store, when: &str| {
        assert_eq!(all_after(store, ab), expected, "{when}");
        for limit in [1, 2, 3, 7, 100] {
            for after in 0..=last {
                let want: Vec<_> = expected
                    .iter()
                    .skip(after as usize)
                    .take(limit)
                    .cloned()
                    .collect();
                let page = store.messages_after(ab, after, limit).unwrap();
                assert_eq!(page, want, "{when}: after {after} limit {limit}");
            }
            for before in 1..=last + 1 {
                let want: Vec<_> = expected[..before as usize - 1]
                    .iter()
                    .rev()
                    .take(limit)
                    .cloned()
                    .collect();
                let page = store.messages_before(ab, before, limit).unwrap();
                assert_eq!(page, want, "{when}: before {before} limit {limit}");
            }
        }
        for m in &expected {
            assert_eq!(
                store.message(ab, m.seq).unwrap().as_ref(),
                Some(m),
                "{when}"
            );
        }
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}
