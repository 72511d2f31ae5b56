//! `room`: M logged-in members join one chat room and S of them send at an aggregate paced rate
//! for a bounded time and count. Every send must be answered, and every member checks that it
//! gets every other sender's accepted messages exactly once and in `room_seq` order; latency
//! runs from when each message was due (stamped in its content) to its arrival, so a stalled
//! server cannot hide its queueing. Nothing waits past the run and its drain: a sender the
//! server stops reading from is cut off then, its unsent messages counted. The server's CPU per
//! delivered message comes from /proc.
//!
//! One load thread: the fan-out (one message to M - 1 members) is the server's work, which is
//! what is measured. Run the server with `rooms.messages_per_s_max` ≥ R and
//! `rooms.user_messages_per_s_max` ≥ R / S, or its refusals are counted as errors.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use ringchat_proto::v1::{self, ContentType};
use ringchat_proto::{Body, Frame};
use serde::Serialize;

use super::Observe;
use super::presence::log_in_all;
use crate::check::{Arrival, Faults, Sends, Stream, fan_out, filler, slots_before};
use crate::signup::Refusals;
use crate::transport::{FrameReader, Link};

/// Content bytes used for the sender, its counter and the due time.
pub const HEADER_BYTES: usize = 4 + 8 + 8;
/// How often the drain looks at the counters.
const DRAIN_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub addr: SocketAddr,
    pub members: usize,
    pub senders: usize,
    /// Content bytes per message (at least `HEADER_BYTES`).
    pub size: usize,
    /// Messages per second over all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub drain_timeout: Duration,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    pub scenario: &'static str,
    pub provenance: crate::provenance::Provenance,
    pub members: usize,
    pub senders: usize,
    pub size_bytes: usize,
    pub rate_target_msgs_per_s: f64,
    pub duration_s: f64,
    pub sent: u64,
    /// Sends answered with `RoomSent` (a valid answer: to a send made, and its first).
    pub acked: u64,
    /// Sends answered with an `Error` (e.g. ROOM_RATE_LIMITED), also counted in `errors`.
    pub refused: u64,
    /// `errors`: sends refused (an `Error`, e.g. ROOM_RATE_LIMITED: not delivered, not counted
    /// as lost), other errors from the server, and connections that failed or closed during the
    /// run; `unsent`: messages due before the end that were never sent (a sender still blocked
    /// writing when the drain ended, or failed); `lost`: deliveries of accepted messages that
    /// never came (once per member lacking one); `corrupt`: room messages without the bench's
    /// header, from no sender of this run, or with an index that sender never sent. A room
    /// message echoed to its own sender, a `Kicked` (with its reason) and a failed heartbeat
    /// count in `errors` too.
    #[serde(flatten)]
    pub faults: Faults,
    /// Messages the members received (each counted once per member).
    pub deliveries: u64,
    /// `acked` × (members − 1): every member but the sender.
    pub deliveries_expected: u64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    /// From the first message due to the last delivery.
    pub deliveries_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Deliveries slower than the histogram holds (`stats::LATENCY_US_MAX`): recorded at that
    /// bound, so `latency_ms_max` is a floor when this is not 0.
    pub latency_over_max: u64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
}

impl RoomReport {
    pub fn clean(&self) -> bool {
        self.faults.none()
    }
}

/// What the senders and the members' readers add up.
struct Tally {
    errors: Cell<u64>,
    deliveries: Cell<u64>,
    corrupt: Cell<u64>,
    /// Each sender's sends and the server's answers, by sender number (sender `s` is member
    /// `s`).
    sends: RefCell<Vec<(usize, Sends)>>,
    /// What each member got from each sender, by member number.
    got: RefCell<Vec<(usize, Vec<Stream>)>>,
    latency: RefCell<Histogram<u64>>,
    latency_over_max: Cell<u64>,
    last_delivery: Cell<Option<Instant>>,
    /// The run is over: the heartbeats stop.
    stop: Cell<bool>,
}

impl Tally {
    fn error(&self, what: std::fmt::Arguments) {
        if self.errors.get() < 3 {
            eprintln!("room: {what}");
        }
        self.errors.set(self.errors.get() + 1);
    }
}

