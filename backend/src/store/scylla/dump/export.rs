//! Export of every [`Part`] from ScyllaDB: one full scan per table, in token order, one page
//! per call. The page size is the caller's batch size (at most [`PAGE_ROWS_MAX`]); the resume
//! key is the driver's paging state (the position after the page's last row: partition and
//! clustering key), so a copy resumed from its checkpoint continues where it stopped.
//!
//! Messages (and recalls) are exported only up to each conversation's published head: rows
//! past it are a fenced or crashed writer's leftovers, which readers never see either.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;

use super::super::accounts::{TokenRow, UserRow, token_of, user_of};
use super::super::codec::{self, u, unordered};
use super::super::log::{MessageRow, message_of};
use super::super::{ScyllaStore, collect, engine};
use super::Statements;
use crate::store::dump::{Counter, DumpItem, DumpPage, Part, ResumeKey};
use crate::store::{ConvId, MessageRecord, OwnerRecord, RelationKind, StoreError};

/// Rows per page at most, whatever the batch size asks: a page of messages is held whole.
pub(super) const PAGE_ROWS_MAX: usize = 8192;
/// Messages per exported run at most (a run is one value in the embedded store).
const RUN_MESSAGES_MAX: usize = 256;

/// A row of `scan_messages`: the conversation, then `message_columns!`'s columns.
type ScanMessageRow = (
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    i32,
    Vec<u8>,
    i64,
    i64,
    Option<i64>,
    Option<Vec<i64>>,
    Option<bool>,
);

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("scylla dump: {what}").into())
}

fn conv(v: i64) -> ConvId {
    ConvId::from_stored(u(v))
}

fn unblob<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    codec::unblob(bytes)
}

/// The counters `meta` keeps, by name; the next audit id follows the last one written.
pub(super) const META_COUNTERS: [(Counter, &str); 4] = [
    (Counter::Message, super::super::log::META_NEXT_MSG_ID),
    (Counter::Group, super::super::groups::META_NEXT_GROUP_ID),
    (Counter::User, super::super::accounts::META_NEXT_USER_ID),
    (
        Counter::Invite,
        super::super::account_admin::META_NEXT_INVITE_ID,
    ),
];

/// Messages of one scan page (ascending by seq within each partition, partitions in token
/// order) cut into runs of one conversation's consecutive seqs.
pub(super) fn runs(messages: Vec<MessageRecord>) -> Vec<DumpItem> {
    let mut items = Vec::new();
    let mut run: Vec<MessageRecord> = Vec::new();
    for m in messages {
        if let Some(last) = run.last()
            && !(m.conv_id == last.conv_id && m.seq == last.seq + 1 && run.len() < RUN_MESSAGES_MAX)
        {
            items.push(DumpItem::Messages(std::mem::take(&mut run)));
        }
        run.push(m);
    }
    if !run.is_empty() {
        items.push(DumpItem::Messages(run));
    }
    items
}

