//! The storage port's conformance suite: one behaviour per test, generic over the adapter, so
//! that every store (fjall, PostgreSQL, ScyllaDB) is held to the same behaviour.
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
//! A new behaviour is a `pub(crate) fn name<A: Adapter>()` in the file for its part of the store
//! (accounts, log, atomicity, dedup, cursors, contacts, groups, audit, notify, owners, engine) plus its name in the macro's list.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ports::{
    AccountStore, ContactStore, ConversationLog, CursorStore, MembershipStore, POINT_READS_MAX,
    Store,
};
use super::{
    CommitGroup, ConvId, ConvRecord, CursorRecord, CursorRow, DeviceCursor, MessageRecord,
    RecencyMove, StoreError, TokenHash, TokenRecord, USER_ID_FIRST, USER_ID_LAST, UserId,
};

mod account_admin;
mod accounts;
mod atomicity;
mod audit;
mod contacts;
mod cursors;
mod dedup;
mod engine;
mod groups;
mod log;
mod notify;
mod owners;

pub(crate) use account_admin::*;
pub(crate) use accounts::*;
pub(crate) use atomicity::*;
pub(crate) use audit::*;
pub(crate) use contacts::*;
pub(crate) use cursors::*;
pub(crate) use dedup::*;
pub(crate) use engine::*;
pub(crate) use groups::*;
pub(crate) use log::*;
pub(crate) use notify::*;
pub(crate) use owners::*;

/// How the suite gets a store: the only thing an adapter implements.
pub(crate) trait Adapter {
    type Store: Store;

    /// Opens the store kept in `dir` (empty at first). Opening it again after the previous
    /// store was dropped is a restart: everything committed before must be there.
    fn try_open(dir: &Path) -> Result<Self::Store, StoreError>;

