//! Export of every [`Part`] from PostgreSQL: one table each, in primary-key order, a page at a
//! time by keyset (`WHERE (key…) > ($2…) ORDER BY key… LIMIT $1`, never OFFSET: each page is
//! one index range whatever its place). The resume key is the last row's key columns
//! (bigints big-endian, then the trailing bytea/text column's bytes).

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::super::account_admin::{INVITE_COLUMNS, flags_of, invite_of};
use super::super::accounts::{hash_of, token_of, user_of};
use super::super::append::conv_order;
use super::super::audit::audit_of;
use super::super::contacts::{profile_of, relation_of, summary_of};
use super::super::cursors::cursor_row_of;
use super::super::groups::{
    GROUP_COLUMNS_AFTER_ID, application_of, group_of, histogram_of, member_of, user_group_of,
};
use super::super::log::{MESSAGE_COLUMNS, message_of};
use super::super::push_tokens::push_token_of;
use super::super::{col, u};
use crate::store::dump::{DumpItem, Part, ResumeKey};
use crate::store::{ConvId, MessageRecord, OwnerRecord, RelationKind, StoreError};

/// Messages per exported run at most: a run is one fjall value, which a read decodes whole.
const RUN_MESSAGES_MAX: usize = 256;

/// A key column's type.
#[derive(Clone, Copy)]
enum Key {
    Big,
    Small,
    /// Only last: the rest of the resume key.
    Bytes,
    Text,
}

/// Where a part lives and how its rows read back.
pub(super) struct Table {
    table: &'static str,
    keys: &'static [(&'static str, Key)],
    /// The key columns first, then what `decode` reads after them.
    columns: String,
    filter: Option<&'static str>,
    decode: fn(&Row) -> Result<DumpItem, StoreError>,
    /// Rows are messages, joined into runs.
    runs: bool,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("postgres dump: {what}").into())
}

fn conv(row: &Row, at: usize) -> Result<ConvId, StoreError> {
    Ok(ConvId::from_stored(u(row, at)?))
}

const BIG: Key = Key::Big;

