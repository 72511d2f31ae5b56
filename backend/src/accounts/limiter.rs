//! "At most N per window per key", for requests a stranger can make (e-mail codes per address
//! and per client address). Fixed windows per key; the table is bounded, and when it is full of
//! live keys a new key is refused (failing closed) rather than letting the table grow.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Window {
    started_ms: u64,
    count: u32,
}

pub(crate) struct WindowLimiter<K> {
    max: u32,
    window_ms: u64,
    entries_max: usize,
    entries: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq> WindowLimiter<K> {
    pub fn new(max: u32, window_ms: u64, entries_max: usize) -> Self {
        assert!(max >= 1 && window_ms >= 1 && entries_max >= 1);
        Self {
            max,
            window_ms,
            entries_max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one use of `key` at `now_ms`, or says how long to wait (in ms) when the key's
    /// window is used up (or the table is full of live keys).
    pub fn take(&self, key: K, now_ms: u64) -> Result<(), u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let window_ms = self.window_ms;
        if entries.len() >= self.entries_max && !entries.contains_key(&key) {
            entries.retain(|_, w| now_ms.saturating_sub(w.started_ms) < window_ms);
            if entries.len() >= self.entries_max {
                let oldest = entries
                    .values()
                    .map(|w| w.started_ms)
                    .min()
                    .unwrap_or(now_ms);
                return Err((oldest + window_ms).saturating_sub(now_ms).max(1));
            }
        }
        let w = entries.entry(key).or_insert(Window {
            started_ms: now_ms,
            count: 0,
        });
        if now_ms.saturating_sub(w.started_ms) >= window_ms {
            *w = Window {
                started_ms: now_ms,
                count: 0,
            };
        }
        if w.count >= self.max {
            return Err((w.started_ms + window_ms).saturating_sub(now_ms).max(1));
        }
        w.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_within_a_window_then_starts_over() {
        let l = WindowLimiter::new(2, 1000, 10);
        assert_eq!(l.take("a", 0), Ok(()));
        assert_eq!(l.take("a", 10), Ok(()));
        assert_eq!(l.take("a", 400), Err(600));
        assert_eq!(l.take("b", 400), Ok(()), "keys are counted apart");
        assert_eq!(l.take("a", 1000), Ok(()), "a new window");
    }

    #[test]
    fn a_full_table_of_live_keys_refuses_new_keys_and_forgets_dead_ones() {
        let l = WindowLimiter::new(5, 1000, 2);
        assert!(l.take(1, 0).is_ok());
        assert!(l.take(2, 500).is_ok());
        assert_eq!(l.take(3, 600), Err(400), "full: wait until the oldest ends");
        assert!(l.take(1, 700).is_ok(), "known keys still count");
        assert!(l.take(3, 1000).is_ok(), "key 1's window ended: room again");
    }
}
