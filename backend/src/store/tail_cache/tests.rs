//! The tail cache against the real fjall adapter: equivalence, bounds, visibility, concurrency.
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;

use super::*;
use crate::config::Durability;
use crate::fill::Rng;
use crate::store::{FjallStore, USER_ID_FIRST};

/// The storage ports' conformance suite, on a durable fjall store behind the tail cache:
/// once with room for everything, once with so little that eviction runs all the time.
struct CachedFjall;

impl crate::store::conformance::Adapter for CachedFjall {
    type Store = TailCached<FjallStore>;

    fn try_open(dir: &Path) -> Result<Self::Store, StoreError> {
        let store = FjallStore::open(dir, Durability::Fsync)?;
        Ok(TailCached::new(Arc::new(store), 64 << 20))
    }
}

struct TinyCachedFjall;

impl crate::store::conformance::Adapter for TinyCachedFjall {
    type Store = TailCached<FjallStore>;

    fn try_open(dir: &Path) -> Result<Self::Store, StoreError> {
        let store = FjallStore::open(dir, Durability::Fsync)?;
        Ok(TailCached::new(Arc::new(store), 4 * 1024))
    }
}

mod conformance {
    crate::store::conformance::conformance_suite!(super::CachedFjall);
}

mod conformance_tiny {
    crate::store::conformance::conformance_suite!(super::TinyCachedFjall);
}

fn conv(i: u64) -> ConvId {
    ConvId::direct(USER_ID_FIRST, USER_ID_FIRST + 1 + i).unwrap()
}

fn message(conv: ConvId, seq: u64, msg_id: u64, content: Bytes) -> MessageRecord {
    MessageRecord {
        conv_id: conv,
        seq,
        msg_id,
        from: USER_ID_FIRST,
        to: USER_ID_FIRST + 1,
        client_msg_id: format!("c{msg_id}"),
        content_type: 1,
        content,
        server_time_ms: 1_000 + msg_id,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
        mentions: None,
    }
}

/// What the sequencer writes, at random: messages (some above the store's 512-byte value
/// separation) over `convs` conversations, consecutive per conversation in a group, and
/// recalls of stored or same-group messages with their events.
struct Workload {
    rng: Rng,
    heads: Vec<u64>,
    next_msg_id: u64,
}

impl Workload {
    fn group(&mut self) -> CommitGroup {
        let mut group = CommitGroup::default();
        let convs = self.heads.len() as u64;
        for _ in 0..1 + self.rng.below(12) {
            let i = self.rng.below(convs);
            // Skewed: low conversations are the busy ones.
            let i = i.min(self.rng.below(convs)) as usize;
            let c = conv(i as u64);
            // A conversation's messages must stay consecutive within the group: only add
            // to one that has none in it yet or whose last is its current head.
            let seq = self.heads[i] + 1;
            if group
                .messages
                .iter()
                .any(|m| m.conv_id == c && m.seq + 1 != seq)
            {
                continue;
            }
            let len = match self.rng.below(10) {
                0 => 0,
                1 => 600 + self.rng.below(400) as usize,
                _ => self.rng.below(100) as usize,
            };
            let content: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
            self.next_msg_id += 1;
            if self.heads[i] > 0 && self.rng.below(6) == 0 {
                let of = 1 + self.rng.below(self.heads[i]);
                group.recalls.push((c, of, seq));
                group.messages.push(MessageRecord {
                    recall_of_seq: of,
                    ..message(c, seq, self.next_msg_id, Bytes::new())
                });
            } else {
                group
                    .messages
                    .push(message(c, seq, self.next_msg_id, content.into()));
            }
            self.heads[i] = seq;
        }
        // Reorder conversations (not messages within one) as the sequencer may.
        group.messages.sort_by_key(|m| (m.conv_id, m.seq));
        group
    }
}

