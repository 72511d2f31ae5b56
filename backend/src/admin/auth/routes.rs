//! `/api/session` (the dashboard's login) and `/api/keys` (API keys for scripts).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::credentials::{self, ApiKey, CREDENTIALS_MAX};
use super::{AdminOnly, Role, SESSION_COOKIE, Via, Viewer};
use crate::admin::Admin;
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::admin::page::{self, Page, PageQuery};
use crate::throttle::ThrottleKey;

/// The actor of a failed dashboard login whose name is no operator's.
pub const UNKNOWN_OPERATOR: &str = "admin:(unknown name)";

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(login, whoami, logout))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    pub operator: String,
    pub role: Role,
    /// `session` or `api_key`.
    pub via: String,
    /// Send as `X-CSRF-Token` with every change made with this session (absent for API keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// Bytes of a password the admin login reads, at most (argon2 work is bounded by it).
const ADMIN_PASSWORD_BYTES_MAX: usize = 1_024;

/// Log in to the dashboard: sets the session cookie (HttpOnly, SameSite=Strict) and returns
/// the CSRF token. Failed attempts are throttled per name, per address and per IPv6 /48.
#[utoipa::path(post, path = "/api/session", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = SessionInfo), (status = 401, body = crate::admin::error::ErrorBody),
              (status = 429, body = crate::admin::error::ErrorBody)))]
async fn login(
    State(admin): State<Arc<Admin>>,
    axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<std::net::SocketAddr>,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let auth = &admin.auth;
    // The chat login's rule for the client's keys (`ThrottleKey::client`): its address, and
    // for IPv6 its /48 too, whose 65,536 /64s would each get an allowance of their own.
    let keys: Vec<ThrottleKey> = std::iter::once(ThrottleKey::Account(body.username.clone()))
        .chain(ThrottleKey::client(from.ip()))
        .collect();
    let throttled = |now| {
        keys.iter()
            .filter_map(|k| auth.throttle.wait_for(k, now))
            .max()
            .map(|wait| ApiError::throttled(wait.as_millis().max(1) as u64))
    };
    if let Some(refused) = throttled(Instant::now()) {
        return Err(refused);
    }
    if body.password.len() > ADMIN_PASSWORD_BYTES_MAX || body.username.len() > 256 {
        return Err(ApiError::invalid("username or password too long"));
    }
    let _permit = auth
        .hashing
        .acquire()
        .await
        .map_err(|e| ApiError::internal("the admin login's hashing permit", e))?;
    // Checked again: a failure may have been recorded while this request waited.
    let now = Instant::now();
    if let Some(refused) = throttled(now) {
        return Err(refused);
    }
    let credentials = auth
        .credentials
        .current()
        .map_err(|e| ApiError::internal("reading the admin credentials", e))?;
    let user = credentials.user(&body.username).cloned();
    // A failed login names the operator only if one has that name: what was typed may be a
    // password in the wrong field, and logs and audit are read by every viewer.
    let tried = crate::audit::failed_login_actor(
        user.as_ref().map(|u| format!("admin:{}", u.name)),
        UNKNOWN_OPERATOR,
    );
    let accounts_cfg = admin.backend.settings.accounts.clone();
    let password = body.password;
    // `None`: refused; `Some(rehashed)`: verified, and the password hashed again when the
    // stored hash was made with other parameters than today's (under the same permit).
    let verified = tokio::task::spawn_blocking(move || match &user {
        Some(u) => {
            if !crate::accounts::verify_password(&u.password_hash, &password) {
                return None;
            }
            Some(
                crate::accounts::needs_rehash(&u.password_hash, &accounts_cfg)
                    .then(|| crate::accounts::hash_password(&accounts_cfg, &password).ok())
                    .flatten(),
            )
        }
        None => {
            // The same work as a real check, so the answer's timing does not tell names apart.
            let _ = crate::accounts::hash_password(&accounts_cfg, &password);
            None
        }
    })
    .await?;
    let audit = &admin.backend.audit;
    let Some(rehashed) = verified else {
        tracing::warn!(operator = %tried, %from, "admin login failed");
        for key in keys {
            auth.throttle.record_failure(key, Instant::now());
        }
        audit
            .record_admin(crate::audit::Entry::new(tried, "admin.login_failed").from(from))
            .await;
        return Err(ApiError::unauthenticated("wrong username or password"));
    };
    for key in &keys {
        auth.throttle.record_success(key);
    }
    let user = credentials.user(&body.username).expect("verified above");
    let password_hash = match rehashed {
        Some(new_hash) => store_rehash(auth, &user.name, &user.password_hash, new_hash),
        None => user.password_hash.clone(),
    };
    let (id, session) = auth
        .sessions
        .start(&user.name, &password_hash, now)
        .map_err(|e| ApiError::internal("starting a session", e))?;
    audit
        .record_admin(
            crate::audit::Entry::new(format!("admin:{}", user.name), "admin.login").from(from),
        )
        .await;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        auth.sessions.ttl().as_secs(),
        if admin.secure_cookies { "; Secure" } else { "" }
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("the cookie", e))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((
        headers,
        Json(SessionInfo {
            operator: user.name.clone(),
            role: user.role,
            via: "session".into(),
            csrf_token: Some(session.csrf_token),
        }),
    )
        .into_response())
}

