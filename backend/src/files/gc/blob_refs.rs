//! The second half of a sweep: records at blobs (`blobs/xx/{sha256}.refs/{file_id}`) whose file
//! never came to be. A complete writes its record at the blob first and the file's meta last;
//! one cut short in between (the server killed, a storage error, a failed thumbnail step) left
//! a record that nothing removed, and it kept the blob, uncounted in any quota, for ever. Such
//! a record goes once it is older than the grace and its file has neither `meta.json` nor
//! `collecting.json`; the blob goes with its last record, under the blob's lock, as in a
//! collection. A complete may well take longer than the grace (a multi-GiB file, a grace of a
//! minute): it puts its record back and looks for the blob after writing its meta
//! (`FileService::keep_blob`), and the record's removal here looks for the meta again after
//! the delete, so one of the two sees the other's write.

use super::{FileService, GcPass};
use crate::files::error::FileError;
use crate::files::model::keys;
use crate::files::storage::{Listed, StorageError};

/// Where the blobs' half of a sweep starts: every key under `blobs/` sorts after it.
pub(super) const START: &str = "blobs/";

impl FileService {
    /// One key under `blobs/` (the paged walk is `FileService::gc_pages`): a blob's record
    /// past the grace is looked at; the walk goes on past the key.
    pub(super) async fn gc_blob_refs_key(
        &self,
        listed: Listed,
        now: u64,
        pass: &mut GcPass,
    ) -> Option<String> {
        if let Some((sha256, file_id)) = keys::blob_ref_of_key(&listed.key)
            && listed.meta.modified_ms.saturating_add(self.grace_ms()) <= now
            && let Err(err) = self.gc_blob_ref(sha256, file_id, pass).await
        {
            pass.errors += 1;
            tracing::warn!(key = listed.key, %err, "files gc: blob record skipped");
        }
        Some(listed.key)
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
        let record = keys::blob_ref(sha256, file_id);
        self.storage.delete(&record).await?;
        pass.keys += 2;
        // A slow complete writes its meta, then its record again: looked for after the
        // delete, a meta written meanwhile puts the record back.
        match self.storage.head(&keys::file_meta(file_id)).await {
            Ok(_) => {
                pass.keys += 1;
                self.storage.put(&record, bytes::Bytes::new()).await?;
                return Ok(());
            }
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.drop_blob_if_unreferenced(sha256, pass).await?;
        pass.markers_dropped += 1;
        tracing::info!(file_id, "files gc: a blob's record with no file removed");
        Ok(())
    }
}
