//! The storage port's conformance suite: one behaviour per test, generic over the adapter, so
//! that every store (fjall today; PostgreSQL, ScyllaDB and the segment log later) is held to the
//! same behaviour.
//!
//! An adapter runs the whole suite by implementing [`Adapter`] (one constructor) and invoking
//! [`conformance_suite!`] with it, which expands to one `#[test]` per behaviour:
//!
//! ```ignore
//! struct FjallAdapter;
//! impl Adapter for FjallAdapter {
//!     type Store = FjallStore;
//!     fn try_open(dir: &Path) -> Result<FjallStore, StoreError> {
//!         FjallStore::open(dir, Durability::Fsync)
//!     }
//! }
//! mod conformance {
//!     crate::store::conformance::conformance_suite!(super::FjallAdapter);
//! }
//! ```
//!
//! A new behaviour is a `pub(crate) fn name<A: Adapter>()` here plus its name in the macro's list.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    CommitGroup, ConvId, ConvRecord, CursorRecord, DedupRecord, MessageRecord, Store, StoreError,
    TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
};

/// How the suite gets a store: the only thing an adapter implements.
pub(crate) trait Adapter {
    type Store: Store;

    /// Opens the store kept in `dir` (empty at first). Opening it again after the previous
    /// store was dropped is a restart: everything committed before must be there.
    fn try_open(dir: &Path) -> Result<Self::Store, StoreError>;

    fn open(dir: &Path) -> Self::Store {
        Self::try_open(dir).expect("the store opens")
    }
}

/// Expands to one `#[test]` per behaviour of the storage port, for the adapter type given.
macro_rules! conformance_suite {
    ($adapter:ty) => {
        $crate::store::conformance::conformance_suite!(@tests $adapter;
            user_ids_are_nine_digits_increasing_and_never_reused_after_reopen,
            usernames_are_unique_regardless_of_ascii_case,
            users_are_found_by_id_and_by_name,
            tokens_are_put_read_replaced_and_removed,
            unicode_usernames_and_emails_round_trip,
            committed_messages_are_readable_by_seq_after_commit_and_after_reopen,
            messages_after_is_ascending_and_pages_at_its_edges,
            messages_before_is_newest_first_and_pages_at_its_edges,
            last_message_is_the_conversations_head,
            seqs_stay_gap_free_across_reopens,
            large_empty_and_binary_content_round_trips_exactly,
            unicode_client_msg_ids_round_trip,
            next_msg_id_starts_at_one_and_is_persisted_by_the_group,
            a_message_rewritten_by_a_later_group_replaces_the_stored_one,
            everything_in_a_group_is_visible_together_after_commit,
            a_group_never_committed_leaves_nothing,
            a_concurrent_reader_never_sees_part_of_a_group,
            dedup_entries_are_found_by_sender_and_client_msg_id,
            for_each_dedup_key_visits_each_stored_entry_once,
            cursors_and_device_cursors_round_trip_and_survive_reopen,
            a_later_groups_cursor_value_wins,
            user_conversations_lists_each_of_a_users_conversations_once,
            user_conversations_respects_the_limit,
            a_data_dir_is_used_by_one_store_at_a_time,
            a_write_is_visible_to_its_writer_at_once_whatever_others_do,
        );
    };
    (@tests $adapter:ty; $($behaviour:ident),+ $(,)?) => {
        $(
            #[test]
            fn $behaviour() {
                $crate::store::conformance::$behaviour::<$adapter>();
            }
        )+
    };
}
pub(crate) use conformance_suite;

// ---- helpers ----------------------------------------------------------------------------------

const ALICE: UserId = USER_ID_FIRST;
const BOB: UserId = USER_ID_FIRST + 1;
const CAROL: UserId = USER_ID_FIRST + 2;
const DAVE: UserId = USER_ID_FIRST + 3;

fn direct(a: UserId, b: UserId) -> ConvId {
    ConvId::direct(a, b).expect("two different 9-digit users")
}

/// A message of `conv` at `seq`, from its lower member to the other.
fn msg(conv: ConvId, seq: u64) -> MessageRecord {
    let members = conv.implied_members().expect("a direct conversation");
    let (from, to) = (members.all()[0], members.all()[1]);
    MessageRecord {
        conv_id: conv,
        seq,
        msg_id: seq,
        from,
        to,
        client_msg_id: format!("c{seq}"),
        content_type: 1,
        content: format!("message {seq}").into_bytes(),
        server_time_ms: 1_000 + seq,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
    }
}

/// A group of messages of `conv`, one per seq.
fn msgs(conv: ConvId, seqs: impl IntoIterator<Item = u64>) -> CommitGroup {
    CommitGroup {
        messages: seqs.into_iter().map(|seq| msg(conv, seq)).collect(),
        ..CommitGroup::default()
    }
}

fn dedup_of(m: &MessageRecord) -> DedupRecord {
    DedupRecord {
        conv_id: m.conv_id,
        seq: m.seq,
        msg_id: m.msg_id,
        server_time_ms: m.server_time_ms,
    }
}

