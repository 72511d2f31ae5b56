//! Sync, history and the conversation list: reads straight from the store, on blocking threads.

use ringchat_proto::v1;

use super::{conv_from_wire, members_with, to_wire};
use crate::accounts::Refusal;
use crate::store::{ConvId, Ports, UserId};

/// Conversations listed at most, most recent first.
pub const CONVERSATIONS_MAX: usize = 1000;
/// Conversations of one user looked at to find the most recent ones, at most.
pub const CONVERSATIONS_SCAN_MAX: usize = 10_000;

fn page_limit(requested: u32, page_max: u32) -> usize {
    let limit = if requested == 0 {
        page_max
    } else {
        requested.min(page_max)
    };
    limit as usize
}

pub fn sync(
    ports: &Ports,
    user: UserId,
    req: &v1::Sync,
    page_max: u32,
) -> Result<v1::SyncBatch, Refusal> {
    let conv = conv_from_wire(req.conversation_id)?;
    members_with(conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let mut messages = ports.log.messages_after(conv, req.after_seq, limit + 1)?;
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    Ok(v1::SyncBatch {
        conversation_id: req.conversation_id,
        messages: messages.into_iter().map(to_wire).collect(),
        has_more,
    })
}

pub fn history(
    ports: &Ports,
    user: UserId,
    req: &v1::History,
    page_max: u32,
) -> Result<v1::HistoryBatch, Refusal> {
    let conv = conv_from_wire(req.conversation_id)?;
    members_with(conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let before = if req.before_seq == 0 {
        u64::MAX
    } else {
        req.before_seq
    };
    let mut messages = ports.log.messages_before(conv, before, limit + 1)?;
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    Ok(v1::HistoryBatch {
        conversation_id: req.conversation_id,
        messages: messages.into_iter().map(to_wire).collect(),
        has_more,
    })
}

pub fn conversations(ports: &Ports, user: UserId) -> Result<v1::ConversationList, Refusal> {
    let mut convs = Vec::new();
    // (conversation, other member): a direct conversation's other member, whose cursors are
    // the peer's ticks.
    for conv in ports
        .memberships
        .user_conversations(user, CONVERSATIONS_SCAN_MAX)?
    {
        if let Ok(members) = members_with(conv, user) {
            convs.push((conv, members.others(user).next().unwrap_or(0)));
        }
    }
    let ids: Vec<ConvId> = convs.iter().map(|(c, _)| *c).collect();
    let lasts = ports.log.last_messages(&ids)?;
    let keys: Vec<(ConvId, UserId)> = convs
        .iter()
        .flat_map(|(c, peer)| [(*c, user), (*c, *peer)])
        .collect();
    let rows = ports.cursors.cursor_rows(&keys)?;
    let mut list = Vec::with_capacity(convs.len());
    for (((conv, peer), last), rows) in convs.into_iter().zip(lasts).zip(rows.chunks(2)) {
        let cursor = |i: usize| rows[i].as_ref().map(|r| r.cursor).unwrap_or_default();
        let (mine, theirs) = (cursor(0), cursor(1));
        let max_seq = last.as_ref().map_or(0, |m| m.seq);
        list.push(v1::Conversation {
            conversation_id: conv.to_wire(),
            peer_user_id: peer,
            max_seq,
            read_seq: mine.read_seq,
            unread_count: max_seq.saturating_sub(mine.read_seq),
            last_message: last.map(to_wire),
            delivered_seq: mine.delivered_seq,
            peer_delivered_seq: theirs.delivered_seq,
            peer_read_seq: theirs.read_seq,
        });
    }
    list.sort_by_key(|c| {
        std::cmp::Reverse(c.last_message.as_ref().map_or(0, |m| m.server_time_ms))
    });
    list.truncate(CONVERSATIONS_MAX);
    Ok(v1::ConversationList {
        conversations: list,
    })
}
