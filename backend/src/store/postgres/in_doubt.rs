//! Commits whose outcome is not known: a transaction's COMMIT was sent and its answer never
//! read (the call's time ran out while the database was still committing: a slow WAL flush, a
//! synchronous standby that is away; or the connection broke). The database may finish that
//! COMMIT later. Until it has, nothing read from it may be trusted by a writer: the sequencer
//! reloads its counters, heads and dedup windows after a failed group, and a read that misses a
//! commit still in flight would hand out its msg ids and seqs again.
//!
//! So every call of the store first settles what is in doubt (one query, only while something
//! is): a transaction is settled once it is no longer running as of a fresh snapshot
//! (`pg_visible_in_snapshot`: committed and visible, or aborted), or once the database no
//! longer knows it (at or past its next xid: lost with a crash or a failover before any of it
//! reached the WAL that survived). `pg_xact_status` alone would
//! not do: a COMMIT waiting for a synchronous standby is already "committed" in the commit log
//! while other sessions cannot see it yet. While one is not settled, calls are `Unavailable`
//! (the sequencer refuses its group and reloads before the next one). The connection that
//! carried such a COMMIT is taken out of the pool, so no later call queues behind it.
//!
//! What is held: one xid per transaction whose answer was lost; at most one per pooled
//! connection can be in flight, and none is started while one is unsettled.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use deadpool_postgres::Object;

use crate::store::StoreError;

/// The transaction's id (assigned now if it had none), as a bigint.
pub(super) const CURRENT_XID: &str = "SELECT pg_current_xact_id()::text::bigint";

/// The ones of `$1` still running as of a fresh snapshot. One at or past the server's next
/// xid (this query's own, so it takes one: only while something is in doubt) was never seen
/// by this server: the database restarted (or failed over) without it, so it can no longer
/// commit. Waiting for it to become visible would wait until the xid counter reached it, and
/// a store that only reads never moves that counter. (The snapshot's xmax is no such bound:
/// it is one past the highest *completed* xid, and the commit in doubt may be the highest
/// running one.)
const UNSETTLED: &str = "SELECT x FROM unnest($1::bigint[]) AS x, \
     (SELECT pg_current_snapshot() AS s, pg_current_xact_id() AS next) AS now \
     WHERE x::text::xid8 < now.next \
     AND NOT pg_visible_in_snapshot(x::text::xid8, now.s)";

#[derive(Default)]
pub(super) struct InDoubt {
    xids: Mutex<Vec<i64>>,
}

impl InDoubt {
    pub(super) fn add(&self, xid: i64) {
        self.xids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(xid);
    }

    /// `Ok` once no commit of this store is in doubt; `Unavailable` while one still runs.
    pub(super) async fn settle(&self, client: &Object) -> Result<(), StoreError> {
        let xids = self.xids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if xids.is_empty() {
            return Ok(());
        }
        let running: Vec<i64> = client
            .query(UNSETTLED, &[&xids])
            .await?
            .iter()
            .map(|row| super::col(row, 0))
            .collect::<Result<_, _>>()?;
        self.xids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| !xids.contains(x) || running.contains(x));
        match running.first() {
            None => {
                tracing::info!(
                    transactions = xids.len(),
                    "the commits whose answer was lost have finished on PostgreSQL"
                );
                Ok(())
            }
            Some(xid) => Err(StoreError::Unavailable(
                format!(
                    "a commit whose answer was lost (transaction {xid}) is still running on \
                     PostgreSQL; the store waits for its outcome"
                )
                .into(),
            )),
        }
    }
}

/// The xid of a transaction whose COMMIT is out and unanswered; 0: none (no transaction has
/// xid 0). Kept apart from [`Transacting`], which the transaction borrows.
#[derive(Default)]
pub(super) struct CommitOut(AtomicI64);

impl CommitOut {
    pub(super) fn sent(&self, xid: i64) {
        self.0.store(xid, Ordering::Relaxed);
    }

    pub(super) fn answered(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// A pooled connection running a transaction. Dropped while its COMMIT is out and unanswered,
/// the transaction is put in doubt and the connection leaves the pool.
pub(super) struct Transacting<'a> {
    client: Option<Object>,
    in_doubt: &'a InDoubt,
    commit: &'a CommitOut,
}

impl<'a> Transacting<'a> {
    pub(super) fn new(client: Object, in_doubt: &'a InDoubt, commit: &'a CommitOut) -> Self {
        Self {
            client: Some(client),
            in_doubt,
            commit,
        }
    }

    pub(super) fn client(&mut self) -> &mut Object {
        self.client.as_mut().expect("held until dropped")
    }
}

impl Drop for Transacting<'_> {
    fn drop(&mut self) {
        let xid = self.commit.0.load(Ordering::Relaxed);
        if xid != 0 {
            self.in_doubt.add(xid);
            if let Some(client) = self.client.take() {
                // Closed, not pooled: its next user would wait behind the COMMIT.
                drop(Object::take(client));
            }
        }
    }
}
