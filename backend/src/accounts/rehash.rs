//! Password hashes made with other argon2 parameters than the configured ones (an operator
//! raised `accounts.argon2_memory_kib` or `…_iterations`), hashed again with these once a
//! password login verified the password. Otherwise the old, cheaper hashes would stay for
//! ever, and a known account would verify faster than an unknown one, checked against the
//! dummy hash made with today's parameters: a timing that tells which names exist.
//!
//! Off the login's path: the login answers first; the rehash waits for a permit of the
//! logins' hashing lane (`accounts.hash_concurrency`, so a storm of logins cannot multiply
//! the hashing), and stores the new hash only over the one verified
//! (`AccountStore::rehash_password`): a password changed meanwhile stays. A failure is
//! logged, nothing more; the account's next login tries again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::{Accounts, password};
use crate::config::AccountsConfig;
use crate::store::{AccountStore, UserId};

/// Rehashes waiting for a hashing permit or running, at most; past them a login's rehash is
/// skipped (the account's next login tries again). Each holds a password in memory.
const REHASHES_PENDING_MAX: usize = 64;

/// The users whose rehash is pending: one at a time per user, so a burst of one account's
/// logins hashes once.
#[derive(Default)]
pub(super) struct Rehashes {
    pending: Mutex<HashSet<UserId>>,
}

/// Takes the user's place in [`Rehashes`] back when the rehash ends, however it ends (a task
/// cancelled at shutdown included).
struct Pending(Arc<Rehashes>, UserId);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl Rehashes {
    /// Rehashes pending now.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn claim(self: &Arc<Self>, user_id: UserId) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (pending.len() < REHASHES_PENDING_MAX && pending.insert(user_id))
            .then(|| Pending(Arc::clone(self), user_id))
    }
}

impl Accounts {
    /// After a password login verified `password` against `verified`, the user's stored
    /// hash: when that was made with other parameters than the configured ones, a task of its
    /// own hashes the password again and stores it over `verified`. Returns at once.
    pub(super) fn rehash_later(&self, user_id: UserId, verified: String, password: &str) {
        if !password::needs_rehash(&verified, &self.accounts) {
            return;
        }
        let Some(pending) = self.rehashes.claim(user_id) else {
            return;
        };
        let store = Arc::clone(&self.store);
        let hashing = Arc::clone(&self.hashing);
        let cfg = self.accounts.clone();
        let password = password.to_owned();
        tokio::spawn(async move {
            let _pending = pending;
            match rehash(store, &hashing, &cfg, user_id, verified, password).await {
                Ok(true) => {
                    metrics::counter!("ringchat_password_rehashes_total").increment(1);
                    tracing::info!(
                        user_id,
                        "password hashed again with the configured argon2 parameters"
                    );
                }
                Ok(false) => {
                    tracing::info!(
                        user_id,
                        "password rehash dropped: the password changed meanwhile"
                    );
                }
                Err(err) => {
                    tracing::warn!(user_id, %err, "password rehash failed; the next login tries again");
                }
            }
        });
    }
}

/// Hashes `password` under a permit of the logins' lane, then stores it over `verified` (the
/// store write holds no permit). `Ok(false)`: the stored hash was no longer `verified`.
async fn rehash(
    store: Arc<dyn AccountStore>,
    hashing: &Semaphore,
    cfg: &AccountsConfig,
    user_id: UserId,
    verified: String,
    password: String,
) -> Result<bool, String> {
    let hash = {
        let _permit = hashing.acquire().await.map_err(|e| e.to_string())?;
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || password::hash_password(&cfg, &password))
            .await
            .map_err(|e| e.to_string())??
    };
    tokio::task::spawn_blocking(move || store.rehash_password(user_id, &verified, &hash))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
