//! `/api/groups`: find groups (by name prefix through the store's name index, or exact id; or
//! all, by id), view one and its members (paged), and dissolve one through the sequencer, as
//! its owner would: the DISSOLVED event (actor 0, the operators) lands in the group's log,
//! online members get it pushed, offline ones by Sync.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ringchat_proto::Body;
use ringchat_proto::v1::ErrorCode as Wire;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::{AdminOnly, Viewer};
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::page::{self, Page, PageQuery};
use crate::accounts::Refusal;
use crate::groups::operator::OPERATOR_ACTOR;
use crate::groups::{GroupOp, GroupOpKind};
use crate::messaging::writer::Write;
use crate::store::{ConvId, ConvKind, GroupRecord, GroupRole, JoinPolicy, group_name_key};

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(list_groups))
        .routes(routes!(get_group))
        .routes(routes!(group_members))
        .routes(routes!(dissolve_group))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupQuery {
    /// A group's id (exact: that group alone), else the start of a group's name (any case,
    /// digits too); empty or absent: every group, by id.
    pub query: Option<String>,
    pub cursor: Option<String>,
    /// Items wanted, 1 to `admin.page_items_max` (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    /// The group's conversation id (as clients see it), in decimal: a string, because group
    /// ids pass 2^53 and JavaScript numbers would round them.
    pub id: String,
    pub name: String,
    pub avatar_url: String,
    pub intro: String,
    pub owner: u64,
    /// `open`, `approval` or `invite_only`.
    pub join_policy: String,
    pub history_visible: bool,
    pub mute_all: bool,
    pub member_count: u32,
    pub admin_count: u32,
    pub application_count: u32,
    pub created_ms: u64,
    pub dissolved: bool,
    /// Seq of the DISSOLVED event (0 while the group lives).
    pub dissolved_seq: u64,
}

fn view(g: ConvId, r: GroupRecord) -> GroupView {
    GroupView {
        id: g.to_wire().to_string(),
        join_policy: match r.join_policy {
            JoinPolicy::Open => "open",
            JoinPolicy::Approval => "approval",
            JoinPolicy::InviteOnly => "invite_only",
        }
        .to_owned(),
        name: r.name,
        avatar_url: r.avatar_url,
        intro: r.intro,
        owner: r.owner,
        history_visible: r.history_visible,
        mute_all: r.mute_all,
        member_count: r.member_count,
        admin_count: r.admin_count,
        application_count: r.application_count,
        created_ms: r.created_ms,
        dissolved: r.dissolved_seq != 0,
        dissolved_seq: r.dissolved_seq,
    }
}

/// A group id from the path or a query; anything else is no group.
fn group_id(raw: u64) -> Option<ConvId> {
    ConvId::from_wire(raw).filter(|g| g.kind() == ConvKind::Group)
}

fn no_group(raw: u64) -> ApiError {
    ApiError::not_found(format!("no group {raw}"))
}

/// A name-index cursor: `ID:FOLDED_NAME` (the id first, so a name with ':' is no problem).
fn name_cursor(cursor: Option<&str>) -> ApiResult<Option<(String, ConvId)>> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || ApiError::bad_request("cursor is not one this list gave out");
    let (id, name) = c.split_once(':').ok_or_else(bad)?;
    let g = id.parse().ok().and_then(group_id).ok_or_else(bad)?;
    Ok(Some((name.to_owned(), g)))
}

