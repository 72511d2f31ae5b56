//! Registration and authentication: argon2id password hashes, bearer tokens with expiry and
//! refresh, throttling of failed attempts, and e-mail codes. A token login is one hash and one
//! lookup, no argon2.
//!
//! - `password.rs`: hashing and tokens. `validate.rs`: what a name, address or password may be.
//! - `codes.rs`, `limiter.rs`: e-mail codes and their rate limits; `email.rs`: the mailer.
//! - `recovery.rs`: RequestEmailCode and ResetPassword (before login).
//! - `devices.rs`: ChangePassword, Logout, ListDevices, RevokeDevice (logged in); `seen.rs`:
//!   devices' last-seen times, written in batches.

mod codes;
mod devices;
mod email;
mod limiter;
mod password;
mod recovery;
mod seen;
mod validate;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode, login};
use tokio::sync::Semaphore;

use crate::config::{AccountsConfig, EmailConfig, EmailVerification, LoginConfig, Settings};
use crate::store::{AccountStore, StoreError, TokenHash, TokenRecord, UserId, email_key};
use crate::throttle::{Throttle, ThrottleKey};
use crate::time::now_ms;

pub use password::token_hash;
pub(crate) use seen::{SEEN_FLUSH_INTERVAL, SeenBuffer};
pub use validate::DEVICE_ID_BYTES_MAX;
use validate::{validate_email, validate_username};

/// A failed account operation, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: u64,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    fn invalid_credentials() -> Self {
        Self::new(
            ErrorCode::InvalidCredentials,
            "unknown account or wrong credentials",
        )
    }

    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "account storage failed");
        Self {
            code: ErrorCode::Unavailable,
            message: "storage is unavailable, retry later".into(),
            retry_after_ms: 1_000,
        }
    }

    pub fn into_error(self) -> v1::Error {
        v1::Error {
            code: self.code as i32,
            message: self.message,
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub token: String,
    pub token_hash: TokenHash,
    pub token_expires_at_ms: u64,
    /// A token login got a fresh token (the old one still works until its expiry).
    pub refreshed: bool,
}

pub struct Accounts {
    store: Arc<dyn AccountStore>,
    accounts: AccountsConfig,
    login: LoginConfig,
    email: EmailConfig,
    /// Permits for login hashes; registrations have their own, so a flood of sign-ups cannot
    /// starve logins.
    hashing: Semaphore,
    registration_hashing: Semaphore,
    throttle: Throttle,
    /// Verified against when the account does not exist, so both cases take the same time.
    dummy_hash: String,
    codes: codes::EmailCodes,
    mailer: email::Mailer,
    pub(crate) seen: SeenBuffer,
}

/// Runs store calls on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(Refusal::unavailable)??)
}

impl Accounts {
    pub fn new(store: Arc<dyn AccountStore>, settings: &Settings) -> Result<Self, String> {
        let accounts = settings.accounts.clone();
        let dummy_hash = password::hash_password(&accounts, "ringchat-dummy-password")
            .expect("validated argon2 parameters");
        Ok(Self {
            hashing: Semaphore::new(accounts.hash_concurrency),
            registration_hashing: Semaphore::new(accounts.hash_concurrency.div_ceil(2)),
            throttle: Throttle::new(&settings.login),
            codes: codes::EmailCodes::new(&settings.email).map_err(|e| e.to_string())?,
            mailer: email::Mailer::new(&settings.email, &settings.server_name)?,
            seen: SeenBuffer::default(),
            store,
            accounts,
            login: settings.login.clone(),
            email: settings.email.clone(),
            dummy_hash,
        })
    }

