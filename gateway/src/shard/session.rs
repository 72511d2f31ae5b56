//! The session state machine, independent of the transport: hello, register, login, heartbeats,
//! and forwarding a logged-in client's requests to the backend. A transport (TCP now, WebSocket
//! next) decodes frames, hands each to `Session::on_frame`, and writes what lands in the
//! connection's outbound queue.
//!
//! A request that must wait (for room in a full queue, for a media send's storage check) is not
//! awaited here: it comes back as a [`Wait`], which the connection awaits while it keeps writing
//! the client's queue and watching for a close (`conn.rs`), then hands to `Session::waited`.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use ringchat_backend::api::{
    AccountRequest, ClientRequest, ConnRef, Request, SessionRequest, UserId, WriteRequest,
};
use ringchat_backend::{PendingCheck, PendingWrite, Submitted};
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::prelogin::PreloginPlace;
use super::{Close, ConnShared, LoginsFull, Shard};

/// Pre-login requests (logins, registrations, account requests) of one connection the backend
/// may answer with an error before the connection is closed after the last one. Without it one
/// connection could loop refused logins for ever, each taking a login slot and a place in the
/// pace; a client that means it reconnects, which costs it a handshake and its place among its
/// address's connections (`prelogin.rs`). Enough for a person mistyping a password a few times.
pub(super) const PRELOGIN_REFUSALS_PER_CONN_MAX: u8 = 8;

/// Before login the state holds the connection's place among its client's connections not
/// logged in yet (`prelogin.rs`; `None`: not counted, or not yet for a connection whose PROXY
/// header is still to come): the login's new state drops it, and so does the session's end,
/// whatever ends it.
enum State {
    AwaitHello(Option<PreloginPlace>),
    /// With the error answers its pre-login requests got so far
    /// (`PRELOGIN_REFUSALS_PER_CONN_MAX`).
    AwaitLogin(Option<PreloginPlace>, u8),
    /// `device_id`: the login's device, sent with every write (a delivery ack moves the
    /// device's cursor) without asking the backend's sessions registry.
    Authed {
        user_id: UserId,
        device_id: Arc<str>,
    },
}

/// What a request waits for before it can go on; awaited by the connection (`conn.rs`), which
/// reads no further input meanwhile, so the connection's requests stay in order.
pub(super) enum Wait {
    /// Room in the sequencer's full queue.
    Queue {
        request_id: u64,
        pending: PendingWrite,
    },
    /// A media send's file, checked in storage on the backend's runtime.
    Check {
        request_id: u64,
        pending: PendingCheck,
    },
    /// Room in the backend's full request queue.
    Backend { request_id: u64, request: Request },
}

/// What a [`Wait`] came to.
pub(super) enum Waited {
    /// `false`: the sequencer has stopped.
    Queued(bool),
    /// Boxed: rare (media sends), and far larger than the others.
    Checked(Box<Submitted>),
    /// `false`: the backend has stopped.
    Sent(bool),
}

impl Wait {
    fn request_id(&self) -> u64 {
        match self {
            Self::Queue { request_id, .. }
            | Self::Check { request_id, .. }
            | Self::Backend { request_id, .. } => *request_id,
        }
    }

    /// Waits; `request_id` says whose it was.
    pub async fn run(self, shard: &Shard) -> (u64, Waited) {
        let request_id = self.request_id();
        let waited = match self {
            Self::Queue { pending, .. } => Waited::Queued(shard.writes.queue(pending).await),
            Self::Check { pending, .. } => {
                Waited::Checked(Box::new(shard.writes.check(pending).await))
            }
            Self::Backend { request, .. } => {
                Waited::Sent(shard.backend.send(request).await.is_ok())
            }
        };
        (request_id, waited)
    }
}

pub(super) struct Session {
    pub shard: Rc<Shard>,
    pub shared: Rc<ConnShared>,
    state: State,
    send_budget: SendBudget,
}

impl Session {
    pub fn new(shard: Rc<Shard>, shared: Rc<ConnShared>, prelogin: Option<PreloginPlace>) -> Self {
        let send_budget = SendBudget::new(SendRate::of(&shard));
        Self {
            shard,
            shared,
            state: State::AwaitHello(prelogin),
            send_budget,
        }
    }

    /// The connection's pre-login place, taken once its PROXY header named the client.
    pub fn hold_prelogin(&mut self, place: PreloginPlace) {
        if let State::AwaitHello(held) | State::AwaitLogin(held, _) = &mut self.state {
            *held = Some(place);
        }
    }

