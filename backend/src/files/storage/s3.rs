//! The S3 adapter of the storage port: any S3-compatible object store (AWS S3, MinIO, Ceph RGW,
//! …) through the `object_store` crate. Whole objects are one PUT; an [`ObjectWriter`] buffers
//! up to one part and becomes a multipart upload only past it, so small objects (chunks,
//! sidecars) cost one request and large ones hold at most `part_bytes ×
//! (parts_in_flight_max + 2)` in memory (the parts in flight, one taken and waiting for its
//! turn, and the pieces buffered towards the next). Every request has a deadline and bounded retries
//! (`[files.s3]`).
//!
//! A multipart upload that is neither finished nor aborted (the process died mid-upload) keeps
//! its parts in the bucket, invisible, until the bucket's lifecycle rule
//! `AbortIncompleteMultipartUpload` removes them: README "Files on S3" says to set one.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload,
    RetryConfig,
};
use serde::{Deserialize, Serialize};

use super::{ByteStream, FileStorage, Listed, ObjectMeta, ObjectWriter, StorageError, valid_key};

/// S3's smallest part of a multipart upload (all but the last): 5 MiB.
pub const PART_BYTES_MIN: usize = 5 << 20;
/// S3's most parts in one multipart upload: a file is at most `part_bytes` times this.
pub const PARTS_MAX: u64 = 10_000;
/// S3's largest part: 5 GiB; kept far lower here since a part is held in memory.
pub const PART_BYTES_MAX: usize = 256 << 20;

/// `[files.s3]`: the bucket when `files.storage = "s3"`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The service's URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `https://minio.internal:9000`;
    /// empty: AWS S3 in `region`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Every key is stored under this prefix (e.g. `ringchat/`), so one bucket can hold other
    /// things too; empty: none.
    pub key_prefix: String,
    pub access_key_id: String,
    /// Better kept in `secret_access_key_file` or the `RINGCHAT_FILES__S3__SECRET_ACCESS_KEY`
    /// environment variable. Serialised hidden: only whether it is set shows.
    #[serde(serialize_with = "crate::config::hidden")]
    pub secret_access_key: String,
    /// A file holding the secret access key (its first line), read once at start; empty: none.
    pub secret_access_key_file: PathBuf,
    /// `https://endpoint/bucket/key` (true: MinIO, Ceph and most S3-compatible servers) rather
    /// than `https://bucket.endpoint/key` (false; with an `endpoint`, it must then name the
    /// bucket's host).
    pub path_style: bool,
    /// Plain HTTP to the endpoint: only for a server on loopback (the tests' S3 server);
    /// refused for any other host.
    pub allow_http: bool,
    /// One request's deadline (a part upload or a ranged read included), in milliseconds.
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Retries of a failed request (timeouts, 5xx, connection errors), with exponential
    /// backoff, at most; 0: none.
    pub retries_max: usize,
    /// No retry starts later than this after the first attempt, in milliseconds.
    pub retry_timeout_ms: u64,
    /// Bytes in each part of a multipart upload (the last one may be smaller): at least 5 MiB
    /// (S3's minimum), at most 256 MiB.
    pub part_bytes: usize,
    /// Parts of one upload sent at once, at most (each held in memory until sent).
    pub parts_in_flight_max: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            key_prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            secret_access_key_file: PathBuf::new(),
            path_style: true,
            allow_http: false,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            retries_max: 3,
            retry_timeout_ms: 60_000,
            part_bytes: 8 << 20,
            parts_in_flight_max: 2,
        }
    }
}

/// As serialised: the secret hidden.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(shown) => f.write_str(&shown),
            Err(_) => f.write_str("S3Config"),
        }
    }
}