/// Stores `new_hash` (the verified password hashed with today's argon2 parameters) over the
/// operator's `verified` hash, so that operators' hashes converge to the current parameters
/// as the chat users' do (`accounts/rehash.rs`): an old, cheaper hash verified faster than an
/// unknown name's dummy hash, which told names apart. Only over `verified`: a password
/// replaced meanwhile stays. Returns the hash the new session is bound to (a session ends when
/// its operator's stored hash is no longer the one it began with): the new one once stored,
/// else the verified one (a failure is logged; the next login tries again).
fn store_rehash(auth: &super::Auth, name: &str, verified: &str, new_hash: String) -> String {
    let stored = auth.credentials.update(|data| {
        let Some(user) = data.users.iter_mut().find(|u| u.name == name) else {
            return Ok::<_, std::io::Error>(false);
        };
        if user.password_hash != verified {
            return Ok(false);
        }
        user.password_hash.clone_from(&new_hash);
        Ok(true)
    });
    match stored {
        Ok(true) => {
            metrics::counter!("ringchat_password_rehashes_total").increment(1);
            tracing::info!(
                operator = name,
                "operator password hashed again with the configured argon2 parameters"
            );
            new_hash
        }
        Ok(false) => verified.to_owned(),
        Err(err) => {
            tracing::warn!(operator = name, %err, "operator password rehash failed; the next login tries again");
            verified.to_owned()
        }
    }
}

/// Who am I: the operator behind this session or API key (and the session's CSRF token).
#[utoipa::path(get, path = "/api/session", tag = "auth",
    responses((status = 200, body = SessionInfo), (status = 401, body = crate::admin::error::ErrorBody)))]
async fn whoami(
    State(admin): State<Arc<Admin>>,
    Viewer(op): Viewer,
    headers: HeaderMap,
) -> ApiResult<Json<SessionInfo>> {
    let csrf_token = match op.via {
        Via::ApiKey => None,
        Via::Session => super::session_cookie(&headers)
            .and_then(|id| admin.auth.sessions.get(id, Instant::now()))
            .map(|s| s.csrf_token),
    };
    Ok(Json(SessionInfo {
        operator: op.name,
        role: op.role,
        via: match op.via {
            Via::Session => "session".into(),
            Via::ApiKey => "api_key".into(),
        },
        csrf_token,
    }))
}

/// Log out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/api/session", tag = "auth",
    responses((status = 204), (status = 401, body = crate::admin::error::ErrorBody)))]
async fn logout(
    State(admin): State<Arc<Admin>>,
    Viewer(op): Viewer,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(id) = super::session_cookie(&headers) {
        admin.auth.sessions.end(id);
    }
    admin
        .backend
        .audit
        .record_admin(op.audit("admin.logout"))
        .await;
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let mut out = StatusCode::NO_CONTENT.into_response();
    out.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(|e| ApiError::internal("the cookie", e))?,
    );
    Ok(out)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub name: String,
    pub role: Role,
    pub created_ms: u64,
    pub created_by: String,
}

