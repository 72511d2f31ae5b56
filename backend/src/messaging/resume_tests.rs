//! A resume's reads over a fjall store.

use std::sync::Arc;

use super::*;
use crate::config::Durability;
use crate::store::{
    CommitGroup, ConvId, ConversationLog, FjallStore, MessageRecord, RecencyMove, USER_ID_FIRST,
    recency_bucket,
};

const ALICE: UserId = USER_ID_FIRST;
const BOB: UserId = USER_ID_FIRST + 1;
const CAROL: UserId = USER_ID_FIRST + 2;
const NOW: u64 = 1_800_000_000_000;

const BOUNDS: Bounds = Bounds {
    window_ms: 600_000,
    conversations_max: 64,
    page_max: 100,
    bytes_max: 2 << 20,
};

/// Appends `seqs` of the direct conversation of `a` and `b`, all stamped `time`, indexed as
/// the sequencer indexes them.
fn append(
    store: &FjallStore,
    a: UserId,
    b: UserId,
    seqs: std::ops::RangeInclusive<u64>,
    time: u64,
) {
    let conv = ConvId::direct(a, b).unwrap();
    let mut group = CommitGroup::default();
    for seq in seqs {
        group.messages.push(MessageRecord {
            conv_id: conv,
            seq,
            msg_id: conv.to_wire() ^ seq,
            from: b,
            to: a,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: bytes::Bytes::from_static(b"hi"),
            server_time_ms: time,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        });
    }
    for user in [a, b] {
        group.recency.push(RecencyMove {
            user,
            conv,
            from: None,
            to: recency_bucket(time),
        });
    }
    store.append(&group).unwrap();
}

fn resume(since: u64, known: &[(ConvId, u64)]) -> v1::Resume {
    v1::Resume {
        since_server_time_ms: since,
        known: known
            .iter()
            .map(|(c, seq)| v1::ConversationSeq {
                conversation_id: c.to_wire(),
                seq: *seq,
            })
            .collect(),
    }
}

/// A message the device never got (a cluster push lost on the way) and older than `since`
/// is still carried: the known seq says the device is behind, whatever the head's time.
#[test]
fn a_known_conversation_behind_its_head_is_carried_whatever_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    // With Bob: seqs 1-3 stamped 10 s before `since`; the device holds seq 1 only.
    append(&store, ALICE, BOB, 1..=3, since - 10_000);
    // With Carol: quiet and caught up.
    append(&store, ALICE, CAROL, 1..=2, since - 20_000);
    // Bob and Carol's own conversation: not Alice's, named anyway.
    append(&store, BOB, CAROL, 1..=5, since - 5_000);
    let ports = Ports::of(store);
    let bob = ConvId::direct(ALICE, BOB).unwrap();
    let carol = ConvId::direct(ALICE, CAROL).unwrap();
    let strangers = ConvId::direct(BOB, CAROL).unwrap();
    let req = resume(since, &[(bob, 1), (carol, 2), (strangers, 1)]);
    let out = read(&ports, ALICE, &req, NOW, BOUNDS).unwrap();
    assert!(out.done.complete, "{:?}", out.done);
    assert_eq!(out.batches.len(), 1, "{:?}", out.batches);
    let batch = &out.batches[0];
    assert_eq!(batch.conversation_id, bob.to_wire());
    let seqs: Vec<u64> = batch.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3]);
    let listed: Vec<u64> = out
        .done
        .conversations
        .iter()
        .map(|c| c.conversation_id)
        .collect();
    assert_eq!(listed, [bob.to_wire()]);
    assert_eq!(out.done.conversations[0].max_seq, 3);
    assert!(out.done.conversations[0].last_message.is_none());
}

/// Conversations behind count against `resume_conversations_max` like active ones.
#[test]
fn conversations_behind_count_against_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    append(&store, ALICE, BOB, 1..=2, since - 10_000);
    append(&store, ALICE, CAROL, 1..=2, since);
    let ports = Ports::of(store);
    let bob = ConvId::direct(ALICE, BOB).unwrap();
    let bounds = Bounds {
        conversations_max: 1,
        ..BOUNDS
    };
    let out = read(&ports, ALICE, &resume(since, &[(bob, 1)]), NOW, bounds).unwrap();
    assert!(!out.done.complete);
    assert_eq!(
        out.done.reason,
        ResumeIncomplete::TooManyConversations as i32
    );
    // Caught up, it is not counted.
    let out = read(&ports, ALICE, &resume(since, &[(bob, 2)]), NOW, bounds).unwrap();
    assert!(out.done.complete, "{:?}", out.done);
    assert_eq!(out.batches.len(), 1);
}

