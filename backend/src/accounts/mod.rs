//! Registration and authentication: argon2id password hashes, bearer tokens with expiry and
//! refresh, throttling of failed attempts, and e-mail codes. A token login is one hash and one
//! lookup, no argon2.
//!
//! - `logins.rs`: Login by password or token, issuing and refreshing tokens;
//!   `unknown_tokens.rs`: token logins with a token nobody holds, limited per client address;
//!   `login_audit.rs`: a device's token logins audited once per interval, the rest counted;
//!   `expiry.rs`: the sweep that ends sessions whose token expired.
//! - `password.rs`: hashing and tokens; `rehash.rs`: a verified hash made with other argon2
//!   parameters hashed again with the configured ones. `validate.rs`: what a name, address or
//!   password may be.
//! - `codes.rs`, `limiter.rs`: e-mail codes and their rate limits; `email.rs`: the mailer.
//! - `recovery.rs`: RequestEmailCode and ResetPassword (before login); `prelogin.rs`: how many
//!   of those and of Registers the backend holds, and dropping those whose client has gone.
//! - `devices.rs`: ChangePassword, Logout, ListDevices, RevokeDevice (logged in); `seen.rs`:
//!   devices' last-seen times, written in batches; `revoked.rs`: what a login's token write
//!   leaves behind (sessions of revoked tokens kicked, a refused login's token taken back).
//! - `policy.rs`: the registration policy (open, closed, invite codes) and disabled accounts;
//!   `operator.rs`: what operators do to accounts (disable, kick, set a password, create);
//!   `user_invites.rs`: invite codes users issue (CreateInvite, ListInvites, RevokeInvite).

mod codes;
mod devices;
mod email;
mod expiry;
pub(crate) mod limiter;
mod login_audit;
mod logins;
mod operator;
mod password;
mod policy;
mod prelogin;
mod recovery;
mod rehash;
mod revoked;
mod seen;
mod unknown_tokens;
pub(crate) mod user_invites;
mod validate;

use std::sync::Arc;

use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::{AccountsConfig, EmailConfig, EmailVerification, LoginConfig, Settings};
use crate::messaging::operator::OperatorWriteError;
use crate::store::{AccountAdminStore, AccountStore, StoreError, TokenHash, UserId, email_key};
use crate::throttle::Throttle;
use crate::time::now_ms;

