//! Send-to-ack latency: recorded per commit group by delivery (one lock per group, no
//! allocation), taken once a second by the admin sampler.
//!
//! Measured from the shard queueing the send (`Writes::submit`) to delivery handing its ack to
//! the shard's inbox: the sequencer queue, the commit (its fsync), and the encoding. The
//! socket write after that is the shard's and not counted.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Lowest and highest latency told apart, in microseconds; slower ones count as the highest.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept (1 % resolution).
const SIGFIGS: u8 = 2;

/// A latency histogram in microseconds, with the exact sum (for Prometheus' `_sum`).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    pub hist: Histogram<u64>,
    pub sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIGS)
                .expect("constant bounds are valid"),
            sum_us: 0,
        }
    }
}

impl LatencyHistogram {
    /// No allocation: the histogram's counts array is sized at creation.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(LOWEST_US);
        self.hist.saturating_record(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Records every send of a commit group answered at `now`.
    pub fn record_group(&mut self, started: &[Instant], now: Instant) {
        for &t in started {
            self.record(now.saturating_duration_since(t));
        }
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn reset(&mut self) {
        self.hist.reset();
        self.sum_us = 0;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at quantile `q` (0..=1) in milliseconds; 0 with no samples.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Samples at or below `us` microseconds (for a Prometheus bucket).
    pub fn count_at_most(&self, us: u64) -> u64 {
        if us < LOWEST_US {
            return 0;
        }
        self.hist.count_between(0, us.min(HIGHEST_US))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_buckets_follow_what_was_recorded() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert!((h.quantile_ms(0.5) - 50.0).abs() < 1.0);
        assert!((h.quantile_ms(0.99) - 99.0).abs() < 1.5);
        assert_eq!(h.count_at_most(10_000), 10);
        assert_eq!(h.sum_us, (1..=100).map(|ms| ms * 1000).sum::<u64>());
        let mut total = LatencyHistogram::default();
        total.add(&h);
        total.add(&h);
        assert_eq!(total.count(), 200);
        h.reset();
        assert_eq!((h.count(), h.quantile_ms(0.99)), (0, 0.0));
        // Far too slow: counted as the highest, never an error.
        h.record(Duration::from_secs(3600));
        assert_eq!(h.count(), 1);
    }
}
