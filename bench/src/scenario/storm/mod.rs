//! `storm`: P established pairs exchange messages at a fixed rate (as `pairs --rate` does)
//! while M other clients connect and log in at once (with tokens, or passwords), as after a
//! deploy or a network blip. Reports the pairs' latency before, during and after the storm, and
//! how long until all M were logged in, with every refusal, retry and reset counted.
//!
//! Phase 0 (unmeasured): the pairs' users and the M storm users are signed up or reused by
//! prefix; each storm user logs in once by password (its token kept in memory) and disconnects.
//! Phase 1: the pairs run for `warmup`. Phase 2: the storm; clients that are told "later"
//! (`retry_after_ms`) or lose their connection before the login is answered retry, within
//! `storm_timeout`. Phase 3: the pairs run `after` more, then drain; every message is checked.
//! Storm clients stay connected (reading, pinging) until the end.

mod client;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;

use self::client::{Storm, Tally};
use super::connect::{CONNS_PER_SOURCE_IP_MAX, source_for};
use super::pairs::{self, HEADER_BYTES, PairsConfig, Traffic};
use super::phases::{PhaseLatency, PhaseStats, StopAt, Window};
use super::{Observe, Progress, on_threads, run_id, spawn_progress};
use crate::check::Faults;
use crate::signup::Refusals;
use crate::stats::{Measurements, Percentiles};
use crate::transport::Transport;

/// Storm users signed up at once per load thread in phase 0.
const SETUP_CONCURRENCY: usize = 64;
/// After phase 0, the server counts as settled once it used less than `SETTLED_CPU` in a
/// `SETTLE_STEP`; it is waited for `SETTLE_MAX` at most (a fixed `SETTLE_STEP` × 4 without a
/// server pid to watch).
const SETTLE_STEP: Duration = Duration::from_millis(500);
const SETTLED_CPU: Duration = Duration::from_millis(50);
const SETTLE_MAX: Duration = Duration::from_secs(15);
/// Beyond the worst case of the run, how long the main thread waits for the storm threads'
/// reports before giving up on them.
const REPORT_SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StormLogin {
    /// The token each user got in phase 0 (a client reconnecting).
    Token,
    /// Username and password (argon2 on the server for every login).
    Password,
}

