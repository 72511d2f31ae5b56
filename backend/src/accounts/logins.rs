//! Login: by password (user id, username or e-mail address), throttled per account, per
//! client address and per IPv6 client network (`throttle.rs`), or by token (unknown tokens
//! limited per client address apart: `unknown_tokens.rs`); issuing tokens, and refreshing them
//! late in their life (once per part of the refresh window: `REFRESH_WINDOW_PARTS`). Which
//! logins are audited: `login_audit.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ringchat_proto::v1::{self, ErrorCode, login};

use super::limiter::share_key;
use super::login_audit::Outcome;
use super::validate::{
    PASSWORD_BYTES_CEILING, validate_device_id, validate_email, validate_username,
};
use super::{
    Accounts, Authenticated, Refusal, RevokedToken, blocking, devices, password, token_hash,
};
use crate::audit::{Entry, UNKNOWN_ACCOUNT, failed_login_actor};
use crate::store::{TokenHash, TokenRecord, UserId};
use crate::throttle::ThrottleKey;
use crate::time::now_ms;

/// A token gives its device a fresh token at most once per this many parts of its refresh
/// window (`login.token_refresh_percent` of its life): a client that lost the reply gets
/// another a part later, while one that keeps logging in with the old token costs a write a
/// part, not one a login.
const REFRESH_WINDOW_PARTS: u64 = 4;

impl Accounts {
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        req: &v1::Login,
    ) -> Result<Authenticated, Refusal> {
        validate_device_id(&req.device_id)?;
        // The address's throttle and, for IPv6, its /48's.
        let client_keys = ThrottleKey::client(peer);
        let by_password = matches!(req.credential, Some(login::Credential::Password(_)));
        // The account the login named, once looked up: the audit's actor. A token login's
        // device is its token's, whatever `device_id` it sent.
        let mut named = None;
        let mut token_device = None;
        let result = match &req.credential {
            Some(login::Credential::Token(token)) => {
                self.authenticate_token(peer, req, token, &mut named, &mut token_device)
                    .await
            }
            // Only password logins meet the address's throttle: a token cannot be guessed,
            // and a stranger sharing the address must not shut its holders out.
            Some(login::Credential::Password(password)) => {
                for key in &client_keys {
                    self.check_throttle(key)?;
                }
                self.authenticate_password(req, password, &client_keys, &mut named)
                    .await
            }
            None => Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "login needs a password or a token",
            )),
        };
        let actor = || failed_login_actor(named.map(|id| format!("user:{id}")), UNKNOWN_ACCOUNT);
        match &result {
            Err(r) if r.code == ErrorCode::InvalidCredentials => {
                metrics::counter!("ringchat_login_failures_total").increment(1);
                // A token login's failure is an unknown token (no account to name: `named`
                // is set only for a token found): not audited, as a row each would let
                // anyone add rows at the unknown tokens' rate (`unknown_tokens.rs`).
                if by_password {
                    let now = Instant::now();
                    for key in client_keys {
                        self.throttle.record_failure(key, now);
                    }
                    self.audit.record(
                        Entry::new(actor(), "user.login_failed")
                            .from(peer)
                            .detail(format!("device {}", req.device_id)),
                    );
                }
            }
            Err(r) if r.code == ErrorCode::AccountDisabled => {
                let device = token_device.as_deref().unwrap_or(&req.device_id);
                if let Some(detail) =
                    self.login_audit_detail(named, device, peer, Outcome::Disabled, by_password)
                {
                    self.audit.record(
                        Entry::new(actor(), "user.login_disabled")
                            .from(peer)
                            .detail(detail),
                    );
                }
            }
            Ok(auth) => {
                metrics::counter!("ringchat_logins_total").increment(1);
                if let Some(detail) = self.login_audit_detail(
                    Some(auth.user_id),
                    &auth.device_id,
                    peer,
                    Outcome::LoggedIn,
                    by_password,
                ) {
                    self.audit.record(
                        Entry::new(format!("user:{}", auth.user_id), "user.login")
                            .from(peer)
                            .detail(detail),
                    );
                }
            }
            Err(_) => {}
        }
        result
    }
}

impl Accounts {
    /// Whether a login's row goes to the audit log, and its detail: a password login's always;
    /// a token login's once per device, client address and interval (`login_audit.rs`), naming
    /// how many of the device's token logins from there before it were not audited.
    fn login_audit_detail(
        &self,
        user_id: Option<UserId>,
        device_id: &str,
        peer: IpAddr,
        outcome: Outcome,
        by_password: bool,
    ) -> Option<String> {
        let now = now_ms();
        let Some(user_id) = user_id else {
            // No account found: a password login's (a token login names one when it gets
            // this far).
            return Some(format!("device {device_id}"));
        };
        let client = share_key(peer);
        if by_password {
            self.login_audit
                .by_password(user_id, device_id, client, outcome, now);
            return Some(format!("device {device_id}"));
        }
        Some(
            match self
                .login_audit
                .by_token(user_id, device_id, client, outcome, now)?
            {
                0 => format!("device {device_id}, by token"),
                n => format!(
                    "device {device_id}, by token; {n} earlier token logins of the device from \
                     this address not audited"
                ),
            },
        )
    }

