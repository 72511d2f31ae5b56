//! The audit log: every state-changing admin action and users' security events (logins, failed
//! logins, password changes and resets, device revocations), in one place.
//!
//! Callers never write the store themselves: `record` queues an entry on a bounded queue and one
//! writer task appends what has gathered in one store write (a login storm costs one write per
//! batch, not one per login), at most one every `AUDIT_WRITE_INTERVAL`. Users' events are queued without waiting: when the queue is full
//! the entry is dropped and counted (`ringchat_audit_dropped_total`), never the login. Admin
//! actions wait for room, so none of them goes unrecorded.
//!
//! Every entry's text is made storable where it enters the queue ([`fit`]): control characters
//! escaped (PostgreSQL refuses NUL in text, and a typed name is anyone's), then cut to
//! [`AUDIT_FIELD_BYTES_MAX`]. The writer (`writer.rs`) retries a batch while the store is
//! unavailable and never lets one entry the store refuses take the rest of its batch down.

#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::store::{AuditRecord, AuditStore, StoreError};

/// Entries waiting for the writer, at most.
const AUDIT_QUEUE_ENTRIES_MAX: usize = 16_384;
/// Entries the writer appends in one store write, at most.
const AUDIT_BATCH_ENTRIES_MAX: usize = 1_024;
/// Time from the start of one store write to the start of the next, at least. Every store
/// write holds the store's one write lock through its fsync, the message commits' too: without
/// a pause, a login storm's entries would go out a few at a time, one fsync each, back to back,
/// and every commit group would wait behind one. With it, at most 20 audit fsyncs a second
/// (up to 20,480 entries a second); an entry waits 50 ms more at most.
const AUDIT_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Entries one prune step removes, at most (one store write); steps follow each other until
/// nothing is due, then the task sleeps for [`AUDIT_PRUNE_INTERVAL`].
const AUDIT_PRUNE_STEP_ENTRIES_MAX: usize = 4_096;
const AUDIT_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3_600);
/// Bytes kept of any one text field; longer ones are cut (on a character boundary).
pub(crate) const AUDIT_FIELD_BYTES_MAX: usize = 512;

/// The actor of a failed chat login that named no account (`failed_login_actor`).
pub(crate) const UNKNOWN_ACCOUNT: &str = "user:(unknown account)";

/// Who a failed login (chat or admin) is audited as: `known`, the account the typed name or
/// address belongs to, else `unknown`, a fixed marker. Never what was typed: it may be a
/// password in the wrong field, and the audit log is read by every viewer.
pub(crate) fn failed_login_actor(known: Option<String>, unknown: &str) -> String {
    known.unwrap_or_else(|| unknown.to_owned())
}

/// What the writer's queue carries: entries, and a flush's "tell me once all before is stored".
enum Item {
    Record(AuditRecord),
    /// Answered once every entry queued before it was written: whether none failed since the
    /// last flush that `restarts` the count (the admin CLI's import: its entries leave their
    /// queue only once stored).
    Flushed {
        done: tokio::sync::oneshot::Sender<bool>,
        restarts: bool,
    },
}

pub(crate) struct Audit {
    tx: mpsc::Sender<Item>,
    rx: Mutex<Option<mpsc::Receiver<Item>>>,
    store: Arc<dyn AuditStore>,
}

/// Who did it, to what, from where: the parts of an entry besides its time and action.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub from: String,
    pub detail: String,
}

impl Entry {
    pub fn new(actor: impl Into<String>, action: &'static str) -> Self {
        Self {
            actor: actor.into(),
            action,
            ..Self::default()
        }
    }
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }
    pub fn from(mut self, from: impl std::fmt::Display) -> Self {
        self.from = from.to_string();
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn into_record(self, at_ms: u64) -> AuditRecord {
        fit(AuditRecord {
            at_ms,
            actor: self.actor,
            action: self.action.to_owned(),
            target: self.target,
            from: self.from,
            detail: self.detail,
        })
    }
}

/// An admin action found the writer stopped (its store unreadable at start).
fn unrecorded() {
    tracing::error!("the audit writer has stopped; an admin action went unrecorded");
}

/// A record as the log keeps it: each text field [`storable`]. The one rule for every entry,
/// whoever made it (a user's event, an admin action, the admin CLI's import).
fn fit(r: AuditRecord) -> AuditRecord {
    AuditRecord {
        at_ms: r.at_ms,
        actor: storable(r.actor),
        action: storable(r.action),
        target: storable(r.target),
        from: storable(r.from),
        detail: storable(r.detail),
    }
}

