//! `GET /api/cluster/nodes`: the live nodes as this node sees them, by id, paged (the
//! overview's `cluster` part has only their count and totals).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::Viewer;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page, PageQuery};
use crate::cluster::NodeRecord;
use crate::cluster::config::NODE_ID_BYTES_MAX;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new().routes(routes!(cluster_nodes))
}

/// The live nodes in this node's view (this one included), by id; each with its addresses and
/// its load as it last published them. 404 when cluster mode is off.
#[utoipa::path(get, path = "/api/cluster/nodes", tag = "overview", params(PageQuery),
    responses((status = 200, body = Page<NodeRecord>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cluster_nodes(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<NodeRecord>>> {
    let Some(cluster) = admin.cluster.as_deref() else {
        return Err(ApiError::not_found(
            "this server is not a cluster node (cluster.enabled is false)",
        ));
    };
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    // The cursor is the last node id of the previous page.
    let after = q.cursor.as_deref().filter(|c| !c.is_empty());
    if after.is_some_and(|c| c.len() > NODE_ID_BYTES_MAX) {
        return Err(ApiError::bad_request(
            "cursor is not one this list gave out",
        ));
    }
    let (items, next_cursor) = crate::cluster::admin::nodes_page(&cluster.view(), after, limit);
    Ok(Json(Page { items, next_cursor }))
}
