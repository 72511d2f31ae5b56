//! The private admin HTTP listener (axum, on the backend's runtime, never on a shard):
//! Prometheus metrics and health, the admin API under `/api/` with its OpenAPI document at
//! `/api/openapi.json`, and the dashboard at `/`.
//!
//! Each part of the API is a module with a `routes()` returning an `OpenApiRouter`; handlers
//! carry `#[utoipa::path]`, so the document is generated from the code and cannot drift from
//! it. Every handler says who may call it by its extractor (`auth::Viewer` or
//! `auth::AdminOnly`), returns `error::ApiResult`, pages lists with `page`, and records every
//! change with `backend.audit.record_admin(op.audit("…"))`. A request that may change state
//! (not GET) runs as a task of its own (`detached.rs`, started by `listener.rs`), so a client
//! that goes away mid-request cannot stop a change between its write, its follow-ups and its
//! audit entry.

mod activity_api;
mod audit_api;
pub mod auth;
mod backups_api;
mod body_deadline;
pub mod cli;
mod cluster_api;
mod config_api;
mod dashboard;
mod detached;
pub mod error;
mod health;
mod logs_api;
mod logs_stream;
mod notify_api;
mod openapi;
mod operator_write;
pub mod overview;
pub mod page;
// Users, groups, invites (issue 12, users part).
mod groups_api;
mod invites;
// Also the status-only node's HTTP listener's (gateway `status_http.rs`).
pub mod http1;
mod listener;
mod refusal;
mod tls;
pub mod users;
// Also the status-only node's HTTP listener's (gateway `status_http.rs`).
pub mod write_stall;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use crate::logs::LogControl;
pub use health::{describe_families, install_metrics};
pub use tls::serve_tls;

use crate::config::AdminConfig;

/// How often the admin CLI's queued audit entries are moved into the audit log.
const CLI_AUDIT_IMPORT_INTERVAL: Duration = Duration::from_secs(2);

pub struct Admin {
    pub(crate) prometheus: PrometheusHandle,
    pub(crate) backend: Arc<crate::Backend>,
    /// Publishes the caller's own counters (the gateway's shard counters) into the registry;
    /// run once per scrape, never per frame.
    pub(crate) on_scrape: Box<dyn Fn() + Send + Sync>,
    pub(crate) config: AdminConfig,
    pub(crate) auth: auth::Auth,
    /// Session cookies are marked `Secure` (the listener speaks TLS).
    pub(crate) secure_cookies: bool,
    /// The logging pipeline (live tail, files, filter), when the binary installed one.
    pub(crate) logs: Option<Arc<crate::logs::Logs>>,
    /// The running configuration (`config_api.rs`), set by the binary.
    pub(crate) config_control: Option<Arc<dyn crate::live::ConfigControl>>,
    /// The gateway's connections and listeners, the build (`with_server_facts`).
    pub(crate) facts: Arc<dyn overview::ServerFacts>,
    /// The sampler's ring and the latency histogram (`overview/`).
    pub(crate) overview: overview::Overview,
    /// This node's cluster membership, in cluster mode (`with_cluster`).
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    /// `/readyz`'s last check of the store (`health.rs`).
    pub(crate) ready_check: health::ReadyCheck,
    /// The changes in flight, and whether new ones are taken (`detached.rs`).
    changes: Arc<detached::Changes>,
}

impl Admin {
    pub fn new(
        prometheus: PrometheusHandle,
        backend: Arc<crate::Backend>,
        on_scrape: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        let settings = &backend.settings;
        Self {
            config: settings.admin.clone(),
            auth: auth::Auth::new(settings, Arc::clone(&backend.live)),
            prometheus,
            on_scrape,
            secure_cookies: false,
            logs: None,
            config_control: None,
            facts: Arc::new(overview::NoGateway),
            overview: overview::Overview::new(settings.observe.history_seconds),
            cluster: None,
            ready_check: health::ReadyCheck::default(),
            changes: Arc::default(),
            backend,
        }
    }

    /// At shutdown's start: every change from now on is answered 503 with `Retry-After`
    /// (reads, health included, go on until the listener stops).
    pub fn refuse_changes(&self) {
        self.changes.refuse();
    }

