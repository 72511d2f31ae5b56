//! Sync, History and a single message's read, when a member's removal commits between the
//! look at its membership and the read of the messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::config::Durability;
use crate::store::{
    CommitGroup, ConversationLog, FjallStore, MessageRecord, StoreError, USER_ID_FIRST,
    UserGroupRecord,
};

const BOB: UserId = USER_ID_FIRST;
const ADMIN: UserId = USER_ID_FIRST + 1;
/// Bob's removal event.
const REMOVED_AT: u64 = 3;

/// The store's log, which commits Bob's removal (his row's `left_seq`) right before the first
/// read of messages: what a removal committed between the two reads looks like.
struct RemovedDuringRead {
    store: Arc<FjallStore>,
    g: ConvId,
    /// Bob's row once the removal (and maybe a return) committed.
    after: UserGroupRecord,
    removed: AtomicBool,
}

impl RemovedDuringRead {
    fn remove_once(&self) -> Result<(), StoreError> {
        if self.removed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut group = CommitGroup::default();
        group
            .groups
            .user_groups
            .push((BOB, self.g, Some(self.after)));
        self.store.append(&group)
    }
}

impl ConversationLog for RemovedDuringRead {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.store.append(group)
    }
    fn next_msg_id(&self) -> Result<u64, StoreError> {
        self.store.next_msg_id()
    }
    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        self.store.last_message(conv)
    }
    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.remove_once()?;
        self.store.message(conv, seq)
    }
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.remove_once()?;
        self.store.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.remove_once()?;
        self.store.messages_before(conv, before_seq, limit)
    }
}

/// Bob removed at [`REMOVED_AT`].
const REMOVED: UserGroupRecord = UserGroupRecord {
    visible_from_seq: 1,
    left_seq: REMOVED_AT,
    notify_muted: false,
    added: false,
};

/// A group holding 5 messages, Bob a member until the first read of messages, then `after`.
fn group_with_bob(after: UserGroupRecord) -> (tempfile::TempDir, Ports, ConvId) {
    let (dir, store, g) = store_with_bob();
    let mut ports = Ports::of(Arc::clone(&store));
    ports.log = Arc::new(RemovedDuringRead {
        store,
        g,
        after,
        removed: AtomicBool::new(false),
    });
    (dir, ports, g)
}

/// A group holding 5 messages, Bob a member.
fn store_with_bob() -> (tempfile::TempDir, Arc<FjallStore>, ConvId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let g = ConvId::group(1).unwrap();
    let mut group = CommitGroup::default();
    for seq in 1..=5 {
        group.messages.push(MessageRecord {
            conv_id: g,
            seq,
            msg_id: seq,
            from: ADMIN,
            to: 0,
            client_msg_id: format!("m{seq}"),
            content_type: 1,
            content: bytes::Bytes::from_static(b"hi"),
            server_time_ms: 1_000 + seq,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        });
    }
    let member = UserGroupRecord {
        visible_from_seq: 1,
        left_seq: 0,
        notify_muted: false,
        added: false,
    };
    group.groups.user_groups.push((BOB, g, Some(member)));
    store.append(&group).unwrap();
    (dir, store, g)
}

fn seqs(messages: &[v1::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

#[test]
fn sync_shows_nothing_past_a_removal_committed_during_the_read() {
    let (_dir, ports, g) = group_with_bob(REMOVED);
    let req = v1::Sync {
        conversation_id: g.to_wire(),
        after_seq: 0,
        limit: 0,
    };
    let batch = sync(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!(seqs(&batch.messages), [1, 2, 3]);
}

#[test]
fn history_shows_nothing_past_a_removal_committed_during_the_read() {
    let (_dir, ports, g) = group_with_bob(REMOVED);
    let req = v1::History {
        conversation_id: g.to_wire(),
        before_seq: 0,
        limit: 0,
    };
    let batch = history(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!(seqs(&batch.messages), [3, 2, 1], "newest first");
}

#[test]
fn a_message_past_a_removal_committed_during_the_read_is_not_visible() {
    let (_dir, ports, g) = group_with_bob(REMOVED);
    assert!(visible_message(&ports, BOB, g, 5).unwrap().is_none());
    assert!(visible_message(&ports, BOB, g, 2).unwrap().is_some());
}

/// Removed at 3 and back at 5 (history hidden): seq 4 was never Bob's, and the return's row
/// is what Bob sees from.
#[test]
fn a_removal_and_return_during_the_read_show_only_the_return_s_range() {
    let back = UserGroupRecord {
        visible_from_seq: 5,
        left_seq: 0,
        notify_muted: false,
        added: false,
    };
    let (_dir, ports, g) = group_with_bob(back);
    let req = v1::Sync {
        conversation_id: g.to_wire(),
        after_seq: 0,
        limit: 0,
    };
    assert_eq!(
        seqs(&sync(&ports, BOB, &req, 100, u64::MAX).unwrap().messages),
        [5]
    );
    let (_dir, ports, g) = group_with_bob(back);
    assert!(visible_message(&ports, BOB, g, 4).unwrap().is_none());
    assert!(visible_message(&ports, BOB, g, 5).unwrap().is_some());
}

/// The store's log, counting the pages Sync and History read.
struct CountingLog {
    store: Arc<FjallStore>,
    pages: std::sync::atomic::AtomicUsize,
}

impl ConversationLog for CountingLog {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.store.append(group)
    }
    fn next_msg_id(&self) -> Result<u64, StoreError> {
        self.store.next_msg_id()
    }
    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        self.store.last_message(conv)
    }
    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.store.message(conv, seq)
    }
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.store.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.store.messages_before(conv, before_seq, limit)
    }
}

