//! On the origin node: the forwarded writes waiting for their owner's answer, so that none
//! waits forever. An answer takes its entry; a link that goes down, or the deadline
//! (`cluster.forward_timeout_ms`), answers the rest UNAVAILABLE. Bounded by
//! `cluster.forwards_pending_max`. A write sent with request id 0 wants no answer and is not
//! kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::ConnRef;
use crate::observe::otlp::MsgSpan;

/// (origin connection, request id).
pub(crate) type Key = (ConnRef, u64);

/// A waiting write: its peer's slot, its deadline, and its span when traced (ended when the
/// entry goes).
type Entry = (u16, Instant, Option<MsgSpan>);

#[derive(Debug)]
pub(crate) struct Pending {
    map: Mutex<HashMap<Key, Entry>>,
    max: usize,
}

impl Pending {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `false` when full: the write is refused instead of forwarded.
    pub(crate) fn insert(
        &self,
        key: Key,
        slot: u16,
        deadline: Instant,
        span: Option<MsgSpan>,
    ) -> bool {
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            return false;
        }
        map.insert(key, (slot, deadline, span));
        true
    }

    /// An answer came: `None` if nobody waits for it any more, else the write's span (to end
    /// once the answer is handed on).
    pub(crate) fn take(&self, key: Key) -> Option<Option<MsgSpan>> {
        self.lock().remove(&key).map(|(_, _, span)| span)
    }

    /// Forgets a write that was not sent after all.
    pub(crate) fn forget(&self, key: Key) {
        self.lock().remove(&key);
    }

    /// Takes the entries past their deadline, or (with `slot`) every entry for that peer.
    pub(crate) fn take_where(&self, now: Instant, slot: Option<u16>) -> Vec<Key> {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        self.lock().retain(|key, (s, deadline, span)| {
            let gone = match slot {
                Some(slot) => *s == slot,
                None => *deadline <= now,
            };
            if gone {
                out.push(*key);
                if let Some(mut span) = span.take() {
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
        // Ended here, outside the lock.
        drop(spans);
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_answered_once_and_expired_or_failed_by_peer() {
        let p = Pending::new(2);
        let now = Instant::now();
        let c = |conn| ConnRef { shard: 0, conn };
        assert!(p.insert((c(1), 1), 1, now + Duration::from_secs(5), None));
        assert!(p.insert((c(2), 1), 2, now, None));
        assert!(!p.insert((c(3), 1), 1, now, None), "full");
        assert_eq!(p.take_where(now, None), vec![(c(2), 1)]);
        assert!(p.insert((c(3), 1), 1, now + Duration::from_secs(5), None));
        let mut failed = p.take_where(now, Some(1));
        failed.sort_by_key(|k| k.0.conn);
        assert_eq!(failed, vec![(c(1), 1), (c(3), 1)]);
        assert!(p.take((c(1), 1)).is_none(), "already answered UNAVAILABLE");
        assert_eq!(p.len(), 0);
    }
}
