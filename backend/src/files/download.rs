//! Downloads: who may read a finished file, and its bytes (a range of them) as a stream.

use std::ops::Range;

use futures_util::StreamExt as _;

use super::error::FileError;
use super::model::{FileMeta, keys};
use super::service::FileService;
use super::storage::ByteStream;
use crate::api::UserId;

/// Where a user who is not the uploader saw the file: a message in a conversation
/// (`?c={conversation_id}&s={seq}` on the download).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub conversation_id: u64,
    pub seq: u64,
}

/// Whether a user other than the uploader may download a file. files-media implements it
/// (the message at `via` is visible to the user and carries a reference to the file).
#[async_trait::async_trait]
pub trait DownloadAccess: Send + Sync + 'static {
    async fn may_download(
        &self,
        user: UserId,
        file: &FileMeta,
        via: Via,
    ) -> Result<bool, FileError>;
}

/// Until conversations can carry files: only the uploader downloads.
pub struct UploaderOnly;

#[async_trait::async_trait]
impl DownloadAccess for UploaderOnly {
    async fn may_download(&self, _: UserId, _: &FileMeta, _: Via) -> Result<bool, FileError> {
        Ok(false)
    }
}

impl FileService {
    /// The file's metadata if `user` may download it; `NotFound` both when there is no such
    /// file and when the user may not see it.
    pub async fn download_meta(
        &self,
        user: UserId,
        file_id: &str,
        via: Option<Via>,
    ) -> Result<FileMeta, FileError> {
        let meta = self.file(file_id).await?.ok_or(FileError::NotFound)?;
        if meta.uploader == user {
            return Ok(meta);
        }
        match via {
            Some(via)
                if self
                    .download_access()
                    .may_download(user, &meta, via)
                    .await? =>
            {
                Ok(meta)
            }
            _ => Err(FileError::NotFound),
        }
    }

    /// The file's bytes in `range` (all for `None`), in bounded pieces.
    pub async fn read(
        &self,
        meta: &FileMeta,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, FileError> {
        let (_, stream) = self.storage.get(&keys::blob(&meta.sha256), range).await?;
        Ok(stream
            .inspect(|piece| {
                if let Ok(piece) = piece {
                    metrics::counter!(super::metrics::BYTES_OUT).increment(piece.len() as u64);
                }
            })
            .boxed())
    }
}
