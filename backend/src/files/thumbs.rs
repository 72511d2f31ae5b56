//! An image file's thumbnail: made once, when its upload completes, and stored beside it
//! (`files/{file_id}/thumb`). A thumbnail is a nicety: an image that cannot have one (too big,
//! a decompression bomb, not really an image) is still a file, just without it.

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt as _;

use super::error::FileError;
use super::model::{FileMeta, Thumb, keys};
use super::service::FileService;
use super::storage::ByteStream;
use super::thumbnail;

/// How long a completing upload waits for its turn to make a thumbnail.
const THUMB_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl FileService {
    /// Makes and stores the thumbnail of the image at `blob` (`size` bytes) for `file_id`;
    /// `None` for a file that is not an image or gets none (logged).
    pub(super) async fn make_thumb(
        &self,
        file_id: &str,
        mime: &str,
        blob: &str,
        size: u64,
    ) -> Option<Thumb> {
        let config = &self.config.thumbnail;
        if !mime.starts_with("image/") || size > config.source_bytes_max as u64 {
            return None;
        }
        let made = async {
            // The source in memory and its decode: one image at a time. A thumbnail is a
            // nicety: when others hold the turn too long, this image goes without.
            let decoding = tokio::time::timeout(THUMB_TURN_WAIT, self.thumb_permits.acquire())
                .await
                .map_err(|_| "other thumbnails are being made".to_owned())?
                .map_err(|e| e.to_string())?;
            let (_, pieces) = self
                .storage
                .get(blob, None)
                .await
                .map_err(|e| e.to_string())?;
            let source: BytesMut = pieces
                .try_fold(
                    BytesMut::with_capacity(size as usize),
                    |mut all, piece| async move {
                        all.extend_from_slice(&piece);
                        Ok(all)
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let config = config.clone();
            // CPU-bound, tens of milliseconds: off the runtime's workers.
            let thumb = tokio::task::spawn_blocking(move || thumbnail::make(&source, &config))
                .await
                .map_err(|e| format!("thumbnail task: {e}"))?
                .map_err(|e| e.to_string())?;
            drop(decoding);
            self.storage
                .put(&keys::thumb(file_id), Bytes::from(thumb.bytes))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Thumb {
                width: thumb.width,
                height: thumb.height,
                mime: thumb.mime.to_owned(),
            })
        };
        match made.await {
            Ok(thumb) => Some(thumb),
            Err(why) => {
                tracing::info!(file_id, %why, "no thumbnail for this image");
                None
            }
        }
    }

    /// The thumbnail of a file the caller may download ([`FileService::download_meta`]):
    /// its description and bytes; `NotFound` when the file has none.
    pub async fn read_thumb(&self, meta: &FileMeta) -> Result<(Thumb, ByteStream), FileError> {
        let thumb = meta.thumb.clone().ok_or(FileError::NotFound)?;
        let (_, stream) = self.storage.get(&keys::thumb(&meta.file_id), None).await?;
        Ok((thumb, stream))
    }
}
