//! How a connection's queued frames reach its socket: in batches (one rule, `next_batch`),
//! sent synchronously while the socket takes them whole (`write_now`, plain streams), and by
//! the async `flush` once it is full, or for TLS.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use super::{Conn, write_or_cut};

/// Bytes gathered into one write, at most (frames are not split across writes below this).
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// How far `Conn::flush` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    /// Until the queue is empty, or a close is asked for (the write under way gets a grace).
    Abortable,
    /// Until the queue is empty.
    Whole,
    /// Until the queue is empty, or no further batch after this instant.
    Until(Instant),
}

/// Frames taken off the queue for one write, in a pooled buffer.
pub(super) struct Batch {
    out: BytesMut,
    frames: u64,
    /// `Some(n)`: `write_now` sent its first `n` bytes and found the socket full; the rest
    /// must go before any other byte.
    sent: Option<usize>,
}

#[cfg(test)]
thread_local! {
    /// Batches `write_now` sent part of (not none, not all) before the socket was full: the
    /// writes the async path took over mid-batch, on this thread (tests run one runtime each).
    pub(super) static SENT_IN_PART: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Batches `write_now` sent whole.
    pub(super) static SENT_WHOLE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Conn {
    /// The next batch: waiting control replies first, then queued frames while the batch stays
    /// within `WRITE_BATCH_BYTES_MAX` (one frame at least, whatever its size); `None` when
    /// nothing waits.
    fn next_batch(&mut self) -> Option<Batch> {
        let shard = &self.session.shard;
        let mut out = shard.pool.take();
        let mut frames = 0u64;
        self.framing.put_control(&mut out);
        let framing = &self.framing;
        self.session.shared.outbound.pop_while(
            |p| {
                if !out.is_empty() && out.len() + p.frame.len() > WRITE_BATCH_BYTES_MAX {
                    return false;
                }
                framing.put_frame(p.frame, p.text, &mut out);
                frames += 1;
                true
            },
            &shard.outbound_bytes,
        );
        if out.is_empty() {
            shard.pool.give(out);
            return None;
        }
        Some(Batch {
            out,
            frames,
            sent: None,
        })
    }

    /// Writes queued batches with one non-blocking send each, as long as the socket takes each
    /// whole (plain streams only): a wake-up whose output fits, the common case, allocates
    /// nothing and never waits. Stops, as `flush(Flush::Abortable)` does, once a close is asked
    /// for. `Some(batch)`: the socket was full; the batch's rest goes first, by
    /// `flush(.., Some(batch))`, which waits for room.
    pub(super) fn write_now(&mut self) -> io::Result<Option<Batch>> {
        loop {
            if self.shared().close.get().is_some() {
                return Ok(None);
            }
            let Some(mut batch) = self.next_batch() else {
                return Ok(None);
            };
            let shard = &self.session.shard;
            let sent = match self.stream.send_now(&batch.out) {
                Ok(n) => n,
                Err(e) => {
                    shard.pool.give(batch.out);
                    return Err(e);
                }
            };
            if sent < batch.out.len() {
                #[cfg(test)]
                if sent > 0 {
                    SENT_IN_PART.with(|n| n.set(n.get() + 1));
                }
                batch.sent = Some(sent);
                return Ok(Some(batch));
            }
            #[cfg(test)]
            SENT_WHOLE.with(|n| n.set(n.get() + 1));
            shard.stats.frames_out.add(batch.frames);
            shard.stats.bytes_out.add(batch.out.len() as u64);
            shard.pool.give(batch.out);
        }
    }

    /// Writes queued frames, many per write, starting with `rest` (a batch `write_now` began).
    /// `Flush::Abortable`: a close request cuts the write short after a grace period (a
    /// client that stopped reading must not hold the task), and no further batch starts once a
    /// close is asked for: what still waits is `finish`'s, within its one grace (a slow
    /// consumer's backlog is dropped there, `Kicked` goes alone).
    ///
    /// The socket taking bytes after it was full counts as hearing from the client: while a
    /// long backlog goes out nothing is read, and a slow link that keeps acknowledging is alive.
    pub(super) async fn flush(&mut self, mode: Flush, mut rest: Option<Batch>) -> io::Result<()> {
        let shard = Rc::clone(&self.session.shard);
        let shared = Rc::clone(&self.session.shared);
        let on_room = || shared.seen(shard.tick.get());
        let abortable = mode == Flush::Abortable;
        loop {
            // A batch begun is finished (within the grace below), whatever the mode says: the
            // stream is inside a frame.
            let batch = match rest.take() {
                Some(batch) => batch,
                None => {
                    if abortable && shared.close.get().is_some() {
                        return Ok(());
                    }
                    if let Flush::Until(by) = mode
                        && Instant::now() >= by
                    {
                        return Ok(());
                    }
                    match self.next_batch() {
                        Some(batch) => batch,
                        None => return Ok(()),
                    }
                }
            };
            let Batch { out, frames, sent } = batch;
            let len = out.len() as u64;
            let write = self
                .stream
                .write_all_watched(out, sent, &shard.pool, &on_room);
            let (result, out) = if abortable {
                match write_or_cut(&shared, write).await {
                    Some(r) => r,
                    None => {
                        self.write_cut = true;
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                }
            } else {
                write.await
            };
            shard.pool.give(out);
            result?;
            shard.stats.frames_out.add(frames);
            shard.stats.bytes_out.add(len);
            if !self.has_output() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
