//! `/api/users`: find users (by name prefix, exact id or e-mail address; or all, by id), view
//! one (profile, devices and which are online now, flags), and change them (`actions.rs`:
//! create, edit the profile, disable / enable, kick, set a password).

mod actions;
pub mod cli;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::Viewer;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page};
use crate::config::PLATFORM_NAMES;
use crate::store::{USER_ID_FIRST, USER_ID_LAST, UserId, UserRecord, username_key};
use crate::time::now_ms;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(list_users, actions::create_user))
        .routes(routes!(get_user, actions::edit_user))
        .routes(routes!(actions::disable_user))
        .routes(routes!(actions::enable_user))
        .routes(routes!(actions::kick_user))
        .routes(routes!(actions::reset_password))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// A user id (exact), an e-mail address (exact, any case) or the start of a username (any
    /// case); empty or absent: every user, by id.
    pub query: Option<String>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
    /// Items wanted, 1 to `admin.page_items_max` (default 50).
    pub limit: Option<u32>,
}

/// A user in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    pub user_id: u64,
    pub username: String,
    pub email: String,
    pub created_at_ms: u64,
    /// An operator disabled the account: no login until it is enabled.
    pub disabled: bool,
    /// Sessions online now.
    pub sessions_online: u32,
}

/// One user, in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub summary: UserSummary,
    pub profile: ProfileView,
    /// Set while disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_info: Option<DisabledInfo>,
    /// The newest of the devices' last-seen times (now while online); 0: never seen.
    pub last_seen_ms: u64,
    /// Signed-in devices (a live token each), online ones first, then by last seen; at most
    /// `login.device_tokens_max`.
    pub devices: Vec<DeviceView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    pub nickname: String,
    pub avatar_url: String,
    pub bio: String,
    pub searchable: bool,
    pub hide_last_seen: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledInfo {
    pub at_ms: u64,
    /// The operator who disabled it (audit actor form).
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    /// `ios`, `android`, `web`, `desktop` or `unspecified`.
    pub platform: String,
    pub online: bool,
    /// Gateway shards holding the device's sessions now (empty when offline).
    pub shards: Vec<u16>,
    pub last_seen_ms: u64,
    pub token_issued_at_ms: u64,
    pub token_expires_at_ms: u64,
}

/// A user id from the path; an id outside the 9-digit range is no user.
fn user_id(id: u64) -> Result<UserId, ApiError> {
    if (USER_ID_FIRST..=USER_ID_LAST).contains(&id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no user {id}")))
    }
}

fn platform_name(platform: i32) -> String {
    PLATFORM_NAMES
        .get(usize::try_from(platform).unwrap_or(0))
        .copied()
        .unwrap_or("unspecified")
        .to_owned()
}