/// A conversation the device does not name but that was active in the window before `since`
/// is carried from seq 1: its first push may have been lost (cluster mode) with the device
/// online, and the device would never learn of it. One older than the window is not read.
#[test]
fn a_conversation_not_named_but_active_in_the_window_is_carried_from_its_start() {
    const DAVE: UserId = USER_ID_FIRST + 3;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    // With Bob: never heard of (not named), 10 s before `since`.
    append(&store, ALICE, BOB, 1..=3, since - 10_000);
    // With Carol: quiet and caught up.
    append(&store, ALICE, CAROL, 1..=2, since - 20_000);
    // With Dave: not named, and older than the window (and its 2 s margin) before `since`.
    append(
        &store,
        ALICE,
        DAVE,
        1..=4,
        since - SINCE_MARGIN_MS - BOUNDS.window_ms - 1,
    );
    let ports = Ports::of(Arc::clone(&store));
    let bob = ConvId::direct(ALICE, BOB).unwrap();
    let carol = ConvId::direct(ALICE, CAROL).unwrap();
    let out = read(&ports, ALICE, &resume(since, &[(carol, 2)]), NOW, BOUNDS).unwrap();
    assert!(out.done.complete, "{:?}", out.done);
    let carried: Vec<(u64, Vec<u64>)> = out
        .batches
        .iter()
        .map(|b| {
            (
                b.conversation_id,
                b.messages.iter().map(|m| m.seq).collect(),
            )
        })
        .collect();
    assert_eq!(carried, [(bob.to_wire(), vec![1, 2, 3])]);
    let listed: Vec<u64> = out
        .done
        .conversations
        .iter()
        .map(|c| c.conversation_id)
        .collect();
    assert_eq!(listed, [bob.to_wire()]);
    // They count against `resume_conversations_max`.
    let bounds = Bounds {
        conversations_max: 1,
        ..BOUNDS
    };
    append(&store, ALICE, DAVE, 5..=5, since - 5_000);
    let out = read(&ports, ALICE, &resume(since, &[(carol, 2)]), NOW, bounds).unwrap();
    assert_eq!(
        out.done.reason,
        ResumeIncomplete::TooManyConversations as i32,
        "{:?}",
        out.done
    );
}

/// The same for a group the user was added to (its ADDED event's push lost): carried.
#[test]
fn a_group_not_named_but_active_in_the_window_is_carried() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    let ports = Ports::of(store);
    let member = crate::store::UserGroupRecord {
        visible_from_seq: 1,
        left_seq: 0,
        notify_muted: false,
        added: false,
    };
    let g = super::conversations::tests::add_group(&ports, 1, &[since - 10_000], member);
    let out = read(&ports, ALICE, &resume(since, &[]), NOW, BOUNDS).unwrap();
    assert!(out.done.complete, "{:?}", out.done);
    let carried: Vec<(u64, Vec<u64>)> = out
        .batches
        .iter()
        .map(|b| {
            (
                b.conversation_id,
                b.messages.iter().map(|m| m.seq).collect(),
            )
        })
        .collect();
    assert_eq!(carried, [(g, vec![1])]);
}

/// The user's groups are read once per resume, whether the device names some or not (they
/// were read again for the named ones).
#[test]
fn a_resume_reads_the_users_groups_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    let mut ports = Ports::of(store);
    let counting = Arc::new(super::conversations::tests::CountingLog {
        inner: Arc::clone(&ports.log),
        calls: 0.into(),
    });
    ports.log = Arc::clone(&counting) as _;
    let member = crate::store::UserGroupRecord {
        visible_from_seq: 1,
        left_seq: 0,
        notify_muted: false,
        added: false,
    };
    let left = crate::store::UserGroupRecord {
        left_seq: 1,
        ..member
    };
    let mut named = Vec::new();
    for n in 1..=3 {
        let g = super::conversations::tests::add_group(&ports, n, &[NOW - 3_600_000], member);
        named.push((ConvId::from_wire(g).unwrap(), 1));
    }
    let g = super::conversations::tests::add_group(&ports, 4, &[NOW - 3_600_000], left);
    named.push((ConvId::from_wire(g).unwrap(), 1));
    let mut calls = Vec::new();
    for known in [&[][..], &named[..]] {
        let before = counting.calls.load(Relaxed);
        let out = read(&ports, ALICE, &resume(since, known), NOW, BOUNDS).unwrap();
        assert!(out.done.complete && out.batches.is_empty(), "{out:?}");
        calls.push(counting.calls.load(Relaxed) - before);
    }
    assert_eq!(calls[0], calls[1], "log calls naming no group, and four");
}

/// A removal committed between the read of the user's group rows and that of their heads:
/// the resume's entry is the former member's (up to the event it left by, the group as it
/// left it), as its Sync batch is.
#[test]
fn a_removal_committed_between_rows_and_heads_resumes_the_former_members_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let since = NOW - 1_000;
    let mut ports = Ports::of(store);
    let g = super::conversations::tests::group_removing_alice_at_3(&ports, NOW - 10_000);
    super::conversations::tests::RemovedAtHeads::over(&mut ports, g);
    let out = read(&ports, ALICE, &resume(since, &[(g, 2)]), NOW, BOUNDS).unwrap();
    assert!(out.done.complete, "{:?}", out.done);
    let entries: Vec<(u64, u64, u64, &str, u32)> = out
        .done
        .conversations
        .iter()
        .map(|c| {
            (
                c.conversation_id,
                c.max_seq,
                c.unread_count,
                c.group_name.as_str(),
                c.member_count,
            )
        })
        .collect();
    assert_eq!(entries, [(g.to_wire(), 3, 3, "as alice left it", 3)]);
    let carried: Vec<Vec<u64>> = out
        .batches
        .iter()
        .map(|b| b.messages.iter().map(|m| m.seq).collect())
        .collect();
    assert_eq!(carried, [vec![3]]);
}
