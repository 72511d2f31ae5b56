//! The group reads, on the read pool: what a member may see (the visibility clamp Sync and
//! History go through), group info, members, my groups, applications, read counts.

use ringchat_proto::v1::{self, ErrorCode};

use super::{policy_to_wire, role_to_wire};
use crate::accounts::Refusal;
use crate::contacts::profiles::base_profile;
use crate::messaging::conv_from_wire;
use crate::store::{
    ConvId, ConvKind, GroupRecord, GroupRole, MemberRecord, Ports, UserGroupRecord, UserId,
};

use super::GroupsConfig;

/// Members whose cursors one GroupReadCount reads, at most; past it the count is a lower bound
/// (`exact` false).
pub const READ_COUNT_SCAN_MAX: usize = 10_000;
/// Cursor rows read per batch while counting.
const READ_COUNT_BATCH: usize = 500;

fn not_found() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such group")
}

fn group_id(raw: u64) -> Result<ConvId, Refusal> {
    let g = conv_from_wire(raw)?;
    if g.kind() != ConvKind::Group {
        return Err(not_found());
    }
    Ok(g)
}

fn page(requested: u32, max: u32) -> usize {
    (if requested == 0 {
        max
    } else {
        requested.min(max)
    }) as usize
}

/// The seqs of `g` that `user` may read: from its JOINED event (or 1 with the history
/// visible) to its LEFT / REMOVED event (or on, while a member). NOT_FOUND for anyone who was
/// never a member or has hidden the group.
pub(crate) fn visible(ports: &Ports, g: ConvId, user: UserId) -> Result<UserGroupRecord, Refusal> {
    ports.groups.user_group(user, g)?.ok_or_else(not_found)
}

/// A group as `me` sees it.
pub(crate) fn group_view(
    g: ConvId,
    r: &GroupRecord,
    me: Option<&MemberRecord>,
    mine: Option<&UserGroupRecord>,
    max_seq: u64,
) -> v1::Group {
    v1::Group {
        conversation_id: g.to_wire(),
        name: r.name.clone(),
        avatar_url: r.avatar_url.clone(),
        intro: r.intro.clone(),
        owner_id: r.owner,
        join_policy: policy_to_wire(r.join_policy) as i32,
        history_visible: r.history_visible,
        mute_all: r.mute_all,
        member_count: r.member_count,
        created_ms: r.created_ms,
        dissolved: r.dissolved_seq != 0,
        my_role: role_to_wire(me.map_or(GroupRole::Member, |m| m.role)) as i32,
        my_muted_until_ms: me.map_or(0, |m| m.muted_until_ms),
        my_visible_from_seq: me
            .map(|m| m.visible_from_seq)
            .or(mine.map(|m| m.visible_from_seq))
            .unwrap_or(0),
        max_seq,
        my_notify_muted: mine.is_some_and(|m| m.notify_muted),
    }
}

fn view_of(
    ports: &Ports,
    g: ConvId,
    user: UserId,
    mine: &UserGroupRecord,
) -> Result<v1::Group, Refusal> {
    let record = ports.groups.group(g)?.ok_or_else(not_found)?;
    let me = ports.groups.group_member(g, user)?;
    let head = ports.log.conversation(g)?.unwrap_or_default();
    // A former member sees the group as it was up to the seq it left at.
    let max_seq = head.max_seq.min(mine.last_visible_seq());
    Ok(group_view(g, &record, me.as_ref(), Some(mine), max_seq))
}

pub(crate) fn info(ports: &Ports, user: UserId, req: &v1::GroupInfo) -> Result<v1::Group, Refusal> {
    let g = group_id(req.conversation_id)?;
    let mine = visible(ports, g, user)?;
    view_of(ports, g, user, &mine)
}

/// Current members only: a former member no longer sees who is in the group.
fn require_member(ports: &Ports, g: ConvId, user: UserId) -> Result<MemberRecord, Refusal> {
    ports.groups.group_member(g, user)?.ok_or_else(not_found)
}