impl S3Config {
    /// The secret access key: `secret_access_key`, or the first line of
    /// `secret_access_key_file`; never in an error message.
    pub fn resolved_secret(&self) -> Result<String, String> {
        let file = &self.secret_access_key_file;
        match (
            file.as_os_str().is_empty(),
            self.secret_access_key.is_empty(),
        ) {
            (false, false) => {
                Err("files.s3: set secret_access_key or secret_access_key_file, not both".into())
            }
            (true, true) => Err(
                "files.s3.secret_access_key: required (or secret_access_key_file, or the \
                 RINGCHAT_FILES__S3__SECRET_ACCESS_KEY environment variable)"
                    .into(),
            ),
            (true, false) => Ok(self.secret_access_key.clone()),
            (false, true) => std::fs::read_to_string(file)
                .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
                .map_err(|e| format!("files.s3.secret_access_key_file: {}: {e}", file.display())),
        }
    }

    /// Every problem of the section, as `key: problem` lines (checked with storage = "s3").
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.bucket.is_empty() {
            out.push("files.s3.bucket: required".into());
        }
        if self.region.is_empty() {
            out.push("files.s3.region: required (any name for a server that ignores it)".into());
        }
        if self.access_key_id.is_empty() {
            out.push("files.s3.access_key_id: required".into());
        }
        if let Err(e) = self.resolved_secret() {
            out.push(e);
        }
        if !self.key_prefix.is_empty() && !valid_key(self.key_prefix.trim_end_matches('/')) {
            out.push(
                "files.s3.key_prefix: `/`-separated segments of a-z, 0-9, `.`, `_`, `-`".into(),
            );
        }
        if !self.endpoint.is_empty() {
            match self.endpoint.split_once("://") {
                Some(("https", _)) => {}
                Some(("http", rest)) => {
                    if !self.allow_http {
                        out.push(
                            "files.s3.endpoint: http:// needs allow_http = true (loopback only)"
                                .into(),
                        );
                    } else if !is_loopback_host(rest) {
                        out.push(
                            "files.s3.allow_http: plain HTTP only to a loopback endpoint \
                             (127.0.0.1, ::1, localhost); use https"
                                .into(),
                        );
                    }
                }
                _ => out.push("files.s3.endpoint: an https:// (or http:// on loopback) URL".into()),
            }
        }
        if !(1..=600_000).contains(&self.request_timeout_ms) {
            out.push("files.s3.request_timeout_ms: must be between 1 and 600000".into());
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            out.push("files.s3.connect_timeout_ms: must be between 1 and 600000".into());
        }
        if self.retries_max > 20 {
            out.push("files.s3.retries_max: must be at most 20".into());
        }
        if self.retry_timeout_ms > 600_000 {
            out.push("files.s3.retry_timeout_ms: must be at most 600000".into());
        }
        if !(PART_BYTES_MIN..=PART_BYTES_MAX).contains(&self.part_bytes) {
            out.push(format!(
                "files.s3.part_bytes: must be between {PART_BYTES_MIN} (S3's minimum) and \
                 {PART_BYTES_MAX}"
            ));
        }
        if !(1..=16).contains(&self.parts_in_flight_max) {
            out.push("files.s3.parts_in_flight_max: must be between 1 and 16".into());
        }
        out
    }
}

/// `host[:port][/…]` names a loopback address.
fn is_loopback_host(after_scheme: &str) -> bool {
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Objects in an S3-compatible bucket.
pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    /// `key_prefix` with a trailing `/` (or empty).
    root: String,
    part_bytes: usize,
    parts_in_flight_max: usize,
}