    /// Gives the pre-login place back before a login: the connection is counted elsewhere now
    /// (a file connection).
    pub fn release_prelogin(&mut self) {
        if let State::AwaitHello(held) | State::AwaitLogin(held, _) = &mut self.state {
            *held = None;
        }
    }

    pub fn conn_ref(&self) -> ConnRef {
        ConnRef {
            shard: self.shard.id,
            conn: self.shared.id,
        }
    }

    /// The connection is gone: forget it, and tell the backend if it was logged in.
    pub async fn end(self) {
        let shard = &self.shard;
        shard.unregister(&self.shared);
        if let State::Authed { user_id, .. } = self.state {
            shard.stats.authenticated.sub(1);
            let closed = Request::Closed {
                conn: self.conn_ref(),
                user_id,
            };
            // The backend may already be gone at shutdown; then there is nobody to tell.
            let _ = shard.backend.send(closed).await;
        }
    }

    /// Serves one client frame: typed once here, then answered by the state machine. `peer`
    /// gives the client's address, asked only by a register or a login (not kept: every idle
    /// connection would carry it). A request that must wait comes back as a [`Wait`].
    pub async fn on_frame(&mut self, frame: Frame, peer: impl FnOnce() -> IpAddr) -> Option<Wait> {
        let request_id = frame.request_id;
        let request = match ClientRequest::from_body(frame.body) {
            Ok(request) => request,
            // Whatever a first frame that is not Hello holds (no body, a body this server does
            // not know, a server's body), it is refused alike and the connection closed.
            Err(_) if matches!(self.state, State::AwaitHello(_)) => {
                self.hello_required(request_id);
                return None;
            }
            Err(e) => {
                self.error(request_id, e.code(), e.to_string());
                return None;
            }
        };
        match (&self.state, request) {
            (State::AwaitHello(_), ClientRequest::Hello(hello)) => self.hello(request_id, &hello),
            (State::AwaitHello(_), _) => self.hello_required(request_id),
            (_, ClientRequest::Hello(_)) => {
                self.error(
                    request_id,
                    ErrorCode::UnexpectedBody,
                    "hello was already received",
                );
            }
            (State::AwaitLogin(..), ClientRequest::Login(login)) => {
                return Box::pin(self.login(request_id, login, peer())).await;
            }
            (State::Authed { user_id, device_id }, ClientRequest::Write(request)) => {
                // An Arc clone: no lock and no allocation per write.
                let (user_id, device_id) = (*user_id, Arc::clone(device_id));
                if self.within_budget(request_id) {
                    return self.write(request_id, user_id, &device_id, request);
                }
            }
            (&State::Authed { user_id, .. }, ClientRequest::Session(request)) => {
                if self.within_budget(request_id) {
                    return self.session_request(request_id, user_id, request);
                }
            }
            (_, ClientRequest::Ping(ping)) => self.reply(
                request_id,
                Body::Pong(v1::Pong {
                    client_time_ms: ping.client_time_ms,
                    server_time_ms: ringchat_backend::api::now_ms(),
                }),
            ),
            // Boxed: rare, large futures would otherwise make every idle connection's task
            // that large.
            (State::AwaitLogin(..), ClientRequest::Register(register)) => {
                Box::pin(self.register(request_id, register, peer())).await
            }
            (State::AwaitLogin(..), ClientRequest::Account(request)) => {
                Box::pin(self.account(request_id, request, peer())).await
            }
            (
                State::Authed { .. },
                ClientRequest::Register(_) | ClientRequest::Login(_) | ClientRequest::Account(_),
            ) => {
                self.error(
                    request_id,
                    ErrorCode::AlreadyAuthenticated,
                    "already logged in",
                );
            }
            (State::AwaitLogin(..), ClientRequest::Write(_) | ClientRequest::Session(_)) => {
                self.error(request_id, ErrorCode::NotAuthenticated, "log in first")
            }
        }
        None
    }

    /// Goes on with a request once its [`Wait`] is over; it may have to wait again (a media
    /// send checked, then a full queue).
    pub fn waited(&mut self, request_id: u64, waited: Waited) -> Option<Wait> {
        match waited {
            Waited::Checked(submitted) => return self.submitted(request_id, *submitted),
            Waited::Queued(true) | Waited::Sent(true) => {}
            Waited::Queued(false) | Waited::Sent(false) => self.fail(
                request_id,
                ErrorCode::Unavailable,
                "server is shutting down",
            ),
        }
        None
    }

