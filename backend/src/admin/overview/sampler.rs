//! The overview's sampler: once a second it reads the counters (gateway, delivery, logins),
//! the send-to-ack latencies and `/proc`, turns them into rates and percentages, and keeps the
//! result in a ring of `observe.history_seconds` samples. The API only reads the ring, so an
//! operator's refresh costs nothing on the server's hot paths. The store's size on disk is
//! measured every `observe.store_size_interval_s` (a walk of the data dir but the local file
//! storage), the files' every `observe.files_size_interval_s` on a thread of their own
//! (`disk.rs`): the loop never waits for that walk, however many files there are.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::disk::{self, FilesUsage, StoreUsage, Walk};
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

/// What the sampler keeps for the API and `/metrics`.
pub struct Overview {
    ring: Mutex<VecDeque<Arc<Sample>>>,
    /// Every send-to-ack latency since start (for the Prometheus histogram).
    cumulative: Mutex<LatencyHistogram>,
    store: Mutex<StoreUsage>,
    /// The local file storage's directory, measured apart (and far less often).
    pub(super) files: Mutex<FilesUsage>,
    history: usize,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Overview {
    pub fn new(history_seconds: u32) -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            cumulative: Mutex::new(LatencyHistogram::default()),
            store: Mutex::new(StoreUsage::default()),
            files: Mutex::new(FilesUsage::default()),
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

    /// The store's last measurement, with the files' last one.
    pub fn store(&self) -> StoreUsage {
        let files = *lock(&self.files);
        StoreUsage {
            files_bytes: files.size_bytes,
            files_measured_at_ms: files.measured_at_ms,
            ..*lock(&self.store)
        }
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
    run_with(admin, Arc::new(disk::dir_bytes)).await;
}

/// [`run`], the local file storage walked by `walk_files`.
pub(super) async fn run_with(admin: Arc<Admin>, walk_files: Walk) {
    let cfg = admin.backend.settings.observe.clone();
    let window = cfg.latency_window_seconds.max(1) as usize;
    let store_every = u64::from(cfg.store_size_interval_s.max(1));
    let data_dir = admin.backend.settings.storage.data_dir.clone();
    let files_dir = disk::local_files_dir(&admin.backend.settings);
    if let Some(dir) = files_dir.clone() {
        let every = Duration::from_secs(u64::from(cfg.files_size_interval_s.max(1)));
        tokio::spawn(disk::measure_files(
            Arc::clone(&admin),
            dir,
            every,
            walk_files,
        ));
    }
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
            let (dir, skip) = (data_dir.clone(), files_dir.clone());
            if let Ok(usage) =
                tokio::task::spawn_blocking(move || disk::measure_store(&dir, skip.as_deref()))
                    .await
            {
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
