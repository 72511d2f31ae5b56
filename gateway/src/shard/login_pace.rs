//! Spaces the logins one shard hands to the backend: at most
//! `gateway.logins_per_second_per_shard` a second, after a burst of
//! `gateway.login_burst_per_shard` when the shard has been quiet.
//!
//! Why: a reconnect storm (every client of a node coming back at once) otherwise takes both
//! cores for its length, and the sequencer of the sessions already talking falls behind by
//! that much (docs/BENCHMARKS.md, "Reconnect storms"). Spaced, the same storm takes a little
//! longer and the message path keeps its share. A login waiting here holds its shard login
//! slot, so what waits is bounded by `gateway.logins_in_flight_per_shard_max`; past that the
//! client is told `SERVER_FULL` with a `retry_after_ms`, as before.
//!
//! Shard-local (a `Cell`), no lock and no allocation: the virtual-scheduling form of a token
//! bucket (GCRA), one instant per shard. Waiting logins wake together on a grid of
//! [`WAKE_GRID`]: the pace is the same on average, and each hop after the shard (the backend's
//! login queue, the blocking pool, the replies) is woken once per batch rather than once per
//! login.
//!
//! The same rule admits TLS handshakes (`tls_gate.rs`), without the wait: `admit` takes a
//! place only if one is free now.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Waiting logins go on the next multiple of this after the shard started.
const WAKE_GRID: Duration = Duration::from_millis(10);

pub struct LoginPace {
    /// Time between two logins; zero: not paced.
    gap: Duration,
    /// How far `next` may lag behind now: the burst a quiet shard lets through at once.
    burst: Duration,
    /// When the next login may go, if the shard were never quiet.
    next: Cell<Instant>,
    /// The origin of the wake grid.
    origin: Instant,
}

impl LoginPace {
    /// `per_second` logins a second (0: unpaced), `burst` of them at once after a quiet spell.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let gap = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_second
        };
        Self {
            gap,
            burst: gap * burst.saturating_sub(1),
            next: Cell::new(now),
            origin: now,
        }
    }

    /// Takes the next place in the pace: how long this login waits before it goes (zero: at
    /// once). Every call takes a place, so call it once per login.
    pub fn wait(&self, now: Instant) -> Duration {
        if self.gap.is_zero() {
            return Duration::ZERO;
        }
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let at = self.next.get().max(earliest);
        self.next.set(at + self.gap);
        if at <= now {
            return Duration::ZERO;
        }
        self.on_grid(at).saturating_duration_since(now)
    }

    /// Takes a place only if one is free now: `true` when the caller may go at once, `false`
    /// (nothing taken) when it would have to wait.
    pub fn admit(&self, now: Instant) -> bool {
        if self.gap.is_zero() {
            return true;
        }
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let at = self.next.get().max(earliest);
        if at > now {
            return false;
        }
        self.next.set(at + self.gap);
        true
    }

    /// The first point of the wake grid at or after `at`.
    fn on_grid(&self, at: Instant) -> Instant {
        let past = at.saturating_duration_since(self.origin).as_nanos() % WAKE_GRID.as_nanos();
        if past == 0 {
            return at;
        }
        // Below WAKE_GRID's nanoseconds: fits.
        at + (WAKE_GRID - Duration::from_nanos(past as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const Z: Duration = Duration::ZERO;

    #[test]
    fn unpaced_never_waits() {
        let t = Instant::now();
        let pace = LoginPace::new(0, 1, t);
        assert!((0..10_000).all(|_| pace.wait(t).is_zero()));
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_wait_for_the_grid() {
        let t = Instant::now() + Duration::from_secs(10);
        let pace = LoginPace::new(1000, 4, t - Duration::from_secs(5));
        let waits: Vec<Duration> = (0..7).map(|_| pace.wait(t)).collect();
        assert_eq!(waits, [Z, Z, Z, Z, 10 * MS, 10 * MS, 10 * MS]);
    }

    #[test]
    fn waiting_logins_wake_together_and_keep_the_pace() {
        let t = Instant::now();
        let pace = LoginPace::new(1000, 1, t);
        // Due 1 ms apart: the first goes, the next ten (due at 1..=10 ms) wake together on the
        // grid at 10 ms, the ten after at 20 ms: 1,000 a second all the same.
        let at: Vec<Duration> = (0..22).map(|_| pace.wait(t)).collect();
        assert_eq!(at[0], Z);
        assert!(at[1..11].iter().all(|w| *w == 10 * MS), "{at:?}");
        assert!(at[11..21].iter().all(|w| *w == 20 * MS), "{at:?}");
        assert_eq!(at[21], 30 * MS);
    }

    #[test]
    fn a_steady_arrival_at_the_pace_never_waits_and_a_faster_one_queues() {
        let t = Instant::now();
        let pace = LoginPace::new(100, 1, t);
        assert!((0..100).all(|i| pace.wait(t + 10 * MS * i).is_zero()));
        let pace = LoginPace::new(100, 1, t);
        // 200 a second against 100: the nth waits n × 5 ms.
        let waits: Vec<Duration> = (0..5).map(|i| pace.wait(t + 5 * MS * i)).collect();
        assert_eq!(waits, [Z, 5 * MS, 10 * MS, 15 * MS, 20 * MS]);
    }

    #[test]
    fn admit_lets_the_burst_through_then_one_per_gap_and_refusals_take_nothing() {
        let t = Instant::now() + Duration::from_secs(10);
        let pace = LoginPace::new(100, 3, t - Duration::from_secs(5));
        let now: Vec<bool> = (0..5).map(|_| pace.admit(t)).collect();
        assert_eq!(now, [true, true, true, false, false]);
        // The refusals took no place: the next one is free one gap later, not three.
        assert!(!pace.admit(t + 9 * MS));
        assert!(pace.admit(t + 10 * MS));
        assert!(!pace.admit(t + 10 * MS));
        assert!((0..1000).all(|_| LoginPace::new(0, 1, t).admit(t)));
    }

    #[test]
    fn a_quiet_spell_earns_no_more_than_the_burst() {
        let t = Instant::now() + Duration::from_secs(100);
        let pace = LoginPace::new(10, 3, t - Duration::from_secs(50));
        let later = t + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..4).map(|_| pace.wait(later)).collect();
        assert_eq!(waits, [Z, Z, Z, 100 * MS]);
    }
}