fn token(user_id: UserId, device: &str) -> TokenRecord {
    TokenRecord {
        user_id,
        device_id: device.into(),
        issued_at_ms: 10,
        expires_at_ms: 20,
    }
}

fn commit(store: &impl Store, group: CommitGroup) {
    store.commit_group(&group).expect("the group commits");
}

fn reopen<A: Adapter>(store: A::Store, dir: &Path) -> A::Store {
    drop(store);
    A::open(dir)
}

fn seqs(messages: &[MessageRecord]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn all_after(store: &impl Store, conv: ConvId) -> Vec<MessageRecord> {
    store.messages_after(conv, 0, usize::MAX).unwrap()
}

fn convs_of(store: &impl Store, user: UserId) -> BTreeSet<ConvId> {
    let list = store.user_conversations(user, usize::MAX).unwrap();
    let set: BTreeSet<ConvId> = list.iter().copied().collect();
    assert_eq!(
        set.len(),
        list.len(),
        "a conversation listed twice: {list:?}"
    );
    set
}

// ---- accounts ---------------------------------------------------------------------------------

pub(crate) fn user_ids_are_nine_digits_increasing_and_never_reused_after_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let mut ids = Vec::new();
    for name in ["u0", "u1", "u2"] {
        ids.push(store.create_user(name, "h", "", 1).unwrap().user_id);
    }
    assert_eq!(ids[0], USER_ID_FIRST, "the first id handed out");
    let store = reopen::<A>(store, dir.path());
    for name in ["u3", "u4"] {
        ids.push(store.create_user(name, "h", "", 2).unwrap().user_id);
    }
    let store = reopen::<A>(store, dir.path());
    ids.push(store.create_user("u5", "h", "", 3).unwrap().user_id);
    for id in &ids {
        assert!(
            (USER_ID_FIRST..=USER_ID_LAST).contains(id),
            "{id} is not 9 digits"
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase and are never reused across reopens: {ids:?}"
    );
}

pub(crate) fn usernames_are_unique_regardless_of_ascii_case<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store.create_user("Alice", "h", "", 1).unwrap();
    for taken in ["Alice", "alice", "ALICE", "aLiCe"] {
        assert!(
            matches!(
                store.create_user(taken, "h", "", 2),
                Err(StoreError::UsernameTaken)
            ),
            "{taken:?} is taken by \"Alice\""
        );
    }
    assert_eq!(store.user_id_by_name("aLICE").unwrap(), Some(alice.user_id));
    // Case folding is ASCII only: these are two different names.
    let lower = store.create_user("émile", "h", "", 3).unwrap();
    let upper = store.create_user("ÉMILE", "h", "", 4).unwrap();
    assert_ne!(lower.user_id, upper.user_id);
    assert!(matches!(
        store.create_user("éMILE", "h", "", 5),
        Err(StoreError::UsernameTaken)
    ));

    let store = reopen::<A>(store, dir.path());
    assert!(
        matches!(
            store.create_user("ALICE", "h", "", 6),
            Err(StoreError::UsernameTaken)
        ),
        "still taken after a reopen"
    );
    assert_eq!(store.user_id_by_name("alice").unwrap(), Some(alice.user_id));
    assert_eq!(store.user_id_by_name("ÉMILE").unwrap(), Some(upper.user_id));
    assert_eq!(store.user_id_by_name("émile").unwrap(), Some(lower.user_id));
    assert_eq!(
        store.user_by_id(alice.user_id).unwrap().unwrap().username,
        "Alice",
        "the name is kept as given"
    );
}

