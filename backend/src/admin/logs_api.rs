//! `/api/logs`: the live filter (`GET`/`PUT /api/logs/filter`), a search over the retained
//! files (`GET /api/logs`, newest first, paged, bounded work per request), an export of the
//! matching lines as a download (`GET /api/logs/export`), and the live tail
//! (`GET /api/logs/stream`, in `logs_stream.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::{AdminOnly, Viewer};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use super::page;
use crate::logs::filter::LineFilter;
use crate::logs::line::{LogLine, Severity, timestamp};
use crate::logs::search::{self, Cursor, ExportEnd};
use crate::logs::{FILTER_BYTES_MAX, Logs};

/// Bytes per chunk of an export's body.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks an export reads ahead of the client, at most.
const EXPORT_CHUNKS_AHEAD: usize = 4;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(get_filter, put_filter))
        .routes(routes!(search_logs))
        .routes(routes!(export_logs))
        .routes(routes!(super::logs_stream::stream_logs))
}

/// The logging pipeline, or why the API cannot serve it.
pub(super) fn logs(admin: &Admin) -> ApiResult<&Arc<Logs>> {
    admin.logs.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "this process has no log pipeline to serve",
        )
    })
}

/// The files' directory, or a 404 when files are off.
fn files_dir(logs: &Logs) -> ApiResult<std::path::PathBuf> {
    logs.dir.clone().ok_or_else(|| {
        ApiError::not_found("no log files are written (log.file = false, or the directory could not be created at start)")
    })
}

/// The base of `retry_after_ms` when `log.scans_max` searches and exports run (a search ends
/// within seconds).
const SCANS_FULL_RETRY_AFTER_MS: u64 = 1_000;

/// A slot for a search or an export (`Logs::scans`), or 503 when `log.scans_max` run already.
fn scan_slot(scans: &Arc<tokio::sync::Semaphore>) -> ApiResult<OwnedSemaphorePermit> {
    Arc::clone(scans).try_acquire_owned().map_err(|_| {
        ApiError::busy(
            "as many log searches and exports run as log.scans_max allows; try again shortly",
            SCANS_FULL_RETRY_AFTER_MS,
        )
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogFilterInfo {
    /// The filter in force (`tracing` directives, e.g. `info,fjall=warn`).
    pub filter: String,
    /// The filter the server started with (configuration or `RINGCHAT_LOG`).
    pub initial: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLogFilter {
    /// Directives: a level (`info`), and `target=level` pairs (`ringchat_backend::admin=debug`),
    /// comma-separated; at most 1024 bytes.
    pub filter: String,
}

/// The live log filter.
#[utoipa::path(get, path = "/api/logs/filter", tag = "logs",
    responses((status = 200, body = LogFilterInfo), (status = 401, body = ErrorBody)))]
async fn get_filter(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
) -> ApiResult<Json<LogFilterInfo>> {
    let logs = logs(&admin)?;
    Ok(Json(LogFilterInfo {
        filter: logs.control.filter(),
        initial: logs.initial_filter.clone(),
    }))
}

/// Changes the log filter at once (files, console and live tail), without a restart; not kept
/// across restarts (`PATCH /api/config` with `log.filter` is). Audited.
#[utoipa::path(put, path = "/api/logs/filter", tag = "logs", request_body = SetLogFilter,
    responses((status = 200, body = LogFilterInfo), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_filter(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<SetLogFilter>,
) -> ApiResult<Json<LogFilterInfo>> {
    let logs = logs(&admin)?;
    if body.filter.len() > FILTER_BYTES_MAX {
        return Err(ApiError::invalid(format!(
            "the filter is longer than {FILTER_BYTES_MAX} bytes"
        )));
    }
    let old = logs.control.filter();
    logs.control
        .set_filter(&body.filter)
        .map_err(ApiError::invalid)?;
    tracing::info!(operator = %op.actor(), from = %old, to = %body.filter, "log filter changed");
    admin
        .backend
        .audit
        .record_admin(
            op.audit("log.filter_set")
                .target("log.filter")
                .detail(format!("{old} -> {}", body.filter)),
        )
        .await;
    Ok(Json(LogFilterInfo {
        filter: logs.control.filter(),
        initial: logs.initial_filter.clone(),
    }))
}

/// Which lines: shared by the search and the export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// This level or a more severe one: `trace`, `debug`, `info`, `warn`, `error`.
    pub level: Option<String>,
    /// The target (module path) starts with this, e.g. `ringchat_backend::accounts`.
    pub target: Option<String>,
    /// The message or a field contains this, ignoring case (at most 256 bytes).
    pub q: Option<String>,
    /// Lines at or after this time (RFC 3339, e.g. `2026-12-02T10:00:00Z`).
    pub since: Option<String>,
    /// Lines at or before this time (RFC 3339).
    pub until: Option<String>,
    /// Where the previous page ended (its `next_cursor`). Search only.
    pub cursor: Option<String>,
    /// Lines wanted, 1 to `admin.page_items_max` (default 50). Search only.
    pub limit: Option<u32>,
}

impl SearchQuery {
    fn filter(&self) -> ApiResult<LineFilter> {
        LineFilter::parse(
            self.level.as_deref(),
            self.target.as_deref(),
            self.q.as_deref(),
            self.since.as_deref(),
            self.until.as_deref(),
        )
        .map_err(ApiError::invalid)
    }
}

/// A page of log lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// Newest first.
    pub items: Vec<LogLine>,
    /// Pass as `cursor` to go on; absent when every retained file has been read. A page may
    /// hold fewer than `limit` lines (even none) and still have a cursor: the request read its
    /// budget of bytes (`log.search_scan_bytes_max`) first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Bytes of log lines this request read.
    pub scanned_bytes: u64,
}

/// Searches the retained log files, newest first.
#[utoipa::path(get, path = "/api/logs", tag = "logs", params(SearchQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn search_logs(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<LogPage>> {
    let logs = logs(&admin)?;
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let filter = q.filter()?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            Cursor::parse(c)
                .ok_or_else(|| ApiError::bad_request("cursor is not one this list gave out"))
        })
        .transpose()?;
    let dir = files_dir(logs)?;
    let slot = scan_slot(&logs.scans)?;
    let budget = logs.config.search_scan_bytes_max;
    let found = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        search::search(&dir, &filter, cursor, limit, budget)
    })
    .await?
    .map_err(|e| ApiError::internal("reading the log files", e))?;
    Ok(Json(LogPage {
        items: found.lines,
        next_cursor: found.next.map(|c| c.to_string()),
        scanned_bytes: found.scanned_bytes,
    }))
}

