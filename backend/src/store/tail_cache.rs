//! The tail cache: a [`ConversationLog`] decorator over any adapter that keeps the newest
//! messages of the conversations appended to most recently, so that Sync (and the newest page
//! of History, and conversation heads) of an active conversation is served without a store read.
//!
//! **What it holds.** Only what [`ConversationLog::append`] wrote, after the inner store
//! returned `Ok` (so nothing is visible before it is durable): per conversation, its newest
//! messages ([`TAIL_MESSAGES_MAX`] at most) with the group's recalls applied (a recalled message
//! is held recalled, its content dropped). Reads never fill it: a read that misses goes to the
//! inner store and leaves the cache as it was, so no read can race an append into the cache.
//!
//! **Why a hit equals the inner store's answer.** Under the sequencer's contract (a
//! conversation's seqs only grow: each group's messages of a conversation come after its stored
//! head; a conversation's first seq is 1), a conversation's tail holds *every* stored message
//! with a seq at or above its oldest held one (`front`), and its newest held message is the
//! conversation's head. A tail whose conversation started while cached (first seq 1, nothing
//! dropped from the front since) is `complete`: it holds the whole conversation. So:
//! - `messages_after(after, limit)` is answered when `after + 1 >= front` (or complete);
//! - `messages_before(before, limit)` when the tail holds `limit` messages below `before`
//!   (or complete);
//! - `message(seq)` when `seq >= front` (or complete), including "none" for a hole;
//! - `last_message` whenever the conversation has a tail.
//!
//! Anything else falls through to the inner store. A failed append drops the tails of the
//! group's conversations (the store's state for them is then whatever the store says).
//!
//! **How far a hit may lag.** The cache takes a group after the store published it, so for the
//! moment between the two (no I/O, microseconds) a read that misses sees the group in the store
//! while a read that hits does not yet. Nothing of that group has been acknowledged or pushed
//! then (the sequencer sends acks after `append` returns), and a client asking again after what
//! it was given is still answered correctly. Closing the gap by sending reads of in-flight
//! conversations to the store would miss the cache for exactly the busiest conversations for a
//! whole fsync per group.
//!
//! **Bound.** Every held message is counted as its content and `client_msg_id` bytes plus a
//! fixed overhead for the record, its `Arc`, the deque slot and the shared `Bytes` header; every
//! tail as its map, order and deque bookkeeping. After each append the least recently appended
//! conversations are dropped whole until the total is within the budget.
//!
//! **Locking.** One `RwLock`: the sequencer's thread takes it for writing after the inner
//! append returned (no store I/O under it); readers take it for reading only to clone `Arc`s of
//! the messages they return, and copy the records after releasing it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;
use metrics::{Counter, Gauge};

use super::ports::{AccountStore, ConversationLog, CursorStore, MembershipStore, StoreEngine};
use super::{
    CommitGroup, ConvId, ConvRecord, CursorRow, MessageRecord, StoreError, StoreHealth, TokenHash,
    TokenRecord, UserId, UserRecord,
};

/// Newest messages held per conversation, at most: a client that is up to this many messages
/// behind syncs from memory.
pub const TAIL_MESSAGES_MAX: usize = 128;

/// Bytes counted per held message besides its content and `client_msg_id`: the record, the
/// `Arc`'s counts, the deque slot, the header a shared `Bytes` allocates once cloned, and the
/// allocator's own header and rounding (about 16 bytes) for each of the message's four heap
/// blocks (the `Arc`, the content, its shared header, the `client_msg_id`). `examples/tail_sync`
/// compares the count with the process's RSS growth (docs/BENCHMARKS.md).
pub const MESSAGE_OVERHEAD_BYTES: usize = std::mem::size_of::<MessageRecord>()
    + 2 * std::mem::size_of::<usize>()
    + std::mem::size_of::<Arc<MessageRecord>>()
    + 32
    + 4 * 16;
/// Bytes counted per conversation besides its messages: the tail, its key and slot in the map
/// (with the map's control byte, twice for the map's spare capacity) and its entry in the
/// eviction order (twice, for the B-tree's half-full nodes).
pub const TAIL_OVERHEAD_BYTES: usize = 2
    * (std::mem::size_of::<Tail>() + std::mem::size_of::<ConvId>() + 1)
    + 2 * std::mem::size_of::<(u64, ConvId)>();

