//! The one connection loop, for every transport. A connection is built from layers: a byte
//! stream (plain TCP or TLS, stream.rs), a framing (length-prefixed or WebSocket, framing.rs)
//! and the transport-free session (session.rs). This loop owns everything they share: reading
//! only when the socket is readable into a pooled buffer, liveness, the outbound queue and its
//! batched writes, the close with a reason, and the final flush. Timers (handshake, idle) are
//! applied by the shard's reaper through `ConnShared::close_with`, which this loop obeys.

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use ringchat_proto::Body;
use ringchat_proto::v1::{ErrorCode, KickReason};

use super::framing::{Framing, Goodbye, Input};
use super::local::YieldOnce;
use super::prelogin::PreloginPlace;
use super::session::{Session, Wait};
use super::stream::Stream;
use super::tls_gate::{HandshakeSlot, Hello, client_hello};
use super::ws;
use super::{Close, ConnShared, Shard, TurningAway};

// `/files`: the connection's bytes go to the backend's files service over a pipe.
mod files;
// A trusted load balancer's PROXY header, read before anything else.
mod proxy;
// Queued frames to the socket: batches, the synchronous fast path, the async flush.
mod write;

use write::Flush;

/// Reads a connection makes before its task lets the shard's other tasks run, on the epoll
/// driver only ([`Shard::readiness_never_waits`]): there a socket that stays readable is
/// ready again at once, so the task never waits:
/// a client that never stops sending (WebSocket pongs, which need no answer) would otherwise
/// hold the shard's thread, and its other connections, inbox, accepts and timers with it.
const READS_PER_TURN: u32 = 16;

/// Counts a loop's reads of one socket and, every [`READS_PER_TURN`] of them on the epoll
/// driver, lets the shard's other tasks run: the one rule of every loop that may read on and
/// on (the session, a file's copy, the final drain).
#[derive(Default)]
pub(super) struct ReadTurn(u32);

impl ReadTurn {
    /// Called after each read.
    pub(super) async fn after_read(&mut self, shard: &Shard) {
        self.0 += 1;
        if self.0 == READS_PER_TURN {
            self.0 = 0;
            if shard.readiness_never_waits() {
                YieldOnce(false).await;
            }
        }
    }
}

/// Time the last frames (Kicked, Error, a close frame) get to reach a client before the socket
/// is closed, and time a cut-short write gets once a close is asked for.
const FINAL_FLUSH_MS: u64 = 1_000;

/// How a transport's opening ended (`Opened` less the bytes).
enum Opening {
    Session,
    Files,
    Closed,
}

/// What opening a connection came to.
enum Opened {
    /// The session runs (a framed transport, or a WebSocket upgrade).
    Session,
    /// A request under `/files`: these bytes (its head first) and the rest go to the backend.
    Files(BytesMut),
    /// Answered (a page, an error) or failed: nothing more to serve.
    Closed,
}

/// How the loop ended.
enum End {
    Close(Close),
    /// End of stream (`None`), or the peer's WebSocket close to echo.
    PeerClosed(Option<u16>),
    Io(io::Error),
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listen {
    Tcp,
    Ws,
    Tls,
    Wss,
}

impl Listen {
    /// Its index in `ShardStats::transports`.
    fn index(self) -> usize {
        match self {
            Self::Tcp => 0,
            Self::Ws => 1,
            Self::Tls => 2,
            Self::Wss => 3,
        }
    }

    pub(super) fn tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    fn framing(self) -> Framing {
        match self {
            Self::Tcp | Self::Tls => Framing::LenPrefixed,
            Self::Ws | Self::Wss => Framing::websocket(),
        }
    }
}

struct Conn {
    session: Session,
    stream: Stream,
    framing: Framing,
    /// Bytes holding a partial frame; `None` whenever none is pending.
    partial: Option<BytesMut>,
    /// A WebSocket close code that says more than the session's reason (a protocol error).
    ws_close: Option<u16>,
    /// A write was cut short: the stream is mid-frame and nothing more may be written.
    write_cut: bool,
}

/// How an accepted socket is to be opened.
pub(super) struct Accepted {
    /// Why the client is turned away, if it is: it is told `SERVER_FULL` once its transport
    /// is up (on every transport alike), and the connection is closed. Such a connection is
    /// not in the shard's table; the shard bounds how many of those run at once
    /// (`TurningAway`).
    pub turn_away: Option<TurnAway>,
    /// The peer is in `gateway.proxy_protocol_from`: a PROXY header comes first, and the IP
    /// rules and the pre-login count were not applied at accept (`proxy.rs`).
    pub proxied: bool,
    /// Its place among its client's connections not logged in yet (`prelogin.rs`); taken at
    /// accept unless it is turned away or proxied.
    pub prelogin: Option<PreloginPlace>,
}

/// Why a connection is turned away as its transport opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnAway {
    /// The shard is at `conns_per_shard_max`.
    Full,
    /// Its client already has `gateway.prelogin_conns_per_ip_max` connections on the shard
    /// that have not logged in.
    PreloginPerIp,
}

