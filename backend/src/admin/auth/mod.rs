//! Who is calling the admin API, and what they may do.
//!
//! Two ways in: the dashboard's session cookie (`POST /api/session`; every state change must
//! also carry the session's `X-CSRF-Token`, which a cross-site page cannot read), and API keys
//! for scripts (`Authorization: Bearer rck_…`; no CSRF: a browser never attaches it by
//! itself). Two roles: `admin` (everything) and `viewer` (read only). A handler states what it
//! needs by its extractor: [`Viewer`] for reads, [`AdminOnly`] for changes.

pub mod credentials;
mod routes;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use self::credentials::CredentialFile;
use self::sessions::{SessionKey, Sessions};
use super::Admin;
use super::error::ApiError;
use crate::same_secret::same_secret;
use crate::throttle::Throttle;

pub use routes::routes;

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "ringchat_admin";
/// Header carrying the session's CSRF token on every state change.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Ordered by power: `Viewer < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Session,
    ApiKey,
}

/// An authenticated caller.
#[derive(Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// The peer address of the request.
    pub from: SocketAddr,
    /// What the request proved (`Auth::still_holds` checks it again).
    proof: Proof,
}

impl std::fmt::Debug for Operator {
    // Without the proof: its hashes are kept out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("via", &self.via)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// The audit log's `actor`: `admin:NAME` for a dashboard user, `key:NAME` for an API key.
    pub fn actor(&self) -> String {
        match self.via {
            Via::Session => format!("admin:{}", self.name),
            Via::ApiKey => format!("key:{}", self.name),
        }
    }

    /// An audit entry by this operator.
    pub(crate) fn audit(&self, action: &'static str) -> crate::audit::Entry {
        crate::audit::Entry::new(self.actor(), action).from(self.from)
    }
}

/// The admin listener's authentication state.
pub struct Auth {
    pub credentials: CredentialFile,
    pub sessions: Sessions,
    /// Failed admin logins, per operator name and per address.
    pub throttle: Throttle,
    /// One admin password check at a time: guesses sent in parallel wait here, and the ones
    /// behind a failure are stopped by the throttle before they cost a hash (nor do they take
    /// the blocking threads the chat logins and store reads share).
    pub hashing: tokio::sync::Semaphore,
}

impl Auth {
    /// `live`: the login throttle follows `[login]` as it changes.
    pub fn new(
        settings: &crate::config::Settings,
        live: std::sync::Arc<crate::live::LiveSettings>,
    ) -> Self {
        let admin = &settings.admin;
        Self {
            credentials: CredentialFile::new(&settings.storage.data_dir),
            sessions: Sessions::new(
                std::time::Duration::from_secs(admin.session_ttl_s),
                admin.sessions_max,
                admin.sessions_per_operator_max,
            ),
            throttle: Throttle::live(live),
            hashing: tokio::sync::Semaphore::new(1),
        }
    }

    /// Who the request is from, or why it is refused. State changes made with a session need
    /// its CSRF token.
    fn authenticate(&self, parts: &Parts, from: SocketAddr) -> Result<Operator, ApiError> {
        let proof = if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let secret = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ApiError::unauthenticated("Authorization must be \"Bearer <API key>\"")
                })?;
            Proof::ApiKey(credentials::key_hash(secret.trim()))
        } else {
            let id = session_cookie(&parts.headers).ok_or_else(|| {
                ApiError::unauthenticated("log in (POST /api/session) or send an API key")
            })?;
            Proof::Session(sessions::key_of(id))
        };
        let held = self.check(&proof)?;
        if let Some(csrf_token) = held.csrf_token
            && !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        {
            let sent = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes());
            if !sent.is_some_and(|sent| same_secret(sent, csrf_token.as_bytes())) {
                return Err(ApiError::new(
                    super::error::ErrorCode::CsrfMissing,
                    "a change made with a session needs its X-CSRF-Token header",
                ));
            }
        }
        Ok(Operator {
            name: held.name,
            role: held.role,
            via: proof.via(),
            from,
            proof,
        })
    }

    /// Whether what `op` proved still holds: the key not revoked (nor its maker gone), the
    /// session not ended or expired, its operator still there with the same password. An
    /// answer that lasts (the live log tail) asks again while it runs.
    pub fn still_holds(&self, op: &Operator) -> bool {
        self.check(&op.proof).is_ok()
    }

    /// The one rule for whether a proof holds now, and whose it is.
    fn check(&self, proof: &Proof) -> Result<Held, ApiError> {
        let credentials = self
            .credentials
            .current()
            .map_err(|e| ApiError::internal("reading the admin credentials", e))?;
        let key_sha256 = match proof {
            Proof::ApiKey(key_sha256) => key_sha256,
            Proof::Session(key) => return self.check_session(key, &credentials),
        };
        let key = credentials
            .key_by_hash(key_sha256)
            .ok_or_else(|| ApiError::unauthenticated("unknown or revoked API key"))?;
        let role = credentials.key_role(key).ok_or_else(|| {
            ApiError::unauthenticated("the operator who made this API key no longer exists")
        })?;
        Ok(Held {
            name: key.name.clone(),
            role,
            csrf_token: None,
        })
    }

    fn check_session(
        &self,
        key: &SessionKey,
        credentials: &credentials::CredentialsData,
    ) -> Result<Held, ApiError> {
        let session = self
            .sessions
            .get_by_key(key, Instant::now())
            .ok_or_else(|| ApiError::unauthenticated("the session has expired or ended"))?;
        // The operator may have been removed or had their role changed since they logged in.
        let user = credentials
            .user(&session.operator)
            .ok_or_else(|| ApiError::unauthenticated("the operator no longer exists"))?;
        // A replaced password (a leak being dealt with) ends every session begun with the old.
        if sessions::credential_of(&user.password_hash) != session.credential {
            self.sessions.end_by_key(key);
            return Err(ApiError::unauthenticated(
                "the operator's password was replaced since this session began: log in again",
            ));
        }
        Ok(Held {
            name: user.name.clone(),
            role: user.role,
            csrf_token: Some(session.csrf_token),
        })
    }
}

/// What a request proved, kept with its [`Operator`] so that it can be checked again: hashes
/// as the credentials and the sessions keep them, never a secret.
#[derive(Clone)]
enum Proof {
    /// The API key's SHA-256, lowercase hex.
    ApiKey(String),
    Session(SessionKey),
}

impl Proof {
    fn via(&self) -> Via {
        match self {
            Self::ApiKey(_) => Via::ApiKey,
            Self::Session(_) => Via::Session,
        }
    }
}

/// Whose a proof is while it holds; a session's changes also need its CSRF token.
struct Held {
    name: String,
    role: Role,
    csrf_token: Option<String>,
}

/// The session id in the request's cookies, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The peer's address (the listener is served with connect info).
pub fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// Any authenticated operator (reads).
pub struct Viewer(pub Operator);

/// An operator with the `admin` role (changes).
pub struct AdminOnly(pub Operator);

impl FromRequestParts<Arc<Admin>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        admin.auth.authenticate(parts, peer(parts)).map(Self)
    }
}

impl FromRequestParts<Arc<Admin>> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        let operator = admin.auth.authenticate(parts, peer(parts))?;
        if operator.role != Role::Admin {
            return Err(ApiError::forbidden(format!(
                "{} has the {} role; this needs admin",
                operator.name,
                operator.role.as_str()
            )));
        }
        Ok(Self(operator))
    }
}
