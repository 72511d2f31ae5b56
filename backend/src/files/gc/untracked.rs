//! Files completed before the collector existed (`FileMeta::tracked` false) had no record at
//! their blob. A newer file of the same bytes reuses the blob and writes the only record there:
//! collecting that file took the blob from under the old one, which is kept for ever. So before
//! it deletes any blob the collector walks `files/` once and puts a record at the blob of every
//! untracked file, and only then writes the mark `gc/untracked-recorded`; a collector (on any
//! node, after any restart) reads the mark and deletes nothing until it is there. Chosen over a
//! look at delete time, which would need an index from content to files that does not exist.
//! The records stay: an untracked file is never collected and keeps its meta, which keeps its
//! record past the blobs' sweep (`gc/blob_refs.rs`). No untracked file is made any more, so one
//! walk is enough; a walk cut short by a restart starts again (its puts are idempotent).

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{FileService, GcPass, Half};
use crate::files::error::FileError;
use crate::files::model::{FileMeta, is_id, is_sha256_hex, keys};
use crate::files::service::parse_record;
use crate::files::storage::StorageError;

impl FileService {
    /// Whether every untracked file holds its blob: the mark (read once per process) or the
    /// walk ended in this pass. `false` when the pass's budget ran out first; the next pass
    /// goes on from there.
    pub(super) async fn untracked_recorded(
        &self,
        now: u64,
        pass: &mut GcPass,
    ) -> Result<bool, FileError> {
        if self.untracked_recorded.load(Ordering::Acquire) {
            return Ok(true);
        }
        pass.keys += 1;
        match self.storage.head(keys::UNTRACKED_RECORDED).await {
            Ok(_) => {
                self.untracked_recorded.store(true, Ordering::Release);
                return Ok(true);
            }
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let mut cursor = self
            .untracked_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let walked = self.gc_pages(Half::Untracked, now, &mut cursor, pass).await;
        *self
            .untracked_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        if !walked? {
            return Ok(false);
        }
        self.storage
            .put(keys::UNTRACKED_RECORDED, Bytes::new())
            .await?;
        pass.keys += 1;
        self.untracked_recorded.store(true, Ordering::Release);
        tracing::info!("files gc: every file from before the collector holds its blob");
        Ok(true)
    }

    /// One key under `files/` in the walk: its file's record at the blob if it is untracked.
    /// Where the walk goes on from, or `None` when storage failed: the walk stops there (it
    /// must not pass a file it could not record) and the next pass tries it again.
    pub(super) async fn record_untracked_key(
        &self,
        key: String,
        pass: &mut GcPass,
    ) -> Option<String> {
        let Some(file_id) = keys::file_of_key(&key)
            .filter(|id| is_id(id))
            .map(str::to_owned)
        else {
            return Some(key);
        };
        pass.keys += 1;
        let key = keys::file_meta(&file_id);
        let meta = match self.read_record(&key).await {
            Ok(bytes) => bytes.map(|b| parse_record::<FileMeta>(&key, &b)),
            Err(err) => {
                pass.errors += 1;
                tracing::warn!(file_id, %err, "files gc: an old file's record not written yet");
                return None;
            }
        };
        let meta = match meta.transpose() {
            Ok(meta) => meta,
            // A meta that cannot be read is not served either: no bytes to keep for it, and
            // skipped rather than retried, so that it never holds the collector back.
            Err(err) => {
                pass.errors += 1;
                tracing::warn!(file_id, %err, "files gc: a file's meta unreadable, skipped");
                None
            }
        };
        if let Some(meta) = meta.filter(|m| !m.tracked && is_sha256_hex(&m.sha256)) {
            pass.keys += 1;
            let record = keys::blob_ref(&meta.sha256, &file_id);
            if let Err(err) = self.storage.put(&record, Bytes::new()).await {
                pass.errors += 1;
                tracing::warn!(file_id, %err, "files gc: an old file's record not written yet");
                return None;
            }
        }
        Some(keys::past_file(&file_id))
    }
}
