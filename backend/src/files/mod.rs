//! Files and media (issue 15): uploads in chunks over HTTP on the client listeners, downloads
//! with ranges, and the storage port the bytes live behind.
//!
//! - `config.rs`: `[files]`. `model.rs`: the records kept in storage, their keys, name rules.
//! - `service.rs`: uploads (create, chunks, complete) and limits (`blocking_hash.rs`: the
//!   assembly's hashing, off the runtime's workers); `download.rs`: who may read a
//!   file, and its bytes; `cleanup.rs`: abandoned uploads removed in bounded passes.
//! - `refs.rs`: which messages reference a file (markers written at send); `gc.rs`: the
//!   collector of files no message references and blobs no file is made of.
//! - `http.rs`: the `/files` routes (axum), refusals as JSON with their HTTP status.
//! - `media.rs`: the FileRef of media messages, checked when sent, and who may download a file
//!   through a message that carries it (the `DownloadAccess` the service calls).
//! - `storage/`: the port, the local disk adapter (`storage/local.rs`), the S3 one
//!   (`storage/s3.rs`), and the conformance suite every adapter passes.
//! - `thumbnail.rs`: image thumbnails, decoded within limits; `thumbs.rs`: made once per image
//!   file at complete, stored beside it.

mod blocking_hash;
mod cleanup;
pub mod config;
mod download;
mod error;
mod gc;
pub mod http;
pub mod media;
pub(crate) mod metrics;
mod model;
pub mod refs;
mod service;
pub mod storage;
pub mod thumbnail;
mod thumbs;

pub use cleanup::{CLEANUP_INTERVAL, CleanupPass};
pub use config::{FileStorageKind, FilesConfig};
pub use download::{DownloadAccess, UploaderOnly, Via};
pub use error::FileError;
pub use gc::{GcPass, STEP_KEYS_MAX};
pub use model::{FileMeta, NewUpload, Thumb};
pub use service::{Created, FileService};

use std::sync::Arc;

/// The service on the storage `config` names (`dir` relative to `data_dir` by default).
pub fn open(
    config: &FilesConfig,
    data_dir: &std::path::Path,
) -> Result<Arc<FileService>, storage::StorageError> {
    let storage: Arc<dyn storage::FileStorage> = match config.storage {
        FileStorageKind::Local => Arc::new(storage::local::LocalStorage::open(
            &config.local_dir(data_dir),
        )?),
        FileStorageKind::S3 => Arc::new(
            storage::s3::S3Storage::open(&config.s3).map_err(storage::StorageError::Failed)?,
        ),
    };
    Ok(Arc::new(FileService::new(storage, config.clone())))
}
