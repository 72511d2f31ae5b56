//! The admin API's errors: a status and a JSON body `{"error": {"code", "message"}}` whose
//! `code` is stable (scripts match on it; the message is for people). Extractors here turn
//! axum's rejections (bad JSON, wrong types, unknown fields, a body too large, a bad query) into
//! the same shape, so no request ever gets a plain-text error.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The stable error codes, one per kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No session cookie or API key, or one that is unknown, expired or revoked.
    Unauthenticated,
    /// Authenticated, but the role may not do this.
    Forbidden,
    /// A state change with a session cookie but without its `X-CSRF-Token`.
    CsrfMissing,
    /// The request is malformed: bad JSON, wrong types, unknown fields, a bad query or path.
    BadRequest,
    /// A value is well-formed but not allowed (out of range, too long, invalid).
    Invalid,
    NotFound,
    MethodNotAllowed,
    /// The thing exists already, or the change conflicts with the current state.
    Conflict,
    /// Too many failed logins: wait `retry_after_ms`.
    Throttled,
    /// The request's body did not arrive within `admin.body_read_timeout_ms`.
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The server cannot do it now (the store refuses writes, a queue is full).
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::CsrfMissing => StatusCode::FORBIDDEN,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// When to try again, for `throttled` and `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// An admin API error: what every handler returns on failure.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    /// An unexpected failure: logged here with its cause, answered without it.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "admin API: {what}");
        Self::new(
            ErrorCode::Internal,
            format!("{what} failed; see the server log"),
        )
    }
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(ErrorCode::Unavailable, message)
        }
    }
    /// Something is full or busy: come back after `base_ms` plus a random share of it again
    /// (`retry_after.rs`), so that the callers turned away together do not return together.
    pub fn busy(message: impl Into<String>, base_ms: u64) -> Self {
        Self::unavailable(message, crate::retry_after::jittered_ms(base_ms))
    }
    pub fn throttled(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                ErrorCode::Throttled,
                "too many failed logins; wait before trying again",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let retry = self.retry_after_ms;
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                    retry_after_ms: retry,
                },
            }),
        )
            .into_response();
        if let Some(ms) = retry
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// A blocking task that could not run to its end (a panic in it): an internal error.
impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::internal("a background task", err)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::WritesStopped(_)
            | StoreError::ReadOnly(_)
            | StoreError::Persist(_)
            | StoreError::Io(_) => {
                tracing::warn!(%err, "admin API: the store refused");
                Self::unavailable("the store refuses writes now", 1_000)
            }
            StoreError::Unavailable(_) => {
                tracing::warn!(%err, "admin API: the store is unavailable");
                let retry = crate::retry_after::unavailable_retry_after_ms();
                Self::unavailable("the store is unavailable now", retry)
            }
            other => Self::internal("the store", other),
        }
    }
}

/// The answer type of every handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, refused with a JSON error when it does not parse. Types that can be sent
/// deny unknown fields, so a misspelt field is an error, not a silent default.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if !json {
            return Err(not_json());
        }
        json_object(&bytes).map(Self)
    }
}

/// A JSON body that may be left out (or sent empty): its type's default then; otherwise the
/// same rules as [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(not_json());
        }
        json_object(&bytes).map(Self)
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json") || m.ends_with("+json")
        })
}

fn not_json() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "the body must be JSON with Content-Type: application/json",
    )
}

/// The body, within `admin.body_bytes_max` (the router's limit) and
/// `admin.body_read_timeout_ms` (the listener's).
async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
            } else if super::body_deadline::timed_out(&r) {
                ApiError::new(
                    ErrorCode::RequestTimeout,
                    "the body did not arrive in time (admin.body_read_timeout_ms)",
                )
            } else {
                ApiError::bad_request(r.body_text())
            }
        })
}

/// Every admin body is a JSON object (serde would also take a struct written as an array).
fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    match Json::<T>::from_bytes(bytes) {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => Err(json_rejection(rejection)),
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// Query parameters, refused with a JSON error when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// Path parameters, refused with a JSON error when they do not parse.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// Unknown paths under `/api/`: a JSON 404.
pub async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API path")
}

/// A path that exists, called with a method it does not have: a JSON 405 (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this path does not take this method (see the Allow header)",
    )
}
