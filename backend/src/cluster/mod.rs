//! Cluster mode, part 1 (issue 14): this node registers itself in Redis with a heartbeat and a
//! TTL, keeps a lock-free view of the live nodes (`view.rs`), and serves the status service
//! (`Assign`: which node a client should use) over gRPC (`grpc.rs`) and, in the gateway, as
//! `GET /assign` on the WebSocket listener.
//!
//! Failure behaviour (ARCHITECTURE.md has the whole analysis): every Redis call has a deadline
//! and goes through one circuit breaker (`redis.rs`). Redis away → the heartbeat fails, the view
//! keeps the last nodes it read and is marked stale (`/metrics`, the admin overview, `Assign`'s
//! `fresh`), and the node goes on serving its clients; Redis back → the next heartbeat writes
//! the record again and rebuilds the view. Nothing on the message path waits on Redis.
//!
//! Seams for the later parts: node-to-node gRPC services are added to the same tonic server
//! (`grpc::serve`); conversation ownership reads the live nodes from `Cluster::view`.

pub mod admin;
pub mod codes;
pub mod config;
mod grpc;
mod grpc_conns;
mod hooks;
pub mod leases;
pub mod link;
pub(crate) mod login_check;
pub(crate) mod metrics;
mod presence;
mod redis;
mod registry;
pub mod rendezvous;
pub mod routes;
#[cfg(test)]
pub(crate) mod test_wait;
pub mod tls;
mod view;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub use config::ClusterConfig;
pub use grpc::serve as serve_grpc;
pub use presence::ClusterPresence;
pub use redis::RedisError;
pub use registry::NodeRecord;
pub use routes::{Destination, Destinations, Routes};
pub use view::{ClusterView, LiveNode};

use crate::admin::overview::procfs;
use registry::Registry;

/// How far apart the nodes' wall clocks may be, either way, in milliseconds, where one node's
/// time is compared with another's: a resume's `since` read on any node
/// (`messaging/resume.rs`) and the open time a `REPLACED` kick carries (`link/kicks.rs`).
/// NTP keeps them far closer; the cluster link's proof (`PROOF_SKEW_MS`, 60 s) is only a
/// refusal bound, not an order.
pub const NODE_CLOCKS_APART_MAX_MS: u64 = 2_000;

/// Counts this node's client connections (the gateway's shard counters), for its record.
pub type ConnectionCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// This node's membership: its record, the view of the others, the heartbeat.
pub struct Cluster {
    config: ClusterConfig,
    started_at_ms: u64,
    registry: Registry,
    /// Shared with `routes`, which checks routes against the live nodes.
    view: Arc<ArcSwap<ClusterView>>,
    /// Where users' devices are (`routes/`); `None` on a status-only node.
    routes: Option<Arc<Routes>>,
    /// Users' presence across the nodes (`presence/`); `None` on a status-only node.
    presence: Option<Arc<ClusterPresence>>,
    /// E-mail codes any node can redeem (`codes.rs`); `None` on a status-only node.
    codes: Option<Arc<codes::SharedCodes>>,
    /// Leases for checks that run on one node at a time (`leases.rs`); `None` on a
    /// status-only node.
    leases: Option<Arc<leases::Leases>>,
    /// `None`: a status-only node (`--role status`), which reads the view but is no chat node.
    connections: Option<ConnectionCount>,
}

