//! Import of a batch of [`DumpItem`]s into ScyllaDB, idempotent:
//!
//! 1. **Rows**: every record and the index rows it implies (usernames, e-mails, the prefix
//!    index, `user_tokens`, `invite_codes`, `invites_by_issuer`, `group_names`) as upserts at
//!    LOCAL_QUORUM, grouped by partition into UNLOGGED batches (one partition per batch: one mutation on
//!    its replicas, no batchlog), at most `storage.scylla.copy_requests_max` requests in
//!    flight. Messages and recalls carry the write timestamps the adapter gives them
//!    (`codec::message_ts`, epoch 0): a recall wins over its message whatever the order, and
//!    a later owner's writes win over the copy's.
//! 2. **Values only raised**, once the rows are written: each conversation's published head
//!    (its messages exist before readers can see them), owner epochs and counters, by LWT
//!    (`INSERT … IF NOT EXISTS`, else `UPDATE … IF value < ?`): a repeated or resumed batch
//!    never moves them back.
//!
//! Tokens keep their remaining TTL: the adapter derives it from the token's expiry (plus
//! `TOKEN_KEPT_AFTER_EXPIRY_S`), so the copy computes the same one, never less than
//! [`COPY_TTL_MIN_S`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::super::accounts::{TOKEN_KEPT_AFTER_EXPIRY_S, now_ms};
use super::super::audit::META_AUDIT_LAST;
use super::super::codec::{self, AUDIT_PER_BUCKET, IDS_PER_BUCKET, bucket, i, ordered};
use super::super::groups::group_key;
use super::super::writes::{STATEMENT_OVERHEAD_BYTES, Values, cut};
use super::super::{ScyllaStore, engine};
use super::Statements;
use super::export::META_COUNTERS;
use crate::store::dump::{Counter, DumpItem};
use crate::store::{
    ConvId, MessageRecord, StoreError, TokenRecord, email_key, group_name_key, username_key,
};

/// A copied token lives at least this long (seconds), even one long expired: the
/// verification pass after the copy must still find it. It cannot be used (its expiry is
/// checked on every use); ScyllaDB drops it a day later.
pub(super) const COPY_TTL_MIN_S: i32 = 86_400;

/// The TTL of a copied token: what the adapter gives it when it is written (its expiry plus
/// the time expired tokens stay listed), from now, and at least [`COPY_TTL_MIN_S`].
pub(super) fn copied_token_ttl(token: &TokenRecord, now_ms: u64) -> i32 {
    codec::ttl_s(token.expires_at_ms, now_ms, TOKEN_KEPT_AFTER_EXPIRY_S).max(COPY_TTL_MIN_S)
}