    fn hello_required(&self, request_id: u64) {
        self.fail(
            request_id,
            ErrorCode::HelloRequired,
            "the first frame must be hello",
        );
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
        // Live keys: a new session is told the current values.
        let live = self.shard.live.get();
        let ok = v1::HelloOk {
            protocol_version: PROTOCOL_VERSION,
            frame_bytes_max: u32::try_from(limits.frame_bytes_max).unwrap_or(u32::MAX),
            heartbeat_interval_ms: u32::try_from(live.heartbeat_interval_ms).unwrap_or(u32::MAX),
            idle_timeout_ms: u32::try_from(live.idle_timeout_ms).unwrap_or(u32::MAX),
            server_name: g.server_name.clone(),
            message_bytes_max: u32::try_from(limits.message_bytes_max).unwrap_or(u32::MAX),
            sync_page_max: limits.sync_page_max,
        };
        self.shared
            .announced_idle(self.shard.ticks(live.idle_timeout_ms));
        if let State::AwaitHello(prelogin) = &mut self.state {
            self.state = State::AwaitLogin(prelogin.take(), 0);
        }
        self.reply(request_id, Body::HelloOk(ok));
    }

    async fn register(&mut self, request_id: u64, body: v1::Register, peer: IpAddr) {
        let (reply, answer) = oneshot::channel();
        let request = Request::Register { peer, body, reply };
        if let Some(body) = self.ask_backend(request_id, request, answer, peer).await {
            self.reply_before_login(request_id, body);
        }
    }

    /// E-mail codes and password reset: answered by the backend like Register.
    async fn account(&mut self, request_id: u64, request: AccountRequest, peer: IpAddr) {
        let (reply, answer) = oneshot::channel();
        let request = Request::Account {
            peer,
            request,
            reply,
        };
        if let Some(body) = self.ask_backend(request_id, request, answer, peer).await {
            self.reply_before_login(request_id, body);
        }
    }

