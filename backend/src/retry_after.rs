//! The one rule for when a turned-away client should come back: a base, plus a random share of
//! it again, so that the clients turned away together (by one outage, by a login storm) do not
//! all come back in the same millisecond. `UNAVAILABLE` because the store is away draws from
//! `storage.unavailable_retry_after_ms`; a refused login from `gateway.login_retry_after_ms`.

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
    jittered_ms(BASE_MS.load(Ordering::Relaxed))
}

/// Uniform in `[base_ms, 2 × base_ms)` (`base_ms` of 0 is taken as 1): no syscall, no lock.
pub fn jittered_ms(base_ms: u64) -> u64 {
    let base = base_ms.max(1);
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

/// Asserts that `draw` (a call site's `retry_after_ms`) follows the rule around `base_ms`: every
/// value in `[base_ms, 2 × base_ms)`, and spread out rather than one value for all.
#[cfg(test)]
pub(crate) fn assert_jittered(base_ms: u64, mut draw: impl FnMut() -> u64) {
    let drawn: Vec<u64> = (0..200).map(|_| draw()).collect();
    assert!(
        drawn.iter().all(|ms| (base_ms..2 * base_ms).contains(ms)),
        "outside [{base_ms}, {}): {drawn:?}",
        2 * base_ms
    );
    let distinct: std::collections::HashSet<_> = drawn.iter().collect();
    assert!(distinct.len() > 20, "in lockstep: {distinct:?}");
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

    #[test]
    fn any_base_is_jittered_within_itself_and_twice_itself() {
        for base in [1, 2, 250, 10_000] {
            assert!((0..200).all(|_| (base..2 * base).contains(&jittered_ms(base))));
        }
        assert_eq!(jittered_ms(0), 1, "0 is taken as 1");
    }
}
