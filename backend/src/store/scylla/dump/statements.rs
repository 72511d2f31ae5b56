//! What export and import run besides the adapter's own statements: a full scan per table
//! (read in token order, a page per call) and the writes that only a copy makes (index rows
//! written without their LWT, values only ever raised). Prepared once, at the first dump call.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::super::statements::{Kind, prepare};
use crate::store::StoreError;

macro_rules! dump_statements {
    ($($name:ident: $kind:ident, $cql:expr;)+) => {
        pub(in crate::store::scylla) struct Statements {
            $(pub(super) $name: PreparedStatement,)+
        }

        impl Statements {
            pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
                Ok(Self {
                    $($name: prepare(session, $cql, Kind::$kind).await?,)+
                })
            }
        }
    };
}

dump_statements! {
    // ---- full scans, token order (no WHERE: the driver pages them by the paging state)
    scan_users: Idempotent,
        "SELECT user_id, username, password_hash, email, created_at_ms FROM users";
    scan_tokens: Idempotent,
        "SELECT token_hash, user_id, device_id, issued_at_ms, expires_at_ms, platform, \
         last_seen_ms FROM tokens";
    scan_flags: Idempotent, "SELECT user_id, record FROM user_flags";
    scan_invites: Idempotent, "SELECT record FROM invites";
    scan_messages: Idempotent,
        "SELECT conv, seq, msg_id, sender, recipient, client_msg_id, content_type, content, \
         server_time_ms, recall_of_seq, recall_event_seq, mention_ids, mention_all FROM messages";
    scan_recalls: Idempotent, "SELECT conv, seq, recall_event_seq FROM messages";
    scan_cursor_rows: Idempotent, "SELECT conv, user_id, row_data FROM cursor_rows";
    scan_recent: Idempotent, "SELECT user_id, bucket, conv_ord FROM recent";
    scan_relations: Idempotent, "SELECT owner, kind, other, record FROM relations";
    scan_summaries: Idempotent, "SELECT user_id, record FROM contact_summaries";
    scan_profiles: Idempotent, "SELECT user_id, record FROM profiles";
    scan_groups: Idempotent, "SELECT group_id, record FROM groups";
    scan_members: Idempotent, "SELECT group_id, user_id, record FROM group_members";
    scan_user_groups: Idempotent, "SELECT user_id, group_id, record FROM user_groups";
    scan_applications: Idempotent,
        "SELECT group_id, user_id, record FROM group_applications";
    scan_mentions: Idempotent, "SELECT group_id, user_id, seq FROM mentions";
    scan_reads: Idempotent, "SELECT group_id, record FROM group_reads";
    scan_audit: Idempotent, "SELECT audit_id, record FROM audit";
    scan_push: Idempotent, "SELECT user_id, device_id, record FROM push_tokens";
    scan_owners: Idempotent, "SELECT conv, epoch, owner FROM conv_meta";
    scan_user_group_ids: Idempotent, "SELECT user_id FROM user_groups";

    // ---- import: unique-name rows as plain upserts (the copy is their only writer; the
    // source already made them unique)
    name_put: Idempotent, "INSERT INTO usernames (name_key, user_id) VALUES (?, ?)";
    email_put: Idempotent, "INSERT INTO emails (email_key, user_id) VALUES (?, ?)";

    // ---- import: values that only go up (a resumed or repeated import never lowers them)
    head_raise: Lwt,
        "UPDATE conv_meta SET head = ?, head_time_ms = ? WHERE conv = ? IF head < ?";
    owner_first: Lwt,
        "INSERT INTO conv_meta (conv, epoch, owner, head, head_time_ms) VALUES (?, ?, ?, 0, 0) \
         IF NOT EXISTS";
    owner_raise: Lwt, "UPDATE conv_meta SET epoch = ?, owner = ? WHERE conv = ? IF epoch < ?";
    meta_raise: Lwt, "UPDATE meta SET value = ? WHERE name = ? IF value < ?";
}
