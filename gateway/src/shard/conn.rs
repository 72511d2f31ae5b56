//! One client connection: reads frames into a pooled buffer only when the socket is readable,
//! runs the session state machine, forwards typed requests to the backend, and writes queued
//! frames in batches. Limits: `frame_bytes_max` per frame, `outbound_frames_max` queued frames.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringchat_backend::api::{ConnRef, Request};
use ringchat_proto::codec::{self, CodecError, LEN_PREFIX_BYTES};
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::sync::oneshot;

use super::{Close, ConnShared, Shard};

/// Bytes gathered into one write, at most (frames are not split across writes below this).
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// Room a read needs at least; a smaller remainder is grown first.
const READ_ROOM_BYTES_MIN: usize = 1024;
/// Time the last frames (Kicked, Error) get to reach a client before the socket is closed.
const FINAL_FLUSH_MS: u64 = 1_000;

enum State {
    AwaitHello,
    AwaitLogin,
    Authed { user_id: u64 },
}

enum End {
    Close(Close),
    PeerClosed,
    Io(io::Error),
}

struct Conn {
    shard: Rc<Shard>,
    shared: Rc<ConnShared>,
    peer: SocketAddr,
    state: State,
    /// A buffer holding a partial frame; `None` whenever no partial frame is pending.
    partial: Option<BytesMut>,
    send_budget: SendBudget,
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
    let send_budget = SendBudget::new(shard.limits.messages_per_s_max, shard.tick_ms);
    let mut conn = Conn {
        shard,
        shared,
        peer,
        state: State::AwaitHello,
        partial: None,
        send_budget,
        write_cut: std::cell::Cell::new(false),
    };
    let end = conn.run(&mut stream).await;
    conn.finish(&mut stream, end).await;
    drop(stream);
    let shard = &conn.shard;
    shard.unregister(conn.shared.id);
    if let State::Authed { user_id } = conn.state {
        shard.stats.authenticated.sub(1);
        let closed = Request::Closed {
            conn: conn.conn_ref(),
            user_id,
        };
        // The backend may already be gone at shutdown; then there is nobody to tell.
        let _ = shard.backend.send(closed).await;
    }
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

/// Resolves once the connection has been told to close.
async fn closed(shared: &ConnShared) {
    while shared.close.get().is_none() {
        shared.wake.notified().await;
    }
}

impl Conn {
    fn conn_ref(&self) -> ConnRef {
        ConnRef {
            shard: self.shard.id,
            conn: self.shared.id,
        }
    }

