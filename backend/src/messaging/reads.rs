//! Sync, history and the conversation list: reads straight from the store, on blocking threads.

use ringchat_proto::v1;

use super::{conv_from_wire, members_with, to_wire};
use crate::accounts::Refusal;
use crate::store::{ConvId, ConvKind, Ports, UserId, recency_bucket};

/// Conversations in one page of the list, at most (and the page size when the client asks 0).
pub const CONVERSATIONS_PAGE_MAX: u32 = 500;
/// Recency entries read per step while filling a page.
const RECENT_STEP: usize = 256;
/// Entries of one recency bucket (one hour of a user's activity) read at most; past it a page
/// may miss some of that hour's conversations.
const RECENT_BUCKET_ENTRIES_MAX: usize = 100_000;

fn page_limit(requested: u32, page_max: u32) -> usize {
    let limit = if requested == 0 {
        page_max
    } else {
        requested.min(page_max)
    };
    limit as usize
}

/// The seqs `user` may read in `conv` (first ≥ 1, last inclusive): all of a direct
/// conversation it is in; in a group, from joining (or the start, when the group shows its
/// history) to leaving.
fn visible_seqs(ports: &Ports, conv: ConvId, user: UserId) -> Result<(u64, u64), Refusal> {
    if conv.kind() == ConvKind::Group {
        let row = crate::groups::reads::visible(ports, conv, user)?;
        return Ok((row.visible_from_seq.max(1), row.last_visible_seq()));
    }
    members_with(conv, user)?;
    Ok((1, u64::MAX))
}

