//! The measured load: each online member's reader (checks and counts every push), its sender
//! (window or paced), its delivery acks and heartbeat.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame};
use tokio::sync::Notify;

use super::{GroupConfig, INDEX_BITS, Shared, TIMER_SLACK};
use crate::check::filler;
use crate::check::{Arrival, Sends, Stream, slots_before};
use crate::stats::Measurements;
use crate::transport::{FrameReader, FrameWriter, Link};

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
    /// This member's sends, if it is a sender, and the server's answer to each.
    sends: RefCell<Sends>,
    /// Per sender, which of its messages this member got.
    got: RefCell<Vec<Stream>>,
}

/// One load thread's measurements, and its deliveries' latency per message (by key) to the
/// last of its members.
pub(super) struct ThreadResult {
    pub(super) m: Measurements,
    pub(super) last_member_us: HashMap<u64, u64>,
    /// (sender number, its sends) for the senders on this thread.
    pub(super) sends: Vec<(usize, Sends)>,
    /// (online member number, what it got from each sender) for the members on this thread.
    pub(super) got: Vec<(usize, Vec<Stream>)>,
}

/// One load thread's running members.
pub(super) struct Load {
    conns: Vec<Rc<Conn>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    senders: Vec<Sender>,
    last_member_us: Rc<RefCell<HashMap<u64, u64>>>,
}