/// Reads every way the ports allow, on the cache and on the store under it; they must agree.
/// Returns (hits, reads).
fn compare(cached: &TailCached<FjallStore>, w: &mut Workload) -> (u64, u64) {
    let inner = cached.inner();
    let mut hits = 0;
    let mut reads = 0;
    let all: Vec<ConvId> = (0..w.heads.len() as u64 + 1).map(conv).collect();
    let mut served = |conv: ConvId, f: &dyn Fn(&Tail) -> bool| {
        reads += 1;
        if cached.read().convs.get(&conv).is_some_and(f) {
            hits += 1;
        }
    };
    for (i, &c) in all.iter().enumerate() {
        let head = w.heads.get(i).copied().unwrap_or(0);
        let limits = [0, 1, 2, 3, 10, 130, usize::MAX];
        for _ in 0..4 {
            let limit = limits[w.rng.below(limits.len() as u64) as usize];
            let after = match w.rng.below(4) {
                0 => head.saturating_sub(w.rng.below(5)),
                1 => u64::MAX - w.rng.below(2),
                _ => w.rng.below(head + 3),
            };
            served(c, &|t| t.after(after, limit).is_some());
            assert_eq!(
                cached.messages_after(c, after, limit).unwrap(),
                inner.messages_after(c, after, limit).unwrap(),
                "messages_after({c:?}, {after}, {limit})"
            );
            let before = match w.rng.below(4) {
                0 => u64::MAX,
                1 => head + 1 - w.rng.below(3).min(head),
                _ => w.rng.below(head + 3),
            };
            served(c, &|t| t.before(before, limit).is_some());
            assert_eq!(
                cached.messages_before(c, before, limit).unwrap(),
                inner.messages_before(c, before, limit).unwrap(),
                "messages_before({c:?}, {before}, {limit})"
            );
            let seq = w.rng.below(head + 3);
            served(c, &|t| t.message(seq).is_some());
            assert_eq!(
                cached.message(c, seq).unwrap(),
                inner.message(c, seq).unwrap(),
                "message({c:?}, {seq})"
            );
        }
        served(c, &|t| !t.messages.is_empty());
        assert_eq!(
            cached.last_message(c).unwrap(),
            inner.last_message(c).unwrap(),
            "last_message({c:?})"
        );
        assert_eq!(
            cached.conversation(c).unwrap(),
            inner.conversation(c).unwrap(),
            "conversation({c:?})"
        );
    }
    assert_eq!(
        cached.last_messages(&all).unwrap(),
        inner.last_messages(&all).unwrap(),
        "last_messages"
    );
    (hits, reads)
}

/// Recomputes what the cache holds from its tails: the running counts must match.
fn check_accounting(cached: &TailCached<FjallStore>, budget: usize) {
    let tails = cached.read();
    let bytes: usize = tails.convs.values().map(Tail::bytes).sum();
    let messages: usize = tails.convs.values().map(|t| t.messages.len()).sum();
    assert_eq!(tails.bytes, bytes, "bytes as counted");
    assert_eq!(tails.messages, messages);
    assert!(tails.bytes <= budget, "{} > budget {budget}", tails.bytes);
    assert_eq!(tails.order.len(), tails.convs.len());
    for (conv, tail) in &tails.convs {
        assert!(tails.order.contains(&(tail.stamp, *conv)));
        assert!(!tail.messages.is_empty());
        assert!(tail.messages.len() <= TAIL_MESSAGES_MAX);
        let held: usize = tail.messages.iter().map(|m| message_bytes(m)).sum();
        assert_eq!(tail.message_bytes, held);
    }
}

/// Random appends, recalls and reads through the cache over real fjall, with restarts (a
/// new cache sees conversations from the middle) and budgets from tiny to roomy: every
/// read equals the store's own answer, and the cache holds what it counts, within budget.
#[test]
fn the_cache_answers_every_read_as_the_store_does() {
    for (seed, budget) in [(1, 64 << 20), (2, 20_000), (3, 8_000), (4, 256 << 10)] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Workload {
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ seed),
            heads: vec![0; 8],
            next_msg_id: 0,
        };
        let (mut hits, mut reads) = (0, 0);
        for restart in 0..3 {
            let store = FjallStore::open(dir.path(), Durability::None).unwrap();
            let cached = TailCached::new(Arc::new(store), budget);
            for _ in 0..150 {
                let group = w.group();
                cached.append(&group).unwrap();
                check_accounting(&cached, budget);
                let (h, r) = compare(&cached, &mut w);
                hits += h;
                reads += r;
            }
            let stats = cached.stats();
            eprintln!("seed {seed} budget {budget} restart {restart}: {stats:?}");
        }
        eprintln!("seed {seed} budget {budget}: {hits} of {reads} reads from the cache");
        assert!(hits > reads / 10, "the cache served {hits} of {reads}");
        if budget > 100_000 {
            assert!(hits > reads / 2, "the cache served {hits} of {reads}");
        }
    }
}

