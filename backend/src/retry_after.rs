//! The one place that says when a client answered `UNAVAILABLE` because the store is away
//! should come back: `storage.unavailable_retry_after_ms`, plus a random share of it again, so
//! that the clients turned away together by one outage do not all come back in the same
//! millisecond when it ends.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::UNAVAILABLE_RETRY_AFTER_MS_DEFAULT;

/// `storage.unavailable_retry_after_ms`, set once at start (the default until then: the
/// backend's unit tests never set it).
static BASE_MS: AtomicU64 = AtomicU64::new(UNAVAILABLE_RETRY_AFTER_MS_DEFAULT);

/// Sets the base from the config; called once when the backend opens.
pub(crate) fn configure(base_ms: u64) {
    assert!(base_ms >= 1, "validated by the config");
    BASE_MS.store(base_ms, Ordering::Relaxed);
}

/// A `retry_after_ms` for an UNAVAILABLE answer: uniform in `[base, 2 × base)`.
pub(crate) fn unavailable_retry_after_ms() -> u64 {
    let base = BASE_MS.load(Ordering::Relaxed);
    base + next_random() % base
}

thread_local! {
    /// xorshift64* state per thread, seeded from the OS once: no syscall per answer.
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // Never 0 (xorshift's fixed point); a failed getrandom still gets a per-thread seed.
    getrandom::u64().unwrap_or_else(|_| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
    }) | 1
}

fn next_random() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_jittered_within_base_and_twice_base() {
        let base = BASE_MS.load(Ordering::Relaxed);
        let drawn: Vec<u64> = (0..1000).map(|_| unavailable_retry_after_ms()).collect();
        assert!(drawn.iter().all(|&ms| (base..2 * base).contains(&ms)));
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 100, "spread out, not in lockstep");
    }
}