impl S3Storage {
    /// Builds the client (no request is made: a wrong bucket or key shows at the first call).
    pub fn open(config: &S3Config) -> Result<Self, String> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let secret = config.resolved_secret()?;
        let client = ClientOptions::new()
            .with_timeout(Duration::from_millis(config.request_timeout_ms))
            .with_connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .with_allow_http(config.allow_http);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: config.retries_max,
            retry_timeout: Duration::from_millis(config.retry_timeout_ms),
        };
        let mut builder = AmazonS3Builder::new()
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_allow_http(config.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        let store = builder.build().map_err(|e| {
            format!(
                "files.s3: {}",
                redact(&e.to_string(), &config.access_key_id)
            )
        })?;
        let prefix = config.key_prefix.trim_end_matches('/');
        Ok(Self {
            store: Arc::new(store),
            root: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_bytes: config.part_bytes,
            parts_in_flight_max: config.parts_in_flight_max,
        })
    }

    fn path(&self, key: &str) -> Result<Path, StorageError> {
        if !valid_key(key) {
            return Err(StorageError::Failed(format!("not a storage key: {key:?}")));
        }
        Path::parse(format!("{}{key}", self.root))
            .map_err(|e| StorageError::Failed(format!("not a storage key: {key:?}: {e}")))
    }

    /// A range S3 would not serve (an empty one, or one starting at the end, which S3 answers
    /// 416): `BadRange` when it starts past the object's end, else no bytes; `err` (the
    /// request's own failure) when the object's size does not explain it.
    async fn no_bytes_or_bad_range(
        &self,
        path: &Path,
        range: &Range<u64>,
        err: Option<StorageError>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let meta = self.store.head(path).await.map_err(map_err)?;
        if range.start > meta.size {
            Err(StorageError::BadRange)
        } else if range.start == meta.size || range.start >= range.end {
            Ok((meta_of(&meta), futures_util::stream::empty().boxed()))
        } else {
            Err(err.unwrap_or_else(|| StorageError::Failed("the range was refused".into())))
        }
    }
}

/// Keeps the access key id out of error text (the secret never reaches it).
fn redact(text: &str, access_key_id: &str) -> String {
    if access_key_id.is_empty() {
        text.to_owned()
    } else {
        text.replace(access_key_id, "(access key id)")
    }
}

/// S3 error codes (the answer's `<Code>`) that S3 and its look-alikes give for a full bucket or
/// quota; a 507 status says the same.
const FULL_CODES: [&str; 3] = ["QuotaExceeded", "XMinioStorageFull", "EntityTooLarge"];

fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        e if storage_full(&e) => StorageError::Full,
        e => StorageError::Failed(e.to_string()),
    }
}

/// Whether the server answered "full", judged from its answer alone: the status and the S3
/// error code. Never a substring of the whole message, which holds URIs (`chunks/00000507`)
/// and times (`30.001507s`).
fn storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some((status, body)) = server_answer(&err.to_string()) {
            return status == Some(507)
                || error_code(body).is_some_and(|c| FULL_CODES.contains(&c));
        }
        next = err.source();
    }
    false
}

/// The status and body of a server's answer, from object_store's request error (the innermost
/// error of a request the server refused; object_store exports no type to downcast to, so its
/// two fixed forms are read): `Server returned non-2xx status code: {status}: {body}` and
/// `Server returned error response: {body}`. `None` for any other error.
fn server_answer(text: &str) -> Option<(Option<u16>, &str)> {
    if let Some(rest) = text.strip_prefix("Server returned non-2xx status code: ") {
        let (status, body) = rest.split_once(": ").unwrap_or((rest, ""));
        let code = status.split(' ').next().and_then(|s| s.parse().ok());
        return Some((code, body));
    }
    text.strip_prefix("Server returned error response: ")
        .map(|body| (None, body))
}

/// The `<Code>` of an S3 error answer.
fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(&body[start..start + len])
}

