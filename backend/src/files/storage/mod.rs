//! The file storage port: where uploaded chunks, finished files and their sidecar metadata live.
//! Local disk by default (one box), S3-compatible object storage for clusters (every node sees
//! every file). The files service is the only caller and makes every key itself: keys are
//! `/`-separated relative paths of `[a-z0-9._-]` segments, never text a client sent.
//!
//! The shape follows object storage, the less capable of the two: whole objects put at once,
//! large ones written through an [`ObjectWriter`] (a multipart upload on S3), byte ranges read
//! back, listing by key prefix. Nothing is visible under a key until it is complete and durable.

#[cfg(test)]
pub(crate) mod conformance;
pub mod s3;

use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub mod local;

/// The key rule every adapter enforces: `/`-separated segments of `[a-z0-9._-]`, none empty
/// or starting with `.` (so no `.`/`..` and nothing that names an adapter's own hidden place,
/// such as the local adapter's `.tmp/`).
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.split('/').all(valid_segment)
}

/// One segment of a key ([`valid_key`]).
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// What went wrong in storage. No engine types: the adapters map their own errors here.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no object at this key")]
    NotFound,
    /// The disk or bucket refused for lack of space or quota (ENOSPC, EDQUOT, S3 507/quota).
    #[error("storage is full")]
    Full,
    /// A range that starts past the object's end.
    #[error("range outside the object")]
    BadRange,
    /// Anything else: an I/O error, a refused or timed-out request to object storage.
    #[error("storage failed: {0}")]
    Failed(String),
}

/// An object's size and when it was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size_bytes: u64,
    pub modified_ms: u64,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub meta: ObjectMeta,
}

/// The bytes of an object, in pieces of a size the adapter chooses (bounded by it).
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

#[async_trait::async_trait]
pub trait FileStorage: Send + Sync + 'static {
    /// Stores `bytes` under `key`, durably, replacing what was there: visible whole or not at all.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError>;

    /// Starts writing an object of any size under `key`; nothing is visible there until
    /// [`ObjectWriter::finish`] returns (then durably).
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// The object's metadata and its bytes in `range` (all of them for `None`); `BadRange` when
    /// the range starts past the end, and an end past the end is cut to it.
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError>;

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError>;

    /// Up to `limit` objects whose keys start with `prefix` (at any depth) and sort after
    /// `after`, in key order: a page; the caller pages on with the last key.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError>;

    /// Removes the object; an absent one is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// [`Self::list`] for a walk over many pages (the collector's, the cleanup's): a page may
    /// miss a key made in the last few seconds (for the local adapter, under a directory an
    /// earlier page of the walk read), so that each page costs about its own keys rather than
    /// a read of every directory on its way. Only for walks to which a key that new means
    /// nothing yet (it is young: the next walk sees it).
    async fn list_walk(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        self.list(prefix, after, limit).await
    }
}

/// An object being written: bytes go in order; `finish` makes it visible and durable,
/// `abort` (or a drop without either) leaves nothing under the key.
#[async_trait::async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError>;
    async fn finish(self: Box<Self>) -> Result<ObjectMeta, StorageError>;
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
}