impl TurnAway {
    fn message(self) -> &'static str {
        match self {
            Self::Full => "this server is at its connection limit, try another or later",
            Self::PreloginPerIp => {
                "too many connections from this address have not logged in yet, try again later"
            }
        }
    }
}

/// Serves one accepted socket to the end (see [`Accepted`]).
///
/// The connection is built before the returned future, so the task holds only the `Conn`, not
/// also the arguments it was made from.
pub(super) fn serve(
    shard: Rc<Shard>,
    shared: Rc<ConnShared>,
    tcp: TcpStream,
    listen: Listen,
    accepted: Accepted,
) -> impl std::future::Future<Output = ()> + 'static {
    let Accepted {
        turn_away,
        proxied,
        prelogin,
    } = accepted;
    let turned_away = turn_away.is_some();
    let session = Session::new(shard, shared, prelogin);
    // Small frames both ways: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let stream = match (listen.tls(), &session.shard.tls) {
        (true, Some(config)) => match Stream::tls(tcp, Arc::clone(config)) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!(%err, "TLS session could not start");
                None
            }
        },
        (true, None) => None,
        (false, _) => Some(Stream::plain(tcp)),
    };
    let mut conn = match stream {
        Some(stream) => Ok(Conn {
            session,
            stream,
            framing: listen.framing(),
            partial: None,
            ws_close: None,
            write_cut: false,
        }),
        None => Err(session),
    };
    // Counted per transport while it is served (not one turned away at accept); the index
    // comes back out of the connection's layers at the end, so the task captures nothing more.
    if let (Ok(conn), false) = (&conn, turned_away) {
        conn.shard().stats.transports[listen.index()].add(1);
    }
    async move {
        // The connection is used where it was captured, never moved into a local: a generator
        // keeps a captured value's slot for its whole life, so a move would hold it twice.
        if let Ok(conn) = &mut conn {
            // Opening is rare and its future large: boxed, so an idle connection's task
            // stays small.
            let opened = Box::pin(conn.open(turn_away, proxied)).await;
            match opened {
                Opened::Session => {
                    let end = conn.run().await;
                    Box::pin(conn.finish(end)).await;
                }
                Opened::Files(head) => Box::pin(conn.serve_files(head)).await,
                Opened::Closed => {}
            }
        }
        let end: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = match conn {
            Ok(Conn {
                session,
                stream,
                framing,
                ..
            }) => Box::pin(async move {
                if !turned_away {
                    let listen = match (stream.is_tls(), framing.opens_with_http()) {
                        (false, false) => Listen::Tcp,
                        (false, true) => Listen::Ws,
                        (true, false) => Listen::Tls,
                        (true, true) => Listen::Wss,
                    };
                    session.shard.stats.transports[listen.index()].sub(1);
                }
                // The socket closes before the session ends: telling the backend can wait (its
                // queue full in a storm), and the shard takes a new connection in this one's
                // place in its table as soon as it is gone from there, so a socket still open
                // then would take a descriptor past `conns_per_shard_max`.
                drop(stream);
                session.end().await;
            }),
            Err(session) => Box::pin(session.end()),
        };
        end.await;
    }
}

impl Conn {
    fn shard(&self) -> &Shard {
        &self.session.shard
    }

    fn shared(&self) -> &ConnShared {
        &self.session.shared
    }

