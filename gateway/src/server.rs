//! Wiring: binds the listeners, starts the backend runtime and the shards, prints the ready line,
//! and runs the graceful shutdown on SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ringchat_backend::Backend;
use ringchat_backend::admin::{self, Admin};
use ringchat_backend::api::{ShardEvent, ShardId};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::config::load::{Layers, Loaded};
use crate::fd_budget::ConnsCap;
use crate::runtime_config::RuntimeConfig;
use crate::shard::live::{Published, ShardLive};
use crate::shard::{self, Listeners, ShardSpec};
use crate::stats::{self, ShardStats};

/// Pending connections the kernel queues per listener (capped by net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;
/// How long a start waits for a listening socket no process holds any more (see `ensure_free`).
const LINGERING_LISTENER_WAIT: Duration = Duration::from_secs(3);
/// Time the shards get to start before the server gives up.
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// After the drain (`gateway.shutdown_timeout_ms`), how long the shard threads may take to end.
const SHARD_JOIN_GRACE: Duration = Duration::from_secs(2);
/// How long the backend may take to answer what the shards handed it before they stopped.
const BACKEND_DRAIN_MAX: Duration = Duration::from_secs(5);
/// How long the admin changes in flight at a shutdown may still take once the backend has
/// drained (they were refused from its start, and have had the drains' time already).
const ADMIN_CHANGES_STOP_MAX: Duration = Duration::from_secs(5);
/// How long the backend runtime's remaining tasks get once everything is flushed.
const RUNTIME_STOP_MAX: Duration = Duration::from_secs(1);

/// The longest a graceful stop (SIGTERM) waits, besides the store's final flush: the sum of
/// the bounds of its steps, in order, each named once and used by the step itself. What a
/// supervisor's stop timeout must exceed (systemd TimeoutStopSec, Kubernetes
/// terminationGracePeriodSeconds, compose stop_grace_period; gateway/tests/deploy_*.rs check).
pub fn graceful_stop_max(config: &Config) -> Duration {
    let leave = if config.cluster.enabled {
        crate::cluster::LEAVE_MAX
    } else {
        Duration::ZERO
    };
    let otlp = if config.observe.otlp.enabled() {
        Duration::from_millis(config.observe.otlp.export_timeout_ms)
    } else {
        Duration::ZERO
    };
    leave
        + shards_stop_max(config)
        + BACKEND_DRAIN_MAX
        + ADMIN_CHANGES_STOP_MAX
        + Backend::FINISH_MAX
        + otlp
        + RUNTIME_STOP_MAX
}

