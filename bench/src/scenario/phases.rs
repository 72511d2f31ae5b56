//! A run cut in time around an event (a reconnect storm): when the senders stop, known only
//! once the event is over, and the latency of the messages before, during and after it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::LATENCY_US_MAX;

/// How often a waiter looks whether the stop time has moved.
const STOP_POLL: Duration = Duration::from_millis(10);

/// When the senders stop: a bound set up front, which another thread may bring forward once
/// it knows better (the storm is over: stop `--after` later). Never unbounded.
#[derive(Debug)]
pub struct StopAt {
    start: Instant,
    /// Nanoseconds after `start`.
    after_ns: AtomicU64,
}

impl StopAt {
    pub fn new(start: Instant, after: Duration) -> Self {
        Self {
            start,
            after_ns: AtomicU64::new(nanos(after)),
        }
    }

    /// Brings the stop time forward to `after` the start (never later than it was).
    pub fn bring_forward(&self, after: Duration) {
        self.after_ns.fetch_min(nanos(after), Ordering::Relaxed);
    }

    pub fn passed(&self, now: Instant) -> bool {
        nanos(now.saturating_duration_since(self.start)) >= self.after_ns.load(Ordering::Relaxed)
    }

    pub fn at(&self) -> Instant {
        self.start + Duration::from_nanos(self.after_ns.load(Ordering::Relaxed))
    }

    /// Returns once the stop time has passed (it may move forward meanwhile).
    pub async fn wait(&self) {
        loop {
            let at = self.at();
            if Instant::now() >= at {
                return;
            }
            // Sleep to the stop time, or a poll step if that is sooner: it may move forward.
            let step = (Instant::now() + STOP_POLL).min(at);
            tokio::time::sleep_until(step.into()).await;
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The event's window, in nanoseconds after the run's start; `u64::MAX` while unknown. Shared by
/// the threads that measure and the one that runs the event.
#[derive(Debug)]
pub struct Window {
    opens_ns: AtomicU64,
    closes_ns: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            opens_ns: AtomicU64::new(u64::MAX),
            closes_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    pub fn open(&self, since_start: Duration) {
        self.opens_ns
            .fetch_min(nanos(since_start), Ordering::Relaxed);
    }

    /// When the window opened, since the run's start, if it has.
    pub fn opened(&self) -> Option<Duration> {
        let ns = self.opens_ns.load(Ordering::Relaxed);
        (ns != u64::MAX).then(|| Duration::from_nanos(ns))
    }

    pub fn close(&self, since_start: Duration) {
        self.closes_ns
            .fetch_min(nanos(since_start), Ordering::Relaxed);
    }

    /// Which phase a message sent at `sent` and delivered at `delivered` (both since the run's
    /// start) belongs to: before if delivered before the window opened, after if sent after it
    /// closed, during if its time in flight overlaps the window. The event's cost cannot leak
    /// into the other two.
    pub fn phase(&self, sent: Duration, delivered: Duration) -> Phase {
        if nanos(delivered) < self.opens_ns.load(Ordering::Relaxed) {
            Phase::Before
        } else if nanos(sent) < self.closes_ns.load(Ordering::Relaxed) {
            Phase::During
        } else {
            Phase::After
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    During,
    After,
}

/// One load thread's latencies by phase (one histogram per thread, not per connection: each
/// holds about 140 KB).
#[derive(Debug)]
pub struct PhaseLatency {
    pub window: std::sync::Arc<Window>,
    hist: RefCell<[Histogram<u64>; 3]>,
}

impl PhaseLatency {
    pub fn new(window: std::sync::Arc<Window>) -> Self {
        Self {
            window,
            hist: RefCell::new(std::array::from_fn(|_| latency_histogram())),
        }
    }

    pub fn record(&self, sent: Duration, delivered: Duration) {
        let phase = self.window.phase(sent, delivered);
        let us = u64::try_from(delivered.saturating_sub(sent).as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_US_MAX);
        self.hist.borrow_mut()[phase as usize]
            .record(us)
            .expect("clamped into bounds");
    }

    pub fn take(&self) -> [Histogram<u64>; 3] {
        self.hist
            .replace(std::array::from_fn(|_| latency_histogram()))
    }
}

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

/// Latency percentiles of one phase, in µs, and how many messages it had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PhaseStats {
    pub messages: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl PhaseStats {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            messages: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn phases_by_overlap_with_the_window() {
        let w = Window::default();
        // Before the window is known, everything is before it.
        assert_eq!(w.phase(MS(5), MS(6)), Phase::Before);
        w.open(MS(100));
        assert_eq!(w.phase(MS(90), MS(99)), Phase::Before);
        // In flight when the window opened: during.
        assert_eq!(w.phase(MS(90), MS(101)), Phase::During);
        // Still open (end unknown): during.
        assert_eq!(w.phase(MS(500), MS(501)), Phase::During);
        w.close(MS(300));
        assert_eq!(w.phase(MS(299), MS(400)), Phase::During);
        assert_eq!(w.phase(MS(300), MS(301)), Phase::After);
    }

    #[test]
    fn stop_moves_only_forward() {
        let start = Instant::now();
        let stop = StopAt::new(start, Duration::from_secs(60));
        assert!(!stop.passed(start + MS(10)));
        stop.bring_forward(MS(5));
        assert!(stop.passed(start + MS(10)));
        stop.bring_forward(Duration::from_secs(90));
        assert_eq!(stop.at(), start + MS(5));
    }

    #[test]
    fn latency_goes_to_its_phase() {
        let w = std::sync::Arc::new(Window::default());
        w.open(MS(100));
        w.close(MS(200));
        let p = PhaseLatency::new(w);
        p.record(MS(10), MS(11));
        p.record(MS(150), MS(160));
        p.record(MS(150), MS(170));
        p.record(MS(250), MS(252));
        let [before, during, after] = p.take();
        assert_eq!(PhaseStats::of(&before).messages, 1);
        assert_eq!(PhaseStats::of(&during).messages, 2);
        assert!((19_900..=20_100).contains(&PhaseStats::of(&during).max));
        assert_eq!(PhaseStats::of(&after).messages, 1);
    }
}
