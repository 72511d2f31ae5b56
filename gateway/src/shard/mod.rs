//! A shard: one thread pinned to one core, running one monoio event loop that owns a listener and
//! every connection it accepts. Nothing in here is shared with another thread except the bounded
//! channels in and out and the shard's own counters.

mod accept;
mod budget;
mod conn;
mod framing;
mod inbox;
pub mod live;
mod local;
mod login_pace;
mod login_slots;
mod outbound;
mod prelogin;
mod reaper;
mod session;
mod stream;
mod tls_gate;
pub(crate) mod ws;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use ringchat_backend::Writes;
use ringchat_backend::api::{ConnId, RequestSender, ShardEvent, ShardId};
use ringchat_backend::config::Limits;
use ringchat_proto::v1::{ErrorCode, KickReason};
use tokio::sync::mpsc;

use crate::config::{Driver, GatewayConfig};
use crate::files::FilesGate;
use crate::proxy_protocol::TrustedPeers;
use crate::security::IpRules;
use crate::stats::{DRIVER_EPOLL, DRIVER_IO_URING, ShardStats};
use accept::{Acceptor, HANDSHAKES_SETTLE};
use conn::{Listen, TurnAway};
use inbox::drain_inbox;
use live::{LiveLimits, Published};
use local::{BufferPool, ConnTable, HasConnId, LocalNotify};
use login_slots::LoginsFull;
pub(crate) use outbound::{Books, Fanout, Frame, Outbound, OutboundLimits};
use prelogin::{PreloginCounts, PreloginPlace};
use reaper::reap;

/// Connections a shard is turning away at once (a full shard's, and those past their client's
/// `gateway.prelogin_conns_per_ip_max`: each told `SERVER_FULL` over its own transport, a TLS
/// handshake included); past that, new ones are closed without a word.
pub(crate) const REJECTING_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "shard {shard}: io_uring could not start: {source}. {hint}Set gateway.driver = \"epoll\" or \"auto\" to run without it."
    )]
    IoUring {
        shard: ShardId,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("shard {shard}: epoll runtime could not start: {source}")]
    Epoll {
        shard: ShardId,
        source: std::io::Error,
    },
    #[error("shard {shard}: listener: {source}")]
    Listener {
        shard: ShardId,
        source: std::io::Error,
    },
}

/// A shard's client listeners, each bound by the main thread with SO_REUSEPORT; `None` is off.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Length-prefixed frames over TCP.
    pub tcp: Option<std::net::TcpListener>,
    /// WebSocket (and the chat page) over TCP.
    pub ws: Option<std::net::TcpListener>,
    /// Length-prefixed frames over TLS.
    pub tls: Option<std::net::TcpListener>,
    /// WebSocket (and the chat page) over TLS.
    pub wss: Option<std::net::TcpListener>,
}

/// Everything a shard thread is started with.
pub struct ShardSpec {
    pub id: ShardId,
    pub core: Option<usize>,
    pub gateway: GatewayConfig,
    pub limits: Limits,
    pub listeners: Listeners,
    /// Certificate and key for the TLS listeners (read again on SIGHUP: `crate::tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub inbox: mpsc::Receiver<ShardEvent>,
    pub backend: RequestSender,
    /// Logged-in clients' writes go straight to the sequencer.
    pub writes: Writes,
    pub stats: Arc<ShardStats>,
    /// The live keys, re-read on `ShardEvent::Reconfigure`.
    pub live: Arc<Published>,
    /// Told once the shard serves, or why it could not start.
    pub started: std::sync::mpsc::SyncSender<Result<ShardId, String>>,
    /// Cluster mode: answers `GET /assign` on the WebSocket listener.
    pub assign: Option<AssignFn>,
    /// Serves `/files` on the WebSocket listeners; `None`: answered 404.
    pub files: Option<Arc<FilesGate>>,
}

/// The status service's answer (status code, JSON body), read from the cluster view without
/// waiting.
pub type AssignFn = Arc<dyn Fn() -> (u16, String) + Send + Sync>;

pub fn spawn(spec: ShardSpec) -> std::io::Result<std::thread::JoinHandle<Result<(), ShardError>>> {
    std::thread::Builder::new()
        .name(ringchat_backend::threads::numbered(
            ringchat_backend::threads::SHARD,
            spec.id.into(),
        ))
        .spawn(move || run(spec))
}

