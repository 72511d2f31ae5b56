//! The private admin HTTP listener: Prometheus metrics now, the admin API later.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringchat_proto::v1::{ErrorCode, KickReason};

use crate::stats::{DRIVER_EPOLL, DRIVER_IO_URING, ShardStats};

/// Installs the process-wide metrics recorder. Call once, before anything records.
pub fn install_metrics() -> Result<PrometheusHandle, metrics::SetRecorderError<impl Sized>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    Ok(handle)
}

pub struct Admin {
    pub prometheus: PrometheusHandle,
    pub shards: Vec<Arc<ShardStats>>,
    pub backend: Arc<crate::Backend>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(admin);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_page(State(admin): State<Arc<Admin>>) -> String {
    publish_shard_stats(&admin.shards);
    let online = admin.backend.lock_sessions().online_users();
    metrics::gauge!("ringchat_online_users").set(online as f64);
    admin.prometheus.render()
}

/// Copies the shard-local counters into the registry; done per scrape, never per frame.
fn publish_shard_stats(shards: &[Arc<ShardStats>]) {
    for (index, s) in shards.iter().enumerate() {
        let shard = index.to_string();
        let gauge = |name: &'static str, v: u64| {
            metrics::gauge!(name, "shard" => shard.clone()).set(v as f64);
        };
        gauge("ringchat_connections", s.connections.get());
        gauge("ringchat_authenticated_connections", s.authenticated.get());
        let counter = |name: &'static str, v: u64| {
            metrics::counter!(name, "shard" => shard.clone()).absolute(v);
        };
        counter("ringchat_accepted_total", s.accepted.get());
        counter("ringchat_rejected_full_total", s.rejected_full.get());
        counter("ringchat_frames_in_total", s.frames_in.get());
        counter("ringchat_frames_out_total", s.frames_out.get());
        counter("ringchat_bytes_in_total", s.bytes_in.get());
        counter("ringchat_bytes_out_total", s.bytes_out.get());
        counter("ringchat_shard_logins_total", s.logins.get());
        counter(
            "ringchat_shard_login_failures_total",
            s.login_failures.get(),
        );
        let driver = match s.driver.get() {
            DRIVER_IO_URING => "io_uring",
            DRIVER_EPOLL => "epoll",
            _ => "starting",
        };
        metrics::gauge!("ringchat_shard_driver", "shard" => shard.clone(), "driver" => driver)
            .set(1.0);
        for (code, c) in s.errors.iter().enumerate() {
            let n = c.get();
            if n == 0 {
                continue;
            }
            let name = i32::try_from(code)
                .ok()
                .and_then(|c| ErrorCode::try_from(c).ok())
                .map_or("unknown", |c| c.as_str_name());
            metrics::counter!("ringchat_errors_total", "shard" => shard.clone(), "code" => name)
                .absolute(n);
        }
        for (reason, c) in s.kicks.iter().enumerate() {
            let n = c.get();
            if n == 0 {
                continue;
            }
            let name = i32::try_from(reason)
                .ok()
                .and_then(|r| KickReason::try_from(r).ok())
                .map_or("unknown", |r| r.as_str_name());
            metrics::counter!("ringchat_kicks_total", "shard" => shard.clone(), "reason" => name)
                .absolute(n);
        }
    }
}