    pub async fn register(&self, req: v1::Register) -> Result<v1::RegisterOk, Refusal> {
        validate_username(&req.username)?;
        self.validate_password(&req.password)?;
        validate_email(&req.email)?;
        let verify = match self.email.verification {
            EmailVerification::Off => false,
            EmailVerification::Optional => !req.email.is_empty(),
            EmailVerification::Required => true,
        };
        if verify && (req.email.is_empty() || req.email_code.is_empty()) {
            return Err(Refusal::new(
                ErrorCode::EmailCodeRequired,
                "registration needs the e-mail address and the code mailed to it (RequestEmailCode)",
            ));
        }
        // A taken name or address is refused before the costly hash and before the code is
        // used up (create_user checks again, atomically).
        let store = Arc::clone(&self.store);
        let (name, mail) = (req.username.clone(), req.email.clone());
        let (name_taken, mail_taken) = blocking(move || {
            Ok((
                store.user_id_by_name(&name)?.is_some(),
                store.user_id_by_email(&mail)?.is_some(),
            ))
        })
        .await?;
        if name_taken {
            return Err(Refusal::new(ErrorCode::UsernameTaken, "username is taken"));
        }
        if mail_taken {
            return Err(email_taken());
        }
        if verify {
            let key = email_key(&req.email);
            self.codes
                .redeem(EmailCodePurpose::Register, &key, &req.email_code, now_ms())?;
        }
        let hash = {
            let _permit = self
                .registration_hashing
                .acquire()
                .await
                .expect("semaphore never closed");
            let cfg = self.accounts.clone();
            let password = req.password;
            tokio::task::spawn_blocking(move || password::hash_password(&cfg, &password))
                .await
                .map_err(Refusal::unavailable)?
                .map_err(Refusal::unavailable)?
        };
        let store = Arc::clone(&self.store);
        let user = tokio::task::spawn_blocking(move || {
            store.create_user(&req.username, &hash, &req.email, now_ms())
        })
        .await
        .map_err(Refusal::unavailable)?
        .map_err(|e| match e {
            StoreError::EmailTaken => email_taken(),
            e => Refusal::from(e),
        })?;
        metrics::counter!("ringchat_registrations_total").increment(1);
        tracing::info!(
            user_id = user.user_id,
            verified_email = verify,
            "account registered"
        );
        Ok(v1::RegisterOk {
            user_id: user.user_id,
        })
    }

