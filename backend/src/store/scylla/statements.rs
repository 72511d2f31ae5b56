//! Every statement the adapter runs, prepared once at open. Each is marked idempotent or not
//! (the retry policy retries only idempotent ones after an ambiguous failure), and reads of
//! what LWTs wrote that must be linearizable are made at LOCAL_SERIAL.

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use super::engine;
use crate::store::StoreError;

/// How a statement is run.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// An upsert, delete or read: the same effect however often it runs.
    Idempotent,
    /// An LWT (`IF …`): not retried after an ambiguous failure (it may have been applied).
    Lwt,
    /// A read at LOCAL_SERIAL: sees every LWT that completed, and completes one in flight.
    SerialRead,
    /// A counter update: adds again if run again, so not retried after an ambiguous failure.
    Counter,
    /// Whether a node of the local data centre answers (`/readyz`): one node's word is
    /// enough (LOCAL_ONE), and it reads nothing of the keyspace.
    Probe,
}

pub(super) async fn prepare(
    session: &Session,
    cql: &str,
    kind: Kind,
) -> Result<PreparedStatement, StoreError> {
    let mut st = session.prepare(cql).await.map_err(engine)?;
    match kind {
        Kind::Idempotent => st.set_is_idempotent(true),
        Kind::Lwt | Kind::Counter => st.set_is_idempotent(false),
        Kind::SerialRead => {
            st.set_is_idempotent(true);
            st.set_consistency(Consistency::LocalSerial);
        }
        Kind::Probe => {
            st.set_is_idempotent(true);
            st.set_consistency(Consistency::LocalOne);
        }
    }
    Ok(st)
}

macro_rules! statements {
    ($($name:ident: $kind:ident, $cql:expr;)+) => {
        pub(super) struct Statements {
            $(pub(super) $name: PreparedStatement,)+
        }

        impl Statements {
            /// Prepares every statement on `session` (whose keyspace is set).
            pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
                Ok(Self {
                    $($name: prepare(session, $cql, Kind::$kind).await?,)+
                })
            }
        }
    };
}

/// The columns of a message, in the order `log.rs` reads them.
macro_rules! message_columns {
    () => {
        "seq, msg_id, sender, recipient, client_msg_id, content_type, content, server_time_ms, \
         recall_of_seq, recall_event_seq, mention_ids, mention_all"
    };
}

/// The columns of a user, in the order `accounts.rs` reads them.
macro_rules! user_columns {
    () => {
        "user_id, username, password_hash, email, created_at_ms"
    };
}

/// The columns of a token, in the order `accounts.rs` reads them.
macro_rules! token_columns {
    () => {
        "user_id, device_id, issued_at_ms, expires_at_ms, platform, last_seen_ms"
    };
}