#[test]
fn eviction_keeps_the_bound_and_drops_the_least_recently_written_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Durability::None).unwrap();
    let budget = 64 * 1024;
    let cached = TailCached::new(Arc::new(store), budget);
    let content = Bytes::from(vec![7u8; 1000]);
    let mut msg_id = 0;
    // 100 conversations, 10 messages each, written in turn: about 1.3 KiB per message,
    // so the budget holds about 50 messages.
    for round in 1..=10 {
        for i in 0..100 {
            msg_id += 1;
            let group = CommitGroup {
                messages: vec![message(conv(i), round, msg_id, content.clone())],
                ..CommitGroup::default()
            };
            cached.append(&group).unwrap();
            check_accounting(&cached, budget);
        }
    }
    let stats = cached.stats();
    assert!(
        stats.bytes <= budget && stats.bytes > budget / 2,
        "{stats:?}"
    );
    let tails = cached.read();
    // The newest conversations are held (their newest message at least), the oldest not.
    assert!(tails.convs.contains_key(&conv(99)));
    assert!(!tails.convs.contains_key(&conv(0)));
    let oldest_held = tails.convs.keys().map(|c| c.to_wire()).min().unwrap();
    for i in 0..100 {
        assert_eq!(
            tails.convs.contains_key(&conv(i)),
            conv(i).to_wire() >= oldest_held,
            "conversation {i}: evicted in order of last write"
        );
    }
    drop(tails);
    // A conversation written again moves to the back of the order.
    msg_id += 1;
    let again = CommitGroup {
        messages: vec![message(conv(0), 11, msg_id, content.clone())],
        ..CommitGroup::default()
    };
    cached.append(&again).unwrap();
    let oldest_before = cached.read().order.first().map(|(_, c)| *c).unwrap();
    // New conversations: each evicts what was written least recently.
    for i in 100..110 {
        msg_id += 1;
        let group = CommitGroup {
            messages: vec![message(conv(i), 1, msg_id, content.clone())],
            ..CommitGroup::default()
        };
        cached.append(&group).unwrap();
    }
    let tails = cached.read();
    assert!(tails.convs.contains_key(&conv(0)), "rewritten, so kept");
    assert!(
        !tails.convs.contains_key(&oldest_before),
        "oldest, so evicted"
    );
    drop(tails);
    // A message larger than the whole budget is never held.
    let huge = CommitGroup {
        messages: vec![message(conv(200), 1, msg_id + 1, vec![1u8; 100_000].into())],
        ..CommitGroup::default()
    };
    cached.append(&huge).unwrap();
    check_accounting(&cached, budget);
    assert_eq!(
        cached.messages_after(conv(200), 0, 10).unwrap().len(),
        1,
        "read from the store"
    );
}

/// The store under the cache, with a gate in `append`: the test decides when (and whether)
/// the inner write returns.
struct Gated {
    store: FjallStore,
    /// Each append waits for one of these: `true` writes, `false` fails without writing.
    go: std::sync::Mutex<mpsc::Receiver<bool>>,
    entered: std::sync::Mutex<mpsc::Sender<()>>,
}

impl ConversationLog for Gated {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.entered.lock().unwrap().send(()).unwrap();
        if self.go.lock().unwrap().recv().unwrap() {
            self.store.append(group)
        } else {
            Err(StoreError::WritesStopped("the test said so".into()))
        }
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
        self.store.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.store.messages_before(conv, before_seq, limit)
    }
}