    async fn run(&mut self, stream: &mut TcpStream) -> End {
        loop {
            if let Some(close) = self.shared.close.get() {
                return End::Close(close);
            }
            if !self.shared.outbound.borrow().is_empty() {
                if let Err(e) = self.flush(stream, true).await {
                    return End::Io(e);
                }
                continue;
            }
            let shared = Rc::clone(&self.shared);
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
        let frame_bytes_max = self.shard.limits.frame_bytes_max;
        let mut buf = self
            .partial
            .take()
            .unwrap_or_else(|| self.shard.pool.take());
        let frame_rest = match codec::peek_len(&buf, frame_bytes_max) {
            Ok(Some(len)) => (LEN_PREFIX_BYTES + len).saturating_sub(buf.len()),
            _ => 0,
        };
        // Grow toward a big frame as its bytes arrive, never on the prefix's word alone.
        let room = frame_rest
            .min(self.shard.pool.buffer_bytes())
            .max(READ_ROOM_BYTES_MIN);
        if buf.capacity() - buf.len() < room {
            buf.reserve(room);
        }
        let (begin, end) = (buf.len(), buf.capacity());
        let (result, slice) = stream.read(SliceMut::new(buf, begin, end)).await;
        let mut buf = slice.into_inner();
        let n = match result {
            Ok(0) => {
                self.shard.pool.give(buf);
                return Ok(false);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.shard.pool.give(buf);
                return Err(e);
            }
        };
        self.shard.stats.bytes_in.add(n as u64);
        loop {
            match codec::decode(&mut buf, frame_bytes_max) {
                Ok(Some(frame)) => {
                    self.shard.stats.frames_in.add(1);
                    self.shared.last_seen_tick.set(self.shard.tick.get());
                    self.on_frame(frame).await;
                    if self.shared.close.get().is_some() {
                        break;
                    }
                    // A client pipelining many requests must not overflow its own queue.
                    let queued = self.shared.outbound.borrow().len();
                    if queued * 2 >= self.shard.gateway.outbound_frames_max
                        && let Err(e) = self.flush(stream, true).await
                    {
                        self.shard.pool.give(buf);
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(e @ CodecError::FrameTooLarge { .. }) => {
                    self.fail(0, ErrorCode::FrameTooLarge, e.to_string());
                    break;
                }
                Err(e @ CodecError::Malformed(_)) => {
                    self.fail(0, ErrorCode::BadFrame, e.to_string());
                    break;
                }
            }
        }
        if buf.is_empty() || self.shared.close.get().is_some() {
            self.shard.pool.give(buf);
        } else {
            self.partial = Some(buf);
        }
        Ok(true)
    }

    async fn on_frame(&mut self, frame: Frame) {
        let request_id = frame.request_id;
        let Some(body) = frame.body else {
            self.error(request_id, ErrorCode::UnexpectedBody, "frame has no body");
            return;
        };
        match (&self.state, body) {
            (State::AwaitHello, Body::Hello(hello)) => self.hello(request_id, &hello),
            (State::AwaitHello, _) => {
                self.fail(
                    request_id,
                    ErrorCode::HelloRequired,
                    "the first frame must be hello",
                );
            }
            (_, Body::Ping(ping)) => self.reply(
                request_id,
                Body::Pong(v1::Pong {
                    client_time_ms: ping.client_time_ms,
                    server_time_ms: ringchat_backend::time::now_ms(),
                }),
            ),
            (_, Body::Hello(_)) => {
                self.error(
                    request_id,
                    ErrorCode::UnexpectedBody,
                    "hello was already received",
                );
            }
            (State::AwaitLogin, Body::Register(register)) => {
                self.register(request_id, register).await
            }
            (State::AwaitLogin, Body::Login(login)) => self.login(request_id, login).await,
            (State::Authed { .. }, Body::Register(_) | Body::Login(_)) => {
                self.error(
                    request_id,
                    ErrorCode::AlreadyAuthenticated,
                    "already logged in",
                );
            }
            (state, body) if is_session_body(&body) => match *state {
                State::Authed { user_id } => self.session_request(request_id, user_id, body).await,
                _ => self.error(request_id, ErrorCode::NotAuthenticated, "log in first"),
            },
            (_, body) => {
                let name = ringchat_proto::body_name(&body);
                self.error(
                    request_id,
                    ErrorCode::UnexpectedBody,
                    format!("{name} is sent by the server only"),
                );
            }
        }
    }

    fn hello(&mut self, request_id: u64, hello: &v1::Hello) {
        if hello.protocol_version != PROTOCOL_VERSION {
            self.fail(
                request_id,
                ErrorCode::UnsupportedProtocolVersion,
                format!(
                    "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            );
            return;
        }
        let g = &self.shard.gateway;
        let limits = &self.shard.limits;
        let ok = v1::HelloOk {
            protocol_version: PROTOCOL_VERSION,
            frame_bytes_max: u32::try_from(limits.frame_bytes_max).unwrap_or(u32::MAX),
            heartbeat_interval_ms: u32::try_from(g.heartbeat_interval_ms).unwrap_or(u32::MAX),
            idle_timeout_ms: u32::try_from(g.idle_timeout_ms).unwrap_or(u32::MAX),
            server_name: g.server_name.clone(),
            message_bytes_max: u32::try_from(limits.message_bytes_max).unwrap_or(u32::MAX),
            sync_page_max: limits.sync_page_max,
        };
        self.state = State::AwaitLogin;
        self.reply(request_id, Body::HelloOk(ok));
    }

    async fn register(&mut self, request_id: u64, body: v1::Register) {
        let (reply, answer) = oneshot::channel();
        let request = Request::Register {
            peer: self.peer.ip(),
            body,
            reply,
        };
        if let Some(body) = self.ask_backend(request, answer).await {
            self.reply(request_id, body);
        }
    }

    async fn login(&mut self, request_id: u64, body: v1::Login) {
        let (reply, answer) = oneshot::channel();
        let request = Request::Login {
            conn: self.conn_ref(),
            peer: self.peer.ip(),
            body,
            reply,
        };
        let Some(outcome) = self.ask_backend(request, answer).await else {
            return;
        };
        match outcome.session {
            Some(session) => {
                self.state = State::Authed {
                    user_id: session.user_id,
                };
                self.shared.authed.set(true);
                self.shard.stats.authenticated.add(1);
                self.shard.stats.logins.add(1);
            }
            None => self.shard.stats.login_failures.add(1),
        }
        self.reply(request_id, outcome.body);
    }

    /// Sends a request that answers on a oneshot; gives up if the connection is closed meanwhile.
    async fn ask_backend<T>(
        &mut self,
        request: Request,
        answer: oneshot::Receiver<T>,
    ) -> Option<T> {
        if self.shard.backend.send(request).await.is_err() {
            self.fail(0, ErrorCode::Unavailable, "server is shutting down");
            return None;
        }
        let shared = Rc::clone(&self.shared);
        let mut answer = std::pin::pin!(answer);
        let answer = monoio::select! {
            a = &mut answer => a.map_err(|_| ()),
            () = closed(&shared) => {
                // An answer may have been sent as the close came; a login it reports must still
                // be registered here, or the backend would never hear that this session ended.
                answer.close();
                answer.try_recv().map_err(|_| ())
            }
        };
        match answer {
            Ok(body) => Some(body),
            Err(_) => {
                if self.shared.close.get().is_none() {
                    self.error(0, ErrorCode::Internal, "the request was dropped, retry");
                }
                None
            }
        }
    }

    async fn session_request(&mut self, request_id: u64, user_id: u64, body: Body) {
        if matches!(body, Body::Send(_)) && !self.send_budget.take(self.shard.tick.get()) {
            let frame = Frame {
                request_id,
                body: Some(Body::Error(v1::Error {
                    code: ErrorCode::RateLimited as i32,
                    message: format!(
                        "over {} messages per second on this connection",
                        self.shard.limits.messages_per_s_max
                    ),
                    retry_after_ms: self.shard.tick_ms,
                })),
            };
            self.shard.stats.error(ErrorCode::RateLimited);
            self.shared.enqueue(
                ringchat_proto::encode_to_bytes(&frame),
                self.shard.gateway.outbound_frames_max,
            );
            return;
        }
        let request = Request::Session {
            conn: self.conn_ref(),
            user_id,
            request_id,
            body,
        };
        if self.shard.backend.send(request).await.is_err() {
            self.fail(
                request_id,
                ErrorCode::Unavailable,
                "server is shutting down",
            );
        }
    }

    fn reply(&self, request_id: u64, body: Body) {
        let frame = Frame {
            request_id,
            body: Some(body),
        };
        self.shared.enqueue(
            ringchat_proto::encode_to_bytes(&frame),
            self.shard.gateway.outbound_frames_max,
        );
    }

    /// An error reply; the connection stays open.
    fn error(&self, request_id: u64, code: ErrorCode, message: impl Into<String>) {
        self.shard.stats.error(code);
        self.reply(request_id, Body::Error(error_body(code, message)));
    }

    /// An error reply, then the connection is closed.
    fn fail(&self, request_id: u64, code: ErrorCode, message: impl Into<String>) {
        self.error(request_id, code, message);
        self.shared.close_with(Close::AfterError);
    }

    /// Writes queued frames, many per write. With `abortable`, a close request cuts the write
    /// short (a client that stopped reading must not hold the task).
    async fn flush(&self, stream: &mut TcpStream, abortable: bool) -> io::Result<()> {
        loop {
            let mut buf = self.shard.pool.take();
            let mut frames = 0u64;
            {
                let mut queue = self.shared.outbound.borrow_mut();
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
                self.shard.pool.give(buf);
                return Ok(());
            }
            let len = buf.len() as u64;
            let (result, buf) = if abortable {
                let shared = Rc::clone(&self.shared);
                let mut write = std::pin::pin!(stream.write_all(buf));
                monoio::select! {
                    r = &mut write => r,
                    () = closed(&shared) => {
                        // Finish this write if the client lets us soon; cutting it would leave
                        // half a frame on the wire, after which nothing more may be written.
                        let grace = Duration::from_millis(FINAL_FLUSH_MS);
                        match monoio::time::timeout(grace, write).await {
                            Ok(r) => r,
                            Err(_) => {
                                self.write_cut.set(true);
                                return Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "client stopped reading",
                                ));
                            }
                        }
                    }
                }
            } else {
                stream.write_all(buf).await
            };
            self.shard.pool.give(buf);
            result?;
            self.shard.stats.frames_out.add(frames);
            self.shard.stats.bytes_out.add(len);
            if self.shared.outbound.borrow().is_empty() {
                return Ok(());
            }
        }
    }

    async fn finish(&mut self, stream: &mut TcpStream, end: End) {
        if let Some(buf) = self.partial.take() {
            self.shard.pool.give(buf);
        }
        // A kick counts even when its connection failed before it could be told.
        if let Some(Close::Kick(reason)) = self.shared.close.get() {
            self.shard.stats.kick(reason);
        }
        if self.write_cut.get() {
            return;
        }
        match end {
            End::Close(Close::Kick(reason)) => {
                let mut queue = self.shared.outbound.borrow_mut();
                if reason == KickReason::SlowConsumer {
                    // It could not take these; it resyncs by seq when it reconnects.
                    queue.clear();
                }
                queue.push_back(ringchat_proto::encode_to_bytes(
                    &ringchat_proto::kicked_frame(reason, kick_message(reason)),
                ));
            }
            End::Close(Close::AfterError) => {}
            End::PeerClosed => return,
            End::Io(err) => {
                tracing::debug!(shard = self.shard.id, conn = self.shared.id, %err, "connection I/O error");
                return;
            }
        }
        let _ = monoio::time::timeout(
            Duration::from_millis(FINAL_FLUSH_MS),
            self.flush(stream, false),
        )
        .await;
    }
}

fn error_body(code: ErrorCode, message: impl Into<String>) -> v1::Error {
    v1::Error {
        code: code as i32,
        message: message.into(),
        retry_after_ms: 0,
    }
}

fn kick_message(reason: KickReason) -> &'static str {
    match reason {
        KickReason::SlowConsumer => {
            "too many frames waiting for this connection; reconnect and sync"
        }
        KickReason::ServerShutdown => "server is shutting down; reconnect later",
        KickReason::Replaced => "logged in again elsewhere",
        KickReason::IdleTimeout => "nothing received within the idle timeout",
        KickReason::HandshakeTimeout => "no login within the handshake timeout",
        KickReason::Unspecified => "closed by the server",
    }
}

/// Bodies a logged-in client sends for the backend to serve.
fn is_session_body(body: &Body) -> bool {
    matches!(
        body,
        Body::Send(_)
            | Body::DeliveryAck(_)
            | Body::Read(_)
            | Body::Sync(_)
            | Body::History(_)
            | Body::Conversations(_)
            | Body::Typing(_)
            | Body::Recall(_)
    )
}

/// Per-connection token bucket for `Send`, refilled on the shard's coarse clock: one second of
/// burst at `messages_per_s_max`. Counted in thousandths of a message so that low limits and
/// short ticks do not round away.
struct SendBudget {
    milli_tokens: u64,
    capacity_milli: u64,
    refill_milli_per_tick: u64,
    last_tick: u64,
}

impl SendBudget {
    fn new(messages_per_s_max: u32, tick_ms: u64) -> Self {
        let capacity_milli = u64::from(messages_per_s_max) * 1000;
        Self {
            milli_tokens: capacity_milli,
            capacity_milli,
            // messages/s × 1000 milli × tick_ms / 1000 ms
            refill_milli_per_tick: u64::from(messages_per_s_max) * tick_ms,
            last_tick: 0,
        }
    }

    fn take(&mut self, now_tick: u64) -> bool {
        if now_tick > self.last_tick {
            let refill = (now_tick - self.last_tick).saturating_mul(self.refill_milli_per_tick);
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(refill)
                .min(self.capacity_milli);
            self.last_tick = now_tick;
        }
        if self.milli_tokens < 1000 {
            return false;
        }
        self.milli_tokens -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::SendBudget;

    #[test]
    fn send_budget_allows_a_second_of_burst_then_refills_per_tick() {
        let mut b = SendBudget::new(100, 100);
        assert!((0..100).all(|_| b.take(0)));
        assert!(!b.take(0));
        assert!((0..10).all(|_| b.take(1)), "one tick refills 10");
        assert!(!b.take(1));
        assert!(
            (0..100).all(|_| b.take(1000)),
            "refill is capped at capacity"
        );
        assert!(!b.take(1000));
    }
}
