//! When each device was last seen: its token's `last_seen_ms`, moved at login and at disconnect.
//! Logins and disconnects come in storms, so the times are gathered here and written in one
//! batch every few seconds, never one write per login.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{TokenHash, TokenRecord};

/// Devices whose time waits for the next write, at most; past it a time is dropped (the device
/// shows an older last-seen time), never the login.
const SEEN_PENDING_MAX: usize = 65_536;
/// How often the gathered times are written.
pub(crate) const SEEN_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct SeenBuffer {
    pending: Mutex<HashMap<TokenHash, u64>>,
}

impl SeenBuffer {
    pub fn record(&self, token: TokenHash, now_ms: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= SEEN_PENDING_MAX && !pending.contains_key(&token) {
            metrics::counter!("ringchat_device_seen_dropped_total").increment(1);
            return;
        }
        let t = pending.entry(token).or_insert(now_ms);
        *t = (*t).max(now_ms);
    }

    /// A time not written yet, if any.
    pub fn pending(&self, token: &TokenHash) -> Option<u64> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .copied()
    }

    /// When a device that is not online now was last seen: its stored time, or one waiting
    /// for the next write. The one rule for ListDevices, the admin view and which device a
    /// new login pushes out.
    pub fn last_seen_ms(&self, hash: &TokenHash, stored: &TokenRecord) -> u64 {
        let stored_ms = stored.last_seen_ms.max(stored.issued_at_ms);
        stored_ms.max(self.pending(hash).unwrap_or(0))
    }

    pub fn take(&self) -> Vec<(TokenHash, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_time_per_token_until_taken() {
        let s = SeenBuffer::default();
        s.record([1; 32], 10);
        s.record([1; 32], 5);
        s.record([2; 32], 7);
        assert_eq!(s.pending(&[1; 32]), Some(10));
        let mut all = s.take();
        all.sort();
        assert_eq!(all, vec![([1; 32], 10), ([2; 32], 7)]);
        assert!(s.take().is_empty());
    }
}
