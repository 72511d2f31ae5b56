//! `group`: one group of M members, O of them online, S of the online ones sending (each with up
//! to W messages in flight, or together at a paced rate). Every online member checks that it gets
//! every other sender's message exactly once, in the group's seq order, intact; the report gives
//! deliveries per second, the server's CPU per delivery, and the latency from a send to the last
//! online member that received it.
//!
//! Setup, not measured: the online members log in on the load threads (and start reading at
//! once, so the setup's group events never pile up), the offline ones are signed up and
//! disconnected, then an owner creates the group, invites everyone in batches, hands the group
//! to the first member and leaves (so the group is exactly the M members). The measured phase
//! starts when every online member has seen the last setup event.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame};
use serde::Serialize;
use tokio::sync::Notify;

use super::{Observe, Progress, on_threads, run_id, spawn_progress};
use crate::client::Client;
use crate::stats::{LATENCY_US_MAX, Measurements, Percentiles, per_second};
use crate::transport::{FrameReader, FrameWriter, Link, Transport};

/// Bytes of every message's content used for the sender, index and send time.
pub const HEADER_BYTES: usize = 16;
/// Sign-ups in flight at once while preparing users.
const SETUP_CONCURRENCY: usize = 128;
/// How long the online members may take to see the setup's last group event.
const SETUP_SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How late tokio's timer may wake a paced sender (its wheel has 1 ms slots).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// How often a listening member pings (the server's idle timeout is 60 s by default).
const HEARTBEAT: Duration = Duration::from_secs(20);
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
    pub sent: u64,
    pub acked: u64,
    /// Deliveries expected: every acked message to every online member but its sender.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub errors: u64,
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Sends the server refused with RATE_LIMITED (its per-connection request budget); the
    /// sender waited as told. Not errors.
    pub rate_limited: u64,
    pub delivery_acks: u64,
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
    /// Every message reached every online member once, in order, intact, with no error.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.corrupt == 0
            && self.errors == 0
    }
}

