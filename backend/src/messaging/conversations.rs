//! The conversation list: the user's direct conversations, found a page at a time through the
//! recency index, merged with the user's groups (`groups/conversations.rs`: every one of them,
//! at most `groups.per_user_max`, their heads read in one batch), most recent first.

use std::cmp::Reverse;

use ringchat_proto::v1;

use super::reads::page_limit;
use super::{members_with, to_wire};
use crate::accounts::Refusal;
use crate::groups::conversations::{self as groups, GroupHead};
use crate::store::{ConvId, MessageRecord, Ports, UserId, recency_bucket};

/// Conversations in one page of the list, at most (and the page size when the client asks 0).
pub const CONVERSATIONS_PAGE_MAX: u32 = 500;
/// Recency entries read per step while filling a page.
const RECENT_STEP: usize = 256;
/// Entries of one recency bucket (one hour of a user's activity) read at most; past it a page
/// may miss some of that hour's conversations.
const RECENT_BUCKET_ENTRIES_MAX: usize = 100_000;

/// A list entry before its cursors are read.
enum Head {
    Direct(MessageRecord),
    Group(GroupHead),
}

impl Head {
    /// The list's order, newest first: last activity, then conversation id.
    fn key(&self) -> (u64, u64) {
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
    groups_max: u32,
) -> Result<v1::ConversationList, Refusal> {
    let limit = page_limit(req.limit, CONVERSATIONS_PAGE_MAX);
    let before = (req.before_time_ms != 0 || req.before_conversation_id != 0)
        .then_some((req.before_time_ms, req.before_conversation_id));
    let mut heads: Vec<Head> = recent_page(ports, user, before, limit + 1)?
        .into_iter()
        .map(Head::Direct)
        .collect();
    heads.extend(
        groups::heads(ports, user, before, groups_max, limit + 1)?
            .into_iter()
            .map(Head::Group),
    );
    heads.sort_by_key(|h| Reverse(h.key()));
    let has_more = heads.len() > limit;
    heads.truncate(limit);
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
    let mut peers = peers.into_iter();
    let mut list = Vec::with_capacity(heads.len());
    for head in heads {
        let mine = cursors.next().expect("a cursor row per key");
        list.push(match head {
            Head::Direct(last) => {
                let theirs = cursors.next().expect("a cursor row per key");
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
                    ..Default::default()
                }
            }
            Head::Group(h) => groups::entry(ports, user, h, mine)?,
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
) -> Result<Vec<MessageRecord>, Refusal> {
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
            let page = conversations(ports, ALICE, &req, 500).unwrap();
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

    /// A group of Alice's with messages at `times` (seq 1, 2, …), in the list as groups are.
    fn add_group(ports: &Ports, n: u64, times: &[u64], row: crate::store::UserGroupRecord) -> u64 {
        use crate::store::{GroupRecord, GroupWrites, JoinPolicy};
        let g = ConvId::group(n).unwrap();
        let messages = times
            .iter()
            .enumerate()
            .map(|(i, &time)| MessageRecord {
                conv_id: g,
                seq: i as u64 + 1,
                msg_id: 1_000 * n + i as u64,
                from: ALICE + 1,
                to: 0,
                client_msg_id: format!("g{n}-{i}"),
                content_type: 1,
                content: bytes::Bytes::from_static(b"hi"),
                server_time_ms: time,
                recalled: false,
                recall_of_seq: 0,
                recall_event_seq: 0,
                mentions: None,
            })
            .collect();
        let record = GroupRecord {
            name: format!("group {n}"),
            avatar_url: String::new(),
            intro: String::new(),
            owner: ALICE + 1,
            join_policy: JoinPolicy::Open,
            history_visible: false,
            mute_all: false,
            member_count: 7,
            admin_count: 0,
            application_count: 0,
            created_ms: times[0],
            dissolved_seq: 0,
        };
        let group = CommitGroup {
            messages,
            groups: GroupWrites {
                groups: vec![(g, record)],
                user_groups: vec![(ALICE, g, Some(row))],
                // Seqs 2 and 3 mention Alice (3 mentions everyone).
                mentions: vec![(g, ALICE, 2), (g, crate::store::MENTION_ALL_USER, 3)],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        };
        ports.log.append(&group).unwrap();
        g.to_wire()
    }

    #[test]
    fn groups_merge_with_direct_conversations_by_recency_across_pages() {
        let times: Vec<u64> = (0..6u64).map(|i| T0 + i * RECENCY_BUCKET_MS).collect();
        let (_dir, ports, mut expected) = store_with(&times);
        let member = crate::store::UserGroupRecord {
            visible_from_seq: 1,
            left_seq: 0,
            notify_muted: true,
        };
        // One group between the direct conversations, one newer than all, one tied in time
        // with a direct conversation (the id breaks the tie).
        let g1 = add_group(&ports, 1, &[T0, T0 + 2 * RECENCY_BUCKET_MS + 5], member);
        let g2 = add_group(&ports, 2, &[T0, T0 + 1, T0 + 9 * RECENCY_BUCKET_MS], member);
        let g3 = add_group(&ports, 3, &[T0 + 4 * RECENCY_BUCKET_MS], member);
        // A group Alice left at seq 2: listed at the event she left by.
        let left = crate::store::UserGroupRecord {
            left_seq: 2,
            ..member
        };
        let g4 = add_group(&ports, 4, &[T0, T0 + 3, T0 + 20 * RECENCY_BUCKET_MS], left);
        expected.extend([
            (T0 + 2 * RECENCY_BUCKET_MS + 5, g1),
            (T0 + 9 * RECENCY_BUCKET_MS, g2),
            (T0 + 4 * RECENCY_BUCKET_MS, g3),
            (T0 + 3, g4),
        ]);
        expected.sort_by_key(|e| Reverse(*e));
        for limit in [1, 2, 3, 4, 100] {
            assert_eq!(all_pages(&ports, limit), expected, "limit {limit}");
        }
        let page = conversations(&ports, ALICE, &v1::Conversations::default(), 500).unwrap();
        let entry = |id: u64| {
            page.conversations
                .iter()
                .find(|c| c.conversation_id == id)
                .unwrap()
                .clone()
        };
        let e2 = entry(g2);
        assert_eq!(e2.kind, v1::ConversationKind::Group as i32);
        assert_eq!((e2.group_name.as_str(), e2.member_count), ("group 2", 7));
        assert_eq!((e2.max_seq, e2.unread_count, e2.unread_mentions), (3, 3, 2));
        assert!(e2.muted);
        assert_eq!(e2.peer_user_id, 0);
        // Left at seq 2: nothing after it counts.
        let e4 = entry(g4);
        assert_eq!((e4.max_seq, e4.unread_count, e4.unread_mentions), (2, 2, 1));
        // Reading moves unread and mentions; the groups limit bounds what is listed.
        let read = CommitGroup {
            cursor_rows: vec![(
                ConvId::from_wire(g2).unwrap(),
                ALICE,
                crate::store::CursorRow {
                    cursor: crate::store::CursorRecord {
                        delivered_seq: 2,
                        read_seq: 2,
                    },
                    ..Default::default()
                },
            )],
            ..CommitGroup::default()
        };
        ports.log.append(&read).unwrap();
        let page = conversations(&ports, ALICE, &v1::Conversations::default(), 500).unwrap();
        let e2 = page
            .conversations
            .iter()
            .find(|c| c.conversation_id == g2)
            .unwrap();
        assert_eq!(
            (e2.read_seq, e2.unread_count, e2.unread_mentions),
            (2, 1, 1)
        );
        let page = conversations(&ports, ALICE, &v1::Conversations::default(), 1).unwrap();
        let groups = page
            .conversations
            .iter()
            .filter(|c| c.kind == v1::ConversationKind::Group as i32)
            .count();
        assert_eq!(groups, 1, "groups.per_user_max bounds the groups read");
    }
}
