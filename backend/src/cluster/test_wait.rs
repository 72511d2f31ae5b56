//! Tests of the cluster's Redis-backed parts wait on what they expect, with a deadline, and
//! run nodes whose timings are short enough to watch, on the test Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cluster, ClusterConfig};

/// The test Redis (`RINGCHAT_TEST_REDIS_URL`); panics saying how to start one.
pub fn redis_url() -> String {
    std::env::var("RINGCHAT_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "RINGCHAT_TEST_REDIS_URL is not set: the cluster tests need Redis (`bash \
             scripts/test.sh` starts one; scripts/redis-test-server.sh)"
        )
    })
}

/// A node `node` on Redis `url` under `prefix`, with short Redis timeouts and routes that
/// expire in 1 s, refresh every 300 ms and flush every 5 ms.
pub fn quick_config(url: &str, prefix: &str, node: &str) -> ClusterConfig {
    ClusterConfig {
        enabled: true,
        node_id: node.into(),
        redis_url: url.into(),
        redis_key_prefix: prefix.into(),
        redis_timeout_ms: 200,
        redis_breaker_open_ms: 200,
        routes: super::routes::RoutesConfig {
            ttl_ms: 1_000,
            refresh_ms: 300,
            flush_ms: 5,
            ..super::routes::RoutesConfig::default()
        },
        ..ClusterConfig::default()
    }
}

/// A loopback listener that takes connections, holds them and never answers: a peer dialed
/// there never gets its stream, so what is queued for it stays queued for the test to read.
/// Stops listening (and drops what it holds) when dropped.
pub struct SilentListener {
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl SilentListener {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                held.push(c);
            }
        });
        Self { addr, task }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Nodes on the test Redis under one fresh prefix, each advertising (so dialed by the others
/// at) one [`SilentListener`]: every peer's queue stays as the test filled it. The nodes run
/// until [`Self::stop`] or drop.
pub struct SilentNodes {
    pub prefix: String,
    pub clusters: Vec<Arc<Cluster>>,
    listener: SilentListener,
    stop: tokio::sync::watch::Sender<bool>,
}

impl SilentNodes {
    /// Starts a node per id in `ids` under a prefix made of `kind`, this process and now;
    /// returns at once (the caller waits for what it needs the nodes to see).
    pub async fn start(kind: &str, ids: &[&str]) -> Self {
        let prefix = format!("{kind}_{}_{}", std::process::id(), crate::time::now_ms());
        let listener = SilentListener::start().await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut clusters = Vec::new();
        for id in ids {
            let config = node_config(&prefix, id, &listener.addr);
            let cluster = Cluster::new(&config, Some(Box::new(|| 0))).expect("cluster");
            let mut stopped = stopped.clone();
            tokio::spawn(Arc::clone(&cluster).run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            clusters.push(cluster);
        }
        Self {
            prefix,
            clusters,
            listener,
            stop,
        }
    }

    /// The settings node `id` runs with (for a `Link` of that node).
    pub fn config(&self, id: &str) -> ClusterConfig {
        node_config(&self.prefix, id, &self.listener.addr)
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for SilentNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of a test cluster on the test Redis (registered, heartbeating, with its routes)
/// advertising `advertise`.
pub fn node_config(prefix: &str, id: &str, advertise: &str) -> ClusterConfig {
    ClusterConfig {
        advertise_addr: advertise.into(),
        heartbeat_interval_ms: 250,
        // Peers are dialed at a listener that never answers: what is queued for them stays
        // queued for the test to read.
        peer_connect_timeout_ms: 60_000,
        ..quick_config(&redis_url(), prefix, id)
    }
}

/// How long a test waits for something Redis or a background task does.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it gives `Some`, failing (saying `what`) after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a condition that needs no I/O.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, || std::future::ready(check().then_some(()))).await
}