/// A group of 5 messages where Bob's row is `row`, read through a counting log.
fn counted(row: UserGroupRecord) -> (tempfile::TempDir, Ports, Arc<CountingLog>, ConvId) {
    let (dir, store, g) = store_with_bob();
    let mut group = CommitGroup::default();
    group.groups.user_groups.push((BOB, g, Some(row)));
    store.append(&group).unwrap();
    let log = Arc::new(CountingLog {
        store: Arc::clone(&store),
        pages: Default::default(),
    });
    let mut ports = Ports::of(store);
    ports.log = Arc::clone(&log) as _;
    (dir, ports, log, g)
}

/// A former member synced to its leaving, or asking for history from before joining, can see
/// nothing: answered without reading a page (each would load up to `sync_page_max` + 1
/// messages only to filter them all out).
#[test]
fn reads_that_can_see_nothing_read_no_page() {
    let (_dir, ports, log, g) = counted(REMOVED);
    for after_seq in [REMOVED_AT, REMOVED_AT + 1, 1_000] {
        let req = v1::Sync {
            conversation_id: g.to_wire(),
            after_seq,
            limit: 0,
        };
        let batch = sync(&ports, BOB, &req, 100, u64::MAX).unwrap();
        assert!(
            batch.messages.is_empty() && !batch.has_more,
            "after {after_seq}"
        );
    }
    assert_eq!(log.pages.load(Ordering::Relaxed), 0, "Sync read no page");
    // What it may see is still served, with the cursor semantics unchanged.
    let req = v1::Sync {
        conversation_id: g.to_wire(),
        after_seq: 1,
        limit: 1,
    };
    let batch = sync(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!((seqs(&batch.messages), batch.has_more), (vec![2], true));
    let req = v1::Sync { limit: 0, ..req };
    let batch = sync(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!((seqs(&batch.messages), batch.has_more), (vec![2, 3], false));

    // Joined at 4 with history hidden: nothing before 4.
    let joined = UserGroupRecord {
        visible_from_seq: 4,
        left_seq: 0,
        notify_muted: false,
        added: false,
    };
    let (_dir, ports, log, g) = counted(joined);
    for before_seq in [1, 4] {
        let req = v1::History {
            conversation_id: g.to_wire(),
            before_seq,
            limit: 0,
        };
        let batch = history(&ports, BOB, &req, 100, u64::MAX).unwrap();
        assert!(
            batch.messages.is_empty() && !batch.has_more,
            "before {before_seq}"
        );
    }
    assert_eq!(log.pages.load(Ordering::Relaxed), 0, "History read no page");
    let req = v1::History {
        conversation_id: g.to_wire(),
        before_seq: 0,
        limit: 1,
    };
    let batch = history(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!((seqs(&batch.messages), batch.has_more), (vec![5], true));
    let req = v1::History {
        before_seq: 5,
        ..req
    };
    let batch = history(&ports, BOB, &req, 100, u64::MAX).unwrap();
    assert_eq!((seqs(&batch.messages), batch.has_more), (vec![4], false));
}

/// A page stops before the message that would take it past `bytes_max`, and always holds one.
#[test]
fn a_page_is_cut_to_its_byte_bound_but_never_empty() {
    let msg = |seq| v1::Message {
        seq,
        content: vec![b'x'; 1_000].into(),
        ..Default::default()
    };
    let one = {
        let len = msg(1).encoded_len();
        (1 + prost::length_delimiter_len(len) + len) as u64
    };
    let page = |n| (1..=n).map(msg).collect::<Vec<_>>();
    let mut m = page(5);
    assert!(!cut_to_bytes(&mut m, 5 * one));
    assert_eq!(m.len(), 5);
    let mut m = page(5);
    assert!(cut_to_bytes(&mut m, 3 * one + one / 2));
    assert_eq!(seqs(&m), [1, 2, 3]);
    let mut m = page(5);
    assert!(cut_to_bytes(&mut m, 1));
    assert_eq!(seqs(&m), [1], "one message whatever its size");
    let mut m = Vec::new();
    assert!(!cut_to_bytes(&mut m, 1));
}
