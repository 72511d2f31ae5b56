//! The conversation list: the user's direct conversations, found a page at a time through the
//! recency index, merged with the user's groups (`groups/conversations.rs`: every one of them,
//! at most `groups.per_user_max`, their heads read in one batch), most recent first.

use std::cmp::Reverse;

use ringchat_proto::v1;

use super::reads::page_limit;
use super::{members_with, to_wire};
use crate::accounts::Refusal;
use crate::groups::conversations::{self as groups, GroupHead};
use crate::store::{ConvId, CursorRecord, MessageRecord, Ports, UserId, recency_bucket};

/// Conversations in one page of the list, at most (and the page size when the client asks 0).
pub const CONVERSATIONS_PAGE_MAX: u32 = 500;
/// Recency entries read per step while filling a page.
const RECENT_STEP: usize = 256;
/// Entries of one recency bucket (one hour of a user's activity) read at most; past it a page
/// may miss some of that hour's conversations.
const RECENT_BUCKET_ENTRIES_MAX: usize = 100_000;

/// A list entry before its cursors are read.
pub(crate) enum Head {
    Direct(MessageRecord),
    Group(GroupHead),
}

impl Head {
    /// The conversation's newest message the user may read.
    pub(crate) fn last(&self) -> &MessageRecord {
        match self {
            Head::Direct(m) => m,
            Head::Group(h) => &h.last,
        }
    }

    /// The list's order, newest first: last activity, then conversation id.
    pub(crate) fn key(&self) -> (u64, u64) {
        match self {
            Head::Direct(m) => (m.server_time_ms, m.conv_id.to_wire()),
            Head::Group(h) => h.key(),
        }
    }
}

/// One page of the list. Both sources are filtered by the same cursor (`before`) and ordered by
/// the same key, so a page boundary falls at the same place whichever source an entry came from.
pub fn conversations(
    ports: &Ports,
    user: UserId,
    req: &v1::Conversations,
) -> Result<v1::ConversationList, Refusal> {
    let limit = page_limit(req.limit, CONVERSATIONS_PAGE_MAX);
    let before = (req.before_time_ms != 0 || req.before_conversation_id != 0)
        .then_some((req.before_time_ms, req.before_conversation_id));
    let mut heads: Vec<Head> = recent_page(ports, user, before, limit + 1, 0)?
        .into_iter()
        .map(Head::Direct)
        .collect();
    heads.extend(
        groups::heads(ports, user, before, limit + 1)?
            .0
            .into_iter()
            .map(Head::Group),
    );
    heads.sort_by_key(|h| Reverse(h.key()));
    let has_more = heads.len() > limit;
    heads.truncate(limit);
    Ok(v1::ConversationList {
        conversations: entries(ports, user, heads)?,
        has_more,
    })
}

/// The user's direct conversations (as their newest messages) with activity at or after
/// `not_before`, most recent first: all of them, or at least `want` when there are more.
pub(crate) fn recent_since(
    ports: &Ports,
    user: UserId,
    not_before: u64,
    want: usize,
) -> Result<Vec<MessageRecord>, Refusal> {
    recent_page(ports, user, None, want, not_before)
}

/// The newest messages of those of `convs` that are direct conversations of the user's (a
/// stranger's is skipped, as the list never shows it; groups are `groups::heads`'), in no
/// particular order: one batched read.
pub(crate) fn direct_heads_of(
    ports: &Ports,
    user: UserId,
    convs: &[ConvId],
) -> Result<Vec<MessageRecord>, Refusal> {
    let direct: Vec<ConvId> = convs
        .iter()
        .copied()
        .filter(|c| c.kind() != crate::store::ConvKind::Group)
        .filter(|c| members_with(*c, user).is_ok())
        .collect();
    Ok(ports
        .log
        .last_messages(&direct)?
        .into_iter()
        .flatten()
        .collect())
}