/// The record of user `id`, or 404.
async fn user_record(admin: &Admin, id: UserId) -> ApiResult<UserRecord> {
    let store = Arc::clone(&admin.backend.ports.accounts);
    tokio::task::spawn_blocking(move || store.user_by_id(id))
        .await??
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

impl Admin {
    /// Summaries of a page of users: their flags read first, then the sessions lock taken
    /// once, never across a store read.
    fn summaries(&self, users: Vec<UserRecord>) -> ApiResult<Vec<UserSummary>> {
        let flags = &self.backend.ports.account_admin;
        let disabled = users
            .iter()
            .map(|u| Ok(flags.user_flags(u.user_id)?.is_some()))
            .collect::<ApiResult<Vec<bool>>>()?;
        let sessions = self.backend.sessions.read();
        Ok(users
            .into_iter()
            .zip(disabled)
            .map(|(u, disabled)| UserSummary {
                disabled,
                sessions_online: u32::try_from(sessions.of_user(u.user_id).len())
                    .unwrap_or(u32::MAX),
                user_id: u.user_id,
                username: u.username,
                email: u.email,
                created_at_ms: u.created_at_ms,
            })
            .collect())
    }
}

/// Find users: by exact id, by e-mail address, by username prefix, or all by id; paged.
#[utoipa::path(get, path = "/api/users", tag = "users", params(UserQuery),
    responses((status = 200, body = Page<UserSummary>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn list_users(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> ApiResult<Json<Page<UserSummary>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let query = q.query.unwrap_or_default().trim().to_owned();
    if query.len() > crate::accounts::EMAIL_BYTES_MAX || !crate::text::no_controls(&query, false) {
        return Err(ApiError::invalid(
            "query: too long, or holds control characters",
        ));
    }
    let cursor = q.cursor;
    let a = Arc::clone(&admin);
    let (users, next_cursor) = tokio::task::spawn_blocking(move || {
        let ports = &a.backend.ports;
        // One more than asked tells whether another page follows.
        let (mut users, more): (Vec<UserRecord>, bool) = if query.is_empty() {
            let after = page::numeric_cursor(cursor.as_deref())?.unwrap_or(0);
            let mut users = ports.account_admin.users_after(after, limit + 1)?;
            let more = users.len() > limit;
            users.truncate(limit);
            (users, more)
        } else if let Ok(id) = query.parse::<u64>() {
            (ports.accounts.user_by_id(id)?.into_iter().collect(), false)
        } else if query.contains('@') {
            let id = ports.accounts.user_id_by_email(&query)?;
            let user = id.map(|id| ports.accounts.user_by_id(id)).transpose()?;
            (user.flatten().into_iter().collect(), false)
        } else {
            let prefix = username_key(&query);
            let after = cursor.unwrap_or_default();
            let names = ports
                .contacts
                .usernames_with_prefix(&prefix, &after, limit + 1)?;
            let more = names.len() > limit;
            let mut users = Vec::with_capacity(limit);
            for (_, id) in names.into_iter().take(limit) {
                users.extend(ports.accounts.user_by_id(id)?);
            }
            (users, more)
        };
        let next = match users.last() {
            Some(last) if more && query.is_empty() => Some(last.user_id.to_string()),
            Some(last) if more => Some(username_key(&last.username)),
            _ => None,
        };
        let summaries = a.summaries(std::mem::take(&mut users))?;
        Ok::<_, ApiError>((summaries, next))
    })
    .await??;
    Ok(Json(Page {
        items: users,
        next_cursor,
    }))
}

/// One user: profile, flags, devices and which of them are online now (with the shard).
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    params(("id" = u64, Path, description = "user id")),
    responses((status = 200, body = UserDetail), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn get_user(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<UserDetail>> {
    Ok(Json(user_detail(&admin, user_id(id)?).await?))
}

pub(super) async fn user_detail(admin: &Arc<Admin>, id: UserId) -> ApiResult<UserDetail> {
    let user = user_record(admin, id).await?;
    let backend = &admin.backend;
    let flags = backend.accounts.flags(id).await?;
    let tokens = backend.accounts.devices(id).await?;
    let contacts = Arc::clone(&backend.ports.contacts);
    let profile = tokio::task::spawn_blocking(move || contacts.profile(id))
        .await??
        .unwrap_or_default();
    let searchable_default = backend.settings.contacts.searchable_default;
    let now = now_ms();
    let (mut devices, sessions_online) = {
        let sessions = backend.sessions.read();
        let online = sessions.of_user(id);
        let devices: Vec<DeviceView> = tokens
            .into_iter()
            .map(|(hash, t)| {
                let mut shards: Vec<u16> = online
                    .iter()
                    .filter(|s| *s.device_id == *t.device_id)
                    .map(|s| s.conn.shard)
                    .collect();
                shards.dedup();
                DeviceView {
                    online: !shards.is_empty(),
                    last_seen_ms: if shards.is_empty() {
                        backend.accounts.seen.last_seen_ms(&hash, &t)
                    } else {
                        now
                    },
                    shards,
                    platform: platform_name(t.platform),
                    token_issued_at_ms: t.issued_at_ms,
                    token_expires_at_ms: t.expires_at_ms,
                    device_id: t.device_id,
                }
            })
            .collect();
        (devices, online.len())
    };
    devices.sort_by_key(|d| std::cmp::Reverse((d.online, d.last_seen_ms)));
    // Cut after the order (as ListDevices): a lowered limit leaves out the devices seen
    // longest ago.
    devices.truncate(backend.settings.login.device_tokens_max);
    Ok(UserDetail {
        last_seen_ms: devices.first().map_or(0, |d| d.last_seen_ms),
        devices,
        profile: ProfileView {
            nickname: profile.nickname,
            avatar_url: profile.avatar_url,
            bio: profile.bio,
            searchable: profile.searchable.unwrap_or(searchable_default),
            hide_last_seen: profile.hide_last_seen,
        },
        disabled_info: flags.as_ref().map(|f| DisabledInfo {
            at_ms: f.disabled_at_ms,
            by: f.disabled_by.clone(),
            reason: f.reason.clone(),
        }),
        summary: UserSummary {
            user_id: user.user_id,
            username: user.username,
            email: user.email,
            created_at_ms: user.created_at_ms,
            disabled: flags.is_some(),
            sessions_online: u32::try_from(sessions_online).unwrap_or(u32::MAX),
        },
    })
}
