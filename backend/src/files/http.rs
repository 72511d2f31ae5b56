//! The HTTP file API (the paths of issue 15), as an axum `Router` the gateway serves on the
//! client listeners. Every request carries the login token as `Authorization: Bearer TOKEN`.
//!
//! - `POST /files` `{name, size, mime, sha256}` → `{upload_id, chunk_size}`
//! - `PUT /files/{upload_id}/chunks/{index}` with `X-Chunk-Sha256` → 204
//! - `GET /files/{upload_id}/chunks` → `{present: [indices]}`
//! - `POST /files/{upload_id}/complete` → `{file_id}`
//! - `GET /files/{file_id}[?c=CONVERSATION&s=SEQ]`: the bytes, with `Range`, `ETag`.
//!
//! Refusals are JSON `{"error", "code"}` with the status of [`FileError::status`]. The token
//! is checked before any handler runs ([`authenticate`]): 401, or 429 past the unknown tokens
//! of the client's address ([`ClientAddr`]), or 503; a handler's answer is marked
//! [`Authenticated`].

mod headers;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;

use super::download::Via;
use super::error::FileError;
use super::model::NewUpload;
use super::service::FileService;
use crate::api::UserId;
use headers::{RangeAsk, content_disposition, parse_range, served_type};

/// Largest JSON body (`POST /files`), in bytes.
pub const JSON_BODY_BYTES_MAX: usize = 16 * 1024;

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, expired, or its account disabled: 401.
    #[error("{0}")]
    Invalid(String),
    /// Too many unknown tokens from the client's address (the token login's limit, shared
    /// with it): 429 with `Retry-After`.
    #[error("{message}")]
    Limited {
        message: String,
        retry_after_ms: u64,
    },
    /// The account store could not be asked: 503.
    #[error("{0}")]
    Unavailable(String),
}

/// Who a bearer token is for: the same rule as the token login of the client protocol,
/// unknown tokens charged to `peer` as a token login charges them.
#[async_trait::async_trait]
pub trait Authenticate: Send + Sync + 'static {
    async fn user_of(&self, token: &str, peer: IpAddr) -> Result<UserId, AuthError>;
}

/// The client's address, a request extension the server that serves [`router`] inserts (the
/// gateway: the connection's peer, or the PROXY header's address): unknown tokens are charged
/// to it. A request without it is refused (500): the server was wired wrong.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// A response extension on every answer to a request whose token was accepted. The server
/// keeps a connection alive only after such an answer: anything else (no or a bad token, a
/// path no route has) may come from a stranger, who must not hold a connection.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated;

#[derive(Clone)]
struct Api {
    files: Arc<FileService>,
    auth: Arc<dyn Authenticate>,
}

/// The `/files` routes, ready to serve.
pub fn router(files: Arc<FileService>, auth: Arc<dyn Authenticate>) -> Router {
    let api = Api { files, auth };
    Router::new()
        .route("/files", post(create))
        .route("/files/{id}", get(download))
        .route("/files/{id}/chunks", get(present))
        .route("/files/{id}/chunks/{index}", put(put_chunk))
        .route("/files/{id}/complete", post(complete))
        .route("/files/{id}/thumbnail", get(thumbnail))
        // Around each path's every method, its 405 included: no answer under a route is given
        // before the token is checked.
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            authenticate,
        ))
        .with_state(api)
}

/// A refusal as the client reads it.
struct Refused(FileError);