#[derive(Debug, Clone)]
pub struct StormConfig {
    pub addr: SocketAddr,
    pub pairs: usize,
    pub size: usize,
    pub window: usize,
    /// Messages per second over all the pairs' senders.
    pub rate: f64,
    pub warmup: Duration,
    pub after: Duration,
    pub drain_timeout: Duration,
    /// Clients in the storm.
    pub storm: usize,
    pub storm_login: StormLogin,
    /// Storm connections being connected or logged in at once, per load thread.
    pub storm_concurrency: usize,
    /// A storm client still not logged in this long after the storm began gives up.
    pub storm_timeout: Duration,
    pub threads: usize,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub provenance: crate::provenance::Provenance,
    pub pairs: usize,
    pub size_bytes: usize,
    pub window: usize,
    pub rate_target_msgs_per_s: f64,
    pub warmup_s: f64,
    pub after_s: f64,
    pub threads: usize,
    pub storm_clients: usize,
    pub storm_login: StormLogin,
    pub storm_concurrency_per_thread: usize,
    pub storm_timeout_s: f64,
    pub logged_in: u64,
    /// Seconds from the first storm connect until the last storm login; `None` unless all M
    /// logged in.
    pub all_logged_in_s: Option<f64>,
    /// Seconds from the first storm connect until the last login or give-up: the "during"
    /// window of the pairs' latency.
    pub storm_window_s: f64,
    pub logins_per_s: f64,
    /// Answers that said "later" (`retry_after_ms`), by error code.
    pub refusals: BTreeMap<String, u64>,
    /// Phase 0's sign-ups (pairs and storm users) the server said "later" to, each retried
    /// after its `retry_after_ms`; not part of `refusals`.
    pub setup_refusals: u64,
    /// Connections refused, reset or closed before the login was answered, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Accepted, then reset before any reply (a restart's lingering listeners).
    pub reset_before_reply: u64,
    pub retries: u64,
    /// Storm clients that never logged in.
    pub failures: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    /// Logged-in storm connections the server closed before the end of the run.
    pub dropped_after_login: u64,
    /// From a storm client's first connect to its `LoginOk`, retries included, in ms.
    pub login_latency_ms: LoginLatency,
    /// The pairs' latency (µs) by when each message was in flight: delivered before the first
    /// storm connect, overlapping the storm window, sent after the last storm login.
    pub latency_before_us: PhaseStats,
    pub latency_during_us: PhaseStats,
    pub latency_after_us: PhaseStats,
    pub latency_us: Percentiles,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// The established pairs' messages.
    #[serde(flatten)]
    pub faults: Faults,
    pub error_kinds: BTreeMap<String, u64>,
    pub server_pid: Option<u32>,
    pub server_cpu_s: Option<f64>,
    /// Server CPU within the storm window.
    pub server_cpu_storm_s: Option<f64>,
    /// The storm window's CPU less the pairs' own (their rate in the warmup), per login.
    pub server_cpu_us_per_login: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub bench_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoginLatency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl StormReport {
    /// Every pair message was sent, answered and arrived once, in order, intact; every storm
    /// client logged in and stayed.
    pub fn clean(&self) -> bool {
        self.faults.none()
            && self.failures == 0
            && self.logged_in == self.storm_clients as u64
            && self.dropped_after_login == 0
    }
}

/// Where the load threads and the main thread meet.
struct Meeting {
    ready: Barrier,
    go: Barrier,
    start_at: OnceLock<Instant>,
    stop: OnceLock<Arc<StopAt>>,
    window: Arc<Window>,
    progress: Arc<Progress>,
    storm_progress: Arc<Progress>,
    /// Phase 0's sign-ups the server said "later" to.
    setup_refusals: Refusals,
}

/// What a storm thread reports once its clients are all logged in or given up.
type StormDone = anyhow::Result<Tally>;

pub fn run(cfg: &StormConfig, observe: &Observe) -> anyhow::Result<StormReport> {
    if cfg.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES} bytes (index and timestamp)");
    }
    if cfg.pairs == 0 || cfg.window == 0 || cfg.threads == 0 || cfg.storm == 0 {
        bail!("--pairs, --window, --threads and --storm must be at least 1");
    }
    if !cfg.rate.is_finite() || cfg.rate <= 0.0 {
        bail!("--rate must be a number above 0");
    }
    // Both sides of every pair and every storm client live in this process.
    super::ensure_fd_limit(2 * cfg.pairs as u64 + cfg.storm as u64 + 256)?;
    // Phase 0's connections linger in TIME_WAIT on this side: count them against the ports.
    let sources = (2 * cfg.storm + 2 * cfg.pairs)
        .div_ceil(CONNS_PER_SOURCE_IP_MAX)
        .max(1);
    let pair_threads = cfg.threads.min(cfg.pairs);
    let storm_threads = cfg.threads.min(cfg.storm);
    let meet = Arc::new(Meeting {
        ready: Barrier::new(pair_threads + storm_threads + 1),
        go: Barrier::new(pair_threads + storm_threads + 1),
        start_at: OnceLock::new(),
        stop: OnceLock::new(),
        window: Arc::new(Window::default()),
        progress: Arc::new(Progress::default()),
        storm_progress: Arc::new(Progress::default()),
        setup_refusals: Refusals::default(),
    });
    let run = run_id();
    let pairs_cfg = PairsConfig {
        addr: cfg.addr,
        transport: Transport::Tcp,
        pairs: cfg.pairs,
        size: cfg.size,
        window: cfg.window,
        duration: Duration::ZERO,
        rate: Some(cfg.rate),
        threads: pair_threads,
        user_prefix: cfg.user_prefix.clone(),
        password: cfg.password.clone(),
        drain_timeout: cfg.drain_timeout,
        delivery_ack: true,
    };

    let pair_worker = {
        let (pcfg, meet) = (pairs_cfg.clone(), Arc::clone(&meet));
        move |index: usize| {
            let (pcfg, meet) = (pcfg.clone(), Arc::clone(&meet));
            async move {
                let owned: Vec<usize> = (index..pcfg.pairs).step_by(pair_threads).collect();
                let setup = pairs::set_up(&pcfg, &owned, &meet.setup_refusals).await;
                // Meet the others at both barriers even on failure, so nobody waits forever.
                meet.ready.wait();
                meet.go.wait();
                let sides = setup?;
                let start = *meet.start_at.get().expect("set before go");
                let stop = meet.stop.get().expect("set before go");
                let phases = Rc::new(PhaseLatency::new(Arc::clone(&meet.window)));
                let traffic = Traffic::of(&pcfg, start, run);
                let m = pairs::drive(
                    &traffic,
                    sides,
                    stop,
                    Some(Rc::clone(&phases)),
                    &meet.progress,
                )
                .await?;
                anyhow::Ok((m, phases.take()))
            }
        }
    };
    let (done_tx, done_rx) = mpsc::channel::<StormDone>();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let storm_worker = {
        let (cfg, meet) = (cfg.clone(), Arc::clone(&meet));
        let done_tx = std::sync::Mutex::new(done_tx);
        move |index: usize| {
            let (cfg, meet) = (cfg.clone(), Arc::clone(&meet));
            let done_tx = done_tx.lock().expect("not poisoned").clone();
            let release = release_rx.clone();
            async move {
                storm_thread(&cfg, index, storm_threads, sources, &meet, done_tx, release).await
            }
        }
    };
    let pair_workers = std::thread::spawn(move || on_threads(pair_threads, pair_worker));
    let storm_workers = std::thread::spawn(move || on_threads(storm_threads, storm_worker));

    meet.ready.wait();
    // Phase 0 just closed M connections and wrote M tokens: the storm must not start on a
    // server still busy with that, or "before" measures phase 0's tail.
    settle(observe);
    let before = observe.sample();
    let bench_before = crate::procstat::sample(std::process::id()).ok();
    let start = Instant::now();
    meet.start_at.set(start).expect("set once");
    // The worst case; brought forward to `after` past the storm's end once that is known.
    let stop = Arc::new(StopAt::new(
        start,
        cfg.warmup + cfg.storm_timeout + cfg.after,
    ));
    meet.stop.set(Arc::clone(&stop)).expect("set once");
    let printer = spawn_progress(Arc::clone(&meet.progress), "delivered", observe.progress);
    let storm_printer = spawn_progress(
        Arc::clone(&meet.storm_progress),
        "storm logged in",
        observe.progress,
    );
    meet.go.wait();

    std::thread::sleep((start + cfg.warmup).saturating_duration_since(Instant::now()));
    let at_storm = observe.sample();
    let report_by = Instant::now() + cfg.storm_timeout + REPORT_SLACK;
    let mut tally = Tally::default();
    let mut storm_errors = Vec::new();
    for _ in 0..storm_threads {
        match done_rx.recv_timeout(report_by.saturating_duration_since(Instant::now())) {
            Ok(Ok(t)) => tally.merge(&t),
            Ok(Err(e)) => storm_errors.push(e),
            Err(e) => {
                storm_errors.push(anyhow::anyhow!("a storm thread did not report: {e}"));
                break;
            }
        }
    }
    let after_storm = observe.sample();
    // The storm ends with its last login; with give-ups, when the last one gave up (now).
    let storm_end = tally
        .last_login
        .filter(|_| tally.logged_in == cfg.storm as u64)
        .unwrap_or_else(|| start.elapsed());
    meet.window.close(storm_end);
    stop.bring_forward(storm_end + cfg.after);
    let meet_progress = (Arc::clone(&meet.progress), Arc::clone(&meet.storm_progress));

    let pair_results = pair_workers.join();
    let after = observe.sample();
    let bench_after = crate::procstat::sample(std::process::id()).ok();
    // The storm clients were held open until now; let them go.
    let _ = release_tx.send(true);
    let storm_results = storm_workers.join();
    for p in [&meet_progress.0, &meet_progress.1] {
        p.finished.store(true, Ordering::Relaxed);
    }
    for p in [printer, storm_printer].into_iter().flatten() {
        p.thread().unpark();
        let _ = p.join();
    }
    if let Some(e) = storm_errors.into_iter().next() {
        return Err(e);
    }
    let dropped: u64 = storm_results
        .map_err(|_| anyhow::anyhow!("storm threads panicked"))??
        .into_iter()
        .sum();
    let mut total = Measurements::default();
    let mut phases: [Histogram<u64>; 3] =
        std::array::from_fn(|_| super::phases::latency_histogram());
    for (m, split) in pair_results.map_err(|_| anyhow::anyhow!("load threads panicked"))?? {
        total.merge(&m);
        for (into, h) in phases.iter_mut().zip(&split) {
            into.add(h).expect("same bounds");
        }
    }

    let opened = meet.window.opened().unwrap_or(cfg.warmup);
    let storm_window = storm_end.saturating_sub(opened);
    let all_in = (tally.logged_in == cfg.storm as u64)
        .then(|| {
            tally
                .last_login
                .map(|l| l.saturating_sub(opened).as_secs_f64())
        })
        .flatten();
    let cpu = |a: Option<crate::procstat::ProcSample>, b: Option<crate::procstat::ProcSample>| {
        a.zip(b)
            .map(|(a, b)| b.cpu.saturating_sub(a.cpu).as_secs_f64())
    };
    let warm_cpu = cpu(before, at_storm);
    let storm_cpu = cpu(at_storm, after_storm);
    let per_login = warm_cpu.zip(storm_cpu).and_then(|(warm, storm)| {
        let baseline = warm / cfg.warmup.as_secs_f64().max(1e-3) * storm_window.as_secs_f64();
        (tally.logged_in > 0).then(|| (storm - baseline).max(0.0) * 1e6 / tally.logged_in as f64)
    });
    let lat = &tally.login_latency_us;
    let ms = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Ok(StormReport {
        scenario: "storm",
        provenance: Default::default(),
        pairs: cfg.pairs,
        size_bytes: cfg.size,
        window: cfg.window,
        rate_target_msgs_per_s: cfg.rate,
        warmup_s: cfg.warmup.as_secs_f64(),
        after_s: cfg.after.as_secs_f64(),
        threads: cfg.threads,
        storm_clients: cfg.storm,
        storm_login: cfg.storm_login,
        storm_concurrency_per_thread: cfg.storm_concurrency,
        storm_timeout_s: cfg.storm_timeout.as_secs_f64(),
        logged_in: tally.logged_in,
        all_logged_in_s: all_in,
        storm_window_s: storm_window.as_secs_f64(),
        logins_per_s: crate::stats::per_second(tally.logged_in, storm_window),
        reset_before_reply: tally
            .disconnects
            .get("reset_before_reply")
            .copied()
            .unwrap_or(0),
        refusals: tally.refusals.clone(),
        setup_refusals: meet.setup_refusals.count(),
        disconnects: tally.disconnects.clone(),
        retries: tally.retries,
        failures: tally.failures.values().sum(),
        failure_kinds: tally.failures.clone(),
        dropped_after_login: dropped,
        login_latency_ms: LoginLatency {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: if lat.is_empty() {
                0.0
            } else {
                lat.max() as f64 / 1000.0
            },
        },
        latency_before_us: PhaseStats::of(&phases[0]),
        latency_during_us: PhaseStats::of(&phases[1]),
        latency_after_us: PhaseStats::of(&phases[2]),
        latency_us: total.percentiles(),
        sent: total.sent,
        acked: total.acked,
        delivered: total.delivered,
        faults: total.faults,
        error_kinds: total.error_kinds.clone(),
        server_pid: observe.server_pid,
        server_cpu_s: cpu(before, after),
        server_cpu_storm_s: storm_cpu,
        server_cpu_us_per_login: per_login,
        server_rss_kib_before: before.map(|s| s.rss_kib),
        server_rss_kib_after: after.map(|s| s.rss_kib),
        bench_cpu_s: bench_before
            .zip(bench_after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
    })
}