    /// Brings the transport up: the PROXY header (`proxied`), TLS handshake, then (WebSocket)
    /// the HTTP request, all within the handshake timeout. A connection turned away
    /// (`turn_away`, or its client past its pre-login connections once the PROXY header named
    /// it) is told so there and closed: `Opened::Closed`.
    async fn open(&mut self, mut turn_away: Option<TurnAway>, proxied: bool) -> Opened {
        let needs_opening = self.stream.handshaking() || self.framing.opens_with_http();
        let mut limit = Duration::from_millis(self.shard().live.get().handshake_timeout_ms);
        // A place among the connections being turned away, while this one is told.
        let mut _turning_away = None;
        if proxied {
            let started = Instant::now();
            if !self.open_proxied(limit).await {
                return Opened::Closed;
            }
            limit = limit.saturating_sub(started.elapsed());
            if turn_away.is_none() {
                // Counted on the client's address, the header's, from here.
                let shard = Rc::clone(&self.session.shard);
                match PreloginPlace::take(&shard, self.stream.peer_ip()) {
                    Some(place) => self.session.hold_prelogin(place),
                    None => {
                        // Out of the shard's table, so that it takes no client's place while
                        // it is told, as one turned away at accept.
                        shard.unregister(&self.session.shared);
                        shard.stats.prelogin_refused.add(1);
                        match TurningAway::take(&shard) {
                            Some(turning) => _turning_away = Some(turning),
                            None => return Opened::Closed,
                        }
                        turn_away = Some(TurnAway::PreloginPerIp);
                    }
                }
            }
        }
        if needs_opening {
            let shared = Rc::clone(&self.session.shared);
            // A client that stops reading or writing cannot hold the connection here. A close
            // asked for meanwhile (the server stopping, which also closes what it accepts while
            // it stops) lets the opening finish, briefly: then the session says why (`Kicked`, a
            // close frame), rather than the socket closing on a ClientHello or a `GET` unread.
            let opening = monoio::time::timeout(limit, self.open_transport());
            match write_or_cut(&shared, opening).await {
                Some(Ok(Opened::Session)) => {}
                // One turned away is answered in HTTP, as a busy files service answers (404
                // without one).
                Some(Ok(Opened::Files(head))) if turn_away.is_some() => {
                    let shard = Rc::clone(&self.session.shard);
                    let busy = shard.files.is_some();
                    if busy {
                        shard.stats.files_refused_busy.add(1);
                    }
                    shard.pool.give(head);
                    self.refuse_files(busy).await;
                    return Opened::Closed;
                }
                Some(Ok(files @ Opened::Files(_))) => return files,
                Some(Ok(Opened::Closed) | Err(_)) => return Opened::Closed,
                None => {
                    // Not even a reset: what the client sent is read before the socket closes.
                    self.drain_until_eof().await;
                    return Opened::Closed;
                }
            }
        }
        let Some(turn_away) = turn_away else {
            return Opened::Session;
        };
        // Not in the shard's table, so the reaper does not see it: bounded here.
        let _ = monoio::time::timeout(limit, async {
            self.session
                .refuse(0, ErrorCode::ServerFull, turn_away.message());
            self.finish(End::Close(Close::Refused(ErrorCode::ServerFull)))
                .await;
        })
        .await;
        Opened::Closed
    }

    /// Awaited whatever the close flag says: `open` bounds it.
    async fn open_transport(&mut self) -> Opened {
        // Borrow a buffer only once the client has sent something.
        if self.stream.readable().await.is_err() {
            return Opened::Closed;
        }
        let pool_buf = self.session.shard.pool.take();
        let mut buf = pool_buf;
        match self.open_into(&mut buf).await {
            Opening::Session => {
                if buf.is_empty() {
                    self.session.shard.pool.give(buf);
                } else {
                    self.partial = Some(buf);
                }
                Opened::Session
            }
            Opening::Files => Opened::Files(buf),
            Opening::Closed => {
                self.session.shard.pool.give(buf);
                Opened::Closed
            }
        }
    }

