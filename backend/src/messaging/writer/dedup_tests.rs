//! The dedup window's cost under chosen collisions, through the real `Writer` over a real fjall
//! store whose log counts the message reads the sequencer asks of it: a sender whose
//! `client_msg_id`s all share one window hash costs a bounded read per send, and its real
//! resends are still answered with the original ack, also after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::{Outcome, RowPolicy, Writer};
use crate::config::Durability;
use crate::contacts::ContactsConfig;
use crate::groups::GroupsConfig;
use crate::store::{
    AccountStore, CommitGroup, ConvId, ConvRecord, ConversationLog, DEDUP_CANDIDATES_MAX,
    FjallStore, MessageRecord, Ports, StoreError, UserId, client_msg_id_hash,
};

const WINDOW: usize = 64;

/// The real fjall log, counting the messages read back by seq.
struct CountingLog {
    inner: Arc<FjallStore>,
    /// `message` calls.
    singles: AtomicUsize,
    /// `messages_at` calls, and the keys they asked for.
    batches: AtomicUsize,
    batched_keys: AtomicUsize,
}

impl CountingLog {
    /// (`message` calls, `messages_at` calls, keys) since the last take.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.singles.swap(0, Ordering::Relaxed),
            self.batches.swap(0, Ordering::Relaxed),
            self.batched_keys.swap(0, Ordering::Relaxed),
        )
    }
}

impl ConversationLog for CountingLog {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.inner.append(group)
    }
    fn next_msg_id(&self) -> Result<u64, StoreError> {
        self.inner.next_msg_id()
    }
    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.last_message(conv)
    }
    fn last_messages(&self, convs: &[ConvId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        self.inner.last_messages(convs)
    }
    fn conversation(&self, conv: ConvId) -> Result<Option<ConvRecord>, StoreError> {
        self.inner.conversation(conv)
    }
    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.singles.fetch_add(1, Ordering::Relaxed);
        self.inner.message(conv, seq)
    }
    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_keys.fetch_add(keys.len(), Ordering::Relaxed);
        self.inner.messages_at(keys)
    }
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.messages_before(conv, before_seq, limit)
    }
}

/// A writer over `store` whose log reads are counted by the returned log.
fn writer(store: &Arc<FjallStore>) -> (Writer, Arc<CountingLog>) {
    let log = Arc::new(CountingLog {
        inner: Arc::clone(store),
        singles: AtomicUsize::new(0),
        batches: AtomicUsize::new(0),
        batched_keys: AtomicUsize::new(0),
    });
    let ports = Ports {
        log: Arc::clone(&log) as _,
        ..Ports::of(Arc::clone(store))
    };
    let policy = RowPolicy {
        dedup_window: WINDOW,
        device_cursor_ttl_ms: u64::MAX,
    };
    let writer = Writer::new(
        &ports,
        120_000,
        64,
        policy,
        ContactsConfig::default().limits(),
        GroupsConfig::default(),
    )
    .expect("writer");
    (writer, log)
}

/// Commits one send in a group of its own: its seq, and whether it was a resend.
fn send(w: &mut Writer, from: UserId, to: UserId, id: &str) -> (u64, bool) {
    let op = super::super::ownership::tests::send(from, to, id);
    let done = w.commit(&mut vec![op]);
    match &done.outcomes[..] {
        [Outcome::Sent { message, .. }] => (done.messages[*message].seq, false),
        [Outcome::Duplicate { original, .. }] => (original.seq, true),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// `n` distinct ids with one window hash (what an attacker finds offline in milliseconds).
fn colliding_ids(n: usize) -> Vec<String> {
    let target = client_msg_id_hash("x0");
    (0u64..)
        .map(|i| format!("x{i}"))
        .filter(|id| client_msg_id_hash(id) == target)
        .take(n)
        .collect()
}

/// Asserts the reads of one send: no read by seq, at most one batch of the capped candidates.
fn assert_bounded(log: &CountingLog, what: &str) {
    let (singles, batches, keys) = log.take();
    assert_eq!(singles, 0, "{what}: one message read per candidate");
    assert!(batches <= 1, "{what}: {batches} batched reads");
    assert!(
        keys <= DEDUP_CANDIDATES_MAX,
        "{what}: {keys} candidates read"
    );
}

#[test]
fn colliding_client_msg_ids_cost_a_bounded_read_and_resends_still_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).expect("store"));
    let a = store.create_user("a", "x", "", 1).expect("a").user_id;
    let b = store.create_user("b", "x", "", 1).expect("b").user_id;
    let ids = colliding_ids(WINDOW + 1);
    let (mut w, log) = writer(&store);

    // A full window of sends that all match each other's hash.
    let mut seqs = Vec::new();
    for id in &ids[..WINDOW] {
        let (seq, resent) = send(&mut w, a, b, id);
        assert!(!resent, "{id} is new");
        seqs.push(seq);
    }
    log.take();

    // Another colliding id: a new message, for a bounded read.
    let (new_seq, resent) = send(&mut w, a, b, &ids[WINDOW]);
    assert!(!resent);
    assert_eq!(new_seq, seqs[WINDOW - 1] + 1);
    assert_bounded(&log, "a new colliding send");

    // A real resend of a recent send: the original's ack, for a bounded read.
    let recent = &ids[WINDOW - 1];
    assert_eq!(send(&mut w, a, b, recent), (seqs[WINDOW - 1], true));
    assert_bounded(&log, "a resend");
    // An unrelated id costs no read at all.
    let (_, resent) = send(&mut w, a, b, "unrelated");
    assert!(!resent);
    assert_eq!(log.take(), (0, 0, 0));
    drop(w);

    // After a restart the stored window still dedups the real resend.
    let (mut w, log) = writer(&store);
    assert_eq!(send(&mut w, a, b, recent), (seqs[WINDOW - 1], true));
    assert_eq!(send(&mut w, a, b, &ids[WINDOW]), (new_seq, true));
    let (singles, batches, keys) = log.take();
    assert_eq!(singles, 0);
    assert!(
        batches <= 2 && keys <= 2 * DEDUP_CANDIDATES_MAX,
        "{batches} {keys}"
    );
}
