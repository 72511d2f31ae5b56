//! `/api/invites`: registration invite codes for `accounts.registration = "invite"`. A code is
//! shown once, when made; the store keeps only its SHA-256. Bounded by `accounts.invites_max`
//! (used-up and expired ones make room), each by `accounts.invite_ttl_s_max` and
//! `accounts.invite_uses_max`. A create or revoke whose store write failed may have landed: it
//! is audited as "outcome unknown" (`operator_write.rs`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminOnly, Viewer};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page};
use super::{Admin, operator_write};
use crate::accounts::Refusal;
use crate::store::InviteRecord;
use crate::time::now_ms;

/// An invite's life when the operator does not say.
const INVITE_TTL_S_DEFAULT: u64 = 7 * 24 * 3600;
/// Bytes of an invite's note, at most.
const NOTE_BYTES_MAX: usize = 256;
/// Bytes of the list's `issuer` filter, at most (an actor is shorter).
const ISSUER_BYTES_MAX: usize = 256;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(list_invites, create_invite))
        .routes(routes!(revoke_invite))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInviteBody {
    /// Registrations the code allows (default 1, at most `accounts.invite_uses_max`).
    pub uses_max: Option<u32>,
    /// Seconds until it expires (default 7 days, at most `accounts.invite_ttl_s_max`).
    pub ttl_s: Option<u64>,
    /// For operators: whom it is for (at most 256 bytes).
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvite {
    #[serde(flatten)]
    pub invite: InviteView,
    /// The code to hand on; shown this once.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteView {
    pub id: u64,
    pub issuer: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub uses_max: u32,
    pub uses: u32,
    pub note: String,
    /// Not expired and not used up.
    pub usable: bool,
}

impl InviteView {
    fn of(r: InviteRecord, now: u64) -> Self {
        Self {
            usable: r.usable(now),
            id: r.id,
            issuer: r.issuer,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            uses_max: r.uses_max,
            uses: r.uses,
            note: r.note,
        }
    }
}

/// Issue an invite code.
#[utoipa::path(post, path = "/api/invites", tag = "invites", request_body = CreateInviteBody,
    responses((status = 201, body = CreatedInvite), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_invite(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<CreateInviteBody>,
) -> ApiResult<(StatusCode, Json<CreatedInvite>)> {
    let cfg = &admin.backend.settings.accounts;
    let uses_max = body.uses_max.unwrap_or(1);
    if !(1..=cfg.invite_uses_max).contains(&uses_max) {
        return Err(ApiError::invalid(format!(
            "uses_max must be between 1 and {}",
            cfg.invite_uses_max
        )));
    }
    let ttl_s = body
        .ttl_s
        .unwrap_or(INVITE_TTL_S_DEFAULT.min(cfg.invite_ttl_s_max));
    if !(1..=cfg.invite_ttl_s_max).contains(&ttl_s) {
        return Err(ApiError::invalid(format!(
            "ttl_s must be between 1 and {}",
            cfg.invite_ttl_s_max
        )));
    }
    if body.note.len() > NOTE_BYTES_MAX || !crate::text::no_controls(&body.note, false) {
        return Err(ApiError::invalid(format!(
            "note: at most {NOTE_BYTES_MAX} bytes, no control characters"
        )));
    }
    let now = now_ms();
    let issued = admin
        .backend
        .accounts
        .issue_invite(
            op.actor(),
            uses_max,
            now.saturating_add(ttl_s.saturating_mul(1000)),
            body.note,
        )
        .await;
    // The id is the store's: unknown when its write failed.
    let target = match &issued {
        Ok(Some((_, record))) => format!("invite:{}", record.id),
        _ => "invite".to_owned(),
    };
    operator_write::record(
        &admin,
        op.audit("invite.create").target(target),
        &issued,
        |issued| {
            issued
                .as_ref()
                .map(|_| format!("uses {uses_max}, ttl {ttl_s} s"))
        },
    )
    .await;
    let Some((code, record)) = issued.map_err(Refusal::from)? else {
        return Err(ApiError::conflict(format!(
            "{} usable invites exist (accounts.invites_max): revoke some first",
            cfg.invites_max
        )));
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvite {
            invite: InviteView::of(record, now),
            code,
        }),
    ))
}

/// The invite list's query: the one paging rule, and whose invites.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InviteQuery {
    /// Where the previous page ended (its `next_cursor`); absent for the first page.
    pub cursor: Option<String>,
    /// Items wanted (default 50); more than the server's `admin.page_items_max` are clamped.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// Only the invites of this issuer, as listed (`user:ID` for a user's, an operator's actor
    /// such as `admin:NAME` or `key:NAME`); at most 256 bytes.
    pub issuer: Option<String>,
}

/// Invites, newest first (codes are never shown again), all or one issuer's.
#[utoipa::path(get, path = "/api/invites", tag = "invites", params(InviteQuery),
    responses((status = 200, body = Page<InviteView>), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_invites(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<InviteQuery>,
) -> ApiResult<Json<Page<InviteView>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let before = page::numeric_cursor(q.cursor.as_deref())?.unwrap_or(u64::MAX);
    let issuer = q.issuer.filter(|i| !i.is_empty());
    if issuer.as_ref().is_some_and(|i| i.len() > ISSUER_BYTES_MAX) {
        return Err(ApiError::invalid(format!(
            "issuer: at most {ISSUER_BYTES_MAX} bytes"
        )));
    }
    let store = Arc::clone(&admin.backend.ports.account_admin);
    let mut rows = tokio::task::spawn_blocking(move || match issuer {
        None => store.invites_before(before, limit + 1),
        // Through the store's index by issuer: the page, not every stored invite.
        Some(issuer) => store.invites_of_issuer_before(&issuer, before, limit + 1),
    })
    .await??;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let now = now_ms();
    Ok(Json(Page {
        next_cursor: more
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten(),
        items: rows.into_iter().map(|r| InviteView::of(r, now)).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub id: u64,
}

/// Revoke an invite: its code registers nobody from now on.
#[utoipa::path(delete, path = "/api/invites/{id}", tag = "invites",
    params(("id" = u64, Path, description = "invite id")),
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn revoke_invite(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Revoked>> {
    let revoked = admin.backend.accounts.revoke_invite(id).await;
    operator_write::record(
        &admin,
        op.audit("invite.revoke").target(format!("invite:{id}")),
        &revoked,
        |found| found.then(String::new),
    )
    .await;
    if !revoked.map_err(Refusal::from)? {
        return Err(ApiError::not_found(format!("no invite {id}")));
    }
    Ok(Json(Revoked { id }))
}
