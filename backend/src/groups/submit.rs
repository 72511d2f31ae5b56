//! A client's group write, checked where no storage is needed (on the shard) and typed for the
//! sequencer: sizes, id counts, enum values.

use ringchat_proto::v1::{self, ErrorCode};

use super::{GroupOp, GroupOpKind, GroupsConfig, policy_from_wire};
use crate::accounts::Refusal;
use crate::api::GroupWrite;
use crate::messaging::conv_from_wire;
use crate::store::{ConvId, ConvKind, GroupRole, UserId};
use crate::time::now_ms;

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::InvalidArgument, message)
}

/// A group id a client sent; anything else is NOT_FOUND, like a group that does not exist.
fn group_id(raw: u64) -> Result<ConvId, Refusal> {
    let g = conv_from_wire(raw)?;
    if g.kind() != ConvKind::Group {
        return Err(Refusal::new(ErrorCode::NotFound, "no such group"));
    }
    Ok(g)
}

/// Free text of at most `max` bytes, by the one text rule (`text.rs`): no control characters,
/// newlines only where `newlines`.
fn text(field: &str, value: String, max: usize, newlines: bool) -> Result<String, Refusal> {
    if value.len() > max {
        return Err(invalid(format!("{field} is over {max} bytes")));
    }
    if !crate::text::no_controls(&value, newlines) {
        return Err(invalid(match newlines {
            true => format!("{field}: no control characters but newlines"),
            false => format!("{field}: no control characters"),
        }));
    }
    Ok(value)
}

fn name(value: String, max: usize) -> Result<String, Refusal> {
    if value.trim().is_empty() {
        return Err(invalid("name must not be empty"));
    }
    text("name", value, max, false)
}

/// A group's picture, by the profiles' rule.
fn avatar_url(value: String, max: usize) -> Result<String, Refusal> {
    if !crate::text::avatar_url_ok(&value, max) {
        return Err(invalid(format!(
            "avatar_url: empty, or an http(s) URL of at most {max} bytes without spaces"
        )));
    }
    Ok(value)
}

/// Distinct ids, at most `max` of them, none the actor.
fn users(ids: Vec<UserId>, actor: UserId, max: u32) -> Result<Vec<UserId>, Refusal> {
    if ids.len() > max as usize {
        return Err(invalid(format!("at most {max} user ids per request")));
    }
    let mut ids: Vec<UserId> = ids.into_iter().filter(|u| *u != actor).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A member's mute ends in the future, at most `max_s` from `now` (0 lifts it). Mute-all
/// (user 0) takes `until_ms` as on / off only.
fn mute_end(user: UserId, until_ms: u64, max_s: u64, now: u64) -> Result<u64, Refusal> {
    if user == 0 || until_ms == 0 {
        return Ok(until_ms);
    }
    let latest = now.saturating_add(max_s.saturating_mul(1_000));
    if until_ms <= now || until_ms > latest {
        return Err(invalid(format!(
            "until_ms: a time in the future, at most {max_s} s from now (groups.mute_max_s); \
             0 unmutes"
        )));
    }
    Ok(until_ms)
}

fn policy(raw: i32) -> Result<crate::store::JoinPolicy, Refusal> {
    policy_from_wire(raw).ok_or_else(|| invalid("join_policy: OPEN, APPROVAL or INVITE_ONLY"))
}

pub(crate) fn op_of(
    actor: UserId,
    write: GroupWrite,
    cfg: &GroupsConfig,
) -> Result<GroupOp, Refusal> {
    let kind = match write {
        GroupWrite::Create(c) => GroupOpKind::Create {
            name: name(c.name, cfg.name_bytes_max)?,
            avatar_url: avatar_url(c.avatar_url, cfg.avatar_url_bytes_max)?,
            intro: text("intro", c.intro, cfg.intro_bytes_max, true)?,
            members: users(c.member_ids, actor, cfg.invite_batch_max)?,
            join_policy: policy(c.join_policy)?,
            history_visible: c.history_visible,
        },
        GroupWrite::Update(u) => GroupOpKind::Update {
            g: group_id(u.conversation_id)?,
            name: u.name.map(|n| name(n, cfg.name_bytes_max)).transpose()?,
            avatar_url: u
                .avatar_url
                .map(|a| avatar_url(a, cfg.avatar_url_bytes_max))
                .transpose()?,
            intro: u
                .intro
                .map(|i| text("intro", i, cfg.intro_bytes_max, true))
                .transpose()?,
            join_policy: u.join_policy.map(policy).transpose()?,
            history_visible: u.history_visible,
            mute_all: u.mute_all,
        },
        GroupWrite::Invite(i) => GroupOpKind::Invite {
            g: group_id(i.conversation_id)?,
            users: users(i.user_ids, actor, cfg.invite_batch_max)?,
        },
        GroupWrite::Join(j) => GroupOpKind::Join {
            g: group_id(j.conversation_id)?,
            message: text(
                "message",
                j.message,
                cfg.application_message_bytes_max,
                true,
            )?,
        },
        GroupWrite::Approve(a) => GroupOpKind::Approve {
            g: group_id(a.conversation_id)?,
            user: a.user_id,
            accept: a.accept,
        },
        GroupWrite::Leave(l) => GroupOpKind::Leave {
            g: group_id(l.conversation_id)?,
        },
        GroupWrite::Remove(r) => GroupOpKind::Remove {
            g: group_id(r.conversation_id)?,
            users: users(r.user_ids, actor, cfg.invite_batch_max)?,
        },
        GroupWrite::SetRole(s) => GroupOpKind::SetRole {
            g: group_id(s.conversation_id)?,
            user: s.user_id,
            role: match v1::GroupRole::try_from(s.role) {
                Ok(v1::GroupRole::Admin) => GroupRole::Admin,
                Ok(v1::GroupRole::Member) => GroupRole::Member,
                _ => {
                    return Err(invalid(
                        "role: ADMIN or MEMBER (GroupTransfer hands over ownership)",
                    ));
                }
            },
        },
        GroupWrite::Mute(m) => GroupOpKind::Mute {
            g: group_id(m.conversation_id)?,
            user: m.user_id,
            until_ms: mute_end(m.user_id, m.until_ms, cfg.mute_max_s, now_ms())?,
        },
        GroupWrite::Transfer(t) => GroupOpKind::Transfer {
            g: group_id(t.conversation_id)?,
            user: t.user_id,
        },
        GroupWrite::Dissolve(d) => GroupOpKind::Dissolve {
            g: group_id(d.conversation_id)?,
        },
        GroupWrite::SetNotify(n) => GroupOpKind::SetNotify {
            g: group_id(n.conversation_id)?,
            muted: n.muted,
        },
    };
    if let GroupOpKind::SetRole { user, .. } | GroupOpKind::Transfer { user, .. } = &kind
        && *user == actor
    {
        return Err(invalid("user_id is yourself"));
    }
    Ok(GroupOp { actor, kind })
}