fn run(spec: ShardSpec) -> Result<(), ShardError> {
    let started = spec.started.clone();
    let result = run_on_driver(spec);
    if let Err(err) = &result {
        let _ = started.send(Err(err.to_string()));
    }
    result
}

fn run_on_driver(spec: ShardSpec) -> Result<(), ShardError> {
    let id = spec.id;
    if let Some(core) = spec.core {
        if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::info!(shard = id, core, "shard pinned");
        } else {
            tracing::warn!(shard = id, core, "could not pin shard to its core");
        }
    }
    let entries = spec.gateway.io_uring_entries;
    let uring = || {
        let build = |urb| {
            RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .with_entries(entries)
                .uring_builder(urb)
                .build()
        };
        // Completions (a socket became readable, the inbox's eventfd fired) reach the shard as
        // task work. By default the kernel interrupts the running shard with an IPI to run it,
        // a VM exit each on a virtual machine; cooperatively, it runs at the shard's next
        // syscall, and the event loop enters the ring on every turn. Kernels before 5.19
        // refuse the flag: the default then.
        let mut coop = io_uring::IoUring::builder();
        coop.setup_coop_taskrun();
        build(coop)
            .or_else(|e| {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    build(io_uring::IoUring::builder())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| ShardError::IoUring {
                shard: id,
                hint: if source.raw_os_error() == Some(libc::ENOMEM) {
                    "The locked-memory limit is too low for the ring: raise RLIMIT_MEMLOCK (ulimit -l, LimitMEMLOCK= in systemd) or lower gateway.io_uring_entries. "
                } else {
                    ""
                },
                source,
            })
    };
    let epoll = || {
        RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|source| ShardError::Epoll { shard: id, source })
    };
    match spec.gateway.driver {
        Driver::IoUring => {
            let mut rt = uring()?;
            spec.stats.driver.set(DRIVER_IO_URING);
            tracing::info!(shard = id, driver = "io_uring", "shard running");
            rt.block_on(serve(spec))
        }
        Driver::Epoll => {
            let mut rt = epoll()?;
            spec.stats.driver.set(DRIVER_EPOLL);
            tracing::info!(shard = id, driver = "epoll", "shard running");
            rt.block_on(serve(spec))
        }
        Driver::Auto => match uring() {
            Ok(mut rt) => {
                spec.stats.driver.set(DRIVER_IO_URING);
                tracing::info!(shard = id, driver = "io_uring", "shard running");
                rt.block_on(serve(spec))
            }
            Err(err) => {
                tracing::warn!(%err, "falling back to epoll");
                let mut rt = epoll()?;
                spec.stats.driver.set(DRIVER_EPOLL);
                tracing::info!(shard = id, driver = "epoll", "shard running");
                rt.block_on(serve(spec))
            }
        },
    }
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Tell the client with `Kicked`, then close.
    Kick(KickReason),
    /// An `Error` frame with this code is already queued; flush it, then close.
    AfterError(ErrorCode),
    /// The same for a client turned away for now (`Session::refuse`: a full shard, a busy
    /// server), told to come back after its `retry_after_ms`: on WebSocket 1013, whatever the
    /// code, so that a busy server's UNAVAILABLE is not taken for the 1001 of a shutdown.
    Refused(ErrorCode),
    /// The client hung up while a request of its login waited: nobody to tell.
    PeerGone,
}

/// What the shard's other tasks share with one connection's task. Every idle connection keeps
/// one: 96 bytes (112 with its `Rc`, a 112-byte allocator class); a test holds it there.
pub(crate) struct ConnShared {
    pub id: ConnId,
    pub outbound: Outbound,
    pub close: Cell<Option<Close>>,
    pub wake: LocalNotify,
    /// The shard tick it was accepted at (wrapping), or `AUTHED` once logged in: the handshake
    /// deadline no longer applies; `WAITING` while a request of its session waits on the server
    /// (`ConnShared::wait_on_server`): nor does the idle one.
    accepted_tick: Cell<u32>,
    /// The last shard tick it was heard from (wrapping).
    last_seen_tick: Cell<u32>,
    /// The idle timeout its session was told in `HelloOk`, in ticks (0 before that). The client
    /// pings at the interval it was told: a live change that lowers the timeout must not close
    /// it, so the reaper allows it the larger of this and the live value.
    announced_idle_ticks: Cell<u32>,
    /// The shard tick (wrapping) its outbound queue last went from empty to not: how long its
    /// backlog has waited (`gateway.outbound_drain_timeout_ms`), and whether it is behind
    /// (`Outbound::push`).
    backlog_since_tick: Cell<u32>,
}

