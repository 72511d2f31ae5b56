//! Storage behind a trait: the embedded fjall store is the default; a cluster adapter (ScyllaDB)
//! implements the same trait later.
//!
//! Methods are synchronous and may block on disk: call them from a blocking context
//! (`spawn_blocking` or the commit thread), never directly on a tokio worker's hot loop.

#[cfg(test)]
pub(crate) mod conformance;
mod conv;
mod fjall_store;
mod journal_repair;
pub(crate) mod log;

pub use conv::{ConvId, ConvKind, Members};

pub use fjall_store::FjallStore;

use serde::{Deserialize, Serialize};

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
    #[error("all 9-digit user ids are used")]
    UserIdsExhausted,
    /// The engine behind an adapter failed; its own error is kept as the source, so no engine
    /// type appears in the port.
    #[error("storage engine: {0}")]
    Engine(#[source] BoxedError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[source] BoxedError),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Another process holds the data dir's lock.
    #[error("data dir in use by another ringchat: {}", .0.display())]
    DirInUse(std::path::PathBuf),
    /// An earlier write failed: this store takes no more until the server restarts.
    #[error("the store takes no more writes after an earlier failure: {0}")]
    WritesStopped(String),
    /// Written, but not made durable: the store's state on disk is unknown.
    #[error("making a commit durable failed: {0}")]
    Persist(#[source] BoxedError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    pub email: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: UserId,
    pub device_id: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub conv_id: ConvId,
    pub seq: u64,
    pub msg_id: u64,
    pub from: UserId,
    pub to: UserId,
    pub client_msg_id: String,
    pub content_type: i32,
    /// Empty once recalled.
    pub content: Vec<u8>,
    pub server_time_ms: u64,
    pub recalled: bool,
    /// For a recall event: the seq it recalls.
    pub recall_of_seq: u64,
    /// For a recalled message: the seq of its recall event.
    pub recall_event_seq: u64,
}

/// A conversation's head, derived from its newest message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvRecord {
    pub max_seq: u64,
    pub last_time_ms: u64,
}

/// What a resend with the same `client_msg_id` gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub conv_id: ConvId,
    pub seq: u64,
    pub msg_id: u64,
    pub server_time_ms: u64,
}

/// One user's progress in one conversation; both only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CursorRecord {
    /// Highest seq any of the user's devices has received.
    pub delivered_seq: u64,
    pub read_seq: u64,
}

/// Everything one group commit writes, applied atomically and made durable together.
#[derive(Debug, Default)]
pub struct CommitGroup {
    pub messages: Vec<MessageRecord>,
    /// New entries of a user's conversation list.
    pub user_conversations: Vec<(UserId, ConvId)>,
    pub dedup: Vec<(UserId, String, DedupRecord)>,
    pub cursors: Vec<(ConvId, UserId, CursorRecord)>,
    pub device_cursors: Vec<(ConvId, UserId, String, u64)>,
    pub next_msg_id: Option<u64>,
}

impl CommitGroup {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.user_conversations.is_empty()
            && self.dedup.is_empty()
            && self.cursors.is_empty()
            && self.device_cursors.is_empty()
            && self.next_msg_id.is_none()
    }
}

/// SHA-256 of a token: only the hash is stored, so a copy of the data dir holds no usable token.
pub type TokenHash = [u8; 32];

pub trait Store: Send + Sync + 'static {
    /// Creates a user with the next unused id; `UsernameTaken` if the (case-folded) name exists.
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError>;
    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError>;
    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError>;
    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError>;
    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;
    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError>;

    /// Writes a group atomically and durably (per the configured durability).
    fn commit_group(&self, group: &CommitGroup) -> Result<(), StoreError>;
    /// The next message id to hand out (1 on an empty store).
    fn next_msg_id(&self) -> Result<u64, StoreError>;
    /// The conversation's newest message: its seq is the conversation's `max_seq`. (The head is
    /// derived, not stored, so a message costs no extra write.)
    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError>;
    fn conversation(&self, conv: ConvId) -> Result<Option<ConvRecord>, StoreError> {
        Ok(self.last_message(conv)?.map(|m| ConvRecord {
            max_seq: m.seq,
            last_time_ms: m.server_time_ms,
        }))
    }
    fn dedup(&self, from: UserId, client_msg_id: &str) -> Result<Option<DedupRecord>, StoreError>;
    /// Calls `f(sender, client_msg_id)` for every stored dedup entry (at start-up, to build the
    /// commit thread's filter).
    fn for_each_dedup_key(&self, f: &mut dyn FnMut(UserId, &[u8])) -> Result<(), StoreError>;
    fn cursor(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRecord>, StoreError>;
    /// The highest seq one device has acknowledged as delivered.
    fn device_cursor(
        &self,
        conv: ConvId,
        user: UserId,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError>;
    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError>;
    /// Up to `limit` messages with seq > `after_seq`, ascending.
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Up to `limit` messages with seq < `before_seq`, newest first.
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Up to `limit` of the user's conversations.
    fn user_conversations(&self, user: UserId, limit: usize) -> Result<Vec<ConvId>, StoreError>;
}

/// Usernames are unique without regard to ASCII case.
pub fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}
