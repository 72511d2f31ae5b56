//! The user's groups in the conversation list (`messaging/conversations.rs` merges them with
//! the direct conversations): no recency index is kept for groups, since it would cost a write
//! per member whenever a group's hour of activity changes. Instead every list request reads the
//! user's group rows (all of them, up to `GROUP_ROWS_READ_MAX`) and their heads in one batch, then
//! the rows again to check the heads against a removal committed in between; the groups that
//! make the page cost more (their record, their row once more, and the mention count).

use std::collections::HashMap;

use ringchat_proto::v1;

use super::reads::visible_after_read;

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

/// Some of a user's group rows, as `groups_of_user` gives them.
type Rows = Vec<(ConvId, UserGroupRecord)>;

/// The user's groups, most recent first, strictly before `before`, at most `want`; and whether
/// every row was read (false past [`GROUP_ROWS_READ_MAX`]). The rows are one read, and one more
/// after the heads to check them (Sync and History's rule). A current member's head is the
/// group's last message, a former member's the event it left by: each kind one batched read.
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
    let mut out = heads_of_rows(ports, user, rows, before)?;
    out.sort_unstable_by_key(|h| std::cmp::Reverse(h.key()));
    out.truncate(want);
    Ok((out, every))
}

/// The heads of the user's group rows, strictly before `before`. A head read for a row that
/// said "member" is checked against the rows read again after it ([`recheck`]).
fn heads_of_rows(
    ports: &Ports,
    user: UserId,
    rows: Rows,
    before: Option<(u64, u64)>,
) -> Result<Vec<GroupHead>, Refusal> {
    let (members, mut former): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|(_, r)| r.is_member());
    let convs: Vec<ConvId> = members.iter().map(|(g, _)| *g).collect();
    let lasts = ports.log.last_messages(&convs)?;
    let read: Vec<GroupHead> = members
        .into_iter()
        .zip(lasts)
        .filter_map(|((g, row), last)| last.map(|last| GroupHead { g, row, last }))
        .collect();
    let (mut out, left) = recheck(ports, user, read)?;
    former.extend(left);
    out.extend(former_heads(ports, former)?);
    out.retain(|h| before.is_none_or(|b| h.key() < b));
    Ok(out)
}

/// Former members' heads: each the event it left by, at its `left_seq` (one batched read).
fn former_heads(ports: &Ports, rows: Rows) -> Result<Vec<GroupHead>, Refusal> {
    let keys: Vec<(ConvId, u64)> = rows.iter().map(|(g, r)| (*g, r.left_seq)).collect();
    let lefts = ports.log.messages_at(&keys)?;
    Ok(rows
        .into_iter()
        .zip(lefts)
        .filter_map(|((g, row), last)| last.map(|last| GroupHead { g, row, last }))
        .collect())
}

/// What the list may show of a head read while the user's row said "member", by the row read
/// again after the head (`now`; `None`: gone, the group hidden since).
enum Checked {
    /// The head, with the row as it is now.
    Head(GroupHead),
    /// Left (or removed) since: the former member's view, the event at the row's `left_seq`,
    /// whatever the head read.
    Left(ConvId, UserGroupRecord),
    /// Nothing to show this time: hidden since, or back with its history hidden after a
    /// head from before the return.
    Gone,
}

/// The rule of Sync and History ([`visible_after_read`]) applied to one head.
fn checked(head: GroupHead, now: Option<UserGroupRecord>) -> Checked {
    let Some(now) = now else {
        return Checked::Gone;
    };
    let (first, last) = visible_after_read(head.row.visible_seqs(), &now);
    if last != u64::MAX {
        Checked::Left(head.g, now)
    } else if head.last.seq >= first {
        Checked::Head(GroupHead { row: now, ..head })
    } else {
        Checked::Gone
    }
}

/// The heads `read` for rows that said "member", checked against the user's rows read again
/// after them (one read): a member removed between the rows' read and the heads' would
/// otherwise get, as its head, a message from after its removal, and with it the group's
/// current details. Returns the heads kept and the rows of those who left since.
fn recheck(
    ports: &Ports,
    user: UserId,
    read: Vec<GroupHead>,
) -> Result<(Vec<GroupHead>, Rows), Refusal> {
    let Some(from) = read.iter().map(|h| h.g.to_wire()).min() else {
        return Ok((read, Vec::new()));
    };
    // From the first of them on, so that the bound cuts no row the first read had.
    let now: HashMap<ConvId, UserGroupRecord> = ports
        .groups
        .groups_of_user(user, from.saturating_sub(1), GROUP_ROWS_READ_MAX)?
        .into_iter()
        .collect();
    let mut kept = Vec::with_capacity(read.len());
    let mut left = Vec::new();
    for head in read {
        let row = now.get(&head.g).copied();
        match checked(head, row) {
            Checked::Head(h) => kept.push(h),
            Checked::Left(g, row) => left.push((g, row)),
            Checked::Gone => {}
        }
    }
    Ok((kept, left))
}

/// A group's entry in the list, with the user's own cursors (`mine`); `None` when the user
/// turns out to have nothing to see of it now (`Checked::Gone`).
pub(crate) fn entry(
    ports: &Ports,
    user: UserId,
    head: GroupHead,
    mine: CursorRecord,
) -> Result<Option<v1::Conversation>, Refusal> {
    let g = head.g;
    let (row, last, record) = if head.row.is_member() {
        let record = ports.groups.group(g)?;
        // The record is read after the heads' check: the row read again after it tells
        // whether the user was still a member then (a removal and a rename in between would
        // otherwise show the former member the new name).
        match checked(head, ports.groups.user_group(user, g)?) {
            Checked::Head(h) => (h.row, h.last, record),
            Checked::Left(_, row) => match ports.log.message(g, row.left_seq)? {
                Some(left) => (row, left, None),
                None => return Ok(None),
            },
            Checked::Gone => return Ok(None),
        }
    } else {
        (head.row, head.last, None)
    };
    let (group_name, member_count) = if row.is_member() {
        record.map(|r| (r.name, r.member_count)).unwrap_or_default()
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
    Ok(Some(v1::Conversation {
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
    }))
}
