//! Cluster mode in the binary: starts this node's membership (heartbeat into Redis, the view)
//! and its gRPC listener, and stops them in order; and `--role status`, a node that serves only
//! the status service (gRPC `Assign`, HTTP `GET /assign` and the chat page on
//! `gateway.ws_listen`) with no shards, no store and no chat clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringchat_backend::Writes;
use ringchat_backend::cluster::link::{Link, NodeService};
use ringchat_backend::cluster::{self, Cluster, ConnectionCount};
use ringchat_backend::config::ClusterConfig;
use tokio::sync::oneshot;

use crate::config::Config;

/// How long leaving the cluster (deregistering from Redis) may take at a stop; past it the
/// node's record expires after `cluster.node_ttl_ms`.
pub const LEAVE_MAX: Duration = Duration::from_secs(5);

/// What `serve --role` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A chat node (one box, or one node of a cluster with `[cluster] enabled`).
    Node,
    /// Only the status service: needs `[cluster] enabled`.
    Status,
}

/// A running membership: stop it with `stop`.
pub struct Node {
    pub cluster: Arc<Cluster>,
    link: Option<Arc<Link>>,
    pub grpc_addr: SocketAddr,
    heartbeat_stop: oneshot::Sender<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    grpc_stop: oneshot::Sender<()>,
}

/// Binds `cluster.grpc_listen`, starts the heartbeat and the gRPC server on `rt`.
/// `link`: a chat node's links to its peers and its sequencer's queue (the `Node` service);
/// `None` on a status-only node.
pub fn start(
    rt: &tokio::runtime::Runtime,
    config: &ClusterConfig,
    connections: Option<ConnectionCount>,
    link: Option<(Arc<Link>, Writes)>,
) -> anyhow::Result<Node> {
    let cluster = {
        let _guard = rt.enter();
        Cluster::new(config, connections).context("cluster Redis (redis_url or sentinel_addrs)")?
    };
    let tls = cluster::tls::NodeTls::load(&config.tls)?;
    let node_service = link.map(|(link, writes)| {
        link.attach(Arc::clone(&cluster), rt.handle().clone(), tls.clone());
        (Arc::clone(&link), NodeService::new(link, writes))
    });
    let (link, node_service) = match node_service {
        Some((link, service)) => (Some(link), Some(service)),
        None => (None, None),
    };
    let addr: SocketAddr = config.grpc_listen.parse().context("cluster.grpc_listen")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding cluster.grpc_listen {addr}"))?;
    let grpc_addr = listener.local_addr()?;
    let (grpc_stop, grpc_stop_rx) = oneshot::channel::<()>();
    rt.spawn({
        let cluster = Arc::clone(&cluster);
        async move {
            let stop = async {
                let _ = grpc_stop_rx.await;
            };
            if let Err(err) =
                cluster::serve_grpc(cluster, node_service, listener, tls.as_ref(), stop).await
            {
                tracing::error!(%err, "cluster: the gRPC listener failed");
            }
        }
    });
    let (heartbeat_stop, heartbeat_stop_rx) = oneshot::channel::<()>();
    let heartbeat = rt.spawn(Arc::clone(&cluster).run(async {
        let _ = heartbeat_stop_rx.await;
    }));
    tracing::info!(node = %config.node_id, grpc = %grpc_addr, "cluster: node started");
    Ok(Node {
        cluster,
        link,
        grpc_addr,
        heartbeat_stop,
        heartbeat,
        grpc_stop,
    })
}

impl Node {
    /// Leaves the cluster (deregisters, bounded by the Redis deadline) and stops gRPC.
    pub fn stop(self, rt: &tokio::runtime::Runtime) {
        // The links first: their incoming streams hold the sequencer's queue.
        if let Some(link) = &self.link {
            link.shutdown();
        }
        let _ = self.heartbeat_stop.send(());
        // The timeout is made inside the runtime: made outside (`serve --role status` stops
        // outside its context) it panicked for want of a timer, and the node never left.
        let heartbeat = self.heartbeat;
        let left = rt.block_on(async { tokio::time::timeout(LEAVE_MAX, heartbeat).await });
        if left.is_err() {
            tracing::warn!("cluster: leaving took too long; the record expires after node_ttl_ms");
        }
        let _ = self.grpc_stop.send(());
    }
}