pub(crate) fn users_are_found_by_id_and_by_name<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.user_by_id(USER_ID_FIRST).unwrap(), None);
    assert_eq!(store.user_id_by_name("alice").unwrap(), None);
    let alice = store
        .create_user(
            "alice",
            "$argon2id$v=19$x",
            "a@example.com",
            1_700_000_000_000,
        )
        .unwrap();
    let bob = store.create_user("bob", "h2", "", 5).unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.password_hash, "$argon2id$v=19$x");
    assert_eq!(alice.email, "a@example.com");
    assert_eq!(alice.created_at_ms, 1_700_000_000_000);
    let check = |store: &A::Store, when: &str| {
        assert_eq!(
            store.user_by_id(alice.user_id).unwrap().as_ref(),
            Some(&alice),
            "{when}"
        );
        assert_eq!(
            store.user_by_id(bob.user_id).unwrap().as_ref(),
            Some(&bob),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_name("alice").unwrap(),
            Some(alice.user_id),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_name("bob").unwrap(),
            Some(bob.user_id),
            "{when}"
        );
        assert_eq!(store.user_id_by_name("carol").unwrap(), None, "{when}");
        assert_eq!(
            store.user_id_by_name("alic").unwrap(),
            None,
            "{when}: no prefix match"
        );
        assert_eq!(store.user_by_id(bob.user_id + 1).unwrap(), None, "{when}");
        assert_eq!(store.user_by_id(USER_ID_LAST).unwrap(), None, "{when}");
    };
    check(&store, "after create");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn tokens_are_put_read_replaced_and_removed<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (h1, h2, h3): (TokenHash, TokenHash, TokenHash) = ([1; 32], [2; 32], [0; 32]);
    assert_eq!(store.token(&h1).unwrap(), None);
    store.put_token(&h1, &token(ALICE, "phone")).unwrap();
    store.put_token(&h2, &token(BOB, "laptop")).unwrap();
    store.put_token(&h3, &token(CAROL, "")).unwrap();
    assert_eq!(store.token(&h1).unwrap(), Some(token(ALICE, "phone")));
    assert_eq!(store.token(&h2).unwrap(), Some(token(BOB, "laptop")));
    assert_eq!(store.token(&h3).unwrap(), Some(token(CAROL, "")));

    let replaced = TokenRecord {
        expires_at_ms: 99,
        ..token(ALICE, "tablet")
    };
    store.put_token(&h1, &replaced).unwrap();
    assert_eq!(
        store.token(&h1).unwrap(),
        Some(replaced.clone()),
        "put replaces"
    );

    store.remove_token(&h2).unwrap();
    assert_eq!(store.token(&h2).unwrap(), None);
    store
        .remove_token(&[9; 32])
        .expect("removing an absent token is not an error");

    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.token(&h1).unwrap(), Some(replaced));
    assert_eq!(store.token(&h2).unwrap(), None, "a removal survives reopen");
    assert_eq!(store.token(&h3).unwrap(), Some(token(CAROL, "")));
    store.remove_token(&h1).unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.token(&h1).unwrap(), None);
}

pub(crate) fn unicode_usernames_and_emails_round_trip<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let names = [
        ("Zoë", "zoë@exämple.org"),
        ("李小龙", "李@例え.jp"),
        ("🦀crab🦀", "🦀@🦀.rs"),
        ("Ωmega\u{301}", "ω@x"),
    ];
    let created: Vec<_> = names
        .iter()
        .map(|(name, email)| store.create_user(name, "h", email, 1).unwrap())
        .collect();
    let store = reopen::<A>(store, dir.path());
    for ((name, email), user) in names.iter().zip(&created) {
        assert_eq!(user.username, *name);
        assert_eq!(user.email, *email);
        assert_eq!(store.user_id_by_name(name).unwrap(), Some(user.user_id));
        assert_eq!(store.user_by_id(user.user_id).unwrap().as_ref(), Some(user));
    }
}

// ---- the conversation log ---------------------------------------------------------------------

pub(crate) fn committed_messages_are_readable_by_seq_after_commit_and_after_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    assert_eq!(store.message(ab, 1).unwrap(), None);
    commit(&store, msgs(ab, 1..=3));
    for seq in 1..=3 {
        assert_eq!(
            store.message(ab, seq).unwrap(),
            Some(msg(ab, seq)),
            "seq {seq}"
        );
    }
    assert_eq!(store.message(ab, 0).unwrap(), None);
    assert_eq!(store.message(ab, 4).unwrap(), None);
    assert_eq!(store.message(direct(ALICE, CAROL), 1).unwrap(), None);

    let store = reopen::<A>(store, dir.path());
    for seq in 1..=3 {
        assert_eq!(
            store.message(ab, seq).unwrap(),
            Some(msg(ab, seq)),
            "seq {seq}"
        );
    }
    assert_eq!(store.message(ab, 4).unwrap(), None);
}

/// Two conversations with adjacent wire ids, interleaved in each group, so that a read that
/// strays into its neighbour shows.
fn two_neighbouring_conversations<A: Adapter>(dir: &Path) -> (A::Store, ConvId, ConvId) {
    let store = A::open(dir);
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    assert_eq!(ab.to_wire() + 1, ac.to_wire());
    for first in [1, 6] {
        let mut group = msgs(ab, first..first + 5);
        group.messages.extend(msgs(ac, first..first + 2).messages);
        commit(&store, group);
    }
    // ab has seqs 1..=10; ac has 1, 2, 6, 7.
    (store, ab, ac)
}

pub(crate) fn messages_after_is_ascending_and_pages_at_its_edges<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ab, ac) = two_neighbouring_conversations::<A>(dir.path());
    let after = |conv, seq, limit| seqs(&store.messages_after(conv, seq, limit).unwrap());
    assert_eq!(after(ab, 0, 100), (1..=10).collect::<Vec<_>>());
    assert_eq!(after(ab, 0, usize::MAX), (1..=10).collect::<Vec<_>>());
    assert_eq!(after(ab, 0, 0), Vec::<u64>::new(), "limit 0");
    assert_eq!(after(ab, 0, 1), vec![1], "limit 1");
    assert_eq!(after(ab, 0, 3), vec![1, 2, 3]);
    assert_eq!(after(ab, 3, 3), vec![4, 5, 6], "the next page");
    assert_eq!(after(ab, 9, 5), vec![10], "a short last page");
    assert_eq!(after(ab, 10, 5), Vec::<u64>::new(), "after the last seq");
    assert_eq!(after(ab, 11, 5), Vec::<u64>::new());
    assert_eq!(after(ab, u64::MAX - 1, 5), Vec::<u64>::new());
    assert_eq!(after(ab, u64::MAX, 5), Vec::<u64>::new(), "after u64::MAX");
    assert_eq!(after(ac, 0, 100), vec![1, 2, 6, 7], "only its own messages");
    assert_eq!(after(ac, 2, 1), vec![6], "across a hole in the seqs");
    assert_eq!(after(direct(BOB, CAROL), 0, 100), Vec::<u64>::new());
    let page = store.messages_after(ab, 4, 2).unwrap();
    assert_eq!(page, vec![msg(ab, 5), msg(ab, 6)], "whole records");
}