pub fn run(cfg: &RoomConfig, observe: &Observe) -> anyhow::Result<RoomReport> {
    if cfg.senders == 0 || cfg.senders > cfg.members || cfg.members < 2 {
        bail!("need 2 or more --members and 1 to --members --senders");
    }
    if cfg.size < HEADER_BYTES {
        bail!("--size must be at least {HEADER_BYTES}");
    }
    if cfg.rate.is_nan() || cfg.rate <= 0.0 {
        bail!("--rate must be above 0");
    }
    super::ensure_fd_limit(cfg.members as u64 + 256)?;
    super::local_runtime(room(cfg, observe))
}

async fn room(cfg: &RoomConfig, observe: &Observe) -> anyhow::Result<RoomReport> {
    let room = format!("{}room", cfg.user_prefix.to_ascii_lowercase()).replace(
        |c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)),
        "_",
    );
    let names: Vec<String> = (0..cfg.members)
        .map(|i| format!("{}room{i}", cfg.user_prefix))
        .collect();
    let refusals = Refusals::default();
    let mut users = log_in_all(cfg.addr, &names, &cfg.password, &refusals).await?;
    let mut joins = Vec::with_capacity(users.len());
    for (client, _) in &mut users {
        joins.push(
            client
                .send(Body::RoomJoin(v1::RoomJoin { room: room.clone() }))
                .await?,
        );
    }
    for ((client, _), rid) in users.iter_mut().zip(joins) {
        match client.reply_to(rid).await? {
            Body::RoomJoined(_) => {}
            other => bail!("joining {room}: {other:?}"),
        }
    }
    let count = match users[0]
        .0
        .request(Body::RoomInfo(v1::RoomInfo { room: room.clone() }))
        .await?
    {
        Body::RoomJoined(j) => j.member_count as usize,
        other => bail!("RoomInfo: {other:?}"),
    };
    if count != cfg.members {
        bail!(
            "{count} members in {room}, expected {} (is the room used by another run?)",
            cfg.members
        );
    }

    let tally = Rc::new(Tally {
        errors: Cell::new(0),
        deliveries: Cell::new(0),
        corrupt: Cell::new(0),
        sends: RefCell::new((0..cfg.senders).map(|s| (s, Sends::default())).collect()),
        got: RefCell::new(
            (0..cfg.members)
                .map(|m| (m, vec![Stream::default(); cfg.senders]))
                .collect(),
        ),
        latency: RefCell::new(crate::stats::latency_histogram()),
        latency_over_max: Cell::new(0),
        last_delivery: Cell::new(None),
        stop: Cell::new(false),
    });
    let epoch = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    // Every member pings (listeners and slow senders send nothing else for long), and every
    // write half stays open until the end: dropping one would shut the socket's sending side.
    let mut heartbeats = tokio::task::JoinSet::new();
    let mut writers = Vec::with_capacity(cfg.members);
    for (member, (client, _)) in users.into_iter().enumerate() {
        let every = crate::heartbeat::interval(client.heartbeat);
        let (reader, writer) = Link::Tcp(client).split();
        let writer = Rc::new(tokio::sync::Mutex::new(writer));
        writers.push(Rc::clone(&writer));
        let beat = Rc::clone(&tally);
        heartbeats.spawn_local(async move {
            crate::heartbeat::keep_alive(&writer, every, || beat.stop.get()).await
        });
        let tally = Rc::clone(&tally);
        readers.spawn_local(read(reader, member, cfg.size, tally, epoch));
    }

    // Sender s sends its share at rate / senders, staggered so the aggregate is even.
    let interval = Duration::from_secs_f64(cfg.senders as f64 / cfg.rate);
    let per_sender = ((cfg.rate * cfg.duration.as_secs_f64()) as u64).div_ceil(cfg.senders as u64);
    let before = observe.sample();
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let end = start + cfg.duration;
    // Nothing waits past this: not a sender the server stopped reading from, not the drain.
    let deadline = end + cfg.drain_timeout;
    let mut sending = tokio::task::JoinSet::new();
    let mut planned = 0;
    for (s, writer) in writers.iter().take(cfg.senders).cloned().enumerate() {
        let offset = interval.mul_f64(s as f64 / cfg.senders as f64);
        planned += per_sender.min(slots_before(
            (start + offset).into_std(),
            interval,
            end.into_std(),
        ));
        let (room, size, tally) = (room.clone(), cfg.size, Rc::clone(&tally));
        sending.spawn_local(async move {
            let mut scratch = BytesMut::new();
            let mut sent = 0u64;
            while sent < per_sender {
                let due = start + offset + interval.mul_f64(sent as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let due_ns = (due.into_std() - epoch).as_nanos() as u64;
                let frame = message(&room, s, sent, due_ns, size);
                tally.sends.borrow_mut()[s].1.sent += 1;
                crate::scenario::write_one(&writer, frame, &mut scratch).await?;
                sent += 1;
            }
            anyhow::Ok(())
        });
    }
    loop {
        match tokio::time::timeout_at(deadline, sending.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(())))) => {}
            Ok(Some(Ok(Err(e)))) => tally.error(format_args!("a sender failed: {e:#}")),
            Ok(Some(Err(e))) => tally.error(format_args!("a sender task failed: {e}")),
            Err(_) => {
                tally.error(format_args!(
                    "{} senders still writing at the drain timeout",
                    sending.len()
                ));
                sending.abort_all();
                break;
            }
        }
    }
    let sent: u64 = tally.sends.borrow().iter().map(|(_, s)| s.sent).sum();

    // Every answer, then every delivery of what was accepted, or the drain timeout.
    let deadline = deadline.into_std();
    let settled = |t: &Tally| {
        let o = fan_out(&t.sends.borrow(), &t.got.borrow());
        o.lost == 0 && o.unanswered == 0
    };
    while Instant::now() < deadline && !settled(&tally) {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let after = observe.sample();
    // A reader that failed (a reset, a frame that does not decode, the server closing) counts.
    while let Some(done) = readers.try_join_next() {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tally.error(format_args!("a member's connection failed: {e:#}")),
            Err(e) => tally.error(format_args!("a reader task failed: {e}")),
        }
    }
    readers.abort_all();
    tally.stop.set(true);
    while let Some(done) = heartbeats.try_join_next() {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tally.error(format_args!("a member's heartbeat failed: {e:#}")),
            Err(e) => tally.error(format_args!("a heartbeat task failed: {e}")),
        }
    }
    heartbeats.abort_all();
    drop(writers);

    let sends = tally.sends.borrow();
    let acked: u64 = sends.iter().map(|(_, s)| s.acked.len()).sum();
    let refused: u64 = sends.iter().map(|(_, s)| s.refused.len()).sum();
    let deliveries_expected = acked * (cfg.members as u64 - 1);
    let outcome = fan_out(&sends, &tally.got.borrow());
    for _ in 0..outcome.bad_answers {
        tally.error(format_args!("an answer to no outstanding send"));
    }
    let latency = tally.latency.borrow();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let first_due = start.into_std();
    let span = tally.last_delivery.get().map_or(0.0, |t| {
        t.saturating_duration_since(first_due).as_secs_f64()
    });
    let cpu = before
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
    let deliveries = tally.deliveries.get();
    Ok(RoomReport {
        scenario: "room",
        provenance: Default::default(),
        members: cfg.members,
        senders: cfg.senders,
        size_bytes: cfg.size,
        rate_target_msgs_per_s: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        setup_refusals: refusals.count(),
        sent,
        acked,
        refused,
        faults: Faults {
            errors: tally.errors.get(),
            unanswered: outcome.unanswered,
            unsent: planned.saturating_sub(sent),
            lost: outcome.lost,
            duplicates: outcome.duplicates,
            out_of_order: outcome.out_of_order,
            corrupt: tally.corrupt.get(),
        },
        deliveries,
        deliveries_expected,
        deliveries_per_s: if span > 0.0 {
            deliveries as f64 / span
        } else {
            0.0
        },
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        latency_ms_max: latency.max() as f64 / 1000.0,
        latency_over_max: tally.latency_over_max.get(),
        server_cpu_s: cpu,
        server_cpu_us_per_delivery: cpu
            .filter(|_| deliveries > 0)
            .map(|s| s * 1e6 / deliveries as f64),
    })
}