    pub(super) fn check_throttle(&self, key: &ThrottleKey) -> Result<(), Refusal> {
        match self.throttle.wait_for(key, Instant::now()) {
            None => Ok(()),
            Some(wait) => Err(Refusal {
                code: ErrorCode::RateLimited,
                message: "too many failed attempts, wait before trying again".into(),
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }),
        }
    }

    /// `client_keys`: the client address's throttle and its network's, checked again once a
    /// hashing permit is held. `named`: set to the account the login names, once looked up.
    async fn authenticate_password(
        &self,
        req: &v1::Login,
        password: &str,
        client_keys: &[ThrottleKey],
        named: &mut Option<UserId>,
    ) -> Result<Authenticated, Refusal> {
        let store = Arc::clone(&self.store);
        // A name or address that could never have been registered cannot exist: refuse it
        // without a throttle entry, so junk cannot fill the table. The key is what was typed,
        // never the account found (`ThrottleKey::Account` says why), and is checked before the
        // lookup.
        let (account_key, user) = match &req.account {
            Some(login::Account::UserId(id)) => {
                let id = *id;
                let key = ThrottleKey::user_id(id);
                self.check_throttle(&key)?;
                (key, blocking(move || store.user_by_id(id)).await?)
            }
            Some(login::Account::Username(name)) => {
                validate_username(name).map_err(|_| Refusal::invalid_credentials())?;
                let key = ThrottleKey::username(name);
                self.check_throttle(&key)?;
                let name = name.clone();
                let user = blocking(move || match store.user_id_by_name(&name)? {
                    Some(id) => store.user_by_id(id),
                    None => Ok(None),
                })
                .await?;
                (key, user)
            }
            Some(login::Account::Email(email)) => {
                if email.is_empty() || validate_email(email).is_err() {
                    return Err(Refusal::invalid_credentials());
                }
                let key = ThrottleKey::email(email);
                self.check_throttle(&key)?;
                let email = email.clone();
                let user = blocking(move || match store.user_id_by_email(&email)? {
                    Some(id) => store.user_by_id(id),
                    None => Ok(None),
                })
                .await?;
                (key, user)
            }
            None => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "password login needs user_id, username or email",
                ));
            }
        };
        *named = user.as_ref().map(|u| u.user_id);
        // The ceiling, not the live maximum: lowering it must not lock out longer passwords.
        if password.len() > PASSWORD_BYTES_CEILING {
            return Err(Refusal::invalid_credentials());
        }
        let stored_hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let keys: Vec<&ThrottleKey> = std::iter::once(&account_key).chain(client_keys).collect();
        let verified = self.verify_throttled(&keys, &stored_hash, password).await?;
        let Some(user) = user.filter(|_| verified) else {
            self.throttle.record_failure(account_key, Instant::now());
            return Err(Refusal::invalid_credentials());
        };
        // The holder of the password is let off every counter of the account.
        for key in ThrottleKey::all_of(&user) {
            self.throttle.record_success(&key);
        }
        self.check_enabled(user.user_id).await?;
        self.check_room(user.user_id, &req.device_id, req.platform)
            .await?;
        let device = Device {
            user_id: user.user_id,
            device_id: &req.device_id,
            platform: req.platform,
        };
        let auth = (self.issue_token(&device, None, 0).await?)
            .ok_or_else(|| Refusal::unavailable("a password login's token was not issued"))?;
        // A password change that landed while this login verified the old password revoked
        // every token but cannot have seen this one: check, and take it back. A hash that
        // changed may be another login's rehash of the same password (`rehash.rs`): the
        // password is checked against it then (rare: only a hash changed meanwhile costs this).
        let (store, hash) = (Arc::clone(&self.store), auth.token_hash);
        let current = blocking(move || store.user_by_id(user.user_id)).await?;
        let still = match current {
            Some(u) if u.password_hash == stored_hash => true,
            Some(u) => {
                self.verify_throttled(&[], &u.password_hash, password)
                    .await?
            }
            None => false,
        };
        if !still {
            let store = Arc::clone(&self.store);
            blocking(move || store.remove_token(&hash)).await?;
            return Err(Refusal::invalid_credentials());
        }
        // After every check, so the login's answer waits for none of it.
        self.rehash_later(user.user_id, stored_hash, password);
        Ok(auth)
    }

    /// Verifies a password under a hashing permit. Guesses sent in parallel all passed the
    /// first throttle check; the ones that waited for a permit behind a failure stop here,
    /// for every key given (the account's, and the client address's and network's: many
    /// accounts guessed at once from one address or network are throttled as one after
    /// another would be).
    pub(super) async fn verify_throttled(
        &self,
        keys: &[&ThrottleKey],
        stored_hash: &str,
        password: &str,
    ) -> Result<bool, Refusal> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .expect("semaphore never closed");
        for key in keys {
            self.check_throttle(key)?;
        }
        let (stored, password) = (stored_hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || password::verify_password(&stored, &password))
            .await
            .map_err(Refusal::unavailable)
    }

    /// A token login: one SHA-256 and one blocking call (the token, the account's flags); in
    /// the last part of the token's life, a fresh token for the same device, unless the device
    /// got one from this token lately (`REFRESH_WINDOW_PARTS`). Nothing else is written (the
    /// device's last-seen time is buffered in memory, `seen.rs`), so it costs no fsync.
    /// `token_device`: set to the token's device once the token is found.
    async fn authenticate_token(
        &self,
        peer: IpAddr,
        req: &v1::Login,
        token: &str,
        named: &mut Option<UserId>,
        token_device: &mut Option<String>,
    ) -> Result<Authenticated, Refusal> {
        let hash = token_hash(token);
        let (store, flags) = (Arc::clone(&self.store), Arc::clone(&self.admin_store));
        let account = req.account.clone();
        // The account's flags are read beside the token (one trip to the blocking pool, not
        // two); they are used only once the token checked out, as `check_enabled` would.
        let found = blocking(move || {
            let Some(record) = store.token(&hash)? else {
                return Ok(None);
            };
            let matches = match &account {
                None => true,
                Some(login::Account::UserId(id)) => *id == record.user_id,
                Some(login::Account::Username(name)) => {
                    store.user_id_by_name(name)? == Some(record.user_id)
                }
                Some(login::Account::Email(email)) => {
                    store.user_id_by_email(email)? == Some(record.user_id)
                }
            };
            if !matches {
                return Ok(None);
            }
            let disabled = flags.user_flags(record.user_id)?.is_some();
            Ok(Some((record, disabled)))
        })
        .await?;
        let now = now_ms();
        let Some((record, disabled)) = found else {
            self.unknown_tokens.charge(peer, now)?;
            return Err(Refusal::invalid_credentials());
        };
        *named = Some(record.user_id);
        *token_device = Some(record.device_id.clone());
        if let Err(expired) = check_life(&record, now) {
            // Best effort: an expired token is useless whether or not the delete lands.
            let store = Arc::clone(&self.store);
            if let Err(err) = blocking(move || store.remove_token(&hash)).await {
                tracing::warn!(?err, "could not delete an expired token");
            }
            return Err(expired);
        }
        if disabled {
            return Err(super::disabled());
        }
        let life = record.expires_at_ms.saturating_sub(record.issued_at_ms);
        let refresh_window = life / 100 * u64::from(self.login.token_refresh_percent);
        if record.expires_at_ms - now <= refresh_window {
            self.check_room(record.user_id, &record.device_id, req.platform)
                .await?;
            let device = Device {
                user_id: record.user_id,
                device_id: &record.device_id,
                // A login that names no platform keeps the one the token had.
                platform: if req.platform != 0 {
                    req.platform
                } else {
                    record.platform
                },
            };
            let spacing_ms = refresh_window / REFRESH_WINDOW_PARTS;
            if let Some(mut auth) = self.issue_token(&device, Some(hash), spacing_ms).await? {
                auth.refreshed = true;
                tracing::info!(user_id = record.user_id, "token refreshed");
                return Ok(auth);
            }
            // The device got a fresh token from this one lately: it logs in with this one, as
            // early in its life, and nothing is written.
            tracing::debug!(
                user_id = record.user_id,
                "token not refreshed: its device got a fresh token lately"
            );
        }
        self.seen.record(hash, now);
        Ok(Authenticated {
            user_id: record.user_id,
            token: token.to_owned(),
            token_hash: hash,
            token_expires_at_ms: record.expires_at_ms,
            refreshed: false,
            device_id: record.device_id,
            revoked: Vec::new(),
            retires: None,
        })
    }

    /// The user a bearer token is for, when the token login would accept it (known, not
    /// expired, the account enabled): for requests that carry the token each time (the HTTP
    /// file API). Two lookups, nothing written, no refresh. An unknown token is charged to
    /// `peer` as a token login's is (the same count): past it, `RATE_LIMITED`.
    pub(crate) async fn token_user(&self, token: &str, peer: IpAddr) -> Result<UserId, Refusal> {
        let hash = token_hash(token);
        let store = Arc::clone(&self.store);
        let Some(record) = blocking(move || store.token(&hash)).await? else {
            self.unknown_tokens.charge(peer, now_ms())?;
            return Err(Refusal::invalid_credentials());
        };
        check_life(&record, now_ms())?;
        self.check_enabled(record.user_id).await?;
        Ok(record.user_id)
    }

    /// Whether a session of this device would be let in now (the registry's rule, asked again
    /// when the session registers): asked before a token is written, so that a login refused
    /// for too many devices revokes nothing and leaves the client the token it had.
    /// In a cluster, the user's sessions on the other nodes count too (one Redis read).
    async fn check_room(
        &self,
        user_id: UserId,
        device_id: &str,
        platform: i32,
    ) -> Result<(), Refusal> {
        let platform = crate::sessions::session_platform(platform);
        let elsewhere = self.sessions_elsewhere(user_id).await;
        Ok(self
            .sessions
            .read()
            .room_beside(user_id, device_id, platform, &elsewhere)?)
    }

    /// Issues a token for a device, in one write with the revocations `tokens_to_revoke` picks
    /// (`keep`: the token being refreshed, left in place; a nameless one comes back in
    /// `retires`). The tokens revoked come back in `revoked`: the caller kicks their sessions.
    /// `None`, only for a refresh: the device got a fresh token from `keep` less than
    /// `spacing_ms` ago (`devices::refreshed_lately`), and none is issued.
    async fn issue_token(
        &self,
        device: &Device<'_>,
        keep: Option<TokenHash>,
        spacing_ms: u64,
    ) -> Result<Option<Authenticated>, Refusal> {
        let (token, hash) = password::new_token().map_err(Refusal::unavailable)?;
        let now = now_ms();
        let record = TokenRecord {
            user_id: device.user_id,
            device_id: device.device_id.to_owned(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.login.token_ttl_s.saturating_mul(1000)),
            platform: device.platform,
            last_seen_ms: now,
        };
        let expires_at_ms = record.expires_at_ms;
        let store = Arc::clone(&self.store);
        let tokens_max = self.login.device_tokens_max;
        let online: Vec<TokenHash> = (self.sessions.read().of_user(device.user_id).iter())
            .map(|s| s.token_hash)
            .collect();
        let seen = Arc::clone(&self.seen);
        let issued = blocking(move || {
            let held = store.tokens_of_user(record.user_id, devices::TOKENS_SCAN_MAX)?;
            if let Some(kept) = keep
                && devices::refreshed_lately(&held, kept, &record.device_id, now, spacing_ms)
            {
                return Ok(None);
            }
            let revoke = devices::tokens_to_revoke(
                &held,
                &record,
                keep,
                tokens_max,
                now,
                &online,
                |hash, t| seen.last_seen_ms(hash, t),
            );
            // A refresh is written only while the token it is made from still exists: one
            // revoked since it was read (a password change, a revoked device) gets nothing.
            let written = store.replace_tokens(
                record.user_id,
                &revoke,
                Some((&hash, &record)),
                keep.as_ref(),
            )?;
            let revoked: Vec<(TokenHash, TokenRecord)> = (held.into_iter())
                .filter(|(h, _)| written && revoke.contains(h))
                .collect();
            Ok(Some((written, revoked)))
        })
        .await?;
        let Some((written, revoked)) = issued else {
            return Ok(None);
        };
        if !written {
            return Err(Refusal::invalid_credentials());
        }
        Ok(Some(Authenticated {
            user_id: device.user_id,
            token,
            token_hash: hash,
            token_expires_at_ms: expires_at_ms,
            refreshed: false,
            device_id: device.device_id.to_owned(),
            revoked: (revoked.into_iter())
                .map(|(hash, t)| RevokedToken {
                    hash,
                    device_id: t.device_id,
                })
                .collect(),
            retires: keep.filter(|_| device.device_id.is_empty()),
        }))
    }
}

/// A token works until its expiry.
fn check_life(record: &TokenRecord, now: u64) -> Result<(), Refusal> {
    if record.expires_at_ms <= now {
        return Err(Refusal::new(
            ErrorCode::TokenExpired,
            "token has expired, log in with the password",
        ));
    }
    Ok(())
}

/// Who a token is for.
struct Device<'a> {
    user_id: UserId,
    device_id: &'a str,
    platform: i32,
}

#[cfg(test)]
mod tests;
