//! The second half of a sweep: records at blobs (`blobs/xx/{sha256}.refs/{file_id}`) whose file
//! never came to be. A complete writes its record at the blob first and the file's meta last;
//! one cut short in between (the server killed, a storage error, a failed thumbnail step) left
//! a record that nothing removed, and it kept the blob, uncounted in any quota, for ever. Such
//! a record goes once it is older than the grace (no complete takes that long) and its file
//! has neither `meta.json` nor `collecting.json`; the blob goes with its last record, under the
//! blob's lock, as in a collection.

use super::{FileService, GcPass, LIST_PAGE};
use crate::files::error::FileError;
use crate::files::model::keys;
use crate::files::storage::StorageError;

/// Where the blobs' half of a sweep starts: every key under `blobs/` sorts after it.
pub(super) const START: &str = "blobs/";

impl FileService {
    /// Walks `blobs/` from `cursor` while the pass has room; at its end the sweep is done.
    pub(super) async fn gc_blob_refs(
        &self,
        now: u64,
        cursor: &mut Option<String>,
        pass: &mut GcPass,
    ) -> Result<(), FileError> {
        while self.gc_room(pass) > 0 {
            let limit = self.gc_room(pass).clamp(1, LIST_PAGE);
            let page = self.storage.list(START, cursor.as_deref(), limit).await?;
            pass.keys += 1;
            if page.is_empty() {
                *cursor = None;
                pass.wrapped = true;
                return Ok(());
            }
            for listed in page {
                if self.gc_room(pass) == 0 {
                    return Ok(());
                }
                if let Some((sha256, file_id)) = keys::blob_ref_of_key(&listed.key)
                    && listed.meta.modified_ms.saturating_add(self.grace_ms()) <= now
                    && let Err(err) = self.gc_blob_ref(sha256, file_id, pass).await
                {
                    pass.errors += 1;
                    tracing::warn!(key = listed.key, %err, "files gc: blob record skipped");
                }
                *cursor = Some(listed.key);
            }
        }
        Ok(())
    }

    /// Removes the record if its file is not there, and the blob if it was its last.
    async fn gc_blob_ref(
        &self,
        sha256: &str,
        file_id: &str,
        pass: &mut GcPass,
    ) -> Result<(), FileError> {
        for key in [keys::file_meta(file_id), keys::file_collecting(file_id)] {
            pass.keys += 1;
            match self.storage.head(&key).await {
                Ok(_) => return Ok(()),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.drop_blob_ref(sha256, file_id, pass).await?;
        pass.markers_dropped += 1;
        tracing::info!(file_id, "files gc: a blob's record with no file removed");
        Ok(())
    }
}