pub(crate) fn messages_before_is_newest_first_and_pages_at_its_edges<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ab, ac) = two_neighbouring_conversations::<A>(dir.path());
    let before = |conv, seq, limit| seqs(&store.messages_before(conv, seq, limit).unwrap());
    assert_eq!(
        before(ab, u64::MAX, 100),
        (1..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        before(ab, u64::MAX, usize::MAX),
        (1..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(before(ab, u64::MAX, 0), Vec::<u64>::new(), "limit 0");
    assert_eq!(before(ab, u64::MAX, 1), vec![10], "limit 1: the newest");
    assert_eq!(before(ab, 11, 3), vec![10, 9, 8]);
    assert_eq!(before(ab, 8, 3), vec![7, 6, 5], "the next page");
    assert_eq!(before(ab, 10, 1), vec![9], "before is exclusive");
    assert_eq!(before(ab, 2, 5), vec![1], "a short last page");
    assert_eq!(before(ab, 1, 5), Vec::<u64>::new(), "before seq 1");
    assert_eq!(before(ab, 0, 5), Vec::<u64>::new(), "before seq 0");
    assert_eq!(before(ac, u64::MAX, 100), vec![7, 6, 2, 1], "only its own");
    assert_eq!(before(ac, 6, 1), vec![2], "across a hole in the seqs");
    assert_eq!(before(direct(BOB, CAROL), u64::MAX, 100), Vec::<u64>::new());
    let page = store.messages_before(ab, 7, 2).unwrap();
    assert_eq!(page, vec![msg(ab, 6), msg(ab, 5)], "whole records");
}

pub(crate) fn last_message_is_the_conversations_head<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    assert_eq!(store.last_message(ab).unwrap(), None);
    assert_eq!(store.conversation(ab).unwrap(), None);
    commit(&store, msgs(ab, [1]));
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 1)));
    // Within a group the order of the records does not decide the head (a recall writes the
    // recalled message after its event).
    commit(&store, msgs(ab, [4, 2, 3]));
    commit(&store, msgs(ac, [1]));
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 4)));
    assert_eq!(
        store.conversation(ab).unwrap(),
        Some(ConvRecord {
            max_seq: 4,
            last_time_ms: msg(ab, 4).server_time_ms,
        })
    );
    assert_eq!(store.last_message(ac).unwrap(), Some(msg(ac, 1)));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.last_message(ab).unwrap(), Some(msg(ab, 4)));
    assert_eq!(store.last_message(direct(BOB, CAROL)).unwrap(), None);
}

pub(crate) fn seqs_stay_gap_free_across_reopens<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let ab = direct(ALICE, BOB);
    let mut store = A::open(dir.path());
    let mut next = 1;
    for round in 0..3 {
        // What the commit thread does at start-up: continue from the head.
        let head = store.last_message(ab).unwrap().map_or(0, |m| m.seq);
        assert_eq!(head + 1, next, "round {round}: the head after a reopen");
        for _ in 0..4 {
            commit(&store, msgs(ab, next..next + 3));
            next += 3;
        }
        store = reopen::<A>(store, dir.path());
    }
    let all = all_after(&store, ab);
    assert_eq!(seqs(&all), (1..next).collect::<Vec<_>>());
    assert_eq!(all, (1..next).map(|seq| msg(ab, seq)).collect::<Vec<_>>());
}