/// The table of `part`; `None` for the counters (one page of their own).
pub(super) fn table(part: Part) -> Option<Table> {
    let t = |table, keys, columns: String, decode| Table {
        table,
        keys,
        columns,
        filter: None,
        decode,
        runs: false,
    };
    Some(match part {
        Part::Users => t(
            "users",
            &[("user_id", BIG)],
            "user_id, username, password_hash, email, created_at_ms".into(),
            |r| Ok(DumpItem::User(user_of(r)?)),
        ),
        Part::Tokens => t(
            "tokens",
            &[("hash", Key::Bytes)],
            "hash, user_id, device_id, issued_at_ms, expires_at_ms, platform, last_seen_ms".into(),
            |r| {
                Ok(DumpItem::Token {
                    hash: hash_of(r, 0)?,
                    token: token_of(r, 1)?,
                })
            },
        ),
        Part::AccountFlags => t(
            "user_flags",
            &[("user_id", BIG)],
            "user_id, disabled_at_ms, disabled_by, reason".into(),
            |r| {
                Ok(DumpItem::AccountFlags {
                    user: u(r, 0)?,
                    flags: flags_of(r, 1)?,
                })
            },
        ),
        Part::Invites => t("invites", &[("id", BIG)], INVITE_COLUMNS.into(), |r| {
            Ok(DumpItem::Invite(invite_of(r)?))
        }),
        // Joined into runs by `items`.
        Part::Messages => Table {
            runs: true,
            ..t(
                "messages",
                &[("conv_id", BIG), ("seq", BIG)],
                MESSAGE_COLUMNS.into(),
                |r| Ok(DumpItem::Messages(vec![message_as_exported(r)?])),
            )
        },
        Part::Recalls => Table {
            filter: Some("recall_event_seq <> 0"),
            ..t(
                "messages",
                &[("conv_id", BIG), ("seq", BIG)],
                "conv_id, seq, recall_event_seq".into(),
                |r| {
                    Ok(DumpItem::Recall {
                        conv: conv(r, 0)?,
                        seq: u(r, 1)?,
                        event_seq: u(r, 2)?,
                    })
                },
            )
        },
        Part::CursorRows => t(
            "cursor_rows",
            &[("conv_id", BIG), ("user_id", BIG)],
            "conv_id, user_id, delivered_seq, read_seq, recent_sends, devices".into(),
            |r| {
                Ok(DumpItem::CursorRow {
                    conv: conv(r, 0)?,
                    user: u(r, 1)?,
                    row: cursor_row_of(r, 2)?,
                })
            },
        ),
        Part::Recency => t(
            "recent",
            &[("user_id", BIG), ("bucket", BIG), ("conv_order", BIG)],
            "user_id, bucket, conv_order".into(),
            |r| {
                Ok(DumpItem::Recency {
                    user: u(r, 0)?,
                    bucket: u(r, 1)?,
                    // conv_order is its own inverse.
                    conv: ConvId::from_stored(conv_order(u(r, 2)?) as u64),
                })
            },
        ),
        Part::Relations => t(
            "relations",
            &[("owner", BIG), ("kind", Key::Small), ("other", BIG)],
            "owner, kind, other, since_ms, message".into(),
            |r| {
                let kind = u8::try_from(col::<i16>(r, 1)?)
                    .ok()
                    .and_then(RelationKind::from_u8)
                    .ok_or_else(|| corrupt("relation kind"))?;
                Ok(DumpItem::Relation {
                    owner: u(r, 0)?,
                    kind,
                    other: u(r, 2)?,
                    record: relation_of(r, 3)?,
                })
            },
        ),
        Part::ContactSummaries => t(
            "contact_summaries",
            &[("user_id", BIG)],
            "user_id, friends, requests_out, requests_in, blocks, request_day, \
             requests_today, dm_policy"
                .into(),
            |r| {
                Ok(DumpItem::ContactSummary {
                    user: u(r, 0)?,
                    summary: summary_of(r, 1)?,
                })
            },
        ),
        Part::Profiles => t(
            "profiles",
            &[("user_id", BIG)],
            "user_id, nickname, avatar_url, bio, searchable, updated_ms, hide_last_seen".into(),
            |r| {
                Ok(DumpItem::Profile {
                    user: u(r, 0)?,
                    profile: profile_of(r, 1)?,
                })
            },
        ),
        Part::Groups => t(
            "groups",
            &[("group_id", BIG)],
            format!("group_id, {GROUP_COLUMNS_AFTER_ID}"),
            |r| {
                Ok(DumpItem::Group {
                    group: conv(r, 0)?,
                    record: group_of(r, 1)?,
                })
            },
        ),
        Part::Members => t(
            "group_members",
            &[("group_id", BIG), ("user_id", BIG)],
            "group_id, user_id, role, joined_ms, visible_from_seq, muted_until_ms".into(),
            |r| {
                Ok(DumpItem::Member {
                    group: conv(r, 0)?,
                    user: u(r, 1)?,
                    record: member_of(r, 2)?,
                })
            },
        ),
        Part::UserGroups => t(
            "user_groups",
            &[("user_id", BIG), ("group_id", BIG)],
            "user_id, group_id, visible_from_seq, left_seq, notify_muted, added".into(),
            |r| {
                Ok(DumpItem::UserGroup {
                    user: u(r, 0)?,
                    group: conv(r, 1)?,
                    record: user_group_of(r, 2)?,
                })
            },
        ),
        Part::Applications => t(
            "group_applications",
            &[("group_id", BIG), ("user_id", BIG)],
            "group_id, user_id, message, sent_ms, inviter".into(),
            |r| {
                Ok(DumpItem::Application {
                    group: conv(r, 0)?,
                    user: u(r, 1)?,
                    record: application_of(r, 2)?,
                })
            },
        ),
        Part::Mentions => t(
            "mentions",
            &[("group_id", BIG), ("user_id", BIG), ("seq", BIG)],
            "group_id, user_id, seq".into(),
            |r| {
                Ok(DumpItem::Mention {
                    group: conv(r, 0)?,
                    user: u(r, 1)?,
                    seq: u(r, 2)?,
                })
            },
        ),
        Part::ReadHistograms => t(
            "read_histograms",
            &[("group_id", BIG)],
            "group_id, base_seq, below, counts".into(),
            |r| {
                Ok(DumpItem::ReadHistogram {
                    group: conv(r, 0)?,
                    histogram: histogram_of(r, 1)?,
                })
            },
        ),
        Part::Audit => t(
            "audit",
            &[("id", BIG)],
            "id, at_ms, actor, action, target, from_addr, detail".into(),
            |r| {
                Ok(DumpItem::Audit {
                    id: u(r, 0)?,
                    record: audit_of(r, 1)?,
                })
            },
        ),
        Part::PushTokens => t(
            "push_tokens",
            &[("user_id", BIG), ("device_id", Key::Text)],
            "user_id, device_id, provider, token, updated_ms".into(),
            |r| {
                Ok(DumpItem::PushToken {
                    user: u(r, 0)?,
                    device_id: col(r, 1)?,
                    token: push_token_of(r, 2)?,
                })
            },
        ),
        // Epoch 0 is a placeholder a fenced group locked, not an owner.
        Part::Owners => Table {
            filter: Some("epoch > 0"),
            ..t(
                "conv_owners",
                &[("conv_id", BIG)],
                "conv_id, epoch, node".into(),
                |r| {
                    Ok(DumpItem::Owner {
                        conv: conv(r, 0)?,
                        record: OwnerRecord {
                            epoch: u(r, 1)?,
                            node: u(r, 2)?,
                        },
                    })
                },
            )
        },
        Part::Counters => return None,
    })
}