    async fn login(&mut self, request_id: u64, body: v1::Login, peer: IpAddr) -> Option<Wait> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Login {
            conn: self.conn_ref(),
            peer,
            body,
            reply,
        };
        let outcome = self.ask_backend(request_id, request, answer, peer).await?;
        let resume = match outcome.session {
            Some(session) => {
                // Its pre-login place goes with the state it replaces.
                self.state = State::Authed {
                    user_id: session.user_id,
                    device_id: session.device_id,
                };
                self.shared.set_authed();
                self.shard.stats.authenticated.add(1);
                self.shard.stats.logins.add(1);
                session.resume.map(|resume| (session.user_id, resume))
            }
            None => {
                self.shard.stats.login_failures.add(1);
                None
            }
        };
        self.reply_before_login(request_id, outcome.body);
        // Asked once the `LoginOk` is queued, so that what the resume sends (frames with the
        // login's request id) comes after it.
        let (user_id, resume) = resume?;
        self.session_request(request_id, user_id, SessionRequest::Resume(resume))
    }

    /// Sends a request of a connection not yet logged in (login, register, account) that
    /// answers on a oneshot; gives up if the connection is closed meanwhile.
    ///
    /// Admission: such a request never waits for room. With the shard's pre-login slots all
    /// taken, or the client's (`peer`'s) share of them, it is answered `SERVER_FULL`, with the
    /// backend's queue full `UNAVAILABLE`, both with a jittered `retry_after_ms`, and the
    /// connection is closed: the client reconnects after it. Logged-in clients' requests never
    /// come here.
    async fn ask_backend<T>(
        &mut self,
        request_id: u64,
        request: Request,
        answer: oneshot::Receiver<T>,
        peer: IpAddr,
    ) -> Option<T> {
        let _slot = match self.shard.login_slot(peer) {
            Ok(slot) => slot,
            Err(full) => {
                let (counter, message) = match full {
                    LoginsFull::Shard => (
                        &self.shard.stats.logins_refused_in_flight,
                        "too many logins at once; reconnect after retry_after_ms",
                    ),
                    LoginsFull::Client => (
                        &self.shard.stats.logins_refused_client_share,
                        "too many logins at once from this address; reconnect after retry_after_ms",
                    ),
                };
                counter.add(1);
                self.refuse(request_id, ErrorCode::ServerFull, message);
                return None;
            }
        };
        // A storm's logins go at the shard's pace, holding their slot while they wait. A wait
        // given up in any way (the close below, the hang-up watch or the shard's stop dropping
        // this future) drops the booking, which gives its place back.
        let shard = Rc::clone(&self.shard);
        let booking = shard.login_pace.book(std::time::Instant::now());
        let wait = booking.wait();
        if !wait.is_zero() {
            self.shard.stats.logins_paced.add(1);
            let shared = Rc::clone(&self.shared);
            monoio::select! {
                () = monoio::time::sleep(wait) => {}
                () = shared.closed() => return None,
            }
        }
        booking.went();
        match self.shard.backend.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shard.stats.logins_refused_backend_queue.add(1);
                self.refuse(
                    request_id,
                    ErrorCode::Unavailable,
                    "the server is busy; reconnect after retry_after_ms",
                );
                return None;
            }
            Err(TrySendError::Closed(_)) => {
                self.fail(0, ErrorCode::Unavailable, "server is shutting down");
                return None;
            }
        }
        let shared = Rc::clone(&self.shared);
        let mut answer = std::pin::pin!(answer);
        let answer = monoio::select! {
            a = &mut answer => a.map_err(|_| ()),
            () = shared.closed() => {
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

    /// Every request a logged-in client sends costs the backend work (a store write or read),
    /// so all of them draw on the same per-connection budget, not only Send. Refuses the
    /// request when the budget is spent.
    fn within_budget(&mut self, request_id: u64) -> bool {
        if !self
            .send_budget
            .take(self.shard.tick.get(), SendRate::of(&self.shard))
        {
            let frame = Frame {
                request_id,
                body: Some(Body::Error(v1::Error {
                    code: ErrorCode::RateLimited as i32,
                    message: format!(
                        "over {} requests per second on this connection",
                        self.shard.live.get().messages_per_s_max
                    ),
                    retry_after_ms: self.shard.tick_ms,
                })),
            };
            self.shard.stats.error(ErrorCode::RateLimited);
            self.shard
                .enqueue(&self.shared, ringchat_proto::encode_to_bytes(&frame));
            return false;
        }
        true
    }

    /// A write goes straight to the sequencer; its answer comes back on the shard's inbox.
    fn write(
        &mut self,
        request_id: u64,
        user_id: UserId,
        device_id: &Arc<str>,
        request: WriteRequest,
    ) -> Option<Wait> {
        let submitted =
            self.shard
                .writes
                .submit(self.conn_ref(), user_id, device_id, request_id, request);
        self.submitted(request_id, submitted)
    }

    fn submitted(&mut self, request_id: u64, submitted: Submitted) -> Option<Wait> {
        match submitted {
            Submitted::Queued => {}
            Submitted::Refused(error) => {
                self.shard.stats.error(error.code());
                self.reply(request_id, Body::Error(error));
            }
            Submitted::Full(pending) => {
                return Some(Wait::Queue {
                    request_id,
                    pending,
                });
            }
            Submitted::Stopped => self.fail(
                request_id,
                ErrorCode::Unavailable,
                "server is shutting down",
            ),
            // Media sends only: the file is checked on the backend's runtime while this
            // connection waits (its later frames stay behind it, in order).
            Submitted::Check(pending) => {
                return Some(Wait::Check {
                    request_id,
                    pending,
                });
            }
        }
        None
    }

    /// Most sends find room at once; only a full queue waits.
    fn session_request(
        &mut self,
        request_id: u64,
        user_id: UserId,
        request: SessionRequest,
    ) -> Option<Wait> {
        let request = Request::Session {
            conn: self.conn_ref(),
            user_id,
            request_id,
            request,
        };
        match self.shard.backend.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(request)) => {
                return Some(Wait::Backend {
                    request_id,
                    request,
                });
            }
            Err(TrySendError::Closed(_)) => self.fail(
                request_id,
                ErrorCode::Unavailable,
                "server is shutting down",
            ),
        }
        None
    }

    pub fn reply(&self, request_id: u64, body: Body) {
        let frame = Frame {
            request_id,
            body: Some(body),
        };
        self.shard
            .enqueue(&self.shared, ringchat_proto::encode_to_bytes(&frame));
    }

    /// The backend's answer to a pre-login request; the connection is closed after the
    /// `PRELOGIN_REFUSALS_PER_CONN_MAX`th error answer.
    fn reply_before_login(&mut self, request_id: u64, body: Body) {
        let refused = match (&body, &mut self.state) {
            (Body::Error(e), State::AwaitLogin(_, refusals)) => {
                *refusals = refusals.saturating_add(1);
                (*refusals >= PRELOGIN_REFUSALS_PER_CONN_MAX)
                    .then(|| ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified))
            }
            _ => None,
        };
        self.reply(request_id, body);
        if let Some(code) = refused {
            self.shard.stats.prelogin_refusals_closed.add(1);
            self.shared.close_with(Close::AfterError(code));
        }
    }

    /// An error reply; the connection stays open.
    pub fn error(&self, request_id: u64, code: ErrorCode, message: impl Into<String>) {
        self.shard.stats.error(code);
        self.reply(request_id, Body::Error(error_body(code, message)));
    }

    /// An error reply, then the connection is closed.
    pub fn fail(&self, request_id: u64, code: ErrorCode, message: impl Into<String>) {
        self.error(request_id, code, message);
        self.shared.close_with(Close::AfterError(code));
    }

    /// A client turned away before login (the shard full, a login storm): an error reply
    /// with a jittered `retry_after_ms` (`gateway.login_retry_after_ms`), then the close.
    pub fn refuse(&self, request_id: u64, code: ErrorCode, message: impl Into<String>) {
        self.shard.stats.error(code);
        let mut body = error_body(code, message);
        body.retry_after_ms = self.shard.login_retry_after_ms();
        self.reply(request_id, Body::Error(body));
        self.shared.close_with(Close::Refused(code));
    }
}