/// `config` with `gateway.status_http.conns_max` lowered to what the open-file limit holds
/// (read after `main` raised the soft limit to the hard one), said in the log when lowered:
/// past the limit accepts would fail with EMFILE, and so would the gRPC listener's and the
/// Redis connections' sockets. The per-client counts are lowered with it, so that filling it
/// still takes `STATUS_HTTP_CLIENTS_TO_FILL` clients, not one.
fn with_status_conns_cap(config: &Config) -> anyhow::Result<Config> {
    let (nofile, _hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("reading RLIMIT_NOFILE")?;
    let cap = crate::fd_budget::status_conns_within(nofile, config).map_err(anyhow::Error::msg)?;
    let mut config = config.clone();
    let limits = &mut config.gateway.status_http;
    if cap < limits.conns_max {
        let per_client = (cap / crate::config::STATUS_HTTP_CLIENTS_TO_FILL).max(1);
        tracing::warn!(
            configured = limits.conns_max,
            effective = cap,
            conns_per_ip_max = limits.conns_per_ip_max.min(per_client),
            conns_per_network_max = limits.conns_per_network_max.min(per_client),
            open_files_max = nofile,
            "gateway.status_http.conns_max lowered to what the open-file limit holds, and the \
             per-client counts to a sixteenth of it (raise LimitNOFILE= / ulimit -Hn for more)"
        );
        limits.conns_max = cap;
        limits.conns_per_ip_max = limits.conns_per_ip_max.min(per_client);
        limits.conns_per_network_max = limits.conns_per_network_max.min(per_client);
    }
    Ok(config)
}

/// `serve --role status`: the status service only, until SIGINT/SIGTERM.
pub fn run_status(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.cluster.enabled,
        "--role status needs [cluster] enabled = true (and its Redis: redis_url or sentinel_addrs)"
    );
    let http: SocketAddr = config
        .gateway
        .ws_listen
        .parse()
        .context("gateway.ws_listen: --role status serves GET /assign there")?;
    let config = &with_status_conns_cap(config)?;
    let rt = ringchat_backend::build_runtime(&config.backend).context("starting the runtime")?;
    let node = start(&rt, &config.cluster, None, None)?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(http))
        .with_context(|| format!("binding gateway.ws_listen {http}"))?;
    let http_bound = listener.local_addr()?;
    let (http_stop, http_stop_rx) = oneshot::channel::<()>();
    rt.spawn({
        let cluster = Arc::clone(&node.cluster);
        let config = config.clone();
        async move { crate::status_http::serve(cluster, listener, &config, http_stop_rx).await }
    });
    // `systemctl reload` and certbot's hook send SIGHUP here too; this service has no live
    // settings nor certificates (its `[security]` lists are read at start), so it is only
    // noted (caught in `main`, never fatal).
    rt.spawn(async {
        let mut seen = 0;
        loop {
            seen = crate::hangup::next(seen).await;
            tracing::info!("SIGHUP: the status service has nothing to read again; ignored");
        }
    });
    let mut signals = {
        let _runtime = rt.enter();
        crate::server::Signals::new()?
    };
    println!(
        "ringchat ready role=status ws={http_bound} grpc={}",
        node.grpc_addr
    );
    tracing::info!(ws = %http_bound, grpc = %node.grpc_addr, "ringchat status service ready");
    crate::sd_notify::notify_or_log("READY=1");
    let signal = rt.block_on(signals.recv());
    crate::sd_notify::notify_or_log("STOPPING=1");
    tracing::info!(signal, "shutting down");
    let _ = http_stop.send(());
    node.stop(&rt);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
