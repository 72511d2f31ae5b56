//! `connect`: open N authenticated connections, hold them (pinging at the server's heartbeat
//! interval, as a client does, and nothing else), and report the connect and login rate and the
//! server's resident memory per connection. Every held connection must still answer a ping
//! after the last memory sample: one the server closed meanwhile is counted in `dropped` and
//! `errors`, so the memory per connection is never divided among connections that are gone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Observe, Progress, on_threads, spawn_progress};
use crate::client::Client;
use crate::signup::{Identity, Refusals, sign_up_tcp};

/// Connections one source address may open to one server address: the ephemeral port range
/// (32768–60999 by default) less a margin.
pub const CONNS_PER_SOURCE_IP_MAX: usize = 25_000;
/// Connection attempts in flight per load thread.
const CONNECT_CONCURRENCY: usize = 128;

#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub addr: SocketAddr,
    pub conns: usize,
    pub hold: Duration,
    pub threads: usize,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub scenario: &'static str,
    /// When, where, and which server build and settings (filled in after the run).
    pub provenance: crate::provenance::Provenance,
    pub conns: usize,
    pub connected: u64,
    /// Held connections that failed before the end of the hold (kicked, closed, no `Pong`):
    /// counted in `errors` too.
    pub dropped: u64,
    /// Failed sign-ups and dropped connections.
    pub errors: u64,
    /// Logins the server said "later" to (admission), each retried after its `retry_after_ms`.
    pub setup_refusals: u64,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub hold_s: f64,
    pub source_ips: usize,
    pub server_pid: Option<u32>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub server_rss_kib_per_conn: Option<f64>,
    /// Growth from the first half of the connections to all of them, per connection: the cost
    /// of one more connection, without the server's one-time costs (caches, thread heaps).
    pub server_rss_kib_per_conn_marginal: Option<f64>,
    pub server_cpu_s: Option<f64>,
}

/// The source address for connection `i` when connecting to `server`.
pub(crate) fn source_for(server: SocketAddr, i: usize, sources: usize) -> Option<IpAddr> {
    if sources <= 1 {
        return None;
    }
    let last = u8::try_from(1 + i % sources).unwrap_or(1);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .filter(|_| server.ip().is_loopback() && server.is_ipv4())
}

pub fn run(cfg: &ConnectConfig, observe: &Observe) -> anyhow::Result<ConnectReport> {
    super::ensure_fd_limit(cfg.conns as u64 + 256)?;
    let sources = cfg.conns.div_ceil(CONNS_PER_SOURCE_IP_MAX).max(1);
    if sources > 1 && !(cfg.addr.ip().is_loopback() && cfg.addr.is_ipv4()) {
        anyhow::bail!(
            "{} connections need {sources} source addresses; spreading them is only done for a 127.0.0.x server",
            cfg.conns
        );
    }
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let half_open = Arc::new(Barrier::new(threads + 1));
    let half_measured = Arc::new(Barrier::new(threads + 1));
    let connected = Arc::new(Barrier::new(threads + 1));
    let released = Arc::new(Barrier::new(threads + 1));
    let progress = Arc::new(Progress::default());
    let before = observe.sample();
    let started = Instant::now();
    let printer = spawn_progress(Arc::clone(&progress), "connected", observe.progress);

    let barriers = [half_open, half_measured, connected, released];
    let refusals = Refusals::default();
    let worker = {
        let (cfg, refusals) = (cfg.clone(), refusals.clone());
        let (barriers, progress) = (barriers.clone(), Arc::clone(&progress));
        move |index: usize| {
            let (cfg, refusals) = (cfg.clone(), refusals.clone());
            let (barriers, progress) = (barriers.clone(), Arc::clone(&progress));
            async move {
                let mine: Vec<usize> = (index..cfg.conns).step_by(threads).collect();
                let (first, second) = mine.split_at(mine.len() / 2);
                let (clients, failed) = open_all(&cfg, first, sources, &progress, &refusals).await;
                let mut held = Held {
                    clients,
                    dropped: 0,
                };
                held.count(failed);
                let [half_open, half_measured, connected, released] = barriers;
                held.wait(half_open).await;
                held.wait(half_measured).await;
                let more = open_all(&cfg, second, sources, &progress, &refusals);
                let (more, failed) = held.hold_during(more).await;
                held.clients.extend(more);
                held.count(failed);
                held.wait(connected).await;
                // Hold until the main thread has measured, then check that each is still there.
                held.wait(released).await;
                held.check().await;
                progress.errors.fetch_add(held.dropped, Ordering::Relaxed);
                anyhow::Ok(held.dropped)
            }
        }
    };
    let [half_open, half_measured, connected, released] = &barriers;
    let workers = std::thread::spawn(move || on_threads(threads, worker));
    half_open.wait();
    let half_ok = progress.done.load(Ordering::Relaxed);
    // Both samples follow the same rule (the half one used to be read mid-ramp, the last one
    // after the hold, so the marginal compared a busy server with a settled one).
    let paused = Instant::now();
    let half = settled_sample(observe, cfg.hold);
    let paused = paused.elapsed();
    half_measured.wait();
    connected.wait();
    let connect_s = started.elapsed().saturating_sub(paused).as_secs_f64();
    let ok = progress.done.load(Ordering::Relaxed);
    let after = settled_sample(observe, cfg.hold);
    released.wait();
    progress.finished.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        p.thread().unpark();
        let _ = p.join();
    }
    let dropped: u64 = workers
        .join()
        .map_err(|_| anyhow::anyhow!("load threads panicked"))??
        .iter()
        .sum();
    let rss_per_conn = before
        .zip(after)
        .filter(|_| ok > 0)
        .map(|(b, a)| (a.rss_kib as f64 - b.rss_kib as f64) / ok as f64);
    let marginal = half
        .zip(after)
        .filter(|_| ok > half_ok)
        .map(|(h, a)| (a.rss_kib as f64 - h.rss_kib as f64) / (ok - half_ok) as f64);
    Ok(ConnectReport {
        scenario: "connect",
        provenance: Default::default(),
        conns: cfg.conns,
        connected: ok,
        dropped,
        errors: progress.errors.load(Ordering::Relaxed),
        setup_refusals: refusals.count(),
        connect_s,
        connects_per_s: if connect_s > 0.0 {
            ok as f64 / connect_s
        } else {
            0.0
        },
        hold_s: cfg.hold.as_secs_f64(),
        source_ips: sources,
        server_pid: observe.server_pid,
        server_rss_kib_before: before.map(|s| s.rss_kib),
        server_rss_kib_after: after.map(|s| s.rss_kib),
        server_rss_kib_per_conn: rss_per_conn,
        server_rss_kib_per_conn_marginal: marginal,
        server_cpu_s: before
            .zip(after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
    })
}