    /// Reads the transport's opening into `buf`: what follows the opening stays there (for
    /// `/files`, the whole request is left, head included).
    async fn open_into(&mut self, buf: &mut BytesMut) -> Opening {
        let shard = Rc::clone(&self.session.shard);
        // The TLS handshake's place in the shard's gate (`tls_gate.rs`): taken once the
        // ClientHello is in whole, before rustls reads it; given back when the handshake ends.
        let mut handshake: Option<HandshakeSlot> = None;
        if self.stream.handshaking() {
            let Some(hello) = self.read_client_hello(&shard).await else {
                return Opening::Closed;
            };
            match HandshakeSlot::take(&shard, self.stream.peer_ip()) {
                Ok(slot) => handshake = Some(slot),
                Err(why) => {
                    shard.pool.give(hello);
                    why.count(&shard.stats);
                    return Opening::Closed;
                }
            }
            let fed = self.stream.take_ciphertext(&hello, buf, &shard.pool).await;
            shard.pool.give(hello);
            if !handshake_goes_on(&shard, fed) {
                return Opening::Closed;
            }
        }
        while self.stream.handshaking() {
            if self.stream.readable().await.is_err() {
                return Opening::Closed;
            }
            let read = self.stream.read(buf, &shard.pool).await;
            if !handshake_goes_on(&shard, read) {
                return Opening::Closed;
            }
        }
        drop(handshake);
        if !self.framing.opens_with_http() {
            return Opening::Session;
        }
        let mut head = ws::http::HeadParser::default();
        loop {
            if let Some((route, head_bytes)) = head.parse(buf) {
                let (response, upgraded) = match route {
                    // The files service reads the request itself, head included.
                    ws::http::Route::Files => return Opening::Files,
                    ws::http::Route::Upgrade(r) => (r, true),
                    ws::http::Route::Respond(r) => (r, false),
                    ws::http::Route::Assign => (
                        ws::http::assign_response(shard.assign.as_ref().map(|a| a())),
                        false,
                    ),
                };
                buf.advance(head_bytes.min(buf.len()));
                let mut out = shard.pool.take();
                out.extend_from_slice(response.as_bytes());
                let (result, out) = self.stream.write_all(out, &shard.pool).await;
                shard.pool.give(out);
                if upgraded && result.is_ok() {
                    return Opening::Session;
                }
                self.stream.shutdown(&shard.pool).await;
                self.drain_until_eof().await;
                return Opening::Closed;
            }
            if self.stream.readable().await.is_err() {
                return Opening::Closed;
            }
            match self.stream.read(buf, &shard.pool).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Opening::Closed,
            }
        }
    }

    /// Reads a TLS client's first bytes, kept from rustls, until they hold a whole ClientHello
    /// (`tls_gate::client_hello`); `None`: the client left first, or sent no ClientHello. No
    /// place in the shard's gate is held meanwhile: rustls has done nothing yet.
    async fn read_client_hello(&mut self, shard: &Shard) -> Option<BytesMut> {
        let mut raw = shard.pool.take();
        let no_hello = loop {
            if self.stream.readable().await.is_err() {
                break false;
            }
            match self.stream.read_raw(&mut raw, &shard.pool) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => break false,
            }
            match client_hello(&raw) {
                Hello::Whole => return Some(raw),
                Hello::Partial => {}
                Hello::Refused => break true,
            }
        };
        if no_hello {
            // As rustls would fail it, only without an alert.
            shard.stats.error(ErrorCode::BadFrame);
            tracing::debug!(shard = shard.id, "TLS handshake failed: no ClientHello");
        }
        shard.pool.give(raw);
        None
    }

    /// Waits until `readable` resolves (`Some`), or until the connection is woken: a frame to
    /// write or a close (`None`). The wait is the caller's, so it stays armed across wake-ups.
    async fn readable_or_woken(
        &self,
        readable: std::pin::Pin<&mut impl std::future::Future<Output = io::Result<()>>>,
    ) -> Option<io::Result<()>> {
        if self.shared().close.get().is_some() {
            return None;
        }
        monoio::select! {
            r = readable => Some(r),
            () = self.session.shared.wake.notified() => None,
        }
    }

    /// The session's life: readiness → pooled read → decode → `Session::on_frame`, and queued
    /// frames written in batches, until a close, the peer's end, or an I/O error.
    async fn run(&mut self) -> End {
        // Frames the client sent right behind its handshake are already here.
        if let Some(buf) = self.partial.take()
            && let Err(end) = Box::pin(self.handle_input(buf)).await
        {
            return end;
        }
        // Armed once and kept across the wake-ups that only write; renewed after each read.
        let mut readable = std::pin::pin!(self.stream.readable());
        let mut reads = ReadTurn::default();
        loop {
            if let Some(close) = self.shared().close.get() {
                return End::Close(close);
            }
            // The work after a wake-up that must wait is boxed: monoio's I/O futures are
            // hundreds of bytes, and inline they would make every idle connection's task that
            // large. One allocation per such wake-up (not per frame: it reads or writes a
            // batch). A plain stream's output is sent synchronously first (`write_now`): when
            // the socket takes it whole, the common case, nothing is allocated.
            if self.has_output() {
                let rest = if self.stream.is_tls() {
                    None
                } else {
                    match self.write_now() {
                        Ok(None) => continue,
                        Ok(Some(rest)) => Some(rest),
                        Err(e) => return End::Io(e),
                    }
                };
                if let Err(e) = Box::pin(self.flush(Flush::Abortable, rest)).await {
                    return End::Io(e);
                }
                continue;
            }
            match self.readable_or_woken(readable.as_mut()).await {
                None => {}
                Some(Err(e)) => return End::Io(e),
                Some(Ok(())) => {
                    if let Err(end) = Box::pin(self.read()).await {
                        return end;
                    }
                    readable.set(self.stream.readable());
                    reads.after_read(self.shard()).await;
                }
            }
        }
    }

    fn has_output(&self) -> bool {
        !self.shared().outbound.is_empty() || self.framing.has_control()
    }

    /// Reads what is there and handles every complete frame.
    async fn read(&mut self) -> Result<(), End> {
        let shard = Rc::clone(&self.session.shard);
        let mut buf = self.partial.take().unwrap_or_else(|| shard.pool.take());
        match self.stream.read(&mut buf, &shard.pool).await {
            Ok(Some(n)) => {
                shard.stats.bytes_in.add(n as u64);
                self.handle_input(buf).await
            }
            Ok(None) => {
                shard.pool.give(buf);
                Err(End::PeerClosed(None))
            }
            Err(e) => {
                shard.pool.give(buf);
                Err(End::Io(e))
            }
        }
    }

    /// Handles every complete unit in `buf`; keeps a partial one for the next read, and gives
    /// the buffer back to the pool otherwise.
    async fn handle_input(&mut self, mut buf: BytesMut) -> Result<(), End> {
        let frame_bytes_max = self.shard().limits.frame_bytes_max;
        let result = loop {
            if self.shared().close.get().is_some() {
                break Ok(());
            }
            match self.framing.decode(&mut buf, frame_bytes_max) {
                Ok(Some(Input::Frame(frame))) => {
                    self.seen();
                    self.shard().stats.frames_in.add(1);
                    if buf.is_empty() {
                        // Nothing behind this frame: the buffer goes back before the session
                        // waits (a login waits for the backend), so that connections in a
                        // login storm do not each hold one.
                        self.shard().pool.give(std::mem::take(&mut buf));
                    }
                    let stream = &self.stream;
                    // A pre-login request (a login, above all) may wait long for the pace and
                    // the backend: if the client hangs up meanwhile, the close lets the session
                    // give up on it, and a login not yet started is never served (the backend
                    // skips a login nobody waits for).
                    let watch = !self.session.shared.is_authed()
                        && !matches!(frame.body, Some(Body::Hello(_) | Body::Ping(_)));
                    let shared = Rc::clone(&self.session.shared);
                    let shard = Rc::clone(&self.session.shard);
                    let on_frame = self.session.on_frame(frame, || stream.peer_ip());
                    let mut wait = if watch {
                        let hung_up = async {
                            stream.hung_up().await;
                            if shared.close.get().is_none() {
                                shard.stats.logins_abandoned.add(1);
                            }
                            shared.close_with(Close::PeerGone);
                            std::future::pending::<std::convert::Infallible>().await
                        };
                        monoio::select! {
                            wait = on_frame => wait,
                            never = hung_up => match never {},
                        }
                    } else {
                        on_frame.await
                    };
                    let mut waited = Ok(());
                    while let Some(w) = wait.take() {
                        // Rare: boxed, so that the wait's future does not grow every
                        // connection's task.
                        match Box::pin(self.wait_writing(w)).await {
                            Ok(next) => wait = next,
                            Err(e) => waited = Err(e),
                        }
                    }
                    if let Err(e) = waited.and(self.relieve_backlog().await) {
                        break Err(End::Io(e));
                    }
                }
                Ok(Some(Input::Progress { alive })) => {
                    if alive {
                        self.seen();
                    }
                }
                Ok(Some(Input::PeerClosed(code))) => break Err(End::PeerClosed(Some(code))),
                Ok(None) => break Ok(()),
                Err(e) => {
                    self.ws_close = e.ws_close;
                    self.session.fail(0, e.code, e.message);
                    break Ok(());
                }
            }
        };
        if buf.is_empty() || self.shared().close.get().is_some() || result.is_err() {
            self.shard().pool.give(buf);
        } else {
            self.partial = Some(buf);
        }
        result
    }

    /// A client pipelining many requests must not overflow its own queue: past half of it,
    /// write before reading on.
    async fn relieve_backlog(&mut self) -> io::Result<()> {
        let limits = self.shard().gateway.outbound_limits();
        let outbound = &self.shared().outbound;
        if (outbound.len() * 2 >= limits.frames_max || outbound.bytes() >= limits.bytes_max / 2)
            && self.shared().close.get().is_none()
        {
            self.flush(Flush::Abortable, None).await?;
        }
        Ok(())
    }

    /// Awaits a request's [`Wait`] (room in a full queue, a media check), and goes on with the
    /// request. Meanwhile what is queued for the client is written, so that a client that reads
    /// is not kicked as a slow consumer while the server is behind, and a close (a kick, the
    /// server stopping) ends the wait: the request is dropped unanswered, never acknowledged.
    /// No input is read meanwhile, so the connection's requests stay in order; its pings stay
    /// unread too, so its idle clock stops until the wait is over (`WaitingOnServer`).
    async fn wait_writing(&mut self, wait: Wait) -> io::Result<Option<Wait>> {
        let shard = Rc::clone(&self.session.shard);
        let shared = Rc::clone(&self.session.shared);
        let _waiting = WaitingOnServer::new(&shard, &shared);
        let mut wait = std::pin::pin!(wait.run(&shard));
        let (request_id, waited) = loop {
            if shared.close.get().is_some() {
                return Ok(None);
            }
            let writing = self.has_output();
            let flush = async {
                if writing {
                    self.flush(Flush::Abortable, None).await
                } else {
                    // Until something is queued, or a close.
                    shared.wake.notified().await;
                    Ok(())
                }
            };
            let mut flush = std::pin::pin!(flush);
            let first = monoio::select! {
                done = &mut wait => Some(done),
                flushed = &mut flush => {
                    flushed?;
                    None
                }
            };
            if let Some(done) = first {
                if writing {
                    // A write under way is finished, never dropped inside a frame.
                    flush.await?;
                }
                break done;
            }
        };
        Ok(self.session.waited(request_id, waited))
    }

    /// Marks the connection alive on the shard's coarse clock.
    fn seen(&self) {
        self.shared().seen(self.shard().tick.get());
    }

    /// Says why the connection ends (`Kicked`, or the `Error` already queued; a WebSocket close
    /// frame), flushes, closes the stream politely and drains what the client still sends.
    async fn finish(&mut self, end: End) {
        let shard = Rc::clone(&self.session.shard);
        if let Some(buf) = self.partial.take() {
            shard.pool.give(buf);
        }
        // A kick counts even when its connection failed before it could be told.
        if let Some(Close::Kick(reason)) = self.shared().close.get() {
            shard.stats.kick(reason);
        }
        if self.write_cut {
            return;
        }
        let goodbye = match end {
            End::Close(Close::PeerGone) | End::PeerClosed(None) => return,
            End::Close(close) => Goodbye::Close(close, self.ws_close),
            End::PeerClosed(Some(code)) => {
                self.shared().outbound.clear(&shard.outbound_bytes);
                Goodbye::Echo(code)
            }
            End::Io(err) => {
                tracing::debug!(shard = shard.id, conn = self.shared().id, %err, "connection I/O error");
                return;
            }
        };
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let _ = monoio::time::timeout(grace, async {
            if let Goodbye::Close(Close::Kick(reason), _) = goodbye {
                // The frames already waiting go first, for a while, whole; what still waits
                // then is dropped, so that `Kicked` is not cut off behind a long backlog. A
                // slow consumer's is dropped at once: it could not take it.
                if reason != KickReason::SlowConsumer {
                    let backlog_by = Instant::now() + grace / 2;
                    let _ = self.flush(Flush::Until(backlog_by), None).await;
                }
                queue_kicked(&shard, self.shared(), reason);
            }
            let _ = self.flush(Flush::Whole, None).await;
            let mut out = shard.pool.take();
            self.framing.put_goodbye(goodbye, &mut out);
            if !out.is_empty() {
                let (_, back) = self.stream.write_all(out, &shard.pool).await;
                out = back;
            }
            shard.pool.give(out);
            self.stream.shutdown(&shard.pool).await;
        })
        .await;
        self.drain_until_eof().await;
    }

    /// Reads and drops what the client still sends until it closes, briefly: closing a socket
    /// with unread bytes resets it, and the client could lose the last frames. A client that
    /// goes on sending meanwhile is read in turns (`ReadTurn`): on epoll its readiness never
    /// waits, and the grace's timer is looked at only when the drain waits.
    async fn drain_until_eof(&mut self) {
        let shard = Rc::clone(&self.session.shard);
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let _ = monoio::time::timeout(grace, async {
            let mut buf = shard.pool.take();
            let mut reads = ReadTurn::default();
            loop {
                if self.stream.readable().await.is_err() {
                    break;
                }
                buf.clear();
                match self.stream.read(&mut buf, &shard.pool).await {
                    Ok(Some(_)) => reads.after_read(&shard).await,
                    Ok(None) | Err(_) => break,
                }
            }
            shard.pool.give(buf);
        })
        .await;
    }
}