    pub async fn authenticate(
        &self,
        peer: IpAddr,
        req: &v1::Login,
    ) -> Result<Authenticated, Refusal> {
        if req.device_id.len() > DEVICE_ID_BYTES_MAX {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("device_id is over {DEVICE_ID_BYTES_MAX} bytes"),
            ));
        }
        let addr_key = ThrottleKey::Addr(peer);
        self.check_throttle(&addr_key)?;
        let result = match &req.credential {
            Some(login::Credential::Token(token)) => self.authenticate_token(req, token).await,
            Some(login::Credential::Password(password)) => {
                self.authenticate_password(req, password).await
            }
            None => Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "login needs a password or a token",
            )),
        };
        match &result {
            Err(r) if r.code == ErrorCode::InvalidCredentials => {
                self.throttle.record_failure(addr_key, Instant::now());
                metrics::counter!("ringchat_login_failures_total").increment(1);
            }
            Ok(_) => metrics::counter!("ringchat_logins_total").increment(1),
            Err(_) => {}
        }
        result
    }

    fn check_throttle(&self, key: &ThrottleKey) -> Result<(), Refusal> {
        match self.throttle.wait_for(key, Instant::now()) {
            None => Ok(()),
            Some(wait) => Err(Refusal {
                code: ErrorCode::RateLimited,
                message: "too many failed attempts, wait before trying again".into(),
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }),
        }
    }

    async fn authenticate_password(
        &self,
        req: &v1::Login,
        password: &str,
    ) -> Result<Authenticated, Refusal> {
        let store = Arc::clone(&self.store);
        // A name or address that could never have been registered cannot exist: refuse it
        // without a throttle entry, so junk cannot fill the table.
        let (user, unknown_key) = match &req.account {
            Some(login::Account::UserId(id)) => {
                let id = *id;
                (blocking(move || store.user_by_id(id)).await?, None)
            }
            Some(login::Account::Username(name)) => {
                validate_username(name).map_err(|_| Refusal::invalid_credentials())?;
                let name = name.clone();
                let key = name.to_ascii_lowercase();
                let user = blocking(move || match store.user_id_by_name(&name)? {
                    Some(id) => store.user_by_id(id),
                    None => Ok(None),
                })
                .await?;
                (user, Some(key))
            }
            Some(login::Account::Email(email)) => {
                if email.is_empty() || validate_email(email).is_err() {
                    return Err(Refusal::invalid_credentials());
                }
                let email = email.clone();
                let key = format!("email:{}", email_key(&email));
                let user = blocking(move || match store.user_id_by_email(&email)? {
                    Some(id) => store.user_by_id(id),
                    None => Ok(None),
                })
                .await?;
                (user, Some(key))
            }
            None => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "password login needs user_id, username or email",
                ));
            }
        };
        // Throttle by the account's id when it exists, so id, name and address share a counter.
        let account_key = ThrottleKey::Account(match (&user, unknown_key) {
            (Some(u), _) => u.user_id.to_string(),
            (None, Some(key)) => key,
            (None, None) => "unknown-id".to_owned(),
        });
        self.check_throttle(&account_key)?;
        if password.len() > self.accounts.password_bytes_max {
            return Err(Refusal::invalid_credentials());
        }
        let stored_hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let verified = self
            .verify_throttled(&account_key, &stored_hash, password)
            .await?;
        let Some(user) = user.filter(|_| verified) else {
            self.throttle.record_failure(account_key, Instant::now());
            return Err(Refusal::invalid_credentials());
        };
        self.throttle.record_success(&account_key);
        let device = Device {
            user_id: user.user_id,
            device_id: &req.device_id,
            platform: req.platform,
        };
        let auth = self.issue_token(&device, None).await?;
        // A password change that landed while this login verified the old password revoked
        // every token but cannot have seen this one: check, and take it back.
        let (store, hash, seen_hash) = (Arc::clone(&self.store), auth.token_hash, stored_hash);
        let current = blocking(move || store.user_by_id(user.user_id)).await?;
        if current.is_none_or(|u| u.password_hash != seen_hash) {
            let store = Arc::clone(&self.store);
            blocking(move || store.remove_token(&hash)).await?;
            return Err(Refusal::invalid_credentials());
        }
        Ok(auth)
    }

    /// Verifies a password under a hashing permit. Guesses sent in parallel all passed the
    /// first throttle check; the ones that waited for a permit behind a failure stop here.
    async fn verify_throttled(
        &self,
        key: &ThrottleKey,
        stored_hash: &str,
        password: &str,
    ) -> Result<bool, Refusal> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .expect("semaphore never closed");
        self.check_throttle(key)?;
        let (stored, password) = (stored_hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || password::verify_password(&stored, &password))
            .await
            .map_err(Refusal::unavailable)
    }

    /// A token login: one SHA-256 and one lookup; in the last part of the token's life, a
    /// fresh token for the same device.
    async fn authenticate_token(
        &self,
        req: &v1::Login,
        token: &str,
    ) -> Result<Authenticated, Refusal> {
        let hash = token_hash(token);
        let store = Arc::clone(&self.store);
        let account = req.account.clone();
        let record = blocking(move || {
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
            Ok(matches.then_some(record))
        })
        .await?;
        let Some(record) = record else {
            return Err(Refusal::invalid_credentials());
        };
        let now = now_ms();
        if record.expires_at_ms <= now {
            // Best effort: an expired token is useless whether or not the delete lands.
            let store = Arc::clone(&self.store);
            if let Err(err) = blocking(move || store.remove_token(&hash)).await {
                tracing::warn!(?err, "could not delete an expired token");
            }
            return Err(Refusal::new(
                ErrorCode::TokenExpired,
                "token has expired, log in with the password",
            ));
        }
        let life = record.expires_at_ms.saturating_sub(record.issued_at_ms);
        let refresh_window = life / 100 * u64::from(self.login.token_refresh_percent);
        if record.expires_at_ms - now <= refresh_window {
            let device = Device {
                user_id: record.user_id,
                device_id: &record.device_id,
                platform: req.platform,
            };
            let mut auth = self.issue_token(&device, Some(hash)).await?;
            auth.refreshed = true;
            tracing::info!(user_id = record.user_id, "token refreshed");
            return Ok(auth);
        }
        self.seen.record(hash, now);
        Ok(Authenticated {
            user_id: record.user_id,
            token: token.to_owned(),
            token_hash: hash,
            token_expires_at_ms: record.expires_at_ms,
            refreshed: false,
        })
    }

    /// Issues a token for a device. The device's older tokens are revoked (except `keep`: the
    /// token being refreshed stays valid until its own expiry, in case the reply is lost), as
    /// are expired ones and, past `login.device_tokens_max`, the devices seen longest ago.
    async fn issue_token(
        &self,
        device: &Device<'_>,
        keep: Option<TokenHash>,
    ) -> Result<Authenticated, Refusal> {
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
        blocking(move || {
            let held = store.tokens_of_user(record.user_id, devices::TOKENS_SCAN_MAX)?;
            let revoke = devices::tokens_to_revoke(&held, &record, keep, tokens_max, now);
            store.replace_tokens(record.user_id, &revoke, Some((&hash, &record)))
        })
        .await?;
        Ok(Authenticated {
            user_id: device.user_id,
            token,
            token_hash: hash,
            token_expires_at_ms: expires_at_ms,
            refreshed: false,
        })
    }

    fn validate_password(&self, password: &str) -> Result<(), Refusal> {
        validate::password(&self.accounts, password)
    }

    /// Writes the devices' gathered last-seen times in one batch.
    pub(crate) async fn flush_seen(&self) {
        let seen = self.seen.take();
        if seen.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        if let Err(refusal) = blocking(move || store.touch_tokens(&seen)).await {
            tracing::warn!(?refusal, "could not store devices' last-seen times");
        }
    }
}

/// Who a token is for.
struct Device<'a> {
    user_id: UserId,
    device_id: &'a str,
    platform: i32,
}

fn email_taken() -> Refusal {
    Refusal::new(
        ErrorCode::EmailTaken,
        "another account has this e-mail address",
    )
}
