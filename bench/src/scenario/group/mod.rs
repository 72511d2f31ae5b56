//! `group`: one group of M members, O of them online, S of the online ones sending (each with up
//! to W messages in flight, or together at a paced rate). Every send must be answered, and every
//! online member checks that it gets every other sender's acked messages exactly once, in the
//! group's seq order, intact; the report gives deliveries per second, the server's CPU per
//! delivery, and the latency from a send to the last online member that received it.
//!
//! Setup, not measured: the online members log in on the load threads (and start reading at
//! once, so the setup's group events never pile up), the offline ones are signed up and
//! disconnected, then an owner creates the group, invites everyone in batches, hands the group
//! to the first member and leaves (so the group is exactly the M members). The measured phase
//! starts when every online member has seen the last setup event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Observe, Progress, local_runtime, on_threads, run_id, spawn_progress};

mod load;
mod setup;

use crate::check::Faults;
use crate::client::Client;
use crate::signup::Refusals;
use crate::stats::{LATENCY_US_MAX, Measurements, Percentiles, per_second};
use crate::transport::Link;
use load::Load;
use setup::{log_in_online, set_up_group};

/// Bytes of every message's content used for the sender, index and send time.
pub const HEADER_BYTES: usize = 16;
/// Sign-ups in flight at once while preparing users.
const SETUP_CONCURRENCY: usize = 128;
/// How long the online members may take to see the setup's last group event.
const SETUP_SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How late tokio's timer may wake a paced sender (its wheel has 1 ms slots).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// A message key: the sender's number above this many bits, its index below.
const INDEX_BITS: u32 = 40;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub addr: SocketAddr,
    pub members: usize,
    pub online: usize,
    pub senders: usize,
    /// Content bytes per message (at least `HEADER_BYTES`).
    pub size: usize,
    pub window: usize,
    /// Total messages per second over all senders; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub threads: usize,
    pub user_prefix: String,
    pub password: String,
    pub drain_timeout: Duration,
    /// Users per `GroupCreate` / `GroupInvite` (the server's `groups.invite_batch_max`).
    pub invite_batch: usize,
    /// Each online member acknowledges delivery at most this often (0: never), as a group
    /// client does: not per message.
    pub ack_every: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub scenario: &'static str,
    pub members: usize,
    pub online: usize,
    pub senders: usize,
    pub size_bytes: usize,
    pub window: usize,
    pub rate_target_msgs_per_s: Option<f64>,
    pub duration_s: f64,
    pub threads: usize,
    pub conversation_id: u64,
    pub setup_s: f64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    pub sent: u64,
    pub acked: u64,
    /// Deliveries expected: every acked message to every online member but its sender.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Deliveries in the whole seconds of the run, per second (the drain's are not counted).
    pub deliveries_per_s: f64,
    /// `lost` counts each acked message once per member lacking it.
    #[serde(flatten)]
    pub faults: Faults,
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Sends the server refused with RATE_LIMITED (its per-connection request budget); the
    /// sender waited as told. Not errors in a closed loop; a paced run with any is not clean
    /// (its latencies would cover only the sends the server took).
    pub rate_limited: u64,
    pub delivery_acks: u64,
    /// Of those, refused as over the member's request budget (not errors: the next ack of a
    /// later seq covers it).
    pub delivery_acks_refused: u64,
    /// From a send to the last online member receiving it, per message.
    pub latency_us: Percentiles,
    /// From a send to each member receiving it, per delivery.
    pub delivery_latency_us: Percentiles,
    pub server_pid: Option<u32>,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_cpu_us_per_message: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub bench_cpu_s: Option<f64>,
    pub provenance: crate::provenance::Provenance,
}

impl GroupReport {
    /// Every send was answered, every paced slot sent (and taken: none refused as over the
    /// rate), and every acked message reached every other online member once, in order,
    /// intact, with no error.
    pub fn clean(&self) -> bool {
        self.faults.none() && (self.rate_target_msgs_per_s.is_none() || self.rate_limited == 0)
    }
}

