//! `pairs`: P pairs of users message each other. Each side keeps up to W messages in flight
//! (sent, not yet acked), or sends at a fixed rate; every send must be answered, every acked
//! message must reach the peer, and every push is checked (once, in order, right content). Its
//! latency counts from when it was sent, or, at a fixed rate, from when it was due, so a stalled
//! server cannot hide its queueing (no coordinated omission): a paced sender sends every slot
//! due before the stop, during the drain if the server held it back.

//!
//! Here: the run (sign-up, start, report); `traffic`: one load thread's connections, run and
//! drained; `sender` and `reader`: each connection's write and read halves.

mod reader;
mod sender;
mod traffic;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::phases::StopAt;
use super::{Observe, Progress, on_threads, run_id, spawn_progress};
use crate::check::Faults;
use crate::signup::{Identity, Refusals, Target, sign_up};
use crate::stats::{Measurements, Percentiles, per_second};
use crate::transport::{Link, Transport};
pub(crate) use traffic::{Traffic, drive};

/// Bytes of every message's content used for the index and the send time.
pub const HEADER_BYTES: usize = 16;
/// Sign-ups in flight per load thread.
const SETUP_CONCURRENCY: usize = 32;

#[derive(Debug, Clone)]
pub struct PairsConfig {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub pairs: usize,
    /// Content bytes per message (at least `HEADER_BYTES`).
    pub size: usize,
    pub window: usize,
    pub duration: Duration,
    /// Total target messages per second over all senders; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    pub threads: usize,
    pub user_prefix: String,
    pub password: String,
    /// After the run, how long to wait for the last acks and pushes.
    pub drain_timeout: Duration,
    /// Receivers send a `DeliveryAck` per read batch, as a real client does (the server then
    /// writes cursors and sends receipts); off only for comparison.
    pub delivery_ack: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairsReport {
    pub scenario: &'static str,
    pub transport: Transport,
    pub pairs: usize,
    pub size_bytes: usize,
    pub window: usize,
    pub duration_s: f64,
    pub rate_target_msgs_per_s: Option<f64>,
    pub threads: usize,
    pub delivery_ack: bool,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub delivered_msgs_per_s: f64,
    pub latency_us: Percentiles,
    #[serde(flatten)]
    pub faults: Faults,
    pub rate_limited: u64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    pub delivery_acks: u64,
    /// `SyncNeeded` hints received: pushes were lost between cluster nodes (see `lost`).
    pub sync_hints: u64,
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    pub server_pid: Option<u32>,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub bench_cpu_s: Option<f64>,
    pub delivered_per_s: Vec<u64>,
    pub latency_max_us_per_s: Vec<u64>,
    /// (percentile, µs) points of the latency distribution.
    pub distribution: Vec<(f64, u64)>,
    /// When, where, and which server build and settings (filled in after the run).
    pub provenance: crate::provenance::Provenance,
}

impl PairsReport {
    /// Whether every send was answered, every paced slot sent, and every acked message
    /// arrived exactly once, in order, intact, with no error.
    pub fn clean(&self) -> bool {
        self.faults.none()
    }
}

pub fn run(cfg: &PairsConfig, observe: &Observe) -> anyhow::Result<PairsReport> {
    if cfg.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES} bytes (index and timestamp)");
    }
    if cfg.pairs == 0 || cfg.window == 0 || cfg.threads == 0 {
        bail!("--pairs, --window and --threads must be at least 1");
    }
    super::ensure_fd_limit(2 * cfg.pairs as u64 + 64)?;
    let threads = cfg.threads.min(cfg.pairs);
    let run = run_id();
    let meet = Arc::new(Meeting {
        ready: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        start_at: OnceLock::new(),
        progress: Arc::new(Progress::default()),
        setup_refusals: Refusals::default(),
    });

    let worker = {
        let (cfg, meet) = (cfg.clone(), Arc::clone(&meet));
        move |index: usize| {
            let (cfg, meet) = (cfg.clone(), Arc::clone(&meet));
            async move {
                let owned: Vec<usize> = (index..cfg.pairs).step_by(threads).collect();
                let setup = set_up(&cfg, &owned, &meet.setup_refusals).await;
                // Meet the others at both barriers even on failure, so nobody waits forever.
                meet.ready.wait();
                meet.go.wait();
                let pairs = setup?;
                let start = *meet.start_at.get().expect("set before go");
                let stop = Arc::new(StopAt::new(start, cfg.duration));
                let traffic = Traffic::of(&cfg, start, run);
                drive(&traffic, pairs, &stop, None, &meet.progress).await
            }
        }
    };
    let workers = std::thread::spawn(move || on_threads(threads, worker));
    let progress = Arc::clone(&meet.progress);
    meet.ready.wait();
    let before = observe.sample();
    let bench_before = crate::procstat::sample(std::process::id()).ok();
    meet.start_at.set(Instant::now()).expect("set once");
    let printer = spawn_progress(Arc::clone(&progress), "delivered", observe.progress);
    meet.go.wait();
    let results = workers
        .join()
        .map_err(|_| anyhow::anyhow!("load threads panicked"))?;
    progress.finished.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        p.thread().unpark();
        let _ = p.join();
    }
    let after = observe.sample();
    let bench_after = crate::procstat::sample(std::process::id()).ok();
    let mut total = Measurements::default();
    for m in results? {
        total.merge(&m);
    }

    let whole_secs = cfg.duration.as_secs().max(1) as usize;
    let in_window: u64 = total.delivered_per_s.iter().take(whole_secs).sum();
    let server_cpu = before.zip(after).map(|(b, a)| a.cpu.saturating_sub(b.cpu));
    Ok(PairsReport {
        scenario: "pairs",
        transport: cfg.transport,
        pairs: cfg.pairs,
        size_bytes: cfg.size,
        window: cfg.window,
        duration_s: cfg.duration.as_secs_f64(),
        rate_target_msgs_per_s: cfg.rate,
        threads,
        delivery_ack: cfg.delivery_ack,
        sent: total.sent,
        acked: total.acked,
        delivered: total.delivered,
        delivered_msgs_per_s: per_second(in_window, Duration::from_secs(whole_secs as u64)),
        latency_us: total.percentiles(),
        faults: total.faults,
        rate_limited: total.rate_limited,
        setup_refusals: meet.setup_refusals.count(),
        delivery_acks: total.delivery_acks,
        sync_hints: total.sync_hints,
        error_kinds: total.error_kinds.clone(),
        server_pid: observe.server_pid,
        server_cpu_s: server_cpu.map(|c| c.as_secs_f64()),
        server_cpu_us_per_msg: server_cpu
            .filter(|_| total.delivered > 0)
            .map(|c| c.as_secs_f64() * 1e6 / total.delivered as f64),
        server_rss_kib_before: before.map(|s| s.rss_kib),
        server_rss_kib_after: after.map(|s| s.rss_kib),
        bench_cpu_s: bench_before
            .zip(bench_after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
        distribution: total.distribution(),
        delivered_per_s: total.delivered_per_s,
        latency_max_us_per_s: total.latency_max_us_per_s,
        provenance: Default::default(),
    })
}

