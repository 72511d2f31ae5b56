//! A commit group in ONE transaction with a fixed number of round trips, whatever its size:
//! BEGIN; the fences locked and checked; every table's rows as one multi-row statement each
//! (`INSERT … SELECT FROM UNNEST($1::bigint[], …)`, `ON CONFLICT` upserts, deletes joined to
//! an `UNNEST`), prepared together and then sent pipelined; COMMIT, which returns once the
//! commit is durable under the configured `synchronous_commit`.

use std::collections::HashMap;

use futures_util::future::{try_join, try_join_all};
use tokio_postgres::types::ToSql;

use super::in_doubt::{CURRENT_XID, CommitOut, Transacting};
use super::{PgStore, encode, i};
use crate::store::dedup_window::WindowRef;
use crate::store::{CommitGroup, StoreError, refuse_stale_fences};

/// The statements of one commit group, in the order they must run (a recall after the
/// insert of the message it recalls).
#[derive(Default)]
pub(super) struct Batch {
    statements: Vec<(&'static str, Vec<Box<dyn ToSql + Sync>>)>,
}

impl Batch {
    pub(super) fn push(&mut self, sql: &'static str, params: Vec<Box<dyn ToSql + Sync>>) {
        self.statements.push((sql, params));
    }
}

/// A recency entry's conversation, ordered as the u64 ids are (the top bit flipped).
pub(super) fn conv_order(conv: u64) -> i64 {
    (conv ^ (1 << 63)) as i64
}

/// Counters only move forward: a group carrying a smaller value than the stored one (written
/// from a read that missed a commit whose answer was lost) never takes ids back.
pub(super) const UPSERT_COUNTERS: &str = "INSERT INTO counters (name, value) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, excluded.value)";

const INSERT_MESSAGES: &str = "INSERT INTO messages (conv_id, seq, msg_id, from_user, \
     to_user, client_msg_id, content_type, content, server_time_ms, recall_of_seq, mentions) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::bigint[], $6::bytea[], $7::integer[], $8::bytea[], $9::bigint[], $10::bigint[], \
     $11::bytea[])";

/// A recalled message keeps its place and loses its content.
const RECALL: &str = "UPDATE messages m SET content = '', recall_event_seq = r.event \
     FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS r(conv, seq, event) \
     WHERE m.conv_id = r.conv AND m.seq = r.seq";

const RECENT_REMOVE: &str = "DELETE FROM recent t \
     USING UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS d(u, b, c) \
     WHERE t.user_id = d.u AND t.bucket = d.b AND t.conv_order = d.c";

const RECENT_PUT: &str = "INSERT INTO recent (user_id, bucket, conv_order) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING";

const CURSOR_ROWS_PUT: &str = "INSERT INTO cursor_rows (conv_id, user_id, delivered_seq, \
     read_seq, recent_sends, devices) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::bytea[], $6::bytea[]) \
     ON CONFLICT (conv_id, user_id) DO UPDATE SET delivered_seq = excluded.delivered_seq, \
     read_seq = excluded.read_seq, recent_sends = excluded.recent_sends, \
     devices = excluded.devices";

/// Fences at epoch 0 name conversations nobody claimed: a placeholder row (epoch 0) is put so
/// that the lock below holds against a claim racing this group. Rows go in in array order.
const FENCE_PLACEHOLDERS: &str = "INSERT INTO conv_owners (conv_id, epoch, node) \
     SELECT c, 0, 0 FROM UNNEST($1::bigint[]) AS c ON CONFLICT DO NOTHING";

/// Locks the fenced conversations' owner rows until the commit, in conversation order: a
/// claim waits for it.
pub(super) const FENCE_LOCK: &str = "SELECT conv_id, epoch FROM conv_owners WHERE conv_id = ANY($1) \
     ORDER BY conv_id FOR UPDATE";

pub(super) fn boxed<T: ToSql + Sync + 'static>(v: T) -> Box<dyn ToSql + Sync> {
    Box::new(v)
}

