//! On the origin node: the forwarded writes waiting for their owner's answer, so that none
//! waits forever. An answer takes its entry; a link that goes down, or the deadline
//! (`cluster.forward_timeout_ms`), answers the rest UNAVAILABLE. Bounded by
//! `cluster.forwards_pending_max`. A write sent with request id 0 wants no answer and is not
//! kept.
//!
//! Entries are keyed by a forward id this process hands out (`ids.rs`: a random 64-bit
//! start, then +1), not by (connection, client request id): a client may reuse a request id once it was
//! answered, so an owner's late answer to a write answered UNAVAILABLE here must not reach a
//! later request with the same id. The forward id goes out as the `Forward`'s request id and
//! comes back as the `Answer`'s, so owners need no change (older nodes echo it too).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::RequestIds;
use crate::api::ConnRef;
use crate::observe::otlp::MsgSpan;

/// Who waits: the origin connection and the request id its client sent.
pub(crate) type Key = (ConnRef, u64);

/// A waiting write: who waits, its peer's slot, its deadline, and its span when traced (ended
/// when the entry goes).
#[derive(Debug)]
struct Entry {
    key: Key,
    slot: u16,
    deadline: Instant,
    span: Option<MsgSpan>,
}

/// Kept per origin shard (the shard of the connection that waits): a shard's forwards and
/// their answers lock only its own map, and the sweeper holds one shard's map at a time.
#[derive(Debug)]
pub(crate) struct Pending {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    /// Entries in all maps; at most `max` (`cluster.forwards_pending_max`).
    len: AtomicUsize,
    max: usize,
    /// The forward ids to hand out.
    ids: RequestIds,
}

