//! `room`: M logged-in members join one chat room and S of them send at an aggregate paced rate
//! for a bounded time and count. Every member checks that it gets every other sender's message
//! exactly once and in `room_seq` order; latency runs from when each message was due (stamped
//! in its content) to its arrival, so a stalled server cannot hide its queueing. The server's
//! CPU per delivered message comes from /proc.
//!
//! One load thread: the fan-out (one message to M - 1 members) is the server's work, which is
//! what is measured. Run the server with `rooms.messages_per_s_max` ≥ R and
//! `rooms.user_messages_per_s_max` ≥ R / S, or its refusals are counted as errors.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use ringchat_proto::v1::{self, ContentType};
use ringchat_proto::{Body, Frame};
use serde::Serialize;

use super::Observe;
use super::presence::log_in_all;
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
    /// Sends answered with `RoomSent`.
    pub acked: u64,
    /// Sends refused (an `Error`, e.g. ROOM_RATE_LIMITED): not delivered, not counted as lost.
    pub errors: u64,
    /// Messages the members received (each counted once per member).
    pub deliveries: u64,
    /// `acked` × (members − 1): every member but the sender.
    pub deliveries_expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    /// From the first message due to the last delivery.
    pub deliveries_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
}

impl RoomReport {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.errors == 0
    }
}

/// What the members' readers add up.
struct Tally {
    acked: Cell<u64>,
    errors: Cell<u64>,
    deliveries: Cell<u64>,
    duplicates: Cell<u64>,
    out_of_order: Cell<u64>,
    /// Messages from each sender each member got (first copies only), for `lost`.
    got: RefCell<Vec<Vec<u64>>>,
    latency: RefCell<Histogram<u64>>,
    last_delivery: Cell<Option<Instant>>,
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, room(cfg, observe))
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
        acked: Cell::new(0),
        errors: Cell::new(0),
        deliveries: Cell::new(0),
        duplicates: Cell::new(0),
        out_of_order: Cell::new(0),
        got: RefCell::new(vec![vec![0; cfg.senders]; cfg.members]),
        latency: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
        last_delivery: Cell::new(None),
    });
    let epoch = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    let mut writers = Vec::with_capacity(cfg.senders);
    // Listeners' write halves stay open: dropping one would shut the socket's sending side,
    // and the server would close the connection.
    let mut idle_writers = Vec::with_capacity(cfg.members - cfg.senders);
    for (member, (client, _)) in users.into_iter().enumerate() {
        let (reader, writer) = Link::Tcp(client).split();
        if member < cfg.senders {
            writers.push(writer);
        } else {
            idle_writers.push(writer);
        }
        let tally = Rc::clone(&tally);
        readers.spawn_local(read(reader, member, tally, epoch));
    }

    // Sender s sends its share at rate / senders, staggered so the aggregate is even.
    let interval = Duration::from_secs_f64(cfg.senders as f64 / cfg.rate);
    let per_sender = ((cfg.rate * cfg.duration.as_secs_f64()) as u64).div_ceil(cfg.senders as u64);
    let before = observe.sample();
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let end = start + cfg.duration;
    let mut sending = tokio::task::JoinSet::new();
    for (s, mut writer) in writers.into_iter().enumerate() {
        let offset = interval.mul_f64(s as f64 / cfg.senders as f64);
        let (room, size) = (room.clone(), cfg.size);
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
                writer.write(&[frame], &mut scratch).await?;
                sent += 1;
            }
            anyhow::Ok((sent, writer))
        });
    }
    let mut sent_by = Vec::new();
    let mut keep_open = Vec::new();
    while let Some(done) = sending.join_next().await {
        let (sent, writer) = done.context("a sender task failed")??;
        sent_by.push(sent);
        keep_open.push(writer);
    }
    let sent: u64 = sent_by.iter().sum();

    // Every answer, then every delivery of what was accepted, or the drain timeout.
    let deadline = Instant::now() + cfg.drain_timeout;
    let expected = |t: &Tally| t.acked.get() * (cfg.members as u64 - 1);
    while Instant::now() < deadline
        && (tally.acked.get() + tally.errors.get() < sent
            || tally.deliveries.get() < expected(&tally))
    {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let after = observe.sample();
    readers.abort_all();
    drop((keep_open, idle_writers));

    let deliveries_expected = expected(&tally);
    let got = tally.got.borrow();
    let lost = deliveries_expected.saturating_sub(got.iter().flatten().sum());
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
        acked: tally.acked.get(),
        errors: tally.errors.get(),
        deliveries,
        deliveries_expected,
        lost,
        duplicates: tally.duplicates.get(),
        out_of_order: tally.out_of_order.get(),
        deliveries_per_s: if span > 0.0 {
            deliveries as f64 / span
        } else {
            0.0
        },
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        latency_ms_max: latency.max() as f64 / 1000.0,
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
    content.resize(size, b'r');
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
/// against the sender's counter and the room's order.
async fn read(
    mut reader: FrameReader,
    member: usize,
    tally: Rc<Tally>,
    epoch: Instant,
) -> anyhow::Result<()> {
    let mut last_seq = 0u64;
    let senders = tally.got.borrow()[member].len();
    // The counter each sender's next message should carry.
    let mut next = vec![0u64; senders];
    while let Some(frame) = reader.next().await? {
        match frame.body {
            Some(Body::RoomSent(_)) => tally.acked.set(tally.acked.get() + 1),
            Some(Body::Error(e)) => {
                if tally.errors.get() < 3 {
                    eprintln!(
                        "room send refused: {} {}",
                        e.code().as_str_name(),
                        e.message
                    );
                }
                tally.errors.set(tally.errors.get() + 1);
            }
            Some(Body::RoomMessage(m)) => {
                let now = Instant::now();
                if m.room_seq <= last_seq {
                    tally.out_of_order.set(tally.out_of_order.get() + 1);
                }
                last_seq = last_seq.max(m.room_seq);
                let mut content = &m.content[..];
                if content.len() < HEADER_BYTES {
                    bail!("a room message without the bench's header");
                }
                let sender = content.get_u32_le() as usize;
                let counter = content.get_u64_le();
                let due_ns = content.get_u64_le();
                let Some(expected) = next.get_mut(sender) else {
                    bail!("a message from sender {sender}, not one of this run's");
                };
                if counter < *expected {
                    tally.duplicates.set(tally.duplicates.get() + 1);
                    continue;
                }
                // A skipped counter is a message lost (or overtaken): counted by `lost`.
                *expected = counter + 1;
                tally.got.borrow_mut()[member][sender] += 1;
                tally.deliveries.set(tally.deliveries.get() + 1);
                tally.last_delivery.set(Some(now));
                let latency_us = now
                    .saturating_duration_since(epoch + Duration::from_nanos(due_ns))
                    .as_micros() as u64;
                let _ = tally.latency.borrow_mut().record(latency_us.max(1));
            }
            _ => {}
        }
    }
    Ok(())
}