pub(crate) fn large_empty_and_binary_content_round_trips_exactly<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let every_byte: Vec<u8> = (0..=255).collect();
    let contents: Vec<Vec<u8>> = vec![
        vec![b'x'],
        vec![0],
        Vec::new(),
        every_byte.iter().rev().copied().collect(),
        every_byte.repeat(128), // 32 KiB exactly
        (0..32 * 1024 - 1).map(|i| (i * 7 % 251) as u8).collect(), // just under
        (0..32 * 1024 + 1).map(|i| (i % 3) as u8).collect(), // just over
        vec![0xff; 511],
        vec![0xfe; 512],
        vec![0xfd; 513],
        "日本語 ✓ \u{0}\u{10ffff}".as_bytes().to_vec(),
    ];
    let group = CommitGroup {
        messages: contents
            .iter()
            .zip(1..)
            .map(|(content, seq)| MessageRecord {
                content: content.clone(),
                content_type: seq as i32 - 5,
                ..msg(ab, seq)
            })
            .collect(),
        ..CommitGroup::default()
    };
    let expected = group.messages.clone();
    commit(&store, group);
    let check = |store: &A::Store, when: &str| {
        for m in &expected {
            let stored = store.message(ab, m.seq).unwrap().expect("stored");
            assert_eq!(
                stored.content.len(),
                m.content.len(),
                "{when}: seq {}",
                m.seq
            );
            assert_eq!(&stored, m, "{when}: seq {} by seq", m.seq);
        }
        assert_eq!(&all_after(store, ab), &expected, "{when}: messages_after");
        let mut newest_first = store.messages_before(ab, u64::MAX, usize::MAX).unwrap();
        newest_first.reverse();
        assert_eq!(&newest_first, &expected, "{when}: messages_before");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn unicode_client_msg_ids_round_trip<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let ids = ["ünï-😀-ид", "ÜNÏ-😀-ИД", "客户端-1", "a\u{0}b", ""];
    let messages: Vec<_> = ids
        .iter()
        .zip(1..)
        .map(|(id, seq)| MessageRecord {
            client_msg_id: (*id).to_owned(),
            ..msg(ab, seq)
        })
        .collect();
    commit(
        &store,
        CommitGroup {
            dedup: messages
                .iter()
                .map(|m| (m.from, m.client_msg_id.clone(), dedup_of(m)))
                .collect(),
            messages: messages.clone(),
            ..CommitGroup::default()
        },
    );
    let store = reopen::<A>(store, dir.path());
    for m in &messages {
        assert_eq!(store.message(ab, m.seq).unwrap().as_ref(), Some(m));
        assert_eq!(
            store.dedup(ALICE, &m.client_msg_id).unwrap(),
            Some(dedup_of(m)),
            "dedup by {:?}",
            m.client_msg_id
        );
    }
    assert_eq!(
        store.dedup(ALICE, "ünï-😀").unwrap(),
        None,
        "no prefix match"
    );
}

pub(crate) fn next_msg_id_starts_at_one_and_is_persisted_by_the_group<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 1, "on an empty store");
    let ab = direct(ALICE, BOB);
    commit(
        &store,
        CommitGroup {
            next_msg_id: Some(42),
            ..msgs(ab, [1])
        },
    );
    assert_eq!(store.next_msg_id().unwrap(), 42);
    commit(&store, msgs(ab, [2]));
    assert_eq!(
        store.next_msg_id().unwrap(),
        42,
        "a group without one keeps it"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 42, "after reopen");
    commit(
        &store,
        CommitGroup {
            next_msg_id: Some(1 << 40),
            ..CommitGroup::default()
        },
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.next_msg_id().unwrap(), 1 << 40);
}

pub(crate) fn a_message_rewritten_by_a_later_group_replaces_the_stored_one<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    commit(&store, msgs(ab, 1..=2));
    // A recall: the original rewritten (content gone) and the recall event, in one group.
    let recalled = MessageRecord {
        recalled: true,
        content: Vec::new(),
        recall_event_seq: 3,
        ..msg(ab, 1)
    };
    let event = MessageRecord {
        content: Vec::new(),
        recall_of_seq: 1,
        ..msg(ab, 3)
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![recalled.clone(), event.clone()],
            ..CommitGroup::default()
        },
    );
    let expected = vec![recalled.clone(), msg(ab, 2), event.clone()];
    assert_eq!(store.message(ab, 1).unwrap(), Some(recalled.clone()));
    assert_eq!(all_after(&store, ab), expected, "one record per seq");
    assert_eq!(store.last_message(ab).unwrap(), Some(event));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(all_after(&store, ab), expected, "after reopen");
}

// ---- atomicity --------------------------------------------------------------------------------

/// A group that writes one of everything.
fn full_group(ab: ConvId) -> CommitGroup {
    let m1 = msg(ab, 1);
    let m2 = MessageRecord {
        from: BOB,
        to: ALICE,
        ..msg(ab, 2)
    };
    CommitGroup {
        user_conversations: vec![(ALICE, ab), (BOB, ab)],
        dedup: vec![
            (ALICE, m1.client_msg_id.clone(), dedup_of(&m1)),
            (BOB, m2.client_msg_id.clone(), dedup_of(&m2)),
        ],
        cursors: vec![
            (
                ab,
                ALICE,
                CursorRecord {
                    delivered_seq: 2,
                    read_seq: 1,
                },
            ),
            (
                ab,
                BOB,
                CursorRecord {
                    delivered_seq: 2,
                    read_seq: 2,
                },
            ),
        ],
        device_cursors: vec![
            (ab, ALICE, "phone".into(), 2),
            (ab, BOB, "laptop".into(), 1),
        ],
        next_msg_id: Some(3),
        messages: vec![m1, m2],
    }
}

