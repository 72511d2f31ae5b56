//! One load thread's share of the pairs: their connections' tasks, run until the stop, then
//! drained until every send is answered and every acked message received (or the timeout).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::reader::Reader;
use super::sender::{Sender, ack};
use super::{PairsConfig, Side};
use crate::check::{Sends, Stream, slots_before};
use crate::scenario::Progress;
use crate::scenario::phases::{PhaseLatency, StopAt};
use crate::stats::Measurements;
use crate::transport::FrameWriter;

/// One direction of a pair: what its sender sent and the server answered, what its receiver
/// got.
#[derive(Debug, Default)]
pub(super) struct Direction {
    pub(super) sends: RefCell<Sends>,
    pub(super) got: RefCell<Stream>,
    pub(super) last_seq: Cell<u64>,
    pub(super) conversation_id: Cell<u64>,
}

impl Direction {
    /// Every send answered and every acked message received.
    fn settled(&self) -> bool {
        let sends = self.sends.borrow();
        sends.unanswered() == 0 && sends.lost_by(&self.got.borrow()) == 0
    }
}

/// State shared by one connection's writer, reader and acker.
pub(super) struct Conn {
    pub(super) in_flight: Cell<usize>,
    pub(super) room: Notify,
    /// The newest (conversation, seq) the reader has and has not acked yet.
    pub(super) ack_due: Cell<Option<(u64, u64)>>,
    pub(super) ack_wake: Notify,
    /// The sender and the acker take turns on the write half.
    pub(super) write: tokio::sync::Mutex<FrameWriter>,
    pub(super) stop: Cell<bool>,
    /// Set when the server said RATE_LIMITED: no sends before then.
    pub(super) pause_until: Cell<Option<Instant>>,
    /// This load thread's measurements, shared by its connections: one latency histogram per
    /// thread, not per connection (2,000 of them would be 280 MB to zero as the run starts).
    pub(super) m: Rc<RefCell<Measurements>>,
    /// A paced sender's schedule (first slot, interval): every slot before the stop is sent.
    pub(super) schedule: Option<(Instant, Duration)>,
    /// Until the sender has sent everything it is meant to.
    pub(super) sending: Cell<bool>,
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
                peer_id,
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
        total.faults.lost += sends.lost_by(&got);
        total.faults.unanswered += sends.unanswered();
        total.faults.duplicates += got.duplicates;
        total.faults.out_of_order += got.out_of_order;
        for _ in 0..sends.bad_answers {
            total.error("answer to no outstanding send");
        }
        if let Some((first, every)) = c.schedule {
            total.faults.unsent += slots_before(first, every, stop_at).saturating_sub(sends.sent);
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
