//! Storage behind a trait: the embedded fjall store is the default; a cluster adapter (ScyllaDB)
//! implements the same trait later.
//!
//! Methods are synchronous and may block on disk: call them from a blocking context
//! (`spawn_blocking` or the commit thread), never directly on a tokio worker's hot loop.

mod fjall_store;

pub use fjall_store::FjallStore;

use serde::{Deserialize, Serialize};

pub type UserId = u64;

/// First user id handed out: ids are 9 digits and never reused.
pub const USER_ID_FIRST: UserId = 100_000_000;
/// Last 9-digit user id.
pub const USER_ID_LAST: UserId = 999_999_999;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("all 9-digit user ids are used")]
    UserIdsExhausted,
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
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
}

/// Usernames are unique without regard to ASCII case.
pub fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}