fn assert_full_group_visible(store: &impl Store, ab: ConvId, group: &CommitGroup, when: &str) {
    for m in &group.messages {
        assert_eq!(
            store.message(ab, m.seq).unwrap().as_ref(),
            Some(m),
            "{when}"
        );
    }
    assert_eq!(all_after(store, ab), group.messages, "{when}");
    for (user, conv) in &group.user_conversations {
        assert_eq!(convs_of(store, *user), BTreeSet::from([*conv]), "{when}");
    }
    for (user, client_msg_id, record) in &group.dedup {
        assert_eq!(
            store.dedup(*user, client_msg_id).unwrap(),
            Some(*record),
            "{when}"
        );
    }
    for (conv, user, record) in &group.cursors {
        assert_eq!(store.cursor(*conv, *user).unwrap(), Some(*record), "{when}");
    }
    for (conv, user, device, seq) in &group.device_cursors {
        assert_eq!(
            store.device_cursor(*conv, *user, device).unwrap(),
            Some(*seq),
            "{when}"
        );
    }
    assert_eq!(
        store.next_msg_id().unwrap(),
        group.next_msg_id.unwrap(),
        "{when}"
    );
}

pub(crate) fn everything_in_a_group_is_visible_together_after_commit<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let group = full_group(ab);
    commit(&store, full_group(ab));
    assert_full_group_visible(&store, ab, &group, "after commit");
    let store = reopen::<A>(store, dir.path());
    assert_full_group_visible(&store, ab, &group, "after reopen");
}

fn assert_nothing_of_full_group(store: &impl Store, ab: ConvId, when: &str) {
    assert_eq!(store.message(ab, 1).unwrap(), None, "{when}");
    assert_eq!(store.last_message(ab).unwrap(), None, "{when}");
    assert_eq!(all_after(store, ab), Vec::new(), "{when}");
    assert_eq!(convs_of(store, ALICE), BTreeSet::new(), "{when}");
    assert_eq!(store.dedup(ALICE, "c1").unwrap(), None, "{when}");
    assert_eq!(store.cursor(ab, ALICE).unwrap(), None, "{when}");
    assert_eq!(
        store.device_cursor(ab, ALICE, "phone").unwrap(),
        None,
        "{when}"
    );
    assert_eq!(store.next_msg_id().unwrap(), 1, "{when}");
    let mut keys = 0;
    store.for_each_dedup_key(&mut |_, _| keys += 1).unwrap();
    assert_eq!(keys, 0, "{when}");
}

pub(crate) fn a_group_never_committed_leaves_nothing<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let group = full_group(ab);
    assert_nothing_of_full_group(&store, ab, "built, not committed");
    drop(group);
    let store = reopen::<A>(store, dir.path());
    assert_nothing_of_full_group(&store, ab, "after reopen");
}

pub(crate) fn a_concurrent_reader_never_sees_part_of_a_group<A: Adapter>() {
    const GROUPS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let ab = direct(ALICE, BOB);
    // Group k writes message k of ab, its dedup entry, cursors at k, next_msg_id k + 1 and a
    // new conversation of Alice's; every value only grows, so once a reader sees message k,
    // whatever it reads next must show group k or a later one.
    let group = |k: u64| {
        let m = msg(ab, k);
        CommitGroup {
            user_conversations: vec![(ALICE, direct(ALICE, DAVE + k))],
            dedup: vec![(ALICE, m.client_msg_id.clone(), dedup_of(&m))],
            cursors: vec![(
                ab,
                ALICE,
                CursorRecord {
                    delivered_seq: k,
                    read_seq: k,
                },
            )],
            device_cursors: vec![(ab, ALICE, "phone".into(), k)],
            next_msg_id: Some(k + 1),
            messages: vec![m],
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seen = 0;
            while !done.load(Ordering::Acquire) {
                let Some(head) = store.last_message(ab).unwrap() else {
                    continue;
                };
                let k = head.seq;
                assert!(k >= seen, "the head went back from {seen} to {k}");
                seen = k;
                let d = store.dedup(ALICE, &head.client_msg_id).unwrap();
                assert_eq!(d, Some(dedup_of(&head)), "group {k}: message without dedup");
                let c = store.cursor(ab, ALICE).unwrap().unwrap_or_default();
                assert!(c.read_seq >= k, "group {k}: message without cursor {c:?}");
                let dc = store.device_cursor(ab, ALICE, "phone").unwrap();
                assert!(
                    dc >= Some(k),
                    "group {k}: message without device cursor {dc:?}"
                );
                let next = store.next_msg_id().unwrap();
                assert!(next > k, "group {k}: message without next_msg_id ({next})");
                let convs = store.user_conversations(ALICE, usize::MAX).unwrap();
                assert!(
                    convs.contains(&direct(ALICE, DAVE + k)),
                    "group {k}: message without its user_conversations entry"
                );
                let all = store.messages_after(ab, 0, usize::MAX).unwrap();
                assert!(
                    all.len() as u64 >= k,
                    "group {k}: an earlier message is missing"
                );
            }
            seen
        })
    };
    for k in 1..=GROUPS {
        commit(&*store, group(k));
    }
    done.store(true, Ordering::Release);
    reader.join().expect("the reader saw only whole groups");
}

// ---- dedup ------------------------------------------------------------------------------------

