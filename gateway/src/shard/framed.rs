//! One client connection on the WebSocket, TLS or WebSocket-over-TLS listener: opens the
//! transport (TLS handshake, HTTP upgrade or a chat page file), then runs the same session as
//! TCP, reading only when the socket is readable and writing queued frames in batches.
//! The plain TCP listener keeps its own tuned loop in tcp.rs.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use ringchat_proto::codec::{self, CodecError};
use ringchat_proto::v1::ErrorCode;
use rustls::ServerConfig;

use super::session::{FINAL_FLUSH_MS, Session, queue_kicked, write_or_cut};
use super::stream::Stream;
use super::ws;
use super::{Close, ConnShared, Shard};

/// Bytes gathered into one write, at most.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// What a listener speaks inside its (optional) TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// 4-byte length + protobuf Frame, as on the TCP listener.
    LenPrefixed,
    /// HTTP upgrade on `/ws`, then one Frame per WebSocket message.
    WebSocket,
}

pub(super) enum End {
    Close(Close),
    /// End of stream, or the peer's WebSocket close (answered with this code).
    PeerClosed(Option<u16>),
    Io(io::Error),
}

pub(super) struct Conn {
    pub session: Session,
    pub stream: Stream,
    pub framing: Framing,
    /// Bytes holding a partial frame; `None` whenever none is pending.
    pub partial: Option<BytesMut>,
    pub ws: ws::State,
    /// A close code that says more than the session's reason (a WebSocket protocol error).
    pub close_code: Option<u16>,
    write_cut: bool,
}

/// Serves one accepted socket. With `full`, the shard is at its connection limit: the client
/// is told so once the transport is up, and the connection is closed.
pub(super) async fn serve(
    shard: Rc<Shard>,
    shared: Rc<ConnShared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    framing: Framing,
    full: bool,
) {
    if full && tls.is_some() {
        // Turned away before any handshake work: a full shard must not spend signatures on
        // clients it will not serve.
        Session::new(shard, shared, peer).end().await;
        return;
    }
    let stream = match tls {
        None => Stream::plain(tcp),
        Some(config) => match Stream::tls(tcp, config) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "TLS session could not start");
                Session::new(shard, shared, peer).end().await;
                return;
            }
        },
    };
    stream.set_nodelay();
    let mut conn = Conn {
        session: Session::new(shard, shared, peer),
        stream,
        framing,
        partial: None,
        ws: ws::State::default(),
        close_code: None,
        write_cut: false,
    };
    let shard = Rc::clone(&conn.session.shard);
    let limit = Duration::from_millis(shard.gateway.handshake_timeout_ms);
    if full {
        // Not in the shard's table, so the reaper does not see it: bound it here.
        let _ = monoio::time::timeout(limit, async {
            if conn.open().await {
                conn.session.fail(
                    0,
                    ErrorCode::ServerFull,
                    "this server is at its connection limit, try another or later",
                );
                conn.finish(End::Close(Close::AfterError(ErrorCode::ServerFull)))
                    .await;
            }
        })
        .await;
    } else if monoio::time::timeout(limit, conn.open()).await == Ok(true) {
        // Opening (TLS handshake, HTTP upgrade, serving the page) is bounded by the handshake
        // timeout: a client that stops reading cannot hold the connection there.
        let end = conn.run().await;
        conn.finish(end).await;
    }
    conn.session.end().await;
}

impl Conn {
    /// Waits until the socket is readable (`Some`), or until the connection is woken: a frame
    /// to write or a close (`None`).
    async fn readable(&self) -> Option<io::Result<()>> {
        if self.session.shared.close.get().is_some() {
            return None;
        }
        let shared = Rc::clone(&self.session.shared);
        monoio::select! {
            r = self.stream.readable() => Some(r),
            () = shared.wake.notified() => None,
        }
    }

    /// Before the session runs, only readability or a close matter.
    async fn readable_or_closed(&self) -> bool {
        loop {
            if self.session.shared.close.get().is_some() {
                return false;
            }
            match self.readable().await {
                Some(Ok(())) => return true,
                Some(Err(_)) => return false,
                None => {}
            }
        }
    }

    /// TLS handshake, then (WebSocket) the HTTP request. False when the connection ended there:
    /// a page was served, the request was refused, the peer left, or the handshake timed out.
    async fn open(&mut self) -> bool {
        let shard = Rc::clone(&self.session.shard);
        // Borrow a buffer only once the client has sent something.
        if !self.readable_or_closed().await {
            return false;
        }
        let mut buf = shard.pool.take();
        let opened = self.open_into(&mut buf).await;
        if opened && !buf.is_empty() {
            self.partial = Some(buf);
        } else {
            shard.pool.give(buf);
        }
        opened
    }

