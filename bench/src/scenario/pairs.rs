//! `pairs`: P pairs of users message each other. Each side keeps up to W messages in flight
//! (sent, not yet acked), or sends at a fixed rate; every send must be answered, every acked
//! message must reach the peer, and every push is checked (once, in order, right content). Its
//! latency counts from when it was sent, or, at a fixed rate, from when it was due, so a stalled
//! server cannot hide its queueing (no coordinated omission): a paced sender sends every slot
//! due before the stop, during the drain if the server held it back.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{Buf, BufMut, BytesMut};
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame};
use serde::Serialize;
use tokio::sync::Notify;

use super::phases::{PhaseLatency, StopAt};
use super::{Observe, Progress, on_threads, run_id, spawn_progress};
use crate::check::{Arrival, Sends, Stream, slots_before};
use crate::signup::{Identity, Refusals, Target, sign_up};
use crate::stats::{Measurements, Percentiles, per_second};
use crate::transport::{FrameReader, FrameWriter, Link, Transport};

/// Bytes of every message's content used for the index and the send time.
pub const HEADER_BYTES: usize = 16;
/// How late tokio's timer may wake a paced sender (its wheel has 1 ms slots).
const TIMER_SLACK: Duration = Duration::from_millis(2);
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
    /// Acked messages the peer never received.
    pub lost: u64,
    /// Sends the server neither acked nor refused before the drain ended.
    pub unanswered: u64,
    /// Paced slots due before the stop that were never sent (the window stayed full).
    pub unsent: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub errors: u64,
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
        self.lost == 0
            && self.unanswered == 0
            && self.unsent == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.corrupt == 0
            && self.errors == 0
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
        lost: total.lost,
        unanswered: total.unanswered,
        unsent: total.unsent,
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        corrupt: total.corrupt,
        errors: total.errors,
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

/// One direction of a pair: what its sender sent and the server answered, what its receiver
/// got.
#[derive(Debug, Default)]
struct Direction {
    sends: RefCell<Sends>,
    got: RefCell<Stream>,
    last_seq: Cell<u64>,
    conversation_id: Cell<u64>,
}

impl Direction {
    /// Every send answered and every acked message received.
    fn settled(&self) -> bool {
        let sends = self.sends.borrow();
        sends.unanswered() == 0 && sends.lost_by(&self.got.borrow()) == 0
    }
}