/// The partition a row goes to: its table and partition key (a text or blob key as its
/// 64-bit hash: a collision only puts two partitions in one batch, still correct).
pub(super) type Partition = (&'static str, i64, i64);

fn text_key(key: &[u8]) -> i64 {
    xxhash_rust::xxh3::xxh3_64(key) as i64
}

/// Items cut into batches: by partition, each partition's items in order and in runs of at
/// most `BATCH_STATEMENTS_MAX` statements and `BATCH_BYTES_MAX` bytes.
pub(super) fn by_partition<T>(rows: Vec<(Partition, T, usize)>) -> Vec<Vec<T>> {
    let mut parts: BTreeMap<Partition, Vec<(T, usize)>> = BTreeMap::new();
    for (partition, item, bytes) in rows {
        parts.entry(partition).or_default().push((item, bytes));
    }
    parts.into_values().flat_map(cut).collect()
}

/// Runs `requests`, at most `in_flight_max` at once; the first error ends it.
pub(super) async fn bounded<F>(
    requests: impl IntoIterator<Item = F>,
    in_flight_max: usize,
) -> Result<(), StoreError>
where
    F: Future<Output = Result<(), StoreError>>,
{
    stream::iter(requests)
        .buffer_unordered(in_flight_max.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// The rows of one import, with their partitions.
#[derive(Default)]
struct Rows<'a> {
    rows: Vec<(Partition, (&'a PreparedStatement, Values), usize)>,
}

impl<'a> Rows<'a> {
    fn push(
        &mut self,
        partition: Partition,
        st: &'a PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow + Send + Sync + 'static,
        bytes: usize,
    ) {
        self.rows.push((
            partition,
            (st, Box::new(values)),
            bytes + STATEMENT_OVERHEAD_BYTES,
        ));
    }
}

/// What step 2 raises.
#[derive(Default)]
struct Raises {
    /// Conversation → (highest seq imported, its time).
    heads: HashMap<ConvId, (u64, u64)>,
    owners: Vec<(ConvId, u64, u64)>,
    counters: Vec<(&'static str, u64)>,
}

fn message_row(
    m: &MessageRecord,
) -> impl scylla::serialize::row::SerializeRow + Send + Sync + use<> {
    let (ids, all) = m.mentions.as_deref().map_or((Vec::new(), false), |x| {
        (
            x.user_ids.iter().map(|v| i(*v)).collect::<Vec<i64>>(),
            x.all,
        )
    });
    (
        i(m.conv_id.to_wire()),
        i(bucket(m.seq)),
        i(m.seq),
        i(m.msg_id),
        i(m.from),
        i(m.to),
        m.client_msg_id.clone(),
        m.content_type,
        m.content.clone(),
        i(m.server_time_ms),
        i(m.recall_of_seq),
        ids,
        all,
        codec::message_ts(0, m.seq),
    )
}

impl ScyllaStore {
    /// The rows of `items` and what they raise.
    fn import_rows<'a>(&'a self, d: &'a Statements, items: &[DumpItem]) -> (Rows<'a>, Raises) {
        let st = &self.st;
        let now = now_ms();
        let mut w = Rows::default();
        let mut raises = Raises::default();
        for item in items {
            match item {
                DumpItem::User(user) => {
                    let id = i(user.user_id);
                    let bytes = user.username.len() + user.password_hash.len() + user.email.len();
                    w.push(
                        ("users", i(user.user_id / IDS_PER_BUCKET), 0),
                        &st.user_put,
                        (
                            i(user.user_id / IDS_PER_BUCKET),
                            id,
                            user.username.clone(),
                            user.password_hash.clone(),
                            user.email.clone(),
                            i(user.created_at_ms),
                        ),
                        bytes,
                    );
                    let name = username_key(&user.username);
                    let initial = codec::initial(&name);
                    w.push(
                        ("username_prefixes", text_key(initial.as_bytes()), 0),
                        &st.prefix_put,
                        (initial, name.clone(), id),
                        name.len() * 2,
                    );
                    w.push(
                        ("usernames", text_key(name.as_bytes()), 0),
                        &d.name_put,
                        (name, id),
                        user.username.len(),
                    );
                    let mail = email_key(&user.email);
                    if !mail.is_empty() {
                        w.push(
                            ("emails", text_key(mail.as_bytes()), 0),
                            &d.email_put,
                            (mail, id),
                            user.email.len(),
                        );
                    }
                }
                DumpItem::Token { hash, token } => {
                    let ttl = copied_token_ttl(token, now);
                    w.push(
                        ("tokens", text_key(hash), 0),
                        &st.token_put,
                        (
                            hash.to_vec(),
                            i(token.user_id),
                            token.device_id.clone(),
                            i(token.issued_at_ms),
                            i(token.expires_at_ms),
                            token.platform,
                            i(token.last_seen_ms),
                            ttl,
                        ),
                        token.device_id.len() + 32,
                    );
                    w.push(
                        ("user_tokens", i(token.user_id), 0),
                        &st.user_token_put,
                        (i(token.user_id), hash.to_vec(), ttl),
                        32,
                    );
                }
                DumpItem::AccountFlags { user, flags } => w.push(
                    ("user_flags", i(*user), 0),
                    &st.flags_put,
                    (i(*user), codec::blob(flags)),
                    64,
                ),
                DumpItem::Invite(invite) => {
                    let data = codec::blob(invite);
                    let bytes = data.len();
                    w.push(
                        ("invites", 0, 0),
                        &st.invite_put,
                        (i(invite.id), data),
                        bytes,
                    );
                    w.push(
                        ("invite_codes", text_key(&invite.code_hash), 0),
                        &st.invite_code_put,
                        (invite.code_hash.to_vec(), i(invite.id)),
                        32,
                    );
                    w.push(
                        ("invites_by_issuer", text_key(invite.issuer.as_bytes()), 0),
                        &st.invite_issuer_put,
                        (invite.issuer.clone(), i(invite.id)),
                        invite.issuer.len(),
                    );
                }
                DumpItem::Messages(run) => {
                    for m in run {
                        let c = i(m.conv_id.to_wire());
                        let bytes = m.content.len() + m.client_msg_id.len();
                        w.push(
                            ("messages", c, i(bucket(m.seq))),
                            &st.msg_insert,
                            message_row(m),
                            bytes,
                        );
                        let head = raises.heads.entry(m.conv_id).or_default();
                        if m.seq > head.0 {
                            *head = (m.seq, m.server_time_ms);
                        }
                    }
                }
                DumpItem::Recall {
                    conv,
                    seq,
                    event_seq,
                } => {
                    let c = i(conv.to_wire());
                    w.push(
                        ("messages", c, i(bucket(*seq))),
                        &st.msg_recall,
                        (
                            codec::message_ts(0, *event_seq),
                            i(*event_seq),
                            c,
                            i(bucket(*seq)),
                            i(*seq),
                        ),
                        0,
                    );
                }
                DumpItem::CursorRow { conv, user, row } => {
                    let data = codec::blob(row);
                    let bytes = data.len();
                    let c = i(conv.to_wire());
                    w.push(
                        ("cursor_rows", c, 0),
                        &st.cursor_put,
                        (c, i(*user), data),
                        bytes,
                    );
                }
                DumpItem::Recency { user, bucket, conv } => w.push(
                    ("recent", i(*user), 0),
                    &st.recent_put,
                    (i(*user), i(*bucket), ordered(conv.to_wire())),
                    0,
                ),
                DumpItem::Relation {
                    owner,
                    kind,
                    other,
                    record,
                } => {
                    let data = codec::blob(record);
                    let bytes = data.len();
                    let k = i32::from(*kind as u8);
                    w.push(
                        ("relations", i(*owner), i64::from(k)),
                        &st.relation_put,
                        (i(*owner), k, i(*other), data),
                        bytes,
                    );
                }
                DumpItem::ContactSummary { user, summary } => w.push(
                    ("contact_summaries", i(*user), 0),
                    &st.summary_put,
                    (i(*user), codec::blob(summary)),
                    32,
                ),
                DumpItem::Profile { user, profile } => {
                    let data = codec::blob(profile);
                    let bytes = data.len();
                    w.push(
                        ("profiles", i(*user), 0),
                        &st.profile_put,
                        (i(*user), data),
                        bytes,
                    );
                }
                DumpItem::Group { group, record } => {
                    let data = codec::blob(record);
                    let bytes = data.len();
                    let (b, id) = group_key(*group);
                    w.push(("groups", b, 0), &st.group_put, (b, id, data), bytes);
                    let name = group_name_key(&record.name);
                    let initial = codec::initial(&name);
                    w.push(
                        ("group_names", text_key(initial.as_bytes()), 0),
                        &st.group_name_put,
                        (initial, name.clone(), id),
                        name.len() * 2,
                    );
                }
                DumpItem::Member {
                    group,
                    user,
                    record,
                } => {
                    let g = i(group.to_wire());
                    w.push(
                        ("group_members", g, 0),
                        &st.member_put,
                        (g, i(*user), codec::blob(record)),
                        32,
                    );
                }
                DumpItem::UserGroup {
                    user,
                    group,
                    record,
                } => w.push(
                    ("user_groups", i(*user), 0),
                    &st.user_group_put,
                    (i(*user), i(group.to_wire()), codec::blob(record)),
                    32,
                ),
                DumpItem::Application {
                    group,
                    user,
                    record,
                } => {
                    let data = codec::blob(record);
                    let bytes = data.len();
                    let g = i(group.to_wire());
                    w.push(
                        ("group_applications", g, 0),
                        &st.application_put,
                        (g, i(*user), data),
                        bytes,
                    );
                }
                DumpItem::Mention { group, user, seq } => {
                    let g = i(group.to_wire());
                    w.push(
                        ("mentions", g, i(*user)),
                        &st.mention_put,
                        (g, i(*user), i(*seq)),
                        0,
                    );
                }
                DumpItem::ReadHistogram { group, histogram } => {
                    let data = codec::blob(histogram);
                    let bytes = data.len();
                    let g = i(group.to_wire());
                    w.push(("group_reads", g, 0), &st.group_reads_put, (g, data), bytes);
                }
                DumpItem::Audit { id, record } => {
                    let data = codec::blob(record);
                    let bytes = data.len();
                    let b = i(id / AUDIT_PER_BUCKET);
                    w.push(("audit", b, 0), &st.audit_put, (b, i(*id), data), bytes);
                }
                DumpItem::PushToken {
                    user,
                    device_id,
                    token,
                } => {
                    let data = codec::blob(token);
                    let bytes = data.len() + device_id.len();
                    w.push(
                        ("push_tokens", i(*user), 0),
                        &st.push_put,
                        (i(*user), device_id.clone(), data),
                        bytes,
                    );
                }
                DumpItem::Owner { conv, record } => {
                    raises.owners.push((*conv, record.epoch, record.node));
                }
                DumpItem::Counter { counter, next } => match counter {
                    Counter::Audit => {
                        if *next > 1 {
                            raises.counters.push((META_AUDIT_LAST, next - 1));
                        }
                    }
                    _ => {
                        if let Some((_, name)) = META_COUNTERS.iter().find(|(c, _)| c == counter) {
                            raises.counters.push((*name, *next));
                        }
                    }
                },
            }
        }
        (w, raises)
    }

    /// One batch of one partition's statements (one statement: sent as itself).
    async fn send_partition_batch(
        &self,
        chunk: Vec<(&PreparedStatement, Values)>,
    ) -> Result<(), StoreError> {
        if chunk.len() == 1 {
            let (st, values) = chunk.into_iter().next().expect("one statement");
            return self.exec(st, values).await.map(drop);
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_consistency(Consistency::LocalQuorum);
        // Upserts only: the same batch again writes the same cells.
        batch.set_is_idempotent(true);
        let mut values = Vec::with_capacity(chunk.len());
        for (st, v) in chunk {
            batch.append_statement(st.clone());
            values.push(v);
        }
        self.session()
            .batch(&batch, values)
            .await
            .map(drop)
            .map_err(engine)
    }

    /// Raises a value by LWT: inserted if its row is missing, else moved up if below.
    async fn raise(
        &self,
        first: (
            &PreparedStatement,
            impl scylla::serialize::row::SerializeRow,
        ),
        up: (
            &PreparedStatement,
            impl scylla::serialize::row::SerializeRow,
        ),
    ) -> Result<(), StoreError> {
        if self.lwt(first.0, first.1).await?.applied {
            return Ok(());
        }
        // Not applied: the stored value was already at least this one. Either way, done.
        self.lwt(up.0, up.1).await.map(drop)
    }

    pub(super) async fn import_async(
        &self,
        d: &Statements,
        items: &[DumpItem],
    ) -> Result<(), StoreError> {
        let (rows, raises) = self.import_rows(d, items);
        let batches = by_partition(rows.rows);
        bounded(
            batches
                .into_iter()
                .map(|chunk| self.send_partition_batch(chunk)),
            self.copy_requests_max,
        )
        .await?;
        let st = &self.st;
        let heads = raises.heads.into_iter().map(|(conv, (seq, time))| {
            let c = i(conv.to_wire());
            self.raise(
                (&st.head_first, (c, i(seq), i(time))),
                (&d.head_raise, (i(seq), i(time), c, i(seq))),
            )
        });
        bounded(heads, self.copy_requests_max).await?;
        let owners = raises.owners.into_iter().map(|(conv, epoch, node)| {
            let c = i(conv.to_wire());
            self.raise(
                (&d.owner_first, (c, i(epoch), i(node))),
                (&d.owner_raise, (i(epoch), i(node), c, i(epoch))),
            )
        });
        bounded(owners, self.copy_requests_max).await?;
        for (name, value) in raises.counters {
            self.raise(
                (&st.meta_init, (name, i(value))),
                (&d.meta_raise, (i(value), name, i(value))),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn rows_are_batched_by_partition_in_order_and_never_across_partitions() {
        let m = |c: i64, b: i64| ("messages", c, b);
        let rows = vec![
            (m(1, 0), "a1", 10),
            (m(2, 0), "b1", 10),
            (m(1, 0), "a2", 10),
            (("users", 1, 0), "u1", 10),
            (m(1, 1), "c1", 10),
            (m(1, 0), "a3", 10),
        ];
        let batches = by_partition(rows);
        assert_eq!(batches.len(), 4);
        assert!(batches.contains(&vec!["a1", "a2", "a3"]));
        assert!(batches.contains(&vec!["b1"]));
        assert!(batches.contains(&vec!["c1"]));
        assert!(batches.contains(&vec!["u1"]));
        // One partition's rows past the statement limit: several batches, in order.
        let many: Vec<_> = (0..600).map(|n| (m(9, 0), n, 10)).collect();
        let batches = by_partition(many);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        assert_eq!(batches.concat(), (0..600).collect::<Vec<_>>());
        // And past the byte limit.
        let big: Vec<_> = (0..4).map(|n| (m(9, 0), n, 40_000)).collect();
        assert_eq!(by_partition(big).len(), 4);
    }

    #[test]
    fn text_keys_of_different_partitions_differ() {
        assert_ne!(text_key(b"anna"), text_key(b"bob"));
        assert_eq!(text_key(b"anna"), text_key(b"anna"));
    }

    #[test]
    fn copied_tokens_keep_their_remaining_ttl_and_never_vanish_before_verification() {
        let now = 1_700_000_000_000;
        let token = |expires_at_ms| TokenRecord {
            user_id: 100_000_000,
            device_id: "d".into(),
            issued_at_ms: 0,
            expires_at_ms,
            platform: 0,
            last_seen_ms: 0,
        };
        let kept = TOKEN_KEPT_AFTER_EXPIRY_S as i32;
        // Ten days left: ten days plus the listing grace, as when the adapter wrote it.
        assert_eq!(
            copied_token_ttl(&token(now + 10 * 86_400_000), now),
            10 * 86_400 + kept
        );
        // Expired: the grace counted from now, as the adapter's own writes count it; never
        // less than the verification pass needs.
        assert_eq!(copied_token_ttl(&token(now - 86_400_000), now), kept);
        assert!(copied_token_ttl(&token(1), now) >= COPY_TTL_MIN_S);
        // A token without end stays under CQL's TTL maximum.
        assert_eq!(copied_token_ttl(&token(u64::MAX), now), 630_720_000);
    }

    #[test]
    fn no_more_requests_than_the_bound_are_in_flight() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let now = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let request = || async {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            // Let every other request that can start, start.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            now.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        rt.block_on(bounded((0..100).map(|_| request()), 7))
            .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!(
            most.load(Ordering::SeqCst),
            7,
            "the bound is reached and kept"
        );

        // The first error ends the import with it.
        let failing = (0..10).map(|n| async move {
            if n == 3 {
                Err(StoreError::Unavailable("node down".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(
            rt.block_on(bounded(failing, 2)),
            Err(StoreError::Unavailable(_))
        ));
    }
}