    async fn open_into(&mut self, buf: &mut BytesMut) -> bool {
        let shard = Rc::clone(&self.session.shard);
        while self.stream.handshaking() {
            if !self.readable_or_closed().await {
                return false;
            }
            match self.stream.read(buf, &shard.pool).await {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(err) => {
                    shard.stats.error(ErrorCode::BadFrame);
                    tracing::debug!(shard = shard.id, %err, "TLS handshake failed");
                    return false;
                }
            }
        }
        if self.framing == Framing::LenPrefixed {
            return true;
        }
        loop {
            if let Some((route, head_bytes)) = ws::http::parse(buf) {
                buf.advance(head_bytes.min(buf.len()));
                let (response, upgraded) = match route {
                    ws::http::Route::Upgrade(r) => (r, true),
                    ws::http::Route::Respond(r) => (r, false),
                };
                let mut out = shard.pool.take();
                out.extend_from_slice(response.as_bytes());
                let (result, out) = self.stream.write_all(out, &shard.pool).await;
                shard.pool.give(out);
                if upgraded && result.is_ok() {
                    return true;
                }
                self.stream.shutdown(&shard.pool).await;
                self.drain_until_eof().await;
                return false;
            }
            if !self.readable_or_closed().await {
                return false;
            }
            match self.stream.read(buf, &shard.pool).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    async fn run(&mut self) -> End {
        // Frames the client sent right behind its handshake are already here.
        if let Some(buf) = self.partial.take()
            && let Err(end) = self.handle_input(buf).await
        {
            return end;
        }
        loop {
            if let Some(close) = self.session.shared.close.get() {
                return End::Close(close);
            }
            if !self.session.shared.outbound.borrow().is_empty() || self.ws.pong.is_some() {
                if let Err(e) = self.flush(true).await {
                    return End::Io(e);
                }
                continue;
            }
            match self.readable().await {
                None => {}
                Some(Err(e)) => return End::Io(e),
                Some(Ok(())) => {
                    let shard = Rc::clone(&self.session.shard);
                    let mut buf = self.partial.take().unwrap_or_else(|| shard.pool.take());
                    match self.stream.read(&mut buf, &shard.pool).await {
                        Ok(Some(n)) => {
                            shard.stats.bytes_in.add(n as u64);
                            if let Err(end) = self.handle_input(buf).await {
                                return end;
                            }
                        }
                        Ok(None) => {
                            shard.pool.give(buf);
                            return End::PeerClosed(None);
                        }
                        Err(e) => {
                            shard.pool.give(buf);
                            return End::Io(e);
                        }
                    }
                }
            }
        }
    }

    /// Handles every complete frame in `buf`; keeps a partial one for the next read.
    async fn handle_input(&mut self, mut buf: BytesMut) -> Result<(), End> {
        let result = match self.framing {
            Framing::LenPrefixed => self.handle_len_prefixed(&mut buf).await,
            Framing::WebSocket => ws::handle_input(self, &mut buf).await,
        };
        if buf.is_empty() || self.session.shared.close.get().is_some() || result.is_err() {
            self.session.shard.pool.give(buf);
        } else {
            self.partial = Some(buf);
        }
        result
    }

    async fn handle_len_prefixed(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        let frame_bytes_max = self.session.shard.limits.frame_bytes_max;
        loop {
            match codec::decode(buf, frame_bytes_max) {
                Ok(Some(frame)) => {
                    self.on_frame(frame).await?;
                    if self.session.shared.close.get().is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e @ CodecError::FrameTooLarge { .. }) => {
                    self.session
                        .fail(0, ErrorCode::FrameTooLarge, e.to_string());
                    return Ok(());
                }
                Err(e @ CodecError::Malformed(_)) => {
                    self.session.fail(0, ErrorCode::BadFrame, e.to_string());
                    return Ok(());
                }
            }
        }
    }

    /// Counts a frame as liveness, hands it to the session, and keeps a pipelining client from
    /// overflowing its own queue.
    pub async fn on_frame(&mut self, frame: ringchat_proto::Frame) -> Result<(), End> {
        let shard = Rc::clone(&self.session.shard);
        shard.stats.frames_in.add(1);
        self.session.on_frame(frame).await;
        let queued = self.session.shared.outbound.borrow().len();
        if queued * 2 >= shard.gateway.outbound_frames_max
            && self.session.shared.close.get().is_none()
        {
            self.flush(true).await.map_err(End::Io)?;
        }
        Ok(())
    }

    /// Marks the connection alive (any WebSocket frame counts, ping and pong included).
    pub fn seen(&self) {
        let tick = self.session.shard.tick.get();
        self.session.shared.last_seen_tick.set(tick);
    }

    /// Writes queued frames, many per write. With `abortable`, a close request cuts the write
    /// short after a grace period (a client that stopped reading must not hold the task).
    async fn flush(&mut self, abortable: bool) -> io::Result<()> {
        let shard = Rc::clone(&self.session.shard);
        loop {
            let mut out = shard.pool.take();
            let mut frames = 0u64;
            ws::put_pong(&mut self.ws, &mut out);
            {
                let mut queue = self.session.shared.outbound.borrow_mut();
                while let Some(frame) = queue.front() {
                    if !out.is_empty() && out.len() + frame.len() > WRITE_BATCH_BYTES_MAX {
                        break;
                    }
                    match self.framing {
                        Framing::LenPrefixed => out.extend_from_slice(frame),
                        Framing::WebSocket => ws::put_frame(&self.ws, frame, &mut out),
                    }
                    queue.pop_front();
                    frames += 1;
                }
                if queue.is_empty() && queue.capacity() > 1024 {
                    queue.shrink_to(64);
                }
            }
            if out.is_empty() {
                shard.pool.give(out);
                return Ok(());
            }
            let len = out.len() as u64;
            let (result, out) = if abortable {
                let shared = Rc::clone(&self.session.shared);
                match write_or_cut(&shared, self.stream.write_all(out, &shard.pool)).await {
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
                self.stream.write_all(out, &shard.pool).await
            };
            shard.pool.give(out);
            result?;
            shard.stats.frames_out.add(frames);
            shard.stats.bytes_out.add(len);
            if self.session.shared.outbound.borrow().is_empty() && self.ws.pong.is_none() {
                return Ok(());
            }
        }
    }

    async fn finish(&mut self, end: End) {
        let shard = Rc::clone(&self.session.shard);
        if let Some(buf) = self.partial.take() {
            shard.pool.give(buf);
        }
        if let Some(Close::Kick(reason)) = self.session.shared.close.get() {
            shard.stats.kick(reason);
        }
        if self.write_cut {
            return;
        }
        let (code, reason) = match end {
            End::Close(Close::Kick(reason)) => {
                queue_kicked(&self.session.shared, reason);
                (ws::kick_close_code(reason), reason.as_str_name())
            }
            End::Close(Close::AfterError(code)) => (
                self.close_code.unwrap_or(ws::error_close_code(code)),
                code.as_str_name(),
            ),
            End::PeerClosed(Some(code)) => {
                self.session.shared.outbound.borrow_mut().clear();
                (code, "")
            }
            End::PeerClosed(None) => return,
            End::Io(err) => {
                tracing::debug!(shard = shard.id, conn = self.session.shared.id, %err, "connection I/O error");
                return;
            }
        };
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let _ = monoio::time::timeout(grace, async {
            let _ = self.flush(false).await;
            if self.framing == Framing::WebSocket {
                let mut out = shard.pool.take();
                ws::codec::put_close(&mut out, code, reason);
                let (_, out) = self.stream.write_all(out, &shard.pool).await;
                shard.pool.give(out);
            }
            self.stream.shutdown(&shard.pool).await;
        })
        .await;
        self.drain_until_eof().await;
    }

    /// Reads and drops what the client still sends until it closes, briefly: closing a socket
    /// with unread bytes resets it, and the client could lose the last frames.
    async fn drain_until_eof(&mut self) {
        let shard = Rc::clone(&self.session.shard);
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let _ = monoio::time::timeout(grace, async {
            let mut buf = shard.pool.take();
            loop {
                if self.stream.readable().await.is_err() {
                    break;
                }
                buf.clear();
                match self.stream.read(&mut buf, &shard.pool).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            shard.pool.give(buf);
        })
        .await;
    }
}

/// Keeps the first specific close code (a WebSocket protocol error says more than the session's
/// generic reason).
pub(super) fn set_close_code(conn: &mut Conn, code: u16) {
    if conn.close_code.is_none() {
        conn.close_code = Some(code);
    }
}