/// A connection's request waiting on the server (`Conn::wait_writing`), from its start to its
/// end, whichever way the wait ends: the connection's idle clock stops meanwhile
/// (`ConnShared::wait_on_server`).
struct WaitingOnServer<'a> {
    shard: &'a Shard,
    shared: &'a ConnShared,
}

impl<'a> WaitingOnServer<'a> {
    fn new(shard: &'a Shard, shared: &'a ConnShared) -> Self {
        shared.wait_on_server(true, shard.tick.get());
        Self { shard, shared }
    }
}

impl Drop for WaitingOnServer<'_> {
    fn drop(&mut self) {
        self.shared.wait_on_server(false, self.shard.tick.get());
    }
}

/// Awaits a write (or the transport's opening). If the connection is told to close meanwhile,
/// it gets `FINAL_FLUSH_MS` more to finish; `None` when it did not: the stream is then cut
/// inside a frame (or an opening) and nothing more may be written to it.
pub(super) async fn write_or_cut<T>(
    shared: &ConnShared,
    write: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut write = std::pin::pin!(write);
    monoio::select! {
        r = &mut write => Some(r),
        () = shared.closed() => {
            let grace = Duration::from_millis(FINAL_FLUSH_MS);
            Box::pin(monoio::time::timeout(grace, write)).await.ok()
        }
    }
}

