//! What operators do to accounts (the admin API calls these): disable and enable, kick, set
//! a password, create. Each goes the way the client's own request goes: a password set by
//! an operator is the e-mail reset's write (`set_password_revoking`: every token revoked in
//! the same write) and kick; a disable is written first, then the sessions are kicked, and a
//! login that read the flags before the write checks them again once its session is
//! registered (`Backend::login`), so no session outlives a disable.
//!
//! A store write that fails may still have landed (PostgreSQL may commit and the answer be
//! lost, or come after the client-side time limit): a disable or a password set whose write
//! failed kicks the sessions anyway (a session too many ended is harmless; one that outlives
//! its disable is not) and says `OperatorWriteError::Unanswered`, which the admin API audits
//! as "outcome unknown" (`admin/operator_write.rs`); so does an enable, or a create
//! (`Accounts::create_by_operator`), whose write failed. Refused before the write: `NotQueued`.

use std::sync::Arc;

use ringchat_proto::v1::KickReason;

use super::{Accounts, Refusal, blocking};
use crate::Backend;
use crate::api::ShardEvent;
use crate::messaging::operator::OperatorWriteError;
use crate::push::SignedOut;
use crate::store::{AccountFlags, UserId};
use crate::throttle::ThrottleKey;
use crate::time::now_ms;

impl Accounts {
    /// Sets a new password (validated by the one password rule), revoking every token of the
    /// account in the same write. `Ok(None)`: no such user.
    pub(crate) async fn set_password_revoking(
        &self,
        user_id: UserId,
        password: String,
    ) -> Result<Option<usize>, Refusal> {
        let hash = self.checked_password_hash(password).await?;
        self.store_password_revoking(user_id, hash).await
    }

    /// A new password checked by the one password rule, and hashed.
    async fn checked_password_hash(&self, password: String) -> Result<String, Refusal> {
        self.validate_password(&password)?;
        self.hash_new_password(password).await
    }

    /// The write of [`Self::set_password_revoking`]: an error may have landed.
    async fn store_password_revoking(
        &self,
        user_id: UserId,
        hash: String,
    ) -> Result<Option<usize>, Refusal> {
        let store = Arc::clone(&self.store);
        let revoked = blocking(move || {
            let revoked = store.set_password(user_id, &hash, None, None)?;
            Ok(revoked.zip(store.user_by_id(user_id)?))
        })
        .await?;
        // Whoever was guessing the old password has nothing left to guess.
        Ok(revoked.map(|(revoked, user)| {
            for key in ThrottleKey::all_of(&user) {
                self.throttle.record_success(&key);
            }
            revoked
        }))
    }

    /// Sets or clears the disabled flag; `Ok(false)`: no such user.
    async fn set_flags(
        &self,
        user_id: UserId,
        flags: Option<AccountFlags>,
    ) -> Result<bool, Refusal> {
        let store = Arc::clone(&self.admin_store);
        blocking(move || store.set_user_flags(user_id, flags.as_ref())).await
    }

    pub(crate) async fn flags(&self, user_id: UserId) -> Result<Option<AccountFlags>, Refusal> {
        let store = Arc::clone(&self.admin_store);
        blocking(move || store.user_flags(user_id)).await
    }
}

impl Backend {
    /// Kicks the user's sessions (only those of `device` when given) with `reason`; returns
    /// how many on this node. In a cluster the other nodes are told to kick theirs.
    pub(crate) async fn kick_user(
        &self,
        user_id: UserId,
        device: Option<&str>,
        reason: KickReason,
    ) -> usize {
        self.kick_elsewhere(user_id, device, reason);
        let conns = self.sessions.read().to_kick(user_id, device);
        for conn in &conns {
            let kick = ShardEvent::Kick {
                conn: conn.conn,
                reason,
            };
            self.send_to_shard(conn.shard, kick).await;
        }
        conns.len()
    }

    /// In a cluster, the user's sessions (`device`'s only, when given) on the other nodes are
    /// kicked too: whichever node a revocation or a disable was asked on, the user's sessions
    /// everywhere end.
    pub(crate) fn kick_elsewhere(&self, user_id: UserId, device: Option<&str>, reason: KickReason) {
        if let Some(link) = &self.link {
            link.send_kick(user_id, device, reason);
        }
    }

    /// A login of `device` here, whose session opened at `opened_at_ms`, ends the device's
    /// sessions opened before it on the other nodes (`Kicked{REPLACED}`), best effort
    /// (`Link::send_kick_once`).
    pub(crate) fn replace_elsewhere(&self, user_id: UserId, device: &str, opened_at_ms: u64) {
        if let Some(link) = &self.link {
            link.send_kick_once(user_id, device, opened_at_ms);
        }
    }

    /// Disables an account: stored first, then every session kicked. `Ok(None)`: no such user;
    /// else the sessions kicked. A failed write kicks them too (it may have landed).
    pub(crate) async fn disable_user(
        &self,
        user_id: UserId,
        by: String,
        reason: String,
    ) -> Result<Option<usize>, OperatorWriteError> {
        let flags = AccountFlags {
            disabled_at_ms: now_ms(),
            disabled_by: by,
            reason,
        };
        let written = self.accounts.set_flags(user_id, Some(flags)).await;
        if let Ok(false) = written {
            return Ok(None);
        }
        let kicked = self
            .kick_user(user_id, None, KickReason::AccountDisabled)
            .await;
        self.forget_push_tokens(user_id, SignedOut::All).await;
        if let Err(why) = written {
            tracing::warn!(user_id, sessions_kicked = kicked, why = %why.message,
                "disabling an account failed and may have landed; its sessions are kicked");
            return Err(OperatorWriteError::may_have_landed(why));
        }
        tracing::warn!(user_id, sessions_kicked = kicked, "account disabled");
        Ok(Some(kicked))
    }

    /// Enables an account again; `Ok(false)`: no such user. A failed write may have landed.
    pub(crate) async fn enable_user(&self, user_id: UserId) -> Result<bool, OperatorWriteError> {
        let found = (self.accounts.set_flags(user_id, None).await)
            .map_err(OperatorWriteError::may_have_landed)?;
        if found {
            tracing::info!(user_id, "account enabled");
        }
        Ok(found)
    }

    /// Sets a password for an operator: every token revoked, every session kicked (as a
    /// reset). `Ok(None)`: no such user; else the tokens revoked and sessions kicked.
    pub(crate) async fn set_password_by_operator(
        &self,
        user_id: UserId,
        password: String,
    ) -> Result<Option<(usize, usize)>, OperatorWriteError> {
        let hash = self
            .accounts
            .checked_password_hash(password)
            .await
            .map_err(OperatorWriteError::NotQueued)?;
        let written = self.accounts.store_password_revoking(user_id, hash).await;
        if let Ok(None) = written {
            return Ok(None);
        }
        let kicked = self
            .kick_user(user_id, None, KickReason::PasswordChanged)
            .await;
        self.forget_push_tokens(user_id, SignedOut::All).await;
        let revoked = match written {
            Ok(revoked) => revoked.unwrap_or(0),
            Err(why) => {
                tracing::warn!(user_id, sessions_kicked = kicked, why = %why.message,
                    "setting a password failed and may have landed; the sessions are kicked");
                return Err(OperatorWriteError::may_have_landed(why));
            }
        };
        tracing::warn!(
            user_id,
            tokens_revoked = revoked,
            sessions_kicked = kicked,
            "password set by an operator; every device signed out"
        );
        Ok(Some((revoked, kicked)))
    }
}
