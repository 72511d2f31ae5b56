//! `GET/PATCH /api/config`: the effective configuration and its live keys;
//! `GET/PUT /api/security/ip-rules`: the IP allow / deny lists (live keys `security.allow`,
//! `security.deny`, changed through the same path as any other key).
//!
//! Validation, persistence and application are the binary's (`live::ConfigControl`): one set
//! of rules for `check-config`, `SIGHUP` and this API. Every change is audited here with its
//! old and new value.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::{AdminOnly, Operator, Viewer};
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody, ErrorCode};
use crate::live::{ConfigControl, ConfigRefusal, ConfigView, IpRulesView, KeyChange};

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(get_config, patch_config))
        .routes(routes!(get_ip_rules, put_ip_rules))
}

impl Admin {
    /// Serves `/api/config` and `/api/security/ip-rules` from `control`; without it they answer
    /// 503 (a server started without a configuration manager, as in some tests).
    pub fn with_config_control(mut self, control: Arc<dyn ConfigControl>) -> Self {
        self.config_control = Some(control);
        self
    }

    /// The admin listener speaks TLS: session cookies are marked `Secure`.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    fn control(&self) -> ApiResult<Arc<dyn ConfigControl>> {
        self.config_control.clone().ok_or_else(|| {
            ApiError::unavailable("this server has no runtime configuration manager", 0)
        })
    }
}

/// The changes `PATCH /api/config` made.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// Keys whose value changed, with the old and new value (empty if every value was already
    /// as asked).
    pub changed: Vec<KeyChange>,
}

/// The effective configuration: every section (secrets redacted), and per key its value,
/// where it comes from (default, file with its line, environment variable, overrides file)
/// and whether it can change without a restart.
#[utoipa::path(get, path = "/api/config", tag = "config",
    responses((status = 200, body = ConfigView), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn get_config(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
) -> ApiResult<Json<ConfigView>> {
    Ok(Json(admin.control()?.view()))
}

/// Changes live keys: `{"section.key": value, …}` (`null` drops a key's override). All or
/// nothing: validated with the same rules as `ringchat check-config`, persisted to the
/// overrides file, applied to the running server (shards and backend) before the answer, and
/// audited with the old and new value. A key that needs a restart, an unknown key (with the
/// closest known one) or a bad value is a 422.
#[utoipa::path(patch, path = "/api/config", tag = "config",
    request_body(content = Object, description = "`{\"section.key\": value}`, e.g. `{\"limits.messages_per_s_max\": 500}`"),
    responses((status = 200, body = Changed), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn patch_config(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Json<Changed>> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "no keys given: send {\"section.key\": value, …}",
        ));
    }
    let changes = body.into_iter().collect();
    let changed = apply(&admin, &op, changes).await?;
    Ok(Json(Changed { changed }))
}

/// The IP rules every shard applies at accept.
#[utoipa::path(get, path = "/api/security/ip-rules", tag = "config",
    responses((status = 200, body = IpRulesView), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn get_ip_rules(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
) -> ApiResult<Json<IpRulesView>> {
    Ok(Json(admin.control()?.ip_rules()))
}

/// Both IP lists, replaced whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRulesBody {
    /// Addresses or CIDR ranges (IPv4 or IPv6); empty: everyone not denied may connect.
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused at accept; a deny wins over an allow.
    pub deny: Vec<String>,
}

/// Replaces the IP allow and deny lists (the live keys `security.allow` and `security.deny`):
/// validated, persisted, applied on every shard before the answer (connections already open
/// stay), audited.
#[utoipa::path(put, path = "/api/security/ip-rules", tag = "config", request_body = IpRulesBody,
    responses((status = 200, body = IpRulesView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn put_ip_rules(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<IpRulesBody>,
) -> ApiResult<Json<IpRulesView>> {
    let changes = vec![
        ("security.allow".to_owned(), serde_json::json!(body.allow)),
        ("security.deny".to_owned(), serde_json::json!(body.deny)),
    ];
    apply(&admin, &op, changes).await?;
    Ok(Json(admin.control()?.ip_rules()))
}

/// Runs the change off the runtime's workers (it writes a file and waits for the shards),
/// then audits each changed key.
async fn apply(
    admin: &Admin,
    op: &Operator,
    changes: Vec<(String, serde_json::Value)>,
) -> ApiResult<Vec<KeyChange>> {
    let control = admin.control()?;
    let changed = tokio::task::spawn_blocking(move || control.patch(changes))
        .await
        .map_err(|e| ApiError::internal("applying the configuration", e))?
        .map_err(|refusal| match refusal {
            ConfigRefusal::Invalid(problems) => {
                ApiError::new(ErrorCode::Invalid, problems.join("; "))
            }
            ConfigRefusal::Failed(why) => ApiError::internal("applying the configuration", why),
        })?;
    for change in &changed {
        tracing::info!(key = %change.key, change = %change.describe(), by = %op.actor(), "configuration changed");
        admin
            .backend
            .audit
            .record_admin(
                op.audit("config.change")
                    .target(change.key.clone())
                    .detail(change.describe()),
            )
            .await;
    }
    Ok(changed)
}
