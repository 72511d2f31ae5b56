//! `GET /api/audit`: the audit log, newest first, paged.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::Viewer;
use super::error::{ApiQuery, ApiResult};
use super::page::{self, Page, PageQuery};

/// The longest a page waits for the entries queued before it to be stored.
const AUDIT_PAGE_FLUSH_MAX: std::time::Duration = std::time::Duration::from_secs(2);

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new().routes(routes!(audit_page))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: u64,
    /// `admin:NAME`, `key:NAME`, `cli:OS_USER`, `user:ID` or `system`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub from: String,
    pub detail: String,
}

/// The audit log: every admin change and users' security events, newest first.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(PageQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 401, body = super::error::ErrorBody)))]
async fn audit_page(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let before = page::numeric_cursor(q.cursor.as_deref())?.unwrap_or(u64::MAX);
    // Read-your-writes: an entry recorded before this request (an admin action just answered,
    // a login) is stored before the page is read; the writer's batching delays it 50 ms at most.
    // While the store is unavailable the writer holds its entries until it is back: the page
    // is then read without them (and the read most likely answers 503) rather than hang.
    let _ = tokio::time::timeout(AUDIT_PAGE_FLUSH_MAX, admin.backend.audit.flush()).await;
    let backend = Arc::clone(&admin.backend);
    // One more than asked tells whether another page follows.
    let mut rows =
        tokio::task::spawn_blocking(move || backend.audit.page(before, limit + 1)).await??;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(Json(Page {
        next_cursor: more
            .then(|| rows.last().map(|(id, _)| id.to_string()))
            .flatten(),
        items: rows
            .into_iter()
            .map(|(id, r)| AuditEntry {
                id,
                at_ms: r.at_ms,
                actor: r.actor,
                action: r.action,
                target: r.target,
                from: r.from,
                detail: r.detail,
            })
            .collect(),
    }))
}
