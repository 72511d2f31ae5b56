//! Removal of abandoned uploads: a background pass every [`CLEANUP_INTERVAL`] walks the uploads
//! in batches of [`CLEANUP_BATCH`], resuming where the last pass stopped, and removes those
//! older than `files.upload_lifetime_s`; then, the same way, the records of completed uploads
//! (`uploads_done/`), removed at the same age: they have served retries long enough.
//!
//! A pass goes on to another batch while more than half of the last one had expired (a
//! backlog: completes faster than a batch a minute), and stops at its time budget,
//! `files.cleanup_pass_ms_max` (the uploads' walk at half of it, so the records' walk always
//! gets the other half). A fixed count per minute let `uploads_done/` grow without bound
//! above ~17 completes a second.
//!
//! The uploads are listed a page of keys at a time, not one key per listing, by a walk's
//! listing (`FileStorage::list_walk`: the local adapter reads each directory once for the
//! walk's pages, not once per page): a listing per upload read every user's directory under
//! `uploads/` once per upload. What a walk may miss (a key made seconds ago) is not expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::FileError;
use super::model::{UploadDone, UploadMeta, is_id, keys};
use super::service::{FileService, LIST_PAGE, past_upload};
use crate::api::UserId;
use crate::time::now_ms;

/// Time between passes.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Uploads (or completed uploads' records) in one batch: a pass looks at one batch of each,
/// and at more while most of the last batch had expired.
pub const CLEANUP_BATCH: usize = 1_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupPass {
    pub examined: usize,
    pub removed: usize,
    /// The pass reached the last upload (the next starts from the first).
    pub wrapped: bool,
}

/// When a walk of a pass stops: its deadline, and whether the last batch asks for another.
struct Batches {
    deadline: Instant,
    batch: CleanupPass,
}

impl Batches {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            batch: CleanupPass::default(),
        }
    }

    /// Counts one record looked at; whether the walk may look at another.
    fn room(&mut self) -> bool {
        if self.batch.examined >= CLEANUP_BATCH {
            // A batch mostly expired: a backlog, worth another batch.
            if self.batch.removed * 2 <= self.batch.examined {
                return false;
            }
            self.batch = CleanupPass::default();
        }
        Instant::now() < self.deadline
    }

    fn looked(&mut self, removed: bool, pass: &mut CleanupPass) {
        self.batch.examined += 1;
        pass.examined += 1;
        if removed {
            self.batch.removed += 1;
            pass.removed += 1;
        }
    }
}

impl FileService {
    /// One pass, as if the time were `now` (ms since the epoch), bounded by
    /// `files.cleanup_pass_ms_max` of real time.
    pub async fn cleanup_pass(&self, now: u64) -> Result<CleanupPass, FileError> {
        let started = Instant::now();
        let budget = Duration::from_millis(self.config.cleanup_pass_ms_max);
        let uploads = self.cleanup_uploads(now, started + budget / 2).await?;
        let done = self.cleanup_done(now, started + budget).await?;
        Ok(CleanupPass {
            examined: uploads.examined + done.examined,
            removed: uploads.removed + done.removed,
            wrapped: uploads.wrapped && done.wrapped,
        })
    }

    /// The uploads under `uploads/`, from where the last pass stopped, a page of keys per
    /// listing; each upload once (its other keys in the page are passed over).
    async fn cleanup_uploads(&self, now: u64, deadline: Instant) -> Result<CleanupPass, FileError> {
        let mut cursor = self
            .cleanup_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut pass = CleanupPass::default();
        let mut batches = Batches::new(deadline);
        let result = async {
            'pages: loop {
                // No listing for a page the walk has no room to look at.
                if !batches.room() {
                    break;
                }
                let page = self
                    .storage
                    .list_walk("uploads/", cursor.as_deref(), LIST_PAGE)
                    .await?;
                let full = page.len() == LIST_PAGE;
                for listed in page {
                    if cursor.as_deref().is_some_and(|c| listed.key.as_str() <= c) {
                        continue;
                    }
                    let Some((user, upload_id)) =
                        keys::upload_of_key(&listed.key).filter(|(_, id)| is_id(id))
                    else {
                        // Not the service's: skipped (never removed, it is not ours to judge).
                        cursor = Some(listed.key);
                        continue;
                    };
                    if !batches.room() {
                        break 'pages;
                    }
                    let upload_id = upload_id.to_owned();
                    let removed = self.cleanup_upload(user, &upload_id, now).await?;
                    batches.looked(removed, &mut pass);
                    cursor = Some(past_upload(user, &upload_id));
                }
                if !full {
                    cursor = None;
                    pass.wrapped = true;
                    break;
                }
            }
            Ok::<_, FileError>(())
        }
        .await;
        *self
            .cleanup_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        result.map(|()| pass)
    }

    /// Removes the upload if it outlived its lifetime; whether it did.
    async fn cleanup_upload(
        &self,
        user: UserId,
        upload_id: &str,
        now: u64,
    ) -> Result<bool, FileError> {
        let since = match self
            .read_json::<UploadMeta>(&keys::upload_meta(user, upload_id))
            .await?
        {
            Some(meta) => Some(meta.created_ms),
            // Completed by a version that kept the record here.
            None => self
                .read_json::<UploadDone>(&keys::upload_done_before(user, upload_id))
                .await?
                .map(|done| done.completed_ms),
        };
        // Neither record (a crash between deletes, or a chunk put racing a complete): the
        // newest key's time stands in.
        let since = match since {
            Some(ms) => ms,
            None => self.newest_key_ms(user, upload_id).await?,
        };
        if !self.expired(since, now) {
            return Ok(false);
        }
        self.delete_upload(user, upload_id).await?;
        metrics::counter!(super::metrics::UPLOADS_EXPIRED).increment(1);
        Ok(true)
    }

    /// Removes the records of uploads completed `upload_lifetime_s` ago (by the time the
    /// storage gives each), from where the last pass stopped.
    async fn cleanup_done(&self, now: u64, deadline: Instant) -> Result<CleanupPass, FileError> {
        let mut cursor = self
            .cleanup_done_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut pass = CleanupPass::default();
        let mut batches = Batches::new(deadline);
        let result = async {
            'pages: loop {
                // No listing for a page the walk has no room to look at.
                if !batches.room() {
                    break;
                }
                let page = self
                    .storage
                    .list_walk(keys::UPLOADS_DONE, cursor.as_deref(), LIST_PAGE)
                    .await?;
                let full = page.len() == LIST_PAGE;
                for listed in page {
                    if !batches.room() {
                        break 'pages;
                    }
                    let expired = self.expired(listed.meta.modified_ms, now);
                    if expired {
                        self.storage.delete(&listed.key).await?;
                    }
                    batches.looked(expired, &mut pass);
                    cursor = Some(listed.key);
                }
                if !full {
                    cursor = None;
                    pass.wrapped = true;
                    break;
                }
            }
            Ok::<_, FileError>(())
        }
        .await;
        *self
            .cleanup_done_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        result.map(|()| pass)
    }

    async fn newest_key_ms(&self, user: u64, upload_id: &str) -> Result<u64, FileError> {
        let mut newest = 0;
        let prefix = keys::upload_dir(user, upload_id);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(&prefix, after.as_deref(), LIST_PAGE)
                .await?;
            newest = page
                .iter()
                .map(|l| l.meta.modified_ms)
                .fold(newest, u64::max);
            if page.len() < LIST_PAGE {
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
                        tracing::info!(
                            removed = pass.removed,
                            examined = pass.examined,
                            "abandoned uploads removed"
                        );
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "cleaning up abandoned uploads"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
