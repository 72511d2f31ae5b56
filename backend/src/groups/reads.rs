//! The group reads, on the read pool: what a member may see (the visibility clamp Sync and
//! History go through), group info, members, my groups, applications (read counts are in
//! `read_counts.rs`).

use prost::Message as _;
use ringchat_proto::v1::{self, ContentType, ErrorCode};

use super::{policy_to_wire, role_to_wire};
use crate::accounts::Refusal;
use crate::contacts::Contacts;
use crate::messaging::conv_from_wire;
use crate::store::{
    ConvId, ConvKind, GroupRecord, GroupRole, MemberRecord, MessageRecord, Ports, StoreError,
    UserGroupRecord, UserId,
};

use super::GroupsConfig;

pub(super) fn not_found() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such group")
}

pub(super) fn group_id(raw: u64) -> Result<ConvId, Refusal> {
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

/// The seqs a user may read, by its row read again (`now`) after a read made under what a first
/// look said (`first`, both inclusive). A member's first look says "no end" (`u64::MAX`); a
/// removal (and a return) committed between that look and the read lands with its event and
/// the member's row in one commit, so anything the read saw from after the removal is outside
/// what this says. A former member's first look stands: what it may read never grows by itself.
/// The one rule of Sync, History and the conversation list's heads.
pub(crate) fn visible_after_read((first, last): (u64, u64), now: &UserGroupRecord) -> (u64, u64) {
    if last != u64::MAX {
        return (first, last);
    }
    (first.max(now.visible_from_seq), now.last_visible_seq())
}

/// A group's shared details as they are in `r`.
pub(crate) fn snapshot(r: &GroupRecord) -> v1::GroupSnapshot {
    v1::GroupSnapshot {
        name: r.name.clone(),
        avatar_url: r.avatar_url.clone(),
        intro: r.intro.clone(),
        owner_id: r.owner,
        join_policy: policy_to_wire(r.join_policy) as i32,
        history_visible: r.history_visible,
        mute_all: r.mute_all,
        member_count: r.member_count,
        dissolved: r.dissolved_seq != 0,
    }
}

/// What a former member sees of group `g`: the group as it stood right after `left`, the
/// LEFT / REMOVED event (or the last member's DISSOLVED) at its `left_seq`, which carries it
/// (`GroupEvent.group`), not the group as it changed after the member.
///
/// An event stored before events carried the group has none. Then the group's record is what
/// the member last saw only if the event is still the group's last (every change to a live
/// group appends an event, and a group whose last member left is dissolved and empty);
/// otherwise the member gets empty details.
pub(crate) fn former_snapshot(
    ports: &Ports,
    g: ConvId,
    left: Option<&MessageRecord>,
) -> Result<v1::GroupSnapshot, StoreError> {
    let event = left
        .filter(|m| m.content_type == ContentType::GroupEvent as i32)
        .and_then(|m| v1::GroupEvent::decode(m.content.as_ref()).ok());
    if let Some(kept) = event.and_then(|ev| ev.group) {
        return Ok(kept);
    }
    let Some(left) = left else {
        return Ok(v1::GroupSnapshot::default());
    };
    let head = ports.log.conversation(g)?.unwrap_or_default();
    Ok(match ports.groups.group(g)? {
        Some(r) if head.max_seq <= left.seq => snapshot(&r),
        _ => v1::GroupSnapshot::default(),
    })
}

/// A group as `me` (its member row, if a member) sees it; `shared` is what all who see it see.
pub(crate) fn group_view(
    g: ConvId,
    shared: v1::GroupSnapshot,
    created_ms: u64,
    me: Option<&MemberRecord>,
    mine: Option<&UserGroupRecord>,
    max_seq: u64,
) -> v1::Group {
    let v1::GroupSnapshot {
        name,
        avatar_url,
        intro,
        owner_id,
        join_policy,
        history_visible,
        mute_all,
        member_count,
        dissolved,
    } = shared;
    v1::Group {
        conversation_id: g.to_wire(),
        name,
        avatar_url,
        intro,
        owner_id,
        join_policy,
        history_visible,
        mute_all,
        member_count,
        created_ms,
        dissolved,
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
    if !mine.is_member() {
        // A former member sees the group as it was when it left, up to the seq it left at.
        let left = ports.log.message(g, mine.left_seq)?;
        let shared = former_snapshot(ports, g, left.as_ref())?;
        let view = group_view(
            g,
            shared,
            record.created_ms,
            None,
            Some(mine),
            mine.left_seq,
        );
        return Ok(view);
    }
    let me = ports.groups.group_member(g, user)?;
    let head = ports.log.conversation(g)?.unwrap_or_default();
    Ok(group_view(
        g,
        snapshot(&record),
        record.created_ms,
        me.as_ref(),
        Some(mine),
        head.max_seq,
    ))
}

pub(crate) fn info(ports: &Ports, user: UserId, req: &v1::GroupInfo) -> Result<v1::Group, Refusal> {
    let g = group_id(req.conversation_id)?;
    let mine = visible(ports, g, user)?;
    view_of(ports, g, user, &mine)
}

/// Current members only: a former member no longer sees who is in the group.
pub(super) fn require_member(
    ports: &Ports,
    g: ConvId,
    user: UserId,
) -> Result<MemberRecord, Refusal> {
    ports.groups.group_member(g, user)?.ok_or_else(not_found)
}

pub(crate) fn members(
    ports: &Ports,
    cfg: &GroupsConfig,
    contacts: &Contacts,
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
        members.push(v1::GroupMember {
            profile: Some(contacts.profile_in_list(ports, user, id)?),
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
    contacts: &Contacts,
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
        applications.push(v1::GroupApplication {
            profile: Some(contacts.profile_in_list(ports, user, id)?),
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