statements! {
    // ---- readiness (`StoreEngine::reachable`)
    reachable: Probe, "SELECT now() FROM system.local";

    // ---- meta counters
    meta_get: Idempotent, "SELECT value FROM meta WHERE name = ?";
    meta_put: Idempotent, "UPDATE meta SET value = ? WHERE name = ?";
    meta_init: Lwt, "INSERT INTO meta (name, value) VALUES (?, ?) IF NOT EXISTS";
    meta_cas: Lwt, "UPDATE meta SET value = ? WHERE name = ? IF value = ?";

    // ---- the log
    msg_insert: Idempotent,
        "INSERT INTO messages (conv, bucket, seq, msg_id, sender, recipient, client_msg_id, \
         content_type, content, server_time_ms, recall_of_seq, recall_event_seq, mention_ids, \
         mention_all) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) USING TIMESTAMP ?";
    msg_recall: Idempotent,
        "UPDATE messages USING TIMESTAMP ? SET recall_event_seq = ? \
         WHERE conv = ? AND bucket = ? AND seq = ?";
    msg_get: Idempotent, concat!("SELECT ", message_columns!(),
        " FROM messages WHERE conv = ? AND bucket = ? AND seq = ?");
    msg_range_asc: Idempotent, concat!("SELECT ", message_columns!(),
        " FROM messages WHERE conv = ? AND bucket = ? AND seq >= ? AND seq <= ? \
         ORDER BY seq ASC LIMIT ?");
    msg_range_desc: Idempotent, concat!("SELECT ", message_columns!(),
        " FROM messages WHERE conv = ? AND bucket = ? AND seq >= ? AND seq <= ? \
         ORDER BY seq DESC LIMIT ?");
    head_get: Idempotent, "SELECT head, head_time_ms, epoch, owner FROM conv_meta WHERE conv = ?";
    head_get_serial: SerialRead,
        "SELECT head, head_time_ms, epoch, owner FROM conv_meta WHERE conv = ?";
    head_first: Lwt,
        "INSERT INTO conv_meta (conv, epoch, owner, head, head_time_ms) VALUES (?, 0, 0, ?, ?) \
         IF NOT EXISTS";
    head_publish: Lwt,
        "UPDATE conv_meta SET head = ?, head_time_ms = ? WHERE conv = ? IF head = ?";
    head_publish_fenced: Lwt,
        "UPDATE conv_meta SET head = ?, head_time_ms = ? WHERE conv = ? IF epoch = ? AND head = ?";

    // ---- owners
    claim_first: Lwt,
        "INSERT INTO conv_meta (conv, epoch, owner, head, head_time_ms) VALUES (?, 1, ?, 0, 0) \
         IF NOT EXISTS";
    claim_next: Lwt, "UPDATE conv_meta SET epoch = ?, owner = ? WHERE conv = ? IF epoch = ?";

    // ---- cursors and recency
    cursor_put: Idempotent, "INSERT INTO cursor_rows (conv, user_id, row_data) VALUES (?, ?, ?)";
    cursor_get: Idempotent, "SELECT row_data FROM cursor_rows WHERE conv = ? AND user_id = ?";
    recent_put: Idempotent, "INSERT INTO recent (user_id, bucket, conv_ord) VALUES (?, ?, ?)";
    recent_del: Idempotent,
        "DELETE FROM recent WHERE user_id = ? AND bucket = ? AND conv_ord = ?";
    recent_list: Idempotent,
        "SELECT bucket, conv_ord FROM recent WHERE user_id = ? AND bucket <= ? AND bucket >= ? \
         LIMIT ?";

    // ---- accounts
    user_put: Idempotent,
        "INSERT INTO users (id_bucket, user_id, username, password_hash, email, created_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?)";
    user_get: Idempotent, concat!("SELECT ", user_columns!(),
        " FROM users WHERE id_bucket = ? AND user_id = ?");
    users_page: Idempotent, concat!("SELECT ", user_columns!(),
        " FROM users WHERE id_bucket = ? AND user_id > ? LIMIT ?");
    user_ids_page: Idempotent,
        "SELECT user_id FROM users WHERE id_bucket = ? AND user_id > ? LIMIT ?";
    user_set_password: Idempotent,
        "UPDATE users SET password_hash = ? WHERE id_bucket = ? AND user_id = ?";
    user_password_written: Idempotent,
        "SELECT password_hash, WRITETIME(password_hash) FROM users \
         WHERE id_bucket = ? AND user_id = ?";
    user_rehash_password: Idempotent,
        "UPDATE users USING TIMESTAMP ? SET password_hash = ? WHERE id_bucket = ? AND user_id = ?";
    name_claim: Lwt, "INSERT INTO usernames (name_key, user_id) VALUES (?, ?) IF NOT EXISTS";
    name_get: Idempotent, "SELECT user_id FROM usernames WHERE name_key = ?";
    name_release: Lwt, "DELETE FROM usernames WHERE name_key = ? IF user_id = ?";
    email_claim: Lwt, "INSERT INTO emails (email_key, user_id) VALUES (?, ?) IF NOT EXISTS";
    email_get: Idempotent, "SELECT user_id FROM emails WHERE email_key = ?";
    prefix_put: Idempotent,
        "INSERT INTO username_prefixes (initial, name_key, user_id) VALUES (?, ?, ?)";
    prefix_from: Idempotent,
        "SELECT name_key, user_id FROM username_prefixes WHERE initial = ? AND name_key >= ? \
         LIMIT ?";
    prefix_after: Idempotent,
        "SELECT name_key, user_id FROM username_prefixes WHERE initial = ? AND name_key > ? \
         LIMIT ?";
    token_put: Idempotent,
        "INSERT INTO tokens (token_hash, user_id, device_id, issued_at_ms, expires_at_ms, \
         platform, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    token_get: Idempotent, concat!("SELECT ", token_columns!(),
        " FROM tokens WHERE token_hash = ?");
    token_del: Idempotent, "DELETE FROM tokens WHERE token_hash = ?";
    // Plain, as the deletes of the row are: never an LWT on cells plain writes delete.
    token_touch: Idempotent,
        "UPDATE tokens USING TIMESTAMP ? AND TTL ? SET last_seen_ms = ? WHERE token_hash = ?";
    user_token_put: Idempotent,
        "INSERT INTO user_tokens (user_id, token_hash) VALUES (?, ?) USING TTL ?";
    user_token_del: Idempotent, "DELETE FROM user_tokens WHERE user_id = ? AND token_hash = ?";
    user_tokens_list: Idempotent,
        "SELECT token_hash FROM user_tokens WHERE user_id = ? LIMIT ?";

    // ---- contacts
    relation_put: Idempotent,
        "INSERT INTO relations (owner, kind, other, record) VALUES (?, ?, ?, ?)";
    relation_del: Idempotent, "DELETE FROM relations WHERE owner = ? AND kind = ? AND other = ?";
    relation_get: Idempotent,
        "SELECT record FROM relations WHERE owner = ? AND kind = ? AND other = ?";
    relations_page: Idempotent,
        "SELECT other, record FROM relations WHERE owner = ? AND kind = ? AND other > ? LIMIT ?";
    summary_put: Idempotent, "INSERT INTO contact_summaries (user_id, record) VALUES (?, ?)";
    summary_get: Idempotent, "SELECT record FROM contact_summaries WHERE user_id = ?";
    profile_put: Idempotent, "INSERT INTO profiles (user_id, record) VALUES (?, ?)";
    profile_get: Idempotent, "SELECT record FROM profiles WHERE user_id = ?";
    profile_put_new: Lwt, "INSERT INTO profiles (user_id, record) VALUES (?, ?) IF NOT EXISTS";
    profile_put_over: Lwt, "UPDATE profiles SET record = ? WHERE user_id = ? IF record = ?";

    // ---- groups
    group_put: Idempotent, "INSERT INTO groups (id_bucket, group_id, record) VALUES (?, ?, ?)";
    group_get: Idempotent, "SELECT record FROM groups WHERE id_bucket = ? AND group_id = ?";
    groups_page: Idempotent,
        "SELECT group_id, record FROM groups WHERE id_bucket = ? AND group_id > ? LIMIT ?";
    member_put: Idempotent,
        "INSERT INTO group_members (group_id, user_id, record) VALUES (?, ?, ?)";
    member_del: Idempotent, "DELETE FROM group_members WHERE group_id = ? AND user_id = ?";
    member_get: Idempotent,
        "SELECT record FROM group_members WHERE group_id = ? AND user_id = ?";
    members_page: Idempotent,
        "SELECT user_id, record FROM group_members WHERE group_id = ? AND user_id > ? LIMIT ?";
    user_group_put: Idempotent,
        "INSERT INTO user_groups (user_id, group_id, record) VALUES (?, ?, ?)";
    user_group_del: Idempotent, "DELETE FROM user_groups WHERE user_id = ? AND group_id = ?";
    user_group_get: Idempotent,
        "SELECT record FROM user_groups WHERE user_id = ? AND group_id = ?";
    user_groups_page: Idempotent,
        "SELECT group_id, record FROM user_groups WHERE user_id = ? AND group_id > ? LIMIT ?";
    user_group_count_put: Idempotent, "INSERT INTO user_group_counts (user_id, n) VALUES (?, ?)";
    user_group_count_get: Idempotent, "SELECT n FROM user_group_counts WHERE user_id = ?";
    user_group_tally_add: Counter,
        "UPDATE user_group_tallies SET n = n + ? WHERE user_id = ?";
    user_group_tally_get: Idempotent, "SELECT n FROM user_group_tallies WHERE user_id = ?";
    application_put: Idempotent,
        "INSERT INTO group_applications (group_id, user_id, record) VALUES (?, ?, ?)";
    application_del: Idempotent,
        "DELETE FROM group_applications WHERE group_id = ? AND user_id = ?";
    application_get: Idempotent,
        "SELECT record FROM group_applications WHERE group_id = ? AND user_id = ?";
    applications_page: Idempotent,
        "SELECT user_id, record FROM group_applications WHERE group_id = ? AND user_id > ? \
         LIMIT ?";
    mention_put: Idempotent, "INSERT INTO mentions (group_id, user_id, seq) VALUES (?, ?, ?)";
    mention_del: Idempotent,
        "DELETE FROM mentions WHERE group_id = ? AND user_id = ? AND seq = ?";
    mentions_range: Idempotent,
        "SELECT seq FROM mentions WHERE group_id = ? AND user_id = ? AND seq >= ? AND seq <= ? \
         LIMIT ?";
    group_reads_put: Idempotent, "INSERT INTO group_reads (group_id, record) VALUES (?, ?)";
    group_reads_get: Idempotent, "SELECT record FROM group_reads WHERE group_id = ?";
    group_name_put: Idempotent,
        "INSERT INTO group_names (initial, name_key, group_id) VALUES (?, ?, ?)";
    group_name_del: Idempotent,
        "DELETE FROM group_names WHERE initial = ? AND name_key = ? AND group_id = ?";
    group_names_from: Idempotent,
        "SELECT name_key, group_id FROM group_names WHERE initial = ? AND name_key >= ? LIMIT ?";
    group_names_after: Idempotent,
        "SELECT name_key, group_id FROM group_names WHERE initial = ? \
         AND (name_key, group_id) > (?, ?) LIMIT ?";

    // ---- account admin
    flags_put: Idempotent, "INSERT INTO user_flags (user_id, record) VALUES (?, ?)";
    flags_del: Idempotent, "DELETE FROM user_flags WHERE user_id = ?";
    flags_get: Idempotent, "SELECT record FROM user_flags WHERE user_id = ?";
    invite_put: Idempotent, "INSERT INTO invites (shard, invite_id, record) VALUES (0, ?, ?)";
    // LWTs, as the use of an invite is (`invite_cas`): a plain delete's timestamp and a
    // Paxos write's come from different clocks, so a use just before could outlive it.
    invite_del: Lwt, "DELETE FROM invites WHERE shard = 0 AND invite_id = ? IF EXISTS";
    invite_del_if: Lwt,
        "DELETE FROM invites WHERE shard = 0 AND invite_id = ? IF record = ?";
    invite_get: Idempotent, "SELECT record FROM invites WHERE shard = 0 AND invite_id = ?";
    invite_cas: Lwt,
        "UPDATE invites SET record = ? WHERE shard = 0 AND invite_id = ? IF record = ?";
    invites_all: Idempotent, "SELECT invite_id, record FROM invites WHERE shard = 0 LIMIT ?";
    invites_before: Idempotent,
        "SELECT invite_id, record FROM invites WHERE shard = 0 AND invite_id < ? LIMIT ?";
    invite_code_put: Idempotent, "INSERT INTO invite_codes (code_hash, invite_id) VALUES (?, ?)";
    invite_code_del: Idempotent, "DELETE FROM invite_codes WHERE code_hash = ?";
    invite_code_get: Idempotent, "SELECT invite_id FROM invite_codes WHERE code_hash = ?";
    invite_issuer_put: Idempotent,
        "INSERT INTO invites_by_issuer (issuer, invite_id) VALUES (?, ?)";
    invite_issuer_del: Idempotent,
        "DELETE FROM invites_by_issuer WHERE issuer = ? AND invite_id = ?";
    invites_of_issuer_before: Idempotent,
        "SELECT invite_id FROM invites_by_issuer WHERE issuer = ? AND invite_id < ? LIMIT ?";

    // ---- audit
    audit_put: Idempotent, "INSERT INTO audit (id_bucket, audit_id, record) VALUES (?, ?, ?)";
    audit_del: Idempotent, "DELETE FROM audit WHERE id_bucket = ? AND audit_id = ?";
    audit_before: Idempotent,
        "SELECT audit_id, record FROM audit WHERE id_bucket = ? AND audit_id < ? LIMIT ?";
    audit_oldest: Idempotent,
        "SELECT audit_id, record FROM audit WHERE id_bucket = ? AND audit_id >= ? \
         ORDER BY audit_id ASC LIMIT ?";

    // ---- push tokens
    // A restore's write into an empty store; a node's puts are LWTs (below), as its deletes
    // are: an LWT and a plain write on one cell carry timestamps of different clocks.
    push_put: Idempotent, "INSERT INTO push_tokens (user_id, device_id, record) VALUES (?, ?, ?)";
    push_put_new: Lwt,
        "INSERT INTO push_tokens (user_id, device_id, record) VALUES (?, ?, ?) IF NOT EXISTS";
    push_put_over: Lwt,
        "UPDATE push_tokens SET record = ? WHERE user_id = ? AND device_id = ? IF EXISTS";
    push_del: Lwt, "DELETE FROM push_tokens WHERE user_id = ? AND device_id = ? IF EXISTS";
    push_del_if: Lwt,
        "DELETE FROM push_tokens WHERE user_id = ? AND device_id = ? IF record = ?";
    push_page: Idempotent, "SELECT device_id, record FROM push_tokens WHERE user_id = ? LIMIT ?";
}
