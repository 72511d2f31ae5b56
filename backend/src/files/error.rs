//! What the files service refuses, and how each refusal reads over HTTP.

use super::storage::StorageError;

/// A refused or failed files operation. Each variant has one HTTP status and one stable
/// `code` for clients ([`FileError::status`], [`FileError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Bad input: a name, size, type, hash, chunk index or chunk length the rules refuse.
    #[error("{message}")]
    BadInput { code: &'static str, message: String },
    /// No such upload or file — or one this user may not see (the answer does not say which).
    #[error("no such upload or file")]
    NotFound,
    /// A chunk whose bytes do not hash to its `X-Chunk-Sha256`: not stored; send it again.
    #[error("the chunk's bytes do not match its X-Chunk-Sha256")]
    ChunkMismatch,
    /// The assembled file does not hash to the SHA-256 given at creation: the upload is
    /// discarded (every chunk matched its own checksum, so the client sent other bytes than
    /// the file it described) and a new one must be created.
    #[error("the file's bytes do not match the sha256 given at creation; the upload is discarded")]
    FileMismatch,
    /// Complete before every chunk is present.
    #[error("{missing} of {total} chunks are missing")]
    ChunksMissing { missing: u64, total: u64 },
    /// Another complete of this upload is running: retry it.
    #[error("this upload is being completed; retry")]
    Completing,
    #[error("the file is over {max} bytes")]
    TooLarge { max: u64 },
    #[error("the chunk is over {max} bytes")]
    ChunkTooLarge { max: u64 },
    #[error("over the quota of {quota} bytes ({used} used or reserved by uploads in progress)")]
    OverQuota { quota: u64, used: u64 },
    #[error("{max} uploads are already in progress; complete or abandon one")]
    TooManyUploads { max: u32 },
    #[error("{max} files kept already (a file no message carries is removed by the collector)")]
    TooManyFiles { max: u32 },
    /// A range that starts past the end of the file (the size is for `Content-Range`).
    #[error("the range is outside the file")]
    BadRange { size: u64 },
    /// The request's body did not arrive within its time (`files.body_bytes_per_s_min`).
    #[error("the request body did not arrive within {ms} ms")]
    BodyTimeout { ms: u64 },
    /// Too many chunk bodies being received on this node: retry shortly.
    #[error("the server is receiving too many chunks; retry shortly")]
    Busy,
    /// `files.completes_in_flight_max` uploads are being completed on this node: retry the
    /// complete shortly.
    #[error(
        "{max} uploads are being completed on this server (files.completes_in_flight_max); retry the complete shortly"
    )]
    CompletesBusy { max: usize },
    /// Another node is creating an upload for this user (cluster mode: the limits are
    /// checked one create at a time per user): retry shortly.
    #[error("another upload of this user is being created on another server; retry shortly")]
    CreatesBusy,
    #[error("file storage is full")]
    Full,
    #[error("file storage is unavailable: {0}")]
    Unavailable(String),
}

impl FileError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadInput {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadInput { .. } | Self::ChunkMismatch => 400,
            Self::NotFound => 404,
            Self::FileMismatch | Self::ChunksMissing { .. } | Self::Completing => 409,
            Self::TooLarge { .. }
            | Self::ChunkTooLarge { .. }
            | Self::OverQuota { .. }
            | Self::TooManyFiles { .. } => 413,
            Self::BodyTimeout { .. } => 408,
            Self::BadRange { .. } => 416,
            Self::TooManyUploads { .. } => 429,
            Self::Busy | Self::CompletesBusy { .. } | Self::CreatesBusy | Self::Unavailable(_) => {
                503
            }
            Self::Full => 507,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadInput { code, .. } => code,
            Self::NotFound => "not_found",
            Self::ChunkMismatch => "chunk_sha256_mismatch",
            Self::FileMismatch => "sha256_mismatch",
            Self::ChunksMissing { .. } => "chunks_missing",
            Self::Completing => "completing",
            Self::TooLarge { .. } => "file_too_large",
            Self::ChunkTooLarge { .. } => "chunk_too_large",
            Self::OverQuota { .. } => "over_quota",
            Self::TooManyUploads { .. } => "too_many_uploads",
            Self::TooManyFiles { .. } => "too_many_files",
            Self::BadRange { .. } => "bad_range",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Busy | Self::CompletesBusy { .. } | Self::CreatesBusy => "busy",
            Self::Full => "storage_full",
            Self::Unavailable(_) => "storage_unavailable",
        }
    }
}

impl From<StorageError> for FileError {
    fn from(e: StorageError) -> Self {
        match e {
            // The service heads what it reads first; a key gone meanwhile was removed under it.
            StorageError::NotFound => Self::NotFound,
            StorageError::Full => Self::Full,
            StorageError::BadRange => Self::Unavailable("range refused by storage".into()),
            StorageError::Failed(why) => Self::Unavailable(why),
        }
    }
}