/// What the load threads and the main thread share.
struct Shared {
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
    acked: AtomicU64,
    delivered: AtomicU64,
    senders_done: AtomicUsize,
    progress: Arc<Progress>,
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
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        progress: Arc::new(Progress::default()),
    });
    let setup_started = Instant::now();
    let worker = {
        let (cfg, shared) = (cfg.clone(), Arc::clone(&shared));
        move |index: usize| {
            let (cfg, shared) = (cfg.clone(), Arc::clone(&shared));
            async move {
                let owned: Vec<usize> = (index..cfg.online).step_by(threads).collect();
                let members = log_in_online(&cfg, &owned).await;
                if let Ok(members) = &members {
                    let mut ids = shared.ids.lock().expect("not poisoned");
                    ids.extend(members.iter().map(|(n, _, id)| (*n, *id)));
                }
                // Meet the others at both barriers even on failure, so nobody waits forever.
                shared.ready.wait();
                let load = members.map(|m| Load::start(&cfg, m, run, &shared));
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
    for r in results? {
        total.merge(&r.m);
        for (key, us) in r.last_member_us {
            let worst = last_member.entry(key).or_default();
            *worst = (*worst).max(us);
        }
    }
    let mut to_last = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)?;
    for us in last_member.values() {
        to_last.record((*us).clamp(1, LATENCY_US_MAX))?;
    }
    let expected = total.acked * (cfg.online as u64 - 1);
    let lost = expected.saturating_sub(total.delivered);
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
        sent: total.sent,
        acked: total.acked,
        expected_deliveries: expected,
        deliveries: total.delivered,
        deliveries_per_s: per_second(total.delivered, cfg.duration),
        lost,
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        corrupt: total.corrupt,
        errors: total.errors,
        error_kinds: total.error_kinds.clone(),
        rate_limited: total.rate_limited,
        delivery_acks: total.delivery_acks,
        latency_us: percentiles(&to_last),
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

fn percentiles(h: &Histogram<u64>) -> Percentiles {
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

fn local_runtime<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, work)
}

fn member_name(cfg: &GroupConfig, n: usize) -> String {
    format!("{}g{n}", cfg.user_prefix)
}

/// Signs up and logs in this thread's online members: (member number, link, user id).
async fn log_in_online(
    cfg: &GroupConfig,
    owned: &[usize],
) -> anyhow::Result<Vec<(usize, Link, u64)>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(owned.len());
    for &n in owned {
        let (addr, limit, name) = (cfg.addr, Rc::clone(&limit), member_name(cfg, n));
        let password = cfg.password.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await?;
            let (link, id) = Link::sign_up(Transport::Tcp, addr, &name, &password, "bench")
                .await
                .with_context(|| format!("signing up {name}"))?;
            anyhow::Ok((n, link, id))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// On the main thread, while the load threads wait at `ready`: signs up the offline members,
/// creates the group with everyone, and waits until every online member has seen the last setup
/// event. Always passes `ready` (so the load threads never wait forever) and returns the group.
async fn set_up_group(cfg: &GroupConfig, shared: &Shared) -> anyhow::Result<u64> {
    let offline = sign_up_offline(cfg).await;
    let owner = async {
        let name = format!("{}gowner", cfg.user_prefix);
        Client::connect(cfg.addr)
            .await?
            .login_or_register(&name, &cfg.password, "bench")
            .await
            .with_context(|| format!("signing up {name}"))
    }
    .await;
    shared.ready.wait();
    let (offline, (mut owner, _)) = (offline?, owner?);
    let mut ids: Vec<u64> = {
        let mut online = shared.ids.lock().expect("not poisoned").clone();
        if online.len() != cfg.online {
            bail!(
                "only {} of {} online members logged in",
                online.len(),
                cfg.online
            );
        }
        online.sort_unstable();
        online.into_iter().map(|(_, id)| id).collect()
    };
    ids.extend(offline);
    let mut batches = ids.chunks(cfg.invite_batch);
    let first = batches.next().unwrap_or_default().to_vec();
    let create = Body::GroupCreate(v1::GroupCreate {
        name: format!("bench {:x}", run_id() & 0xffff_ffff),
        member_ids: first,
        join_policy: v1::JoinPolicy::Open.into(),
        ..Default::default()
    });
    let (conversation_id, mut last_seq) = match owner.request(create).await? {
        Body::GroupCreated(c) => {
            if let Some(r) = c.results.first() {
                bail!("GroupCreate refused user {}: code {}", r.user_id, r.code);
            }
            let group = c.group.context("GroupCreated without its group")?;
            (group.conversation_id, c.event_seq)
        }
        other => bail!("GroupCreate: {other:?}"),
    };
    for batch in batches {
        let invite = Body::GroupInvite(v1::GroupInvite {
            conversation_id,
            user_ids: batch.to_vec(),
        });
        match owner.request(invite).await? {
            Body::GroupOk(ok) => {
                if let Some(r) = ok.results.first() {
                    bail!("GroupInvite refused user {}: code {}", r.user_id, r.code);
                }
                last_seq = last_seq.max(ok.event_seq);
            }
            other => bail!("GroupInvite: {other:?}"),
        }
    }
    // The owner hands the group to member 0 and leaves: the group is exactly the M members,
    // and any of them may be online.
    let transfer = Body::GroupTransfer(v1::GroupTransfer {
        conversation_id,
        user_id: ids[0],
    });
    match owner.request(transfer).await? {
        Body::GroupOk(ok) => last_seq = last_seq.max(ok.event_seq),
        other => bail!("GroupTransfer: {other:?}"),
    }
    match owner
        .request(Body::GroupLeave(v1::GroupLeave { conversation_id }))
        .await?
    {
        Body::GroupOk(ok) => last_seq = last_seq.max(ok.event_seq),
        other => bail!("GroupLeave: {other:?}"),
    }
    shared
        .conversation_id
        .set(conversation_id)
        .expect("set once");
    // The measured phase starts once the setup's events have reached everyone.
    let deadline = Instant::now() + SETUP_SETTLE_TIMEOUT;
    while shared
        .last_seq
        .iter()
        .any(|s| s.load(Ordering::Relaxed) < last_seq)
    {
        if Instant::now() >= deadline {
            bail!(
                "online members did not see the setup's group events within {SETUP_SETTLE_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(conversation_id)
}

/// Signs up (or logs in) the members who stay offline, and returns their ids.
async fn sign_up_offline(cfg: &GroupConfig) -> anyhow::Result<Vec<u64>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(cfg.members - cfg.online);
    for n in cfg.online..cfg.members {
        let (addr, limit, name) = (cfg.addr, Rc::clone(&limit), member_name(cfg, n));
        let password = cfg.password.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await?;
            let (_, ok) = Client::connect(addr)
                .await?
                .login_or_register(&name, &password, "bench")
                .await
                .with_context(|| format!("signing up {name}"))?;
            anyhow::Ok(ok.user_id)
        }));
    }
    let mut ids = Vec::with_capacity(tasks.len());
    for t in tasks {
        ids.push(t.await??);
    }
    Ok(ids)
}

/// State shared by one online member's reader, sender and acker.
struct Conn {
    /// Online member number: its slot in `Shared::last_seq`.
    member: usize,
    in_flight: Cell<usize>,
    room: Notify,
    ack_due: Cell<Option<u64>>,
    ack_wake: Notify,
    write: tokio::sync::Mutex<FrameWriter>,
    stop: Cell<bool>,
    /// Set when the server said RATE_LIMITED (the per-connection request budget): no sends
    /// before then, as a client does.
    pause_until: Cell<Option<Instant>>,
    m: RefCell<Measurements>,
}

/// One load thread's measurements, and its deliveries' latency per message (by key) to the
/// last of its members.
struct ThreadResult {
    m: Measurements,
    last_member_us: HashMap<u64, u64>,
}

/// One load thread's running members.
struct Load {
    conns: Vec<Rc<Conn>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    senders: Vec<Sender>,
    last_member_us: Rc<RefCell<HashMap<u64, u64>>>,
}

impl Load {
    /// Starts reading every member's connection at once (setup events arrive before the
    /// measured phase); the senders wait for `finish`.
    fn start(
        cfg: &GroupConfig,
        members: Vec<(usize, Link, u64)>,
        run: u64,
        shared: &Arc<Shared>,
    ) -> Self {
        let last_member_us = Rc::new(RefCell::new(HashMap::new()));
        let mut load = Load {
            conns: Vec::with_capacity(members.len()),
            tasks: Vec::new(),
            senders: Vec::new(),
            last_member_us: Rc::clone(&last_member_us),
        };
        for (member, link, _) in members {
            let (read, write) = link.split();
            let conn = Rc::new(Conn {
                member,
                in_flight: Cell::new(0),
                room: Notify::new(),
                ack_due: Cell::new(None),
                ack_wake: Notify::new(),
                write: tokio::sync::Mutex::new(write),
                stop: Cell::new(false),
                pause_until: Cell::new(None),
                m: RefCell::new(Measurements::default()),
            });
            let reader = Reader {
                conn: Rc::clone(&conn),
                read,
                shared: Arc::clone(shared),
                size: cfg.size,
                last_seq: 0,
                last_index: vec![None; cfg.senders],
                ack_every: cfg.ack_every,
                acked_seq: 0,
                last_ack: None,
                last_member_us: Rc::clone(&last_member_us),
            };
            load.tasks.push(tokio::task::spawn_local(reader.run()));
            load.tasks
                .push(tokio::task::spawn_local(heartbeat(Rc::clone(&conn))));
            if !cfg.ack_every.is_zero() {
                load.tasks.push(tokio::task::spawn_local(ack(
                    Rc::clone(&conn),
                    Arc::clone(shared),
                )));
            }
            if member < cfg.senders {
                load.senders.push(Sender {
                    conn: Rc::clone(&conn),
                    number: member as u64,
                    run,
                    size: cfg.size,
                    window: cfg.window,
                    rate: cfg.rate.map(|r| r / cfg.senders as f64),
                    phase: member as f64 / cfg.senders as f64,
                });
            }
            load.conns.push(conn);
        }
        load
    }

    /// Sends for the configured duration, drains, stops, and returns what was measured.
    async fn finish(
        mut self,
        cfg: &GroupConfig,
        start: Instant,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<ThreadResult> {
        let conversation_id = *shared.conversation_id.get().expect("set before go");
        let end = start + cfg.duration;
        let mut senders = Vec::new();
        for sender in self.senders.drain(..) {
            let shared = Arc::clone(shared);
            senders.push(tokio::task::spawn_local(async move {
                let sent = sender.run(conversation_id, start, end).await;
                shared.senders_done.fetch_add(1, Ordering::AcqRel);
                sent
            }));
        }
        tokio::time::sleep_until(end.into()).await;
        // Drain: until every sender has its acks and every acked message has been delivered
        // to every other online member, or the timeout.
        let deadline = Instant::now() + cfg.drain_timeout;
        let expected_per_message = cfg.online as u64 - 1;
        while Instant::now() < deadline {
            let done = shared.senders_done.load(Ordering::Acquire) == cfg.senders;
            let expected = shared.acked.load(Ordering::Acquire) * expected_per_message;
            if done && shared.delivered.load(Ordering::Acquire) >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for c in &self.conns {
            c.stop.set(true);
            c.room.notify_one();
            c.ack_wake.notify_one();
        }
        for t in senders.iter().chain(&self.tasks) {
            t.abort();
        }
        let mut m = Measurements::default();
        for c in &self.conns {
            m.merge(&c.m.borrow());
        }
        let last_member_us = std::mem::take(&mut *self.last_member_us.borrow_mut());
        Ok(ThreadResult { m, last_member_us })
    }
}

struct Sender {
    conn: Rc<Conn>,
    number: u64,
    run: u64,
    size: usize,
    window: usize,
    /// This sender's messages per second; `None`: as fast as the window allows.
    rate: Option<f64>,
    /// Where in its period this sender's first message falls (0..1).
    phase: f64,
}

impl Sender {
    async fn run(self, conversation_id: u64, start: Instant, end: Instant) -> anyhow::Result<()> {
        let mut scratch = BytesMut::with_capacity(self.window * (self.size + 64));
        let mut frames = Vec::with_capacity(self.window);
        let mut index: u64 = 0;
        let interval = self
            .rate
            .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)));
        let mut due = start + interval.map_or(Duration::ZERO, |every| every.mul_f64(self.phase));
        while Instant::now() < end && !self.conn.stop.get() {
            // Held back by the server (window full): at a fixed rate the wait counts as latency.
            let mut held_back = false;
            while self.conn.in_flight.get() >= self.window {
                held_back = true;
                self.conn.room.notified().await;
                if self.conn.stop.get() {
                    return Ok(());
                }
            }
            if let Some(until) = self.conn.pause_until.take() {
                tokio::time::sleep_until(until.into()).await;
            }
            frames.clear();
            match interval {
                None => {
                    let now = start.elapsed();
                    for _ in self.conn.in_flight.get()..self.window {
                        frames.push(self.frame(conversation_id, index, now));
                        index += 1;
                    }
                }
                Some(every) => {
                    tokio::time::sleep_until(due.into()).await;
                    // As in `pairs`: stamped when due if the sender was held back or fell
                    // behind its schedule, so a stalled server cannot hide its queueing.
                    let now = Instant::now();
                    let behind = now.saturating_duration_since(due) > TIMER_SLACK;
                    let stamp = if held_back || behind { due } else { now };
                    frames.push(self.frame(conversation_id, index, stamp - start));
                    index += 1;
                    due += every;
                }
            }
            self.conn
                .in_flight
                .set(self.conn.in_flight.get() + frames.len());
            self.conn.m.borrow_mut().sent += frames.len() as u64;
            self.conn
                .write
                .lock()
                .await
                .write(&frames, &mut scratch)
                .await?;
        }
        // Wait for the last acks before counting this sender done.
        while self.conn.in_flight.get() > 0 && !self.conn.stop.get() {
            self.conn.room.notified().await;
        }
        Ok(())
    }

    fn frame(&self, conversation_id: u64, index: u64, sent_at: Duration) -> Frame {
        let mut content = Vec::with_capacity(self.size);
        content.put_u64_le((self.number << INDEX_BITS) | index);
        content.put_u64_le(sent_at.as_nanos() as u64);
        content.resize(self.size, filler(index));
        Frame {
            request_id: index + 1,
            body: Some(Body::Send(v1::Send {
                client_msg_id: format!("{:x}-{}-{index}", self.run, self.number),
                conversation_id,
                content_type: v1::ContentType::Custom as i32,
                content: content.into(),
                ..Default::default()
            })),
        }
    }
}

