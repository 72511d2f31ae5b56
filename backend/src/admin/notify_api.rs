//! `/api/notifications`: send a system notification (to everyone, listed users or a group's
//! members) as a background job, follow its progress, page the history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::{AdminOnly, Viewer};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page, PageQuery};
use crate::notifications::{Audience, Job, Notice, Registered, StartError, group_of};
use crate::store::{ConvId, USER_ID_FIRST, USER_ID_LAST, UserId};

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(send, history))
        .routes(routes!(one))
}

/// Bytes of a client-chosen notification id, at most.
const ID_BYTES_MAX: usize = 64;
/// Bytes of a content type, at most.
const CONTENT_TYPE_BYTES_MAX: usize = 64;
/// Digits of a group id, at most (a u64 has 20).
const GROUP_ID_DIGITS_MAX: usize = 20;
/// Unknown user ids named in a refusal, at most.
const UNKNOWN_NAMED_MAX: usize = 10;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// Your id for this notification (1 to 64 of `A-Za-z0-9._:-`): sending it again with the
    /// same id and content returns the first one instead of sending twice, or, when that one
    /// failed, sends it again to those it did not reach. Made up by the server when absent.
    pub id: Option<String>,
    /// Shown above the text; at most `notifications.title_bytes_max` bytes.
    pub title: Option<String>,
    /// 1 to `notifications.text_bytes_max` bytes.
    pub text: String,
    /// How clients read `text`: a media type such as `text/plain` (the default) or
    /// `text/markdown`.
    pub content_type: Option<String>,
    pub to: Recipients,
}

/// Exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// Every user (must be `true`).
    pub all: Option<bool>,
    /// These users (at most `notifications.users_per_request_max`, each must exist).
    pub users: Option<Vec<u64>>,
    /// The members of this group: its conversation id in decimal, as a string (group ids pass
    /// 2^53, past what a JavaScript number holds exactly; a JSON number is refused, as a
    /// rounded one names another group).
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,20}$", example = "4611686018427387905")]
    #[serde(default, deserialize_with = "group_id_text")]
    pub group: Option<String>,
}

/// `to.group`: a string only. A client that parses JSON numbers as doubles (JavaScript) sends a
/// group id rounded to the next representable value, which is another group's id.
fn group_id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "the group id as a decimal string, such as \"4611686018427387905\" (a JSON number \
                 this large loses digits in JavaScript)",
            )
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(self)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
    }
    d.deserialize_option(Text)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationAccepted {
    pub notification_id: String,
    /// Recipients when it started (for everyone: the users then).
    pub recipients: u64,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// The request repeated the id of one running or done: this is that notification, not a
    /// new one.
    pub repeated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub notification_id: String,
    pub created_ms: u64,
    /// Who sent it, as the audit log names them.
    pub operator: String,
    pub title: String,
    pub text: String,
    pub content_type: String,
    /// `all`, `users` or `group`.
    pub target: String,
    /// The group's conversation id when `target` is `group`, in decimal: a string, because
    /// group ids pass 2^53 and JavaScript numbers would round them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub recipients_total: u64,
    /// Recipients handled so far (stored, or who had it already).
    pub recipients_done: u64,
    /// Of those, who had it already (a repeated request).
    pub repeats: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// 0 while running.
    pub finished_ms: u64,
}

impl NotificationView {
    fn of(job: &Job) -> Self {
        let p = job.progress();
        Self {
            notification_id: job.id.clone(),
            created_ms: job.created_ms,
            operator: job.operator.clone(),
            title: job.notice.title.clone(),
            text: job.notice.text.clone(),
            content_type: job.notice.content_type.clone(),
            target: job.target.to_owned(),
            group: job.group.map(|g| g.to_wire().to_string()),
            state: p.state.as_str().to_owned(),
            recipients_total: job.total,
            recipients_done: p.done,
            repeats: p.repeats,
            error: p.error,
            finished_ms: p.finished_ms,
        }
    }
}

fn valid_id(id: &str) -> bool {
    (1..=ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn valid_content_type(ct: &str) -> bool {
    let Some((kind, sub)) = ct.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
    };
    ct.len() <= CONTENT_TYPE_BYTES_MAX && token(kind) && token(sub)
}

/// A server-made id: random, so ids never repeat across restarts (a repeat would be taken for
/// the same notification by the recipients' dedup).
fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal("making a notification id", e))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("n-{hex}"))
}