/// `ConnShared::accepted_tick` of a logged-in connection.
const AUTHED: u32 = u32::MAX;
/// `ConnShared::accepted_tick` of a logged-in connection whose request waits on the server.
const WAITING: u32 = AUTHED - 1;

impl HasConnId for ConnShared {
    fn conn_id(&self) -> ConnId {
        self.id
    }
}

impl ConnShared {
    /// A connection quiet for a while gives back its empty queue's storage (the next frame
    /// allocates it again), so an idle connection holds none.
    fn release_idle_queue(&self) {
        self.outbound.release_storage_if_empty();
    }

    /// Logged in: from now on only the idle clock applies.
    pub fn set_authed(&self) {
        self.accepted_tick.set(AUTHED);
    }

    /// Whether its login succeeded. Until then what the backend routes to it is dropped
    /// (`drain_inbox`): the backend registers a session before checks that can still refuse
    /// the login, and the client's catch-up after its `LoginOk` carries what was routed.
    pub fn is_authed(&self) -> bool {
        self.accepted_tick.get() >= WAITING
    }

    /// A request of its session waits on the server (room in a full queue, a media check), or
    /// no longer. Its input is not read meanwhile (`Conn::wait_writing`), pings included, so
    /// its idle clock stops, and starts again from the tick the wait ends at. Only a logged-in
    /// session's requests wait.
    pub fn wait_on_server(&self, waiting: bool, now: u64) {
        if self.is_authed() {
            self.accepted_tick
                .set(if waiting { WAITING } else { AUTHED });
            self.seen(now);
        }
    }

    fn is_waiting(&self) -> bool {
        self.accepted_tick.get() == WAITING
    }

    /// Its session was told the idle timeout that is `ticks` long.
    pub fn announced_idle(&self, ticks: u64) {
        self.announced_idle_ticks
            .set(u32::try_from(ticks).unwrap_or(u32::MAX));
    }

    /// Ticks of silence after which it is closed: the live idle timeout (`live_ticks`), or the
    /// longer one its session was told.
    fn idle_ticks(&self, live_ticks: u64) -> u64 {
        live_ticks.max(u64::from(self.announced_idle_ticks.get()))
    }

    /// Heard from at shard tick `now`.
    pub fn seen(&self, now: u64) {
        self.last_seen_tick.set(now as u32);
    }

    /// Ticks since it was accepted; `None` once logged in.
    fn ticks_since_accepted(&self, now: u64) -> Option<u64> {
        let accepted = self.accepted_tick.get();
        (accepted < WAITING).then(|| u64::from((now as u32).wrapping_sub(accepted)))
    }

    fn ticks_since_seen(&self, now: u64) -> u64 {
        u64::from((now as u32).wrapping_sub(self.last_seen_tick.get()))
    }

    /// Ticks since its outbound queue last was empty, at shard tick `now`; `None` while it is.
    fn backlog_ticks(&self, now: u64) -> Option<u64> {
        (!self.outbound.is_empty())
            .then(|| u64::from((now as u32).wrapping_sub(self.backlog_since_tick.get())))
    }

    /// Resolves once the connection has been told to close.
    pub async fn closed(&self) {
        while self.close.get().is_none() {
            self.wake.notified().await;
        }
    }

    /// The first reason wins; later ones are ignored.
    pub fn close_with(&self, close: Close) {
        if self.close.get().is_none() {
            self.close.set(Some(close));
        }
        self.wake.notify();
    }
}

