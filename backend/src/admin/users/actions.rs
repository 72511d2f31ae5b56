//! Changes to users, admin role only, each audited with the operator as actor (a create, an
//! edit, a disable, an enable or a password set whose store write failed too, as "outcome
//! unknown": `operator_write.rs`). Each
//! goes through the path the client's own request takes (`accounts/operator.rs`, the profile
//! rules of `contacts/profiles.rs`), so an operator cannot make what a client could not.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ringchat_proto::v1::{self, KickReason};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{UserDetail, user_detail, user_id, user_record};
use crate::accounts::Refusal;
use crate::admin::auth::AdminOnly;
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody, OptionalJson};
use crate::admin::{Admin, operator_write};
use crate::messaging::operator::OperatorWriteError;
use crate::time::now_ms;

/// Bytes of an operator's reason kept, at most.
const REASON_BYTES_MAX: usize = 256;

/// The password an operator gave, or a random one (returned to show once).
fn password_or_generated(given: Option<String>) -> ApiResult<(String, Option<String>)> {
    match given {
        Some(p) => Ok((p, None)),
        None => {
            let p = crate::accounts::new_random_password()
                .map_err(|e| ApiError::internal("making a password", e))?;
            Ok((p.clone(), Some(p)))
        }
    }
}

fn reason(text: String) -> ApiResult<String> {
    if text.len() > REASON_BYTES_MAX || !crate::text::no_controls(&text, false) {
        return Err(ApiError::invalid(format!(
            "reason: at most {REASON_BYTES_MAX} bytes, no control characters"
        )));
    }
    Ok(text)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    pub username: String,
    /// Absent: a random one is made and returned once.
    pub password: Option<String>,
    #[serde(default)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub user_id: u64,
    pub username: String,
    /// The generated password, shown this once (absent when the operator chose it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Create a user (whatever `accounts.registration` says): the same rules for the name,
/// password and address as a client's Register.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserBody,
    responses((status = 201, body = CreatedUser), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn create_user(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let (password, generated) = password_or_generated(body.password)?;
    let created = (admin.backend.accounts)
        .create_by_operator(body.username.clone(), password, body.email)
        .await;
    // The id is the store's: unknown when its write failed, and the name says which account.
    let target = match &created {
        Ok(id) => format!("user:{id}"),
        Err(_) => format!("username:{}", body.username),
    };
    let entry = op.audit("user.create").target(target);
    operator_write::record(&admin, entry, &created, |_| {
        Some(format!("username {}", body.username))
    })
    .await;
    let id = created.map_err(Refusal::from)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user_id: id,
            username: body.username,
            password: generated,
        }),
    ))
}

/// Profile fields to change; absent ones are left as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditUserBody {
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub searchable: Option<bool>,
    pub hide_last_seen: Option<bool>,
}