fn message_bytes(m: &MessageRecord) -> usize {
    m.content.len() + m.client_msg_id.len() + MESSAGE_OVERHEAD_BYTES
}

/// One conversation's newest messages.
#[derive(Debug)]
pub struct Tail {
    /// Ascending by seq; every stored message with seq >= the front's is here.
    messages: VecDeque<Arc<MessageRecord>>,
    /// No stored message is older than the front: the tail is the whole conversation.
    complete: bool,
    /// When it was last appended to (the cache's append counter).
    stamp: u64,
    /// Its messages' bytes (see [`message_bytes`]).
    message_bytes: usize,
}

impl Tail {
    fn bytes(&self) -> usize {
        TAIL_OVERHEAD_BYTES
            + self.message_bytes
            // Spare slots of the deque (the held ones are in MESSAGE_OVERHEAD_BYTES).
            + (self.messages.capacity() - self.messages.len())
                * std::mem::size_of::<Arc<MessageRecord>>()
    }

    fn front_seq(&self) -> Option<u64> {
        self.messages.front().map(|m| m.seq)
    }

    /// Index of the first held message with seq >= `seq`.
    fn index_of(&self, seq: u64) -> usize {
        self.messages.partition_point(|m| m.seq < seq)
    }

    fn after(&self, after_seq: u64, limit: usize) -> Option<Vec<Arc<MessageRecord>>> {
        let Some(first) = after_seq.checked_add(1) else {
            return Some(Vec::new());
        };
        if !(self.complete || first >= self.front_seq()?) {
            return None;
        }
        let start = self.index_of(first);
        Some(self.messages.range(start..).take(limit).cloned().collect())
    }

    fn before(&self, before_seq: u64, limit: usize) -> Option<Vec<Arc<MessageRecord>>> {
        let end = self.index_of(before_seq);
        if !(self.complete || end >= limit) {
            return None;
        }
        Some(
            self.messages
                .range(..end)
                .rev()
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    fn message(&self, seq: u64) -> Option<Option<Arc<MessageRecord>>> {
        if !(self.complete || seq >= self.front_seq()?) {
            return None;
        }
        let i = self.index_of(seq);
        Some(self.messages.get(i).filter(|m| m.seq == seq).cloned())
    }
}

/// What the cache holds, under its lock.
#[derive(Debug, Default)]
struct Tails {
    convs: HashMap<ConvId, Tail, RandomState>,
    /// (last append, conversation), oldest first: the eviction order.
    order: BTreeSet<(u64, ConvId)>,
    /// Appends so far.
    stamp: u64,
    /// Bytes held, counted as [`Tail::bytes`].
    bytes: usize,
    messages: usize,
}

impl Tails {
    fn remove(&mut self, conv: ConvId) -> bool {
        let Some(tail) = self.convs.remove(&conv) else {
            return false;
        };
        self.order.remove(&(tail.stamp, conv));
        self.bytes -= tail.bytes();
        self.messages -= tail.messages.len();
        true
    }

    /// Records a durable group. Returns how many conversations were evicted to stay within
    /// `budget`.
    fn apply(&mut self, group: &CommitGroup, budget: usize) -> u64 {
        self.stamp += 1;
        let stamp = self.stamp;
        for m in &group.messages {
            let conv = m.conv_id;
            let extends = self
                .convs
                .get(&conv)
                .and_then(|t| t.messages.back())
                .is_some_and(|last| last.seq < m.seq);
            if !extends {
                // A new tail: its first message is the oldest held. (A seq at or below the held
                // head would break the sequencer's contract; the old tail is dropped.)
                self.remove(conv);
                let tail = Tail {
                    messages: VecDeque::new(),
                    complete: m.seq == 1,
                    stamp,
                    message_bytes: 0,
                };
                self.bytes += tail.bytes();
                self.order.insert((stamp, conv));
                self.convs.insert(conv, tail);
            }
            let Some(tail) = self.convs.get_mut(&conv) else {
                continue;
            };
            let before = tail.bytes();
            if tail.stamp != stamp {
                self.order.remove(&(tail.stamp, conv));
                self.order.insert((stamp, conv));
                tail.stamp = stamp;
            }
            tail.message_bytes += message_bytes(m);
            tail.messages.push_back(Arc::new(m.clone()));
            self.messages += 1;
            if tail.messages.len() > TAIL_MESSAGES_MAX
                && let Some(dropped) = tail.messages.pop_front()
            {
                tail.message_bytes -= message_bytes(&dropped);
                tail.complete = false;
                self.messages -= 1;
            }
            self.bytes = self.bytes + tail.bytes() - before;
        }
        for &(conv, seq, event_seq) in &group.recalls {
            let Some(tail) = self.convs.get_mut(&conv) else {
                continue;
            };
            let i = tail.index_of(seq);
            let Some(held) = tail.messages.get_mut(i).filter(|m| m.seq == seq) else {
                continue;
            };
            let recalled = MessageRecord {
                recalled: true,
                content: bytes::Bytes::new(),
                recall_event_seq: event_seq,
                ..MessageRecord::clone(held)
            };
            tail.message_bytes =
                tail.message_bytes + message_bytes(&recalled) - message_bytes(held);
            self.bytes = self.bytes + message_bytes(&recalled) - message_bytes(held);
            *held = Arc::new(recalled);
        }
        let mut evicted = 0;
        while self.bytes > budget {
            let Some(&(_, conv)) = self.order.first() else {
                break;
            };
            self.remove(conv);
            evicted += 1;
        }
        evicted
    }
}

/// The cache's metrics, registered once (the recorder is installed before the store opens).
/// Reads count hits and misses in the cache's own atomics; the sequencer's thread publishes
/// them with the other figures after each append, so reads touch no metrics registry.
struct Metrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    bytes: Gauge,
    conversations: Gauge,
    messages: Gauge,
}

impl Metrics {
    fn new(budget: usize) -> Self {
        metrics::gauge!("ringchat_tail_cache_budget_bytes").set(budget as f64);
        Self {
            hits: metrics::counter!("ringchat_tail_cache_hits_total"),
            misses: metrics::counter!("ringchat_tail_cache_misses_total"),
            evictions: metrics::counter!("ringchat_tail_cache_evictions_total"),
            bytes: metrics::gauge!("ringchat_tail_cache_bytes"),
            conversations: metrics::gauge!("ringchat_tail_cache_conversations"),
            messages: metrics::gauge!("ringchat_tail_cache_messages"),
        }
    }
}

/// What the cache holds now (for tests and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailStats {
    pub bytes: usize,
    pub conversations: usize,
    pub messages: usize,
    /// Reads answered from the cache, and reads passed to the inner store, so far.
    pub hits: u64,
    pub misses: u64,
}

