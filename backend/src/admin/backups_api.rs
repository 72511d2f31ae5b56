//! `POST /api/backups` (write a backup now) and `GET /api/backups` (the backups in
//! `backup.dir`, newest first, paged).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::{AdminOnly, Viewer};
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page, PageQuery};
use crate::backup::BackupError;
use crate::backup::archive::Manifest;
use crate::backup::server::Taken;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new().routes(routes!(create_backup, list_backups))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupPart {
    pub part: String,
    pub records: u64,
    /// The part's order-independent checksum, hex.
    pub checksum: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupInfo {
    /// The backup's directory name under `backup.dir`.
    pub name: String,
    pub created_ms: u64,
    pub records: u64,
    pub parts: Vec<BackupPart>,
    /// The files of local file storage in the backup; absent when files are on S3 (the
    /// bucket's versioning and replication are their backup) or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BackupFiles>,
    /// The server's state from the data dir in the backup (live configuration changes,
    /// operators and API keys, activity history); absent in backups written before it was
    /// kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<BackupState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupState {
    /// Files (`config.overrides.toml`, `admin/credentials.json`, `admin/cli-audit.jsonl`,
    /// `activity/…`).
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupFiles {
    /// Storage objects (blobs, file records, thumbnails, index entries, reference markers).
    pub objects: u64,
    pub bytes: u64,
    /// Blobs hard-linked from the previous backup rather than copied.
    pub linked: u64,
}

fn info(name: String, m: Manifest) -> BackupInfo {
    BackupInfo {
        name,
        created_ms: m.created_ms,
        records: m.records(),
        files: m.files.map(|f| BackupFiles {
            objects: f.objects,
            bytes: f.bytes,
            linked: f.linked,
        }),
        state: m.state.map(|s| BackupState {
            files: s.files.len() as u64,
            bytes: s.bytes(),
        }),
        parts: m
            .parts
            .into_iter()
            .map(|p| BackupPart {
                part: p.part.name().to_owned(),
                records: p.records,
                checksum: p.checksum,
            })
            .collect(),
    }
}

/// The base of `retry_after_ms` while another backup is being written (one takes seconds to
/// minutes).
const BACKUP_RUNNING_RETRY_AFTER_MS: u64 = 5_000;

fn api_error(err: BackupError) -> ApiError {
    match err {
        BackupError::Spec(m) => ApiError::conflict(m),
        BackupError::NotEmpty(m) => ApiError::busy(m, BACKUP_RUNNING_RETRY_AFTER_MS),
        BackupError::Store(e) => e.into(),
        other => ApiError::internal("the backup", other),
    }
}

/// What `POST /api/backups` answers: the backup written, and what its pruning did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBackup {
    #[serde(flatten)]
    pub backup: BackupInfo,
    /// Old backups deleted to keep `backup.keep`.
    pub deleted: Vec<String>,
    /// Why old backups were not all deleted, when they were not (the new backup is written
    /// all the same); absent when pruning went well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Write a backup of the store now, from one consistent snapshot, while the server keeps
/// serving; it goes under `backup.dir` and the oldest beyond `backup.keep` are deleted (a
/// backup written whose pruning failed is still a 201, with a `warning`).
#[utoipa::path(post, path = "/api/backups", tag = "backups",
    responses((status = 201, body = CreatedBackup), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_backup(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
) -> ApiResult<(StatusCode, Json<CreatedBackup>)> {
    let backend = &admin.backend;
    let Taken {
        name,
        manifest,
        pruned,
    } = backend
        .backups
        .take(Arc::clone(&backend.ports.engine))
        .await
        .map_err(api_error)?;
    let warning = pruned
        .failed
        .map(|err| format!("old backups were not all deleted (backup.keep): {err}"));
    let mut detail = format!("{} records", manifest.records());
    if !pruned.deleted.is_empty() {
        detail.push_str(&format!("; deleted {}", pruned.deleted.join(", ")));
    }
    if let Some(warning) = &warning {
        detail.push_str(&format!("; {warning}"));
    }
    backend
        .audit
        .record_admin(
            op.audit("backup.create")
                .target(format!("backup:{name}"))
                .detail(detail),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedBackup {
            backup: info(name, manifest),
            deleted: pruned.deleted,
            warning,
        }),
    ))
}

/// The complete backups in `backup.dir`, newest first.
#[utoipa::path(get, path = "/api/backups", tag = "backups", params(PageQuery),
    responses((status = 200, body = Page<BackupInfo>), (status = 401, body = ErrorBody)))]
async fn list_backups(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<BackupInfo>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let all = admin.backend.backups.list().await.map_err(api_error)?;
    // Names sort by time; the cursor is the last name of the previous page.
    let after = q.cursor.filter(|c| !c.is_empty());
    let mut rows: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| after.as_ref().is_none_or(|c| name < c))
        .take(limit + 1)
        .collect();
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(Json(Page {
        next_cursor: more.then(|| rows.last().map(|(n, _)| n.clone())).flatten(),
        items: rows.into_iter().map(|(n, m)| info(n, m)).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_already_running_answers_a_jittered_retry_after() {
        crate::retry_after::assert_jittered(BACKUP_RUNNING_RETRY_AFTER_MS, || {
            api_error(BackupError::NotEmpty(
                "a backup is being written now".into(),
            ))
            .retry_after_ms
            .unwrap()
        });
    }
}