/// A paced message: sender, its counter and when it was due, then filler up to `size`.
fn message(room: &str, sender: usize, counter: u64, due_ns: u64, size: usize) -> Frame {
    let mut content = BytesMut::with_capacity(size);
    content.put_u32_le(sender as u32);
    content.put_u64_le(counter);
    content.put_u64_le(due_ns);
    content.resize(size, filler(counter));
    Frame {
        // Never 0: the answer (`RoomSent` or an `Error`) is what counts the send.
        request_id: counter + 1,
        body: Some(Body::RoomSend(v1::RoomSend {
            room: room.to_owned(),
            content_type: ContentType::Custom as i32,
            content: content.freeze(),
        })),
    }
}

/// One member's connection: answers to its own sends, and the room's messages, each checked
/// against the sender's counter, the room's order and what was sent (`size` bytes, the
/// counter's filler after the header).
async fn read(
    mut reader: FrameReader,
    member: usize,
    size: usize,
    tally: Rc<Tally>,
    epoch: Instant,
) -> anyhow::Result<()> {
    let mut last_seq = 0u64;
    // The answer to a send (request id: its counter + 1), if this member is a sender.
    let answer = |request_id: u64, ok: bool| {
        let mut sends = tally.sends.borrow_mut();
        match (
            sends.get_mut(member).map(|(_, s)| s),
            request_id.checked_sub(1),
        ) {
            (Some(s), Some(index)) => s.answer(index, ok),
            _ => tally.error(format_args!("an answer to no send of this member")),
        }
    };
    while let Some(frame) = reader.next().await? {
        match frame.body {
            Some(Body::RoomSent(_)) => answer(frame.request_id, true),
            Some(Body::Error(e)) => {
                tally.error(format_args!(
                    "room send refused: {} {}",
                    e.code().as_str_name(),
                    e.message
                ));
                if frame.request_id != 0 {
                    answer(frame.request_id, false);
                }
            }
            Some(Body::RoomMessage(m)) => {
                let now = Instant::now();
                let behind = m.room_seq <= last_seq;
                last_seq = last_seq.max(m.room_seq);
                let mut content = &m.content[..];
                if content.len() != size {
                    tally.corrupt.set(tally.corrupt.get() + 1);
                    continue;
                }
                let sender = content.get_u32_le() as usize;
                let counter = content.get_u64_le();
                let due_ns = content.get_u64_le();
                if content.iter().any(|&b| b != filler(counter)) {
                    tally.corrupt.set(tally.corrupt.get() + 1);
                    continue;
                }
                // A room message goes to every session but its sender's.
                if sender == member {
                    tally.error(format_args!(
                        "member {member} got its own room message {counter} back"
                    ));
                    continue;
                }
                // From a sender of this run, and a message it sent.
                let sent = tally.sends.borrow().get(sender).map(|(_, s)| s.sent);
                if sent.is_none_or(|sent| counter >= sent) {
                    tally.corrupt.set(tally.corrupt.get() + 1);
                    continue;
                }
                if tally.got.borrow_mut()[member].1[sender].arrive(counter, behind)
                    == Arrival::Again
                {
                    continue;
                }
                tally.deliveries.set(tally.deliveries.get() + 1);
                tally.last_delivery.set(Some(now));
                let latency_us = now
                    .saturating_duration_since(epoch + Duration::from_nanos(due_ns))
                    .as_micros() as u64;
                if crate::stats::record_latency(&mut tally.latency.borrow_mut(), latency_us) {
                    tally.latency_over_max.set(tally.latency_over_max.get() + 1);
                }
            }
            Some(Body::Kicked(k)) => {
                let reason = v1::KickReason::try_from(k.reason).unwrap_or_default();
                bail!("kicked: {}", reason.as_str_name());
            }
            _ => {}
        }
    }
    bail!("connection closed by the server")
}