/// What the load threads and the main thread share.
pub(super) struct Shared {
    /// (online member number, user id), filled by the load threads.
    ids: Mutex<Vec<(usize, u64)>>,
    ready: Barrier,
    /// Set by the main thread once setup is over (failed or not). A watch, not a barrier: the
    /// load threads keep running their readers while they wait.
    go: tokio::sync::watch::Receiver<bool>,
    conversation_id: OnceLock<u64>,
    start_at: OnceLock<Instant>,
    /// The newest group seq each online member has seen.
    last_seq: Vec<AtomicU64>,
    /// Per sender, how many messages it has sent (its indexes below this are real).
    sent_by: Vec<AtomicU64>,
    acked: AtomicU64,
    delivered: AtomicU64,
    senders_done: AtomicUsize,
    progress: Arc<Progress>,
    /// Sign-ups the server said "later" to, over the setup's threads.
    setup_refusals: Refusals,
}

pub fn run(cfg: &GroupConfig, observe: &Observe) -> anyhow::Result<GroupReport> {
    if cfg.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES} bytes (sender, index and timestamp)");
    }
    if cfg.online < 2 || cfg.online > cfg.members {
        bail!("--online must be at least 2 and at most --members");
    }
    if cfg.senders == 0 || cfg.senders > cfg.online {
        bail!("--senders must be at least 1 and at most --online");
    }
    if cfg.window == 0 || cfg.threads == 0 || cfg.invite_batch == 0 {
        bail!("--window, --threads and --invite-batch must be at least 1");
    }
    super::ensure_fd_limit(cfg.online as u64 + SETUP_CONCURRENCY as u64 + 64)?;
    let threads = cfg.threads.min(cfg.online);
    let run = run_id();
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        ids: Mutex::new(Vec::with_capacity(cfg.online)),
        ready: Barrier::new(threads + 1),
        go: go_rx,
        conversation_id: OnceLock::new(),
        start_at: OnceLock::new(),
        last_seq: (0..cfg.online).map(|_| AtomicU64::new(0)).collect(),
        sent_by: (0..cfg.senders).map(|_| AtomicU64::new(0)).collect(),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        progress: Arc::new(Progress::default()),
        setup_refusals: Refusals::default(),
    });
    let setup_started = Instant::now();
    let worker = {
        let (cfg, shared) = (cfg.clone(), Arc::clone(&shared));
        move |index: usize| {
            let (cfg, shared) = (cfg.clone(), Arc::clone(&shared));
            async move {
                let owned: Vec<usize> = (index..cfg.online).step_by(threads).collect();
                let members = log_in_online(&cfg, &owned, &shared.setup_refusals).await;
                if let Ok(members) = &members {
                    let mut ids = shared.ids.lock().expect("not poisoned");
                    ids.extend(members.iter().map(|(n, _, id)| (*n, *id)));
                }
                // Meet the others at both barriers even on failure, so nobody waits forever;
                // the members ping while the others finish their setup.
                let ready = {
                    let shared = Arc::clone(&shared);
                    tokio::task::spawn_blocking(move || {
                        shared.ready.wait();
                    })
                };
                let members = hold_until(members, ready).await;
                let load = members.map(|(m, every)| Load::start(&cfg, m, run, &shared, every));
                let mut go = shared.go.clone();
                // Err only if the main thread is gone: the check below tells.
                let _ = go.wait_for(|go| *go).await;
                let load = load?;
                if shared.conversation_id.get().is_none() {
                    bail!("setup failed");
                }
                let start = *shared.start_at.get().expect("set before go");
                load.finish(&cfg, start, &shared).await
            }
        }
    };
    let workers = std::thread::spawn(move || on_threads(threads, worker));
    let setup = local_runtime(set_up_group(cfg, &shared));
    let before = observe.sample();
    let bench_before = crate::procstat::sample(std::process::id()).ok();
    shared.start_at.set(Instant::now()).expect("set once");
    let setup_s = setup_started.elapsed().as_secs_f64();
    let printer = spawn_progress(
        Arc::clone(&shared.progress),
        "delivered",
        observe.progress && setup.is_ok(),
    );
    // Nobody may be listening any more (a load thread failed): the join below tells.
    let _ = go.send(true);
    let results = workers
        .join()
        .map_err(|_| anyhow::anyhow!("load threads panicked"))?;
    shared.progress.finished.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        p.thread().unpark();
        let _ = p.join();
    }
    let conversation_id = setup?;
    let after = observe.sample();
    let bench_after = crate::procstat::sample(std::process::id()).ok();

    let mut total = Measurements::default();
    let mut last_member: HashMap<u64, u64> = HashMap::new();
    let mut sends = Vec::new();
    let mut got = Vec::new();
    for r in results? {
        total.merge(&r.m);
        for (key, us) in r.last_member_us {
            let worst = last_member.entry(key).or_default();
            *worst = (*worst).max(us);
        }
        sends.extend(r.sends);
        got.extend(r.got);
    }
    let outcome = crate::check::fan_out(&sends, &got);
    total.faults.lost += outcome.lost;
    total.faults.unanswered += outcome.unanswered;
    total.faults.duplicates += outcome.duplicates;
    total.faults.out_of_order += outcome.out_of_order;
    for _ in 0..outcome.bad_answers {
        total.error("answer to no outstanding send");
    }
    let mut to_last = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)?;
    for us in last_member.values() {
        to_last.record((*us).clamp(1, LATENCY_US_MAX))?;
    }
    let expected = total.acked * (cfg.online as u64 - 1);
    // Throughput over the run's whole seconds: what was delivered during the drain is not
    // part of the rate.
    let whole_secs = cfg.duration.as_secs().max(1) as usize;
    let in_window: u64 = total.delivered_per_s.iter().take(whole_secs).sum();
    let server_cpu = before.zip(after).map(|(b, a)| a.cpu.saturating_sub(b.cpu));
    let per = |n: u64| {
        server_cpu
            .filter(|_| n > 0)
            .map(|c| c.as_secs_f64() * 1e6 / n as f64)
    };
    Ok(GroupReport {
        scenario: "group",
        members: cfg.members,
        online: cfg.online,
        senders: cfg.senders,
        size_bytes: cfg.size,
        window: cfg.window,
        rate_target_msgs_per_s: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        threads,
        conversation_id,
        setup_s,
        setup_refusals: shared.setup_refusals.count(),
        sent: total.sent,
        acked: total.acked,
        expected_deliveries: expected,
        deliveries: total.delivered,
        deliveries_per_s: per_second(in_window, Duration::from_secs(whole_secs as u64)),
        faults: total.faults,
        error_kinds: total.error_kinds.clone(),
        rate_limited: total.rate_limited,
        delivery_acks: total.delivery_acks,
        delivery_acks_refused: total.delivery_acks_refused,
        latency_us: crate::stats::percentiles(&to_last),
        delivery_latency_us: total.percentiles(),
        server_pid: observe.server_pid,
        server_cpu_s: server_cpu.map(|c| c.as_secs_f64()),
        server_cpu_us_per_delivery: per(total.delivered),
        server_cpu_us_per_message: per(total.acked),
        server_rss_kib_before: before.map(|s| s.rss_kib),
        server_rss_kib_after: after.map(|s| s.rss_kib),
        bench_cpu_s: bench_before
            .zip(bench_after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
        provenance: Default::default(),
    })
}

