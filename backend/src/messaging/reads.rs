//! Sync and history: reads straight from the store, on blocking threads (the conversation list
//! is in `conversations.rs`).

use prost::Message as _;
use ringchat_proto::v1;

use super::{conv_from_wire, members_with, to_wire};
use crate::accounts::Refusal;
use crate::store::{ConvId, ConvKind, Ports, UserId};

pub(super) fn page_limit(requested: u32, page_max: u32) -> usize {
    let limit = if requested == 0 {
        page_max
    } else {
        requested.min(page_max)
    };
    limit as usize
}

/// Whether `seq` is among the seqs `(first, last)` a user may read (both inclusive): the one
/// test of every read (Sync, History, a forwarded file's message) and of a group recall.
pub(crate) fn within((first, last): (u64, u64), seq: u64) -> bool {
    (first..=last).contains(&seq)
}

/// The seqs `user` may read in `conv` (first ≥ 1, last inclusive): all of a direct
/// conversation it is in; in a group, from joining (or the start, when the group shows its
/// history) to leaving.
fn visible_seqs(ports: &Ports, conv: ConvId, user: UserId) -> Result<(u64, u64), Refusal> {
    if conv.kind() == ConvKind::Group {
        return Ok(crate::groups::reads::visible(ports, conv, user)?.visible_seqs());
    }
    members_with(conv, user)?;
    Ok((1, u64::MAX))
}

/// The seqs `user` may read in `conv`, looked up again after the messages were read, within
/// what the first look said (`seqs`): `groups::reads::visible_after_read`.
fn visible_after_read(
    ports: &Ports,
    conv: ConvId,
    user: UserId,
    seqs: (u64, u64),
) -> Result<(u64, u64), Refusal> {
    if conv.kind() != ConvKind::Group || seqs.1 != u64::MAX {
        return Ok(seqs);
    }
    let now = crate::groups::reads::visible(ports, conv, user)?;
    Ok(crate::groups::reads::visible_after_read(seqs, &now))
}

/// The message at `seq` of `conv`, if `user` may read it by the rule of Sync and History
/// (`None` outside what it may see); `NOT_FOUND` when it is not a conversation of the user's.
pub(crate) fn visible_message(
    ports: &Ports,
    user: UserId,
    conv: ConvId,
    seq: u64,
) -> Result<Option<crate::store::MessageRecord>, Refusal> {
    let seqs = visible_seqs(ports, conv, user)?;
    if !within(seqs, seq) {
        return Ok(None);
    }
    let message = ports.log.message(conv, seq)?;
    if message.is_some() && !within(visible_after_read(ports, conv, user, seqs)?, seq) {
        return Ok(None);
    }
    Ok(message)
}

/// The front of `messages` (already in the page's order) whose encoded size stays within
/// `bytes_max`, always at least one message; whether it cut any. The one bound of a reply's
/// size that Resume keeps too (`login.resume_bytes_max`, which the server holds to half of
/// `gateway.outbound_bytes_max`): a page of large messages would otherwise fill the client's
/// outbound queue alone, and the next push would kick it as a slow consumer.
fn cut_to_bytes(messages: &mut Vec<v1::Message>, bytes_max: u64) -> bool {
    let mut bytes = 0u64;
    let keep = messages
        .iter()
        .position(|m| {
            let len = m.encoded_len();
            // Field tag and length prefix of the message within the batch.
            bytes = bytes.saturating_add((1 + prost::length_delimiter_len(len) + len) as u64);
            bytes > bytes_max
        })
        .map_or(messages.len(), |over| over.max(1));
    let cut = keep < messages.len();
    messages.truncate(keep);
    cut
}

/// `bytes_max`: encoded bytes of the page's messages, at most (at least one is sent); a page
/// cut short says `has_more`.
pub fn sync(
    ports: &Ports,
    user: UserId,
    req: &v1::Sync,
    page_max: u32,
    bytes_max: u64,
) -> Result<v1::SyncBatch, Refusal> {
    let conv = conv_from_wire(req.conversation_id)?;
    let (first, last) = visible_seqs(ports, conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let after = req.after_seq.max(first - 1);
    // Nothing visible after `after` (a former member synced to its leaving): no page to read
    // and filter out.
    let mut messages = if after >= last {
        Vec::new()
    } else {
        ports.log.messages_after(conv, after, limit + 1)?
    };
    // Whether visible seqs follow the page is told by what was read, not by what the
    // visibility filter kept: a filter that dropped the page's front (the member re-added,
    // history hidden, between the two reads) would otherwise end the client's paging early.
    let read_past_page = messages.len() > limit;
    let mut more_after = None;
    if let Some(read_last) = messages.last().map(|m| m.seq) {
        let (first, last) = visible_after_read(ports, conv, user, (first, last))?;
        messages.retain(|m| (first..=last).contains(&m.seq));
        more_after = Some(read_last < last);
    }
    let has_more = messages.len() > limit || (read_past_page && more_after.unwrap_or(false));
    messages.truncate(limit);
    let mut messages: Vec<v1::Message> = messages.into_iter().map(to_wire).collect();
    let cut = cut_to_bytes(&mut messages, bytes_max);
    Ok(v1::SyncBatch {
        conversation_id: req.conversation_id,
        messages,
        has_more: has_more || cut,
    })
}

/// `bytes_max` as for [`sync`] (the newest messages of the page are kept).
pub fn history(
    ports: &Ports,
    user: UserId,
    req: &v1::History,
    page_max: u32,
    bytes_max: u64,
) -> Result<v1::HistoryBatch, Refusal> {
    let conv = conv_from_wire(req.conversation_id)?;
    let (first, last) = visible_seqs(ports, conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let before = if req.before_seq == 0 {
        u64::MAX
    } else {
        req.before_seq
    };
    let before = before.min(last.saturating_add(1));
    // Nothing visible before `before` (history from before joining): no page to read and
    // filter out.
    let mut messages = if before <= first {
        Vec::new()
    } else {
        ports.log.messages_before(conv, before, limit + 1)?
    };
    messages.retain(|m| m.seq >= first);
    // Whether visible seqs follow the page is told by what was read, not by what the
    // visibility filter kept: a filter that dropped the page's front (the member re-added,
    // history hidden, between the two reads) would otherwise end the client's paging early.
    let read_past_page = messages.len() > limit;
    let mut more_after = None;
    if let Some(read_last) = messages.last().map(|m| m.seq) {
        let (first, last) = visible_after_read(ports, conv, user, (first, last))?;
        messages.retain(|m| (first..=last).contains(&m.seq));
        more_after = Some(read_last < last);
    }
    let has_more = messages.len() > limit || (read_past_page && more_after.unwrap_or(false));
    messages.truncate(limit);
    let mut messages: Vec<v1::Message> = messages.into_iter().map(to_wire).collect();
    let cut = cut_to_bytes(&mut messages, bytes_max);
    Ok(v1::HistoryBatch {
        conversation_id: req.conversation_id,
        messages,
        has_more: has_more || cut,
    })
}

#[cfg(test)]
mod tests;