/// One logged-in connection of a pair.
pub(crate) struct Side {
    link: Link,
    user_id: u64,
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

/// State shared by one connection's writer, reader and acker.
struct Conn {
    in_flight: Cell<usize>,
    room: Notify,
    /// The newest (conversation, seq) the reader has and has not acked yet.
    ack_due: Cell<Option<(u64, u64)>>,
    ack_wake: Notify,
    /// The sender and the acker take turns on the write half.
    write: tokio::sync::Mutex<FrameWriter>,
    stop: Cell<bool>,
    /// Set when the server said RATE_LIMITED: no sends before then.
    pause_until: Cell<Option<Instant>>,
    /// This load thread's measurements, shared by its connections: one latency histogram per
    /// thread, not per connection (2,000 of them would be 280 MB to zero as the run starts).
    m: Rc<RefCell<Measurements>>,
    /// A paced sender's schedule (first slot, interval): every slot before the stop is sent.
    schedule: Option<(Instant, Duration)>,
    /// Until the sender has sent everything it is meant to.
    sending: Cell<bool>,
}

/// What the pairs' traffic is, for `drive`: the shape of the load and when it started.
pub(crate) struct Traffic {
    pub pairs: usize,
    pub size: usize,
    pub window: usize,
    pub rate: Option<f64>,
    pub drain_timeout: Duration,
    pub delivery_ack: bool,
    pub start: Instant,
    pub run: u64,
}

impl Traffic {
    pub fn of(cfg: &PairsConfig, start: Instant, run: u64) -> Self {
        Self {
            pairs: cfg.pairs,
            size: cfg.size,
            window: cfg.window,
            rate: cfg.rate,
            drain_timeout: cfg.drain_timeout,
            delivery_ack: cfg.delivery_ack,
            start,
            run,
        }
    }
}

/// Runs the pairs' traffic until `stop`, then drains; every delivery's latency also goes to
/// `phases` when given.
pub(crate) async fn drive(
    cfg: &Traffic,
    pairs: Vec<(Side, Side)>,
    stop: &Arc<StopAt>,
    phases: Option<Rc<PhaseLatency>>,
    progress: &Arc<Progress>,
) -> anyhow::Result<Measurements> {
    let (start, run) = (cfg.start, cfg.run);
    let senders = 2 * cfg.pairs;
    let per_sender_rate = cfg.rate.map(|r| r / senders as f64);
    let mut conns = Vec::new();
    let mut tasks = Vec::new();
    let senders_here = (2 * pairs.len()).max(1) as f64;
    let mut sender_index = 0usize;
    let measured = Rc::new(RefCell::new(Measurements::default()));
    for (a, b) in pairs {
        let a_to_b = Rc::new(Direction::default());
        let b_to_a = Rc::new(Direction::default());
        for (me, peer_id, outgoing, incoming) in [
            (a.link, b.user_id, Rc::clone(&a_to_b), Rc::clone(&b_to_a)),
            (b.link, a.user_id, b_to_a, a_to_b),
        ] {
            let (read, write) = me.split();
            let interval = per_sender_rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)));
            let phase = sender_index as f64 / senders_here;
            let conn = Rc::new(Conn {
                in_flight: Cell::new(0),
                room: Notify::new(),
                ack_due: Cell::new(None),
                ack_wake: Notify::new(),
                write: tokio::sync::Mutex::new(write),
                stop: Cell::new(false),
                pause_until: Cell::new(None),
                m: Rc::clone(&measured),
                schedule: interval.map(|every| (start + every.mul_f64(phase), every)),
                sending: Cell::new(true),
            });
            let sender = Sender {
                conn: Rc::clone(&conn),
                out: Rc::clone(&outgoing),
                to: peer_id,
                run,
                size: cfg.size,
                window: cfg.window,
                start,
                stop: Arc::clone(stop),
            };
            sender_index += 1;
            tasks.push(counted(&conn, progress, "sender", sender.run()));
            if cfg.delivery_ack {
                tasks.push(counted(
                    &conn,
                    progress,
                    "delivery ack",
                    ack(Rc::clone(&conn)),
                ));
            }
            let reader = Reader {
                conn: Rc::clone(&conn),
                read,
                delivery_ack: cfg.delivery_ack,
                acked_seq: 0,
                outgoing: Rc::clone(&outgoing),
                incoming,
                start,
                size: cfg.size,
                phases: phases.clone(),
                progress: Arc::clone(progress),
            };
            tasks.push(counted(&conn, progress, "reader", reader.run()));
            conns.push((conn, outgoing));
        }
    }
    // Run, then drain: until every paced slot due before the stop is sent, every send answered
    // and every acked message received, within the timeout.
    stop.wait().await;
    let drain_deadline = Instant::now() + cfg.drain_timeout;
    loop {
        let settled = conns
            .iter()
            .all(|(c, out)| !c.sending.get() && c.in_flight.get() == 0 && out.settled());
        if settled || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (c, _) in &conns {
        c.stop.set(true);
        c.room.notify_one();
        c.ack_wake.notify_one();
    }
    for t in tasks {
        if t.is_finished() {
            // Its failure, if any, was counted by `counted`; a panic was not.
            if t.await.is_err() {
                measured.borrow_mut().error("a connection task panicked");
            }
        } else {
            t.abort();
        }
    }
    let stop_at = stop.at();
    let mut total = measured.take();
    for (c, out) in &conns {
        let sends = out.sends.borrow();
        let got = out.got.borrow();
        total.lost += sends.lost_by(&got);
        total.unanswered += sends.unanswered();
        total.duplicates += got.duplicates;
        total.out_of_order += got.out_of_order;
        for _ in 0..sends.bad_answers {
            total.error("answer to no outstanding send");
        }
        if let Some((first, every)) = c.schedule {
            total.unsent += slots_before(first, every, stop_at).saturating_sub(sends.sent);
        }
    }
    Ok(total)
}