pub(crate) use devices::TOKENS_SCAN_MAX;
pub use password::token_hash;
pub(crate) use password::{hash_password, needs_rehash, verify_password};
pub(crate) use policy::{disabled, new_random_password};
pub(crate) use seen::{SEEN_FLUSH_INTERVAL, SeenBuffer};
pub use unknown_tokens::{UNKNOWN_TOKENS_PER_CLIENT, UNKNOWN_TOKENS_PER_NETWORK};
pub use validate::{
    DEVICE_ID_BYTES_MAX, EMAIL_BYTES_MAX, PASSWORD_BYTES_CEILING, USERNAME_CHARS_MAX,
};
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
            retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
        }
    }

    /// UNAVAILABLE because something is full for now: come back after about `base_ms`, drawn by
    /// the one jitter rule (`retry_after.rs`), so that the clients refused together do not all
    /// come back together.
    pub(crate) fn busy(message: impl Into<String>, base_ms: u64) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            message: message.into(),
            retry_after_ms: crate::retry_after::jittered_ms(base_ms),
        }
    }

    /// A networked store is away: logged once per outage by the adapter, not per request.
    pub(crate) fn store_away(err: impl std::fmt::Display) -> Self {
        tracing::debug!(%err, "refused: the store is unavailable");
        Self {
            code: ErrorCode::Unavailable,
            message: "storage is unavailable, retry later".into(),
            retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
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

impl From<crate::sessions::OpenError> for Refusal {
    fn from(e: crate::sessions::OpenError) -> Self {
        match e {
            crate::sessions::OpenError::TooManyDevices { devices_max } => Self::new(
                ErrorCode::TooManyDevices,
                format!("already logged in on {devices_max} devices"),
            ),
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
    /// The device the token is for: a token login is the device its token was issued to,
    /// whatever `device_id` it sent (its session is found by that name, so a Logout or a
    /// RevokeDevice of that device ends it).
    pub device_id: String,
    /// Tokens this login revoked (the device's older ones, expired ones, devices pushed out past
    /// `login.device_tokens_max`): the sessions still using them are kicked.
    pub revoked: Vec<RevokedToken>,
    /// A nameless refresh's old token: nothing but it could end it, so it is removed once the
    /// fresh token's session is open (`Backend::retire_refreshed`). Not before: a login
    /// refused after the write leaves the client the token it had, and a token revoked or
    /// logged out meanwhile is never written back.
    pub retires: Option<TokenHash>,
}

/// A token a login revoked, and the device it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedToken {
    pub hash: TokenHash,
    pub device_id: String,
}

pub struct Accounts {
    store: Arc<dyn AccountStore>,
    /// Disabled accounts and invites (`policy.rs`).
    admin_store: Arc<dyn AccountAdminStore>,
    accounts: AccountsConfig,
    login: LoginConfig,
    email: EmailConfig,
    /// Permits for login hashes; registrations have their own, so a flood of sign-ups cannot
    /// starve logins, and so have new passwords (changes, resets, operators' sets), so that it
    /// cannot starve those either. Rehashes of hashes made with older parameters take the
    /// logins' permits too (`rehash.rs`).
    hashing: Arc<Semaphore>,
    registration_hashing: Semaphore,
    password_hashing: Semaphore,
    /// Places of the requests before login (`prelogin.rs`).
    prelogin: prelogin::PreLogin,
    /// Password logins' delays after failures, per account and client address.
    throttle: Throttle,
    /// Token logins with an unknown token, per client address (`unknown_tokens.rs`).
    unknown_tokens: unknown_tokens::UnknownTokens,
    /// The live keys among `[accounts]` and `[login]` (password rules, throttling).
    live: Arc<crate::live::LiveSettings>,
    /// Verified against when the account does not exist, so both cases take the same time:
    /// made with the configured parameters, which `rehash.rs` brings every account's hash to.
    dummy_hash: String,
    /// Rehashes pending (`rehash.rs`).
    rehashes: Arc<rehash::Rehashes>,
    codes: codes::EmailCodes,
    mailer: email::Mailer,
    pub(crate) seen: Arc<SeenBuffer>,
    /// Who is online: a device online now was seen now, whatever its token says.
    sessions: crate::sessions::SharedSessions,
    /// Users' security events go to the audit log.
    pub(crate) audit: Arc<crate::audit::Audit>,
    /// Which token logins are audited (`login_audit.rs`).
    login_audit: login_audit::LoginAudit,
    /// Invites each user issued in the current day (`user_invites.rs`).
    user_invites: user_invites::UserInviteLimiter,
    /// `accounts.registrations_per_ip_per_hour` and `…_per_network_per_hour`; `None` when the
    /// first is 0 (not limited).
    registrations_per_ip: Option<limiter::ClientLimiter>,
    /// Cluster mode: the routes, where the user's sessions on the other nodes are read for
    /// the device rules (`sessions_elsewhere`). Unset on one box.
    routes: std::sync::OnceLock<Arc<crate::cluster::Routes>>,
}

/// Client addresses, and networks, the registration limiter keeps at once (past them it
/// drops the biggest networks' oldest counts: `limiter.rs`).
const REGISTRATION_CLIENTS_MAX: usize = 100_000;

/// Runs store calls on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(Refusal::unavailable)??)
}

impl Accounts {
    /// Cluster mode: e-mail codes in Redis (`cluster/codes.rs`).
    pub(crate) fn share_codes(&self, codes: Arc<crate::cluster::codes::SharedCodes>) {
        self.codes.share(codes);
    }

    /// Cluster mode: the device rules count the user's sessions on every node (`routes`).
    pub(crate) fn share_routes(&self, routes: Arc<crate::cluster::Routes>) {
        let _ = self.routes.set(routes);
    }

    /// The device ids of the user's sessions on the other nodes, one per session (cluster
    /// mode; one Redis read). Empty on one box, and when the routes cannot say: the rules then
    /// hold for this node's sessions only (`Routes::sessions_elsewhere`).
    pub(crate) async fn sessions_elsewhere(&self, user_id: UserId) -> Vec<Box<str>> {
        match self.routes.get() {
            Some(routes) => routes.sessions_elsewhere(user_id).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    pub fn new(
        store: Arc<dyn AccountStore>,
        admin_store: Arc<dyn AccountAdminStore>,
        settings: &Settings,
        live: Arc<crate::live::LiveSettings>,
        audit: Arc<crate::audit::Audit>,
        sessions: crate::sessions::SharedSessions,
    ) -> Result<Self, String> {
        let accounts = settings.accounts.clone();
        let dummy_hash = password::hash_password(&accounts, "ringchat-dummy-password")
            .expect("validated argon2 parameters");
        Ok(Self {
            registrations_per_ip: (accounts.registrations_per_ip_per_hour > 0).then(|| {
                limiter::ClientLimiter::new(
                    accounts.registrations_per_ip_per_hour,
                    accounts.registrations_per_network_per_hour,
                    3_600_000,
                    REGISTRATION_CLIENTS_MAX,
                )
            }),
            user_invites: user_invites::new_limiter(&accounts),
            audit,
            login_audit: login_audit::LoginAudit::default(),
            hashing: Arc::new(Semaphore::new(accounts.hash_concurrency)),
            registration_hashing: Semaphore::new(accounts.hash_concurrency.div_ceil(2)),
            password_hashing: Semaphore::new(accounts.hash_concurrency.div_ceil(2)),
            prelogin: prelogin::PreLogin::new(accounts.registrations_waiting_max),
            throttle: Throttle::live(Arc::clone(&live)),
            unknown_tokens: unknown_tokens::UnknownTokens::default(),
            live,
            codes: codes::EmailCodes::new(&settings.email).map_err(|e| e.to_string())?,
            mailer: email::Mailer::new(&settings.email, &settings.server_name)?,
            seen: Arc::default(),
            sessions,
            store,
            admin_store,
            accounts,
            login: settings.login.clone(),
            email: settings.email.clone(),
            dummy_hash,
            rehashes: Arc::default(),
            routes: std::sync::OnceLock::new(),
        })
    }

    /// A Register whose client waits for it, for tests.
    #[cfg(test)]
    pub async fn register(
        &self,
        peer: std::net::IpAddr,
        req: v1::Register,
    ) -> Result<v1::RegisterOk, Refusal> {
        self.register_unless_gone(peer, req, &|| false).await
    }

    /// A client's Register, under the registration policy (`policy.rs`). `gone`: whether its
    /// client has stopped waiting (asked once its turn at the hasher comes).
    pub async fn register_unless_gone(
        &self,
        peer: std::net::IpAddr,
        req: v1::Register,
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<v1::RegisterOk, Refusal> {
        // The policy answers first, before any lookup or charge: a closed server tells nobody
        // whether a name is taken, and a missing or wrong invite uses up no registration budget.
        self.check_policy(&req.invite_code)?;
        check_new_account(
            &self.live.get().accounts,
            &req.username,
            &req.password,
            &req.email,
        )?;
        let invite = self.admit(&req.invite_code).await?;
        let result = self.register_counted(peer, req, gone).await;
        match &result {
            Ok(ok) => self.audit.record(
                crate::audit::Entry::new(format!("user:{}", ok.user_id), "user.register")
                    .target(format!("user:{}", ok.user_id))
                    .from(peer)
                    .detail(invite.map_or_else(String::new, |id| format!("invite {id}"))),
            ),
            // No account was made (refused before its write, or by the store): the use goes
            // back.
            Err(OperatorWriteError::NotQueued(_)) => self.return_invite(invite).await,
            // The account's write may have landed (a COMMIT whose answer was lost). The use was
            // taken by a write of its own (`admit`), so giving it back could let a single-use
            // code make a second account: it stays taken. At worst the code loses a use an
            // operator can make good; never does it make more accounts than its uses.
            Err(OperatorWriteError::Unanswered(why)) => {
                if let Some(invite) = invite {
                    tracing::warn!(invite, why = %why.message,
                        "a registration's write may have landed; its invite's use stays taken");
                }
            }
        }
        result.map_err(Refusal::from)
    }

    /// An admitted Register, within the address's registration budget.
    async fn register_counted(
        &self,
        peer: std::net::IpAddr,
        req: v1::Register,
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<v1::RegisterOk, OperatorWriteError> {
        // A taken name is answered first and not counted: names are public (search finds
        // them), and clients that register before each login (load generators) would use up
        // the budget. Everything else counts, a taken e-mail address or a wrong code too.
        let store = Arc::clone(&self.store);
        let name = req.username.clone();
        if blocking(move || store.user_id_by_name(&name))
            .await
            .map_err(OperatorWriteError::NotQueued)?
            .is_some()
        {
            return Err(OperatorWriteError::NotQueued(Refusal::new(
                ErrorCode::UsernameTaken,
                "username is taken",
            )));
        }
        if let Some(limiter) = &self.registrations_per_ip {
            limiter.take(peer, now_ms()).map_err(|l| {
                OperatorWriteError::NotQueued(Refusal {
                    code: ErrorCode::RateLimited,
                    message: match l {
                        limiter::Limited::Client { .. } => {
                            "too many registrations from this address, retry later"
                        }
                        limiter::Limited::Network { .. } => {
                            "too many registrations from this network, retry later"
                        }
                    }
                    .into(),
                    retry_after_ms: l.retry_after_ms(),
                })
            })?;
        }
        self.register_admitted(req, gone).await
    }

    /// A Register within its budget: refused (`NotQueued`) until the account's write, whose
    /// failure may have landed (`OperatorWriteError::store_write`).
    async fn register_admitted(
        &self,
        req: v1::Register,
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<v1::RegisterOk, OperatorWriteError> {
        let verify = match self.email.verification {
            EmailVerification::Off => false,
            EmailVerification::Optional => !req.email.is_empty(),
            EmailVerification::Required => true,
        };
        let permit = self
            .register_checked(&req, verify, gone)
            .await
            .map_err(OperatorWriteError::NotQueued)?;
        let user_id = self
            .create_account(permit, req.username, req.password, req.email)
            .await?;
        tracing::info!(user_id, verified_email = verify, "account registered");
        Ok(v1::RegisterOk { user_id })
    }

    /// What a Register is checked against before its account is written: the e-mail code when
    /// `verify`, a free name and address, its client still waiting. Returns the hasher's permit.
    async fn register_checked(
        &self,
        req: &v1::Register,
        verify: bool,
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<SemaphorePermit<'_>, Refusal> {
        if verify && (req.email.is_empty() || req.email_code.is_empty()) {
            return Err(Refusal::new(
                ErrorCode::EmailCodeRequired,
                "registration needs the e-mail address and the code mailed to it (RequestEmailCode)",
            ));
        }
        self.check_free(&req.username, &req.email).await?;
        // The hasher is where registrations wait: one whose client left meanwhile uses up
        // neither a hash nor its code, and creates no account nobody will be told of.
        let permit = self.registration_permit().await;
        if gone() {
            return Err(prelogin::client_gone());
        }
        if verify {
            let key = email_key(&req.email);
            self.codes
                .redeem(EmailCodePurpose::Register, &key, &req.email_code, now_ms())
                .await?;
        }
        Ok(permit)
    }

    /// A taken name or address is refused before the costly hash and before a code is used
    /// up (`create_user` checks again, atomically).
    async fn check_free(&self, username: &str, email: &str) -> Result<(), Refusal> {
        let store = Arc::clone(&self.store);
        let (name, mail) = (username.to_owned(), email.to_owned());
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
        Ok(())
    }

    async fn registration_permit(&self) -> SemaphorePermit<'_> {
        (self.registration_hashing.acquire().await).expect("semaphore never closed")
    }

    /// Hashes the password (under `permit`, a registration's) and stores the account: the one
    /// way an account is made, by a client's Register or by an operator. A failed write may
    /// have made it (`OperatorWriteError::store_write`).
    async fn create_account(
        &self,
        permit: SemaphorePermit<'_>,
        username: String,
        password: String,
        email: String,
    ) -> Result<UserId, OperatorWriteError> {
        let hash = password::hash_blocking(&self.accounts, password).await;
        drop(permit);
        let hash = hash.map_err(OperatorWriteError::NotQueued)?;
        let store = Arc::clone(&self.store);
        let user = tokio::task::spawn_blocking(move || {
            store.create_user(&username, &hash, &email, now_ms())
        })
        .await
        .map_err(|e| OperatorWriteError::may_have_landed(Refusal::unavailable(e)))?
        .map_err(OperatorWriteError::store_write)?;
        metrics::counter!("ringchat_registrations_total").increment(1);
        Ok(user.user_id)
    }

    /// An account made by an operator (admin API): the same rules for the name, password and
    /// address as Register, whatever `accounts.registration` says, and no e-mail code. A
    /// failed write may have made it (`OperatorWriteError::Unanswered`).
    pub(crate) async fn create_by_operator(
        &self,
        username: String,
        password: String,
        email: String,
    ) -> Result<UserId, OperatorWriteError> {
        check_new_account(&self.live.get().accounts, &username, &password, &email)
            .map_err(OperatorWriteError::NotQueued)?;
        self.check_free(&username, &email)
            .await
            .map_err(OperatorWriteError::NotQueued)?;
        let permit = self.registration_permit().await;
        self.create_account(permit, username, password, email).await
    }

    /// Password rules are live keys: read at each check.
    fn validate_password(&self, password: &str) -> Result<(), Refusal> {
        validate::password(&self.live.get().accounts, password)
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

/// What a new account's name, password and address must be: the one rule for a client's
/// Register, the admin API and the CLI.
pub(crate) fn check_new_account(
    cfg: &AccountsConfig,
    username: &str,
    password: &str,
    email: &str,
) -> Result<(), Refusal> {
    validate_username(username)?;
    validate::password(cfg, password)?;
    validate_email(email)
}

fn email_taken() -> Refusal {
    Refusal::new(
        ErrorCode::EmailTaken,
        "another account has this e-mail address",
    )
}