impl Load {
    /// Starts reading every member's connection at once (setup events arrive before the
    /// measured phase), and pinging each `heartbeat`; the senders wait for `finish`.
    pub(super) fn start(
        cfg: &GroupConfig,
        members: Vec<(usize, Link, u64)>,
        run: u64,
        shared: &Arc<Shared>,
        heartbeat: Duration,
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
                sends: RefCell::new(Sends::default()),
                got: RefCell::new(vec![Stream::default(); cfg.senders]),
            });
            let reader = Reader {
                conn: Rc::clone(&conn),
                read,
                shared: Arc::clone(shared),
                size: cfg.size,
                last_seq: 0,
                ack_every: cfg.ack_every,
                acked_seq: 0,
                last_ack: None,
                last_member_us: Rc::clone(&last_member_us),
            };
            load.tasks
                .push(counted(&conn, shared, "reader", reader.run()));
            load.tasks.push(counted(
                &conn,
                shared,
                "heartbeat",
                keep_alive(Rc::clone(&conn), heartbeat),
            ));
            if !cfg.ack_every.is_zero() {
                load.tasks.push(counted(
                    &conn,
                    shared,
                    "delivery ack",
                    ack(Rc::clone(&conn), Arc::clone(shared)),
                ));
            }
            if member < cfg.senders {
                load.senders.push(Sender {
                    conn: Rc::clone(&conn),
                    shared: Arc::clone(shared),
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
    pub(super) async fn finish(
        mut self,
        cfg: &GroupConfig,
        start: Instant,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<ThreadResult> {
        let conversation_id = *shared.conversation_id.get().expect("set before go");
        let end = start + cfg.duration;
        let mut senders = Vec::new();
        let mut schedules = Vec::new();
        for sender in self.senders.drain(..) {
            let (conn, done) = (Rc::clone(&sender.conn), Arc::clone(shared));
            if let Some(every) = sender.interval() {
                schedules.push((Rc::clone(&conn), sender.first_due(start), every));
            }
            senders.push(counted(&conn, shared, "sender", async move {
                let sent = sender.run(conversation_id, start, end).await;
                done.senders_done.fetch_add(1, Ordering::AcqRel);
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
        let mut m = Measurements::default();
        for t in senders.into_iter().chain(self.tasks) {
            if t.is_finished() {
                // Its failure, if any, was counted by `counted`; a panic was not.
                if t.await.is_err() {
                    m.error("a connection task panicked");
                }
            } else {
                t.abort();
            }
        }
        for (conn, first, every) in schedules {
            let sent = conn.sends.borrow().sent;
            m.faults.unsent += slots_before(first, every, end).saturating_sub(sent);
        }
        let mut sends = Vec::new();
        let mut got = Vec::new();
        for c in &self.conns {
            m.merge(&c.m.borrow());
            if c.member < cfg.senders {
                sends.push((c.member, c.sends.take()));
            }
            got.push((c.member, c.got.take()));
        }
        let last_member_us = std::mem::take(&mut *self.last_member_us.borrow_mut());
        Ok(ThreadResult {
            m,
            last_member_us,
            sends,
            got,
        })
    }
}

/// Runs one of a member's tasks; its failure (a reset, a frame that does not decode) is counted
/// as an error unless the run was already stopping.
fn counted(
    conn: &Rc<Conn>,
    shared: &Arc<Shared>,
    what: &'static str,
    task: impl std::future::Future<Output = anyhow::Result<()>> + 'static,
) -> tokio::task::JoinHandle<()> {
    let (conn, shared) = (Rc::clone(conn), Arc::clone(shared));
    tokio::task::spawn_local(async move {
        if let Err(e) = task.await
            && !conn.stop.get()
        {
            conn.m.borrow_mut().error(&format!("{what} failed: {e:#}"));
            shared.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    })
}

struct Sender {
    conn: Rc<Conn>,
    shared: Arc<Shared>,
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
    fn interval(&self) -> Option<Duration> {
        self.rate
            .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)))
    }

    /// When this sender's first paced message is due.
    fn first_due(&self, start: Instant) -> Instant {
        start
            + self
                .interval()
                .map_or(Duration::ZERO, |every| every.mul_f64(self.phase))
    }

    /// Sends until `end`, or, paced, every slot due before it: a sender held back by the
    /// server goes on into the drain, the wait counted as the server's latency.
    async fn run(self, conversation_id: u64, start: Instant, end: Instant) -> anyhow::Result<()> {
        let mut scratch = BytesMut::with_capacity(self.window * (self.size + 64));
        let mut frames = Vec::with_capacity(self.window);
        let mut index: u64 = 0;
        let interval = self.interval();
        let mut due = self.first_due(start);
        loop {
            let next = if interval.is_some() {
                due
            } else {
                Instant::now()
            };
            if next >= end || self.conn.stop.get() {
                break;
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
                None if Instant::now() >= end => break,
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
            self.conn.sends.borrow_mut().sent += frames.len() as u64;
            // Every index below this one is now a message of this run.
            self.shared.sent_by[self.number as usize].store(index, Ordering::Release);
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

/// A member that only listens still pings, as a client does (see [`crate::heartbeat`]).
async fn keep_alive(conn: Rc<Conn>, every: Duration) -> anyhow::Result<()> {
    crate::heartbeat::keep_alive(&conn.write, every, || conn.stop.get()).await
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
        crate::scenario::write_one(
            &conn.write,
            crate::scenario::delivery_ack(conversation_id, seq),
            &mut scratch,
        )
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
                self.answer(frame.request_id, true);
                self.shared.acked.fetch_add(1, Ordering::AcqRel);
                self.release();
            }
            Some(Body::Push(push)) => {
                if let Some(m) = push.message {
                    self.on_push(&m);
                }
            }
            Some(Body::Error(e))
                if e.code == ErrorCode::RateLimited as i32 && frame.request_id != 0 =>
            {
                // Back-pressure, not a failure in a closed loop: the sender waits as told and
                // goes on (the refused message took no seq and is not expected anywhere). A
                // paced run counts it against the run (`GroupReport::clean`).
                self.conn.m.borrow_mut().rate_limited += 1;
                let wait = Duration::from_millis(e.retry_after_ms.max(1));
                self.conn.pause_until.set(Some(Instant::now() + wait));
                self.answer(frame.request_id, false);
                self.release();
            }
            Some(Body::Error(e))
                if e.code == ErrorCode::RateLimited as i32 && frame.request_id == 0 =>
            {
                // A refused `DeliveryAck` (request id 0): no send's answer, and no loss (the
                // next ack, of a later seq, moves the cursor past it).
                self.conn.m.borrow_mut().delivery_acks_refused += 1;
            }
            Some(Body::Error(e)) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
                self.conn.m.borrow_mut().error(code.as_str_name());
                self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                if frame.request_id != 0 {
                    self.answer(frame.request_id, false);
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

    /// The server answered this member's send with this request id (its index + 1).
    fn answer(&self, request_id: u64, ok: bool) {
        self.conn.sends.borrow_mut().answer_request(request_id, ok);
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
        let behind = msg.seq <= self.last_seq;
        self.last_seq = self.last_seq.max(msg.seq);
        self.shared.last_seq[self.conn.member].store(self.last_seq, Ordering::Relaxed);
        if msg.content_type != v1::ContentType::Custom as i32 {
            // A group event: checked for order only (the bench's messages are checked below).
            if behind {
                m.faults.out_of_order += 1;
            }
            return;
        }
        let Some(start) = self.shared.start_at.get() else {
            return;
        };
        let now = start.elapsed();
        let mut content = &msg.content[..];
        if content.len() != self.size {
            m.faults.corrupt += 1;
            return;
        }
        let key = content.get_u64_le();
        let sent_at = Duration::from_nanos(content.get_u64_le());
        let (sender, index) = (key >> INDEX_BITS, key & ((1 << INDEX_BITS) - 1));
        if content.iter().any(|&b| b != filler(index)) {
            m.faults.corrupt += 1;
        }
        // A sender of this run, and an index it has sent (the bound keeps a garbled index from
        // passing as a message).
        let Some(sent) = self.shared.sent_by.get(sender as usize) else {
            m.faults.corrupt += 1;
            return;
        };
        if index >= sent.load(Ordering::Acquire) {
            m.faults.corrupt += 1;
            return;
        }
        // A group message goes to every member but its sender (a sender's number is its
        // member index): an echo would otherwise pass as a delivery and dilute the figures.
        if sender as usize == self.conn.member {
            m.error("a member got its own group message back");
            return;
        }
        if self.conn.got.borrow_mut()[sender as usize].arrive(index, behind) == Arrival::Again {
            return;
        }
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