pub(crate) fn members(
    ports: &Ports,
    cfg: &GroupsConfig,
    searchable_default: bool,
    user: UserId,
    req: &v1::GroupMembers,
) -> Result<v1::GroupMemberList, Refusal> {
    let g = group_id(req.conversation_id)?;
    require_member(ports, g, user)?;
    let limit = page(req.limit, cfg.page_max);
    let mut rows = ports
        .groups
        .group_members(g, req.after_user_id, limit + 1)?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let mut members = Vec::with_capacity(rows.len());
    for (id, m) in rows {
        let profile = base_profile(&*ports.accounts, &*ports.contacts, searchable_default, id)?;
        members.push(v1::GroupMember {
            profile: Some(profile.unwrap_or(v1::Profile {
                user_id: id,
                ..v1::Profile::default()
            })),
            role: role_to_wire(m.role) as i32,
            joined_ms: m.joined_ms,
            muted_until_ms: m.muted_until_ms,
        });
    }
    Ok(v1::GroupMemberList {
        conversation_id: g.to_wire(),
        members,
        has_more,
    })
}

pub(crate) fn list(
    ports: &Ports,
    cfg: &GroupsConfig,
    user: UserId,
    req: &v1::ListGroups,
) -> Result<v1::GroupList, Refusal> {
    let limit = page(req.limit, cfg.page_max);
    let mut rows = ports
        .groups
        .groups_of_user(user, req.after_conversation_id, limit + 1)?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let mut groups = Vec::with_capacity(rows.len());
    for (g, mine) in rows {
        groups.push(view_of(ports, g, user, &mine)?);
    }
    Ok(v1::GroupList { groups, has_more })
}

pub(crate) fn applications(
    ports: &Ports,
    cfg: &GroupsConfig,
    searchable_default: bool,
    user: UserId,
    req: &v1::GroupApplications,
) -> Result<v1::GroupApplicationList, Refusal> {
    let g = group_id(req.conversation_id)?;
    let me = require_member(ports, g, user)?;
    if me.role == GroupRole::Member {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only the owner and admins see applications",
        ));
    }
    let limit = page(req.limit, cfg.page_max);
    let mut rows = ports.groups.applications(g, req.after_user_id, limit + 1)?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let mut applications = Vec::with_capacity(rows.len());
    for (id, app) in rows {
        let profile = base_profile(&*ports.accounts, &*ports.contacts, searchable_default, id)?;
        applications.push(v1::GroupApplication {
            profile: Some(profile.unwrap_or(v1::Profile {
                user_id: id,
                ..v1::Profile::default()
            })),
            message: app.message,
            sent_at_ms: app.sent_ms,
        });
    }
    Ok(v1::GroupApplicationList {
        conversation_id: g.to_wire(),
        applications,
        has_more,
    })
}

/// How many current members have read up to `seq`, from their read cursors: exact up to
/// [`READ_COUNT_SCAN_MAX`] members, a lower bound past it.
pub(crate) fn read_count(
    ports: &Ports,
    user: UserId,
    req: &v1::GroupReadCount,
) -> Result<v1::GroupReadCountOk, Refusal> {
    let g = group_id(req.conversation_id)?;
    require_member(ports, g, user)?;
    let record = ports.groups.group(g)?.ok_or_else(not_found)?;
    let mut read = 0u32;
    let mut scanned = 0usize;
    let mut after = 0;
    loop {
        let want = READ_COUNT_BATCH.min(READ_COUNT_SCAN_MAX - scanned);
        let rows = ports.groups.group_members(g, after, want)?;
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        let keys: Vec<(ConvId, UserId)> = rows.iter().map(|(u, _)| (g, *u)).collect();
        let cursors = ports.cursors.cursor_rows(&keys)?;
        read += cursors
            .iter()
            .filter(|r| r.as_ref().is_some_and(|r| r.cursor.read_seq >= req.seq))
            .count() as u32;
        scanned += rows.len();
        after = last;
        if rows.len() < want || scanned >= READ_COUNT_SCAN_MAX {
            break;
        }
    }
    Ok(v1::GroupReadCountOk {
        conversation_id: g.to_wire(),
        seq: req.seq,
        read_count: read,
        member_count: record.member_count,
        exact: (scanned as u64) >= u64::from(record.member_count),
    })
}
