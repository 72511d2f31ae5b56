//! Group conversations (issue 11): a conversation with stored members and roles, whose
//! messages and events share one gap-free log.
//!
//! - `submit.rs`: a client's group write typed and bounded on the shard ([`GroupOp`]);
//! - `ops.rs` (and `members.rs`): each op applied by the sequencer, with its GROUP_EVENT in
//!   the same commit as the change; `send.rs`: a group send's checks;
//! - `sequencer.rs`: the state the sequencer owns (overlay and bounded caches);
//! - `roles.rs`: who may do what, one pure table;
//! - `online.rs`: who of a group is online, the one interface delivery resolves audiences by;
//! - `reads.rs`: visibility, info, members, my groups, applications, read counts (read pool);
//! - `conversations.rs`: the user's groups as conversation list entries;
//! - `read_counts.rs`: members counted by read cursor (kept by the sequencer, read by
//!   GroupReadCount);
//! - `config.rs`: `[groups]`.

mod config;
pub(crate) mod conversations;
pub(crate) mod dispatch;
#[cfg(test)]
mod login_tests;
mod members;
pub(crate) mod online;
pub(crate) mod operator;
mod ops;
pub(crate) mod read_counts;
pub(crate) mod reads;
pub(crate) mod roles;
pub(crate) mod send;
pub(crate) mod sequencer;
mod submit;
#[cfg(test)]
mod tests;

pub use config::GroupsConfig;
pub(crate) use ops::GroupDone;
pub(crate) use submit::op_of;

use bytes::Bytes;
use prost::Message as _;
use ringchat_proto::v1;

use crate::store::{ConvId, GroupRole, JoinPolicy, UserId};

/// A group write, typed and bounded on the shard, applied by the sequencer.
#[derive(Debug)]
pub(crate) struct GroupOp {
    pub actor: UserId,
    pub kind: GroupOpKind,
}

#[derive(Debug)]
pub(crate) enum GroupOpKind {
    Create {
        name: String,
        avatar_url: String,
        intro: String,
        members: Vec<UserId>,
        join_policy: JoinPolicy,
        history_visible: bool,
    },
    Update {
        g: ConvId,
        name: Option<String>,
        avatar_url: Option<String>,
        intro: Option<String>,
        join_policy: Option<JoinPolicy>,
        history_visible: Option<bool>,
        mute_all: Option<bool>,
    },
    Invite {
        g: ConvId,
        users: Vec<UserId>,
    },
    Join {
        g: ConvId,
        message: String,
    },
    Approve {
        g: ConvId,
        user: UserId,
        accept: bool,
    },
    Leave {
        g: ConvId,
    },
    Remove {
        g: ConvId,
        users: Vec<UserId>,
    },
    SetRole {
        g: ConvId,
        user: UserId,
        role: GroupRole,
    },
    /// `user` 0: mute-all (`until_ms` 0: off, else on).
    Mute {
        g: ConvId,
        user: UserId,
        until_ms: u64,
    },
    Transfer {
        g: ConvId,
        user: UserId,
    },
    Dissolve {
        g: ConvId,
    },
    /// An operator dissolves the group (admin API; `operator.rs`).
    OperatorDissolve {
        g: ConvId,
    },
    SetNotify {
        g: ConvId,
        muted: bool,
    },
}

pub(crate) fn role_to_wire(role: GroupRole) -> v1::GroupRole {
    match role {
        GroupRole::Member => v1::GroupRole::Member,
        GroupRole::Admin => v1::GroupRole::Admin,
        GroupRole::Owner => v1::GroupRole::Owner,
    }
}

pub(crate) fn policy_to_wire(policy: JoinPolicy) -> v1::JoinPolicy {
    match policy {
        JoinPolicy::Open => v1::JoinPolicy::Open,
        JoinPolicy::Approval => v1::JoinPolicy::Approval,
        JoinPolicy::InviteOnly => v1::JoinPolicy::InviteOnly,
    }
}

pub(crate) fn policy_from_wire(raw: i32) -> Option<JoinPolicy> {
    Some(match v1::JoinPolicy::try_from(raw).ok()? {
        v1::JoinPolicy::Open => JoinPolicy::Open,
        v1::JoinPolicy::Approval => JoinPolicy::Approval,
        v1::JoinPolicy::InviteOnly => JoinPolicy::InviteOnly,
    })
}

/// A GROUP_EVENT message's content.
pub(crate) fn event(kind: v1::GroupEventKind, actor: UserId, users: Vec<UserId>) -> v1::GroupEvent {
    v1::GroupEvent {
        kind: kind as i32,
        actor_id: actor,
        user_ids: users,
        ..v1::GroupEvent::default()
    }
}

pub(crate) fn encode_event(event: &v1::GroupEvent) -> Bytes {
    Bytes::from(event.encode_to_vec())
}
