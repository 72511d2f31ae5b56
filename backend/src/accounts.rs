//! Registration and authentication: argon2id password hashes, bearer tokens with expiry, and
//! throttling of failed attempts. A token login is one hash and one lookup, no argon2.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use ringchat_proto::v1::{self, ErrorCode, login};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::{AccountsConfig, LoginConfig};
use crate::store::{AccountStore, TokenHash, TokenRecord, UserId};
use crate::throttle::{Throttle, ThrottleKey};
use crate::time::now_ms;

pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 32;
pub const EMAIL_BYTES_MAX: usize = 254;
pub const DEVICE_ID_BYTES_MAX: usize = 128;

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
    pub token_expires_at_ms: u64,
}

pub struct Accounts {
    store: Arc<dyn AccountStore>,
    accounts: AccountsConfig,
    login: LoginConfig,
    /// Permits for login hashes; registrations have their own, so a flood of sign-ups cannot
    /// starve logins.
    hashing: Semaphore,
    registration_hashing: Semaphore,
    throttle: Throttle,
    /// Verified against when the account does not exist, so both cases take the same time.
    dummy_hash: String,
}

impl Accounts {
    pub fn new(store: Arc<dyn AccountStore>, accounts: AccountsConfig, login: LoginConfig) -> Self {
        let dummy_hash = hash_password(&accounts, "ringchat-dummy-password")
            .expect("validated argon2 parameters");
        Self {
            hashing: Semaphore::new(accounts.hash_concurrency),
            registration_hashing: Semaphore::new(accounts.hash_concurrency.div_ceil(2)),
            throttle: Throttle::new(&login),
            store,
            accounts,
            login,
            dummy_hash,
        }
    }

    pub async fn register(&self, req: v1::Register) -> Result<v1::RegisterOk, Refusal> {
        validate_username(&req.username)?;
        self.validate_password(&req.password)?;
        validate_email(&req.email)?;
        // A taken name is refused before the costly hash (create_user checks again, atomically).
        let store = Arc::clone(&self.store);
        let name = req.username.clone();
        let taken = tokio::task::spawn_blocking(move || store.user_id_by_name(&name))
            .await
            .map_err(Refusal::unavailable)??
            .is_some();
        if taken {
            return Err(Refusal::new(ErrorCode::UsernameTaken, "username is taken"));
        }
        let hash = {
            let _permit = self
                .registration_hashing
                .acquire()
                .await
                .expect("semaphore never closed");
            let cfg = self.accounts.clone();
            let password = req.password;
            tokio::task::spawn_blocking(move || hash_password(&cfg, &password))
                .await
                .map_err(Refusal::unavailable)?
                .map_err(Refusal::unavailable)?
        };
        let store = Arc::clone(&self.store);
        let user = tokio::task::spawn_blocking(move || {
            store.create_user(&req.username, &hash, &req.email, now_ms())
        })
        .await
        .map_err(Refusal::unavailable)??;
        metrics::counter!("ringchat_registrations_total").increment(1);
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
            Some(login::Credential::Token(token)) => {
                let store = Arc::clone(&self.store);
                let (req, token) = (req.clone(), token.clone());
                tokio::task::spawn_blocking(move || {
                    authenticate_token(store.as_ref(), &req, &token)
                })
                .await
                .map_err(Refusal::unavailable)?
            }
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
                message: "too many failed logins, wait before trying again".into(),
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }),
        }
    }

    async fn authenticate_password(
        &self,
        req: &v1::Login,
        password: &str,
    ) -> Result<Authenticated, Refusal> {
        let account = match &req.account {
            Some(login::Account::UserId(id)) => Lookup::Id(*id),
            // A name that could never have been registered cannot exist: refuse it without
            // a throttle entry, so junk names cannot fill the table.
            Some(login::Account::Username(name)) if validate_username(name).is_err() => {
                return Err(Refusal::invalid_credentials());
            }
            Some(login::Account::Username(name)) => Lookup::Name(name.clone()),
            None => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "password login needs user_id or username",
                ));
            }
        };
        let store = Arc::clone(&self.store);
        let user = tokio::task::spawn_blocking(move || match account {
            Lookup::Id(id) => store.user_by_id(id),
            Lookup::Name(name) => match store.user_id_by_name(&name)? {
                Some(id) => store.user_by_id(id),
                None => Ok(None),
            },
        })
        .await
        .map_err(Refusal::unavailable)??;
        // Throttle by the account's id when it exists so that id and name share one counter.
        let account_key = ThrottleKey::Account(match (&user, &req.account) {
            (Some(u), _) => u.user_id.to_string(),
            (None, Some(login::Account::Username(name))) => name.to_ascii_lowercase(),
            (None, _) => "unknown-id".to_owned(),
        });
        self.check_throttle(&account_key)?;
        if password.len() > self.accounts.password_bytes_max {
            return Err(Refusal::invalid_credentials());
        }
        let stored_hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let verified = {
            let _permit = self
                .hashing
                .acquire()
                .await
                .expect("semaphore never closed");
            // Guesses sent in parallel all passed the first check; the ones that waited for a
            // permit behind a failure are stopped here.
            self.check_throttle(&account_key)?;
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || verify_password(&stored_hash, &password))
                .await
                .map_err(Refusal::unavailable)?
        };
        let Some(user) = user.filter(|_| verified) else {
            self.throttle.record_failure(account_key, Instant::now());
            return Err(Refusal::invalid_credentials());
        };
        self.throttle.record_success(&account_key);
        self.issue_token(user.user_id, &req.device_id).await
    }

    async fn issue_token(
        &self,
        user_id: UserId,
        device_id: &str,
    ) -> Result<Authenticated, Refusal> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(Refusal::unavailable)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = now_ms();
        let record = TokenRecord {
            user_id,
            device_id: device_id.to_owned(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.login.token_ttl_s.saturating_mul(1000)),
        };
        let hash = token_hash(&token);
        let store = Arc::clone(&self.store);
        let expires_at_ms = record.expires_at_ms;
        tokio::task::spawn_blocking(move || store.put_token(&hash, &record))
            .await
            .map_err(Refusal::unavailable)??;
        Ok(Authenticated {
            user_id,
            token,
            token_expires_at_ms: expires_at_ms,
        })
    }

    fn validate_password(&self, password: &str) -> Result<(), Refusal> {
        let (min, max) = (
            self.accounts.password_bytes_min,
            self.accounts.password_bytes_max,
        );
        if !(min..=max).contains(&password.len()) {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("password must be {min} to {max} bytes"),
            ));
        }
        Ok(())
    }
}

