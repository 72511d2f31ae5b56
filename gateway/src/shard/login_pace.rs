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
//! A place is a [`Booking`]: dropped before its time comes (the client hung up while it waited,
//! the connection was closed, the shard stopped), it is given back. A place kept by nobody would
//! still count: clients that send a login and reset at once would push `next` seconds ahead each
//! second, and every real login would wait past its handshake deadline.
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

    /// Takes the next place in the pace, once per login: [`Booking::wait`] says how long the
    /// login waits before it goes (zero: at once). Drop the booking to give the place back if
    /// the login does not go; [`Booking::went`] once it went.
    pub fn book(&self, now: Instant) -> Booking<'_> {
        let at_once = Booking {
            pace: self,
            at: None,
            wait: Duration::ZERO,
        };
        if self.gap.is_zero() {
            return at_once;
        }
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let at = self.next.get().max(earliest);
        self.next.set(at + self.gap);
        if at <= now {
            return at_once;
        }
        Booking {
            pace: self,
            at: Some(at),
            wait: self.on_grid(at).saturating_duration_since(now),
        }
    }

    /// Gives back a place booked for `at` and not used. Its time has not come (`now < at`), so
    /// `next` is past it: pulled back by one gap. Places booked behind it keep their times, so a
    /// new booking may then share a gap with one of them (the grid wakes logins in batches
    /// anyway): over the queue's length the shard still lets through no more than the pace, as
    /// every place kept moved `next` by one gap, and no record of the holes is needed. Never
    /// pulled behind `now`: a place given back is not a burst.
    fn give_back(&self, at: Instant, now: Instant) {
        if at <= now {
            return;
        }
        let back = self.next.get().checked_sub(self.gap).unwrap_or(now);
        self.next.set(back.max(now));
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

/// A login's place in the pace, given back if dropped before its time comes (see the module).
#[must_use = "dropped, the place is given back"]
pub struct Booking<'a> {
    pace: &'a LoginPace,
    /// When the place comes; `None` once the login went (or when it goes at once: nothing to
    /// give back).
    at: Option<Instant>,
    wait: Duration,
}

impl Booking<'_> {
    /// How long the login waits for its place, from the booking (zero: it goes at once).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The login goes: its place is used, never given back.
    pub fn went(mut self) {
        self.at = None;
    }

    /// Gives the place back as of `now` (what dropping the booking does with the clock).
    #[cfg(test)]
    fn cancel(mut self, now: Instant) {
        if let Some(at) = self.at.take() {
            self.pace.give_back(at, now);
        }
    }
}

