//! `GET /api/overview` (the server now: connections, rates, latency, CPU, memory, store,
//! uptime, version) and `GET /api/overview/series` (the last seconds, for the charts). Both
//! read what the sampler (`sampler.rs`) computed once a second; the totals are read live.

mod disk;
pub mod facts;
pub mod metrics;
pub(crate) mod procfs;
pub mod sampler;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::disk::StoreUsage;
use self::sampler::Sample;
use super::Admin;
use super::auth::Viewer;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};

pub use self::facts::{Connections, NoGateway, ServerFacts, Transports};
pub use self::sampler::Overview;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(series))
}

/// Counts since the server started, read live (a script can take differences).
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub messages_stored: u64,
    pub deliveries: u64,
    pub logins: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewReply {
    pub version: String,
    /// The git commit of the build, or "unknown".
    pub commit: String,
    pub started_at_ms: u64,
    pub uptime_s: u64,
    pub shards: usize,
    pub online_users: usize,
    pub totals: Totals,
    pub store: StoreUsage,
    /// The newest one-second sample; absent in the server's first second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<Sample>,
    /// Seconds of samples `GET /api/overview/series` can return.
    pub history_seconds: usize,
    /// Cluster mode: the live nodes and their load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::admin::ClusterOverview>,
}

/// The server now.
#[utoipa::path(get, path = "/api/overview", tag = "overview",
    responses((status = 200, body = OverviewReply), (status = 401, body = ErrorBody)))]
async fn overview(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
) -> ApiResult<Json<OverviewReply>> {
    let o = &admin.backend.observe;
    let now = admin.overview.latest().map(|s| (*s).clone());
    Ok(Json(OverviewReply {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: admin.facts.commit().to_owned(),
        started_at_ms: o.started_ms,
        uptime_s: o.started.elapsed().as_secs(),
        shards: admin.backend.shards.len(),
        online_users: admin.backend.sessions.read().online_users(),
        totals: Totals {
            messages_stored: o.messages.load(Relaxed),
            deliveries: o.deliveries.load(Relaxed),
            logins: o.logins.load(Relaxed),
        },
        store: admin.overview.store(),
        now,
        history_seconds: admin.overview.history_seconds(),
        cluster: admin
            .cluster
            .as_deref()
            .map(crate::cluster::admin::overview),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// The newest this many seconds, 1 to `observe.history_seconds` (default: all kept).
    pub seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesReply {
    pub interval_ms: u64,
    /// Oldest first, one a second.
    pub samples: Vec<Sample>,
}

/// The last seconds of samples, for charts. Bounded by `observe.history_seconds`, so it is
/// one answer, not a paged list.
#[utoipa::path(get, path = "/api/overview/series", tag = "overview", params(SeriesQuery),
    responses((status = 200, body = SeriesReply), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn series(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> ApiResult<Json<SeriesReply>> {
    let max = admin.overview.history_seconds();
    let seconds = match q.seconds {
        None => max,
        Some(s) if s == 0 || s as usize > max => {
            return Err(ApiError::invalid(format!(
                "seconds must be between 1 and {max}"
            )));
        }
        Some(s) => s as usize,
    };
    Ok(Json(SeriesReply {
        interval_ms: 1000,
        samples: admin
            .overview
            .series(seconds)
            .into_iter()
            .map(|s| (*s).clone())
            .collect(),
    }))
}
