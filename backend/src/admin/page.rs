//! Paging, one rule for every admin list: `?cursor=&limit=`; the answer's `next_cursor` is
//! absent on the last page. Cursors are opaque strings to the caller.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Items in a page when the caller does not say.
pub const PAGE_ITEMS_DEFAULT: usize = 50;
/// The largest `limit` a request may name (the largest `admin.page_items_max` allows).
pub const LIMIT_MAX: u32 = 10_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the previous page ended (its `next_cursor`); absent for the first page.
    pub cursor: Option<String>,
    /// Items wanted (default 50); more than the server's `admin.page_items_max` are clamped.
    #[param(minimum = 1, maximum = 10000)]
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

/// The number of items to return: the caller's `limit`, clamped to `max` (as the chat
/// protocol's pages are); 0 is refused.
pub fn limit(requested: Option<u32>, max: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(PAGE_ITEMS_DEFAULT.min(max)),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) if n > LIMIT_MAX => Err(ApiError::invalid(format!(
            "limit must be at most {LIMIT_MAX}"
        ))),
        Some(n) => Ok((n as usize).min(max)),
    }
}

/// A cursor that is a number (an id to continue before or after); empty means none.
pub fn numeric_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request("cursor is not one this list gave out"))
        })
        .transpose()
}