pub(crate) fn dedup_entries_are_found_by_sender_and_client_msg_id<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    let record = |conv, seq| dedup_of(&msg(conv, seq));
    let entries = vec![
        (ALICE, "a".to_owned(), record(ab, 1)),
        (BOB, "a".to_owned(), record(ab, 2)),
        (ALICE, "ab".to_owned(), record(ac, 1)),
        (ALICE, "b".to_owned(), record(ab, 3)),
    ];
    commit(
        &store,
        CommitGroup {
            dedup: entries.clone(),
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        for (user, id, record) in &entries {
            assert_eq!(
                store.dedup(*user, id).unwrap(),
                Some(*record),
                "{when}: {user} {id}"
            );
        }
        assert_eq!(
            store.dedup(CAROL, "a").unwrap(),
            None,
            "{when}: another sender"
        );
        assert_eq!(
            store.dedup(ALICE, "A").unwrap(),
            None,
            "{when}: ids are exact"
        );
        assert_eq!(
            store.dedup(ALICE, "").unwrap(),
            None,
            "{when}: no prefix match"
        );
        assert_eq!(store.dedup(BOB, "ab").unwrap(), None, "{when}");
        assert_eq!(store.dedup(ALICE, "abc").unwrap(), None, "{when}");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn for_each_dedup_key_visits_each_stored_entry_once<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let keys: Vec<(UserId, &str)> = vec![
        (ALICE, "a"),
        (ALICE, "ab"),
        (ALICE, "z"),
        (BOB, "a"),
        (CAROL, "ид-😀"),
        (USER_ID_LAST, "last"),
    ];
    let mut expected = BTreeSet::new();
    for (seq, (user, id)) in (1..).zip(&keys) {
        commit(
            &store,
            CommitGroup {
                dedup: vec![(*user, (*id).to_owned(), dedup_of(&msg(ab, seq)))],
                ..CommitGroup::default()
            },
        );
        expected.insert((*user, id.as_bytes().to_vec()));
    }
    // The same key again, in a later group and twice in one group: still one entry.
    commit(
        &store,
        CommitGroup {
            dedup: vec![
                (ALICE, "a".into(), dedup_of(&msg(ab, 50))),
                (ALICE, "a".into(), dedup_of(&msg(ab, 51))),
            ],
            ..CommitGroup::default()
        },
    );
    let visit = |store: &A::Store| {
        let mut seen = Vec::new();
        store
            .for_each_dedup_key(&mut |user, id| seen.push((user, id.to_vec())))
            .unwrap();
        seen.sort();
        seen
    };
    let expected: Vec<_> = expected.into_iter().collect();
    assert_eq!(visit(&store), expected, "after commit");
    assert_eq!(
        store.dedup(ALICE, "a").unwrap(),
        Some(dedup_of(&msg(ab, 51))),
        "the last write of a key wins"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(visit(&store), expected, "after reopen");
}

// ---- cursors ----------------------------------------------------------------------------------

pub(crate) fn cursors_and_device_cursors_round_trip_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac) = (direct(ALICE, BOB), direct(ALICE, CAROL));
    let cursor = |delivered_seq, read_seq| CursorRecord {
        delivered_seq,
        read_seq,
    };
    let cursors = vec![
        (ab, ALICE, cursor(5, 3)),
        (ab, BOB, cursor(4, 4)),
        (ac, ALICE, cursor(u64::MAX, 0)),
    ];
    let devices = vec![
        (ab, ALICE, "d".to_owned(), 5),
        (ab, ALICE, "d2".to_owned(), 2),
        (ab, ALICE, "平板-📱".to_owned(), 1),
        (ab, BOB, "d".to_owned(), 4),
        (ac, ALICE, String::new(), u64::MAX),
    ];
    commit(
        &store,
        CommitGroup {
            cursors: cursors.clone(),
            device_cursors: devices.clone(),
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        for (conv, user, record) in &cursors {
            assert_eq!(store.cursor(*conv, *user).unwrap(), Some(*record), "{when}");
        }
        for (conv, user, device, seq) in &devices {
            assert_eq!(
                store.device_cursor(*conv, *user, device).unwrap(),
                Some(*seq),
                "{when}: device {device:?}"
            );
        }
        assert_eq!(store.cursor(ac, CAROL).unwrap(), None, "{when}");
        assert_eq!(
            store.cursor(direct(BOB, CAROL), BOB).unwrap(),
            None,
            "{when}"
        );
        assert_eq!(
            store.device_cursor(ab, ALICE, "d3").unwrap(),
            None,
            "{when}"
        );
        assert_eq!(store.device_cursor(ab, ALICE, "D").unwrap(), None, "{when}");
        assert_eq!(store.device_cursor(ab, CAROL, "d").unwrap(), None, "{when}");
        assert_eq!(store.device_cursor(ac, ALICE, "d").unwrap(), None, "{when}");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn a_later_groups_cursor_value_wins<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let ab = direct(ALICE, BOB);
    let cursor = |delivered_seq, read_seq| CursorRecord {
        delivered_seq,
        read_seq,
    };
    let set = |store: &A::Store, c: CursorRecord, device_seq: u64| {
        commit(
            store,
            CommitGroup {
                cursors: vec![(ab, ALICE, c)],
                device_cursors: vec![(ab, ALICE, "phone".into(), device_seq)],
                ..CommitGroup::default()
            },
        );
    };
    set(&store, cursor(5, 3), 5);
    set(&store, cursor(7, 7), 9);
    assert_eq!(store.cursor(ab, ALICE).unwrap(), Some(cursor(7, 7)));
    assert_eq!(store.device_cursor(ab, ALICE, "phone").unwrap(), Some(9));
    // The store keeps what it is given; "only forward" is the caller's rule.
    set(&store, cursor(2, 1), 1);
    assert_eq!(store.cursor(ab, ALICE).unwrap(), Some(cursor(2, 1)));
    assert_eq!(store.device_cursor(ab, ALICE, "phone").unwrap(), Some(1));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.cursor(ab, ALICE).unwrap(),
        Some(cursor(2, 1)),
        "after reopen"
    );
    assert_eq!(store.device_cursor(ab, ALICE, "phone").unwrap(), Some(1));
    set(&store, cursor(8, 8), 8);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.cursor(ab, ALICE).unwrap(), Some(cursor(8, 8)));
    assert_eq!(store.device_cursor(ab, ALICE, "phone").unwrap(), Some(8));
}

