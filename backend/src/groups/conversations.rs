//! The user's groups in the conversation list (`messaging/conversations.rs` merges them with
//! the direct conversations): no recency index is kept for groups, since it would cost a write
//! per member whenever a group's hour of activity changes. Instead every list request reads the
//! user's group rows (all of them, up to `GROUP_ROWS_READ_MAX`) and their heads in one batch, and the
//! groups that make the page cost more (their record and the mention count).

use ringchat_proto::v1;

use crate::accounts::Refusal;
use crate::messaging::to_wire;
use crate::store::{ConvId, CursorRecord, MessageRecord, Ports, UserGroupRecord, UserId};

/// Unread mentions are counted up to this (a badge shows "99+").
pub const UNREAD_MENTIONS_MAX: u32 = 99;

/// One of the user's groups as the list sees it: its newest message the user may read.
#[derive(Debug)]
pub(crate) struct GroupHead {
    pub g: ConvId,
    pub row: UserGroupRecord,
    pub last: MessageRecord,
}

impl GroupHead {
    /// The list's order: last activity, then conversation id.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.last.server_time_ms, self.g.to_wire())
    }
}

/// Group rows one user's list reads, at most: twice the highest `groups.per_user_max`. A user
/// may hold more rows than today's `per_user_max` (an operator lowered it, or joins on two
/// cluster nodes each passed it by one): those are listed too, up to this bound. Not today's
/// `per_user_max`: a lowered one would otherwise cut the list, or page it into many reads.
pub(crate) const GROUP_ROWS_READ_MAX: usize = 20_000;

/// The user's groups, most recent first, strictly before `before`, at most `want`; and whether
/// every row was read (false past [`GROUP_ROWS_READ_MAX`]). The rows are one read. A current
/// member's head is the group's last message, a former member's the event it left by: each
/// kind one batched read.
pub(crate) fn heads(
    ports: &Ports,
    user: UserId,
    before: Option<(u64, u64)>,
    want: usize,
) -> Result<(Vec<GroupHead>, bool), Refusal> {
    let mut rows = ports
        .groups
        .groups_of_user(user, 0, GROUP_ROWS_READ_MAX + 1)?;
    let every = rows.len() <= GROUP_ROWS_READ_MAX;
    if !every {
        tracing::warn!(
            user,
            "the user has more group rows than the conversation list reads; those past it (by id) are left out"
        );
        rows.truncate(GROUP_ROWS_READ_MAX);
    }
    let mut out = heads_of_rows(ports, rows, before)?;
    out.sort_unstable_by_key(|h| std::cmp::Reverse(h.key()));
    out.truncate(want);
    Ok((out, every))
}

/// The heads of the user's group rows, strictly before `before`.
fn heads_of_rows(
    ports: &Ports,
    rows: Vec<(ConvId, UserGroupRecord)>,
    before: Option<(u64, u64)>,
) -> Result<Vec<GroupHead>, Refusal> {
    let (members, former): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, r)| r.is_member());
    let convs: Vec<ConvId> = members.iter().map(|(g, _)| *g).collect();
    let lasts = ports.log.last_messages(&convs)?;
    let mut out = Vec::with_capacity(members.len() + former.len());
    for ((g, row), last) in members.into_iter().zip(lasts) {
        if let Some(last) = last {
            out.push(GroupHead { g, row, last });
        }
    }
    let left: Vec<(ConvId, u64)> = former.iter().map(|(g, r)| (*g, r.left_seq)).collect();
    let lefts = ports.log.messages_at(&left)?;
    for ((g, row), last) in former.into_iter().zip(lefts) {
        if let Some(last) = last {
            out.push(GroupHead { g, row, last });
        }
    }
    out.retain(|h| before.is_none_or(|b| h.key() < b));
    Ok(out)
}

/// A group's entry in the list, with the user's own cursors (`mine`).
pub(crate) fn entry(
    ports: &Ports,
    user: UserId,
    head: GroupHead,
    mine: CursorRecord,
) -> Result<v1::Conversation, Refusal> {
    let GroupHead { g, row, last } = head;
    let (group_name, member_count) = if row.is_member() {
        ports
            .groups
            .group(g)?
            .map(|r| (r.name, r.member_count))
            .unwrap_or_default()
    } else {
        // A former member's head is the event it left by, which keeps the group as it was.
        let left = super::reads::former_snapshot(ports, g, Some(&last))?;
        (left.name, left.member_count)
    };
    let max_seq = last.seq;
    // What came before the user could see it is not unread.
    let read = mine.read_seq.max(row.visible_from_seq.saturating_sub(1));
    let unread_count = max_seq.saturating_sub(read);
    let unread_mentions = if unread_count == 0 {
        0
    } else {
        ports
            .groups
            .unread_mentions(g, user, read, max_seq, UNREAD_MENTIONS_MAX)?
    };
    Ok(v1::Conversation {
        conversation_id: g.to_wire(),
        max_seq,
        read_seq: mine.read_seq,
        unread_count,
        last_message: Some(to_wire(last)),
        delivered_seq: mine.delivered_seq,
        kind: v1::ConversationKind::Group as i32,
        unread_mentions,
        group_name,
        member_count,
        muted: row.notify_muted,
        ..v1::Conversation::default()
    })
}
