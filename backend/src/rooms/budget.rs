//! A token bucket in whole milliseconds and milli-tokens: no floats, no clock of its own (the
//! caller passes a monotonic `now_ms`), so tests drive it with made-up times.

/// Milli-tokens per token.
const MILLI: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct Budget {
    /// Milli-tokens left, at most `per_s * MILLI` (one second's burst).
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date.
    at_ms: u64,
}

impl Budget {
    /// A full bucket: a newcomer may send one second's worth at once.
    pub fn full(per_s: u32, now_ms: u64) -> Self {
        Self {
            milli_tokens: u64::from(per_s) * MILLI,
            at_ms: now_ms,
        }
    }

    /// Adds what accrued since the last call. `per_s` tokens a second is `per_s` milli-tokens a
    /// millisecond.
    fn refill(&mut self, per_s: u32, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let cap = u64::from(per_s) * MILLI;
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(per_s)))
            .min(cap);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// `Ok` if a token is there (not taken: see `take`), or the milliseconds until one is.
    pub fn check(&mut self, per_s: u32, now_ms: u64) -> Result<(), u64> {
        self.refill(per_s, now_ms);
        if self.milli_tokens >= MILLI {
            return Ok(());
        }
        let missing = MILLI - self.milli_tokens;
        Err(missing.div_ceil(u64::from(per_s.max(1))))
    }

    /// Takes a token `check` found.
    pub fn take(&mut self) {
        debug_assert!(
            self.milli_tokens >= MILLI,
            "take without a successful check"
        );
        self.milli_tokens = self.milli_tokens.saturating_sub(MILLI);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(b: &mut Budget, per_s: u32, now: u64) -> Result<(), u64> {
        b.check(per_s, now)?;
        b.take();
        Ok(())
    }

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let mut b = Budget::full(4, 0);
        for _ in 0..4 {
            assert_eq!(spend(&mut b, 4, 0), Ok(()));
        }
        // One token every 250 ms.
        assert_eq!(spend(&mut b, 4, 0), Err(250));
        assert_eq!(spend(&mut b, 4, 100), Err(150));
        assert_eq!(spend(&mut b, 4, 250), Ok(()));
        assert_eq!(spend(&mut b, 4, 250), Err(250));
        // Never more than one second's worth, however long it was idle.
        for _ in 0..4 {
            assert_eq!(spend(&mut b, 4, 1_000_000), Ok(()));
        }
        assert!(spend(&mut b, 4, 1_000_000).is_err());
    }

    #[test]
    fn a_failed_check_takes_nothing_and_time_never_runs_back() {
        let mut b = Budget::full(1, 1_000);
        assert_eq!(spend(&mut b, 1, 1_000), Ok(()));
        assert_eq!(b.check(1, 1_000), Err(1_000));
        assert_eq!(b.check(1, 500), Err(1_000), "an earlier time adds nothing");
        assert_eq!(b.check(1, 2_000), Ok(()));
        assert_eq!(b.check(1, 2_000), Ok(()), "check alone takes nothing");
    }

    #[test]
    fn high_rates_are_exact() {
        let mut b = Budget::full(1_000, 0);
        for _ in 0..1_000 {
            assert_eq!(spend(&mut b, 1_000, 0), Ok(()));
        }
        assert_eq!(spend(&mut b, 1_000, 0), Err(1));
        assert_eq!(spend(&mut b, 1_000, 1), Ok(()));
    }
}
