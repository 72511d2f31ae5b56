//! Storage behind ports (`ports.rs`): the embedded fjall store is the default; the cluster
//! stores of record (PostgreSQL, ScyllaDB) implement the same ports later.
//!
//! Methods are synchronous and may block on disk: call them from a blocking context (the read
//! pool or the sequencer's thread), never directly on a tokio worker's hot loop.

mod account_admin;
mod audit;
#[cfg(test)]
pub(crate) mod conformance;
mod contacts;
mod conv;
pub(crate) mod dedup_window;
mod dir_lock;
pub mod dump;
mod fjall;
mod groups;
mod open;
mod owners;
mod ports;
mod postgres;
pub(crate) mod records;
mod scylla;
pub(crate) mod tail_cache;

pub use account_admin::{AccountFlags, InviteRecord, InviteTake};
pub use audit::AuditRecord;
pub use contacts::{
    ContactSummary, ContactWrites, DmPolicy, ProfileRecord, RelationKey, RelationKind,
    RelationRecord, SummaryDelta, SummaryWrite,
};
pub use conv::{ConvId, ConvKind, Members};
pub use dedup_window::{DEDUP_CANDIDATES_MAX, RecentSend, client_msg_id_hash};
pub use fjall::{EngineOptions, FjallStore, MEMTABLE_MIB_MAX};
pub use groups::{
    ApplicationRecord, GROUP_NAME_KEY_BYTES_MAX, GroupRecord, GroupRole, GroupWrites, JoinPolicy,
    MENTION_ALL_USER, MemberRecord, ReadHistogram, UserGroupRecord, group_name_key,
};
pub use open::open;
pub(crate) use owners::refuse_stale_fences;
pub use owners::{Claim, IdKind, OwnerRecord, StaleFence};
pub use ports::{
    AccountAdminStore, AccountStore, AuditStore, ContactStore, ConversationLog, CursorStore,
    GroupStore, MembershipStore, OwnerStore, Ports, PushTokenStore, StoreEngine, in_batches,
};
pub use postgres::PgStore;
#[cfg(test)]
pub(crate) use postgres::tests as postgres_tests;
pub use records::{
    CommitGroup, ConvRecord, CursorRecord, CursorRow, DEVICES_PER_ROW_MAX, DedupRecord,
    DeviceCursor, Mentions, MessageRecord, PushTokenRecord, RecencyMove, TokenHash, TokenRecord,
    UserRecord, recency_bucket,
};
pub use scylla::ScyllaStore;
pub use tail_cache::{TailCached, TailStats};

pub use crate::api::UserId;

/// First user id handed out: ids are 9 digits and never reused.
pub const USER_ID_FIRST: UserId = 100_000_000;
/// Last 9-digit user id.
pub const USER_ID_LAST: UserId = 999_999_999;

/// Whether the store takes writes. An adapter whose engine cannot take writes again after a
/// failure (fjall poisons itself after a failed journal write) says so here, once; the server
/// then refuses writes, reports not ready, and stops for its supervisor to restart it.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failure: std::sync::OnceLock<String>,
    failed: tokio::sync::Notify,
    /// The refusals of the failed commit have been passed on to the clients.
    refusals_sent: std::sync::atomic::AtomicBool,
    refusals_sent_notify: tokio::sync::Notify,
}

impl StoreHealth {
    /// Records the first failure that stops writes; later ones add nothing.
    pub fn fail(&self, why: &StoreError) {
        if self.failure.set(why.to_string()).is_ok() {
            tracing::error!(error = %why, "the store refused a write and takes no more");
            self.failed.notify_waiters();
            self.failed.notify_one();
        }
    }

    /// Why writes stopped, if they have.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Delivery calls this after passing a commit group's outcomes on: once writes have
    /// stopped, the refusals they caused are now on their way to the clients.
    pub fn outcomes_passed_on(&self) {
        use std::sync::atomic::Ordering;
        if self.failure().is_some() && !self.refusals_sent.swap(true, Ordering::AcqRel) {
            self.refusals_sent_notify.notify_waiters();
            self.refusals_sent_notify.notify_one();
        }
    }

