//! What the admin overview and `/metrics` report about the message path, counted where it
//! happens at the cost of a few relaxed atomics and one uncontended lock per commit group:
//! messages stored, deliveries, logins, send-to-ack latency, and users' activity.
//! The admin sampler (`admin/overview/`) reads them once a second; nothing here is per request
//! of the API.

pub mod activity;
mod config;
pub mod latency;
pub mod otlp;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub use self::activity::Activity;
pub use self::config::ObserveConfig;
use self::latency::LatencyHistogram;
use crate::config::Settings;
use crate::service::BackendError;
use crate::store::UserId;

pub struct Observe {
    /// When the process started serving (for uptime).
    pub started: Instant,
    pub started_ms: u64,
    /// Messages stored (direct and group), since start.
    pub messages: AtomicU64,
    /// Frames handed to recipients' connections (pushes, receipts, events; not the replies to
    /// the requester), since start.
    pub deliveries: AtomicU64,
    /// Commit groups passed on, and the writes in them: writes per fsync and per wake-up.
    pub commit_groups: AtomicU64,
    pub commit_writes: AtomicU64,
    /// Successful logins, since start.
    pub logins: AtomicU64,
    /// Send-to-ack latencies since the sampler last took them.
    latency: Mutex<LatencyHistogram>,
    pub activity: Activity,
    persist_interval: Duration,
}

impl std::fmt::Debug for Observe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

/// One commit group as delivery passes it on.
pub struct GroupFacts<'a, I: Iterator<Item = UserId>> {
    /// When each send of the group was queued by its shard.
    pub send_started: &'a [Instant],
    /// The senders of the messages it stored.
    pub senders: I,
    pub stored: u64,
    /// Operations in the group (sends, cursors, contacts and groups changes).
    pub writes: u64,
}

/// The directory in the data dir where the activity counts are written.
pub(crate) const ACTIVITY_DIR: &str = "activity";

/// Where the activity counts are written.
fn activity_dir(settings: &Settings) -> PathBuf {
    settings.storage.data_dir.join(ACTIVITY_DIR)
}

impl Observe {
    pub fn open(settings: &Settings) -> Result<Self, BackendError> {
        let dir = activity_dir(settings);
        let o = &settings.observe;
        let activity = Activity::open(
            Some(dir.clone()),
            o.activity_days_kept as usize,
            o.top_senders_tracked as usize,
        )
        .map_err(|source| BackendError::Activity { dir, source })?;
        Ok(Self::new(activity, o.activity_persist_interval_s))
    }

    pub fn new(activity: Activity, persist_interval_s: u32) -> Self {
        Self {
            started: Instant::now(),
            started_ms: crate::time::now_ms(),
            messages: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            commit_groups: AtomicU64::new(0),
            commit_writes: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            latency: Mutex::new(LatencyHistogram::default()),
            activity,
            persist_interval: Duration::from_secs(u64::from(persist_interval_s.max(1))),
        }
    }

    /// In memory only (tests that build a `Delivery` by hand).
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self::new(Activity::open(None, 31, 8).expect("no files to read"), 60)
    }

    /// Delivery, once per commit group: one clock read, one lock for the latencies, one for the
    /// activity (when it stored messages), relaxed adds.
    pub fn group<I: Iterator<Item = UserId>>(&self, facts: GroupFacts<'_, I>) {
        self.commit_groups.fetch_add(1, Relaxed);
        self.commit_writes.fetch_add(facts.writes, Relaxed);
        if !facts.send_started.is_empty() {
            let now = Instant::now();
            self.latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record_group(facts.send_started, now);
        }
        if facts.stored > 0 {
            self.messages.fetch_add(facts.stored, Relaxed);
            self.activity.sent(facts.senders, crate::time::now_ms());
        }
    }

    /// Delivery, once per commit group: the frames it handed to recipients.
    pub fn delivered(&self, n: u64) {
        if n > 0 {
            self.deliveries.fetch_add(n, Relaxed);
        }
    }

    pub fn logged_in(&self, user: UserId) {
        self.logins.fetch_add(1, Relaxed);
        self.activity.logged_in(user, crate::time::now_ms());
    }

    pub fn registered(&self) {
        self.activity.registered(crate::time::now_ms());
    }

    /// Swaps the latencies recorded since the last call with `spare` (which the caller reset):
    /// the lock is held for a pointer swap, not for walking the histogram.
    pub fn take_latencies(&self, spare: &mut LatencyHistogram) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *h, spare);
    }
}

/// Writes the day's activity counts every `observe.activity_persist_interval_s` (and `finish`
/// once more at shutdown).
pub async fn persist_activity(observe: Arc<Observe>) {
    loop {
        tokio::time::sleep(observe.persist_interval).await;
        let o = Arc::clone(&observe);
        match tokio::task::spawn_blocking(move || o.activity.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "writing the activity counts"),
            Err(err) => tracing::warn!(%err, "writing the activity counts"),
        }
    }
}
