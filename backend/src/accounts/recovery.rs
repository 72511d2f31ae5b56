//! Before login: mailing a code (RequestEmailCode) and resetting a forgotten password with it
//! (ResetPassword).
//!
//! A reset tells nobody whether an address has an account: the reply, its timing (the mail
//! leaves in the background) and the rate limits are the same either way, and a code is kept
//! (never mailed) for an address without an account, so wrong guesses run out the same way.
//! A registration code follows `accounts.registration`, as Register does: on a closed server
//! it is refused REGISTRATION_CLOSED; on an invite server it is answered alike for taken and
//! free addresses (a code kept, never mailed, for a taken one), since only an invite's holder
//! may learn from Register that an address is taken; on an open server a taken address is
//! answered EMAIL_TAKEN (Register itself answers it, as USERNAME_TAKEN, to anyone).

use std::net::IpAddr;
use std::sync::Arc;

use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode};

use ringchat_proto::Body;
use ringchat_proto::v1::KickReason;

use super::email::CodeMail;
use super::validate::validate_email;
use super::{Accounts, Refusal, blocking, email_taken};
use crate::Backend;
use crate::api::AccountRequest;
use crate::config::{EmailVerification, Registration};
use crate::store::{UserId, email_key};
use crate::time::now_ms;

/// The base of `retry_after_ms` when the mailer's queue is full (jittered up to twice it).
const MAILER_FULL_RETRY_AFTER_MS: u64 = 1_000;

/// A full mailer's answer to a request for a code.
fn mailer_full() -> Refusal {
    Refusal::busy(
        "too many mails on their way, retry",
        MAILER_FULL_RETRY_AFTER_MS,
    )
}

impl Accounts {
    pub async fn request_email_code(
        &self,
        peer: IpAddr,
        req: v1::RequestEmailCode,
    ) -> Result<v1::EmailCodeSent, Refusal> {
        if req.email.is_empty() {
            return Err(Refusal::new(ErrorCode::InvalidArgument, "email is empty"));
        }
        validate_email(&req.email)?;
        let purpose = match EmailCodePurpose::try_from(req.purpose) {
            Ok(p @ (EmailCodePurpose::Register | EmailCodePurpose::ResetPassword)) => p,
            _ => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "purpose must be REGISTER or RESET_PASSWORD",
                ));
            }
        };
        let registration = self.accounts.registration;
        if purpose == EmailCodePurpose::Register && registration == Registration::Closed {
            return Err(super::policy::registration_closed());
        }
        if purpose == EmailCodePurpose::Register
            && self.email.verification == EmailVerification::Off
        {
            return Err(Refusal::new(
                ErrorCode::EmailVerificationOff,
                "this server does not verify e-mail addresses: register without a code",
            ));
        }
        let store = Arc::clone(&self.store);
        let email = req.email.clone();
        // The owner's stored address: a reset code goes there, never to the address as typed
        // (another string can fold to the same key, "K" and the Kelvin sign alike, and name
        // someone else's mailbox or domain).
        let owner = blocking(move || match store.user_id_by_email(&email)? {
            Some(id) => Ok(store.user_by_id(id)?.map(|u| u.email)),
            None => Ok(None),
        })
        .await?;
        // Invite-only: a stranger must not learn that an address is taken (see the top).
        let hide_owner = registration == Registration::Invite;
        if purpose == EmailCodePurpose::Register && owner.is_some() && !hide_owner {
            self.codes.charge_client(peer, now_ms())?;
            return Err(email_taken());
        }
        // Taken before the code, whether or not a mail will be sent: a full mailer refuses
        // every request alike.
        let Some(slot) = self.mailer.slot() else {
            return Err(mailer_full());
        };
        let key = email_key(&req.email);
        let issued = self.codes.issue(purpose, &key, peer, now_ms()).await?;
        // A registration code for a free address; a reset code for a taken one.
        let mail_it = (purpose == EmailCodePurpose::Register) != owner.is_some();
        tracing::info!(
            purpose = purpose.as_str_name(),
            %peer,
            mailed = mail_it,
            "e-mail code requested"
        );
        if mail_it {
            let mail = CodeMail {
                to: owner.as_deref().unwrap_or(&req.email),
                code: &issued.code,
                minutes: self.email.code_ttl_s.div_ceil(60),
            };
            self.mailer.send(slot, purpose, &mail);
        }
        Ok(v1::EmailCodeSent {
            expires_at_ms: issued.expires_at_ms,
            tries_max: self.codes.tries_max(),
        })
    }

    /// Sets a new password with a mailed code; every token of the account is revoked. Returns
    /// the account, whose sessions the caller kicks.
    pub async fn reset_password(&self, req: v1::ResetPassword) -> Result<UserId, Refusal> {
        if req.email.is_empty() {
            return Err(Refusal::new(ErrorCode::InvalidArgument, "email is empty"));
        }
        validate_email(&req.email)?;
        self.validate_password(&req.new_password)?;
        let key = email_key(&req.email);
        self.codes
            .redeem(EmailCodePurpose::ResetPassword, &key, &req.code, now_ms())
            .await?;
        let store = Arc::clone(&self.store);
        let email = req.email.clone();
        let Some(user_id) = blocking(move || store.user_id_by_email(&email)).await? else {
            // Only a code kept for an address without an account gets here, and nobody was
            // mailed it: answer as for a wrong code.
            return Err(Refusal::new(
                ErrorCode::EmailCodeInvalid,
                "wrong code, or no code was requested for this address",
            ));
        };
        let revoked = self
            .set_password_revoking(user_id, req.new_password)
            .await?;
        tracing::warn!(
            user_id,
            tokens_revoked = revoked.unwrap_or(0),
            "password reset by e-mail code; every device signed out"
        );
        self.audit.record(
            crate::audit::Entry::new(format!("user:{user_id}"), "user.password_reset")
                .target(format!("user:{user_id}"))
                .detail("by e-mail code"),
        );
        Ok(user_id)
    }

    /// Hashes a new password (a change, a reset, an operator's) under a permit of their own:
    /// however many registrations wait for theirs, these never queue behind them.
    pub(crate) async fn hash_new_password(&self, password: String) -> Result<String, Refusal> {
        let _permit = self
            .password_hashing
            .acquire()
            .await
            .expect("semaphore never closed");
        super::password::hash_blocking(&self.accounts, password).await
    }
}

impl Backend {
    /// A request before login: the reply body. A reset also kicks every session of the account.
    pub(crate) async fn account(&self, peer: IpAddr, request: AccountRequest) -> Body {
        let outcome = match request {
            AccountRequest::RequestEmailCode(req) => self
                .accounts
                .request_email_code(peer, req)
                .await
                .map(Body::EmailCodeSent),
            AccountRequest::ResetPassword(req) => match self.accounts.reset_password(req).await {
                Ok(user_id) => {
                    self.kick_user(user_id, None, KickReason::PasswordChanged)
                        .await;
                    self.forget_push_tokens(user_id, crate::push::SignedOut::All)
                        .await;
                    Ok(Body::ResetPasswordOk(v1::ResetPasswordOk { user_id }))
                }
                Err(refusal) => Err(refusal),
            },
        };
        outcome.unwrap_or_else(|refusal| Body::Error(refusal.into_error()))
    }
}

#[cfg(test)]
mod tests;
