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
//! **Bound.** Every held message is counted as its content, `client_msg_id` and mentions bytes
//! plus a fixed overhead for the record, its `Arc`, the deque slot and the shared `Bytes` header; every
//! tail as its map, order and deque bookkeeping. After each append the least recently appended
//! conversations are dropped whole until the total is within the budget.
//!
//! **Locking.** One `RwLock`: the sequencer's thread takes it for writing before the inner
//! append (to mark the group's tails as being written: readers then go to the store, whose
//! published state is never older than what they may have read elsewhere) and after it (no
//! store I/O under it); readers take it for reading only to clone `Arc`s of the messages they
//! return, and copy the records after releasing it.

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

/// Bytes counted for a group message's mentions: the box, its user ids (the held copy is a
/// clone, so its capacity is its length) and the allocator's header of each of the two blocks.
/// Without it, 1,000 mentions (`groups.mentions_max` allows that) would hold ~8 KB on a ~300
/// byte charge.
fn mentions_bytes(m: &MessageRecord) -> usize {
    m.mentions.as_ref().map_or(0, |b| {
        std::mem::size_of::<super::Mentions>()
            + 16
            + b.user_ids.len() * std::mem::size_of::<UserId>()
            + if b.user_ids.is_empty() { 0 } else { 16 }
    })
}

/// The one count of a held message's bytes (see the module's **Bound**).
fn message_bytes(m: &MessageRecord) -> usize {
    m.content.len() + m.client_msg_id.len() + mentions_bytes(m) + MESSAGE_OVERHEAD_BYTES
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
    /// An append to the conversation is under way: the tail may be older than the store.
    writing: bool,
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
                    writing: false,
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
        for conv in group
            .messages
            .iter()
            .map(|m| m.conv_id)
            .chain(group.recalls.iter().map(|r| r.0))
        {
            if let Some(tail) = self.convs.get_mut(&conv) {
                tail.writing = false;
            }
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
        let found = self
            .read()
            .convs
            .get(&conv)
            .filter(|t| !t.writing)
            .and_then(f);
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
        if !group.messages.is_empty() || !group.recalls.is_empty() {
            let mut tails = self.write();
            let convs = group.messages.iter().map(|m| m.conv_id);
            for conv in convs.chain(group.recalls.iter().map(|r| r.0)) {
                if let Some(tail) = tails.convs.get_mut(&conv) {
                    tail.writing = true;
                }
            }
        }
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
                .map(|c| {
                    let tail = tails.convs.get(c).filter(|t| !t.writing);
                    tail.and_then(|t| t.messages.back().cloned())
                })
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

    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        // `Some(found)`: answered by a tail (`found` may be `None`); `None`: ask the store.
        let held: Vec<Option<Option<Arc<MessageRecord>>>> = {
            let tails = self.read();
            keys.iter()
                .map(|(c, seq)| {
                    let tail = tails.convs.get(c).filter(|t| !t.writing);
                    tail.and_then(|t| t.message(*seq))
                })
                .collect()
        };
        let missed: Vec<(ConvId, u64)> = keys
            .iter()
            .zip(&held)
            .filter(|(_, h)| h.is_none())
            .map(|(k, _)| *k)
            .collect();
        self.count((keys.len() - missed.len()) as u64, missed.len() as u64);
        let mut read = if missed.is_empty() {
            Vec::new()
        } else {
            self.inner.messages_at(&missed)?
        }
        .into_iter();
        Ok(held
            .into_iter()
            .map(|h| match h {
                Some(found) => found.map(|m| MessageRecord::clone(&m)),
                None => read.next().flatten(),
            })
            .collect())
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
    fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, StoreError> {
        self.inner.user_id_by_email(email)
    }
    fn tokens_of_user(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        self.inner.tokens_of_user(user_id, limit)
    }
    fn replace_tokens(
        &self,
        user_id: UserId,
        revoke: &[TokenHash],
        put: Option<(&TokenHash, &TokenRecord)>,
        held: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        self.inner.replace_tokens(user_id, revoke, put, held)
    }
    fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        put: Option<(&TokenHash, &TokenRecord)>,
        current: Option<&str>,
    ) -> Result<Option<usize>, StoreError> {
        self.inner
            .set_password(user_id, password_hash, put, current)
    }
    fn rehash_password(
        &self,
        user_id: UserId,
        current: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        self.inner.rehash_password(user_id, current, password_hash)
    }
    fn touch_tokens(&self, seen: &[(TokenHash, u64)]) -> Result<(), StoreError> {
        self.inner.touch_tokens(seen)
    }
    fn user_ids_after(&self, after: UserId, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.inner.user_ids_after(after, limit)
    }
    fn user_count(&self) -> Result<u64, StoreError> {
        self.inner.user_count()
    }
}

impl<S: crate::store::PushTokenStore> crate::store::PushTokenStore for TailCached<S> {
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &crate::store::PushTokenRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_push_token(user, device_id, token)
    }
    fn remove_push_token(&self, user: UserId, device_id: &str) -> Result<bool, StoreError> {
        self.inner.remove_push_token(user, device_id)
    }
    fn remove_push_token_if(
        &self,
        user: UserId,
        device_id: &str,
        expected: &crate::store::PushTokenRecord,
    ) -> Result<bool, StoreError> {
        self.inner.remove_push_token_if(user, device_id, expected)
    }
    fn push_tokens(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<(String, crate::store::PushTokenRecord)>, StoreError> {
        self.inner.push_tokens(user, limit)
    }
}

impl<S: crate::store::OwnerStore> crate::store::OwnerStore for TailCached<S> {
    fn owner(&self, conv: ConvId) -> Result<Option<crate::store::OwnerRecord>, StoreError> {
        self.inner.owner(conv)
    }
    fn claim(
        &self,
        conv: ConvId,
        node: u64,
        seen_epoch: u64,
    ) -> Result<crate::store::Claim, StoreError> {
        self.inner.claim(conv, node, seen_epoch)
    }
    fn owners(
        &self,
        convs: &[ConvId],
    ) -> Result<Vec<Option<crate::store::OwnerRecord>>, StoreError> {
        self.inner.owners(convs)
    }
    fn claim_many(
        &self,
        node: u64,
        claims: &[(ConvId, u64)],
    ) -> Result<Vec<crate::store::Claim>, StoreError> {
        self.inner.claim_many(node, claims)
    }
    fn lease_ids(
        &self,
        kind: crate::store::IdKind,
        count: u64,
    ) -> Result<std::ops::Range<u64>, StoreError> {
        self.inner.lease_ids(kind, count)
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
        buckets: std::ops::RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError> {
        self.inner.recent_conversations(user, buckets, limit)
    }
}

/// The audit log is not cached: it is written in batches and read a page at a time.
impl<S: crate::store::AuditStore> crate::store::AuditStore for TailCached<S> {
    fn append_audit(
        &self,
        first_id: u64,
        records: &[crate::store::AuditRecord],
    ) -> Result<(), StoreError> {
        self.inner.append_audit(first_id, records)
    }
    fn last_audit_id(&self) -> Result<u64, StoreError> {
        self.inner.last_audit_id()
    }
    fn audit_page(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::store::AuditRecord)>, StoreError> {
        self.inner.audit_page(before, limit)
    }
    fn prune_audit(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.inner.prune_audit(before_ms, limit)
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

mod account_admin;
mod contacts;
mod groups;
#[cfg(test)]
mod tests;