fn filler(index: u64) -> u8 {
    (index % 251) as u8
}

/// A member that only listens still pings, as a client does, so that a long setup (100,000
/// sign-ups) does not end its connection by the server's idle timeout.
async fn heartbeat(conn: Rc<Conn>) -> anyhow::Result<()> {
    let mut scratch = BytesMut::with_capacity(64);
    let mut every = tokio::time::interval(HEARTBEAT);
    every.tick().await;
    while !conn.stop.get() {
        every.tick().await;
        let ping = Frame {
            request_id: 0,
            body: Some(Body::Ping(v1::Ping { client_time_ms: 0 })),
        };
        conn.write.lock().await.write(&[ping], &mut scratch).await?;
    }
    Ok(())
}

/// Sends the reader's `DeliveryAck`s (request id 0: no reply wanted), at most one per
/// `ack_every`.
async fn ack(conn: Rc<Conn>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut scratch = BytesMut::with_capacity(64);
    loop {
        conn.ack_wake.notified().await;
        if conn.stop.get() {
            return Ok(());
        }
        let (Some(seq), Some(&conversation_id)) =
            (conn.ack_due.take(), shared.conversation_id.get())
        else {
            continue;
        };
        let frame = Frame {
            request_id: 0,
            body: Some(Body::DeliveryAck(v1::DeliveryAck {
                conversation_id,
                seq,
            })),
        };
        conn.write
            .lock()
            .await
            .write(&[frame], &mut scratch)
            .await?;
        conn.m.borrow_mut().delivery_acks += 1;
    }
}