impl ScyllaStore {
    /// One page of the full scan `st` after `after`: its rows, and where the next starts.
    pub(super) async fn scan<T>(
        &self,
        st: &PreparedStatement,
        after: Option<&ResumeKey>,
        rows_max: usize,
    ) -> Result<(Vec<T>, Option<ResumeKey>), StoreError>
    where
        T: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut st = st.clone();
        let rows = rows_max.clamp(1, PAGE_ROWS_MAX);
        st.set_page_size(i32::try_from(rows).expect("PAGE_ROWS_MAX fits in i32"));
        let paging = match after {
            Some(key) if key.0.is_empty() => return Err(corrupt("an empty resume key")),
            Some(key) => PagingState::new_from_raw_bytes(key.0.as_slice()),
            None => PagingState::start(),
        };
        let (result, next) = self
            .session()
            .execute_single_page(&st, (), paging)
            .await
            .map_err(engine)?;
        let resume = match next.into_paging_control_flow() {
            std::ops::ControlFlow::Continue(state) => Some(ResumeKey(
                state
                    .as_bytes_slice()
                    .ok_or_else(|| corrupt("more pages without a paging state"))?
                    .to_vec(),
            )),
            std::ops::ControlFlow::Break(()) => None,
        };
        Ok((collect(result)?, resume))
    }

    /// The published head of each of `convs`, read at once (at most `copy_requests_max` in
    /// flight): one read per conversation per page, never per message.
    async fn heads_of(
        &self,
        convs: impl Iterator<Item = ConvId>,
    ) -> Result<HashMap<ConvId, u64>, StoreError> {
        let mut distinct: Vec<ConvId> = convs.collect();
        distinct.sort_unstable();
        distinct.dedup();
        stream::iter(distinct)
            .map(|c| async move { Ok::<_, StoreError>((c, self.head(c).await?.0)) })
            .buffer_unordered(self.copy_requests_max)
            .try_collect()
            .await
    }

    async fn messages_page(
        &self,
        d: &Statements,
        after: Option<&ResumeKey>,
        n: usize,
    ) -> Result<DumpPage, StoreError> {
        let (rows, resume) = self
            .scan::<ScanMessageRow>(&d.scan_messages, after, n)
            .await?;
        let heads = self.heads_of(rows.iter().map(|r| conv(r.0))).await?;
        let messages = rows
            .into_iter()
            .filter(|r| heads.get(&conv(r.0)).is_some_and(|h| u(r.1) <= *h))
            .map(
                |(c, s, id, from, to, cid, ct, content, t, rof, ev, ids, all)| {
                    let row: MessageRow = (s, id, from, to, cid, ct, content, t, rof, ev, ids, all);
                    let mut m = message_of(conv(c), row);
                    // Recalls are their own part; the content a recall emptied stays empty.
                    m.recalled = false;
                    m.recall_event_seq = 0;
                    m
                },
            )
            .collect();
        Ok(DumpPage {
            items: runs(messages),
            resume,
        })
    }

    async fn recalls_page(
        &self,
        d: &Statements,
        after: Option<&ResumeKey>,
        n: usize,
    ) -> Result<DumpPage, StoreError> {
        let (rows, resume) = self
            .scan::<(i64, i64, Option<i64>)>(&d.scan_recalls, after, n)
            .await?;
        let marked: Vec<(i64, i64, i64)> = rows
            .into_iter()
            .filter_map(|(c, s, ev)| ev.filter(|e| *e != 0).map(|e| (c, s, e)))
            .collect();
        let heads = self.heads_of(marked.iter().map(|r| conv(r.0))).await?;
        let items = marked
            .into_iter()
            .filter(|(c, s, _)| heads.get(&conv(*c)).is_some_and(|h| u(*s) <= *h))
            .map(|(c, s, e)| DumpItem::Recall {
                conv: conv(c),
                seq: u(s),
                event_seq: u(e),
            })
            .collect();
        Ok(DumpPage { items, resume })
    }

    async fn counters_page(&self) -> Result<DumpPage, StoreError> {
        let mut items = Vec::new();
        for (counter, name) in META_COUNTERS {
            if let Some(next) = self.meta(name).await? {
                items.push(DumpItem::Counter { counter, next });
            }
        }
        if let Some(last) = self
            .meta(super::super::audit::META_AUDIT_LAST)
            .await?
            .filter(|l| *l > 0)
        {
            items.push(DumpItem::Counter {
                counter: Counter::Audit,
                next: last + 1,
            });
        }
        Ok(DumpPage {
            items,
            resume: None,
        })
    }

    /// One page of `part` after `after` (it may be empty while `resume` is not: every row of
    /// a page can be filtered out).
    pub(super) async fn export_page(
        &self,
        d: &Statements,
        part: Part,
        after: Option<&ResumeKey>,
        n: usize,
    ) -> Result<DumpPage, StoreError> {
        // A scan whose rows each give at most one item.
        macro_rules! scan {
            ($st:ident, $row:ty, $item:expr) => {{
                let (rows, resume) = self.scan::<$row>(&d.$st, after, n).await?;
                let item: fn($row) -> Result<Option<DumpItem>, StoreError> = $item;
                let items = rows
                    .into_iter()
                    .map(item)
                    .filter_map(Result::transpose)
                    .collect::<Result<Vec<_>, _>>()?;
                DumpPage { items, resume }
            }};
        }
        Ok(match part {
            Part::Users => scan!(scan_users, UserRow, |r| Ok(Some(DumpItem::User(user_of(
                r
            ))))),
            Part::Tokens => scan!(
                scan_tokens,
                (
                    Vec<u8>,
                    Option<i64>,
                    Option<String>,
                    Option<i64>,
                    Option<i64>,
                    Option<i32>,
                    Option<i64>,
                ),
                |r| {
                    let (hash, user, device, issued, expires, platform, seen) = r;
                    let row: TokenRow = (user, device, issued, expires, platform, seen);
                    // What is left of a revoked token (some cells) is not copied.
                    let Some(token) = token_of(row) else {
                        return Ok(None);
                    };
                    Ok(Some(DumpItem::Token {
                        hash: hash.try_into().map_err(|_| corrupt("token hash"))?,
                        token,
                    }))
                }
            ),
            Part::AccountFlags => scan!(scan_flags, (i64, Vec<u8>), |(user, data)| {
                Ok(Some(DumpItem::AccountFlags {
                    user: u(user),
                    flags: unblob(&data)?,
                }))
            }),
            Part::Invites => scan!(scan_invites, (Vec<u8>,), |(data,)| {
                Ok(Some(DumpItem::Invite(unblob(&data)?)))
            }),
            Part::Messages => self.messages_page(d, after, n).await?,
            Part::Recalls => self.recalls_page(d, after, n).await?,
            Part::CursorRows => scan!(scan_cursor_rows, (i64, i64, Vec<u8>), |(c, user, data)| {
                Ok(Some(DumpItem::CursorRow {
                    conv: conv(c),
                    user: u(user),
                    row: unblob(&data)?,
                }))
            }),
            Part::Recency => scan!(scan_recent, (i64, i64, i64), |(user, bucket, c)| {
                Ok(Some(DumpItem::Recency {
                    user: u(user),
                    bucket: u(bucket),
                    conv: ConvId::from_stored(unordered(c)),
                }))
            }),
            Part::Relations => scan!(scan_relations, (i64, i32, i64, Vec<u8>), |r| {
                let (owner, kind, other, data) = r;
                let kind = u8::try_from(kind)
                    .ok()
                    .and_then(RelationKind::from_u8)
                    .ok_or_else(|| corrupt("relation kind"))?;
                Ok(Some(DumpItem::Relation {
                    owner: u(owner),
                    kind,
                    other: u(other),
                    record: unblob(&data)?,
                }))
            }),
            Part::ContactSummaries => scan!(scan_summaries, (i64, Vec<u8>), |(user, data)| {
                Ok(Some(DumpItem::ContactSummary {
                    user: u(user),
                    summary: unblob(&data)?,
                }))
            }),
            Part::Profiles => scan!(scan_profiles, (i64, Vec<u8>), |(user, data)| {
                Ok(Some(DumpItem::Profile {
                    user: u(user),
                    profile: unblob(&data)?,
                }))
            }),
            Part::Groups => scan!(scan_groups, (i64, Vec<u8>), |(g, data)| {
                Ok(Some(DumpItem::Group {
                    group: conv(g),
                    record: unblob(&data)?,
                }))
            }),
            Part::Members => scan!(scan_members, (i64, i64, Vec<u8>), |(g, user, data)| {
                Ok(Some(DumpItem::Member {
                    group: conv(g),
                    user: u(user),
                    record: unblob(&data)?,
                }))
            }),
            Part::UserGroups => scan!(scan_user_groups, (i64, i64, Vec<u8>), |(user, g, data)| {
                Ok(Some(DumpItem::UserGroup {
                    user: u(user),
                    group: conv(g),
                    record: unblob(&data)?,
                }))
            }),
            Part::Applications => {
                scan!(scan_applications, (i64, i64, Vec<u8>), |(g, user, data)| {
                    Ok(Some(DumpItem::Application {
                        group: conv(g),
                        user: u(user),
                        record: unblob(&data)?,
                    }))
                })
            }
            Part::Mentions => scan!(scan_mentions, (i64, i64, i64), |(g, user, seq)| {
                Ok(Some(DumpItem::Mention {
                    group: conv(g),
                    user: u(user),
                    seq: u(seq),
                }))
            }),
            Part::ReadHistograms => scan!(scan_reads, (i64, Vec<u8>), |(g, data)| {
                Ok(Some(DumpItem::ReadHistogram {
                    group: conv(g),
                    histogram: unblob(&data)?,
                }))
            }),
            Part::Audit => scan!(scan_audit, (i64, Vec<u8>), |(id, data)| {
                Ok(Some(DumpItem::Audit {
                    id: u(id),
                    record: unblob(&data)?,
                }))
            }),
            Part::PushTokens => scan!(scan_push, (i64, String, Vec<u8>), |(user, device, data)| {
                Ok(Some(DumpItem::PushToken {
                    user: u(user),
                    device_id: device,
                    token: unblob(&data)?,
                }))
            }),
            // Epoch 0: a conversation with messages that nobody claimed, not an owner.
            Part::Owners => scan!(
                scan_owners,
                (i64, Option<i64>, Option<i64>),
                |(c, epoch, node)| {
                    Ok(epoch
                        .map(u)
                        .filter(|e| *e > 0)
                        .map(|epoch| DumpItem::Owner {
                            conv: conv(c),
                            record: OwnerRecord {
                                epoch,
                                node: node.map_or(0, u),
                            },
                        }))
                }
            ),
            Part::Counters => self.counters_page().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn m(conv: ConvId, seq: u64) -> MessageRecord {
        MessageRecord {
            conv_id: conv,
            seq,
            msg_id: seq,
            from: 100_000_000,
            to: 100_000_001,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: Bytes::from_static(b"hi"),
            server_time_ms: seq,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        }
    }

    fn lens(items: &[DumpItem]) -> Vec<usize> {
        items.iter().map(DumpItem::records).collect()
    }

    #[test]
    fn a_page_of_messages_is_cut_into_runs_of_consecutive_seqs_of_one_conversation() {
        let a = ConvId::direct(100_000_000, 100_000_001).unwrap();
        let b = ConvId::group(7).unwrap();
        // Token order: partition (a, bucket 1) before (b, 0) before (a, 0).
        let page = vec![
            m(a, 1024),
            m(a, 1025),
            m(b, 1),
            m(b, 2),
            m(b, 4),
            m(a, 1),
            m(a, 2),
        ];
        assert_eq!(lens(&runs(page)), [2, 2, 1, 2]);
        assert!(runs(Vec::new()).is_empty());
        let long: Vec<MessageRecord> = (1..=600).map(|s| m(a, s)).collect();
        assert_eq!(lens(&runs(long)), [256, 256, 88]);
    }
}