/// Waits until the server's CPU goes quiet (see `SETTLED_CPU`), within `SETTLE_MAX`.
fn settle(observe: &Observe) {
    let deadline = Instant::now() + SETTLE_MAX;
    let Some(mut last) = observe.sample() else {
        std::thread::sleep(SETTLE_STEP * 4);
        return;
    };
    while Instant::now() < deadline {
        std::thread::sleep(SETTLE_STEP);
        let Some(next) = observe.sample() else { return };
        let used = next.cpu.saturating_sub(last.cpu);
        last = next;
        if used < SETTLED_CPU {
            return;
        }
    }
}

/// One storm load thread: phase 0 for its share of the users, then the storm at the end of the
/// warmup; reports its tally, holds its connections until released, and returns how many of
/// them the server closed meanwhile.
async fn storm_thread(
    cfg: &StormConfig,
    index: usize,
    threads: usize,
    sources: usize,
    meet: &Meeting,
    done: mpsc::Sender<StormDone>,
    mut release: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let names: Vec<(usize, String)> = (index..cfg.storm)
        .step_by(threads)
        .map(|i| (i, format!("{}s{i}", cfg.user_prefix)))
        .collect();
    let token = cfg.storm_login == StormLogin::Token;
    let refusals = &meet.setup_refusals;
    let setup = client::prepare(
        cfg.addr,
        names,
        &cfg.password,
        token,
        SETUP_CONCURRENCY,
        refusals,
    )
    .await;
    meet.ready.wait();
    meet.go.wait();
    let creds = match setup {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(anyhow::anyhow!("storm setup: {e:#}")));
            return Ok(0);
        }
    };
    let start = *meet.start_at.get().expect("set before go");
    let storm_at = start + cfg.warmup;
    tokio::time::sleep_until(storm_at.into()).await;
    meet.window.open(start.elapsed());
    let storm = Rc::new(Storm {
        addr: cfg.addr,
        start,
        deadline: storm_at + cfg.storm_timeout,
        limit: Rc::new(tokio::sync::Semaphore::new(cfg.storm_concurrency.max(1))),
        tally: Rc::default(),
        dropped: Rc::default(),
        progress: Arc::clone(&meet.storm_progress),
    });
    let mut logins = tokio::task::JoinSet::new();
    for (i, cred) in creds {
        let storm = Rc::clone(&storm);
        let source = source_for(cfg.addr, i, sources);
        logins.spawn_local(async move { storm.log_in(i, source, &cred).await });
    }
    let mut holders = tokio::task::JoinSet::new();
    while let Some(joined) = logins.join_next().await {
        if let Some((client, heartbeat)) = joined? {
            let storm = Rc::clone(&storm);
            holders.spawn_local(async move { storm.hold(client, heartbeat).await });
        }
    }
    let tally = std::mem::take(&mut *storm.tally.borrow_mut());
    let _ = done.send(Ok(tally));
    drop(done);
    // Held (and read, and pinged) until the pairs are done; the sender cannot go before.
    let _ = release.wait_for(|go| *go).await;
    let dropped = storm.dropped.get();
    holders.abort_all();
    Ok(dropped)
}