/// The request's notice and audience, checked against the limits (no store read).
fn checked(
    admin: &Admin,
    body: NotificationRequest,
) -> ApiResult<(Option<String>, Notice, Audience)> {
    let limits = &admin.backend.settings.notifications;
    if let Some(id) = &body.id
        && !valid_id(id)
    {
        return Err(ApiError::invalid(
            "id must be 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("text must not be empty"));
    }
    if body.text.len() > limits.text_bytes_max {
        return Err(ApiError::invalid(format!(
            "text is {} bytes, the limit is {} (notifications.text_bytes_max)",
            body.text.len(),
            limits.text_bytes_max
        )));
    }
    let title = body.title.unwrap_or_default();
    if title.len() > limits.title_bytes_max {
        return Err(ApiError::invalid(format!(
            "title is {} bytes, the limit is {} (notifications.title_bytes_max)",
            title.len(),
            limits.title_bytes_max
        )));
    }
    let content_type = body.content_type.unwrap_or_else(|| "text/plain".into());
    if !valid_content_type(&content_type) {
        return Err(ApiError::invalid(
            "content_type must be a media type such as text/plain or text/markdown",
        ));
    }
    let audience = match (body.to.all, body.to.users, body.to.group) {
        (Some(true), None, None) => Audience::All,
        (Some(false), None, None) => {
            return Err(ApiError::invalid(
                "to.all must be true (or name users or a group)",
            ));
        }
        (None, Some(mut users), None) => {
            if users.is_empty() {
                return Err(ApiError::invalid("to.users must name at least one user"));
            }
            if users.len() > limits.users_per_request_max {
                return Err(ApiError::invalid(format!(
                    "to.users names {} users, the limit is {} (notifications.users_per_request_max)",
                    users.len(),
                    limits.users_per_request_max
                )));
            }
            users.sort_unstable();
            users.dedup();
            Audience::Users(users)
        }
        (None, None, Some(g)) => Audience::Group(group(&g)?),
        _ => {
            return Err(ApiError::invalid(
                "to must have exactly one of all, users and group",
            ));
        }
    };
    let notice = Notice {
        title,
        text: body.text,
        content_type,
    };
    Ok((body.id, notice, audience))
}

/// `to.group`'s group: decimal digits (no sign, no spaces), naming a group.
fn group(text: &str) -> ApiResult<ConvId> {
    if !(1..=GROUP_ID_DIGITS_MAX).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ApiError::invalid(
            "to.group must be a group id: its decimal digits, as a string",
        ));
    }
    text.parse()
        .ok()
        .and_then(group_of)
        .ok_or_else(|| ApiError::not_found(format!("no group {text}")))
}

/// Recipients of the audience now: refuses unknown users and groups.
async fn count(admin: &Admin, audience: &Audience) -> ApiResult<u64> {
    let ports = admin.backend.ports.clone();
    match audience {
        Audience::All => {
            Ok(tokio::task::spawn_blocking(move || ports.accounts.user_count()).await??)
        }
        Audience::Group(g) => {
            let g = *g;
            let group = tokio::task::spawn_blocking(move || ports.groups.group(g)).await??;
            let group = group.ok_or_else(|| ApiError::not_found(format!("no group {g}")))?;
            Ok(u64::from(group.member_count))
        }
        Audience::Users(users) => {
            let users = users.clone();
            let n = users.len() as u64;
            let unknown: Vec<UserId> = tokio::task::spawn_blocking(move || {
                let mut unknown = Vec::new();
                for u in users {
                    if !(USER_ID_FIRST..=USER_ID_LAST).contains(&u)
                        || ports.accounts.user_by_id(u)?.is_none()
                    {
                        unknown.push(u);
                        if unknown.len() >= UNKNOWN_NAMED_MAX {
                            break;
                        }
                    }
                }
                Ok::<_, crate::store::StoreError>(unknown)
            })
            .await??;
            if !unknown.is_empty() {
                let list: Vec<String> = unknown.iter().map(u64::to_string).collect();
                return Err(ApiError::invalid(format!(
                    "no such users: {} (nothing was sent)",
                    list.join(", ")
                )));
            }
            Ok(n)
        }
    }
}

/// Send a system notification: stored in each recipient's system conversation (pushed to
/// those online, read by Sync by the others) by a background job; follow it with
/// `GET /api/notifications/{id}`. Idempotent on `id`: a notification that failed is finished
/// by sending it again with its id (those it reached count as `repeats`).
#[utoipa::path(post, path = "/api/notifications", tag = "notifications",
    request_body = NotificationRequest,
    responses(
        (status = 202, description = "Started (or, for the id of one that failed, started again)", body = NotificationAccepted),
        (status = 200, description = "A notification with this id is running or done: it is returned", body = NotificationAccepted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "The id names a notification with other content or recipients", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "notifications.jobs_running_max are running", body = ErrorBody)))]