/// Reads the TLS certificates again (SIGHUP); a pair that does not load keeps the one in use.
fn reload_certificates(certificates: &[(&'static str, Arc<crate::tls::Certificate>)]) {
    for (section, certificate) in certificates {
        match certificate.reload() {
            Ok(()) => tracing::info!(section, "SIGHUP: TLS certificate read again"),
            Err(err) => tracing::error!(
                section,
                %err,
                "SIGHUP: TLS certificate not reloaded; still serving the previous one"
            ),
        }
    }
}

/// Telling the shards to stop and waiting for their threads: the drain, then the grace.
fn shards_stop_max(config: &Config) -> Duration {
    Duration::from_millis(config.gateway.shutdown_timeout_ms) + SHARD_JOIN_GRACE
}

/// Runs the server until a signal stops it. `layers` are what the configuration was read from
/// (read again on SIGHUP).
pub fn run(
    layers: Layers,
    loaded: Loaded,
    logs: Option<Arc<ringchat_backend::logs::Logs>>,
) -> anyhow::Result<()> {
    let config = loaded.config.clone();
    // The host's CPUs as `main` read them, before any thread pinned itself.
    let host = layers.host();
    let plan = config.shard_plan_on(&host);
    if let (crate::config::Cores::Named(_), Some(quota)) = (&config.gateway.cores, host.quota) {
        tracing::info!(
            cpu_quota = quota,
            online = host.online.len(),
            shards = plan.cores.len(),
            pinned = plan.pinned,
            "gateway.cores = \"auto\": no more shards than the cgroup's CPU quota (cpu.max) allows; pinned only when the CPU set has no more cores than that"
        );
    }
    let cores = plan.cores;
    let shard_count = cores.len();
    let conns_cap = conns_cap(&config, shard_count)?;
    let addrs = config
        .gateway
        .listen_addrs()
        .map_err(|p| anyhow::Error::msg(p.join("; ")))?;
    let tls = if config.gateway.tls.enabled() {
        let tls = &config.gateway.tls;
        Some(crate::tls::server_config(&tls.cert_path, &tls.key_path)?)
    } else {
        None
    };
    // A port in use stops the start now, before the store opens. The listeners themselves are
    // bound only once the shards can serve (below): a client connecting while the store opens
    // (migrations, journal replay, PostgreSQL) is refused at once and retries, rather than
    // accepted into the backlog and left waiting for its HelloOk. Not bound early without
    // listening: such a socket (SO_REUSEADDR) does not stop another server's probe.
    for (addr, key) in [
        (addrs.tcp, "tcp_listen"),
        (addrs.ws, "ws_listen"),
        (addrs.tls, "tls_listen"),
        (addrs.wss, "wss_listen"),
    ] {
        if let Some(addr) = addr.filter(|a| a.port() != 0) {
            ensure_free(addr, key)?;
        }
    }

    let (request_tx, request_rx) = mpsc::channel(config.backend.queue_requests_max);
    let (shard_txs, shard_rxs): (Vec<_>, Vec<_>) = (0..shard_count)
        .map(|_| mpsc::channel::<ShardEvent>(config.gateway.queue_events_max))
        .unzip();
    let shard_stats: Vec<Arc<ShardStats>> = (0..shard_count).map(|_| Arc::default()).collect();

    let rt =
        ringchat_backend::build_runtime(&config.backend).context("starting the backend runtime")?;
    // `[observe.otlp]`: spans of messages' paths across nodes, when an endpoint is set.
    let otlp =
        ringchat_backend::otlp::start(&config.observe.otlp, &config.cluster.node_id, rt.handle())?;
    let prometheus = admin::install_metrics().context("installing the metrics recorder")?;
    stats::describe();
    publish_info(&config, &cores, plan.pinned);
    stats::publish_conns_per_shard_max(conns_cap.apply(config.gateway.conns_per_shard_max));
    let backend = Backend::open(config.backend_settings(), shard_txs.clone())?;
    let shard_live = Arc::new(Published::new(ShardLive::of(&config, &conns_cap)));
    let runtime_config = Arc::new(RuntimeConfig::new(
        layers,
        loaded,
        Arc::clone(&shard_live),
        shard_txs.clone(),
        Arc::clone(&backend),
        conns_cap,
    ));
    // `log.filter` (PATCH /api/config, SIGHUP) goes through the same control as
    // PUT /api/logs/filter: one filter in force, whichever set it last.
    if let Some(logs) = &logs {
        let logs = Arc::clone(logs);
        runtime_config.set_log_filter_hook(Box::new(move |f| logs.control().set_filter(f)));
    }
    let admin_tls = if config.admin.tls.enabled() {
        let tls = &config.admin.tls;
        Some(crate::tls::server_config(&tls.cert_path, &tls.key_path).context("[admin.tls]")?)
    } else {
        None
    };
    // Cluster mode: the heartbeat, the node view and the gRPC listener (`cluster.rs`).
    let cluster_node = if config.cluster.enabled {
        let facts = stats::GatewayFacts::new(shard_stats.clone(), env!("RINGCHAT_COMMIT"));
        let count: ringchat_backend::cluster::ConnectionCount = Box::new(move || {
            use ringchat_backend::admin::overview::ServerFacts as _;
            facts.connections().per_shard.iter().sum()
        });
        let link = match (backend.link(), backend.writes()) {
            (Some(link), Some(writes)) => Some((link, writes)),
            _ => None,
        };
        Some(crate::cluster::start(
            &rt,
            &config.cluster,
            Some(count),
            link,
        )?)
    } else {
        None
    };
    // Cluster mode: this node's sessions go into the routes in Redis.
    if let Some(routes) = cluster_node.as_ref().and_then(|n| n.cluster.routes()) {
        backend.join_cluster(Arc::clone(routes));
    }
    // Cluster mode: presence is shared with the other nodes through Redis.
    if let Some(presence) = cluster_node.as_ref().and_then(|n| n.cluster.presence()) {
        backend.join_cluster_presence(Arc::clone(presence));
    }
    // Cluster mode: e-mail codes asked for on one node are redeemed on any.
    if let Some(codes) = cluster_node.as_ref().and_then(|n| n.cluster.codes()) {
        backend.join_cluster_codes(Arc::clone(codes));
    }
    // Cluster mode: a user's file limits are checked one upload create at a time, cluster-wide.
    if let Some(leases) = cluster_node.as_ref().and_then(|n| n.cluster.leases()) {
        backend.join_cluster_leases(Arc::clone(leases));
    }
    let assign = cluster_node.as_ref().map(|n| {
        let cluster = Arc::clone(&n.cluster);
        Arc::new(move || cluster.assign_http()) as shard::AssignFn
    });
    let writes = backend
        .writes()
        .context("the backend has no commit thread")?;
    let (backend_stop_tx, backend_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let backend_task = rt.spawn(Arc::clone(&backend).serve(request_rx, async {
        let _ = backend_stop_rx.await;
    }));

    let admin_listener = match config.admin.listen_addr() {
        None => None,
        Some(addr) => {
            let addr = addr?;
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("binding admin.listen {addr}"))?;
            Some(listener)
        }
    };
    let admin_bound = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    // `/files` on the WebSocket listeners, served on the backend's runtime.
    let files = backend.files_router().map(|router| {
        crate::files::FilesGate::new(
            router,
            rt.handle().clone(),
            config.gateway.files.clone(),
            assign.clone(),
        )
    });
    // Checked again as they are bound: another process may have taken a port meanwhile.
    let mut tcp = bind_listener(addrs.tcp, shard_count, "tcp_listen")?;
    let mut ws = bind_listener(addrs.ws, shard_count, "ws_listen")?;
    let mut tls_l = bind_listener(addrs.tls, shard_count, "tls_listen")?;
    let mut wss = bind_listener(addrs.wss, shard_count, "wss_listen")?;
    let bound = |l: &Option<Vec<std::net::TcpListener>>| -> std::io::Result<String> {
        Ok(match l {
            Some(ls) => ls[0].local_addr()?.to_string(),
            None => "off".to_owned(),
        })
    };
    let (tcp_bound, ws_bound, tls_bound, wss_bound) =
        (bound(&tcp)?, bound(&ws)?, bound(&tls_l)?, bound(&wss)?);
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(shard_count);
    let mut threads = Vec::with_capacity(shard_count);
    for (index, (inbox, core)) in shard_rxs.into_iter().zip(cores).enumerate() {
        let take = |l: &mut Option<Vec<std::net::TcpListener>>| l.as_mut().and_then(Vec::pop);
        let spec = ShardSpec {
            id: ShardId::try_from(index).context("too many shards")?,
            core: plan.pinned.then_some(core),
            gateway: config.gateway.clone(),
            limits: config.limits.clone(),
            listeners: Listeners {
                tcp: take(&mut tcp),
                ws: take(&mut ws),
                tls: take(&mut tls_l),
                wss: take(&mut wss),
            },
            tls: tls.as_ref().map(|t| Arc::clone(&t.config)),
            inbox,
            backend: request_tx.clone(),
            writes: writes.clone(),
            stats: Arc::clone(&shard_stats[index]),
            live: Arc::clone(&shard_live),
            started: started_tx.clone(),
            assign: assign.clone(),
            files: files.clone(),
        };
        threads.push(shard::spawn(spec).context("spawning a shard thread")?);
    }
    drop(request_tx);
    // The shards hold the sequencer's queue now; `finish` waits for them to let go.
    drop(writes);
    for _ in 0..shard_count {
        match started_rx.recv_timeout(SHARD_START_TIMEOUT) {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => bail!("{why}"),
            Err(_) => bail!("a shard did not start within {SHARD_START_TIMEOUT:?}"),
        }
    }

    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The certificates SIGHUP reads again, by the section that names their files.
    let certificates: Vec<(&'static str, Arc<crate::tls::Certificate>)> =
        [("gateway.tls", &tls), ("admin.tls", &admin_tls)]
            .into_iter()
            .filter_map(|(section, t)| Some((section, Arc::clone(&t.as_ref()?.certificate))))
            .collect();
    let admin_tls_config = admin_tls.map(|t| t.config);
    // Kept for the shutdown: its changes stop before the final audit flush.
    let mut admin_app: Option<Arc<Admin>> = None;
    if let Some(listener) = admin_listener {
        let admin = Admin::new(
            prometheus,
            Arc::clone(&backend),
            Box::new({
                let shards = shard_stats.clone();
                move || stats::publish(&shards)
            }),
        )
        .with_logs(logs)
        .with_config_control(Arc::clone(&runtime_config) as _)
        .with_secure_cookies(admin_tls_config.is_some())
        .with_server_facts(Arc::new(stats::GatewayFacts::new(
            shard_stats.clone(),
            env!("RINGCHAT_COMMIT"),
        )));
        let admin = Arc::new(match &cluster_node {
            Some(node) => admin.with_cluster(Arc::clone(&node.cluster)),
            None => admin,
        });
        admin_app = Some(Arc::clone(&admin));
        rt.spawn(async move {
            let stop = async {
                let _ = admin_stop_rx.await;
            };
            let served = match admin_tls_config {
                Some(tls) => admin::serve_tls(listener, tls, admin, stop).await,
                None => admin::serve(listener, admin, stop).await,
            };
            if let Err(err) = served {
                tracing::error!(%err, "admin listener failed");
            }
        });
    }

    // SIGHUP: read the configuration again and apply its live keys, and the TLS certificates
    // (a renewed one is served from the next handshake on). Caught since `main` began: one
    // sent while the server was starting is applied now, once.
    rt.spawn({
        let runtime_config = Arc::clone(&runtime_config);
        async move {
            let mut seen = 0;
            loop {
                seen = crate::hangup::next(seen).await;
                tracing::info!("SIGHUP: reading the configuration again");
                let r = Arc::clone(&runtime_config);
                let certificates = certificates.clone();
                let reload = move || {
                    r.reload();
                    reload_certificates(&certificates);
                };
                if let Err(err) = tokio::task::spawn_blocking(reload).await {
                    tracing::error!(%err, "SIGHUP: reload failed");
                }
            }
        }
    });

    let mut signals = {
        let _runtime = rt.enter();
        Signals::new()?
    };
    let admin_text = admin_bound.map_or_else(|| "off".to_owned(), |a: SocketAddr| a.to_string());
    // Its own target: the console leaves it out, as the line below is the console's.
    tracing::info!(target: ringchat_backend::logs::READY_TARGET, tcp = %tcp_bound, ws = %ws_bound, tls = %tls_bound, wss = %wss_bound, admin = %admin_text, shards = shard_count, "ringchat ready");
    // One machine-readable line on stdout, for scripts and tests that start the server.
    let grpc_text = cluster_node
        .as_ref()
        .map_or_else(|| "off".to_owned(), |n| n.grpc_addr.to_string());
    let _ = writeln!(
        std::io::stdout(),
        "ringchat ready tcp={tcp_bound} admin={admin_text} shards={shard_count} ws={ws_bound} tls={tls_bound} wss={wss_bound} grpc={grpc_text}"
    );
    // Under systemd (Type=notify): started now, not when the process was forked.
    crate::sd_notify::notify_or_log("READY=1");

    let stop = rt.block_on(async {
        tokio::select! {
            signal = signals.recv() => Stop::Signal(signal),
            why = backend.store_failed() => Stop::StoreFailed(why),
        }
    });
    // No admin change starts from now on (503 with Retry-After; reads and health go on):
    // each one must land before the final audit flush below, its entry with it.
    if let Some(admin) = &admin_app {
        admin.refuse_changes();
    }
    crate::sd_notify::notify_or_log("STOPPING=1");
    match &stop {
        Stop::Signal(signal) => tracing::info!(signal, "shutting down"),
        Stop::StoreFailed(why) => tracing::error!(
            %why,
            "stopping: the store refuses writes; restart once the cause (disk full, I/O error) is fixed"
        ),
    }
    // Leave the cluster first, so that no status service sends clients here any more.
    if let Some(node) = cluster_node {
        node.stop(&rt);
    }

    // A shard's full inbox takes the Shutdown once it drains; all of it within the shards'
    // budget.
    let shards_deadline = tokio::time::Instant::now() + shards_stop_max(&config);
    let joined = rt.block_on(async {
        tokio::time::timeout_at(shards_deadline, async {
            for tx in &shard_txs {
                let _ = tx.send(ShardEvent::Shutdown).await;
            }
            drop(shard_txs);
            tokio::task::spawn_blocking(move || {
                threads
                    .into_iter()
                    .map(|t| t.join().map_err(|_| "a shard thread panicked".to_owned()))
                    .collect::<Vec<_>>()
            })
            .await
        })
        .await
    });
    match joined {
        Ok(Ok(results)) => {
            for r in results {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::error!(%err, "shard ended with an error"),
                    Err(err) => tracing::error!(err, "shard ended with a panic"),
                }
            }
        }
        _ => tracing::warn!("shards did not stop in time"),
    }
    let _ = backend_stop_tx.send(());
    if rt
        .block_on(async { tokio::time::timeout(BACKEND_DRAIN_MAX, backend_task).await })
        .is_err()
    {
        tracing::warn!("backend did not drain in time");
    }
    // The admin changes in flight end (or are cut) before the audit log's final flush.
    if let Some(admin) = &admin_app {
        let cut = rt.block_on(admin.finish_changes(ADMIN_CHANGES_STOP_MAX));
        if cut > 0 {
            tracing::warn!(
                cut,
                "admin changes still running at shutdown were cut; they may have taken effect unaudited"
            );
        }
    }
    // The commit thread finishes what was queued; then one more flush for account writes.
    rt.block_on(backend.finish());
    // After a store failure this fails too; the failure is what gets reported.
    let flushed = backend.flush();
    let _ = admin_stop_tx.send(());
    // Exports the spans still queued while the runtime (tonic's client) is up.
    drop(otlp);
    rt.shutdown_timeout(RUNTIME_STOP_MAX);
    tracing::info!("stopped");
    match stop {
        Stop::Signal(_) => flushed.context("final flush of the store"),
        Stop::StoreFailed(why) => bail!(
            "stopped because the store refuses writes ({why}); restart once the cause (disk full, I/O error) is fixed"
        ),
    }
}

/// How many connections the open-file limit holds per shard (`fd_budget`): read after `main`
/// raised the soft limit to the hard one. Logged when it is below
/// `gateway.conns_per_shard_max`; an error when it leaves no room for clients at all.
fn conns_cap(config: &Config, shards: usize) -> anyhow::Result<ConnsCap> {
    let (soft, _hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("reading RLIMIT_NOFILE")?;
    let cap = ConnsCap::new(soft, config, shards).map_err(anyhow::Error::msg)?;
    if cap.lowers(config.gateway.conns_per_shard_max) {
        crate::runtime_config::warn_conns_lowered(config.gateway.conns_per_shard_max, &cap);
    }
    Ok(cap)
}

/// Why the server stops.
enum Stop {
    Signal(&'static str),
    /// The store takes no more writes: exit non-zero so that the supervisor restarts.
    StoreFailed(String),
}

/// SIGTERM and SIGINT, caught from the moment this is made (inside a tokio runtime): make it
/// before saying ready, so that a stop sent right after ready is graceful, not the signal's
/// default action.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Binds one listener per shard for a listener that is on. A configured port must be free:
/// joining another server's SO_REUSEPORT group would silently split its clients with it.
fn bind_listener(
    addr: Option<SocketAddr>,
    count: usize,
    key: &str,
) -> anyhow::Result<Option<Vec<std::net::TcpListener>>> {
    addr.map(|addr| {
        if addr.port() != 0 {
            ensure_free(addr, key)?;
        }
        bind_reuseport(addr, count).with_context(|| format!("binding gateway.{key} {addr}"))
    })
    .transpose()
}

/// Fails if another process listens on `addr`: a probe bound without SO_REUSEPORT gets
/// EADDRINUSE then (SO_REUSEADDR still lets it past connections left in TIME_WAIT).
///
/// A listener no process holds is waited for, up to [`LINGERING_LISTENER_WAIT`]: when a
/// process that had io_uring accepts pending on it dies, the kernel tears that ring down in the
/// background and the listener stays in LISTEN for tens of milliseconds more. ringchat's own
/// listeners never have one (`shard/accept.rs`), but an older build being replaced, or another
/// io_uring server that had the port, leave such a listener; a start in that window would
/// otherwise refuse it ("port in use").
fn ensure_free(addr: SocketAddr, key: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + LINGERING_LISTENER_WAIT;
    let mut waited = false;
    loop {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        match probe.bind(&addr.into()) {
            Ok(()) => {
                if waited {
                    tracing::info!(%addr, "the lingering listener is gone");
                }
                return Ok(());
            }
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(err) => {
                return Err(
                    anyhow::Error::new(err).context(format!("binding gateway.{key} {addr}"))
                );
            }
        };
        let owner = crate::port_owner::find(addr.port());
        if owner.is_none() && std::time::Instant::now() < deadline {
            if !waited {
                tracing::info!(
                    %addr,
                    "waiting for a listener no process holds (an exited process's io_uring \
                     being torn down) to go"
                );
                waited = true;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let owner = match owner {
            Some(owner) => format!("by {owner}"),
            None => format!(
                "(its process is not visible in /proc; waited {} ms for it to go)",
                LINGERING_LISTENER_WAIT.as_millis()
            ),
        };
        bail!(
            "gateway.{key} {addr}: port {} is already in use {owner}; stop that process or \
             choose another port",
            addr.port()
        )
    }
}

/// One listener per shard on the same address (SO_REUSEPORT), so the kernel spreads connections
/// over the shards. Port 0 is resolved by the first bind and reused by the others.
fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bind_to = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_to.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bind_to = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// What a benchmark report or a dashboard needs to say which server it measured: the build, and
/// the settings that change the figures. Prometheus "info" gauges (value 1, facts in labels).
fn publish_info(config: &Config, cores: &[usize], pinned: bool) {
    metrics::gauge!(
        "ringchat_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("RINGCHAT_COMMIT"),
    )
    .set(1.0);
    let durability = match config.storage.durability {
        ringchat_backend::config::Durability::Fsync => "fsync",
        ringchat_backend::config::Durability::None => "none",
    };
    metrics::gauge!(
        "ringchat_config_info",
        "durability" => durability,
        "shards" => cores.len().to_string(),
        "shard_cores" => if pinned { format!("{cores:?}") } else { "unpinned".to_owned() },
        "backend_cores" => format!("{:?}", config.backend.cores),
        "driver" => format!("{:?}", config.gateway.driver).to_lowercase(),
    )
    .set(1.0);
}