impl Pending {
    /// `shards`: this node's gateway shards; `ids`: this process's forward ids (random start,
    /// so that an answer meant for an earlier process of this node matches nothing here).
    pub(crate) fn new(shards: usize, max: usize, ids: RequestIds) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            len: AtomicUsize::new(0),
            max,
            ids,
        }
    }

    /// The map of the shard `conn` is on; `None` for a shard this node does not have (an
    /// answer naming one matches nothing).
    fn map_of(&self, conn: ConnRef) -> Option<MutexGuard<'_, HashMap<u64, Entry>>> {
        let map = self.shards.get(usize::from(conn.shard))?;
        Some(map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A forward id not handed out before by this process (never 0: request id 0 means "no
    /// answer wanted").
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.next()
    }

    /// `false` when full: the write is refused instead of forwarded. `id` is fresh
    /// (`next_id`).
    pub(crate) fn insert(
        &self,
        id: u64,
        key: Key,
        slot: u16,
        deadline: Instant,
        span: Option<MsgSpan>,
    ) -> bool {
        let Some(mut map) = self.map_of(key.0) else {
            return false;
        };
        if self.len.fetch_add(1, Relaxed) >= self.max {
            self.len.fetch_sub(1, Relaxed);
            return false;
        }
        let entry = Entry {
            key,
            slot,
            deadline,
            span,
        };
        if map.insert(id, entry).is_some() {
            // Not a fresh id after all: the entry replaced is not counted twice.
            self.len.fetch_sub(1, Relaxed);
        }
        true
    }

    /// An answer to forward `id` came for connection `conn`: `None` if nobody waits for it any
    /// more (answered UNAVAILABLE already, or not a forward of this connection), else the
    /// client's request id and the write's span (to end once the answer is handed on).
    pub(crate) fn take(&self, id: u64, conn: ConnRef) -> Option<(u64, Option<MsgSpan>)> {
        let mut map = self.map_of(conn)?;
        if map.get(&id)?.key.0 != conn {
            return None;
        }
        let entry = map.remove(&id)?;
        self.len.fetch_sub(1, Relaxed);
        Some((entry.key.1, entry.span))
    }

    /// Forgets a write of `conn` that was not sent after all.
    pub(crate) fn forget(&self, id: u64, conn: ConnRef) {
        if let Some(mut map) = self.map_of(conn)
            && map.remove(&id).is_some()
        {
            self.len.fetch_sub(1, Relaxed);
        }
    }

    /// Takes the entries past their deadline, or (with `slot`) every entry for that peer.
    pub(crate) fn take_where(&self, now: Instant, slot: Option<u16>) -> Vec<Key> {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        for map in &self.shards {
            let before = out.len();
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, e| {
                    let gone = match slot {
                        Some(slot) => e.slot == slot,
                        None => e.deadline <= now,
                    };
                    if gone {
                        out.push(e.key);
                        if let Some(mut span) = e.span.take() {
                            span.fail(if slot.is_some() {
                                "the link to the owner went down"
                            } else {
                                "the owner did not answer in time"
                            });
                            spans.push(span);
                        }
                    }
                    !gone
                });
            self.len.fetch_sub(out.len() - before, Relaxed);
        }
        // Ended here, outside the locks.
        drop(spans);
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_answered_once_and_expired_or_failed_by_peer() {
        let p = Pending::new(1, 2, RequestIds::starting_at(10));
        let now = Instant::now();
        let c = |conn| ConnRef { shard: 0, conn };
        assert!(p.insert(1, (c(1), 1), 1, now + Duration::from_secs(5), None));
        assert!(p.insert(2, (c(2), 1), 2, now, None));
        assert!(!p.insert(3, (c(3), 1), 1, now, None), "full");
        assert_eq!(p.take_where(now, None), vec![(c(2), 1)]);
        assert!(p.insert(3, (c(3), 1), 1, now + Duration::from_secs(5), None));
        let mut failed = p.take_where(now, Some(1));
        failed.sort_by_key(|k| k.0.conn);
        assert_eq!(failed, vec![(c(1), 1), (c(3), 1)]);
        assert!(p.take(1, c(1)).is_none(), "already answered UNAVAILABLE");
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn an_answer_takes_only_its_own_forward() {
        let p = Pending::new(1, 4, RequestIds::starting_at(u64::MAX));
        let c = |conn| ConnRef { shard: 0, conn };
        let (a, b) = (p.next_id(), p.next_id());
        assert_eq!((a, b), (u64::MAX, 1), "0 is never handed out");
        let later = Instant::now() + Duration::from_secs(5);
        assert!(p.insert(a, (c(1), 7), 1, later, None));
        assert!(p.take(a, c(2)).is_none(), "another connection's forward");
        assert_eq!(p.take(a, c(1)).map(|(r, _)| r), Some(7));
        assert!(p.take(a, c(1)).is_none(), "answered once");
    }

    #[test]
    fn kept_per_shard_under_one_bound() {
        let p = Pending::new(2, 2, RequestIds::starting_at(1));
        let later = Instant::now() + Duration::from_secs(5);
        let on = |shard, conn| ConnRef { shard, conn };
        assert!(p.insert(1, (on(0, 1), 7), 1, later, None));
        assert!(p.insert(2, (on(1, 1), 8), 1, later, None));
        assert!(
            !p.insert(3, (on(0, 2), 9), 1, later, None),
            "the bound counts every shard"
        );
        assert!(
            !p.insert(4, (on(2, 1), 9), 1, later, None),
            "no such shard here"
        );
        assert!(
            p.take(1, on(1, 1)).is_none(),
            "the same connection number on another shard"
        );
        assert!(
            p.take(1, on(2, 1)).is_none(),
            "an answer naming a shard this node lacks"
        );
        p.forget(2, on(0, 1));
        assert_eq!(p.len(), 2, "forgetting another shard's id takes nothing");
        assert_eq!(p.take(2, on(1, 1)).map(|(r, _)| r), Some(8));
        assert_eq!(p.len(), 1);
        assert!(p.insert(3, (on(1, 2), 9), 2, Instant::now(), None));
        assert_eq!(p.take_where(Instant::now(), None), vec![(on(1, 2), 9)]);
        assert_eq!(p.take_where(Instant::now(), Some(1)), vec![(on(0, 1), 7)]);
        assert_eq!(p.len(), 0);
    }
}
