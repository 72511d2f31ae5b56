//! The overview's sampler: once a second it reads the counters (gateway, delivery, logins),
//! the send-to-ack latencies and `/proc`, turns them into rates and percentages, and keeps the
//! result in a ring of `observe.history_seconds` samples. The API only reads the ring, so an
//! operator's refresh costs nothing on the server's hot paths. The store's size on disk is
//! measured every `observe.store_size_interval_s` (a walk of the data dir).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::facts::Transports;
use super::procfs::{self, CoreTicks, THREAD_GROUPS};
use crate::admin::Admin;
use crate::observe::latency::LatencyHistogram;
use crate::time::now_ms;

const INTERVAL: Duration = Duration::from_secs(1);

/// Send-to-ack latency over the last `observe.latency_window_seconds`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Sends answered in the window.
    pub sends: u64,
}

/// CPU of one group of threads, in percent of one core (200 = two cores busy).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadGroupCpu {
    /// `shards`, `sequencer`, `backend`, `storage`, `main` or `other`.
    pub group: String,
    pub percent: f64,
    pub threads: u32,
}

/// One second of the server.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Sample {
    pub at_ms: u64,
    pub connections: u64,
    pub connections_per_shard: Vec<u64>,
    pub transports: Transports,
    /// Connections with a logged-in session.
    pub authenticated: u64,
    pub logins_per_s: f64,
    /// Logins waiting for the backend now (`gateway.logins_in_flight_per_shard_max` each shard).
    pub logins_in_flight: u64,
    /// Logins turned away with a `retry_after_ms` since start (a login storm).
    pub logins_refused_total: u64,
    /// Messages stored (direct and group).
    pub messages_per_s: f64,
    /// Frames handed to recipients (pushes, receipts, events).
    pub deliveries_per_s: f64,
    pub latency: Latency,
    /// Busy percent of each core of the machine (`/proc/stat`), in core order.
    pub cpu_cores_percent: Vec<f64>,
    pub cpu_threads: Vec<ThreadGroupCpu>,
    /// This process, in percent of one core.
    pub process_cpu_percent: f64,
    pub rss_bytes: u64,
}

/// The store's data dir on disk.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct StoreUsage {
    /// Bytes of every file under the data dir.
    pub size_bytes: u64,
    /// Free and total bytes of the file system holding it (for an unprivileged user).
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// When it was measured; 0 before the first measurement.
    pub measured_at_ms: u64,
}

/// What the sampler keeps for the API and `/metrics`.
pub struct Overview {
    ring: Mutex<VecDeque<Arc<Sample>>>,
    /// Every send-to-ack latency since start (for the Prometheus histogram).
    cumulative: Mutex<LatencyHistogram>,
    store: Mutex<StoreUsage>,
    history: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Overview {
    pub fn new(history_seconds: u32) -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            cumulative: Mutex::new(LatencyHistogram::default()),
            store: Mutex::new(StoreUsage::default()),
            history: history_seconds.max(1) as usize,
        }
    }

    pub fn history_seconds(&self) -> usize {
        self.history
    }

    pub fn latest(&self) -> Option<Arc<Sample>> {
        lock(&self.ring).back().cloned()
    }

    /// The newest `seconds` samples, oldest first.
    pub fn series(&self, seconds: usize) -> Vec<Arc<Sample>> {
        let ring = lock(&self.ring);
        let skip = ring.len().saturating_sub(seconds);
        ring.iter().skip(skip).cloned().collect()
    }

    pub fn store(&self) -> StoreUsage {
        *lock(&self.store)
    }

    /// Runs `f` on the latencies since start.
    pub fn with_cumulative<T>(&self, f: impl FnOnce(&LatencyHistogram) -> T) -> T {
        f(&lock(&self.cumulative))
    }

    fn push(&self, sample: Sample) {
        let mut ring = lock(&self.ring);
        while ring.len() >= self.history {
            ring.pop_front();
        }
        ring.push_back(Arc::new(sample));
    }
}

/// What the previous second left: counters and ticks to take differences from.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    messages: u64,
    deliveries: u64,
    logins: u64,
    cores: Vec<CoreTicks>,
    threads: HashMap<u32, (&'static str, u64)>,
    process_ticks: u64,
}

/// `/proc`, read on a blocking thread.
struct Readings {
    cores: Vec<CoreTicks>,
    threads: HashMap<u32, (&'static str, u64)>,
    process: procfs::ProcessUsage,
}

fn read_proc() -> Readings {
    Readings {
        cores: procfs::read_cores(),
        threads: procfs::read_threads(),
        process: procfs::read_process(),
    }
}

/// The sampler task: runs while the admin listener does.
pub async fn run(admin: Arc<Admin>) {
    let cfg = admin.backend.settings.observe.clone();
    let window = cfg.latency_window_seconds.max(1) as usize;
    let store_every = u64::from(cfg.store_size_interval_s.max(1));
    let data_dir = admin.backend.settings.storage.data_dir.clone();
    let hz = procfs::ticks_per_second() as f64;
    let mut prev = Previous::default();
    let mut seconds: VecDeque<LatencyHistogram> = VecDeque::with_capacity(window + 1);
    let mut spare = LatencyHistogram::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if n.is_multiple_of(store_every) {
            let dir = data_dir.clone();
            if let Ok(usage) = tokio::task::spawn_blocking(move || measure_store(&dir)).await {
                *lock(&admin.overview.store) = usage;
            }
        }
        n += 1;
        let Ok(readings) = tokio::task::spawn_blocking(read_proc).await else {
            continue;
        };
        // This second's latencies: swapped out of delivery's recorder, kept for the window.
        admin.backend.observe.take_latencies(&mut spare);
        lock(&admin.overview.cumulative).add(&spare);
        let mut this_second = if seconds.len() >= window {
            seconds.pop_front().expect("the window is full")
        } else {
            LatencyHistogram::default()
        };
        this_second.reset();
        std::mem::swap(&mut this_second, &mut spare);
        seconds.push_back(this_second);
        let sample = sample(&admin, &mut prev, readings, &seconds, hz);
        admin.overview.push(sample);
    }
}