/// Whether a TLS handshake goes on after a read (`Stream::read`, `take_ciphertext`); a failed
/// one is counted.
fn handshake_goes_on(shard: &Shard, read: io::Result<Option<usize>>) -> bool {
    match read {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(err) => {
            shard.stats.error(ErrorCode::BadFrame);
            tracing::debug!(shard = shard.id, %err, "TLS handshake failed");
            false
        }
    }
}

/// Queues the `Kicked` notice as the connection's last frame, alone: what still waits is
/// dropped (the queue holds whole frames only; the client resyncs by seq when it reconnects).
fn queue_kicked(shard: &Shard, shared: &ConnShared, reason: KickReason) {
    let kicked = ringchat_proto::encode_to_bytes(&ringchat_proto::kicked_frame(
        reason,
        kick_message(reason),
    ));
    shared.outbound.clear(&shard.outbound_bytes);
    shared.outbound.push_last(kicked, &shard.books(shared));
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
        KickReason::PasswordChanged => "the account's password was changed; log in again",
        KickReason::DeviceRevoked => "this device was signed out: its token was revoked",
        KickReason::LoggedOut => "logged out",
        KickReason::AccountDisabled => "the account was disabled by an operator",
        KickReason::KickedByOperator => "signed out by an operator; log in again",
        KickReason::TokenExpired => "the session's token expired; log in with the password",
        KickReason::Reconnect => "the session could not be kept; reconnect with the token",
        KickReason::Unspecified => "closed by the server",
    }
}

#[cfg(test)]
mod tests;