pub fn sync(
    ports: &Ports,
    user: UserId,
    req: &v1::Sync,
    page_max: u32,
) -> Result<v1::SyncBatch, Refusal> {
    let conv = conv_from_wire(req.conversation_id)?;
    let (first, last) = visible_seqs(ports, conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let after = req.after_seq.max(first - 1);
    let mut messages = ports.log.messages_after(conv, after, limit + 1)?;
    messages.retain(|m| m.seq <= last);
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
    let (first, last) = visible_seqs(ports, conv, user)?;
    let limit = page_limit(req.limit, page_max);
    let before = if req.before_seq == 0 {
        u64::MAX
    } else {
        req.before_seq
    };
    let before = before.min(last.saturating_add(1));
    let mut messages = ports.log.messages_before(conv, before, limit + 1)?;
    messages.retain(|m| m.seq >= first);
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    Ok(v1::HistoryBatch {
        conversation_id: req.conversation_id,
        messages: messages.into_iter().map(to_wire).collect(),
        has_more,
    })
}

pub fn conversations(
    ports: &Ports,
    user: UserId,
    req: &v1::Conversations,
) -> Result<v1::ConversationList, Refusal> {
    let limit = page_limit(req.limit, CONVERSATIONS_PAGE_MAX);
    let before = (req.before_time_ms != 0 || req.before_conversation_id != 0)
        .then_some((req.before_time_ms, req.before_conversation_id));
    let mut page = recent_page(ports, user, before, limit + 1)?;
    let has_more = page.len() > limit;
    page.truncate(limit);
    // (conversation, other member): a direct conversation's other member, whose cursors are
    // the peer's ticks.
    let peers: Vec<UserId> = page
        .iter()
        .map(|m| {
            members_with(m.conv_id, user)
                .ok()
                .and_then(|members| members.others(user).next())
                .unwrap_or(0)
        })
        .collect();
    let keys: Vec<(ConvId, UserId)> = page
        .iter()
        .zip(&peers)
        .flat_map(|(m, peer)| [(m.conv_id, user), (m.conv_id, *peer)])
        .collect();
    let rows = ports.cursors.cursor_rows(&keys)?;
    let mut list = Vec::with_capacity(page.len());
    for ((last, peer), rows) in page.into_iter().zip(peers).zip(rows.chunks(2)) {
        let cursor = |i: usize| rows[i].as_ref().map(|r| r.cursor).unwrap_or_default();
        let (mine, theirs) = (cursor(0), cursor(1));
        list.push(v1::Conversation {
            conversation_id: last.conv_id.to_wire(),
            peer_user_id: peer,
            max_seq: last.seq,
            read_seq: mine.read_seq,
            unread_count: last.seq.saturating_sub(mine.read_seq),
            last_message: Some(to_wire(last)),
            delivered_seq: mine.delivered_seq,
            peer_delivered_seq: theirs.delivered_seq,
            peer_read_seq: theirs.read_seq,
            ..Default::default()
        });
    }
    Ok(v1::ConversationList {
        conversations: list,
        has_more,
    })
}

/// Up to `want` of the user's conversations (as their newest messages), most recent first,
/// strictly after `before` = (time, conversation id) in that order. Reads whole recency buckets
/// (an hour of activity each), so that sorting inside a bucket gives the exact order; its cost
/// is the buckets the page spans, not how many conversations the user has.
fn recent_page(
    ports: &Ports,
    user: UserId,
    before: Option<(u64, u64)>,
    want: usize,
) -> Result<Vec<crate::store::MessageRecord>, Refusal> {
    let mut out = Vec::new();
    let mut from_bucket = before.map_or(u64::MAX, |(time, _)| recency_bucket(time));
    while out.len() < want {
        let mut entries = ports
            .memberships
            .recent_conversations(user, from_bucket, RECENT_STEP)?;
        let Some(&(last_bucket, _)) = entries.last() else {
            break;
        };
        if entries.len() == RECENT_STEP {
            // The last bucket may go on past this read: keep only whole buckets.
            entries.retain(|(b, _)| *b != last_bucket);
            if entries.is_empty() {
                entries = ports.memberships.recent_conversations(
                    user,
                    last_bucket,
                    RECENT_BUCKET_ENTRIES_MAX,
                )?;
                entries.retain(|(b, _)| *b == last_bucket);
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
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse((m.server_time_ms, m.conv_id.to_wire())));
        out.extend(found);
        let Some(next) = oldest.checked_sub(1) else {
            break;
        };
        from_bucket = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Durability;
    use crate::store::records::RECENCY_BUCKET_MS;
    use crate::store::{
        CommitGroup, ConversationLog, FjallStore, MessageRecord, RecencyMove, USER_ID_FIRST,
    };

    const ALICE: UserId = USER_ID_FIRST;
    /// Well past zero, so that buckets below it exist.
    const T0: u64 = 1_000 * RECENCY_BUCKET_MS;

    /// Alice's conversations with `times.len()` users, conversation i's only message at
    /// `times[i]`, indexed as the sequencer indexes them.
    fn store_with(times: &[u64]) -> (tempfile::TempDir, Ports, Vec<(u64, u64)>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let mut group = CommitGroup::default();
        let mut expected = Vec::new();
        for (i, &time) in times.iter().enumerate() {
            let peer = ALICE + 1 + i as u64;
            let conv = ConvId::direct(ALICE, peer).unwrap();
            group.messages.push(MessageRecord {
                conv_id: conv,
                seq: 1,
                msg_id: i as u64 + 1,
                from: peer,
                to: ALICE,
                client_msg_id: format!("c{i}"),
                content_type: 1,
                content: bytes::Bytes::from_static(b"hi"),
                server_time_ms: time,
                recalled: false,
                recall_of_seq: 0,
                recall_event_seq: 0,
                mentions: None,
            });
            group.recency.push(RecencyMove {
                user: ALICE,
                conv,
                from: None,
                to: recency_bucket(time),
            });
            expected.push((time, conv.to_wire()));
        }
        store.append(&group).unwrap();
        expected.sort_by_key(|e| std::cmp::Reverse(*e));
        (dir, Ports::of(store), expected)
    }

    /// Pages through the whole list; checks every page's size and `has_more`.
    fn all_pages(ports: &Ports, limit: u32) -> Vec<(u64, u64)> {
        let mut req = v1::Conversations {
            limit,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = conversations(ports, ALICE, &req).unwrap();
            assert!(page.conversations.len() <= limit as usize);
            for c in &page.conversations {
                let time = c.last_message.as_ref().unwrap().server_time_ms;
                seen.push((time, c.conversation_id));
            }
            if !page.has_more {
                return seen;
            }
            let (time, conv) = *seen.last().expect("a page before has_more holds something");
            req.before_time_ms = time;
            req.before_conversation_id = conv;
        }
    }

    #[test]
    fn pages_run_newest_first_across_buckets_with_ties() {
        // Three conversations per hour over 14 hours, two of them at the same instant.
        let times: Vec<u64> = (0..42u64)
            .map(|i| T0 + (i / 3) * RECENCY_BUCKET_MS + (i % 3).min(1) * 1_000)
            .collect();
        let (_dir, ports, expected) = store_with(&times);
        for limit in [1, 2, 5, 7, 100] {
            assert_eq!(all_pages(&ports, limit), expected, "limit {limit}");
        }
    }

    #[test]
    fn a_bucket_larger_than_one_read_is_listed_whole_and_in_order() {
        let times: Vec<u64> = (0..300u64).map(|i| T0 + i * 7).collect();
        let (_dir, ports, expected) = store_with(&times);
        assert_eq!(all_pages(&ports, 500), expected);
        assert_eq!(all_pages(&ports, 64), expected);
    }

    #[test]
    fn an_entry_its_conversation_moved_away_from_is_skipped() {
        let (_dir, ports, _) = store_with(&[T0, T0 + 10]);
        // The first conversation gets a message an hour later, and its old entry lingers
        // (as when the sequencer's cache lost the old head).
        let conv = ConvId::direct(ALICE, ALICE + 1).unwrap();
        let later = T0 + RECENCY_BUCKET_MS;
        let group = CommitGroup {
            messages: vec![MessageRecord {
                conv_id: conv,
                seq: 2,
                msg_id: 9,
                from: ALICE,
                to: ALICE + 1,
                client_msg_id: "again".into(),
                content_type: 1,
                content: bytes::Bytes::from_static(b"later"),
                server_time_ms: later,
                recalled: false,
                recall_of_seq: 0,
                mentions: None,
                recall_event_seq: 0,
            }],
            recency: vec![RecencyMove {
                user: ALICE,
                conv,
                from: None,
                to: recency_bucket(later),
            }],
            ..CommitGroup::default()
        };
        ports.log.append(&group).unwrap();
        let other = ConvId::direct(ALICE, ALICE + 2).unwrap().to_wire();
        assert_eq!(
            all_pages(&ports, 10),
            vec![(later, conv.to_wire()), (T0 + 10, other)]
        );
    }
}
