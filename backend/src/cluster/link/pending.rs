//! On the origin node: the forwarded writes waiting for their owner's answer, so that none
//! waits forever. An answer takes its entry; a link that goes down, or the deadline
//! (`cluster.forward_timeout_ms`), answers the rest UNAVAILABLE. Bounded by
//! `cluster.forwards_pending_max`. A write sent with request id 0 wants no answer and is not
//! kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::ConnRef;

/// (origin connection, request id).
pub(crate) type Key = (ConnRef, u64);

#[derive(Debug)]
pub(crate) struct Pending {
    map: Mutex<HashMap<Key, (u16, Instant)>>,
    max: usize,
}

impl Pending {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u16, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `false` when full: the write is refused instead of forwarded.
    pub(crate) fn insert(&self, key: Key, slot: u16, deadline: Instant) -> bool {
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            return false;
        }
        map.insert(key, (slot, deadline));
        true
    }

    /// An answer came: whether someone still waits for it.
    pub(crate) fn take(&self, key: Key) -> bool {
        self.lock().remove(&key).is_some()
    }

    /// Forgets a write that was not sent after all.
    pub(crate) fn forget(&self, key: Key) {
        self.lock().remove(&key);
    }

    /// Takes the entries past their deadline, or (with `slot`) every entry for that peer.
    pub(crate) fn take_where(&self, now: Instant, slot: Option<u16>) -> Vec<Key> {
        let mut out = Vec::new();
        self.lock().retain(|key, (s, deadline)| {
            let gone = match slot {
                Some(slot) => *s == slot,
                None => *deadline <= now,
            };
            if gone {
                out.push(*key);
            }
            !gone
        });
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
        assert!(p.insert((c(1), 1), 1, now + Duration::from_secs(5)));
        assert!(p.insert((c(2), 1), 2, now));
        assert!(!p.insert((c(3), 1), 1, now), "full");
        assert_eq!(p.take_where(now, None), vec![(c(2), 1)]);
        assert!(p.insert((c(3), 1), 1, now + Duration::from_secs(5)));
        let mut failed = p.take_where(now, Some(1));
        failed.sort_by_key(|k| k.0.conn);
        assert_eq!(failed, vec![(c(1), 1), (c(3), 1)]);
        assert!(!p.take((c(1), 1)), "already answered UNAVAILABLE");
        assert_eq!(p.len(), 0);
    }
}