#[test]
fn nothing_is_visible_before_the_store_returned_and_a_failed_append_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (go_tx, go_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let gated = Gated {
        store: FjallStore::open(dir.path(), Durability::None).unwrap(),
        go: std::sync::Mutex::new(go_rx),
        entered: std::sync::Mutex::new(entered_tx),
    };
    let cached = Arc::new(TailCached::new(Arc::new(gated), 1 << 20));
    let c = conv(0);
    let group = |seqs: std::ops::RangeInclusive<u64>| CommitGroup {
        messages: seqs
            .map(|s| message(c, s, s, Bytes::from_static(b"hi")))
            .collect(),
        ..CommitGroup::default()
    };
    let append = |g: CommitGroup| {
        let cached = Arc::clone(&cached);
        std::thread::spawn(move || cached.append(&g))
    };
    let writer = append(group(1..=3));
    entered_rx.recv().unwrap();
    assert_eq!(cached.messages_after(c, 0, 10).unwrap(), vec![]);
    assert_eq!(cached.last_message(c).unwrap(), None);
    go_tx.send(true).unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(cached.messages_after(c, 0, 10).unwrap().len(), 3);
    assert!(cached.read().convs.contains_key(&c), "held once durable");

    // The next write is in flight: readers still see the durable state only.
    let writer = append(group(4..=5));
    entered_rx.recv().unwrap();
    assert_eq!(cached.last_message(c).unwrap().map(|m| m.seq), Some(3));
    assert_eq!(cached.messages_after(c, 3, 10).unwrap(), vec![]);
    go_tx.send(false).unwrap();
    assert!(writer.join().unwrap().is_err());
    assert!(
        !cached.read().convs.contains_key(&c),
        "a failed append drops the tail"
    );
    assert_eq!(cached.last_message(c).unwrap().map(|m| m.seq), Some(3));
    assert_eq!(cached.messages_after(c, 0, 10).unwrap().len(), 3);
}

#[test]
fn readers_on_many_threads_agree_with_the_store_while_groups_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Durability::None).unwrap();
    let cached = Arc::new(TailCached::new(Arc::new(store), 1 << 20));
    let c = conv(0);
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cached, committed, done) = (
                Arc::clone(&cached),
                Arc::clone(&committed),
                Arc::clone(&done),
            );
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering;
                while !done.load(Ordering::Acquire) {
                    let floor = committed.load(Ordering::Acquire);
                    let after = floor.saturating_sub(5);
                    let got = cached.messages_after(c, after, usize::MAX).unwrap();
                    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
                    let want: Vec<u64> = (after + 1..=after + seqs.len() as u64).collect();
                    assert_eq!(seqs, want, "consecutive from after");
                    assert!(
                        after + seqs.len() as u64 >= floor,
                        "a returned append is seen"
                    );
                    for m in &got {
                        assert_eq!(m.content, format!("m{}", m.seq).as_bytes());
                    }
                }
            })
        })
        .collect();
    for seq in 1..=2_000 {
        let group = CommitGroup {
            messages: vec![message(c, seq, seq, format!("m{seq}").into_bytes().into())],
            ..CommitGroup::default()
        };
        cached.append(&group).unwrap();
        committed.store(seq, std::sync::atomic::Ordering::Release);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
}

/// A group message with `groups.mentions_max` (up to 1,000) mentions holds 8 KB of user ids:
/// the cache counts them, so they cannot carry it past its budget.
#[test]
fn mentions_are_counted_and_kept_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Durability::None).unwrap();
    let budget = 64 * 1024;
    let cached = TailCached::new(Arc::new(store), budget);
    let mentioned = |seq: u64, msg_id: u64| MessageRecord {
        mentions: Some(Box::new(crate::store::Mentions {
            user_ids: (0..1000).map(|i| USER_ID_FIRST + i).collect(),
            all: false,
        })),
        ..message(
            ConvId::group(1).unwrap(),
            seq,
            msg_id,
            Bytes::from_static(b"hi"),
        )
    };
    let group = CommitGroup {
        messages: vec![mentioned(1, 1)],
        ..CommitGroup::default()
    };
    let before = cached.stats().bytes;
    cached.append(&group).unwrap();
    check_accounting(&cached, budget);
    let grown = cached.stats().bytes - before;
    assert!(
        grown >= 8_000,
        "a message with 1,000 mentions counted as {grown} bytes"
    );
    // 100 such messages (800 KB of mentions) in a 64 KiB budget: eviction keeps the bound.
    for seq in 2..=100 {
        let group = CommitGroup {
            messages: vec![mentioned(seq, seq)],
            ..CommitGroup::default()
        };
        cached.append(&group).unwrap();
        check_accounting(&cached, budget);
    }
    // The tail was dropped whole; the store still answers.
    assert!(cached.stats().bytes <= budget);
    let page = cached
        .messages_after(ConvId::group(1).unwrap(), 95, 10)
        .unwrap();
    assert_eq!(page.len(), 5);
    assert_eq!(page[0].mentions.as_ref().unwrap().user_ids.len(), 1000);
}