pub(super) fn log_statements(batch: &mut Batch, group: &CommitGroup) {
    let ms = &group.messages;
    if !ms.is_empty() {
        let col = |f: fn(&crate::store::MessageRecord) -> u64| -> Box<dyn ToSql + Sync> {
            boxed(ms.iter().map(|m| i(f(m))).collect::<Vec<i64>>())
        };
        batch.push(
            INSERT_MESSAGES,
            vec![
                col(|m| m.conv_id.to_wire()),
                col(|m| m.seq),
                col(|m| m.msg_id),
                col(|m| m.from),
                col(|m| m.to),
                boxed(
                    ms.iter()
                        .map(|m| m.client_msg_id.as_bytes().to_vec())
                        .collect::<Vec<_>>(),
                ),
                boxed(ms.iter().map(|m| m.content_type).collect::<Vec<i32>>()),
                boxed(ms.iter().map(|m| m.content.to_vec()).collect::<Vec<_>>()),
                col(|m| m.server_time_ms),
                col(|m| m.recall_of_seq),
                boxed(
                    ms.iter()
                        .map(|m| m.mentions.as_deref().map(encode))
                        .collect::<Vec<_>>(),
                ),
            ],
        );
    }
    if !group.recalls.is_empty() {
        let r = &group.recalls;
        batch.push(
            RECALL,
            vec![
                boxed(r.iter().map(|x| i(x.0.to_wire())).collect::<Vec<_>>()),
                boxed(r.iter().map(|x| i(x.1)).collect::<Vec<_>>()),
                boxed(r.iter().map(|x| i(x.2)).collect::<Vec<_>>()),
            ],
        );
    }
    let leaving: Vec<_> = group
        .recency
        .iter()
        .filter_map(|m| m.from.map(|from| (m.user, from, m.conv)))
        .collect();
    for (sql, entries) in [
        (RECENT_REMOVE, leaving),
        (
            RECENT_PUT,
            group
                .recency
                .iter()
                .map(|m| (m.user, m.to, m.conv))
                .collect(),
        ),
    ] {
        if entries.is_empty() {
            continue;
        }
        batch.push(
            sql,
            vec![
                boxed(entries.iter().map(|e| i(e.0)).collect::<Vec<_>>()),
                boxed(entries.iter().map(|e| i(e.1)).collect::<Vec<_>>()),
                boxed(
                    entries
                        .iter()
                        .map(|e| conv_order(e.2.to_wire()))
                        .collect::<Vec<_>>(),
                ),
            ],
        );
    }
    let rows = &group.cursor_rows;
    if !rows.is_empty() {
        batch.push(
            CURSOR_ROWS_PUT,
            vec![
                boxed(rows.iter().map(|r| i(r.0.to_wire())).collect::<Vec<_>>()),
                boxed(rows.iter().map(|r| i(r.1)).collect::<Vec<_>>()),
                boxed(
                    rows.iter()
                        .map(|r| i(r.2.cursor.delivered_seq))
                        .collect::<Vec<_>>(),
                ),
                boxed(
                    rows.iter()
                        .map(|r| i(r.2.cursor.read_seq))
                        .collect::<Vec<_>>(),
                ),
                boxed(
                    rows.iter()
                        .map(|r| encode(&WindowRef(&r.2.recent_sends)))
                        .collect::<Vec<_>>(),
                ),
                boxed(
                    rows.iter()
                        .map(|r| encode(&r.2.devices))
                        .collect::<Vec<_>>(),
                ),
            ],
        );
    }
}

impl PgStore {
    /// Locks the fenced conversations' owner rows and refuses the group if any is owned at
    /// another epoch than its fence names (every stale one reported). The stored epochs are
    /// looked up in a map built once: a group may carry thousands of fences, checked on the
    /// commit thread while the locks are held.
    async fn check_fences(
        tx: &deadpool_postgres::Transaction<'_>,
        fences: &[(crate::store::ConvId, u64)],
    ) -> Result<(), StoreError> {
        if fences.is_empty() {
            return Ok(());
        }
        let unclaimed: Vec<i64> = fences
            .iter()
            .filter(|(_, epoch)| *epoch == 0)
            .map(|(c, _)| i(c.to_wire()))
            .collect();
        let convs: Vec<i64> = fences.iter().map(|(c, _)| i(c.to_wire())).collect();
        let rows = Self::lock_owner_rows(tx, unclaimed, &convs).await?;
        let stored = rows
            .iter()
            .map(|row| Ok((super::u(row, 0)?, super::u(row, 1)?)))
            .collect::<Result<HashMap<u64, u64>, StoreError>>()?;
        refuse_stale_fences(fences, |conv| {
            Ok(stored.get(&conv.to_wire()).copied().unwrap_or(0))
        })
    }

