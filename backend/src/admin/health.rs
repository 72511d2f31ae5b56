//! `/metrics` (Prometheus), `/healthz` and `/readyz`: open to anyone who reaches the listener
//! (scrapers and supervisors carry no credentials); they show nothing about any user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Admin;

/// Installs the process-wide metrics recorder. Call once, before anything records.
pub fn install_metrics() -> Result<PrometheusHandle, metrics::SetRecorderError<impl Sized>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    super::overview::metrics::describe();
    crate::cluster::metrics::describe();
    Ok(handle)
}

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(health_page))
        .route("/readyz", get(ready_page))
}

/// Whether the server can take clients now, with the reason when it cannot: `/readyz`'s answer
/// and `ringchat_ready`'s, so that the gauge never says ready while the page says 503.
pub(crate) async fn readiness(admin: &Admin) -> Result<(), String> {
    match not_ready(admin) {
        Some(why) => Err(why),
        None => admin.ready_check.store_answers(admin).await,
    }
}

/// What needs no store call: the store takes writes, the node joined its cluster, and every
/// shard accepts connections on its listeners.
fn not_ready(admin: &Admin) -> Option<String> {
    if let Some(why) = admin.backend.health.failure() {
        return Some(format!("the store refuses writes: {why}"));
    }
    if let Some(why) = admin
        .cluster
        .as_deref()
        .and_then(crate::cluster::admin::not_ready)
    {
        return Some(why);
    }
    admin.facts.not_ready()
}

/// How long one answer of whether the store answers serves `/readyz` and `/metrics`: both are
/// open to anyone who reaches the listener, so a loop of probes or scrapes must cost the store
/// and the blocking threads (shared with logins and reads) at most one check per this time.
const READY_CHECK_CACHE: Duration = Duration::from_secs(1);

/// The store's last answer to the readiness check, and when it came. One check at a time: the
/// probes and scrapes that come meanwhile wait for its answer instead of starting their own.
#[derive(Default)]
pub(crate) struct ReadyCheck {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl ReadyCheck {
    /// Whether the store answers: the last answer if younger than `READY_CHECK_CACHE`, else a
    /// new one (asked on a blocking thread, bounded by the store's timeouts).
    async fn store_answers(&self, admin: &Admin) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < READY_CHECK_CACHE
        {
            return answer.clone();
        }
        metrics::counter!("ringchat_ready_checks_total").increment(1);
        let engine = Arc::clone(&admin.backend.ports.engine);
        let answer = match tokio::task::spawn_blocking(move || engine.reachable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the store does not answer: {e}")),
            Err(e) => Err(format!("the store does not answer: {e}")),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// Readiness: 503 with the reason while the server cannot take clients, or while a
/// networked store does not answer (`ReadyCheck`: at most `READY_CHECK_CACHE` old).
async fn ready_page(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    match readiness(&admin).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Liveness: a server whose store refuses writes is not alive (it is stopping, for its
/// supervisor to restart it).
async fn health_page(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    match admin.backend.health.failure() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store refuses writes: {why}\n"),
        ),
    }
}

async fn metrics_page(State(admin): State<Arc<Admin>>) -> String {
    (admin.on_scrape)();
    let online = admin.backend.sessions.read().online_users();
    metrics::gauge!("ringchat_online_users").set(online as f64);
    admin.backend.rooms.publish_metrics();
    let ready = readiness(&admin).await.is_ok();
    super::overview::metrics::publish(&admin, ready);
    let mut page = admin.prometheus.render();
    super::overview::metrics::render_extra(&admin, &mut page);
    page
}
