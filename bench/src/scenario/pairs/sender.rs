//! A pairs connection's write half: the sender (windowed or paced) and the delivery acker,
//! taking turns on the socket.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use ringchat_proto::v1;
use ringchat_proto::{Body, Frame};

use super::traffic::{Conn, Direction};
use crate::check::filler;
use crate::scenario::phases::StopAt;

/// How late tokio's timer may wake a paced sender (its wheel has 1 ms slots).
const TIMER_SLACK: Duration = Duration::from_millis(2);

pub(super) struct Sender {
    pub(super) conn: Rc<Conn>,
    /// This sender's direction: what it sent.
    pub(super) out: Rc<Direction>,
    pub(super) to: u64,
    pub(super) run: u64,
    pub(super) size: usize,
    pub(super) window: usize,
    pub(super) start: Instant,
    pub(super) stop: Arc<StopAt>,
}

impl Sender {
    pub(super) async fn run(self) -> anyhow::Result<()> {
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

/// Sends the reader's `DeliveryAck`s (request id 0: no reply wanted), one per read batch that
/// brought new messages; a batch read while the last ack is being written folds into the next.
pub(super) async fn ack(conn: Rc<Conn>) -> anyhow::Result<()> {
    let mut scratch = BytesMut::with_capacity(64);
    loop {
        conn.ack_wake.notified().await;
        if conn.stop.get() {
            return Ok(());
        }
        let Some((conversation_id, seq)) = conn.ack_due.take() else {
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