fn error_body(code: ErrorCode, message: impl Into<String>) -> v1::Error {
    v1::Error {
        code: code as i32,
        message: message.into(),
        retry_after_ms: 0,
    }
}

/// Per-connection token bucket for `Send`, refilled on the shard's coarse clock: one second of
/// burst at `messages_per_s_max`. Counted in thousandths of a message so that low limits and
/// short ticks do not round away. Only the level and the last refill are kept per connection;
/// the rate is the shard's (`SendRate`).
struct SendBudget {
    milli_tokens: u64,
    last_tick: u64,
}

/// The same for every connection of a shard, so not stored in each.
#[derive(Clone, Copy)]
struct SendRate {
    capacity_milli: u64,
    refill_milli_per_tick: u64,
}

impl SendRate {
    fn new(messages_per_s_max: u32, tick_ms: u64) -> Self {
        Self {
            capacity_milli: u64::from(messages_per_s_max) * 1000,
            // messages/s × 1000 milli × tick_ms / 1000 ms
            refill_milli_per_tick: u64::from(messages_per_s_max) * tick_ms,
        }
    }

    /// A live key: read from the shard's cell at each request (a plain load).
    fn of(shard: &Shard) -> Self {
        Self::new(shard.live.get().messages_per_s_max, shard.tick_ms)
    }
}

impl SendBudget {
    fn new(rate: SendRate) -> Self {
        Self {
            milli_tokens: rate.capacity_milli,
            last_tick: 0,
        }
    }

    fn take(&mut self, now_tick: u64, rate: SendRate) -> bool {
        if now_tick > self.last_tick {
            let refill = (now_tick - self.last_tick).saturating_mul(rate.refill_milli_per_tick);
            self.milli_tokens = self.milli_tokens.saturating_add(refill);
            self.last_tick = now_tick;
        }
        // Capped at every take, not only at a refill: a lowered rate limits the very next
        // burst of a connection whose bucket was full.
        self.milli_tokens = self.milli_tokens.min(rate.capacity_milli);
        if self.milli_tokens < 1000 {
            return false;
        }
        self.milli_tokens -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{SendBudget, SendRate};

    #[test]
    fn send_budget_allows_a_second_of_burst_then_refills_per_tick() {
        let rate = SendRate::new(100, 100);
        let mut b = SendBudget::new(rate);
        assert!((0..100).all(|_| b.take(0, rate)));
        assert!(!b.take(0, rate));
        assert!((0..10).all(|_| b.take(1, rate)), "one tick refills 10");
        assert!(!b.take(1, rate));
        assert!(
            (0..100).all(|_| b.take(1000, rate)),
            "refill is capped at capacity"
        );
        assert!(!b.take(1000, rate));
    }

    #[test]
    fn a_lowered_rate_caps_a_full_bucket_at_once() {
        let mut b = SendBudget::new(SendRate::new(1000, 100));
        let lowered = SendRate::new(3, 100);
        assert!((0..3).all(|_| b.take(0, lowered)));
        assert!(
            !b.take(0, lowered),
            "the same tick: no refill, still capped"
        );
    }
}
