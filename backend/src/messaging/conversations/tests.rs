//! The conversation list over a fjall store: direct conversations paged across recency
//! buckets, and groups merged with them.

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

/// A group of Alice's with messages at `times` (seq 1, 2, …), in the list as groups are.
pub(crate) fn add_group(
    ports: &Ports,
    n: u64,
    times: &[u64],
    row: crate::store::UserGroupRecord,
) -> u64 {
    add_group_with_event(ports, n, times, row, None)
}

/// [`add_group`], the message at `event.0` a group event (`event.1`).
fn add_group_with_event(
    ports: &Ports,
    n: u64,
    times: &[u64],
    row: crate::store::UserGroupRecord,
    event: Option<(u64, v1::GroupEvent)>,
) -> u64 {
    use crate::store::{GroupRecord, GroupWrites, JoinPolicy};
    use prost::Message as _;
    let g = ConvId::group(n).unwrap();
    let messages = times
        .iter()
        .enumerate()
        .map(|(i, &time)| {
            let seq = i as u64 + 1;
            let (content_type, content) = match &event {
                Some((at, ev)) if *at == seq => (
                    v1::ContentType::GroupEvent as i32,
                    bytes::Bytes::from(ev.encode_to_vec()),
                ),
                _ => (1, bytes::Bytes::from_static(b"hi")),
            };
            MessageRecord {
                conv_id: g,
                seq,
                msg_id: 1_000 * n + i as u64,
                from: ALICE + 1,
                to: 0,
                client_msg_id: format!("g{n}-{i}"),
                content_type,
                content,
                server_time_ms: time,
                recalled: false,
                recall_of_seq: 0,
                recall_event_seq: 0,
                mentions: None,
            }
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
        added: false,
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
    let page = conversations(&ports, ALICE, &v1::Conversations::default()).unwrap();
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
    // Reading moves unread and mentions.
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
    let page = conversations(&ports, ALICE, &v1::Conversations::default()).unwrap();
    let e2 = page
        .conversations
        .iter()
        .find(|c| c.conversation_id == g2)
        .unwrap();
    assert_eq!(
        (e2.read_seq, e2.unread_count, e2.unread_mentions),
        (2, 1, 1)
    );
}

/// A former member's entry names the group as the event it left by keeps it, whatever the
/// group became after. An event stored before events kept the group (older servers) has none:
/// then the group's record is shown only while that event is the group's last message (nothing
/// changed since), else nothing.
#[test]
fn a_former_members_entry_shows_the_group_as_it_left_it() {
    let (_dir, ports, _) = store_with(&[T0]);
    let left_at = |seq| crate::store::UserGroupRecord {
        visible_from_seq: 1,
        left_seq: seq,
        notify_muted: false,
        added: false,
    };
    let removed = |group: Option<v1::GroupSnapshot>| v1::GroupEvent {
        kind: v1::GroupEventKind::Removed as i32,
        actor_id: ALICE + 1,
        user_ids: vec![ALICE],
        group,
        ..v1::GroupEvent::default()
    };
    let kept = v1::GroupSnapshot {
        name: "as alice left it".into(),
        member_count: 3,
        ..v1::GroupSnapshot::default()
    };
    let g1 = add_group_with_event(
        &ports,
        1,
        &[T0, T0 + 1, T0 + 2],
        left_at(2),
        Some((2, removed(Some(kept)))),
    );
    let g2 = add_group_with_event(
        &ports,
        2,
        &[T0, T0 + 1],
        left_at(2),
        Some((2, removed(None))),
    );
    let g3 = add_group_with_event(
        &ports,
        3,
        &[T0, T0 + 1, T0 + 2],
        left_at(2),
        Some((2, removed(None))),
    );
    let page = conversations(&ports, ALICE, &v1::Conversations::default()).unwrap();
    let seen = |id: u64| {
        let e = page
            .conversations
            .iter()
            .find(|c| c.conversation_id == id)
            .unwrap();
        (e.group_name.as_str(), e.member_count, e.max_seq)
    };
    assert_eq!(seen(g1), ("as alice left it", 3, 2), "kept by the event");
    assert_eq!(seen(g2), ("group 2", 7, 2), "an old event, still the last");
    assert_eq!(seen(g3), ("", 0, 2), "an old event, the group moved on");
}

/// A conversation log that counts the calls made to it (every method, the batched ones too)
/// over the real embedded store.
pub(crate) struct CountingLog {
    pub inner: Arc<dyn ConversationLog>,
    pub calls: std::sync::atomic::AtomicUsize,
}

impl CountingLog {
    fn count(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConversationLog for CountingLog {
    fn append(&self, group: &CommitGroup) -> Result<(), crate::store::StoreError> {
        self.inner.append(group)
    }
    fn next_msg_id(&self) -> Result<u64, crate::store::StoreError> {
        self.count();
        self.inner.next_msg_id()
    }
    fn last_message(
        &self,
        conv: ConvId,
    ) -> Result<Option<MessageRecord>, crate::store::StoreError> {
        self.count();
        self.inner.last_message(conv)
    }
    fn last_messages(
        &self,
        convs: &[ConvId],
    ) -> Result<Vec<Option<MessageRecord>>, crate::store::StoreError> {
        self.count();
        self.inner.last_messages(convs)
    }
    fn conversation(
        &self,
        conv: ConvId,
    ) -> Result<Option<crate::store::ConvRecord>, crate::store::StoreError> {
        self.count();
        self.inner.conversation(conv)
    }
    fn message(
        &self,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, crate::store::StoreError> {
        self.count();
        self.inner.message(conv, seq)
    }
    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, crate::store::StoreError> {
        self.count();
        self.inner.messages_at(keys)
    }
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, crate::store::StoreError> {
        self.count();
        self.inner.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, crate::store::StoreError> {
        self.count();
        self.inner.messages_before(conv, before_seq, limit)
    }
}

/// Log calls one first page of 5 makes for a user who left `former` groups.
fn log_calls_with_former_groups(former: u64) -> usize {
    let (_dir, mut ports, _) = store_with(&[T0]);
    let counting = Arc::new(CountingLog {
        inner: Arc::clone(&ports.log),
        calls: 0.into(),
    });
    ports.log = Arc::clone(&counting) as _;
    for n in 1..=former {
        let left = crate::store::UserGroupRecord {
            visible_from_seq: 1,
            left_seq: 2,
            notify_muted: false,
            added: false,
        };
        add_group(&ports, n, &[T0 + n, T0 + n + 1, T0 + n + 2], left);
    }
    let req = v1::Conversations {
        limit: 5,
        ..Default::default()
    };
    let before = counting.calls.load(std::sync::atomic::Ordering::Relaxed);
    let page = conversations(&ports, ALICE, &req).unwrap();
    assert_eq!(page.conversations.len(), 5);
    let group = v1::ConversationKind::Group as i32;
    assert!(
        page.conversations
            .iter()
            .all(|c| c.kind == group && c.max_seq == 2),
        "listed at the events they left by"
    );
    counting.calls.load(std::sync::atomic::Ordering::Relaxed) - before
}

/// Former groups' heads (the events their user left by) are read in one batch: the log calls
/// of a page do not grow with how many groups the user left.
#[test]
fn former_groups_heads_cost_a_constant_number_of_log_calls() {
    let few = log_calls_with_former_groups(5);
    let many = log_calls_with_former_groups(50);
    assert_eq!(few, many, "5 former groups: {few} calls; 50: {many}");
}

/// The recency index over the real store, counting the entries it hands out.
struct CountingRecency {
    inner: Arc<dyn crate::store::MembershipStore>,
    entries: std::sync::atomic::AtomicUsize,
}

impl crate::store::MembershipStore for CountingRecency {
    fn recent_conversations(
        &self,
        user: UserId,
        buckets: std::ops::RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, crate::store::StoreError> {
        let entries = self.inner.recent_conversations(user, buckets, limit)?;
        self.entries
            .fetch_add(entries.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(entries)
    }
}

/// An hour busier than one read takes that hour alone: its entries are read whole, and the
/// older hours' are not read along with them (they were thrown away, up to 100,000 a page).
#[test]
fn a_busy_hour_reads_that_hour_only() {
    let busy = T0 + 10 * RECENCY_BUCKET_MS;
    let mut times: Vec<u64> = (0..300u64).map(|i| busy + i * 7).collect();
    // 2,000 conversations in the ten hours before.
    times.extend((0..2_000u64).map(|i| T0 + (i % 10) * RECENCY_BUCKET_MS + i));
    let (_dir, mut ports, expected) = store_with(&times);
    let counting = Arc::new(CountingRecency {
        inner: Arc::clone(&ports.memberships),
        entries: 0.into(),
    });
    ports.memberships = Arc::clone(&counting) as _;
    let req = v1::Conversations {
        limit: 10,
        ..Default::default()
    };
    let page = conversations(&ports, ALICE, &req).unwrap();
    let listed: Vec<(u64, u64)> = page
        .conversations
        .iter()
        .map(|c| {
            (
                c.last_message.as_ref().unwrap().server_time_ms,
                c.conversation_id,
            )
        })
        .collect();
    assert_eq!(listed, expected[..10]);
    assert!(page.has_more);
    let read = counting.entries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read <= 300 + RECENT_STEP,
        "{read} entries read for a page of the busy hour's 300"
    );
    // Paging on across the busy hour and the older ones stays exact.
    assert_eq!(all_pages(&ports, 64), expected);
    assert_eq!(all_pages(&ports, 500), expected);
}

/// Alice's row in a group, a member from seq 1 (`left_seq` 0) or left at `left_seq`.
fn alice_row(left_seq: u64) -> crate::store::UserGroupRecord {
    crate::store::UserGroupRecord {
        visible_from_seq: 1,
        left_seq,
        notify_muted: false,
        added: false,
    }
}

/// The group as Alice's REMOVED event keeps it.
fn as_alice_left_it() -> v1::GroupSnapshot {
    v1::GroupSnapshot {
        name: "as alice left it".into(),
        member_count: 3,
        ..v1::GroupSnapshot::default()
    }
}

fn removed_event() -> v1::GroupEvent {
    v1::GroupEvent {
        kind: v1::GroupEventKind::Removed as i32,
        actor_id: ALICE + 1,
        user_ids: vec![ALICE],
        group: Some(as_alice_left_it()),
        ..v1::GroupEvent::default()
    }
}

/// Group 1: five messages from `time` on, the third Alice's REMOVED event, and Alice still a
/// member by her row: her removal's row is what [`RemovedAtHeads`] commits.
pub(crate) fn group_removing_alice_at_3(ports: &Ports, time: u64) -> ConvId {
    let times: Vec<u64> = (0..5).map(|i| time + i).collect();
    let g = add_group_with_event(ports, 1, &times, alice_row(0), Some((3, removed_event())));
    ConvId::from_wire(g).unwrap()
}

/// The log, which commits Alice's removal from `g` at seq 3 (her row's `left_seq`; the event
/// and the messages after it are stored already) right before the first read of heads that
/// asks for `g`: a removal committed between the read of her rows and that of their heads,
/// while other members went on.
pub(crate) struct RemovedAtHeads {
    pub inner: Arc<dyn ConversationLog>,
    pub g: ConvId,
    pub removed: std::sync::atomic::AtomicBool,
}

impl RemovedAtHeads {
    pub(crate) fn over(ports: &mut Ports, g: ConvId) {
        ports.log = Arc::new(Self {
            inner: Arc::clone(&ports.log),
            g,
            removed: false.into(),
        });
    }
}

impl ConversationLog for RemovedAtHeads {
    fn append(&self, group: &CommitGroup) -> Result<(), crate::store::StoreError> {
        self.inner.append(group)
    }
    fn next_msg_id(&self) -> Result<u64, crate::store::StoreError> {
        self.inner.next_msg_id()
    }
    fn last_message(
        &self,
        conv: ConvId,
    ) -> Result<Option<MessageRecord>, crate::store::StoreError> {
        self.inner.last_message(conv)
    }
    fn last_messages(
        &self,
        convs: &[ConvId],
    ) -> Result<Vec<Option<MessageRecord>>, crate::store::StoreError> {
        if convs.contains(&self.g) && !self.removed.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let mut removal = CommitGroup::default();
            removal
                .groups
                .user_groups
                .push((ALICE, self.g, Some(alice_row(3))));
            self.inner.append(&removal)?;
        }
        self.inner.last_messages(convs)
    }
    fn message(
        &self,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, crate::store::StoreError> {
        self.inner.message(conv, seq)
    }
    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, crate::store::StoreError> {
        self.inner.messages_at(keys)
    }
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, crate::store::StoreError> {
        self.inner.messages_after(conv, after_seq, limit)
    }
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, crate::store::StoreError> {
        self.inner.messages_before(conv, before_seq, limit)
    }
}

/// (max seq, last message's seq, unread, name, member count) of `g`'s entry.
fn group_entry(page: &v1::ConversationList, g: ConvId) -> (u64, u64, u64, String, u32) {
    let e = page
        .conversations
        .iter()
        .find(|c| c.conversation_id == g.to_wire())
        .expect("the group is listed");
    let last = e.last_message.as_ref().map_or(0, |m| m.seq);
    (
        e.max_seq,
        last,
        e.unread_count,
        e.group_name.clone(),
        e.member_count,
    )
}

/// A removal committed between the read of the user's rows and that of the heads: the entry
/// is the former member's (the event it left by, the group as it left it), never the
/// messages after the removal nor the group's current details.
#[test]
fn a_removal_committed_between_rows_and_heads_lists_the_former_members_view() {
    let (_dir, mut ports, _) = store_with(&[T0]);
    let g = group_removing_alice_at_3(&ports, T0 + 10);
    RemovedAtHeads::over(&mut ports, g);
    let page = conversations(&ports, ALICE, &v1::Conversations::default()).unwrap();
    assert_eq!(
        group_entry(&page, g),
        (3, 3, 3, "as alice left it".into(), 3),
        "not seq 5 nor the group as it is now"
    );
}

/// The cursor rows, which commit Alice's removal from `g` at seq 6 (the event, her row, and a
/// rename of the group after it) right before their first read: after the heads were checked
/// and before the page's entries read the group's record.
struct RemovedAtCursors {
    inner: Arc<dyn crate::store::CursorStore>,
    log: Arc<dyn ConversationLog>,
    groups: Arc<dyn crate::store::GroupStore>,
    g: ConvId,
    removed: std::sync::atomic::AtomicBool,
}

impl crate::store::CursorStore for RemovedAtCursors {
    fn cursor_row(
        &self,
        conv: ConvId,
        user: UserId,
    ) -> Result<Option<crate::store::CursorRow>, crate::store::StoreError> {
        self.inner.cursor_row(conv, user)
    }
    fn cursor_rows(
        &self,
        keys: &[(ConvId, UserId)],
    ) -> Result<Vec<Option<crate::store::CursorRow>>, crate::store::StoreError> {
        if !self.removed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            use prost::Message as _;
            let mut record = self.groups.group(self.g)?.expect("the group exists");
            record.name = "renamed after alice left".into();
            let event = MessageRecord {
                conv_id: self.g,
                seq: 6,
                msg_id: 99,
                from: ALICE + 1,
                to: 0,
                client_msg_id: "removal".into(),
                content_type: v1::ContentType::GroupEvent as i32,
                content: removed_event().encode_to_vec().into(),
                server_time_ms: T0 + 100,
                recalled: false,
                recall_of_seq: 0,
                recall_event_seq: 0,
                mentions: None,
            };
            let mut removal = CommitGroup {
                messages: vec![event],
                ..CommitGroup::default()
            };
            removal.groups.groups.push((self.g, record));
            removal
                .groups
                .user_groups
                .push((ALICE, self.g, Some(alice_row(6))));
            self.log.append(&removal)?;
        }
        self.inner.cursor_rows(keys)
    }
}

/// A removal committed after the heads were checked, with a rename after it, before the
/// entry reads the group's record: the entry is still the former member's.
#[test]
fn a_removal_committed_before_an_entrys_group_record_lists_the_former_members_view() {
    let (_dir, mut ports, _) = store_with(&[T0]);
    let times: Vec<u64> = (0..5).map(|i| T0 + 10 + i).collect();
    let g = ConvId::from_wire(add_group(&ports, 1, &times, alice_row(0))).unwrap();
    ports.cursors = Arc::new(RemovedAtCursors {
        inner: Arc::clone(&ports.cursors),
        log: Arc::clone(&ports.log),
        groups: Arc::clone(&ports.groups),
        g,
        removed: false.into(),
    });
    let page = conversations(&ports, ALICE, &v1::Conversations::default()).unwrap();
    assert_eq!(
        group_entry(&page, g),
        (6, 6, 6, "as alice left it".into(), 3),
        "not the name the group got after the removal"
    );
}
