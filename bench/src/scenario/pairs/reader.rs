//! A pairs connection's read half: answers to its sends, and the peer's messages, each checked
//! (once, in order, intact) and timed.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Buf;
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame};

use super::traffic::{Conn, Direction};
use crate::check::Arrival;
use crate::check::filler;
use crate::scenario::Progress;
use crate::scenario::phases::PhaseLatency;
use crate::transport::FrameReader;

pub(super) struct Reader {
    pub(super) conn: Rc<Conn>,
    pub(super) read: FrameReader,
    pub(super) delivery_ack: bool,
    /// The highest seq this reader has asked the acker to ack.
    pub(super) acked_seq: u64,
    /// This connection's sends, which the server's answers are to.
    pub(super) outgoing: Rc<Direction>,
    pub(super) incoming: Rc<Direction>,
    /// The user whose messages `incoming` carries.
    pub(super) peer_id: u64,
    pub(super) start: Instant,
    pub(super) size: usize,
    pub(super) phases: Option<Rc<PhaseLatency>>,
    pub(super) progress: Arc<Progress>,
}

impl Reader {
    pub(super) async fn run(mut self) -> anyhow::Result<()> {
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
        self.outgoing
            .sends
            .borrow_mut()
            .answer_request(request_id, ok);
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
            m.faults.corrupt += 1;
            return;
        }
        let index = content.get_u64_le();
        let sent_at = Duration::from_nanos(content.get_u64_le());
        if content.iter().any(|&b| b != filler(index)) {
            m.faults.corrupt += 1;
        }
        // Only the peer's messages come here: one of this connection's own pushed back to it
        // would otherwise pass as the peer's message with the same index (both send 0, 1, …).
        if msg.from_user_id != self.peer_id {
            m.error("a push not from the peer (an echo of its own message?)");
            return;
        }
        let dir = &self.incoming;
        if index >= dir.sends.borrow().sent {
            // Never sent by the peer: not one of this run's messages.
            m.faults.corrupt += 1;
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