pub(crate) struct Shard {
    pub id: ShardId,
    pub gateway: GatewayConfig,
    pub limits: Limits,
    pub backend: RequestSender,
    pub writes: Writes,
    pub stats: Arc<ShardStats>,
    pub pool: BufferPool,
    pub conns: RefCell<ConnTable<ConnShared>>,
    /// Coarse clock: reaper ticks since start. Cheaper than reading the clock per frame.
    pub tick: Cell<u64>,
    pub tick_ms: u64,
    /// Told at each tick: the inbox task waits for it when a flood starves the timers
    /// (`InboxTurn`).
    ticked: LocalNotify,
    pub stopping: Cell<bool>,
    /// Connections being turned away (`TurningAway`), not in `conns`.
    rejecting: Cell<usize>,
    /// Connections not logged in yet, per client (`prelogin.rs`).
    prelogin: PreloginCounts,
    /// Requests of connections not yet logged in (logins, registrations, account requests)
    /// waiting for the backend now (`gateway.logins_in_flight_per_shard_max`).
    logins_in_flight: Cell<usize>,
    /// The same per client (`ringchat_backend::share_key`), an entry only while it has one:
    /// at most `logins_in_flight_per_shard_max` entries.
    logins_in_flight_from: RefCell<HashMap<IpAddr, usize>>,
    /// When the next of those may go (`gateway.logins_per_second_per_shard`).
    login_pace: login_pace::LoginPace,
    /// TLS connections being opened, and the rate they may start at.
    tls_gate: tls_gate::TlsGate,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The live keys' values (`live.rs`): copied in on `Reconfigure`, read as plain values.
    pub live: Cell<LiveLimits>,
    /// Bytes queued for all its connections (`Outbound`), bounded by
    /// `gateway.outbound_bytes_per_shard_max` (`enqueue`).
    outbound_bytes: Cell<u64>,
    /// Who may connect, checked at accept (for a trusted balancer's connection: after its
    /// PROXY header, on the client's address).
    ip_rules: RefCell<Arc<IpRules>>,
    /// `gateway.proxy_protocol_from`: peers whose connections open with a PROXY header.
    proxy_from: TrustedPeers,
    published: Arc<Published>,
    stop: LocalNotify,
    /// The shard's listeners, one accept loop each.
    acceptors: RefCell<Vec<Rc<Acceptor>>>,
    all_closed: LocalNotify,
    /// Cluster mode: answers `GET /assign`.
    pub assign: Option<AssignFn>,
    /// Serves `/files` (`conn/files.rs`); `None`: answered 404.
    pub files: Option<Arc<FilesGate>>,
    /// File connections this shard serves now (`[gateway.files] conns_per_shard_max`).
    pub files_open: Cell<usize>,
}

impl Shard {
    /// Whether readiness is answered at once while data waits (epoll: monoio checks the socket
    /// and does not yield), so that a connection reading on and on must yield by itself
    /// (`conn::ReadTurn`). io_uring's readiness always waits for an event.
    pub(crate) fn readiness_never_waits(&self) -> bool {
        self.stats.driver.get() == DRIVER_EPOLL
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one per part of ShardSpec the shard keeps; a test builds it apart"
    )]
    fn new(
        id: ShardId,
        gateway: GatewayConfig,
        limits: Limits,
        backend: RequestSender,
        writes: Writes,
        stats: Arc<ShardStats>,
        tls: Option<Arc<rustls::ServerConfig>>,
        published: Arc<Published>,
    ) -> Self {
        // The reaper's period is set at start: live timeouts are applied at its granularity.
        let tick_ms =
            (gateway.handshake_timeout_ms.min(gateway.idle_timeout_ms) / 8).clamp(10, 1000);
        let live = published.get();
        let login_pace = login_pace::LoginPace::new(
            gateway.logins_per_second_per_shard,
            gateway.login_burst_per_shard,
            std::time::Instant::now(),
        );
        let tls_gate = tls_gate::TlsGate::new(
            gateway.tls_handshakes_per_shard_per_s,
            gateway.tls_handshakes_in_flight_per_shard_max,
            std::time::Instant::now(),
        );
        Self {
            live: Cell::new(live.limits),
            outbound_bytes: Cell::new(0),
            ip_rules: RefCell::new(Arc::clone(&live.ip_rules)),
            proxy_from: TrustedPeers::new(&gateway.proxy_protocol_from),
            published,
            id,
            pool: BufferPool::new(gateway.read_buffer_bytes, gateway.pool_buffers_max),
            gateway,
            limits,
            backend,
            writes,
            stats,
            conns: RefCell::new(ConnTable::new()),
            tick: Cell::new(0),
            tick_ms,
            ticked: LocalNotify::default(),
            stopping: Cell::new(false),
            rejecting: Cell::new(0),
            prelogin: PreloginCounts::default(),
            logins_in_flight: Cell::new(0),
            logins_in_flight_from: RefCell::new(HashMap::new()),
            login_pace,
            tls_gate,
            tls,
            stop: LocalNotify::default(),
            acceptors: RefCell::new(Vec::new()),
            all_closed: LocalNotify::default(),
            assign: None,
            files: None,
            files_open: Cell::new(0),
        }
    }

    /// Takes the newest live settings.
    fn reconfigure(&self) {
        let live = self.published.get();
        self.live.set(live.limits);
        *self.ip_rules.borrow_mut() = Arc::clone(&live.ip_rules);
    }

    /// A connection accepted while the shard is stopping is told `server_shutdown` at once.
    fn register(&self) -> Rc<ConnShared> {
        let mut conns = self.conns.borrow_mut();
        let shared = self.conn_shared(conns.next_id());
        conns.insert(Rc::clone(&shared));
        drop(conns);
        self.stats.connections.add(1);
        if self.stopping.get() {
            shared.close_with(Close::Kick(KickReason::ServerShutdown));
        }
        shared
    }

    /// A connection's shared state, not (yet) in the shard's table.
    fn conn_shared(&self, id: ConnId) -> Rc<ConnShared> {
        // Ticks are kept as u32 and compared wrapping; a tick that happens to be `WAITING` or
        // `AUTHED` is taken as the one before them.
        let tick = (self.tick.get() as u32).min(WAITING - 1);
        Rc::new(ConnShared {
            id,
            outbound: Outbound::default(),
            close: Cell::new(None),
            wake: LocalNotify::default(),
            accepted_tick: Cell::new(tick),
            last_seen_tick: Cell::new(tick),
            announced_idle_ticks: Cell::new(0),
            backlog_since_tick: Cell::new(tick),
        })
    }

    /// The connection has ended: what it still had queued leaves the shard's total.
    fn unregister(&self, shared: &ConnShared) {
        shared.outbound.clear(&self.outbound_bytes);
        let mut conns = self.conns.borrow_mut();
        if conns.remove(shared.id).is_some() {
            self.stats.connections.sub(1);
        }
        if self.stopping.get() && conns.is_empty() {
            self.all_closed.notify();
        }
    }

    fn ticks(&self, ms: u64) -> u64 {
        ms.div_ceil(self.tick_ms)
    }

    fn begin_shutdown(self: &Rc<Self>) {
        if self.stopping.get() {
            return;
        }
        tracing::info!(shard = self.id, "shard stopping");
        // The listeners first: from now on they drop SYNs (the client sends it again, to a
        // closed port or the next process) rather than complete handshakes into a queue that is
        // reset when the listener closes. What they still accept is told `server_shutdown`
        // (`register`); they close after `HANDSHAKES_SETTLE` (`serve`).
        for acceptor in self.acceptors.borrow().iter() {
            acceptor.refuse_handshakes();
        }
        self.stopping.set(true);
        self.stats.accepting.set(0);
        self.stop.notify();
        let conns = self.conns.borrow();
        for c in conns.values() {
            c.close_with(Close::Kick(KickReason::ServerShutdown));
        }
        if conns.is_empty() {
            self.all_closed.notify();
        }
    }
}

