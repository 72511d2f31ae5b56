//! Tests of the cluster's Redis-backed parts wait on what they expect, with a deadline, and
//! run nodes whose timings are short enough to watch.

use std::time::{Duration, Instant};

/// A node `node` on Redis `url` under `prefix`, with short Redis timeouts and routes that
/// expire in 1 s, refresh every 300 ms and flush every 5 ms.
pub fn quick_config(url: &str, prefix: &str, node: &str) -> super::ClusterConfig {
    super::ClusterConfig {
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
        ..super::ClusterConfig::default()
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
