//! The TCP transport of one client connection: reads length-prefixed frames into a pooled buffer
//! only when the socket is readable, hands them to the session, and writes queued frames in
//! batches. Limits: `frame_bytes_max` per frame, `outbound_frames_max` queued frames.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringchat_proto::codec::{self, CodecError, LEN_PREFIX_BYTES};
use ringchat_proto::v1::ErrorCode;

use super::session::{FINAL_FLUSH_MS, Session, queue_kicked, write_or_cut};
use super::{Close, ConnShared, Shard};

/// Bytes gathered into one write, at most (frames are not split across writes below this).
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// Room a read needs at least; a smaller remainder is grown first.
const READ_ROOM_BYTES_MIN: usize = 1024;

enum End {
    Close(Close),
    PeerClosed,
    Io(io::Error),
}

struct Conn {
    session: Session,
    /// A buffer holding a partial frame; `None` whenever no partial frame is pending.
    partial: Option<BytesMut>,
    /// A write was cut short: the stream is mid-frame and nothing more may be written.
    write_cut: std::cell::Cell<bool>,
}

pub(super) async fn serve(
    shard: Rc<Shard>,
    shared: Rc<ConnShared>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    // Small frames both ways: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        session: Session::new(shard, shared, peer),
        partial: None,
        write_cut: std::cell::Cell::new(false),
    };
    let end = conn.run(&mut stream).await;
    conn.finish(&mut stream, end).await;
    drop(stream);
    conn.session.end().await;
}

/// A shard at `conns_per_shard_max` tells the client and closes.
pub(super) async fn reject_full(shard: Rc<Shard>, mut stream: TcpStream) {
    let frame = ringchat_proto::error_frame(
        0,
        ErrorCode::ServerFull,
        "this server is at its connection limit, try another or later",
    );
    shard.stats.error(ErrorCode::ServerFull);
    let bytes = ringchat_proto::encode_to_bytes(&frame);
    let _ = monoio::time::timeout(
        Duration::from_millis(FINAL_FLUSH_MS),
        stream.write_all(bytes),
    )
    .await;
}

impl Conn {
    async fn run(&mut self, stream: &mut TcpStream) -> End {
        loop {
            if let Some(close) = self.session.shared.close.get() {
                return End::Close(close);
            }
            if !self.session.shared.outbound.borrow().is_empty() {
                if let Err(e) = self.flush(stream, true).await {
                    return End::Io(e);
                }
                continue;
            }
            let shared = Rc::clone(&self.session.shared);
            // Not `relaxed`: on epoll a stale "ready" would send the task into a read that
            // blocks outside this select, deaf to pushes and kicks. An in-flight read is never
            // cancelled (io_uring could lose the bytes it already took), so it must not wait.
            let readable = monoio::select! {
                r = stream.readable(false) => Some(r),
                () = shared.wake.notified() => None,
            };
            match readable {
                None => {}
                Some(Err(e)) => return End::Io(e),
                Some(Ok(())) => match self.read(stream).await {
                    Ok(true) => {}
                    Ok(false) => return End::PeerClosed,
                    Err(e) => return End::Io(e),
                },
            }
        }
    }

