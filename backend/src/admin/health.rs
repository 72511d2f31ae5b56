//! `/metrics` (Prometheus), `/healthz` and `/readyz`: open to anyone who reaches the listener
//! (scrapers and supervisors carry no credentials); they show nothing about any user.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use super::Admin;

/// Installs the process-wide metrics recorder. Call once, before anything records.
pub fn install_metrics() -> Result<PrometheusHandle, metrics::SetRecorderError<impl Sized>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    describe_families();
    Ok(handle)
}

/// `# HELP` of every family the backend keeps in the metrics registry, each described once
/// (two parts describing one name would give half its series the wrong help; the gateway's
/// `stats` test checks). A description alone publishes nothing: the families of parts that are
/// off (push, files, backups, the cluster) show up only once they record.
pub fn describe_families() {
    super::overview::metrics::describe();
    crate::cluster::metrics::describe();
    crate::files::metrics::describe();
    crate::push::describe();
    crate::backup::server::describe();
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

/// The pause between one store check's end and the next one's start: `/readyz` and `/metrics`
/// are open to anyone who reaches the listener, so a loop of probes or scrapes must cost the
/// store and the blocking threads (shared with logins and reads) at most one check per this.
const READY_CHECK_CACHE: Duration = Duration::from_secs(1);

/// How long the store may take to answer a check: past it, it counts as not answering. The
/// check's thread is still waited for before the next check starts, so they never pile up.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// An `Ok` answer older than this counts as not ready: while the checks run, a new answer
/// comes at least every `READY_CHECK_CACHE` + `READY_CHECK_TIMEOUT`.
const READY_ANSWER_STALE: Duration = Duration::from_secs(5);

/// The checks stop once nobody has asked for this long (an idle server costs the store
/// nothing); longer than any sane scrape or probe interval, so those keep them running.
const READY_CHECK_IDLE: Duration = Duration::from_secs(300);

/// One answer, and when it came.
type Answer = Option<(Instant, Result<(), String>)>;

/// The store's last answer to the readiness check, kept by one background task (`checks`)
/// that runs while someone asks. Probes and scrapes read it; a caller that goes away cancels
/// nothing and starts nothing.
pub(crate) struct ReadyCheck {
    state: Arc<CheckState>,
}

struct CheckState {
    last: watch::Sender<Answer>,
    /// When someone last asked.
    asked: Mutex<Option<Instant>>,
    /// The checking task runs.
    running: AtomicBool,
}

impl Default for ReadyCheck {
    fn default() -> Self {
        Self {
            state: Arc::new(CheckState {
                last: watch::Sender::new(None),
                asked: Mutex::new(None),
                running: AtomicBool::new(false),
            }),
        }
    }
}

impl ReadyCheck {
    /// Whether the store answers, from the last answer. Only when there is none fresh (at
    /// start, or after `READY_CHECK_IDLE` without a caller) does it wait for the next, at most
    /// `READY_CHECK_TIMEOUT`; a store that stalls never holds a caller longer.
    async fn store_answers(&self, admin: &Admin) -> Result<(), String> {
        let state = &self.state;
        *lock(&state.asked) = Some(Instant::now());
        if !state.running.swap(true, Ordering::AcqRel) {
            let engine = Arc::downgrade(&admin.backend.ports.engine);
            tokio::spawn(checks(Arc::clone(state), engine));
        }
        let mut answers = state.last.subscribe();
        if let Some(answer) = settled(&answers.borrow_and_update()) {
            return answer;
        }
        let _ = tokio::time::timeout(READY_CHECK_TIMEOUT, answers.changed()).await;
        let last = answers.borrow();
        settled(&last).unwrap_or_else(|| match last.as_ref() {
            Some((at, _)) => Err(format!(
                "the store has not answered a check for {} s",
                at.elapsed().as_secs()
            )),
            None => Err("the store has not been checked yet".to_owned()),
        })
    }
}

/// An answer that holds now: a refusal of any age (a newer answer replaces it), or an `Ok`
/// younger than `READY_ANSWER_STALE`.
fn settled(last: &Answer) -> Option<Result<(), String>> {
    match last {
        Some((_, Err(why))) => Some(Err(why.clone())),
        Some((at, Ok(()))) if at.elapsed() < READY_ANSWER_STALE => Some(Ok(())),
        _ => None,
    }
}

/// The one checking task: one check at a time, `READY_CHECK_CACHE` apart, until nobody has
/// asked for `READY_CHECK_IDLE` (or the store is gone: it holds no reference to it between
/// checks, so it keeps no store open).
async fn checks(state: Arc<CheckState>, engine: Weak<dyn crate::store::StoreEngine>) {
    let asked_lately = || lock(&state.asked).is_some_and(|at| at.elapsed() < READY_CHECK_IDLE);
    loop {
        if !asked_lately() {
            state.running.store(false, Ordering::Release);
            // A caller between the test and the store saw it running and started nothing.
            if !asked_lately() || state.running.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let Some(store) = engine.upgrade() else {
            state.running.store(false, Ordering::Release);
            return;
        };
        metrics::counter!("ringchat_ready_checks_total").increment(1);
        let mut check = tokio::task::spawn_blocking(move || store.reachable());
        let answer = match tokio::time::timeout(READY_CHECK_TIMEOUT, &mut check).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(crate::store::StoreError::ReadOnly(why)))) => {
                Err(format!("the store refuses writes: {why}"))
            }
            Ok(Ok(Err(e))) => Err(format!("the store does not answer: {e}")),
            Ok(Err(e)) => Err(format!("the store does not answer: {e}")),
            Err(_) => Err(format!(
                "the store does not answer: no answer within {} ms",
                READY_CHECK_TIMEOUT.as_millis()
            )),
        };
        let hung = !check.is_finished();
        state.last.send_replace(Some((Instant::now(), answer)));
        if hung {
            // Its thread still waits on the store: the next check starts only after it ends.
            let _ = check.await;
        }
        tokio::time::sleep(READY_CHECK_CACHE).await;
    }
}

/// A lock held only for an assignment or a read, so a poisoned one is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Readiness: 503 with the reason while the server cannot take clients, or while a
/// networked store does not answer or takes no writes (`ReadyCheck`'s last answer).
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