/// A message as the dump carries it: recalls are their own part, so the recall's marks are
/// off; the content a recall emptied stays empty (every store exports it so).
fn message_as_exported(row: &Row) -> Result<MessageRecord, StoreError> {
    let mut m = message_of(row)?;
    m.recalled = false;
    m.recall_event_seq = 0;
    Ok(m)
}

impl Table {
    /// The page query: the first page without a bound, later ones after the resume key.
    pub(super) fn sql(&self, after: bool) -> String {
        let keys: Vec<&str> = self.keys.iter().map(|k| k.0).collect();
        let mut conditions: Vec<String> = self.filter.iter().map(|f| f.to_string()).collect();
        if after {
            let params: Vec<String> = (0..keys.len()).map(|n| format!("${}", n + 2)).collect();
            conditions.push(format!("({}) > ({})", keys.join(", "), params.join(", ")));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT $1",
            self.columns,
            self.table,
            keys.join(", ")
        )
    }

    /// The resume key of `row` (its key columns).
    pub(super) fn resume_of(&self, row: &Row) -> Result<ResumeKey, StoreError> {
        let mut key = Vec::new();
        for (at, (_, kind)) in self.keys.iter().enumerate() {
            match kind {
                Key::Big => key.extend_from_slice(&col::<i64>(row, at)?.to_be_bytes()),
                Key::Small => key.extend_from_slice(&col::<i16>(row, at)?.to_be_bytes()),
                Key::Bytes => key.extend_from_slice(col::<&[u8]>(row, at)?),
                Key::Text => key.extend_from_slice(col::<&str>(row, at)?.as_bytes()),
            }
        }
        Ok(ResumeKey(key))
    }

    /// The parameters after `$1` that a resume key stands for.
    pub(super) fn params_of(
        &self,
        resume: &ResumeKey,
    ) -> Result<Vec<Box<dyn ToSql + Sync>>, StoreError> {
        let bad = || corrupt("a resume key that is not this part's");
        let mut rest = &resume.0[..];
        let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        for (_, kind) in self.keys {
            match kind {
                Key::Big => {
                    let (head, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
                    params.push(Box::new(i64::from_be_bytes(*head)));
                    rest = tail;
                }
                Key::Small => {
                    let (head, tail) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
                    params.push(Box::new(i16::from_be_bytes(*head)));
                    rest = tail;
                }
                Key::Bytes => {
                    params.push(Box::new(rest.to_vec()));
                    rest = &[];
                }
                Key::Text => {
                    let text = std::str::from_utf8(rest).map_err(|_| bad())?;
                    params.push(Box::new(text.to_owned()));
                    rest = &[];
                }
            }
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(params)
    }

    /// The items of a page's rows; messages joined into runs of one conversation's
    /// consecutive seqs.
    pub(super) fn items(&self, rows: &[Row]) -> Result<Vec<DumpItem>, StoreError> {
        if !self.runs {
            return rows.iter().map(self.decode).collect();
        }
        let mut items: Vec<DumpItem> = Vec::new();
        let mut run: Vec<MessageRecord> = Vec::new();
        for row in rows {
            let m = message_as_exported(row)?;
            if let Some(last) = run.last()
                && !(m.conv_id == last.conv_id
                    && m.seq == last.seq + 1
                    && run.len() < RUN_MESSAGES_MAX)
            {
                items.push(DumpItem::Messages(std::mem::take(&mut run)));
            }
            run.push(m);
        }
        if !run.is_empty() {
            items.push(DumpItem::Messages(run));
        }
        Ok(items)
    }
}