/// Downloads the matching lines of the retained files, oldest first, as JSON lines
/// (`Content-Disposition: attachment`). Streamed; stops after `log.export_bytes_max` bytes,
/// ending then with a line that says so. Ends after `log.export_duration_max_s` however far it
/// got, the download then incomplete (the body fails). The scan ends when its client goes
/// away, and at the first line well past `until` (10 s: the files' time order slack).
#[utoipa::path(get, path = "/api/logs/export", tag = "logs", params(SearchQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = String,
               description = "JSON lines, one log event each"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn export_logs(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Response> {
    let logs = logs(&admin)?;
    if q.cursor.is_some() || q.limit.is_some() {
        return Err(ApiError::bad_request(
            "the export takes no cursor or limit: it sends every matching line",
        ));
    }
    let filter = q.filter()?;
    let dir = files_dir(logs)?;
    let slot = scan_slot(&logs.scans)?;
    let bytes_max = logs.config.export_bytes_max;
    let duration_max = Duration::from_secs(logs.config.export_duration_max_s);
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(EXPORT_CHUNKS_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let deadline = Instant::now() + duration_max;
        // Waits for room until the export's deadline at most. A client that stops reading is
        // dropped sooner by the listener (`admin.write_stall_timeout_ms`), which closes the
        // channel; either way the slot comes back.
        let send = |piece: Piece| {
            runtime.block_on(async {
                let room = tokio::time::timeout_at(deadline.into(), tx.send(piece));
                matches!(room.await, Ok(Ok(())))
            })
        };
        // The body holds the receiver: a client that went away dropped it.
        let gone = || tx.is_closed();
        let end = search::export(
            &dir,
            &filter,
            bytes_max,
            EXPORT_CHUNK_BYTES,
            deadline,
            gone,
            |chunk| send(Piece::Lines(Bytes::from(chunk))),
        );
        let ended = match end {
            Ok(ExportEnd::Complete) => send(Piece::End),
            Ok(ExportEnd::Cut) => {
                send(Piece::Lines(Bytes::from(truncation_note(bytes_max)))) && send(Piece::End)
            }
            Ok(ExportEnd::Stopped) => false,
            Err(err) => {
                tracing::warn!(%err, "log export: reading the log files failed");
                return;
            }
        };
        if !ended {
            tracing::info!(
                duration_max_s = duration_max.as_secs(),
                "log export stopped: its client went away or did not read it within log.export_duration_max_s"
            );
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Piece::Lines(lines)) => Some((Ok(lines), Some(rx))),
            Some(Piece::End) => None,
            // Ended without its end: the body fails, so the download shows as incomplete.
            None => Some((
                Err(std::io::Error::other("the log export stopped early")),
                None,
            )),
        }
    }));
    let stamp = timestamp(SystemTime::now());
    let name = format!(
        "ringchat-logs-{}.jsonl",
        stamp[..19].replace([':', '-'], "")
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .map_err(|e| ApiError::internal("the export's file name", e))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// What an export's reader thread hands to its body.
enum Piece {
    Lines(Bytes),
    /// Every line was sent: without it the body ends with an error.
    End,
}

/// The last line of an export cut at `log.export_bytes_max`.
fn truncation_note(bytes_max: u64) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    fields.insert("export_bytes_max".into(), bytes_max.into());
    let note = LogLine {
        ts: timestamp(SystemTime::now()),
        level: Severity::Warn,
        target: "ringchat::logs::export".into(),
        thread: None,
        msg: "the export stopped at log.export_bytes_max; narrow the filter or the time range for the rest".into(),
        fields,
    };
    let mut line = note.to_json(usize::MAX).into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scans_answer_a_jittered_retry_after() {
        let scans = Arc::new(tokio::sync::Semaphore::new(0));
        crate::retry_after::assert_jittered(SCANS_FULL_RETRY_AFTER_MS, || {
            scan_slot(&scans).err().unwrap().retry_after_ms.unwrap()
        });
    }
}