impl Cluster {
    /// Call on the tokio runtime (the Redis connection is made there, lazily: a node starts
    /// while Redis is away). The heartbeat starts with `run`. Without `connections` the node
    /// only reads the view (a status-only node) and registers nothing.
    pub fn new(
        config: &ClusterConfig,
        connections: Option<ConnectionCount>,
    ) -> Result<Arc<Self>, RedisError> {
        let redis = redis::Redis::new(config)?;
        let started_at_ms = crate::time::now_ms();
        let view = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
        let (routes, presence, codes, leases) = match connections {
            Some(_) => (
                Some(Routes::new(config, started_at_ms, Arc::clone(&view))?),
                Some(ClusterPresence::new(
                    config,
                    started_at_ms,
                    Arc::clone(&view),
                )?),
                Some(Arc::new(codes::SharedCodes::new(config)?)),
                Some(Arc::new(leases::Leases::new(config)?)),
            ),
            None => (None, None, None, None),
        };
        Ok(Arc::new(Self {
            registry: Registry::new(
                redis,
                &config.redis_key_prefix,
                config.node_ttl_ms,
                config.nodes_max,
            ),
            config: config.clone(),
            started_at_ms,
            view,
            routes,
            presence,
            codes,
            leases,
            connections,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// When this process started, as its record says (peers' proofs name it).
    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// The live nodes as last read; never waits.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// The route table (`None` on a status-only node).
    pub fn routes(&self) -> Option<&Arc<Routes>> {
        self.routes.as_ref()
    }

    /// Users' presence across the nodes (`None` on a status-only node).
    pub fn presence(&self) -> Option<&Arc<ClusterPresence>> {
        self.presence.as_ref()
    }

    /// E-mail codes shared by the nodes (`None` on a status-only node).
    pub fn codes(&self) -> Option<&Arc<codes::SharedCodes>> {
        self.codes.as_ref()
    }

    /// Leases shared by the nodes (`None` on a status-only node).
    pub fn leases(&self) -> Option<&Arc<leases::Leases>> {
        self.leases.as_ref()
    }

    /// Whether this node's record has reached Redis (for `/readyz`).
    pub fn joined(&self) -> bool {
        self.view.load().joined
    }

    /// `GET /assign`: the status code and the JSON body.
    pub fn assign_http(&self) -> (u16, String) {
        let view = self.view.load();
        match view.assign() {
            Some(node) => (
                200,
                serde_json::json!({
                    "node_id": node.node_id,
                    "client_addrs": node.client_addrs,
                    "fresh": view.fresh,
                })
                .to_string(),
            ),
            None => (
                503,
                serde_json::json!({"error": "no live node known yet; retry shortly"}).to_string(),
            ),
        }
    }

    /// Heartbeats until `stop` completes, then deregisters (bounded by the Redis deadline).
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.heartbeat_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuMeter::new();
        let (routes_stop, routes_stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = self.routes.as_ref().map(|r| {
            tokio::spawn(Arc::clone(r).run(async {
                let _ = routes_stopped.await;
            }))
        });
        let (presence_stop, presence_stopped) = tokio::sync::oneshot::channel::<()>();
        let presence = self.presence.as_ref().map(|p| {
            tokio::spawn(Arc::clone(p).run(async {
                let _ = presence_stopped.await;
            }))
        });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => self.heartbeat(cpu.percent()).await,
            }
        }
        // Routes first (deleting them needs the node still live to others meanwhile).
        let _ = routes_stop.send(());
        let _ = presence_stop.send(());
        if let Some(routes) = routes {
            let _ = routes.await;
        }
        if let Some(presence) = presence {
            let _ = presence.await;
        }
        if self.connections.is_none() {
            return;
        }
        match self.registry.deregister(&self.config.node_id).await {
            Ok(()) => tracing::info!(node = %self.config.node_id, "cluster: left"),
            Err(err) => {
                tracing::warn!(%err, "cluster: could not deregister; the record expires after node_ttl_ms")
            }
        }
    }

    async fn heartbeat(&self, cpu_percent: f32) {
        let now = crate::time::now_ms();
        let me = self.connections.as_ref().map(|count| NodeRecord {
            node_id: self.config.node_id.clone(),
            advertise_addr: self.config.advertised().to_owned(),
            client_addrs: self.config.client_addrs.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: now,
            connections: count(),
            cpu_percent,
        });
        match self.registry.heartbeat(me.as_ref()).await {
            Ok(mut nodes) => {
                // SRANDMEMBER may leave this node out past `nodes_max`: it is live all the same.
                if let Some(me) = me
                    && !nodes.iter().any(|n| n.node_id == me.node_id)
                {
                    nodes.push(me);
                    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                }
                // Nodes missing from this read stay a while (`ClusterView::next`): a Redis
                // restarted empty must not shrink the view to the nodes that heartbeated since.
                let read = nodes.len();
                let old = self.view.load_full();
                let mut next = old.next(nodes, now, self.config.node_ttl_ms, self.config.nodes_max);
                // Back after a first join or a long enough gap: others may have sent kicks
                // this node never got (`link/recheck.rs`).
                let c = &self.config;
                let gap_ms = now.saturating_sub(old.read_at_ms);
                if self.connections.is_some()
                    && (!old.joined
                        || view::may_have_been_dropped(
                            gap_ms,
                            c.node_ttl_ms,
                            c.heartbeat_interval_ms,
                            c.redis_timeout_ms,
                        ))
                {
                    next.returns = old.returns + 1;
                    if old.joined {
                        tracing::info!(
                            gap_ms,
                            "cluster: back after a gap between heartbeats long enough for other nodes to have dropped this one"
                        );
                    }
                }
                ::metrics::gauge!("ringchat_cluster_nodes_missing_kept")
                    .set(next.nodes.len().saturating_sub(read) as f64);
                // The routes note who left and came back as the view changes.
                match &self.routes {
                    Some(routes) => routes.set_view(next, now),
                    None => self.view.store(Arc::new(next)),
                }
                if !old.fresh && old.joined {
                    tracing::info!("cluster: Redis reachable again; the node view is fresh");
                }
            }
            Err(err) => {
                ::metrics::counter!("ringchat_cluster_heartbeat_failures_total").increment(1);
                let old = self.view.load();
                if old.fresh || !old.joined {
                    tracing::warn!(%err, "cluster: heartbeat failed; serving on with the last node view (stale)");
                }
                self.view.store(Arc::new(old.stale(err.to_string())));
            }
        }
    }
}

/// This process's CPU between two calls, in percent of one core.
struct CpuMeter {
    last: (std::time::Instant, u64),
}

impl CpuMeter {
    fn new() -> Self {
        Self {
            last: (std::time::Instant::now(), procfs::read_process().cpu_ticks),
        }
    }

    fn percent(&mut self) -> f32 {
        let now = (std::time::Instant::now(), procfs::read_process().cpu_ticks);
        let secs = now.0.duration_since(self.last.0).as_secs_f64();
        let ticks = now.1.saturating_sub(self.last.1) as f64;
        self.last = now;
        if secs <= 0.0 {
            return 0.0;
        }
        (ticks / procfs::ticks_per_second() as f64 / secs * 100.0) as f32
    }
}
