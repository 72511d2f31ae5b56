//! Import of a batch of [`DumpItem`]s into PostgreSQL: ONE transaction, one multi-row
//! statement per table (`INSERT … SELECT FROM UNNEST(…) ON CONFLICT …`), so the same batch
//! twice leaves the same rows. What a commit group also writes (recalls, cursor rows, recency,
//! contacts, groups) goes through the commit group's own statements (`append.rs`,
//! `contacts.rs`, `groups.rs`): one place for each table's write.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::super::append::{Batch, boxed, log_statements};
use super::super::audit::AUDIT_PUT;
use super::super::{PgStore, encode, i, i32_of};
use crate::store::dump::{Counter, DumpItem};
use crate::store::{
    CommitGroup, MessageRecord, RecencyMove, RelationKey, SummaryWrite, UserRecord, email_key,
    keeps_email, username_key,
};

/// A user's address goes into `email_key` unless a lower user id holds it
/// ([`crate::store::keeps_email`]; a batch has at most one row per address, `import_batch`).
const USERS_PUT: &str = "INSERT INTO users (user_id, username, username_key, password_hash, \
     email, email_key, created_at_ms) \
     SELECT n.user_id, n.username, n.username_key, n.password_hash, n.email, \
     CASE WHEN EXISTS (SELECT 1 FROM users o WHERE o.email_key = n.email_key \
     AND o.user_id < n.user_id) THEN NULL ELSE n.email_key END, n.created_at_ms \
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::bigint[]) \
     AS n(user_id, username, username_key, password_hash, email, email_key, created_at_ms) \
     ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, \
     username_key = excluded.username_key, password_hash = excluded.password_hash, \
     email = excluded.email, email_key = excluded.email_key, \
     created_at_ms = excluded.created_at_ms";

/// Before [`USERS_PUT`]: a higher user id gives up an address a batch's user claims (a source
/// not in id order, such as ScyllaDB's token order).
const EMAILS_RELEASE: &str = "UPDATE users u SET email_key = NULL \
     FROM UNNEST($1::bigint[], $2::text[]) AS n(user_id, email_key) \
     WHERE u.email_key = n.email_key AND u.user_id > n.user_id";

/// Users whose address is not indexed: shared with a lower user id (logged by
/// `finish_import`), or blank.
pub(super) const EMAILS_NOT_INDEXED: &str =
    "SELECT user_id, email FROM users WHERE email_key IS NULL AND email <> ''";

/// Who holds each of `$1`.
pub(super) const EMAIL_HOLDERS: &str =
    "SELECT email_key, user_id FROM users WHERE email_key = ANY($1::text[])";

const TOKENS_PUT: &str = "INSERT INTO tokens (hash, user_id, device_id, issued_at_ms, \
     expires_at_ms, platform, last_seen_ms) \
     SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
     $6::integer[], $7::bigint[]) \
     ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, \
     device_id = excluded.device_id, issued_at_ms = excluded.issued_at_ms, \
     expires_at_ms = excluded.expires_at_ms, platform = excluded.platform, \
     last_seen_ms = excluded.last_seen_ms";

const FLAGS_PUT: &str = "INSERT INTO user_flags (user_id, disabled_at_ms, disabled_by, reason) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[]) \
     ON CONFLICT (user_id) DO UPDATE SET disabled_at_ms = excluded.disabled_at_ms, \
     disabled_by = excluded.disabled_by, reason = excluded.reason";

const INVITES_PUT: &str = "INSERT INTO invites (id, code_hash, issuer, created_ms, expires_ms, \
     uses_max, uses, note) \
     SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::text[], $4::bigint[], $5::bigint[], \
     $6::integer[], $7::integer[], $8::text[]) \
     ON CONFLICT (id) DO UPDATE SET code_hash = excluded.code_hash, issuer = excluded.issuer, \
     created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, \
     uses_max = excluded.uses_max, uses = excluded.uses, note = excluded.note";

/// A message already there is the same message (seqs are never reused): kept as it is, with
/// a recall imported before.
const MESSAGES_PUT: &str = "INSERT INTO messages (conv_id, seq, msg_id, from_user, \
     to_user, client_msg_id, content_type, content, server_time_ms, recall_of_seq, mentions) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::bigint[], $6::bytea[], $7::integer[], $8::bytea[], $9::bigint[], $10::bigint[], \
     $11::bytea[]) ON CONFLICT (conv_id, seq) DO NOTHING";

const PROFILES_PUT: &str = "INSERT INTO profiles (user_id, nickname, avatar_url, bio, \
     searchable, updated_ms, hide_last_seen) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::boolean[], \
     $6::bigint[], $7::boolean[]) \
     ON CONFLICT (user_id) DO UPDATE SET nickname = excluded.nickname, \
     avatar_url = excluded.avatar_url, bio = excluded.bio, searchable = excluded.searchable, \
     updated_ms = excluded.updated_ms, hide_last_seen = excluded.hide_last_seen";