// ---- user conversation lists ------------------------------------------------------------------

pub(crate) fn user_conversations_lists_each_of_a_users_conversations_once<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (ab, ac, ad, bc) = (
        direct(ALICE, BOB),
        direct(ALICE, CAROL),
        direct(ALICE, DAVE),
        direct(BOB, CAROL),
    );
    assert_eq!(convs_of(&store, ALICE), BTreeSet::new());
    commit(
        &store,
        CommitGroup {
            // ab twice in one group.
            user_conversations: vec![(ALICE, ab), (BOB, ab), (ALICE, ab), (ALICE, ac)],
            ..CommitGroup::default()
        },
    );
    commit(
        &store,
        CommitGroup {
            // ab again in a later group.
            user_conversations: vec![(ALICE, ad), (ALICE, ab), (BOB, bc), (CAROL, bc)],
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store, when: &str| {
        assert_eq!(
            convs_of(store, ALICE),
            BTreeSet::from([ab, ac, ad]),
            "{when}"
        );
        assert_eq!(convs_of(store, BOB), BTreeSet::from([ab, bc]), "{when}");
        assert_eq!(convs_of(store, CAROL), BTreeSet::from([bc]), "{when}");
        assert_eq!(
            convs_of(store, DAVE),
            BTreeSet::new(),
            "{when}: none of his own"
        );
        assert_eq!(convs_of(store, USER_ID_LAST), BTreeSet::new(), "{when}");
    };
    check(&store, "after commit");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn user_conversations_respects_the_limit<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let all: BTreeSet<ConvId> = (1..=5).map(|i| direct(ALICE, ALICE + i)).collect();
    commit(
        &store,
        CommitGroup {
            user_conversations: all
                .iter()
                .map(|c| (ALICE, *c))
                .chain([(BOB, direct(BOB, CAROL))])
                .collect(),
            ..CommitGroup::default()
        },
    );
    for limit in [0, 1, 2, 4, 5, 6, 100] {
        let listed = store.user_conversations(ALICE, limit).unwrap();
        let set: BTreeSet<ConvId> = listed.iter().copied().collect();
        assert_eq!(listed.len(), limit.min(5), "limit {limit}: {listed:?}");
        assert_eq!(set.len(), listed.len(), "limit {limit}: listed twice");
        assert!(
            set.is_subset(&all),
            "limit {limit}: {listed:?} is not all Alice's"
        );
    }
}

// ---- the data dir -----------------------------------------------------------------------------

pub(crate) fn a_data_dir_is_used_by_one_store_at_a_time<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let first = A::open(dir.path());
    match A::try_open(dir.path()) {
        Err(StoreError::DirInUse(path)) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected DirInUse, got {other}"),
        Ok(_) => panic!("a second store opened the same data dir"),
    }
    first.create_user("alice", "h", "", 1).unwrap();
    drop(first);
    let second = A::try_open(dir.path()).expect("free again once closed");
    assert!(second.user_id_by_name("alice").unwrap().is_some());
}

// ---- concurrency ------------------------------------------------------------------------------

pub(crate) fn a_write_is_visible_to_its_writer_at_once_whatever_others_do<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    if t % 2 == 0 {
                        let name = format!("u{t}x{i}");
                        let user = store.create_user(&name, "h", "", 1).unwrap();
                        assert_eq!(store.user_id_by_name(&name).unwrap(), Some(user.user_id));
                        assert_eq!(store.user_by_id(user.user_id).unwrap(), Some(user));
                    } else {
                        let mut hash = [t; 32];
                        hash[..4].copy_from_slice(&i.to_be_bytes());
                        store.put_token(&hash, &token(ALICE, "d")).unwrap();
                        assert_eq!(store.token(&hash).unwrap(), Some(token(ALICE, "d")));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