/// One connection being turned away, outside the shard's table: at most `REJECTING_MAX` at
/// once (their descriptors are in the shard's reserve, `fd_budget.rs`). Given back on drop.
pub(crate) struct TurningAway(Rc<Shard>);

impl TurningAway {
    /// `None`: the shard is turning `REJECTING_MAX` away already.
    pub fn take(shard: &Rc<Shard>) -> Option<Self> {
        let n = shard.rejecting.get();
        if n >= REJECTING_MAX {
            return None;
        }
        shard.rejecting.set(n + 1);
        Some(Self(Rc::clone(shard)))
    }
}

impl Drop for TurningAway {
    fn drop(&mut self) {
        self.0.rejecting.set(self.0.rejecting.get() - 1);
    }
}

async fn serve(spec: ShardSpec) -> Result<(), ShardError> {
    let id = spec.id;
    let acceptor = |l: Option<std::net::TcpListener>, kind| {
        l.map(|l| Acceptor::new(l, kind))
            .transpose()
            .map_err(|source| ShardError::Listener { shard: id, source })
    };
    let acceptors = [
        acceptor(spec.listeners.tcp, Listen::Tcp)?,
        acceptor(spec.listeners.ws, Listen::Ws)?,
        acceptor(spec.listeners.tls, Listen::Tls)?,
        acceptor(spec.listeners.wss, Listen::Wss)?,
    ];
    let mut shard = Shard::new(
        id,
        spec.gateway,
        spec.limits,
        spec.backend,
        spec.writes,
        spec.stats,
        spec.tls,
        spec.live,
    );
    shard.assign = spec.assign;
    shard.files = spec.files;
    let shard = Rc::new(shard);
    monoio::spawn(drain_inbox(Rc::clone(&shard), spec.inbox));
    monoio::spawn(reap(Rc::clone(&shard)));
    for acceptor in acceptors.into_iter().flatten() {
        let acceptor = Rc::new(acceptor);
        shard.acceptors.borrow_mut().push(Rc::clone(&acceptor));
        monoio::spawn(accept_loop(Rc::clone(&shard), acceptor));
    }
    shard.stats.accepting.set(1);
    let _ = spec.started.send(Ok(id));
    shard.stop.notified().await;
    let timeout = Duration::from_millis(shard.gateway.shutdown_timeout_ms);
    let stopping_since = Instant::now();
    // Meanwhile the connections are told `server_shutdown` and flushed. The listeners always
    // close here, whatever the timeout: an accept loop ends only then.
    monoio::time::sleep(HANDSHAKES_SETTLE.min(timeout)).await;
    for acceptor in shard.acceptors.borrow_mut().drain(..) {
        acceptor.close(|stream, peer| take(&shard, stream, peer, acceptor.kind));
    }
    // Connections taken since `begin_shutdown` may have emptied the table before.
    let closed = async {
        while !shard.conns.borrow().is_empty() {
            shard.all_closed.notified().await;
        }
    };
    let left = timeout.saturating_sub(stopping_since.elapsed());
    if monoio::time::timeout(left, closed).await.is_err() {
        tracing::warn!(
            shard = id,
            left = shard.conns.borrow().len(),
            "shutdown timeout: closing the remaining connections unflushed"
        );
    }
    // The reaper (at its next tick) and the accept loops end now; the sequencer's queue handle
    // in the shard goes with the last task holding it, and `Backend::finish` waits until every
    // handle is gone. A task still holding it when this thread's runtime is dropped would keep
    // that handle for ever.
    let released_by = Instant::now() + Duration::from_millis(2 * shard.tick_ms + 100);
    while Rc::strong_count(&shard) > 1 && Instant::now() < released_by {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let holders = Rc::strong_count(&shard) - 1;
    if holders > 0 {
        tracing::warn!(
            shard = id,
            holders,
            "tasks still hold the shard as it stops"
        );
    }
    tracing::info!(shard = id, "shard stopped");
    Ok(())
}

async fn accept_loop(shard: Rc<Shard>, acceptor: Rc<Acceptor>) {
    while let Some(accepted) = acceptor.accept().await {
        match accepted {
            Ok((stream, peer)) => take(&shard, stream, peer, acceptor.kind),
            Err(err) => {
                // Out of file descriptors or memory: back off instead of spinning on accept.
                tracing::warn!(shard = shard.id, %err, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves an accepted connection, or turns it away (IP rules, a full shard, a client past its
/// connections not logged in).
fn take(shard: &Rc<Shard>, stream: monoio::net::TcpStream, peer: SocketAddr, kind: Listen) {
    shard.stats.accepted.add(1);
    // A balancer's connection is checked once its PROXY header names the client (`open`).
    let proxied = shard.proxy_from.contains(peer.ip());
    if !proxied && let Err(why) = shard.ip_rules.borrow().check(peer.ip()) {
        // Closed before a byte is read or written.
        shard.stats.refused_ip(why);
        drop(stream);
        return;
    }
    let full = shard.conns.borrow().len() >= shard.live.get().conns_per_shard_max;
    let (turn_away, prelogin) = if full {
        shard.stats.rejected_full.add(1);
        (Some(TurnAway::Full), None)
    } else if proxied {
        (None, None)
    } else {
        match PreloginPlace::take(shard, peer.ip()) {
            Some(place) => (None, Some(place)),
            None => {
                shard.stats.prelogin_refused.add(1);
                (Some(TurnAway::PreloginPerIp), None)
            }
        }
    };
    if turn_away.is_some() {
        // Told "server full" over its own transport, within the handshake timeout; past
        // REJECTING_MAX at once, the socket is just closed.
        let Some(turning) = TurningAway::take(shard) else {
            return;
        };
        let accepted = conn::Accepted {
            turn_away,
            proxied,
            prelogin: None,
        };
        let reject = conn::serve(
            Rc::clone(shard),
            shard.conn_shared(0),
            stream,
            kind,
            accepted,
        );
        monoio::spawn(async move {
            reject.await;
            drop(turning);
        });
        return;
    }
    let accepted = conn::Accepted {
        turn_away: None,
        proxied,
        prelogin,
    };
    monoio::spawn(conn::serve(
        Rc::clone(shard),
        shard.register(),
        stream,
        kind,
        accepted,
    ));
}

#[cfg(test)]
mod tests;