const PUSH_TOKENS_PUT: &str = "INSERT INTO push_tokens (user_id, device_id, provider, token, \
     updated_ms) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::bigint[]) \
     ON CONFLICT (user_id, device_id) DO UPDATE SET provider = excluded.provider, \
     token = excluded.token, updated_ms = excluded.updated_ms";

const OWNERS_PUT: &str = "INSERT INTO conv_owners (conv_id, epoch, node) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) \
     ON CONFLICT (conv_id) DO UPDATE SET epoch = excluded.epoch, node = excluded.node";

/// A counter never goes back: no id handed out before the import is handed out again.
const COUNTERS_RAISE: &str = "INSERT INTO counters (name, value) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, excluded.value)";

/// The counters' rows in `counters`; the next audit id follows the imported log.
pub(super) const COUNTER_NAMES: [(Counter, &str); 4] = [
    (Counter::Message, "next_msg_id"),
    (Counter::Group, "next_group_id"),
    (Counter::User, "next_user_id"),
    (Counter::Invite, "next_invite_id"),
];

/// Columns of one table's rows, as `UNNEST` takes them.
#[derive(Default)]
struct Columns(Vec<Box<dyn ToSql + Sync>>);

/// One column's values from `rows`.
fn column<R, T: ToSql + Sync + 'static>(rows: &[R], f: impl Fn(&R) -> T) -> Box<dyn ToSql + Sync> {
    boxed(rows.iter().map(f).collect::<Vec<T>>())
}

fn push_if<R>(
    batch: &mut Batch,
    sql: &'static str,
    rows: &[R],
    columns: impl FnOnce(&[R]) -> Columns,
) {
    if !rows.is_empty() {
        batch.push(sql, columns(rows).0);
    }
}