pub fn table(r: &StormReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "storm: {} pairs at {:.0} msgs/s ({} B, window {}), {} clients logging in by {} ({} at once per thread), {} load threads",
        r.pairs,
        r.rate_target_msgs_per_s,
        r.size_bytes,
        r.window,
        r.storm_clients,
        match r.storm_login {
            StormLogin::Token => "token",
            StormLogin::Password => "password",
        },
        r.storm_concurrency_per_thread,
        r.threads
    );
    let all = r
        .all_logged_in_s
        .map_or_else(|| "not all".to_owned(), |s| format!("{s:.2} s"));
    let _ = writeln!(
        t,
        "  storm              {} of {} logged in; all in: {all};  window {:.2} s ({:.0} logins/s)",
        r.logged_in, r.storm_clients, r.storm_window_s, r.logins_per_s
    );
    let l = &r.login_latency_ms;
    let _ = writeln!(
        t,
        "  login ms           p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (connect → LoginOk, retries included)",
        l.p50, l.p99, l.p999, l.max
    );
    let kinds = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(
        t,
        "  refusals           {};  disconnects {};  retries {}",
        kinds(&r.refusals),
        kinds(&r.disconnects),
        r.retries
    );
    let _ = writeln!(
        t,
        "  reset before reply {};  failures {} ({});  dropped after login {}",
        r.reset_before_reply,
        r.failures,
        kinds(&r.failure_kinds),
        r.dropped_after_login
    );
    crate::report::setup_refusals_line(&mut t, r.setup_refusals);
    for (name, p) in [
        ("before", &r.latency_before_us),
        ("during", &r.latency_during_us),
        ("after", &r.latency_after_us),
    ] {
        let _ = writeln!(
            t,
            "  pairs µs {name:7}   p50 {}  p99 {}  p99.9 {}  max {}  ({} msgs)",
            p.p50, p.p99, p.p999, p.max, p.messages
        );
    }
    let _ = writeln!(
        t,
        "  pairs              sent {} acked {} delivered {};  {}",
        r.sent, r.acked, r.delivered, r.faults
    );
    for (kind, n) in &r.error_kinds {
        let _ = writeln!(t, "    {n} × {kind}");
    }
    let opt = |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.d$}"));
    let _ = writeln!(
        t,
        "  server cpu         {} s;  in the storm window {} s = {} µs per login beyond the pairs' own",
        opt(r.server_cpu_s, 2),
        opt(r.server_cpu_storm_s, 2),
        opt(r.server_cpu_us_per_login, 1)
    );
    crate::report::memory_line(
        &mut t,
        r.server_rss_kib_before,
        r.server_rss_kib_after,
        r.bench_cpu_s,
    );
    t += &r.provenance.lines();
    t
}