async fn send(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiJson(body): ApiJson<NotificationRequest>,
) -> ApiResult<(StatusCode, Json<NotificationAccepted>)> {
    let (id, notice, audience) = checked(&admin, body)?;
    let notifications = &admin.backend.notifications;
    // A repeat is answered before anything is read (the registry decides it is the same); a
    // failed job's id is not a repeat: it is run again below.
    if let Some(id) = id.as_deref()
        && let Some(job) = notifications
            .repeat_of(id, &notice, &audience)
            .map_err(start_error)?
    {
        return Ok((StatusCode::OK, Json(accepted(&job, true))));
    }
    let total = count(&admin, &audience).await?;
    let id = match id {
        Some(id) => id,
        None => new_id()?,
    };
    let (job, how) = notifications
        .register(id, op.actor(), notice, &audience, total)
        .map_err(start_error)?;
    if how == Registered::Repeat {
        return Ok((StatusCode::OK, Json(accepted(&job, true))));
    }
    let detail = match &audience {
        Audience::All => format!("to everyone ({total} users)"),
        Audience::Users(u) => format!("to {} users", u.len()),
        Audience::Group(g) => format!("to the {total} members of group {g}"),
    };
    let again = if how == Registered::Rerun {
        ", again after it failed"
    } else {
        ""
    };
    admin
        .backend
        .audit
        .record_admin(
            op.audit("notification.send")
                .target(format!("notification:{}", job.id))
                .detail(format!("{detail}{again}: {}", job.notice.text)),
        )
        .await;
    notifications.run(Arc::clone(&admin.backend), Arc::clone(&job), audience);
    Ok((StatusCode::ACCEPTED, Json(accepted(&job, false))))
}

fn accepted(job: &Job, repeated: bool) -> NotificationAccepted {
    NotificationAccepted {
        notification_id: job.id.clone(),
        recipients: job.total,
        state: job.progress().state.as_str().to_owned(),
        repeated,
    }
}

/// The base of `retry_after_ms` when `notifications.jobs_running_max` jobs run.
const JOBS_FULL_RETRY_AFTER_MS: u64 = 1_000;

fn start_error(e: StartError) -> ApiError {
    match e {
        StartError::Busy(max) => ApiError::busy(
            format!(
                "{max} notifications are being sent (notifications.jobs_running_max); try again when one has finished"
            ),
            JOBS_FULL_RETRY_AFTER_MS,
        ),
        StartError::IdConflict => {
            ApiError::conflict("this id names a notification with other content or recipients")
        }
    }
}

/// The notifications sent since the server started (the newest `notifications.history_max`),
/// newest first, with their progress.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", params(PageQuery),
    responses((status = 200, body = Page<NotificationView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn history(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<NotificationView>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let before = page::numeric_cursor(q.cursor.as_deref())?.unwrap_or(u64::MAX);
    let mut jobs = admin.backend.notifications.page(before, limit + 1);
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    Ok(Json(Page {
        next_cursor: more
            .then(|| jobs.last().map(|j| j.seq.to_string()))
            .flatten(),
        items: jobs.iter().map(|j| NotificationView::of(j)).collect(),
    }))
}

/// One notification and its progress.
#[utoipa::path(get, path = "/api/notifications/{id}", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id")),
    responses((status = 200, body = NotificationView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn one(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<NotificationView>> {
    let job = admin
        .backend
        .notifications
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no notification {id:?} (kept: the newest notifications.history_max since the server started)")))?;
    Ok(Json(NotificationView::of(&job)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_content_types_are_checked() {
        assert!(valid_id("maint-2026.05:01_a"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(valid_content_type("text/plain"));
        assert!(valid_content_type("application/vnd.x+json"));
        assert!(!valid_content_type("text"));
        assert!(!valid_content_type("text/"));
        assert!(!valid_content_type("text/plain; charset=utf-8"));
    }

    #[test]
    fn full_jobs_answer_a_jittered_retry_after() {
        crate::retry_after::assert_jittered(JOBS_FULL_RETRY_AFTER_MS, || {
            start_error(StartError::Busy(2)).retry_after_ms.unwrap()
        });
    }
}