    /// Before the final audit flush: waits until the changes in flight have ended, at most
    /// `within`, then cuts those still running (answered 503), so that none lands after the
    /// flush with its entry unwritten. Returns how many were cut.
    pub async fn finish_changes(&self, within: Duration) -> usize {
        self.changes.finish(within).await
    }

    /// Serves the logs API (`/api/logs…`) from this pipeline.
    pub fn with_logs(mut self, logs: Option<Arc<crate::logs::Logs>>) -> Self {
        self.logs = logs;
        self
    }

    /// What the gateway knows (connections, listeners, the build's commit).
    pub fn with_server_facts(mut self, facts: Arc<dyn overview::ServerFacts>) -> Self {
        self.facts = facts;
        self
    }
    /// Cluster mode: the overview, `/metrics` and `/readyz` show the cluster.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ringchat admin API",
        description = "The admin listener's API: every list is paged (`cursor`, `limit` → `next_cursor`); errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`. Authenticate with the dashboard's session cookie (plus `X-CSRF-Token` on changes) or `Authorization: Bearer <API key>`."
    ),
    components(schemas(error::ErrorBody, error::ErrorCode))
)]
struct ApiDoc;

/// The whole admin application: the API (with its document), health, metrics, the dashboard.
pub fn app(admin: Arc<Admin>) -> Router {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(audit_api::routes())
        .merge(logs_api::routes())
        .merge(users::routes())
        .merge(invites::routes())
        .merge(groups_api::routes())
        .merge(notify_api::routes())
        .merge(config_api::routes())
        .merge(overview::routes())
        .merge(cluster_api::routes())
        .merge(activity_api::routes())
        .merge(backups_api::routes())
        .split_for_parts();
    openapi::finish(&mut doc);
    let doc = Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    );
    Router::new()
        .merge(api)
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .route("/api/{*rest}", axum::routing::any(error::api_not_found))
        .merge(health::routes())
        .merge(dashboard::routes())
        // Last: it applies to the routes registered before it. axum keeps the `Allow` header.
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(admin.config.body_bytes_max))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(admin)
}

/// Headers every admin response carries: no framing, no sniffing, no referrer, and a content
/// policy that allows only the dashboard's own files.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    response
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, None, admin, shutdown).await
}

/// Serves the admin application, over TLS when `tls` is given, until `shutdown` resolves:
/// the one path plain and TLS listeners share, background tasks included.
async fn run(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    start_background(&admin);
    let config = admin.config.clone();
    let changes = Arc::clone(&admin.changes);
    listener::serve(listener, tls, app(admin), changes, &config, shutdown).await
}

/// What the admin listener runs beside its requests, whichever way it serves: the overview's
/// sampler (the overview's `now`, its history, the store's size in `/metrics`) and the import
/// of the admin CLI's audit entries.
fn start_background(admin: &Arc<Admin>) {
    tokio::spawn(import_cli_audit(Arc::clone(admin)));
    tokio::spawn(overview::sampler::run(Arc::clone(admin)));
}

/// Moves the admin CLI's queued audit entries into the audit log, now and then.
async fn import_cli_audit(admin: Arc<Admin>) {
    loop {
        let a = Arc::clone(&admin);
        match tokio::task::spawn_blocking(move || a.auth.credentials.peek_queued_audit()).await {
            Ok(Ok((records, bytes))) if !records.is_empty() => {
                for r in records {
                    admin.backend.audit.record_imported(r).await;
                }
                // The queue keeps them until the store has: a failed write imports them again
                // next time (an entry twice rather than none).
                if admin.backend.audit.flush_stored().await {
                    let a = Arc::clone(&admin);
                    let confirmed = tokio::task::spawn_blocking(move || {
                        a.auth.credentials.confirm_queued_audit(bytes)
                    })
                    .await;
                    if !matches!(confirmed, Ok(Ok(()))) {
                        tracing::warn!(
                            ?confirmed,
                            "the admin CLI's audit entries are stored but still queued; they will be imported again"
                        );
                    }
                } else {
                    tracing::warn!("the admin CLI's audit entries were not stored; retrying");
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "reading the admin CLI's audit entries"),
            Err(err) => tracing::warn!(%err, "reading the admin CLI's audit entries"),
        }
        tokio::time::sleep(CLI_AUDIT_IMPORT_INTERVAL).await;
    }
}