    /// Whether the store belongs to one process at a time (an embedded store's data dir). A
    /// store of record shared by the nodes of a cluster is not: a second open of the same
    /// store succeeds and sees the first one's writes. A networked adapter derives the
    /// database (schema, keyspace) it uses from `dir`, so each test gets its own.
    const EXCLUSIVE: bool = true;

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
            emails_are_found_case_folded_and_unique,
            a_users_tokens_are_listed_and_replaced_atomically,
            set_password_revokes_every_token_of_the_user_only,
            a_rehash_lands_only_over_the_hash_it_verified_and_keeps_the_tokens,
            touch_tokens_moves_last_seen_forward_and_never_recreates,
            committed_messages_are_readable_by_seq_after_commit_and_after_reopen,
            messages_after_is_ascending_and_pages_at_its_edges,
            messages_at_answers_each_key_in_order_and_none_where_there_is_none,
            messages_before_is_newest_first_and_pages_at_its_edges,
            last_message_is_the_conversations_head,
            seqs_stay_gap_free_across_reopens,
            large_empty_and_binary_content_round_trips_exactly,
            unicode_client_msg_ids_round_trip,
            next_msg_id_starts_at_one_and_is_persisted_by_the_group,
            a_recall_marks_the_stored_message_and_keeps_the_event,
            a_recall_in_the_group_of_its_original_marks_it,
            a_page_with_many_recalls_marks_each_recalled_message,
            one_groups_messages_of_many_conversations_read_back_per_conversation,
            everything_in_a_group_is_visible_together_after_commit,
            a_group_never_committed_leaves_nothing,
            a_concurrent_reader_never_sees_part_of_a_group,
            a_senders_recent_sends_are_kept_in_its_row,
            a_resend_is_recognised_by_hash_and_confirmed_by_the_stored_message,
            cursors_and_device_cursors_round_trip_and_survive_reopen,
            a_later_groups_cursor_value_wins,
            recency_entries_list_newest_bucket_first_move_and_page,
            a_data_dir_is_used_by_one_store_at_a_time,
            a_write_is_visible_to_its_writer_at_once_whatever_others_do,
            relations_are_put_removed_and_survive_reopen,
            relations_at_answers_each_key_in_order_and_none_where_there_is_none,
            relations_list_by_owner_and_kind_in_user_order_and_page,
            contact_summaries_round_trip_and_a_later_group_wins,
            summary_changes_from_one_read_both_count,
            contacts_and_messages_of_one_group_are_visible_together,
            profiles_are_replaced_whole_and_survive_reopen,
            a_profile_write_from_a_stale_read_is_refused,
            usernames_are_listed_by_case_folded_prefix_and_paged,
            groups_members_and_user_groups_round_trip_and_page,
            a_users_groups_are_listed_in_id_order_and_paged,
            group_count_changes_from_concurrent_writers_all_count,
            applications_are_put_paged_and_removed,
            mentions_are_stored_with_the_message_and_counted_after_a_seq,
            removed_mentions_are_no_longer_counted_and_stay_removed,
            a_groups_changes_and_its_messages_are_visible_together,
            read_histograms_are_replaced_whole_and_survive_reopen,
            audit_entries_are_appended_in_batches_and_paged_newest_first,
            account_flags_are_set_cleared_and_survive_reopen,
            users_are_listed_in_id_order_and_paged,
            invites_are_taken_atomically_until_used_up_or_expired,
            invites_are_bounded_and_unusable_ones_make_room,
            invites_are_listed_by_issuer_newest_first_and_paged,
            groups_are_found_by_folded_name_prefix_and_paged,
            audit_entries_are_pruned_oldest_first_in_bounded_steps,
            user_ids_are_walked_in_pages_and_counted,
            push_tokens_are_put_per_device_replaced_listed_and_removed,
            a_conversation_is_claimed_by_one_node_at_a_time_and_survives_reopen,
            of_claims_that_saw_the_same_epoch_exactly_one_wins,
            a_group_fenced_by_a_stale_epoch_writes_nothing,
            every_stale_fence_among_many_is_reported_and_nothing_written,
            many_claims_are_answered_in_order_each_atomic,
            concurrent_id_leases_get_disjoint_ranges_past_the_counter,
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
        content: format!("message {seq}").into_bytes().into(),
        server_time_ms: 1_000 + seq,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
        mentions: None,
    }
}

/// A group of messages of `conv`, one per seq.
fn msgs(conv: ConvId, seqs: impl IntoIterator<Item = u64>) -> CommitGroup {
    CommitGroup {
        messages: seqs.into_iter().map(|seq| msg(conv, seq)).collect(),
        ..CommitGroup::default()
    }
}

/// A row with a cursor, devices `(id, seq)` (seen at their seq) and sends `(client_msg_id, seq)`.
fn row(cursor: CursorRecord, devices: &[(&str, u64)], sends: &[(&str, u64)]) -> CursorRow {
    let mut row = CursorRow {
        cursor,
        devices: devices
            .iter()
            .map(|(id, seq)| DeviceCursor {
                device_id: (*id).to_owned(),
                delivered_seq: *seq,
                seen_ms: *seq,
            })
            .collect(),
        ..CursorRow::default()
    };
    for (id, seq) in sends {
        row.remember_send(id, *seq, usize::MAX);
    }
    row
}

fn cursor_of(store: &impl Store, conv: ConvId, user: UserId) -> Option<CursorRecord> {
    store.cursor_row(conv, user).unwrap().map(|r| r.cursor)
}

fn device_cursor_of(store: &impl Store, conv: ConvId, user: UserId, device: &str) -> Option<u64> {
    store
        .cursor_row(conv, user)
        .unwrap()
        .and_then(|r| r.device_cursor(device))
}

fn token(user_id: UserId, device: &str) -> TokenRecord {
    TokenRecord {
        user_id,
        device_id: device.into(),
        issued_at_ms: 10,
        expires_at_ms: 20,
        platform: 3,
        last_seen_ms: 10,
    }
}

fn commit(store: &impl Store, group: CommitGroup) {
    store.append(&group).expect("the group commits");
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