/// Keeps the logged-in members alive until `ready` (the other threads' and the owner's setup):
/// then each as a link for the load, with the ping interval the server asked for; or the first
/// failure.
async fn hold_until(
    members: anyhow::Result<Vec<(usize, Client, u64)>>,
    ready: tokio::task::JoinHandle<()>,
) -> anyhow::Result<(Vec<(usize, Link, u64)>, Duration)> {
    let members = match members {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.await;
            return Err(e);
        }
    };
    let mut numbers = Vec::with_capacity(members.len());
    let mut clients = Vec::with_capacity(members.len());
    for (n, c, id) in members {
        numbers.push((n, id));
        clients.push(c);
    }
    let every = crate::heartbeat::interval(clients.iter().filter_map(|c| c.heartbeat).min());
    let (_, failed) = crate::heartbeat::while_waiting(&mut clients, ready).await;
    if let Some(e) = failed.into_iter().next() {
        return Err(e.context("an online member, held while the setup went on"));
    }
    let links = numbers
        .into_iter()
        .zip(clients)
        .map(|((n, id), c)| (n, Link::Tcp(c), id))
        .collect();
    Ok((links, every))
}

fn member_name(cfg: &GroupConfig, n: usize) -> String {
    format!("{}g{n}", cfg.user_prefix)
}