impl From<FileError> for Refused {
    fn from(e: FileError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let e = self.0;
        metrics::counter!(super::metrics::UPLOADS_REFUSED, "reason" => e.code()).increment(1);
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": e.to_string(), "code": e.code() });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match e {
            FileError::BadRange { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            FileError::Busy | FileError::CompletesBusy { .. } | FileError::CreatesBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// 401, 429 past the unknown tokens of the address, or 503 when the account store is away.
fn unauthorized(e: AuthError) -> Response {
    let (status, code) = match &e {
        AuthError::Invalid(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        AuthError::Limited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AuthError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "accounts_unavailable"),
    };
    metrics::counter!(super::metrics::UPLOADS_REFUSED, "reason" => code).increment(1);
    let body = serde_json::json!({ "error": e.to_string(), "code": code });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    match e {
        AuthError::Invalid(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        AuthError::Limited { retry_after_ms, .. } => {
            // Whole seconds, rounded up: never sooner than the limit allows.
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_ms.div_ceil(1000).max(1)),
            );
        }
        AuthError::Unavailable(_) => {}
    }
    response
}

/// The user whose bearer token the request carries, put in the request by [`authenticate`].
#[derive(Clone, Copy)]
struct Caller(UserId);

impl axum::extract::FromRequestParts<Api> for Caller {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &Api,
    ) -> Result<Self, StatusCode> {
        // Every route is behind `authenticate`: missing, the router was built wrong.
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Checks the bearer token before any handler runs: refused, the refusal is the answer; else
/// the handler's answer, marked [`Authenticated`].
async fn authenticate(
    State(api): State<Api>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(&ClientAddr(peer)) = request.extensions().get::<ClientAddr>() else {
        tracing::error!("a files request without its client's address: refused");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let user = match api.user(request.headers(), peer).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    request.extensions_mut().insert(Caller(user));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(Authenticated);
    response
}

impl Api {
    async fn user(&self, headers: &HeaderMap, peer: IpAddr) -> Result<UserId, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthorized(AuthError::Invalid(
                "send the login token as Authorization: Bearer TOKEN".into(),
            )));
        };
        self.auth.user_of(token, peer).await.map_err(unauthorized)
    }
}

/// Of a body found too large, what is still read and dropped before the answer, at most: a
/// connection closed with the client's bytes unread is reset, and a client still writing its
/// body then gets a broken pipe instead of the 413. A body past this is cut off (reset).
const TOO_LARGE_DRAIN_BYTES_MAX: usize = 1 << 20;

/// Reads a body of at most `max` bytes within `files.body_timeout` of its length (408 past it:
/// a trickled body holds its connection, and a chunk its slot and memory, only that long).
async fn read_body_in_time(
    api: &Api,
    body: Body,
    max: usize,
    too_large: FileError,
) -> Result<Bytes, FileError> {
    let timeout = api.files.config().body_timeout(max as u64);
    tokio::time::timeout(timeout, read_body(body, max, too_large))
        .await
        .map_err(|_| FileError::BodyTimeout {
            ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })?
}

/// Reads a body of at most `max` bytes; `too_large` past it. The buffer is sized once from the
/// declared length (capped at `max`): a 1 MiB chunk is one allocation, not a doubling series of
/// them, which left the allocator holding tens of MiB after a big upload on a busy machine.
async fn read_body(body: Body, max: usize, too_large: FileError) -> Result<Bytes, FileError> {
    let declared = usize::try_from(HttpBody::size_hint(&body).lower()).unwrap_or(usize::MAX);
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.min(max));
    while let Some(piece) = stream.next().await {
        let piece = piece
            .map_err(|e| FileError::bad("body_unreadable", format!("reading the body: {e}")))?;
        if buf.len() + piece.len() > max {
            let mut dropped = piece.len();
            while dropped <= TOO_LARGE_DRAIN_BYTES_MAX
                && let Some(Ok(piece)) = stream.next().await
            {
                dropped += piece.len();
            }
            return Err(too_large);
        }
        buf.extend_from_slice(&piece);
    }
    Ok(buf.freeze())
}

/// A refusal answered before the request's body was read to its end carries `Connection:
/// close`: hyper closes such a connection after the answer (it cannot be reused with a body left
/// unread), and a pooled client that was not told would send its next request into the closed
/// socket and get a broken pipe instead of an answer.
fn refused_unread(e: FileError) -> Response {
    let mut response = Refused(e).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn create(State(api): State<Api>, Caller(user): Caller, body: Body) -> Response {
    let mut body_read = false;
    let result = async {
        let body = read_body_in_time(
            &api,
            body,
            JSON_BODY_BYTES_MAX,
            FileError::bad("body_too_large", "the JSON body is over 16 KiB"),
        )
        .await?;
        body_read = true;
        let req: NewUpload = serde_json::from_slice(&body).map_err(|e| {
            FileError::bad(
                "bad_json",
                format!("expected {{name, size, mime, sha256}}: {e}"),
            )
        })?;
        api.files.create_upload(user, req).await
    }
    .await;
    match result {
        Ok(created) => (StatusCode::CREATED, axum::Json(created)).into_response(),
        Err(e) if body_read => Refused(e).into_response(),
        Err(e) => refused_unread(e),
    }
}

async fn put_chunk(
    State(api): State<Api>,
    Caller(user): Caller,
    Path((upload_id, index)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body_read = false;
    let result = async {
        let index: u64 = index
            .parse()
            .map_err(|_| FileError::bad("bad_chunk_index", "the chunk index is not a number"))?;
        let sha256 = headers
            .get("x-chunk-sha256")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                FileError::bad(
                    "bad_chunk_sha256",
                    "X-Chunk-Sha256: required (the chunk's SHA-256, lowercase hex)",
                )
            })?
            .to_owned();
        let max = api.files.config().chunk_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(FileError::ChunkTooLarge { max });
        }
        // The upload, the index and the declared length first: only then is room held for
        // the body.
        let slot = api
            .files
            .chunk_slot(user, &upload_id, index, &sha256, declared)
            .await?;
        let len = slot.body_len();
        let bytes = read_body_in_time(
            &api,
            body,
            len as usize,
            FileError::ChunkTooLarge { max: len },
        )
        .await?;
        body_read = true;
        api.files
            .put_chunk_in(user, &upload_id, slot, &sha256, bytes)
            .await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if body_read => Refused(e).into_response(),
        Err(e) => refused_unread(e),
    }
}

