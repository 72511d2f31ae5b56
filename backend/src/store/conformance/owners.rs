//! Conformance: conversation ownership and the fence on commit groups (cluster mode).

use super::*;
use crate::store::{Claim, OwnerRecord, OwnerStore, StaleFence};

pub(crate) fn a_conversation_is_claimed_by_one_node_at_a_time_and_survives_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let conv = direct(ALICE, BOB);
    let other = direct(ALICE, CAROL);
    assert_eq!(store.owner(conv).unwrap(), None);
    assert_eq!(store.claim(conv, 7, 0).unwrap(), Claim::Won(1));
    let first = OwnerRecord { epoch: 1, node: 7 };
    // A claim that saw no owner, or a stale epoch, loses and is told the owner.
    assert_eq!(store.claim(conv, 8, 0).unwrap(), Claim::Lost(first));
    assert_eq!(store.claim(conv, 8, 5).unwrap(), Claim::Lost(first));
    assert_eq!(store.claim(conv, 8, 1).unwrap(), Claim::Won(2));
    // Claiming one conversation leaves the others alone.
    assert_eq!(store.owner(other).unwrap(), None);
    assert!(matches!(store.claim(other, 9, 3).unwrap(), Claim::Lost(_)));
    assert_eq!(store.owner(other).unwrap(), None);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.owner(conv).unwrap(),
        Some(OwnerRecord { epoch: 2, node: 8 })
    );
}

pub(crate) fn of_claims_that_saw_the_same_epoch_exactly_one_wins<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let conv = direct(ALICE, BOB);
    let claims: Vec<_> = (1..=4u64)
        .map(|node| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.claim(conv, node, 0).unwrap())
        })
        .collect();
    let results: Vec<Claim> = claims.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<_> = results
        .iter()
        .filter(|c| matches!(c, Claim::Won(1)))
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let owner = store.owner(conv).unwrap().unwrap();
    assert_eq!(owner.epoch, 1);
    for lost in results.iter().filter(|c| matches!(c, Claim::Lost(_))) {
        assert_eq!(*lost, Claim::Lost(owner));
    }
}

pub(crate) fn a_group_fenced_by_a_stale_epoch_writes_nothing<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let conv = direct(ALICE, BOB);
    let other = direct(ALICE, CAROL);
    assert_eq!(store.claim(conv, 1, 0).unwrap(), Claim::Won(1));
    let mut first = msgs(conv, 1..=2);
    first.next_msg_id = Some(3);
    first.fences = vec![(conv, 1)];
    commit(&store, first);
    // Node 2 takes over; node 1's next group, fenced by epoch 1, must leave no trace, even of
    // the conversation it did not fence.
    assert_eq!(store.claim(conv, 2, 1).unwrap(), Claim::Won(2));
    let mut stale = msgs(conv, 3..=3);
    stale.messages.extend(msgs(other, 1..=1).messages);
    stale.cursor_rows = vec![(conv, BOB, row(CursorRecord::default(), &[("d", 3)], &[]))];
    stale.next_msg_id = Some(9);
    stale.fences = vec![(conv, 1)];
    match store.append(&stale) {
        Err(StoreError::Fenced { stale }) => assert_eq!(
            stale,
            [StaleFence {
                conv: conv.to_wire(),
                fenced: 1,
                stored: 2
            }]
        ),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(seqs(&all_after(&store, conv)), [1, 2]);
    assert!(all_after(&store, other).is_empty());
    assert_eq!(store.cursor_row(conv, BOB).unwrap(), None);
    assert_eq!(store.next_msg_id().unwrap(), 3);
    // The new owner's group, fenced by the current epoch, is written; the store still takes
    // writes after a refused group.
    let mut current = msgs(conv, 3..=3);
    current.next_msg_id = Some(4);
    current.fences = vec![(conv, 2)];
    commit(&store, current);
    assert_eq!(seqs(&all_after(&store, conv)), [1, 2, 3]);
    // A fence on a conversation nobody claimed names epoch 0.
    let mut unclaimed = msgs(other, 1..=1);
    unclaimed.fences = vec![(other, 0)];
    commit(&store, unclaimed);
    assert_eq!(seqs(&all_after(&store, other)), [1]);
}

