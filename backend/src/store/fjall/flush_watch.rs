//! A watch on fjall's background worker: if it stops flushing, the store stops taking writes
//! (and the server stops, for its supervisor to restart it) instead of growing without bound.
//!
//! fjall 3.1 (pinned here) can deadlock its worker: writers `try_send` a rotation request into
//! the worker's bounded channel (1,000 slots) on every write while a memtable is over its size
//! and not yet rotated, so a worker busy in a long compaction lets them pile up; the worker then
//! blocks sending a flush request into the channel only it drains (fjall-rs/fjall PR #323,
//! issues #257 and #260; seen here in a benchmark, docs/BENCHMARKS.md, "The big-store gap is
//! fjall's background work"). No memtable is flushed again, and writes go on into memory and
//! the journal until the process runs out of one. A restart replays the journal: nothing
//! acknowledged is lost. `memtables.rs` takes away what triggers it (writers' rotation
//! requests); the watch stays for whatever else may stop the worker.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::periodic::Periodic;
use crate::store::{StoreError, StoreHealth};

/// How long flushes may wait with nothing done before the worker counts as stuck. A healthy
/// worker flushes a 64 MiB memtable in well under a second; a compaction in progress or
/// completed counts as something done.
const STUCK_AFTER: Duration = Duration::from_secs(60);
/// How often the worker's counters are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What is read of fjall's worker at each sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    pub outstanding_flushes: usize,
    pub active_compactions: usize,
    pub compactions_completed: usize,
}

impl Sample {
    fn of(db: &fjall::Database) -> Self {
        Self {
            outstanding_flushes: db.outstanding_flushes(),
            active_compactions: db.active_compactions(),
            compactions_completed: db.compactions_completed(),
        }
    }
}

/// Since when the same flushes have waited with nothing done.
#[derive(Debug, Default)]
pub(super) struct Stuck {
    since: Option<(Instant, Sample)>,
}

impl Stuck {
    /// Whether the worker has been stuck for [`STUCK_AFTER`] as of this sample.
    pub(super) fn observe(&mut self, now: Instant, sample: Sample) -> bool {
        if sample.outstanding_flushes == 0 || sample.active_compactions > 0 {
            self.since = None;
            return false;
        }
        match self.since {
            // The same flushes waiting (none done, none new) and no compaction finished.
            Some((from, first)) if first == sample => now.duration_since(from) >= STUCK_AFTER,
            _ => {
                self.since = Some((now, sample));
                false
            }
        }
    }
}

/// Stops the store's writes, with the reason, for the server to stop on.
pub(super) fn stop_writes(health: &StoreHealth, sample: Sample) {
    health.fail(&StoreError::Engine(
        format!(
            "the embedded store's background worker has flushed nothing for {}s with {} \
             memtable flushes waiting (a known fjall 3.1 deadlock, fjall-rs/fjall#323); writes \
             stop so that the server is restarted and replays its journal",
            STUCK_AFTER.as_secs(),
            sample.outstanding_flushes
        )
        .into(),
    ));
}

/// Starts the watching thread; it stops when the returned handle drops.
pub(super) fn start(db: fjall::Database, health: Arc<StoreHealth>) -> std::io::Result<Periodic> {
    let mut stuck = Stuck::default();
    Periodic::start(crate::threads::FLUSH_WATCH, SAMPLE_EVERY, move || {
        let sample = Sample::of(&db);
        if stuck.observe(Instant::now(), sample) {
            stop_writes(&health, sample);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outstanding: usize, active: usize, completed: usize) -> Sample {
        Sample {
            outstanding_flushes: outstanding,
            active_compactions: active,
            compactions_completed: completed,
        }
    }

    /// Feeds one sample a second for `secs` seconds; whether the last one said stuck.
    fn feed(stuck: &mut Stuck, t0: Instant, secs: std::ops::Range<u64>, s: Sample) -> bool {
        secs.map(|i| stuck.observe(t0 + Duration::from_secs(i), s))
            .last()
            .unwrap_or(false)
    }

    #[test]
    fn the_same_flushes_waiting_with_nothing_done_for_a_minute_is_stuck() {
        let t0 = Instant::now();
        let mut stuck = Stuck::default();
        assert!(!feed(&mut stuck, t0, 0..60, sample(1, 0, 7)), "59 s");
        assert!(stuck.observe(t0 + Duration::from_secs(60), sample(1, 0, 7)));
    }

    #[test]
    fn a_worker_that_gets_anything_done_is_not_stuck() {
        let t0 = Instant::now();
        let minutes = |stuck: &mut Stuck, s: fn(u64) -> Sample| {
            (0..300).any(|i| stuck.observe(t0 + Duration::from_secs(i), s(i)))
        };
        // Nothing to flush.
        assert!(!minutes(&mut Stuck::default(), |_| sample(0, 0, 3)));
        // A long compaction running.
        assert!(!minutes(&mut Stuck::default(), |_| sample(2, 1, 3)));
        // Compactions finishing now and then while flushes wait.
        assert!(!minutes(&mut Stuck::default(), |i| sample(
            1,
            0,
            (i / 30) as usize
        )));
        // Flushes done and new ones queued.
        assert!(!minutes(&mut Stuck::default(), |i| sample(
            1 + (i % 50 == 0) as usize,
            0,
            3
        )));
    }

    #[test]
    fn a_stuck_worker_stops_the_stores_writes_with_the_reason() {
        let health = StoreHealth::default();
        stop_writes(&health, sample(3, 0, 0));
        let why = health.failure().expect("writes stopped");
        assert!(why.contains("3 memtable flushes waiting"), "{why}");
        assert!(why.contains("fjall"), "{why}");
    }
}
