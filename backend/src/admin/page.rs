//! Paging, one rule for every admin list: `?cursor=&limit=`; the answer's `next_cursor` is
//! absent on the last page. Cursors are opaque strings to the caller.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Items in a page when the caller does not say.
pub const PAGE_ITEMS_DEFAULT: usize = 50;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the previous page ended (its `next_cursor`); absent for the first page.
    pub cursor: Option<String>,
    /// Items wanted, 1 to the server's `admin.page_items_max` (default 50).
    pub limit: Option<u32>,
}

/// A page of `T`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The number of items to return: the caller's `limit` within 1..=`max`.
pub fn limit(requested: Option<u32>, max: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(PAGE_ITEMS_DEFAULT.min(max)),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) if n as usize > max => {
            Err(ApiError::invalid(format!("limit must be at most {max}")))
        }
        Some(n) => Ok(n as usize),
    }
}

/// A cursor that is a number (an id to continue before or after).
pub fn numeric_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request("cursor is not one this list gave out"))
        })
        .transpose()
}