impl Drop for Booking<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.at.take() {
            self.pace.give_back(at, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const Z: Duration = Duration::ZERO;

    /// A login that keeps its place: how long it waited.
    fn wait(pace: &LoginPace, now: Instant) -> Duration {
        let booking = pace.book(now);
        let wait = booking.wait();
        booking.went();
        wait
    }

    #[test]
    fn unpaced_never_waits() {
        let t = Instant::now();
        let pace = LoginPace::new(0, 1, t);
        assert!((0..10_000).all(|_| wait(&pace, t).is_zero()));
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_wait_for_the_grid() {
        let t = Instant::now() + Duration::from_secs(10);
        let pace = LoginPace::new(1000, 4, t - Duration::from_secs(5));
        let waits: Vec<Duration> = (0..7).map(|_| wait(&pace, t)).collect();
        assert_eq!(waits, [Z, Z, Z, Z, 10 * MS, 10 * MS, 10 * MS]);
    }

    #[test]
    fn waiting_logins_wake_together_and_keep_the_pace() {
        let t = Instant::now();
        let pace = LoginPace::new(1000, 1, t);
        // Due 1 ms apart: the first goes, the next ten (due at 1..=10 ms) wake together on the
        // grid at 10 ms, the ten after at 20 ms: 1,000 a second all the same.
        let at: Vec<Duration> = (0..22).map(|_| wait(&pace, t)).collect();
        assert_eq!(at[0], Z);
        assert!(at[1..11].iter().all(|w| *w == 10 * MS), "{at:?}");
        assert!(at[11..21].iter().all(|w| *w == 20 * MS), "{at:?}");
        assert_eq!(at[21], 30 * MS);
    }

    #[test]
    fn a_steady_arrival_at_the_pace_never_waits_and_a_faster_one_queues() {
        let t = Instant::now();
        let pace = LoginPace::new(100, 1, t);
        assert!((0..100).all(|i| wait(&pace, t + 10 * MS * i).is_zero()));
        let pace = LoginPace::new(100, 1, t);
        // 200 a second against 100: the nth waits n × 5 ms.
        let waits: Vec<Duration> = (0..5).map(|i| wait(&pace, t + 5 * MS * i)).collect();
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
        let waits: Vec<Duration> = (0..4).map(|_| wait(&pace, later)).collect();
        assert_eq!(waits, [Z, Z, Z, 100 * MS]);
    }

    #[test]
    fn a_place_given_back_before_its_time_is_taken_by_the_next_login() {
        // Ahead of the real clock, for the drop below.
        let t = Instant::now() + Duration::from_secs(10);
        let pace = LoginPace::new(100, 1, t);
        assert_eq!(wait(&pace, t), Z);
        // Clients that send a login and hang up while it waits, over and over: the places
        // they gave back do not push the pace on.
        for _ in 0..1000 {
            let booking = pace.book(t);
            assert_eq!(booking.wait(), 10 * MS);
            booking.cancel(t + MS);
        }
        assert_eq!(wait(&pace, t + MS), 9 * MS);
        // Dropped before its time (at 20 ms, the real clock still behind `t`): given back too.
        drop(pace.book(t + 2 * MS));
        assert_eq!(wait(&pace, t + 2 * MS), 18 * MS);
    }

    #[test]
    fn a_place_given_back_behind_later_ones_frees_one_gap_at_the_end() {
        let t = Instant::now();
        let pace = LoginPace::new(100, 1, t);
        assert_eq!(wait(&pace, t), Z);
        // Three wait for 10, 20 and 30 ms; the first gives up.
        let first = pace.book(t);
        let kept: Vec<Duration> = (0..2).map(|_| wait(&pace, t)).collect();
        assert_eq!(kept, [20 * MS, 30 * MS]);
        first.cancel(t + MS);
        // The next goes at 30 ms, beside the last kept one, not at 40 ms.
        assert_eq!(wait(&pace, t + MS), 29 * MS);
        assert_eq!(wait(&pace, t + MS), 39 * MS);
    }

    #[test]
    fn a_place_whose_time_came_is_not_given_back() {
        let t = Instant::now();
        let pace = LoginPace::new(100, 1, t);
        assert_eq!(wait(&pace, t), Z);
        pace.book(t).cancel(t + 10 * MS);
        // Its place was at 10 ms, used up by then: the next is at 20 ms.
        assert_eq!(wait(&pace, t + 10 * MS), 10 * MS);
    }

    #[test]
    fn places_given_back_never_pull_the_pace_behind_now() {
        let t = Instant::now() + Duration::from_secs(10);
        // Quiet: a burst of 3 (20 ms of lag) goes at once.
        let pace = LoginPace::new(100, 3, t - Duration::from_secs(5));
        assert!((0..3).all(|_| wait(&pace, t).is_zero()));
        // Two wait (10, 20 ms); the first gives up, and a third takes 20 ms beside the second.
        let first = pace.book(t);
        let second = pace.book(t);
        first.cancel(t + MS);
        let third = pace.book(t + MS);
        assert_eq!(third.wait(), 19 * MS);
        // At 19 ms both give up: two gaps back from 30 ms would be 10 ms, already past, and
        // a login then would find a burst made of places nobody used. The pace stops at now.
        second.cancel(t + 19 * MS);
        third.cancel(t + 19 * MS);
        assert_eq!(wait(&pace, t + 19 * MS), Z);
        // Due at 29 ms, woken on the grid at 30 ms.
        assert_eq!(wait(&pace, t + 19 * MS), 11 * MS);
    }
}