    /// Puts epoch-0 placeholders for `unowned` and locks the owner rows of `convs` until the
    /// transaction ends; returns their (conv_id, epoch). Every transaction that locks owner
    /// rows (a commit group's fences, a batch of claims) goes through here and takes the
    /// locks in conversation order (inserts included), so two of them racing for the same
    /// conversations wait for each other instead of deadlocking.
    pub(super) async fn lock_owner_rows(
        tx: &deadpool_postgres::Transaction<'_>,
        mut unowned: Vec<i64>,
        convs: &[i64],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        if !unowned.is_empty() {
            unowned.sort_unstable();
            let st = tx.prepare_cached(FENCE_PLACEHOLDERS).await?;
            tx.execute(&st, &[&unowned]).await?;
        }
        let st = tx.prepare_cached(FENCE_LOCK).await?;
        Ok(tx.query(&st, &[&convs]).await?)
    }

    /// Runs `batch` in one transaction, after checking `fences` in it.
    pub(super) async fn run_batch(
        &self,
        fences: &[(crate::store::ConvId, u64)],
        batch: &Batch,
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.explained.is_some() {
            for (sql, params) in &batch.statements {
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| &**b).collect();
                self.explain(sql, &params).await?;
            }
            return Ok(());
        }
        // Declared before the connection: dropped after it (`in_doubt.rs`).
        let commit = CommitOut::default();
        let mut client = Transacting::new(self.client().await?, &self.in_doubt, &commit);
        let tx = client.client().transaction().await?;
        Self::check_fences(&tx, fences).await?;
        // Prepared first (at most once per connection), so that the executions below are
        // sent in order, pipelined, in one round trip, with the transaction's id asked for.
        let (xid, prepared) = try_join(
            tx.prepare_cached(CURRENT_XID),
            try_join_all(
                batch
                    .statements
                    .iter()
                    .map(|(sql, _)| tx.prepare_cached(sql)),
            ),
        )
        .await?;
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
            .statements
            .iter()
            .map(|(_, p)| p.iter().map(|b| &**b).collect())
            .collect();
        let (xid, _) = try_join(
            tx.query_one(&xid, &[]),
            try_join_all(
                prepared
                    .iter()
                    .zip(&params)
                    .map(|(st, p)| tx.execute(st, p)),
            ),
        )
        .await?;
        // From here until COMMIT's answer is read, the outcome is unknown: should this call be
        // abandoned (its time ran out) or the COMMIT fail, the transaction is in doubt.
        commit.sent(super::col(&xid, 0)?);
        tx.commit().await?;
        commit.answered();
        Ok(())
    }
}

impl PgStore {
    pub(super) fn append_group(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        log_statements(&mut batch, group);
        self.contact_statements(&mut batch, &group.contacts);
        self.group_statements(&mut batch, &group.groups);
        let counters: Vec<(&str, u64)> = [
            group.next_msg_id.map(|v| ("next_msg_id", v)),
            group.groups.next_group_id.map(|v| ("next_group_id", v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !counters.is_empty() {
            batch.push(
                UPSERT_COUNTERS,
                vec![
                    boxed(counters.iter().map(|c| c.0.to_owned()).collect::<Vec<_>>()),
                    boxed(counters.iter().map(|c| i(c.1)).collect::<Vec<_>>()),
                ],
            );
        }
        let mut fences = group.fences.clone();
        // One order for every writer: two groups never wait on each other's locks.
        fences.sort_unstable();
        self.block(self.run_batch(&fences, &batch))
    }
}