    /// Resolves once writes have stopped, with the reason: after the refusals of the failed
    /// commit were passed on, or after `grace` (a failed account write has no commit group).
    pub async fn failed(&self, grace: std::time::Duration) -> String {
        let why = loop {
            let notified = self.failed.notified();
            if let Some(why) = self.failure() {
                break why.to_owned();
            }
            notified.await;
        };
        let sent = async {
            loop {
                let notified = self.refusals_sent_notify.notified();
                if self
                    .refusals_sent
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, sent).await;
        why
    }
}

/// An adapter's own error, behind the port.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is taken")]
    UsernameTaken,
    /// Another account has this e-mail address (case-folded).
    #[error("e-mail address is taken")]
    EmailTaken,
    #[error("all 9-digit user ids are used")]
    UserIdsExhausted,
    /// The engine behind an adapter failed; its own error is kept as the source, so no engine
    /// type appears in the port.
    #[error("storage engine: {0}")]
    Engine(#[source] BoxedError),
    /// A networked store could not be reached, or did not answer in time: nothing is known to
    /// be wrong with the data, and the request may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] BoxedError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[source] BoxedError),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Another process holds the data dir's lock.
    #[error("data dir in use by another ringchat: {}", .0.display())]
    DirInUse(std::path::PathBuf),
    /// A restore or copy into the data dir did not finish: what it holds is part of a store.
    #[error(
        "{} holds an unfinished restore or copy (its checkpoint is there): run the same \
         `ringchat restore` or `ringchat migrate` again to finish it, or start from an empty data dir",
        .0.display()
    )]
    UnfinishedCopy(std::path::PathBuf),
    /// A copy into this database (`ringchat migrate --to`) has not finished: what it holds is
    /// part of a store.
    #[error(
        "the database holds an unfinished `ringchat migrate` from {0}: run the same migrate \
         again to finish it (from the directory that holds its checkpoint), or start from an \
         empty database"
    )]
    UnfinishedImport(String),
    /// An earlier write failed: this store takes no more until the server restarts.
    #[error("the store takes no more writes after an earlier failure: {0}")]
    WritesStopped(String),
    /// A networked store answers but takes no writes now (PostgreSQL in recovery, or its
    /// sessions read-only): the readiness check's answer (`StoreEngine::reachable`).
    #[error("the store takes no writes: {0}")]
    ReadOnly(String),
    /// A commit group named epochs that are no longer the conversations' (other nodes own
    /// them now): nothing of the group was written (ScyllaDB: nothing of the stale
    /// conversations; heads of others may have been published, `store/scylla/mod.rs`).
    /// `stale` holds every stale fence of the group: at least one, at most one per fence.
    #[error(
        "{} fenced conversation(s) owned at another epoch, nothing written: {}",
        .stale.len(),
        owners::describe_stale(.stale)
    )]
    Fenced { stale: Vec<StaleFence> },
    /// Written, but not made durable: the store's state on disk is unknown.
    #[error("making a commit durable failed: {0}")]
    Persist(#[source] BoxedError),
}

/// Usernames are unique without regard to ASCII case.
pub fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// E-mail addresses are unique and looked up case-folded (Unicode lowercase, outer spaces
/// trimmed): people type their address in any case.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether `user` holds its address in the e-mail index, `holder` holding it now. Addresses
/// were not unique in embedded stores written before the e-mail index
/// (`fjall/account_index.rs`): where several users share one, the lowest user id keeps it,
/// whichever is indexed or imported first, and the others still log in by id or name. The
/// index build and the embedded and PostgreSQL imports follow this rule (PostgreSQL's in SQL:
/// `store/postgres/dump/import.rs`); ScyllaDB's import does not yet (the last user imported
/// gets the address).
pub fn keeps_email(user: UserId, holder: Option<UserId>) -> bool {
    holder.is_none_or(|holder| user <= holder)
}

/// Logs a user whose address stays with `kept_by` ([`keeps_email`]).
pub(crate) fn log_email_not_indexed(user: UserId, kept_by: Option<UserId>) {
    tracing::warn!(
        user_id = user,
        kept_by,
        "e-mail address shared with an older account: not indexed for this user"
    );
}