struct Reader {
    conn: Rc<Conn>,
    read: FrameReader,
    shared: Arc<Shared>,
    size: usize,
    /// The newest group seq seen: pushes of one group arrive in seq order.
    last_seq: u64,
    /// Per sender, the newest index received: a sender's indexes only grow.
    last_index: Vec<Option<u64>>,
    ack_every: Duration,
    acked_seq: u64,
    last_ack: Option<Instant>,
    last_member_us: Rc<RefCell<HashMap<u64, u64>>>,
}

impl Reader {
    async fn run(mut self) -> anyhow::Result<()> {
        while let Some(frame) = self.read.next().await? {
            self.on_frame(frame);
            while let Some(frame) = self.read.next_buffered()? {
                self.on_frame(frame);
            }
            self.ack_batch();
        }
        if !self.conn.stop.get() {
            self.conn
                .m
                .borrow_mut()
                .error("connection closed by the server");
            self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame.body {
            Some(Body::SendAck(_)) => {
                self.conn.m.borrow_mut().acked += 1;
                self.shared.acked.fetch_add(1, Ordering::AcqRel);
                self.release();
            }
            Some(Body::Push(push)) => {
                if let Some(m) = push.message {
                    self.on_push(&m);
                }
            }
            Some(Body::Error(e)) if e.code == ErrorCode::RateLimited as i32 => {
                // Back-pressure, not a failure: the sender waits as told and goes on (the
                // refused message took no seq and is not expected anywhere).
                self.conn.m.borrow_mut().rate_limited += 1;
                let wait = Duration::from_millis(e.retry_after_ms.max(1));
                self.conn.pause_until.set(Some(Instant::now() + wait));
                self.release();
            }
            Some(Body::Error(e)) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
                self.conn.m.borrow_mut().error(code.as_str_name());
                self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                if frame.request_id != 0 {
                    self.release();
                }
            }
            Some(Body::Kicked(k)) => {
                let reason = v1::KickReason::try_from(k.reason).unwrap_or_default();
                self.conn.m.borrow_mut().error(reason.as_str_name());
                self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn release(&self) {
        self.conn
            .in_flight
            .set(self.conn.in_flight.get().saturating_sub(1));
        self.conn.room.notify_one();
    }

    fn on_push(&mut self, msg: &v1::Message) {
        // Before the group exists (setup), pushes are the setup's own group events.
        if self
            .shared
            .conversation_id
            .get()
            .is_some_and(|c| *c != msg.conversation_id)
        {
            return;
        }
        let mut m = self.conn.m.borrow_mut();
        let duplicate_seq = msg.seq == self.last_seq;
        if msg.seq < self.last_seq {
            m.out_of_order += 1;
        }
        self.last_seq = self.last_seq.max(msg.seq);
        self.shared.last_seq[self.conn.member].store(self.last_seq, Ordering::Relaxed);
        if msg.content_type != v1::ContentType::Custom as i32 {
            return;
        }
        let Some(start) = self.shared.start_at.get() else {
            return;
        };
        let now = start.elapsed();
        let mut content = &msg.content[..];
        if content.len() != self.size {
            m.corrupt += 1;
            return;
        }
        let key = content.get_u64_le();
        let sent_at = Duration::from_nanos(content.get_u64_le());
        let (sender, index) = (key >> INDEX_BITS, key & ((1 << INDEX_BITS) - 1));
        if content.iter().any(|&b| b != filler(index)) {
            m.corrupt += 1;
        }
        let Some(last) = self.last_index.get_mut(sender as usize) else {
            m.corrupt += 1;
            return;
        };
        if duplicate_seq || last.is_some_and(|l| index <= l) {
            m.duplicates += 1;
            return;
        }
        *last = Some(index);
        let latency = now.saturating_sub(sent_at);
        m.record_delivery(now, latency);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut worst = self.last_member_us.borrow_mut();
        let entry = worst.entry(key).or_default();
        *entry = (*entry).max(us);
        self.shared.delivered.fetch_add(1, Ordering::AcqRel);
        self.shared.progress.done.fetch_add(1, Ordering::Relaxed);
    }

    fn ack_batch(&mut self) {
        if self.ack_every.is_zero() || self.last_seq <= self.acked_seq {
            return;
        }
        let now = Instant::now();
        if self
            .last_ack
            .is_some_and(|t| now.duration_since(t) < self.ack_every)
        {
            return;
        }
        self.last_ack = Some(now);
        self.acked_seq = self.last_seq;
        self.conn.ack_due.set(Some(self.last_seq));
        self.conn.ack_wake.notify_one();
    }
}