fn sample(
    admin: &Admin,
    prev: &mut Previous,
    r: Readings,
    seconds: &VecDeque<LatencyHistogram>,
    hz: f64,
) -> Sample {
    let now = Instant::now();
    let elapsed = prev
        .at
        .map_or(INTERVAL, |at| now.duration_since(at))
        .as_secs_f64()
        .max(0.001);
    let first = prev.at.is_none();
    let o = &admin.backend.observe;
    let (messages, deliveries, logins) = (
        o.messages.load(Relaxed),
        o.deliveries.load(Relaxed),
        o.logins.load(Relaxed),
    );
    let rate = |now: u64, before: u64| {
        if first {
            0.0
        } else {
            now.saturating_sub(before) as f64 / elapsed
        }
    };
    let conns = admin.facts.connections();
    let mut window = LatencyHistogram::default();
    for s in seconds {
        window.add(s);
    }
    let cpu_cores_percent = r
        .cores
        .iter()
        .enumerate()
        .map(|(i, c)| match prev.cores.get(i) {
            Some(p) if c.total > p.total => {
                100.0 * c.busy.saturating_sub(p.busy) as f64 / (c.total - p.total) as f64
            }
            _ => 0.0,
        })
        .collect();
    let percent_of_core = |ticks: u64| 100.0 * ticks as f64 / hz / elapsed;
    let cpu_threads = THREAD_GROUPS
        .iter()
        .map(|&group| {
            let mut ticks = 0;
            let mut threads = 0;
            for (tid, (g, t)) in &r.threads {
                if *g != group {
                    continue;
                }
                threads += 1;
                // A thread seen for the first time started within the last second (or this is
                // the first sample, which shows 0 anyway).
                let before = prev.threads.get(tid).map_or(0, |(_, t)| *t);
                ticks += t.saturating_sub(before);
            }
            ThreadGroupCpu {
                group: group.to_owned(),
                percent: if first { 0.0 } else { percent_of_core(ticks) },
                threads,
            }
        })
        .collect();
    let process_cpu_percent = if first {
        0.0
    } else {
        percent_of_core(r.process.cpu_ticks.saturating_sub(prev.process_ticks))
    };
    let out = Sample {
        at_ms: now_ms(),
        connections: conns.per_shard.iter().sum(),
        connections_per_shard: conns.per_shard,
        transports: conns.transports,
        authenticated: conns.authenticated,
        logins_per_s: rate(logins, prev.logins),
        logins_in_flight: conns.logins_in_flight,
        logins_refused_total: conns.logins_refused,
        messages_per_s: rate(messages, prev.messages),
        deliveries_per_s: rate(deliveries, prev.deliveries),
        latency: Latency {
            p50_ms: window.quantile_ms(0.5),
            p90_ms: window.quantile_ms(0.9),
            p99_ms: window.quantile_ms(0.99),
            p999_ms: window.quantile_ms(0.999),
            sends: window.count(),
        },
        cpu_cores_percent,
        cpu_threads,
        process_cpu_percent,
        rss_bytes: r.process.rss_bytes,
    };
    *prev = Previous {
        at: Some(now),
        messages,
        deliveries,
        logins,
        cores: r.cores,
        threads: r.threads,
        process_ticks: r.process.cpu_ticks,
    };
    out
}

/// The data dir's size (every file under it) and its file system's free space. Blocking.
pub fn measure_store(dir: &Path) -> StoreUsage {
    let (free, total) = match rustix::fs::statvfs(dir) {
        Ok(s) => (
            s.f_bavail.saturating_mul(s.f_frsize),
            s.f_blocks.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    };
    StoreUsage {
        size_bytes: dir_bytes(dir.to_path_buf()),
        disk_free_bytes: free,
        disk_total_bytes: total,
        measured_at_ms: now_ms(),
    }
}

/// Bytes of every regular file under `root` (symlinks not followed). Files that vanish during
/// the walk (compaction) are skipped.
fn dir_bytes(root: PathBuf) -> u64 {
    let mut total = 0;
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 24]).unwrap();
        let usage = measure_store(dir.path());
        assert_eq!(usage.size_bytes, 1024);
        assert!(usage.disk_total_bytes >= usage.disk_free_bytes && usage.disk_total_bytes > 0);
    }
}
