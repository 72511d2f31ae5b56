//! Removal of abandoned uploads: a background pass every [`CLEANUP_INTERVAL`] looks at a
//! bounded number of uploads, resuming where the last pass stopped, and removes those older
//! than `files.upload_lifetime_s`; then as many records of completed uploads
//! (`uploads_done/`), removed at the same age: they have served retries long enough.

use std::sync::Arc;
use std::time::Duration;

use super::error::FileError;
use super::model::{UploadDone, UploadMeta, keys};
use super::service::{FileService, past_upload};
use crate::time::now_ms;

/// Time between passes.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Uploads looked at in one pass, at most.
pub const CLEANUP_UPLOADS_PER_PASS: usize = 1_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupPass {
    pub examined: usize,
    pub removed: usize,
    /// The pass reached the last upload (the next starts from the first).
    pub wrapped: bool,
}

impl FileService {
    /// One bounded pass, as if the time were `now` (ms since the epoch).
    pub async fn cleanup_pass(&self, now: u64) -> Result<CleanupPass, FileError> {
        let start = self
            .cleanup_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut cursor = start;
        let mut pass = CleanupPass::default();
        while pass.examined < CLEANUP_UPLOADS_PER_PASS {
            let Some((user, upload_id)) = self.next_upload("uploads/", cursor.as_deref()).await?
            else {
                cursor = None;
                pass.wrapped = true;
                break;
            };
            cursor = Some(past_upload(user, &upload_id));
            pass.examined += 1;
            let since = match self
                .read_json::<UploadMeta>(&keys::upload_meta(user, &upload_id))
                .await?
            {
                Some(meta) => Some(meta.created_ms),
                // Completed by a version that kept the record here.
                None => self
                    .read_json::<UploadDone>(&keys::upload_done_before(user, &upload_id))
                    .await?
                    .map(|done| done.completed_ms),
            };
            // Neither record (a crash between deletes, or a chunk put racing a complete):
            // the newest key's time stands in.
            let since = match since {
                Some(ms) => ms,
                None => self.newest_key_ms(user, &upload_id).await?,
            };
            if self.expired(since, now) {
                self.delete_upload(user, &upload_id).await?;
                pass.removed += 1;
                metrics::counter!(super::metrics::UPLOADS_EXPIRED).increment(1);
            }
        }
        *self
            .cleanup_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        let done = self.cleanup_done(now).await?;
        pass.examined += done.examined;
        pass.removed += done.removed;
        pass.wrapped &= done.wrapped;
        Ok(pass)
    }

    /// Removes the records of uploads completed `upload_lifetime_s` ago (by the time the
    /// storage gives each): up to [`CLEANUP_UPLOADS_PER_PASS`], from where the last pass
    /// stopped.
    async fn cleanup_done(&self, now: u64) -> Result<CleanupPass, FileError> {
        let mut cursor = self
            .cleanup_done_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut pass = CleanupPass::default();
        while pass.examined < CLEANUP_UPLOADS_PER_PASS {
            let want = (CLEANUP_UPLOADS_PER_PASS - pass.examined).min(super::service::LIST_PAGE);
            let page = self
                .storage
                .list(keys::UPLOADS_DONE, cursor.as_deref(), want)
                .await?;
            for listed in &page {
                pass.examined += 1;
                if self.expired(listed.meta.modified_ms, now) {
                    self.storage.delete(&listed.key).await?;
                    pass.removed += 1;
                }
            }
            cursor = page.last().map(|l| l.key.clone());
            if page.len() < want {
                cursor = None;
                pass.wrapped = true;
                break;
            }
        }
        *self
            .cleanup_done_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        Ok(pass)
    }

    async fn newest_key_ms(&self, user: u64, upload_id: &str) -> Result<u64, FileError> {
        let mut newest = 0;
        let prefix = keys::upload_dir(user, upload_id);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(&prefix, after.as_deref(), super::service::LIST_PAGE)
                .await?;
            newest = page
                .iter()
                .map(|l| l.meta.modified_ms)
                .fold(newest, u64::max);
            if page.len() < super::service::LIST_PAGE {
                return Ok(newest);
            }
            after = page.last().map(|l| l.key.clone());
        }
    }

    /// Runs a pass every [`CLEANUP_INTERVAL`] on the current runtime, for as long as the
    /// service lives.
    pub fn start_cleanup(self: &Arc<Self>) {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                match service.cleanup_pass(now_ms()).await {
                    Ok(pass) if pass.removed > 0 => {
                        tracing::info!(removed = pass.removed, "abandoned uploads removed");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "cleaning up abandoned uploads"),
                }
            }
        });
    }
}
