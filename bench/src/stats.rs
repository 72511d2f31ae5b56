//! Latency histograms and per-second series, merged across load threads at the end.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Faults;

/// Highest latency the histogram records exactly; anything slower is clamped to it.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// A latency histogram in µs, 1 to [`LATENCY_US_MAX`]: the one every scenario uses.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

/// Records `us` clamped into the histogram's bounds; true when it was over
/// [`LATENCY_US_MAX`], for the caller to count (a clamped value is never dropped).
pub fn record_latency(h: &mut Histogram<u64>, us: u64) -> bool {
    h.record(us.clamp(1, LATENCY_US_MAX))
        .expect("clamped into bounds");
    us > LATENCY_US_MAX
}

/// The percentiles of a latency histogram (all 0 when it is empty).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let at = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: if h.is_empty() { 0 } else { h.max() },
    }
}

/// What one load thread measured; merged into one at the end.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub latency_us: Histogram<u64>,
    /// Messages delivered in each second since the start of the measured phase.
    pub delivered_per_s: Vec<u64>,
    /// The worst latency seen in each second.
    pub latency_max_us_per_s: Vec<u64>,
    /// 99th percentile per second, filled by `finish`.
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Lost, unanswered, unsent (paced slots the server kept waiting without end), duplicates,
    /// out of order, corrupt, errors.
    pub faults: Faults,
    pub rate_limited: u64,
    /// `DeliveryAck`s the receivers sent (one per read batch that brought new messages).
    pub delivery_acks: u64,
    /// `DeliveryAck`s the server refused as over the connection's request budget
    /// (RATE_LIMITED): a cursor not moved, covered by the next ack (acks are cumulative).
    pub delivery_acks_refused: u64,
    /// `SyncNeeded` hints the receivers got (cluster mode: pushes lost between nodes; the
    /// messages they name are counted lost unless pushed after all).
    pub sync_hints: u64,
    /// Errors by kind (server error codes, kicks, closed connections), for the report.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
}

impl Default for Measurements {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds"),
            delivered_per_s: Vec::new(),
            latency_max_us_per_s: Vec::new(),
            sent: 0,
            acked: 0,
            delivered: 0,
            faults: Faults::default(),
            rate_limited: 0,
            delivery_acks: 0,
            delivery_acks_refused: 0,
            sync_hints: 0,
            error_kinds: std::collections::BTreeMap::new(),
        }
    }
}

impl Measurements {
    /// A delivery `since_start` into the run, `latency` after it was (meant to be) sent.
    pub fn record_delivery(&mut self, since_start: Duration, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_US_MAX);
        self.latency_us.record(us).expect("clamped into bounds");
        self.delivered += 1;
        let second = since_start.as_secs() as usize;
        if self.delivered_per_s.len() <= second {
            self.delivered_per_s.resize(second + 1, 0);
            self.latency_max_us_per_s.resize(second + 1, 0);
        }
        self.delivered_per_s[second] += 1;
        let worst = &mut self.latency_max_us_per_s[second];
        *worst = (*worst).max(us);
    }

    pub fn merge(&mut self, other: &Measurements) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        merge_series(&mut self.delivered_per_s, &other.delivered_per_s, |a, b| {
            a + b
        });
        merge_series(
            &mut self.latency_max_us_per_s,
            &other.latency_max_us_per_s,
            u64::max,
        );
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.faults.add(&other.faults);
        self.rate_limited += other.rate_limited;
        self.delivery_acks += other.delivery_acks;
        self.delivery_acks_refused += other.delivery_acks_refused;
        self.sync_hints += other.sync_hints;
        for (kind, n) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_default() += n;
        }
    }

    pub fn error(&mut self, kind: &str) {
        self.faults.errors += 1;
        *self.error_kinds.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn percentiles(&self) -> Percentiles {
        percentiles(&self.latency_us)
    }

    /// (percentile, latency µs) points for a distribution chart, 0 to 99.999.
    pub fn distribution(&self) -> Vec<(f64, u64)> {
        let h = &self.latency_us;
        if h.is_empty() {
            return Vec::new();
        }
        let mut points = Vec::new();
        // Evenly spaced on a "nines" scale: 0, 50, 75, 87.5, ... up to 99.999.
        let mut q = 0.0f64;
        while q < 0.99999 {
            points.push((q * 100.0, h.value_at_quantile(q)));
            q += (1.0 - q) / 8.0;
        }
        points.push((99.999, h.value_at_quantile(0.99999)));
        points
    }
}

fn merge_series(into: &mut Vec<u64>, other: &[u64], f: impl Fn(u64, u64) -> u64) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(other) {
        *a = f(*a, *b);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Messages per second over a duration; 0 for an empty duration.
pub fn per_second(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut m = Measurements::default();
        for us in 1..=1000u64 {
            m.record_delivery(Duration::ZERO, Duration::from_micros(us));
        }
        let p = m.percentiles();
        // hdrhistogram keeps 3 significant digits.
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((899..=901).contains(&p.p90), "{p:?}");
        assert!((989..=991).contains(&p.p99), "{p:?}");
        assert!((998..=1000).contains(&p.p999), "{p:?}");
        assert_eq!(p.max, 1000);
    }

    #[test]
    fn empty_measurements_report_zeroes() {
        let m = Measurements::default();
        assert_eq!(m.percentiles().max, 0);
        assert!(m.distribution().is_empty());
    }

    #[test]
    fn per_second_series_and_merge() {
        let mut a = Measurements::default();
        a.record_delivery(Duration::from_millis(100), Duration::from_micros(5));
        a.record_delivery(Duration::from_millis(1500), Duration::from_micros(50));
        let mut b = Measurements::default();
        b.record_delivery(Duration::from_millis(2500), Duration::from_micros(500));
        b.record_delivery(Duration::from_millis(1200), Duration::from_micros(7));
        a.merge(&b);
        assert_eq!(a.delivered_per_s, vec![1, 2, 1]);
        assert_eq!(a.latency_max_us_per_s, vec![5, 50, 500]);
        assert_eq!(a.delivered, 4);
        assert_eq!(a.percentiles().max, 500);
    }

    #[test]
    fn rate_accounting() {
        assert_eq!(per_second(1000, Duration::from_millis(500)), 2000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut m = Measurements::default();
        m.record_delivery(Duration::ZERO, Duration::from_secs(3600));
        assert_eq!(m.delivered, 1);
        assert!(m.percentiles().max >= LATENCY_US_MAX - LATENCY_US_MAX / 100);
    }

    #[test]
    fn a_latency_over_the_bound_is_recorded_at_it_and_said_so() {
        let mut h = latency_histogram();
        assert!(!record_latency(&mut h, 0));
        assert!(!record_latency(&mut h, LATENCY_US_MAX));
        assert!(record_latency(&mut h, 10 * LATENCY_US_MAX));
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= LATENCY_US_MAX - LATENCY_US_MAX / 100);
    }
}