/// Find groups: by exact id, else by name prefix, or all by id; paged.
#[utoipa::path(get, path = "/api/groups", tag = "groups", params(GroupQuery),
    responses((status = 200, body = Page<GroupView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn list_groups(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<GroupQuery>,
) -> ApiResult<Json<Page<GroupView>>> {
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let query = q.query.unwrap_or_default().trim().to_owned();
    if query.len() > 4 * crate::store::GROUP_NAME_KEY_BYTES_MAX
        || !crate::text::no_controls(&query, false)
    {
        return Err(ApiError::invalid(
            "query: too long, or holds control characters",
        ));
    }
    let cursor = q.cursor;
    let store = Arc::clone(&admin.backend.ports.groups);
    let page = tokio::task::spawn_blocking(move || {
        if query.is_empty() {
            let after = page::numeric_cursor(cursor.as_deref())?.unwrap_or(0);
            let mut rows = store.groups_after(after, limit + 1)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            return Ok::<_, ApiError>(Page {
                next_cursor: more
                    .then(|| rows.last().map(|(g, _)| g.to_wire().to_string()))
                    .flatten(),
                items: rows.into_iter().map(|(g, r)| view(g, r)).collect(),
            });
        }
        // A number that is no group's id is the start of a name ("2024 Team").
        if let Some(g) = query.parse::<u64>().ok().and_then(group_id)
            && let Some(record) = store.group(g)?
        {
            return Ok(Page {
                items: vec![view(g, record)],
                next_cursor: None,
            });
        }
        let prefix = group_name_key(&query);
        let after = name_cursor(cursor.as_deref())?;
        let after_ref = after.as_ref().map(|(n, g)| (n.as_str(), *g));
        let entries = store.groups_by_name(&prefix, after_ref, limit + 1)?;
        let more = entries.len() > limit;
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        for (name, g) in entries.into_iter().take(limit) {
            if let Some(r) = store.group(g)? {
                items.push(view(g, r));
            }
            last = Some(format!("{}:{name}", g.to_wire()));
        }
        Ok(Page {
            items,
            next_cursor: if more { last } else { None },
        })
    })
    .await??;
    Ok(Json(page))
}

/// One group: info, owner, counts, policy.
#[utoipa::path(get, path = "/api/groups/{id}", tag = "groups",
    params(("id" = u64, Path, description = "group (conversation) id")),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn get_group(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiPath(raw): ApiPath<u64>,
) -> ApiResult<Json<GroupView>> {
    let g = group_id(raw).ok_or_else(|| no_group(raw))?;
    let store = Arc::clone(&admin.backend.ports.groups);
    let record = tokio::task::spawn_blocking(move || store.group(g))
        .await??
        .ok_or_else(|| no_group(raw))?;
    Ok(Json(view(g, record)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: u64,
    /// Empty if the account is gone.
    pub username: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub joined_ms: u64,
    /// Muted until then (0: not muted).
    pub muted_until_ms: u64,
}

/// A group's members by user id, paged.
#[utoipa::path(get, path = "/api/groups/{id}/members", tag = "groups",
    params(("id" = u64, Path, description = "group (conversation) id"), PageQuery),
    responses((status = 200, body = Page<MemberView>), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn group_members(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiPath(raw): ApiPath<u64>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<MemberView>>> {
    let g = group_id(raw).ok_or_else(|| no_group(raw))?;
    let limit = page::limit(q.limit, admin.config.page_items_max)?;
    let after = page::numeric_cursor(q.cursor.as_deref())?.unwrap_or(0);
    let ports = admin.backend.ports.clone();
    let page = tokio::task::spawn_blocking(move || {
        if ports.groups.group(g)?.is_none() {
            return Err(no_group(raw));
        }
        let mut rows = ports.groups.group_members(g, after, limit + 1)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let mut items = Vec::with_capacity(rows.len());
        for (user, m) in &rows {
            items.push(MemberView {
                user_id: *user,
                username: ports
                    .accounts
                    .user_by_id(*user)?
                    .map(|u| u.username)
                    .unwrap_or_default(),
                role: match m.role {
                    GroupRole::Owner => "owner",
                    GroupRole::Admin => "admin",
                    GroupRole::Member => "member",
                }
                .to_owned(),
                joined_ms: m.joined_ms,
                muted_until_ms: m.muted_until_ms,
            });
        }
        Ok(Page {
            next_cursor: more
                .then(|| rows.last().map(|(u, _)| u.to_string()))
                .flatten(),
            items,
        })
    })
    .await??;
    Ok(Json(page))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dissolved {
    /// Decimal, as in [`GroupView`].
    pub id: String,
    /// Seq of the DISSOLVED event in the group's log.
    pub event_seq: u64,
}

/// Dissolve a group through the sequencer, as its owner would: members get the DISSOLVED
/// event (actor_id 0) pushed and by Sync; its history stays readable, nothing new is accepted.
#[utoipa::path(post, path = "/api/groups/{id}/dissolve", tag = "groups",
    params(("id" = u64, Path, description = "group (conversation) id")),
    responses((status = 200, body = Dissolved), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn dissolve_group(
    State(admin): State<Arc<Admin>>,
    AdminOnly(op): AdminOnly,
    ApiPath(raw): ApiPath<u64>,
) -> ApiResult<Json<Dissolved>> {
    let g = group_id(raw).ok_or_else(|| no_group(raw))?;
    let write = Write::Group(GroupOp {
        actor: OPERATOR_ACTOR,
        kind: GroupOpKind::OperatorDissolve { g },
    });
    let entry = op.audit("group.dissolve").target(format!("group:{raw}"));
    let answer = super::operator_write::audited(&admin, entry, write, |body| match body {
        Body::GroupOk(ok) => format!("event seq {}", ok.event_seq),
        other => format!("unexpected answer {other:?}"),
    })
    .await?;
    let event_seq = match answer {
        Body::GroupOk(ok) => ok.event_seq,
        Body::Error(e) => {
            let code = Wire::try_from(e.code).unwrap_or(Wire::Internal);
            return Err(Refusal {
                code,
                message: e.message,
                retry_after_ms: e.retry_after_ms,
            }
            .into());
        }
        other => {
            return Err(ApiError::internal(
                "dissolving a group",
                format!("unexpected answer {other:?}"),
            ));
        }
    };
    Ok(Json(Dissolved {
        id: raw.to_string(),
        event_seq,
    }))
}