impl PgStore {
    /// The statements that write `items`, in the order of the parts' dependencies (a recall
    /// after the message it recalls).
    pub(super) fn import_batch(&self, items: &[DumpItem]) -> Batch {
        let mut users = Vec::new();
        let mut tokens = Vec::new();
        let mut flags = Vec::new();
        let mut invites = Vec::new();
        let mut messages: Vec<&MessageRecord> = Vec::new();
        let mut profiles = Vec::new();
        let mut audit = Vec::new();
        let mut push = Vec::new();
        let mut owners = Vec::new();
        let mut counters = Vec::new();
        let mut group = CommitGroup::default();
        for item in items {
            match item {
                DumpItem::User(u) => users.push(u),
                DumpItem::Token { hash, token } => tokens.push((hash, token)),
                DumpItem::AccountFlags { user, flags: f } => flags.push((*user, f)),
                DumpItem::Invite(v) => invites.push(v),
                DumpItem::Messages(run) => messages.extend(run),
                DumpItem::Recall {
                    conv,
                    seq,
                    event_seq,
                } => group.recalls.push((*conv, *seq, *event_seq)),
                DumpItem::CursorRow { conv, user, row } => {
                    group.cursor_rows.push((*conv, *user, row.clone()));
                }
                DumpItem::Recency { user, bucket, conv } => group.recency.push(RecencyMove {
                    user: *user,
                    conv: *conv,
                    from: None,
                    to: *bucket,
                }),
                DumpItem::Relation {
                    owner,
                    kind,
                    other,
                    record,
                } => group.contacts.relations.push((
                    RelationKey {
                        owner: *owner,
                        kind: *kind,
                        other: *other,
                    },
                    Some(record.clone()),
                )),
                DumpItem::ContactSummary { user, summary } => {
                    group.contacts.summaries.push(SummaryWrite {
                        user: *user,
                        base: None,
                        new: *summary,
                    });
                }
                DumpItem::Profile { user, profile } => profiles.push((*user, profile)),
                DumpItem::Group { group: g, record } => {
                    group.groups.groups.push((*g, record.clone()));
                }
                DumpItem::Member {
                    group: g,
                    user,
                    record,
                } => group.groups.members.push((*g, *user, Some(*record))),
                DumpItem::UserGroup {
                    user,
                    group: g,
                    record,
                } => group.groups.user_groups.push((*user, *g, Some(*record))),
                DumpItem::Application {
                    group: g,
                    user,
                    record,
                } => group
                    .groups
                    .applications
                    .push((*g, *user, Some(record.clone()))),
                DumpItem::Mention {
                    group: g,
                    user,
                    seq,
                } => {
                    group.groups.mentions.push((*g, *user, *seq));
                }
                DumpItem::ReadHistogram {
                    group: g,
                    histogram,
                } => {
                    group.groups.read_histograms.push((*g, histogram.clone()));
                }
                DumpItem::Audit { id, record } => audit.push((*id, record)),
                DumpItem::PushToken {
                    user,
                    device_id,
                    token,
                } => push.push((*user, device_id, token)),
                DumpItem::Owner { conv, record } => owners.push((*conv, *record)),
                DumpItem::Counter { counter, next } => {
                    if let Some((_, name)) = COUNTER_NAMES.iter().find(|(c, _)| c == counter) {
                        counters.push((*name, *next));
                    }
                }
            }
        }
        let mut batch = Batch::default();
        // Each address once in the batch, for its lowest user id: the statements compare
        // with the rows stored before the batch, not with each other.
        let mut claims: HashMap<String, u64> = HashMap::new();
        for u in &users {
            let key = email_key(&u.email);
            if key.is_empty() {
                continue;
            }
            let holder = claims.get(&key).copied();
            if keeps_email(u.user_id, holder) {
                claims.insert(key, u.user_id);
            }
        }
        let claimed = |u: &UserRecord| {
            let key = email_key(&u.email);
            (claims.get(&key) == Some(&u.user_id)).then_some(key)
        };
        let releases: Vec<(u64, String)> = claims.iter().map(|(k, u)| (*u, k.clone())).collect();
        push_if(&mut batch, EMAILS_RELEASE, &releases, |r| {
            Columns(vec![column(r, |c| i(c.0)), column(r, |c| c.1.clone())])
        });
        push_if(&mut batch, USERS_PUT, &users, |r| {
            Columns(vec![
                column(r, |u| i(u.user_id)),
                column(r, |u| u.username.clone()),
                column(r, |u| username_key(&u.username)),
                column(r, |u| u.password_hash.clone()),
                column(r, |u| u.email.clone()),
                column(r, |u| claimed(u)),
                column(r, |u| i(u.created_at_ms)),
            ])
        });
        push_if(&mut batch, TOKENS_PUT, &tokens, |r| {
            Columns(vec![
                column(r, |t| t.0.to_vec()),
                column(r, |t| i(t.1.user_id)),
                column(r, |t| t.1.device_id.clone()),
                column(r, |t| i(t.1.issued_at_ms)),
                column(r, |t| i(t.1.expires_at_ms)),
                column(r, |t| t.1.platform),
                column(r, |t| i(t.1.last_seen_ms)),
            ])
        });
        push_if(&mut batch, FLAGS_PUT, &flags, |r| {
            Columns(vec![
                column(r, |f| i(f.0)),
                column(r, |f| i(f.1.disabled_at_ms)),
                column(r, |f| f.1.disabled_by.clone()),
                column(r, |f| f.1.reason.clone()),
            ])
        });
        push_if(&mut batch, INVITES_PUT, &invites, |r| {
            Columns(vec![
                column(r, |v| i(v.id)),
                column(r, |v| v.code_hash.to_vec()),
                column(r, |v| v.issuer.clone()),
                column(r, |v| i(v.created_ms)),
                column(r, |v| i(v.expires_ms)),
                column(r, |v| i32_of(v.uses_max)),
                column(r, |v| i32_of(v.uses)),
                column(r, |v| v.note.clone()),
            ])
        });
        push_if(&mut batch, MESSAGES_PUT, &messages, |r| {
            Columns(vec![
                column(r, |m| i(m.conv_id.to_wire())),
                column(r, |m| i(m.seq)),
                column(r, |m| i(m.msg_id)),
                column(r, |m| i(m.from)),
                column(r, |m| i(m.to)),
                column(r, |m| m.client_msg_id.as_bytes().to_vec()),
                column(r, |m| m.content_type),
                column(r, |m| m.content.to_vec()),
                column(r, |m| i(m.server_time_ms)),
                column(r, |m| i(m.recall_of_seq)),
                column(r, |m| m.mentions.as_deref().map(encode)),
            ])
        });
        log_statements(&mut batch, &group);
        self.contact_statements(&mut batch, &group.contacts);
        self.group_statements(&mut batch, &group.groups);
        push_if(&mut batch, PROFILES_PUT, &profiles, |r| {
            Columns(vec![
                column(r, |p| i(p.0)),
                column(r, |p| p.1.nickname.clone()),
                column(r, |p| p.1.avatar_url.clone()),
                column(r, |p| p.1.bio.clone()),
                column(r, |p| p.1.searchable),
                column(r, |p| i(p.1.updated_ms)),
                column(r, |p| p.1.hide_last_seen),
            ])
        });
        push_if(&mut batch, AUDIT_PUT, &audit, |r| {
            Columns(vec![
                column(r, |a| i(a.0)),
                column(r, |a| i(a.1.at_ms)),
                column(r, |a| a.1.actor.clone()),
                column(r, |a| a.1.action.clone()),
                column(r, |a| a.1.target.clone()),
                column(r, |a| a.1.from.clone()),
                column(r, |a| a.1.detail.clone()),
            ])
        });
        push_if(&mut batch, PUSH_TOKENS_PUT, &push, |r| {
            Columns(vec![
                column(r, |p| i(p.0)),
                column(r, |p| p.1.clone()),
                column(r, |p| p.2.provider),
                column(r, |p| p.2.token.clone()),
                column(r, |p| i(p.2.updated_ms)),
            ])
        });
        push_if(&mut batch, OWNERS_PUT, &owners, |r| {
            Columns(vec![
                column(r, |o| i(o.0.to_wire())),
                column(r, |o| i(o.1.epoch)),
                column(r, |o| i(o.1.node)),
            ])
        });
        push_if(&mut batch, COUNTERS_RAISE, &counters, |r| {
            Columns(vec![column(r, |c| c.0.to_owned()), column(r, |c| i(c.1))])
        });
        batch
    }
}