/// `s` with its control characters escaped as Rust writes them (`\0`, `\n`, `\u{1b}`), then
/// cut to [`AUDIT_FIELD_BYTES_MAX`] bytes on a character boundary.
fn storable(s: String) -> String {
    if s.len() <= AUDIT_FIELD_BYTES_MAX && !s.chars().any(char::is_control) {
        return s;
    }
    // Built only as far as is kept: a long typed name costs no more than a short one.
    let mut out = String::with_capacity(AUDIT_FIELD_BYTES_MAX + 8);
    for c in s.chars() {
        if out.len() > AUDIT_FIELD_BYTES_MAX {
            break;
        }
        match c.is_control() {
            true => out.extend(c.escape_debug()),
            false => out.push(c),
        }
    }
    let mut end = AUDIT_FIELD_BYTES_MAX.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_ENTRIES_MAX);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            store,
        }
    }

    /// A user's security event: queued if there is room, else dropped and counted.
    pub fn record(&self, entry: Entry) {
        let record = entry.into_record(crate::time::now_ms());
        if self.tx.try_send(Item::Record(record)).is_err() {
            metrics::counter!("ringchat_audit_dropped_total").increment(1);
        }
    }

    /// An admin action: waits for room in the queue (admin actions are few), so it is never
    /// dropped.
    pub async fn record_admin(&self, entry: Entry) {
        self.queue(entry.into_record(crate::time::now_ms())).await;
    }

    /// Waits until every entry queued before it is stored (or the writer has stopped): at
    /// shutdown, so that a clean stop loses no audit entry, and before the log is read. Starts
    /// the writer if nothing has yet (a harness that never serves), so it cannot wait forever.
    /// While the store is unavailable the writer waits for it, and so does this: callers that
    /// answer someone bound it (`service.rs`'s `AUDIT_FLUSH_MAX`, the audit API's page).
    pub async fn flush(self: &Arc<Self>) {
        self.flush_counting(false).await;
    }

    /// [`Self::flush`], and whether no entry failed to be stored since the last call of this
    /// (the admin CLI's import keeps its entries queued until this says they are stored).
    pub async fn flush_stored(self: &Arc<Self>) -> bool {
        self.flush_counting(true).await
    }

    async fn flush_counting(self: &Arc<Self>, restarts: bool) -> bool {
        self.start();
        let (done, stored) = tokio::sync::oneshot::channel();
        if self
            .tx
            .send(Item::Flushed { done, restarts })
            .await
            .is_err()
        {
            return false;
        }
        stored.await.unwrap_or(false)
    }

    /// [`Self::record_admin`] from a thread that may block (not a runtime's worker: a
    /// `SIGHUP`'s reload on its blocking thread).
    pub fn record_admin_blocking(&self, entry: Entry) {
        let record = entry.into_record(crate::time::now_ms());
        if self.tx.blocking_send(Item::Record(record)).is_err() {
            unrecorded();
        }
    }

    /// An entry made elsewhere (the admin CLI's), kept with its own time.
    pub async fn record_imported(&self, record: AuditRecord) {
        self.queue(fit(record)).await;
    }

    /// Queues a fitted record, waiting for room.
    async fn queue(&self, record: AuditRecord) {
        if self.tx.send(Item::Record(record)).await.is_err() {
            unrecorded();
        }
    }

    /// A page of entries with ids below `before`, newest first (blocking: call off the
    /// runtime's workers).
    pub fn page(&self, before: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.store.audit_page(before, limit)
    }

    /// Prunes entries older than `retention_days` (`admin.audit_retention_days`; 0 keeps them
    /// forever) now and every hour, in bounded steps, on the current tokio runtime.
    pub fn start_retention(self: &Arc<Self>, retention_days: u64) {
        if retention_days == 0 {
            return;
        }
        let store = Arc::clone(&self.store);
        let keep_ms = retention_days.saturating_mul(24 * 3600 * 1000);
        tokio::spawn(async move {
            loop {
                let before_ms = crate::time::now_ms().saturating_sub(keep_ms);
                loop {
                    let s = Arc::clone(&store);
                    let step = tokio::task::spawn_blocking(move || {
                        s.prune_audit(before_ms, AUDIT_PRUNE_STEP_ENTRIES_MAX)
                    })
                    .await;
                    match step {
                        Ok(Ok(n)) => {
                            if n > 0 {
                                tracing::info!(entries = n, retention_days, "audit entries pruned");
                            }
                            if n < AUDIT_PRUNE_STEP_ENTRIES_MAX {
                                break;
                            }
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(%err, "pruning the audit log");
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(%err, "pruning the audit log");
                            break;
                        }
                    }
                }
                tokio::time::sleep(AUDIT_PRUNE_INTERVAL).await;
            }
        });
    }

    /// Starts the writer on the current tokio runtime; a second call does nothing.
    pub fn start(self: &Arc<Self>) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        tokio::spawn(writer::run(Arc::clone(&self.store), rx));
    }
}