    /// Reads what is there and handles every complete frame. `Ok(false)` on end of stream.
    async fn read(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        let frame_bytes_max = self.session.shard.limits.frame_bytes_max;
        let mut buf = self
            .partial
            .take()
            .unwrap_or_else(|| self.session.shard.pool.take());
        let frame_rest = match codec::peek_len(&buf, frame_bytes_max) {
            Ok(Some(len)) => (LEN_PREFIX_BYTES + len).saturating_sub(buf.len()),
            _ => 0,
        };
        // Grow toward a big frame as its bytes arrive, never on the prefix's word alone.
        let room = frame_rest
            .min(self.session.shard.pool.buffer_bytes())
            .max(READ_ROOM_BYTES_MIN);
        if buf.capacity() - buf.len() < room {
            buf.reserve(room);
        }
        let (begin, end) = (buf.len(), buf.capacity());
        let (result, slice) = stream.read(SliceMut::new(buf, begin, end)).await;
        let mut buf = slice.into_inner();
        let n = match result {
            Ok(0) => {
                self.session.shard.pool.give(buf);
                return Ok(false);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.session.shard.pool.give(buf);
                return Err(e);
            }
        };
        self.session.shard.stats.bytes_in.add(n as u64);
        loop {
            match codec::decode(&mut buf, frame_bytes_max) {
                Ok(Some(frame)) => {
                    self.session.shard.stats.frames_in.add(1);
                    self.session
                        .shared
                        .last_seen_tick
                        .set(self.session.shard.tick.get());
                    self.session.on_frame(frame).await;
                    if self.session.shared.close.get().is_some() {
                        break;
                    }
                    // A client pipelining many requests must not overflow its own queue.
                    let queued = self.session.shared.outbound.borrow().len();
                    if queued * 2 >= self.session.shard.gateway.outbound_frames_max
                        && let Err(e) = Box::pin(self.flush(stream, true)).await
                    {
                        self.session.shard.pool.give(buf);
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(e @ CodecError::FrameTooLarge { .. }) => {
                    self.session
                        .fail(0, ErrorCode::FrameTooLarge, e.to_string());
                    break;
                }
                Err(e @ CodecError::Malformed(_)) => {
                    self.session.fail(0, ErrorCode::BadFrame, e.to_string());
                    break;
                }
            }
        }
        if buf.is_empty() || self.session.shared.close.get().is_some() {
            self.session.shard.pool.give(buf);
        } else {
            self.partial = Some(buf);
        }
        Ok(true)
    }

    /// Writes queued frames, many per write. With `abortable`, a close request cuts the write
    /// short (a client that stopped reading must not hold the task).
    async fn flush(&self, stream: &mut TcpStream, abortable: bool) -> io::Result<()> {
        loop {
            let mut buf = self.session.shard.pool.take();
            let mut frames = 0u64;
            {
                let mut queue = self.session.shared.outbound.borrow_mut();
                while let Some(frame) = queue.front() {
                    if !buf.is_empty() && buf.len() + frame.len() > WRITE_BATCH_BYTES_MAX {
                        break;
                    }
                    buf.extend_from_slice(frame);
                    queue.pop_front();
                    frames += 1;
                }
                if queue.is_empty() && queue.capacity() > 1024 {
                    queue.shrink_to(64);
                }
            }
            if frames == 0 {
                self.session.shard.pool.give(buf);
                return Ok(());
            }
            let len = buf.len() as u64;
            let (result, buf) = if abortable {
                let shared = Rc::clone(&self.session.shared);
                match write_or_cut(&shared, stream.write_all(buf)).await {
                    Some(r) => r,
                    None => {
                        self.write_cut.set(true);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                }
            } else {
                stream.write_all(buf).await
            };
            self.session.shard.pool.give(buf);
            result?;
            self.session.shard.stats.frames_out.add(frames);
            self.session.shard.stats.bytes_out.add(len);
            if self.session.shared.outbound.borrow().is_empty() {
                return Ok(());
            }
        }
    }

    async fn finish(&mut self, stream: &mut TcpStream, end: End) {
        if let Some(buf) = self.partial.take() {
            self.session.shard.pool.give(buf);
        }
        // A kick counts even when its connection failed before it could be told.
        if let Some(Close::Kick(reason)) = self.session.shared.close.get() {
            self.session.shard.stats.kick(reason);
        }
        if self.write_cut.get() {
            return;
        }
        match end {
            End::Close(Close::Kick(reason)) => queue_kicked(&self.session.shared, reason),
            End::Close(Close::AfterError(_)) => {}
            End::PeerClosed => return,
            End::Io(err) => {
                tracing::debug!(shard = self.session.shard.id, conn = self.session.shared.id, %err, "connection I/O error");
                return;
            }
        }
        let _ = monoio::time::timeout(
            Duration::from_millis(FINAL_FLUSH_MS),
            Box::pin(self.flush(stream, false)),
        )
        .await;
    }
}