/// The list's entries of `heads`, in their order.
pub(crate) fn entries(
    ports: &Ports,
    user: UserId,
    heads: Vec<Head>,
) -> Result<Vec<v1::Conversation>, Refusal> {
    // The user's cursor row of each, and a direct conversation's other member's (whose
    // cursors are the peer's ticks), in one batch.
    let mut keys = Vec::with_capacity(heads.len() * 2);
    let mut peers = Vec::with_capacity(heads.len());
    for head in &heads {
        match head {
            Head::Direct(m) => {
                let peer = members_with(m.conv_id, user)
                    .ok()
                    .and_then(|members| members.others(user).next())
                    .unwrap_or(0);
                keys.extend([(m.conv_id, user), (m.conv_id, peer)]);
                peers.push(peer);
            }
            Head::Group(h) => keys.push((h.g, user)),
        }
    }
    let rows = ports.cursors.cursor_rows(&keys)?;
    let mut cursors = rows
        .into_iter()
        .map(|r| r.map(|r| r.cursor).unwrap_or_default());
    // Across a block neither side sees the other's cursors (docs/PROTOCOL.md, Blocks): a
    // moving read cursor would tell the blocked side when the blocker is active.
    let pairs: Vec<(UserId, UserId)> = peers.iter().map(|p| (user, *p)).collect();
    let mut blocked =
        crate::contacts::query::blocked_either_way(ports.contacts.as_ref(), &pairs)?.into_iter();
    let mut peers = peers.into_iter();
    let mut list = Vec::with_capacity(heads.len());
    for head in heads {
        let mine = cursors.next().expect("a cursor row per key");
        list.push(match head {
            Head::Direct(last) => {
                let theirs = cursors.next().expect("a cursor row per key");
                let theirs = if blocked.next().expect("a block state per peer") {
                    CursorRecord::default()
                } else {
                    theirs
                };
                let kind = kind_of(last.conv_id) as i32;
                v1::Conversation {
                    conversation_id: last.conv_id.to_wire(),
                    peer_user_id: peers.next().expect("a peer per direct conversation"),
                    max_seq: last.seq,
                    read_seq: mine.read_seq,
                    unread_count: last.seq.saturating_sub(mine.read_seq),
                    last_message: Some(to_wire(last)),
                    delivered_seq: mine.delivered_seq,
                    peer_delivered_seq: theirs.delivered_seq,
                    peer_read_seq: theirs.read_seq,
                    kind,
                    ..Default::default()
                }
            }
            Head::Group(h) => match groups::entry(ports, user, h, mine)? {
                Some(entry) => entry,
                None => continue,
            },
        });
    }
    Ok(list)
}

/// The list's kind of a conversation found through the recency index (groups come apart).
fn kind_of(conv: ConvId) -> v1::ConversationKind {
    match conv.kind() {
        crate::store::ConvKind::System => v1::ConversationKind::System,
        crate::store::ConvKind::Direct | crate::store::ConvKind::Group => {
            v1::ConversationKind::Direct
        }
    }
}

/// Up to `want` of the user's conversations (as their newest messages), most recent first,
/// strictly after `before` = (time, conversation id) in that order, none older than
/// `not_before` (ms; 0: no floor). Reads whole recency buckets (an hour of activity each), so
/// that sorting inside a bucket gives the exact order; its cost is the buckets the page spans,
/// not how many conversations the user has.
fn recent_page(
    ports: &Ports,
    user: UserId,
    before: Option<(u64, u64)>,
    want: usize,
    not_before: u64,
) -> Result<Vec<MessageRecord>, Refusal> {
    let mut out = Vec::new();
    let floor = recency_bucket(not_before);
    let mut from_bucket = before.map_or(u64::MAX, |(time, _)| recency_bucket(time));
    while out.len() < want && from_bucket >= floor {
        let mut entries =
            ports
                .memberships
                .recent_conversations(user, floor..=from_bucket, RECENT_STEP)?;
        let Some(&(last_bucket, _)) = entries.last() else {
            break;
        };
        if entries.len() == RECENT_STEP {
            // The last bucket may go on past this read: keep only whole buckets.
            entries.retain(|(b, _)| *b != last_bucket);
            if entries.is_empty() {
                // One bucket filled the read: that bucket alone, whole (its order is by
                // conversation, not time), and nothing of the older buckets.
                entries = ports.memberships.recent_conversations(
                    user,
                    last_bucket..=last_bucket,
                    RECENT_BUCKET_ENTRIES_MAX,
                )?;
            }
        }
        let oldest = entries.last().map_or(0, |(b, _)| *b);
        let convs: Vec<ConvId> = entries.iter().map(|(_, c)| *c).collect();
        let lasts = ports.log.last_messages(&convs)?;
        let mut found: Vec<_> = entries
            .iter()
            .zip(lasts)
            // An entry left behind by a conversation that has moved on is skipped.
            .filter_map(|((bucket, _), last)| {
                last.filter(|m| recency_bucket(m.server_time_ms) == *bucket)
            })
            .filter(|m| before.is_none_or(|b| (m.server_time_ms, m.conv_id.to_wire()) < b))
            .filter(|m| m.server_time_ms >= not_before)
            .collect();
        found.sort_by_key(|m| Reverse((m.server_time_ms, m.conv_id.to_wire())));
        out.extend(found);
        let Some(next) = oldest.checked_sub(1) else {
            break;
        };
        from_bucket = next;
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests;
