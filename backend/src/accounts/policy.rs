//! Who may have an account and use it: the registration policy (`accounts.registration`:
//! open, closed, or invite codes) and disabled accounts (set by operators, checked at every
//! login, by password and by token, after the credential checked out).

use std::sync::Arc;

use base64::Engine;
use ringchat_proto::v1::ErrorCode;

use super::{Accounts, Refusal, blocking};
use crate::config::Registration;
use crate::messaging::operator::OperatorWriteError;
use crate::store::{InviteRecord, InviteTake, UserId};
use crate::time::now_ms;

/// Prefix of invite codes, so that one is recognised when pasted in the wrong place.
const INVITE_CODE_PREFIX: &str = "inv_";
/// Bytes of an invite code a Register may carry, at most (real ones are 26).
pub(crate) const INVITE_CODE_BYTES_MAX: usize = 64;

/// A fresh invite code (128 random bits) and its SHA-256, the only form that is stored.
pub(crate) fn new_invite_code() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    let code = format!(
        "{INVITE_CODE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = super::token_hash(&code);
    Ok((code, hash))
}

/// A random password an operator can hand on (144 bits, URL-safe).
pub(crate) fn new_random_password() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

pub(crate) fn disabled() -> Refusal {
    Refusal::new(
        ErrorCode::AccountDisabled,
        "this account is disabled; contact the server's operators",
    )
}

/// A closed server's answer to Register and to RequestEmailCode{REGISTER}.
pub(super) fn registration_closed() -> Refusal {
    Refusal::new(
        ErrorCode::RegistrationClosed,
        "registration is closed on this server: ask its operators for an account",
    )
}

fn invite_invalid() -> Refusal {
    Refusal::new(
        ErrorCode::InviteInvalid,
        "registration needs a valid invite code (unknown, expired, used up, or its issuer disabled)",
    )
}

impl Accounts {
    /// Refuses a login to a disabled account. Called only once the credential checked out, so
    /// the answer tells nothing to someone who does not hold it.
    pub(crate) async fn check_enabled(&self, user_id: UserId) -> Result<(), Refusal> {
        let store = Arc::clone(&self.admin_store);
        match blocking(move || store.user_flags(user_id)).await? {
            Some(_) => Err(disabled()),
            None => Ok(()),
        }
    }

    /// What the registration policy refuses of a client's Register with no lookup, before
    /// anything else is done: everything on a closed server, and a missing or oversized code on
    /// an invite server.
    pub(super) fn check_policy(&self, invite_code: &str) -> Result<(), Refusal> {
        match self.accounts.registration {
            Registration::Open => Ok(()),
            Registration::Closed => Err(registration_closed()),
            Registration::Invite
                if invite_code.is_empty() || invite_code.len() > INVITE_CODE_BYTES_MAX =>
            {
                Err(invite_invalid())
            }
            Registration::Invite => Ok(()),
        }
    }

    /// What the registration policy asks of a client's Register before any other lookup:
    /// [`Self::check_policy`], then invite takes one use of its code, a write of its own (given
    /// back with [`Self::return_invite`] if the registration then makes no account:
    /// `register_unless_gone`). A code issued by a user who is
    /// disabled now registers nobody: whoever was shut out must not bring others in.
    pub(super) async fn admit(&self, invite_code: &str) -> Result<Option<u64>, Refusal> {
        self.check_policy(invite_code)?;
        match self.accounts.registration {
            // (Closed was refused just above.)
            Registration::Open | Registration::Closed => Ok(None),
            Registration::Invite => {
                let hash = super::token_hash(invite_code.trim());
                let store = Arc::clone(&self.admin_store);
                let taken = blocking(move || {
                    let InviteTake::Taken(invite) = store.take_invite(&hash, now_ms())? else {
                        return Ok(None);
                    };
                    let disabled = super::user_invites::issuing_user(&invite.issuer)
                        .map(|user| store.user_flags(user))
                        .transpose()?
                        .flatten()
                        .is_some();
                    if !disabled {
                        return Ok(Some(invite.id));
                    }
                    // The store has no look-up by code, so the use was taken: given back.
                    // Lost if that fails, which costs nothing: the code is refused anyway.
                    if let Err(err) = store.return_invite(invite.id) {
                        tracing::warn!(
                            ?err,
                            invite = invite.id,
                            "could not give back an invite's use"
                        );
                    }
                    Ok(None)
                })
                .await?;
                taken.map(Some).ok_or_else(invite_invalid)
            }
        }
    }

    /// Gives back the invite use a registration took and that made no account.
    pub(super) async fn return_invite(&self, invite: Option<u64>) {
        let Some(id) = invite else { return };
        let store = Arc::clone(&self.admin_store);
        if let Err(err) = blocking(move || store.return_invite(id)).await {
            tracing::warn!(?err, invite = id, "could not give back an invite's use");
        }
    }

    /// Stores an invite for `uses_max` registrations until `expires_ms`; returns its code (shown
    /// once) and record, or `None` when `accounts.invites_max` usable invites are stored. A
    /// failed store write may have landed (`OperatorWriteError::Unanswered`).
    pub(crate) async fn issue_invite(
        &self,
        issuer: String,
        uses_max: u32,
        expires_ms: u64,
        note: String,
    ) -> Result<Option<(String, InviteRecord)>, OperatorWriteError> {
        let (code, code_hash) = new_invite_code()
            .map_err(|e| OperatorWriteError::NotQueued(Refusal::unavailable(e)))?;
        let now = now_ms();
        let record = InviteRecord {
            id: 0,
            code_hash,
            issuer,
            created_ms: now,
            expires_ms,
            uses_max,
            uses: 0,
            note,
        };
        let (store, max) = (Arc::clone(&self.admin_store), self.accounts.invites_max);
        let stored = record.clone();
        let id = blocking(move || store.put_invite(&stored, max, now))
            .await
            .map_err(OperatorWriteError::may_have_landed)?;
        Ok(id.map(|id| (code, InviteRecord { id, ..record })))
    }

    /// Removes (revokes) invite `id`, whoever issued it; `Ok(false)`: there is none. A failed
    /// store write may have landed (`OperatorWriteError::Unanswered`).
    pub(crate) async fn revoke_invite(&self, id: u64) -> Result<bool, OperatorWriteError> {
        let store = Arc::clone(&self.admin_store);
        blocking(move || store.remove_invite(id))
            .await
            .map_err(OperatorWriteError::may_have_landed)
    }
}
