//! The audit writer: one task that appends what has gathered on the queue in one store write,
//! at most one every [`AUDIT_WRITE_INTERVAL`].
//!
//! What a batch costs when the store says no:
//! - **unavailable** (a networked store away or busy: nothing is wrong with the entries): the
//!   same batch is tried again, waiting [`AUDIT_RETRY_BACKOFF_MIN`] doubling up to
//!   [`AUDIT_RETRY_BACKOFF_MAX`] between tries, for as long as the store stays away. What is
//!   held meanwhile is bounded by the queue: one batch ([`AUDIT_BATCH_ENTRIES_MAX`]) here and
//!   [`super::AUDIT_QUEUE_ENTRIES_MAX`] queued; past that users' events are dropped and counted and
//!   admin actions wait for room.
//! - **reading the last id at start** (the embedded store numbers entries after it) waits for
//!   an unavailable store the same way; entries queue meanwhile.
//! - **any other error**: the batch is written again one entry at a time, so that an entry the
//!   store refuses is the only one lost (and counted in `ringchat_audit_dropped_total`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AUDIT_BATCH_ENTRIES_MAX, AUDIT_WRITE_INTERVAL, Item};
use crate::store::{AuditRecord, AuditStore, StoreError};

/// The first wait before a batch the store was unavailable for is tried again.
const AUDIT_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two tries of one batch (the wait doubles up to this).
const AUDIT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Appends the queue's entries until every sender is gone.
pub(super) async fn run(store: Arc<dyn AuditStore>, mut rx: mpsc::Receiver<Item>) {
    // Waited for like an append: a writer that gave up here would keep no entry until the
    // next start (a networked store away when the node starts, or a commit of PostgreSQL's
    // still in doubt after a crash). Entries queue meanwhile, bounded by the queue.
    let mut next_id = match retrying(&store, "reading the audit log's last id", |s| {
        s.last_audit_id()
    })
    .await
    {
        Ok(last) => last + 1,
        Err(err) => {
            tracing::error!(%err, "audit log unreadable; audit entries are not kept");
            return;
        }
    };
    let mut items = Vec::with_capacity(AUDIT_BATCH_ENTRIES_MAX);
    let mut last_write: Option<tokio::time::Instant> = None;
    // An entry was not stored since the last flush that restarts the count.
    let mut lost = false;
    while rx.recv_many(&mut items, AUDIT_BATCH_ENTRIES_MAX).await > 0 {
        let writes = items.iter().any(|i| matches!(i, Item::Record(_)));
        if writes && let Some(last) = last_write {
            // Entries arriving meanwhile join this batch (up to its bound).
            tokio::time::sleep_until(last + AUDIT_WRITE_INTERVAL).await;
            while items.len() < AUDIT_BATCH_ENTRIES_MAX
                && let Ok(item) = rx.try_recv()
            {
                items.push(item);
            }
        }
        let mut records = Vec::with_capacity(items.len());
        let mut flushed = Vec::new();
        for item in items.drain(..) {
            match item {
                Item::Record(r) => records.push(r),
                Item::Flushed { done, restarts } => flushed.push((done, restarts)),
            }
        }
        if !records.is_empty() {
            last_write = Some(tokio::time::Instant::now());
            let dropped = store_batch(&store, &mut next_id, records).await;
            if dropped > 0 {
                lost = true;
                metrics::counter!("ringchat_audit_dropped_total").increment(dropped);
            }
        }
        let stored = !lost;
        for (done, restarts) in flushed {
            let _ = done.send(stored);
            lost &= !restarts;
        }
    }
}

/// Stores `records` as entries `next_id…` (advanced past those stored); returns how many
/// were not stored.
pub(super) async fn store_batch(
    store: &Arc<dyn AuditStore>,
    next_id: &mut u64,
    records: Vec<AuditRecord>,
) -> u64 {
    let count = records.len() as u64;
    let records = Arc::new(records);
    let err = match append(store, *next_id, Arc::clone(&records), None).await {
        Ok(()) => {
            *next_id += count;
            return 0;
        }
        Err(err) => err,
    };
    if count == 1 {
        tracing::error!(%err, "an audit entry was not stored");
        return 1;
    }
    tracing::warn!(%err, entries = count, "an audit batch was refused; storing its entries one by one");
    let mut dropped = 0;
    for at in 0..records.len() {
        match append(store, *next_id, Arc::clone(&records), Some(at)).await {
            Ok(()) => *next_id += 1,
            Err(err) => {
                dropped += 1;
                tracing::error!(%err, entry = ?records[at], "an audit entry was not stored");
            }
        }
    }
    dropped
}

/// Appends `records` (only `records[at]` when given) as entries from `first_id`; while the
/// store is unavailable, tries again after a growing wait. Any other error is returned.
async fn append(
    store: &Arc<dyn AuditStore>,
    first_id: u64,
    records: Arc<Vec<AuditRecord>>,
    at: Option<usize>,
) -> Result<(), StoreError> {
    retrying(store, "storing audit entries", move |s| match at {
        Some(at) => s.append_audit(first_id, std::slice::from_ref(&records[at])),
        None => s.append_audit(first_id, &records),
    })
    .await
}

/// Runs `call` on a blocking thread until the store is not unavailable, waiting
/// [`AUDIT_RETRY_BACKOFF_MIN`] doubling up to [`AUDIT_RETRY_BACKOFF_MAX`] between tries: the
/// one retry rule of the writer. Any other error is returned.
async fn retrying<T: Send + 'static>(
    store: &Arc<dyn AuditStore>,
    what: &'static str,
    call: impl Fn(&dyn AuditStore) -> Result<T, StoreError> + Send + Sync + 'static,
) -> Result<T, StoreError> {
    let call = Arc::new(call);
    let mut backoff = AUDIT_RETRY_BACKOFF_MIN;
    let mut tries: u64 = 0;
    loop {
        let (s, c) = (Arc::clone(store), Arc::clone(&call));
        let done = tokio::task::spawn_blocking(move || c(&*s))
            .await
            .unwrap_or_else(|err| Err(StoreError::Engine(err.into())));
        match done {
            Err(StoreError::Unavailable(err)) => {
                tries += 1;
                if tries == 1 {
                    tracing::warn!(%err, what, "the store is unavailable; audit entries wait for it");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(AUDIT_RETRY_BACKOFF_MAX);
            }
            other => {
                if tries > 0 && other.is_ok() {
                    tracing::info!(tries, what, "the store is back; audit entries go on");
                }
                return other;
            }
        }
    }
}