pub(crate) fn every_stale_fence_among_many_is_reported_and_nothing_written<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    // A big group's worth of fences: node 1 holds 1,000 conversations, node 2 takes three.
    let convs: Vec<ConvId> = (1..=1_000).map(|n| direct(ALICE, ALICE + n)).collect();
    let claims: Vec<(ConvId, u64)> = convs.iter().map(|c| (*c, 0)).collect();
    let won = store.claim_many(1, &claims).unwrap();
    assert!(won.iter().all(|c| *c == Claim::Won(1)), "{won:?}");
    let taken = [convs[0], convs[499], convs[999]];
    for conv in taken {
        assert_eq!(store.claim(conv, 2, 1).unwrap(), Claim::Won(2));
    }
    // One more conversation fenced at 0 (unclaimed when node 1 looked) that node 2 claimed.
    let late = direct(BOB, CAROL);
    assert_eq!(store.claim(late, 2, 0).unwrap(), Claim::Won(1));
    let mut group = msgs(convs[1], 1..=1);
    group.fences = convs.iter().map(|c| (*c, 1)).collect();
    group.fences.push((late, 0));
    let mut stale = match store.append(&group) {
        Err(StoreError::Fenced { stale }) => stale,
        other => panic!("expected Fenced, got {other:?}"),
    };
    stale.sort_unstable_by_key(|s| s.conv);
    let mut expected: Vec<StaleFence> = taken
        .iter()
        .map(|c| StaleFence {
            conv: c.to_wire(),
            fenced: 1,
            stored: 2,
        })
        .chain([StaleFence {
            conv: late.to_wire(),
            fenced: 0,
            stored: 1,
        }])
        .collect();
    expected.sort_unstable_by_key(|s| s.conv);
    assert_eq!(stale, expected);
    assert!(all_after(&store, convs[1]).is_empty());
    // Without the stale fences the same group is written.
    group
        .fences
        .retain(|(c, _)| *c != late && !taken.contains(c));
    commit(&store, group);
    assert_eq!(seqs(&all_after(&store, convs[1])), [1]);
}

pub(crate) fn many_claims_are_answered_in_order_each_atomic<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac, bc) = (direct(ALICE, BOB), direct(ALICE, CAROL), direct(BOB, CAROL));
    assert_eq!(store.claim(ac, 5, 0).unwrap(), Claim::Won(1));
    let answers = store.claim_many(7, &[(ab, 0), (ac, 1), (bc, 3)]).unwrap();
    assert_eq!(
        answers,
        [
            Claim::Won(1),
            Claim::Won(2),
            Claim::Lost(OwnerRecord { epoch: 0, node: 0 })
        ]
    );
    assert_eq!(
        store.owners(&[bc, ab, ac]).unwrap(),
        [
            None,
            Some(OwnerRecord { epoch: 1, node: 7 }),
            Some(OwnerRecord { epoch: 2, node: 7 })
        ]
    );
    // A stale epoch loses and names the owner; the others of the batch still win.
    let answers = store.claim_many(8, &[(ab, 0), (bc, 0)]).unwrap();
    assert_eq!(
        answers,
        [
            Claim::Lost(OwnerRecord { epoch: 1, node: 7 }),
            Claim::Won(1)
        ]
    );
    assert!(store.claim_many(8, &[]).unwrap().is_empty());
}

pub(crate) fn concurrent_id_leases_get_disjoint_ranges_past_the_counter<A: Adapter>() {
    use crate::store::{GroupStore, IdKind};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let first = store.lease_ids(IdKind::Message, 10).unwrap();
    assert_eq!(first, 1..11, "counters start at 1");
    assert_eq!(store.next_msg_id().unwrap(), 11);
    let leases: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| store.lease_ids(IdKind::Group, 3).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ranges: Vec<_> = leases.into_iter().flat_map(|t| t.join().unwrap()).collect();
    ranges.sort_by_key(|r| r.start);
    assert_eq!(ranges.len(), 20);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "{ranges:?}");
    }
    assert_eq!(ranges[0].start, 1);
    assert_eq!(store.next_group_id().unwrap(), 61);
    // Leases are durable: a reopened store (a restarted node) leases after them.
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the lease threads are done")
    };
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.lease_ids(IdKind::Message, 1).unwrap(), 11..12);
}