/// A store whose conversation log keeps the tails of recently appended conversations in
/// memory; every other port goes straight to the inner store.
pub struct TailCached<S> {
    inner: Arc<S>,
    budget: usize,
    tails: RwLock<Tails>,
    hits: AtomicU64,
    misses: AtomicU64,
    metrics: Metrics,
}

impl<S: ConversationLog> TailCached<S> {
    /// Caches at most `budget` bytes (counted as the module says) over `inner`.
    pub fn new(inner: Arc<S>, budget: usize) -> Self {
        Self {
            inner,
            budget,
            tails: RwLock::new(Tails::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics: Metrics::new(budget),
        }
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    pub fn stats(&self) -> TailStats {
        let tails = self.read();
        TailStats {
            bytes: tails.bytes,
            conversations: tails.convs.len(),
            messages: tails.messages,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn count(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tails> {
        // A panic under the lock leaves the tails consistent or too small (never claiming
        // more than they hold): each change is complete before the next starts.
        self.tails.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tails> {
        self.tails.write().unwrap_or_else(|p| p.into_inner())
    }

    /// `f` of the conversation's tail, if it has one and `f` can answer from it.
    fn lookup<T>(&self, conv: ConvId, f: impl FnOnce(&Tail) -> Option<T>) -> Option<T> {
        let found = self.read().convs.get(&conv).and_then(f);
        match found {
            Some(_) => self.count(1, 0),
            None => self.count(0, 1),
        }
        found
    }
}

fn owned(held: Vec<Arc<MessageRecord>>) -> Vec<MessageRecord> {
    held.iter().map(|m| MessageRecord::clone(m)).collect()
}

impl<S: ConversationLog> ConversationLog for TailCached<S> {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        if let Err(e) = self.inner.append(group) {
            let mut tails = self.write();
            for m in &group.messages {
                tails.remove(m.conv_id);
            }
            for (conv, _, _) in &group.recalls {
                tails.remove(*conv);
            }
            return Err(e);
        }
        if group.messages.is_empty() && group.recalls.is_empty() {
            return Ok(());
        }
        let (evicted, stats) = {
            let mut tails = self.write();
            let evicted = tails.apply(group, self.budget);
            (evicted, (tails.bytes, tails.convs.len(), tails.messages))
        };
        self.metrics.evictions.increment(evicted);
        self.metrics
            .hits
            .absolute(self.hits.load(Ordering::Relaxed));
        self.metrics
            .misses
            .absolute(self.misses.load(Ordering::Relaxed));
        self.metrics.bytes.set(stats.0 as f64);
        self.metrics.conversations.set(stats.1 as f64);
        self.metrics.messages.set(stats.2 as f64);
        Ok(())
    }

    fn next_msg_id(&self) -> Result<u64, StoreError> {
        self.inner.next_msg_id()
    }

    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        match self.lookup(conv, |t| t.messages.back().cloned()) {
            Some(last) => Ok(Some(MessageRecord::clone(&last))),
            None => self.inner.last_message(conv),
        }
    }

    fn last_messages(&self, convs: &[ConvId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        let held: Vec<Option<Arc<MessageRecord>>> = {
            let tails = self.read();
            convs
                .iter()
                .map(|c| tails.convs.get(c).and_then(|t| t.messages.back().cloned()))
                .collect()
        };
        let missed: Vec<ConvId> = convs
            .iter()
            .zip(&held)
            .filter(|(_, h)| h.is_none())
            .map(|(c, _)| *c)
            .collect();
        self.count((convs.len() - missed.len()) as u64, missed.len() as u64);
        let mut read = if missed.is_empty() {
            Vec::new()
        } else {
            self.inner.last_messages(&missed)?
        }
        .into_iter();
        Ok(held
            .into_iter()
            .map(|h| match h {
                Some(m) => Some(MessageRecord::clone(&m)),
                None => read.next().flatten(),
            })
            .collect())
    }

    fn conversation(&self, conv: ConvId) -> Result<Option<ConvRecord>, StoreError> {
        match self.lookup(conv, |t| t.messages.back().cloned()) {
            Some(m) => Ok(Some(ConvRecord {
                max_seq: m.seq,
                last_time_ms: m.server_time_ms,
            })),
            None => self.inner.conversation(conv),
        }
    }

    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        match self.lookup(conv, |t| t.message(seq)) {
            Some(found) => Ok(found.map(|m| MessageRecord::clone(&m))),
            None => self.inner.message(conv, seq),
        }
    }

    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        match self.lookup(conv, |t| t.after(after_seq, limit)) {
            Some(held) => Ok(owned(held)),
            None => self.inner.messages_after(conv, after_seq, limit),
        }
    }

    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        match self.lookup(conv, |t| t.before(before_seq, limit)) {
            Some(held) => Ok(owned(held)),
            None => self.inner.messages_before(conv, before_seq, limit),
        }
    }
}

// ---- every other port: straight to the inner store --------------------------------------------

impl<S: AccountStore> AccountStore for TailCached<S> {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        self.inner
            .create_user(username, password_hash, email, now_ms)
    }
    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.inner.user_by_id(user_id)
    }
    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        self.inner.user_id_by_name(username)
    }
    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError> {
        self.inner.put_token(hash, token)
    }
    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token(hash)
    }
    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.inner.remove_token(hash)
    }
}

impl<S: CursorStore> CursorStore for TailCached<S> {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError> {
        self.inner.cursor_row(conv, user)
    }
    fn cursor_rows(&self, keys: &[(ConvId, UserId)]) -> Result<Vec<Option<CursorRow>>, StoreError> {
        self.inner.cursor_rows(keys)
    }
}

impl<S: MembershipStore> MembershipStore for TailCached<S> {
    fn recent_conversations(
        &self,
        user: UserId,
        from_bucket: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError> {
        self.inner.recent_conversations(user, from_bucket, limit)
    }
}

impl<S: StoreEngine> StoreEngine for TailCached<S> {
    fn health(&self) -> Arc<StoreHealth> {
        self.inner.health()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
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
}