/// Where the load threads and the main thread meet: after sign-up, and at the start.
struct Meeting {
    ready: Barrier,
    go: Barrier,
    start_at: OnceLock<Instant>,
    progress: Arc<Progress>,
    setup_refusals: Refusals,
}

/// One logged-in connection of a pair.
pub(crate) struct Side {
    pub(super) link: Link,
    pub(super) user_id: u64,
}

/// Signs up (or logs in) both users of each owned pair, `SETUP_CONCURRENCY` at a time,
/// counting the server's "later" answers in `refusals`.
pub(crate) async fn set_up(
    cfg: &PairsConfig,
    owned: &[usize],
    refusals: &Refusals,
) -> anyhow::Result<Vec<(Side, Side)>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::new();
    for &i in owned {
        for side in ["a", "b"] {
            let (addr, transport, limit) = (cfg.addr, cfg.transport, Rc::clone(&limit));
            let name = format!("{}{side}{i}", cfg.user_prefix);
            let (password, refusals) = (cfg.password.clone(), refusals.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let _permit = limit.acquire().await?;
                let who = Identity::bench(&name, &password);
                let to = Target {
                    transport,
                    addr,
                    source: None,
                };
                let (link, ok) = sign_up(to, &who, &refusals).await?;
                anyhow::Ok(Side {
                    link,
                    user_id: ok.user_id,
                })
            }));
        }
    }
    let mut sides = Vec::with_capacity(tasks.len());
    for t in tasks {
        sides.push(t.await??);
    }
    let mut pairs = Vec::with_capacity(owned.len());
    let mut it = sides.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        pairs.push((a, b));
    }
    Ok(pairs)
}