impl From<&ApiKey> for KeyInfo {
    fn from(k: &ApiKey) -> Self {
        Self {
            name: k.name.clone(),
            role: k.role,
            created_ms: k.created_ms,
            created_by: k.created_by.clone(),
        }
    }
}

/// API keys (names and roles; never the keys), in name order.
#[utoipa::path(get, path = "/api/keys", tag = "auth", params(PageQuery),
    responses((status = 200, body = Page<KeyInfo>), (status = 403, body = crate::admin::error::ErrorBody)))]
async fn list_keys(
    State(admin): State<Arc<Admin>>,
    AdminOnly(_op): AdminOnly,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<KeyInfo>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let credentials = admin
        .auth
        .credentials
        .current()
        .map_err(|e| ApiError::internal("reading the admin credentials", e))?;
    let mut keys: Vec<&ApiKey> = credentials
        .keys
        .iter()
        .filter(|k| q.cursor.as_deref().is_none_or(|c| k.name.as_str() > c))
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    let more = keys.len() > limit;
    keys.truncate(limit);
    Ok(Json(Page {
        next_cursor: more.then(|| keys.last().map(|k| k.name.clone())).flatten(),
        items: keys.into_iter().map(KeyInfo::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1–64 bytes: ASCII letters, digits, '.', '_', '-'.
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub name: String,
    pub role: Role,
    /// The key itself: shown this once, stored only as its SHA-256.
    pub key: String,
}

/// Create an API key; the key is in the answer and nowhere else.
#[utoipa::path(post, path = "/api/keys", tag = "auth", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 409, body = crate::admin::error::ErrorBody)))]
async fn create_key(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    credentials::check_name(&body.name).map_err(ApiError::invalid)?;
    let (secret, hash) =
        credentials::new_api_key().map_err(|e| ApiError::internal("making a key", e))?;
    let actor = op.actor();
    let admin2 = Arc::clone(&admin);
    let name = body.name.clone();
    tokio::task::spawn_blocking(move || {
        admin2.auth.credentials.update(|c| {
            if c.keys.iter().any(|k| k.name == name) {
                return Err(ApiError::conflict(format!("a key named {name} exists")));
            }
            if c.keys.len() >= CREDENTIALS_MAX {
                return Err(ApiError::invalid(format!(
                    "at most {CREDENTIALS_MAX} API keys; revoke one first"
                )));
            }
            c.keys.push(ApiKey {
                name: name.clone(),
                role: body.role,
                key_sha256: hash,
                created_ms: crate::time::now_ms(),
                maker_created_ms: c.maker_created_ms(&actor),
                created_by: actor,
            });
            Ok(())
        })
    })
    .await??;
    admin
        .backend
        .audit
        .record_admin(
            op.audit("admin.key_add")
                .target(format!("key:{}", body.name))
                .detail(body.role.as_str()),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            name: body.name,
            role: body.role,
            key: secret,
        }),
    ))
}

/// Revoke an API key: refused from the next request on.
#[utoipa::path(delete, path = "/api/keys/{name}", tag = "auth",
    params(("name" = String, Path, description = "The key's name")),
    responses((status = 204), (status = 404, body = crate::admin::error::ErrorBody)))]
async fn revoke_key(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let admin2 = Arc::clone(&admin);
    let target = name.clone();
    tokio::task::spawn_blocking(move || {
        admin2.auth.credentials.update(|c| {
            let before = c.keys.len();
            c.keys.retain(|k| k.name != target);
            if c.keys.len() == before {
                return Err(ApiError::not_found(format!("no key named {target}")));
            }
            Ok(())
        })
    })
    .await??;
    admin
        .backend
        .audit
        .record_admin(op.audit("admin.key_revoke").target(format!("key:{name}")))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

impl From<std::io::Error> for ApiError {
    fn from(err: std::io::Error) -> Self {
        ApiError::internal("the admin credentials file", err)
    }
}