/// RSS growth between two samples this close is taken as settled.
const SETTLED_KIB: u64 = 256;
/// Time between the samples that decide whether the server has settled.
const SETTLE_STEP: Duration = Duration::from_millis(500);

/// The server's memory once it has settled: after `hold` with the connections idle, and then
/// once two samples `SETTLE_STEP` apart differ by at most `SETTLED_KIB` (pending frees, a
/// memtable flush; `hold` more at most). Every sample of a run is taken by this rule.
fn settled_sample(observe: &Observe, hold: Duration) -> Option<crate::procstat::ProcSample> {
    std::thread::sleep(hold);
    let mut last = observe.sample()?;
    let deadline = Instant::now() + hold;
    while Instant::now() < deadline {
        std::thread::sleep(SETTLE_STEP);
        let next = observe.sample()?;
        let settled = next.rss_kib.abs_diff(last.rss_kib) <= SETTLED_KIB;
        last = next;
        if settled {
            break;
        }
    }
    Some(last)
}

/// One load thread's logged-in connections, pinged while they are held.
struct Held {
    clients: Vec<Client>,
    /// Connections that failed while held (taken out of `clients`).
    dropped: u64,
}

impl Held {
    /// Runs `work` while keeping the connections alive.
    async fn hold_during<F: std::future::Future>(&mut self, work: F) -> F::Output {
        let (out, failed) = crate::heartbeat::while_waiting(&mut self.clients, work).await;
        self.count(failed);
        out
    }

    /// Waits at `barrier` (off this thread, so that the pings go on meanwhile).
    async fn wait(&mut self, barrier: Arc<Barrier>) {
        let waited = tokio::task::spawn_blocking(move || {
            barrier.wait();
        });
        // The closure cannot panic; a failed join would only mean the runtime is going away.
        let _ = self.hold_during(waited).await;
    }

    /// Pings each connection once more: one that does not answer is dropped.
    async fn check(&mut self) {
        let failed = crate::heartbeat::ping_all(&mut self.clients).await;
        self.count(failed);
    }

    fn count(&mut self, failed: Vec<anyhow::Error>) {
        for e in failed {
            if self.dropped < 3 {
                eprintln!("a held connection failed: {e:#}");
            }
            self.dropped += 1;
        }
    }
}

async fn open_all(
    cfg: &ConnectConfig,
    mine: &[usize],
    sources: usize,
    progress: &Arc<Progress>,
    refusals: &Refusals,
) -> (Vec<Client>, Vec<anyhow::Error>) {
    let limit = Rc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(mine.len());
    for &i in mine {
        let (limit, progress) = (Rc::clone(&limit), Arc::clone(progress));
        let refusals = refusals.clone();
        let (addr, password) = (cfg.addr, cfg.password.clone());
        let name = format!("{}c{i}", cfg.user_prefix);
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await.expect("open semaphore");
            let who = Identity::bench(&name, &password);
            let source = source_for(addr, i, sources);
            match sign_up_tcp(addr, source, &who, &refusals).await {
                Ok((c, _)) => {
                    progress.done.fetch_add(1, Ordering::Relaxed);
                    anyhow::Ok(Some(c))
                }
                Err(e) => {
                    if progress.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connection {i}: {e:#}");
                    }
                    Ok(None)
                }
            }
        }));
    }
    // Those logged in ping while the rest sign up; a failed sign-up is counted above, a
    // connection that failed while held is returned with its error.
    let mut clients = Vec::with_capacity(mine.len());
    let mut failed = Vec::new();
    match crate::heartbeat::gather(tasks, Option::as_mut).await {
        Ok(all) => {
            for (c, error) in all {
                match (c, error) {
                    (Some(c), None) => clients.push(c),
                    (_, Some(e)) => failed.push(e),
                    (None, None) => {}
                }
            }
        }
        Err(e) => failed.push(e.context("a sign-up task failed")),
    }
    (clients, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_only_when_needed_and_only_on_loopback() {
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(source_for(local, 5, 1), None);
        assert_eq!(
            source_for(local, 5, 3),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
        let remote: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        assert_eq!(source_for(remote, 5, 3), None);
    }
}