/// Edit a user's profile, under the rules of the client's UpdateProfile.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", request_body = EditUserBody,
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = UserDetail), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn edit_user(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<EditUserBody>,
) -> ApiResult<Json<UserDetail>> {
    let id = user_id(id)?;
    // A profile is only ever written for an existing user.
    user_record(&admin, id).await?;
    let changed: Vec<&str> = [
        ("nickname", body.nickname.is_some()),
        ("avatar_url", body.avatar_url.is_some()),
        ("bio", body.bio.is_some()),
        ("searchable", body.searchable.is_some()),
        ("hide_last_seen", body.hide_last_seen.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    let detail = format!("fields {}", changed.join(","));
    let update = v1::UpdateProfile {
        nickname: body.nickname,
        avatar_url: body.avatar_url,
        bio: body.bio,
        searchable: body.searchable,
        hide_last_seen: body.hide_last_seen,
    };
    let a = Arc::clone(&admin);
    let written = tokio::task::spawn_blocking(move || {
        (a.backend.contacts).write_profile(&a.backend.ports, id, &update, now_ms())
    })
    .await
    .unwrap_or_else(|e| Err(OperatorWriteError::may_have_landed(Refusal::unavailable(e))));
    let entry = op.audit("user.edit").target(format!("user:{id}"));
    operator_write::record(&admin, entry, &written, |()| Some(detail)).await;
    written.map_err(Refusal::from)?;
    Ok(Json(user_detail(&admin, id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// Why, for other operators (at most 256 bytes).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub user_id: u64,
    /// Sessions closed by this change.
    pub sessions_kicked: u32,
    /// Tokens revoked by this change.
    pub tokens_revoked: u32,
    /// A generated password, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

fn done(user_id: u64, kicked: usize, revoked: usize, password: Option<String>) -> Json<Done> {
    Json(Done {
        user_id,
        sessions_kicked: u32::try_from(kicked).unwrap_or(u32::MAX),
        tokens_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        password,
    })
}

/// Disable a user: stored durably, every session kicked (reason ACCOUNT_DISABLED), and no
/// login by password or token until enabled. The body is optional.
#[utoipa::path(post, path = "/api/users/{id}/disable", tag = "users", request_body = DisableBody,
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn disable_user(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
    OptionalJson(body): OptionalJson<DisableBody>,
) -> ApiResult<Json<Done>> {
    let id = user_id(id)?;
    let why = reason(body.reason)?;
    let outcome = admin
        .backend
        .disable_user(id, op.actor(), why.clone())
        .await;
    let entry = op.audit("user.disable").target(format!("user:{id}"));
    operator_write::record(&admin, entry, &outcome, |found| found.map(|_| why)).await;
    let kicked = outcome
        .map_err(Refusal::from)?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    Ok(done(id, kicked, 0, None))
}

/// Enable a disabled user again (enabling an enabled one changes nothing).
#[utoipa::path(post, path = "/api/users/{id}/enable", tag = "users",
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn enable_user(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Done>> {
    let id = user_id(id)?;
    let enabled = admin.backend.enable_user(id).await;
    let entry = op.audit("user.enable").target(format!("user:{id}"));
    operator_write::record(&admin, entry, &enabled, |found| found.then(String::new)).await;
    if !enabled.map_err(Refusal::from)? {
        return Err(ApiError::not_found(format!("no user {id}")));
    }
    Ok(done(id, 0, 0, None))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KickBody {
    /// Only this device's sessions; absent: every session of the user.
    pub device_id: Option<String>,
}

/// Close a user's sessions (all, or one device's) with reason KICKED_BY_OPERATOR; the user may
/// log in again. The body is optional.
#[utoipa::path(post, path = "/api/users/{id}/kick", tag = "users", request_body = KickBody,
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn kick_user(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
    OptionalJson(body): OptionalJson<KickBody>,
) -> ApiResult<Json<Done>> {
    let id = user_id(id)?;
    if body.device_id.as_ref().is_some_and(|d| {
        d.len() > crate::accounts::DEVICE_ID_BYTES_MAX || !crate::text::no_controls(d, false)
    }) {
        return Err(ApiError::invalid(format!(
            "device_id: at most {} bytes, no control characters",
            crate::accounts::DEVICE_ID_BYTES_MAX
        )));
    }
    user_record(&admin, id).await?;
    let kicked = admin
        .backend
        .kick_user(id, body.device_id.as_deref(), KickReason::KickedByOperator)
        .await;
    let detail = body
        .device_id
        .map_or_else(|| "every device".to_owned(), |d| format!("device {d}"));
    admin
        .backend
        .audit
        .record_admin(
            op.audit("user.kick")
                .target(format!("user:{id}"))
                .detail(format!("{detail}, {kicked} sessions")),
        )
        .await;
    Ok(done(id, kicked, 0, None))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordBody {
    /// The new password; absent: a random one, returned once.
    pub password: Option<String>,
}

/// Set a new password: every token revoked and every session kicked (as when the user
/// changes it). The body is optional.
#[utoipa::path(post, path = "/api/users/{id}/reset-password", tag = "users",
    request_body = ResetPasswordBody, params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn reset_password(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(id): ApiPath<u64>,
    OptionalJson(body): OptionalJson<ResetPasswordBody>,
) -> ApiResult<Json<Done>> {
    let id = user_id(id)?;
    let (password, generated) = password_or_generated(body.password)?;
    let outcome = admin.backend.set_password_by_operator(id, password).await;
    let entry = op.audit("user.reset_password").target(format!("user:{id}"));
    let chosen = if generated.is_some() {
        "random password"
    } else {
        "password chosen by the operator"
    };
    operator_write::record(&admin, entry, &outcome, |found| {
        found.map(|_| chosen.to_owned())
    })
    .await;
    let (revoked, kicked) = outcome
        .map_err(Refusal::from)?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    Ok(done(id, kicked, revoked, generated))
}