/// Runs one of a connection's tasks; its failure (a reset, a frame that does not decode) is
/// counted as an error unless the run was already stopping.
fn counted(
    conn: &Rc<Conn>,
    progress: &Arc<Progress>,
    what: &'static str,
    task: impl std::future::Future<Output = anyhow::Result<()>> + 'static,
) -> tokio::task::JoinHandle<()> {
    let (conn, progress) = (Rc::clone(conn), Arc::clone(progress));
    tokio::task::spawn_local(async move {
        if let Err(e) = task.await
            && !conn.stop.get()
        {
            conn.m.borrow_mut().error(&format!("{what} failed: {e:#}"));
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    })
}

struct Sender {
    conn: Rc<Conn>,
    /// This sender's direction: what it sent.
    out: Rc<Direction>,
    to: u64,
    run: u64,
    size: usize,
    window: usize,
    start: Instant,
    stop: Arc<StopAt>,
}

impl Sender {
    async fn run(self) -> anyhow::Result<()> {
        let sent = self.send().await;
        self.conn.sending.set(false);
        sent?;
        // Keep the write half open until the drain is over: dropping it would half-close the
        // socket, and the server ends a connection whose client has stopped sending.
        while !self.conn.stop.get() {
            self.conn.room.notified().await;
        }
        Ok(())
    }

    /// Sends until the stop, or, paced, every slot due before it (slots `first + k × every`,
    /// spread by the sender's phase so that paced senders do not all fire at once). A paced
    /// sender held back by the server goes on into the drain: the wait is the server's latency.
    async fn send(&self) -> anyhow::Result<()> {
        let mut scratch = BytesMut::with_capacity(self.window * (self.size + 64));
        let mut frames = Vec::with_capacity(self.window);
        let mut index: u64 = 0;
        let interval = self.conn.schedule.map(|(_, every)| every);
        let mut due = self.conn.schedule.map_or(self.start, |(first, _)| first);
        loop {
            let next = if interval.is_some() {
                due
            } else {
                Instant::now()
            };
            if self.stop.passed(next) || self.conn.stop.get() {
                return Ok(());
            }
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
                // The wait for room may have outlasted the run.
                None if self.stop.passed(Instant::now()) => return Ok(()),
                None => {
                    let room = self.window - self.conn.in_flight.get();
                    let now = self.start.elapsed();
                    for _ in 0..room {
                        frames.push(self.frame(index, now));
                        index += 1;
                    }
                }
                Some(every) => {
                    tokio::time::sleep_until(due.into()).await;
                    // Latency counts from when the message was due if the server held the
                    // sender back (window full) or the sender fell behind its schedule by more
                    // than the timer's granularity; otherwise from when it was written, so
                    // that the load generator's own 1 ms timer does not count against the
                    // server. No coordinated omission either way.
                    let now = Instant::now();
                    let behind = now.saturating_duration_since(due) > TIMER_SLACK;
                    let stamp = if held_back || behind { due } else { now };
                    frames.push(self.frame(index, stamp - self.start));
                    index += 1;
                    due += every;
                }
            }
            self.conn
                .in_flight
                .set(self.conn.in_flight.get() + frames.len());
            self.conn.m.borrow_mut().sent += frames.len() as u64;
            self.out.sends.borrow_mut().sent += frames.len() as u64;
            self.conn
                .write
                .lock()
                .await
                .write(&frames, &mut scratch)
                .await?;
        }
    }

    fn frame(&self, index: u64, sent_at: Duration) -> Frame {
        let mut content = Vec::with_capacity(self.size);
        content.put_u64_le(index);
        content.put_u64_le(sent_at.as_nanos() as u64);
        let fill = filler(index);
        content.resize(self.size, fill);
        Frame {
            request_id: index + 1,
            body: Some(Body::Send(v1::Send {
                client_msg_id: format!("{:x}-{index}", self.run),
                to_user_id: self.to,
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

/// Sends the reader's `DeliveryAck`s (request id 0: no reply wanted), one per read batch that
/// brought new messages; a batch read while the last ack is being written folds into the next.
async fn ack(conn: Rc<Conn>) -> anyhow::Result<()> {
    let mut scratch = BytesMut::with_capacity(64);
    loop {
        conn.ack_wake.notified().await;
        if conn.stop.get() {
            return Ok(());
        }
        let Some((conversation_id, seq)) = conn.ack_due.take() else {
            continue;
        };
        super::write_one(
            &conn.write,
            super::delivery_ack(conversation_id, seq),
            &mut scratch,
        )
        .await?;
        conn.m.borrow_mut().delivery_acks += 1;
    }
}

struct Reader {
    conn: Rc<Conn>,
    read: FrameReader,
    delivery_ack: bool,
    /// The highest seq this reader has asked the acker to ack.
    acked_seq: u64,
    /// This connection's sends, which the server's answers are to.
    outgoing: Rc<Direction>,
    incoming: Rc<Direction>,
    start: Instant,
    size: usize,
    phases: Option<Rc<PhaseLatency>>,
    progress: Arc<Progress>,
}

impl Reader {
    async fn run(mut self) -> anyhow::Result<()> {
        while let Some(frame) = self.read.next().await? {
            self.on_frame(frame);
            // The rest of this read batch, then one ack for all of it.
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
            self.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame.body {
            Some(Body::SendAck(_)) => {
                self.conn.m.borrow_mut().acked += 1;
                self.answer(frame.request_id, true);
                self.release();
            }
            Some(Body::Push(push)) => {
                if let Some(m) = push.message {
                    self.on_push(&m);
                }
            }
            Some(Body::Error(e)) => {
                let mut m = self.conn.m.borrow_mut();
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
                m.error(code.as_str_name());
                if e.code == ErrorCode::RateLimited as i32 {
                    m.rate_limited += 1;
                    let wait = Duration::from_millis(e.retry_after_ms.max(1));
                    self.conn.pause_until.set(Some(Instant::now() + wait));
                }
                drop(m);
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
                if frame.request_id != 0 {
                    self.answer(frame.request_id, false);
                    self.release();
                }
            }
            Some(Body::Kicked(k)) => {
                let reason = v1::KickReason::try_from(k.reason).unwrap_or_default();
                self.conn.m.borrow_mut().error(reason.as_str_name());
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
            }
            // Counted, not caught up: the run measures live delivery, and what the hint
            // announces shows as lost (the server still has it: Sync returns it).
            Some(Body::SyncNeeded(_)) => self.conn.m.borrow_mut().sync_hints += 1,
            _ => {}
        }
    }

    fn ack_batch(&mut self) {
        let dir = &self.incoming;
        let seq = dir.last_seq.get();
        if !self.delivery_ack || seq <= self.acked_seq {
            return;
        }
        self.acked_seq = seq;
        self.conn
            .ack_due
            .set(Some((dir.conversation_id.get(), seq)));
        self.conn.ack_wake.notify_one();
    }

    /// The server answered the send with this request id (its index + 1).
    fn answer(&self, request_id: u64, ok: bool) {
        let mut sends = self.outgoing.sends.borrow_mut();
        match request_id.checked_sub(1) {
            Some(index) => sends.answer(index, ok),
            None => sends.bad_answers += 1,
        }
    }

    fn release(&self) {
        self.conn
            .in_flight
            .set(self.conn.in_flight.get().saturating_sub(1));
        self.conn.room.notify_one();
    }

    fn on_push(&mut self, msg: &v1::Message) {
        let now = self.start.elapsed();
        let mut m = self.conn.m.borrow_mut();
        let mut content = &msg.content[..];
        if content.len() != self.size {
            m.corrupt += 1;
            return;
        }
        let index = content.get_u64_le();
        let sent_at = Duration::from_nanos(content.get_u64_le());
        if content.iter().any(|&b| b != filler(index)) {
            m.corrupt += 1;
        }
        let dir = &self.incoming;
        if index >= dir.sends.borrow().sent {
            // Never sent by the peer: not one of this run's messages.
            m.corrupt += 1;
            return;
        }
        let behind = msg.seq <= dir.last_seq.get();
        dir.last_seq.set(dir.last_seq.get().max(msg.seq));
        dir.conversation_id.set(msg.conversation_id);
        if dir.got.borrow_mut().arrive(index, behind) == Arrival::Again {
            return;
        }
        m.record_delivery(now, now.saturating_sub(sent_at));
        if let Some(phases) = &self.phases {
            phases.record(sent_at, now);
        }
        self.progress.done.fetch_add(1, Ordering::Relaxed);
    }
}