async fn present(
    State(api): State<Api>,
    Caller(user): Caller,
    Path(upload_id): Path<String>,
) -> Response {
    match api.files.present_chunks(user, &upload_id).await {
        Ok(present) => axum::Json(serde_json::json!({ "present": present })).into_response(),
        Err(e) => Refused(e).into_response(),
    }
}

async fn complete(
    State(api): State<Api>,
    Caller(user): Caller,
    Path(upload_id): Path<String>,
) -> Response {
    // Run apart from the request: hyper drops a handler whose client went away mid-request,
    // and a complete cut short between its steps would leave the blob's record with no file.
    let files = Arc::clone(&api.files);
    let completed = tokio::spawn(async move { files.complete(user, &upload_id).await }).await;
    match completed {
        Ok(Ok(file_id)) => axum::Json(serde_json::json!({ "file_id": file_id })).into_response(),
        Ok(Err(e)) => Refused(e).into_response(),
        Err(e) => Refused(FileError::Unavailable(format!("complete failed: {e}"))).into_response(),
    }
}

/// `c` and `s` of the query: both or neither.
fn parse_via(query: Option<&str>) -> Result<Option<Via>, FileError> {
    let (mut c, mut s) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<u64>()
                .map_err(|_| FileError::bad("bad_query", format!("{k}: expected a number")))
        };
        match k {
            "c" => c = Some(n()?),
            "s" => s = Some(n()?),
            _ => {}
        }
    }
    match (c, s) {
        (Some(conversation_id), Some(seq)) => Ok(Some(Via {
            conversation_id,
            seq,
        })),
        (None, None) => Ok(None),
        _ => Err(FileError::bad(
            "bad_query",
            "c and s: give both (the conversation and the message's seq) or neither",
        )),
    }
}

async fn download(
    State(api): State<Api>,
    Caller(user): Caller,
    Path(file_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match serve(&api, user, &file_id, query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(e) => Refused(e).into_response(),
    }
}

async fn serve(
    api: &Api,
    user: UserId,
    file_id: &str,
    query: Option<&str>,
    request: &HeaderMap,
) -> Result<Response, FileError> {
    let via = parse_via(query)?;
    let meta = api.files.download_meta(user, file_id, via).await?;
    let etag = format!("\"{}\"", meta.sha256);
    let mut out = stored_bytes_headers(&etag);
    let value = |s: &str| HeaderValue::from_str(s).expect("built from safe characters");
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let matches_etag = |h: &HeaderValue| {
        h.to_str()
            .map(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
            .unwrap_or(false)
    };
    if request.get(header::IF_NONE_MATCH).is_some_and(matches_etag) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let (mime, inline) = served_type(&meta.mime);
    out.insert(header::CONTENT_TYPE, value(mime));
    out.insert(
        header::CONTENT_DISPOSITION,
        value(&content_disposition(inline, &meta.name)),
    );
    // A Range under a stale If-Range validator: the whole file, as RFC 9110 says.
    let range_header = match request.get(header::IF_RANGE) {
        Some(v) if !matches_etag(v) => None,
        _ => request.get(header::RANGE).and_then(|v| v.to_str().ok()),
    };
    let (status, range) = match parse_range(range_header, meta.size) {
        RangeAsk::Whole => (StatusCode::OK, 0..meta.size),
        RangeAsk::Part(range) => {
            out.insert(
                header::CONTENT_RANGE,
                value(&format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end - 1,
                    meta.size
                )),
            );
            (StatusCode::PARTIAL_CONTENT, range)
        }
        RangeAsk::Unsatisfiable => return Err(FileError::BadRange { size: meta.size }),
    };
    out.insert(
        header::CONTENT_LENGTH,
        value(&(range.end - range.start).to_string()),
    );
    let stream = api.files.read(&meta, Some(range)).await?;
    Ok((status, out, Body::from_stream(stream)).into_response())
}

/// `GET /files/{file_id}/thumbnail`: an image's thumbnail, for whoever may download the file
/// (the same `?c=&s=`); 404 when it has none.
async fn thumbnail(
    State(api): State<Api>,
    Caller(user): Caller,
    Path(file_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let served = async {
        let via = parse_via(query.as_deref())?;
        let meta = api.files.download_meta(user, &file_id, via).await?;
        let (thumb, stream) = api.files.read_thumb(&meta).await?;
        let mut out = stored_bytes_headers(&format!("\"{}-thumb\"", meta.sha256));
        let mime = HeaderValue::from_str(&thumb.mime).expect("image/jpeg or image/png");
        out.insert(header::CONTENT_TYPE, mime);
        Ok::<_, FileError>((StatusCode::OK, out, Body::from_stream(stream)).into_response())
    };
    match served.await {
        Ok(response) => response,
        Err(e) => Refused(e).into_response(),
    }
}

/// The headers of every answer that carries stored bytes (a file, a thumbnail): private to
/// the user, never sniffed, and whatever the bytes hold, never run as a page of this origin.
fn stored_bytes_headers(etag: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("a quoted hex digest"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    out
}

#[cfg(test)]
mod tests;