/// A token login: one SHA-256 and one lookup. Runs on a blocking thread.
fn authenticate_token(
    store: &dyn AccountStore,
    req: &v1::Login,
    token: &str,
) -> Result<Authenticated, Refusal> {
    let hash = token_hash(token);
    let Some(record) = store.token(&hash)? else {
        return Err(Refusal::invalid_credentials());
    };
    let account_matches = match &req.account {
        None => true,
        Some(login::Account::UserId(id)) => *id == record.user_id,
        Some(login::Account::Username(name)) => {
            store.user_id_by_name(name)? == Some(record.user_id)
        }
    };
    if !account_matches {
        return Err(Refusal::invalid_credentials());
    }
    if record.expires_at_ms <= now_ms() {
        // Best effort: an expired token is useless whether or not the delete lands.
        if let Err(err) = store.remove_token(&hash) {
            tracing::warn!(%err, "could not delete an expired token");
        }
        return Err(Refusal::new(
            ErrorCode::TokenExpired,
            "token has expired, log in with the password",
        ));
    }
    Ok(Authenticated {
        user_id: record.user_id,
        token: token.to_owned(),
        token_expires_at_ms: record.expires_at_ms,
    })
}

enum Lookup {
    Id(UserId),
    Name(String),
}

fn validate_username(name: &str) -> Result<(), Refusal> {
    let chars = name.chars().count();
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !(USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&chars)
        || !allowed
        || !starts_with_letter
    {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "username must be {USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} characters of a-z, A-Z, 0-9, '_', '.', '-', starting with a letter"
            ),
        ));
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<(), Refusal> {
    if email.is_empty() {
        return Ok(());
    }
    let plausible = email.len() <= EMAIL_BYTES_MAX
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if !plausible {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "email is not a valid address",
        ));
    }
    Ok(())
}

fn argon2(cfg: &AccountsConfig) -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_iterations, 1, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_password(cfg: &AccountsConfig, password: &str) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2(cfg)
        .map_err(|e| e.to_string())?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies with the parameters stored in the hash, so raising the cost later keeps old hashes valid.
fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        assert!(validate_username("alice_01").is_ok());
        assert!(validate_username("al").is_err());
        assert!(validate_username("1alice").is_err());
        assert!(validate_username("ali ce").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn email_rules() {
        assert!(validate_email("").is_ok());
        assert!(validate_email("a@b.io").is_ok());
        assert!(validate_email("a@b").is_err());
        assert!(validate_email("@b.io").is_err());
    }

    #[test]
    fn hashes_verify_with_their_own_parameters() {
        let light = AccountsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AccountsConfig::default()
        };
        let hash = hash_password(&light, "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }
}