fn meta_of(meta: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size_bytes: meta.size,
        modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[async_trait::async_trait]
impl FileStorage for S3Storage {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(S3Writer {
            store: self.store.clone(),
            path: self.path(key)?,
            part_bytes: self.part_bytes,
            parts_in_flight_max: self.parts_in_flight_max,
            buffered: Vec::new(),
            buffered_bytes: 0,
            written_bytes: 0,
            upload: None,
        }))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let path = self.path(key)?;
        let Some(range) = range else {
            let result = self.store.get(&path).await.map_err(map_err)?;
            let meta = meta_of(&result.meta);
            return Ok((
                meta,
                result.into_stream().map(|r| r.map_err(map_err)).boxed(),
            ));
        };
        if range.start >= range.end {
            // S3 has no empty range.
            return self.no_bytes_or_bad_range(&path, &range, None).await;
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, options).await {
            Ok(result) => {
                let meta = meta_of(&result.meta);
                Ok((
                    meta,
                    result.into_stream().map(|r| r.map_err(map_err)).boxed(),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NotFound),
            // A 416 comes back as a generic error: tell it apart by the object's size.
            Err(e) => {
                self.no_bytes_or_bad_range(&path, &range, Some(map_err(e)))
                    .await
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let path = self.path(key)?;
        let meta = self.store.head(&path).await.map_err(map_err)?;
        Ok(meta_of(&meta))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // object_store lists whole path segments: list the prefix's directory and keep the
        // keys that start with the prefix (the same when it ends with `/`).
        let full_prefix = format!("{}{prefix}", self.root);
        let dir = match full_prefix.rfind('/') {
            Some(i) => &full_prefix[..i],
            None => "",
        };
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(
                Path::parse(dir)
                    .map_err(|e| StorageError::Failed(format!("not a prefix: {prefix:?}: {e}")))?,
            )
        };
        // Start after `after`, or just before the prefix (S3's start-after is exclusive).
        let offset = match after {
            Some(after) if format!("{}{after}", self.root) > full_prefix => {
                Some(format!("{}{after}", self.root))
            }
            _ => None,
        };
        let mut stream = match offset {
            Some(offset) => {
                let offset = Path::parse(&offset)
                    .map_err(|e| StorageError::Failed(format!("not a key: {after:?}: {e}")))?;
                self.store.list_with_offset(dir_path.as_ref(), &offset)
            }
            None => self.store.list(dir_path.as_ref()),
        };
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(map_err)?;
            let location = meta.location.as_ref();
            if !location.starts_with(&full_prefix) {
                if location > full_prefix.as_str() {
                    break; // sorted: past every key with the prefix
                }
                continue;
            }
            out.push(Listed {
                key: location[self.root.len()..].to_owned(),
                meta: meta_of(&meta),
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// An object being written: bytes are buffered up to one part; past it, a multipart upload
/// with at most `parts_in_flight_max` parts sent at once. A small object is one PUT at
/// `finish`.
struct S3Writer {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_bytes: usize,
    parts_in_flight_max: usize,
    /// Bytes not sent yet (less than one part between calls).
    buffered: Vec<Bytes>,
    buffered_bytes: usize,
    written_bytes: u64,
    upload: Option<Multipart>,
}

/// A multipart upload under way, its parts sent as tasks. Ours rather than object_store's
/// `WriteMultipart`, whose `finish` returns a failed part's error without aborting the upload
/// (and, the upload moved into it, our drop could not abort either): the parts stayed in the
/// bucket until its lifecycle rule.
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    parts: tokio::task::JoinSet<object_store::Result<()>>,
}

impl Multipart {
    fn send(&mut self, part: PutPayload) {
        self.parts.spawn(self.upload.put_part(part));
    }

    /// Waits until fewer than `max` parts are in flight (none for 0); the first failure.
    async fn wait_below(&mut self, max: usize) -> object_store::Result<()> {
        while !self.parts.is_empty() && self.parts.len() >= max {
            if let Some(done) = self.parts.join_next().await {
                done??;
            }
        }
        Ok(())
    }

    /// The rest sent, every part waited for, then the upload completed.
    async fn complete(&mut self, rest: Option<PutPayload>) -> object_store::Result<()> {
        if let Some(rest) = rest {
            self.send(rest);
        }
        self.wait_below(0).await?;
        self.upload.complete().await.map(drop)
    }

    async fn abort(mut self) -> object_store::Result<()> {
        self.parts.shutdown().await;
        self.upload.abort().await
    }
}

impl S3Writer {
    /// The first `n` buffered bytes as one payload (`n` at most what is buffered).
    fn take_part(&mut self, n: usize) -> PutPayload {
        let mut part = Vec::new();
        let mut taken = 0;
        while taken < n {
            let mut piece = self.buffered.remove(0);
            if taken + piece.len() > n {
                let rest = piece.split_off(n - taken);
                self.buffered.insert(0, rest);
            }
            taken += piece.len();
            part.push(piece);
        }
        self.buffered_bytes -= taken;
        part.into_iter().collect()
    }
}

#[async_trait::async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.written_bytes += bytes.len() as u64;
        self.buffered_bytes += bytes.len();
        self.buffered.push(bytes);
        while self.buffered_bytes >= self.part_bytes {
            if self.upload.is_none() {
                let upload = self
                    .store
                    .put_multipart(&self.path)
                    .await
                    .map_err(map_err)?;
                self.upload = Some(Multipart {
                    upload,
                    parts: tokio::task::JoinSet::new(),
                });
            }
            let part = self.take_part(self.part_bytes);
            let upload = self.upload.as_mut().expect("started above");
            upload
                .wait_below(self.parts_in_flight_max)
                .await
                .map_err(map_err)?;
            upload.send(part);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        let rest: PutPayload = std::mem::take(&mut self.buffered).into_iter().collect();
        match self.upload.take() {
            Some(mut upload) => {
                let rest = (self.buffered_bytes > 0).then_some(rest);
                if let Err(e) = upload.complete(rest).await {
                    // Any failure, a part's or the complete's: the parts go now.
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(error = %abort, "files: aborting a failed S3 multipart upload failed");
                    }
                    return Err(map_err(e));
                }
            }
            None => {
                self.store.put(&self.path, rest).await.map_err(map_err)?;
            }
        }
        Ok(ObjectMeta {
            size_bytes: self.written_bytes,
            modified_ms: now_ms(),
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        match self.upload.take() {
            Some(upload) => upload.abort().await.map_err(map_err),
            None => Ok(()),
        }
    }
}

impl Drop for S3Writer {
    /// Dropped mid-upload (the request was cut): abort the multipart upload in the background
    /// so its parts do not linger until the bucket's lifecycle rule.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "files: aborting an abandoned S3 multipart upload failed");
                }
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::files::storage::conformance::{Subject, storage_conformance};

    /// The test bucket's config (`scripts/s3-test-server.sh` starts the server and exports
    /// these), with a key prefix of its own per call; `None`, said loudly, when it is absent
    /// outside CI.
    pub(crate) fn test_config() -> Option<S3Config> {
        let Ok(url) = std::env::var("RINGCHAT_TEST_S3_URL") else {
            // In CI the server is always started: a missing one there is a broken script.
            assert!(
                std::env::var_os("CI").is_none(),
                "RINGCHAT_TEST_S3_URL is not set under CI: scripts/test.sh must start the S3 \
                 test server (scripts/s3-test-server.sh)"
            );
            eprintln!(
                "SKIPPED: RINGCHAT_TEST_S3_URL is not set, so the S3 adapter is not tested here \
                 (`bash scripts/test.sh` and .ci/run start a server; by hand: \
                 `source scripts/s3-test-server.sh`)"
            );
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} is not set (beside RINGCHAT_TEST_S3_URL)"))
        };
        let mut unique = [0u8; 8];
        getrandom::fill(&mut unique).unwrap();
        let unique: String = unique.iter().map(|b| format!("{b:02x}")).collect();
        Some(S3Config {
            endpoint: url,
            region: var("RINGCHAT_TEST_S3_REGION"),
            bucket: var("RINGCHAT_TEST_S3_BUCKET"),
            key_prefix: format!("test-{unique}"),
            access_key_id: var("RINGCHAT_TEST_S3_ACCESS_KEY_ID"),
            secret_access_key: var("RINGCHAT_TEST_S3_SECRET_ACCESS_KEY"),
            allow_http: true,
            // The smallest parts S3 allows, so that 12 MiB takes three.
            part_bytes: PART_BYTES_MIN,
            ..S3Config::default()
        })
    }

    async fn subject() -> Option<Subject> {
        let config = test_config()?;
        Some(Subject {
            storage: Box::new(S3Storage::open(&config).unwrap()),
            guard: Box::new(()),
        })
    }

    storage_conformance!(subject);

    /// Another prefix in the same bucket is another storage: nothing crosses.
    #[tokio::test]
    async fn key_prefixes_keep_storages_apart() {
        let (Some(a), Some(b)) = (test_config(), test_config()) else {
            return;
        };
        let (a, b) = (S3Storage::open(&a).unwrap(), S3Storage::open(&b).unwrap());
        a.put("same/key", Bytes::from_static(b"a")).await.unwrap();
        assert!(matches!(
            b.head("same/key").await,
            Err(StorageError::NotFound)
        ));
        assert!(b.list("", None, 10).await.unwrap().is_empty());
        assert_eq!(a.list("", None, 10).await.unwrap().len(), 1);
    }

    /// A server that answers nothing fails each call within the deadline, retries included.
    #[tokio::test]
    async fn an_unresponsive_server_fails_within_the_deadline() {
        // Accepts connections (the kernel's backlog) and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = S3Config {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            bucket: "b".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            allow_http: true,
            request_timeout_ms: 300,
            retries_max: 1,
            retry_timeout_ms: 1_000,
            ..S3Config::default()
        };
        let storage = S3Storage::open(&config).unwrap();
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(20), storage.head("a/b")).await;
        match result {
            Ok(Err(StorageError::Failed(_))) => {}
            Ok(other) => panic!("expected a failure, got {other:?}"),
            Err(_) => panic!("no answer in 20 s: the request deadline is not applied"),
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        drop(listener);
    }

    #[test]
    fn config_problems() {
        let good = S3Config {
            endpoint: "https://s3.example.com".into(),
            bucket: "b".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            ..S3Config::default()
        };
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        let with = |f: &dyn Fn(&mut S3Config)| {
            let mut c = good.clone();
            f(&mut c);
            c.problems().join("\n")
        };
        assert!(with(&|c| c.endpoint = "http://s3.example.com".into()).contains("allow_http"));
        assert!(
            with(&|c| {
                c.endpoint = "http://10.0.0.1:9000".into();
                c.allow_http = true;
            })
            .contains("loopback")
        );
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
        ] {
            assert_eq!(
                with(&|c| {
                    c.endpoint = ok.into();
                    c.allow_http = true;
                }),
                "",
                "{ok}"
            );
        }
        assert!(with(&|c| c.part_bytes = 1 << 20).contains("part_bytes"));
        assert!(with(&|c| c.bucket.clear()).contains("bucket"));
        assert!(with(&|c| c.secret_access_key.clear()).contains("secret_access_key"));
        assert!(with(&|c| c.key_prefix = "Bad Prefix".into()).contains("key_prefix"));
        assert_eq!(with(&|c| c.key_prefix = "ringchat/".into()), "");
    }

    #[test]
    fn the_secret_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let mut config = S3Config {
            secret_access_key: "very-secret".into(),
            ..S3Config::default()
        };
        let shown = serde_json::to_string(&config).unwrap();
        assert!(
            !shown.contains("very-secret") && shown.contains("(hidden)"),
            "{shown}"
        );
        assert!(!format!("{config:?}").contains("very-secret"));
        config.secret_access_key.clear();
        config.secret_access_key_file = file;
        assert_eq!(config.resolved_secret().unwrap(), "from-the-file");
        assert!(!format!("{:?}", config.problems()).contains("from-the-file"));
    }

    #[tokio::test]
    async fn keys_outside_the_service_layout_are_refused() {
        let config = S3Config {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            allow_http: true,
            ..S3Config::default()
        };
        let storage = S3Storage::open(&config).unwrap();
        for key in ["", "a//b", "../a", "a/./b", "A/b", "a b", "/a"] {
            assert!(
                matches!(storage.head(key).await, Err(StorageError::Failed(e)) if e.contains("not a storage key")),
                "{key:?}"
            );
        }
    }
}

#[cfg(test)]
mod full_tests;
