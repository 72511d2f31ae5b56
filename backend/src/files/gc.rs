//! The collector: removes finished files no message references any more, and blobs no file is
//! made of. A pass every `files.gc_interval_s` walks `files/` from where the last one stopped
//! and touches at most `files.gc_keys_per_pass` keys (listed, read or written), so it never
//! holds storage for long, and it runs on the backend's runtime beside requests, never on the
//! message path.
//!
//! A sweep walks `files/`, then `blobs/` (`gc/blob_refs.rs`: a blob's record whose file never
//! came to be, from a complete cut short, goes past the grace, and the blob with its last one).
//!
//! A file goes when it is tracked (`FileMeta::tracked`), older than
//! `files.unreferenced_grace_s` and none of its reference markers holds (`refs.rs`). Order,
//! unreachable first and bytes last: its meta is moved to `collecting.json` (downloads and
//! sends see no file from then on), then its thumbnail, its uploader's index entry (the quota
//! goes down), its markers, its record at the blob, and the blob when no other file's record
//! is left there; `collecting.json` goes last, so a pass after a crash finishes the removal.
//!
//! Races. A send of the file that passed its check as the file was being collected: the send
//! writes its marker and then looks for the meta again (refused if gone); the collector looks
//! for markers again after hiding the meta (put back if one appeared): one of the two sees the
//! other. A complete reusing the blob: it writes its record at the blob and decides to reuse
//! under the blob's lock, which the collector holds from its look at the blob's records to
//! the blob's delete. In cluster mode (S3) that lock is per node: a complete on another node
//! puts its record again and looks for the blob after writing its meta, and writes the blob
//! again if it went (`FileService::keep_blob`, which also covers a complete slower than the
//! grace, whose record the blobs' sweep may have taken for a leftover). Two nodes
//! collecting at once do the same deletes, which are idempotent. Left to chance in cluster
//! mode only: two collectors and a send of the same unreferenced file within the same few
//! milliseconds, and a collector's blob delete delayed past a whole complete on another node.

use std::sync::Arc;
use std::time::Duration;

use super::error::FileError;
use super::model::{FileMeta, is_id, keys};
use super::refs::Marker;
use super::service::{FileService, LIST_PAGE};
use super::storage::StorageError;
use crate::time::now_ms;

/// Keys the step under way when a pass's budget runs out may still use to finish (the look at
/// one marker, the removal of one file): a pass uses at most `files.gc_keys_per_pass` plus this.
pub const STEP_KEYS_MAX: usize = 24;

/// What one pass (or, summed, one sweep) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Keys listed, read or written: at most `files.gc_keys_per_pass` plus
    /// [`STEP_KEYS_MAX`].
    pub keys: usize,
    pub files_examined: usize,
    pub files_collected: usize,
    pub blobs_collected: usize,
    /// Bytes of the blobs deleted.
    pub bytes_collected: u64,
    /// Markers of recalled (or absent) messages and settled pending markers removed.
    pub markers_dropped: usize,
    /// Files whose look failed (logged, skipped until the next sweep).
    pub errors: usize,
    /// The pass reached the last file (the next starts from the first).
    pub wrapped: bool,
}

impl GcPass {
    fn add(&mut self, other: &GcPass) {
        self.keys += other.keys;
        self.files_examined += other.files_examined;
        self.files_collected += other.files_collected;
        self.blobs_collected += other.blobs_collected;
        self.bytes_collected += other.bytes_collected;
        self.markers_dropped += other.markers_dropped;
        self.errors += other.errors;
    }
}

/// How the look at one file ended.
enum Step {
    Done,
    /// The pass's budget ran out: the next pass resumes on this file.
    OutOfKeys,
}

/// The two halves of a sweep, walked by the same paged loop (`FileService::gc_pages`).
#[derive(Debug, Clone, Copy)]
enum Half {
    /// `files/`: the files, one at a time.
    Files,
    /// `blobs/`: the blobs' records whose file never came to be (`gc/blob_refs.rs`).
    BlobRefs,
    /// `files/` once, before any collection: a record at the blob of each file from before the
    /// collector (`gc/untracked.rs`).
    Untracked,
}

impl Half {
    fn prefix(self) -> &'static str {
        match self {
            Half::Files | Half::Untracked => "files/",
            Half::BlobRefs => blob_refs::START,
        }
    }
}

/// Whether a file is still wanted.
enum Held {
    Yes,
    No,
    OutOfKeys,
}

impl FileService {
    /// One bounded pass, as if the time were `now` (ms since the epoch).
    pub async fn gc_pass(&self, now: u64) -> Result<GcPass, FileError> {
        let _not_paused = self.gc_gate.lock().await;
        let mut pass = GcPass::default();
        // No blob is deleted before every file from before the collector holds its blob.
        if !self.untracked_recorded(now, &mut pass).await? {
            return Ok(pass);
        }
        let mut cursor = self
            .gc_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let result = self.gc_walk(now, &mut cursor, &mut pass).await;
        *self.gc_cursor.lock().unwrap_or_else(|p| p.into_inner()) = cursor;
        result.map(|()| pass)
    }

    /// `files/`, then `blobs/` (`gc/blob_refs.rs`), from `cursor`, while the pass has room; at
    /// the end of `blobs/` the sweep is done.
    async fn gc_walk(
        &self,
        now: u64,
        cursor: &mut Option<String>,
        pass: &mut GcPass,
    ) -> Result<(), FileError> {
        if !cursor
            .as_deref()
            .is_some_and(|c| c.starts_with(blob_refs::START))
        {
            if !self.gc_pages(Half::Files, now, cursor, pass).await? {
                return Ok(());
            }
            // On to the blobs' records: every key under `blobs/` sorts after `files/`'s.
            *cursor = Some(blob_refs::START.to_owned());
        }
        if self.gc_pages(Half::BlobRefs, now, cursor, pass).await? {
            *cursor = None;
            pass.wrapped = true;
        }
        Ok(())
    }

    /// The paged walk both halves of a sweep share: pages of the half's keys after `cursor`,
    /// each key looked at in turn while the pass has room, the cursor moved past what was
    /// looked at. `Ok(true)` when the half was walked to its end; `Ok(false)` when the pass's
    /// budget ran out first.
    async fn gc_pages(
        &self,
        half: Half,
        now: u64,
        cursor: &mut Option<String>,
        pass: &mut GcPass,
    ) -> Result<bool, FileError> {
        while self.gc_room(pass) > 0 {
            // A page of keys per listing, not one, and a walk's listing: the local adapter
            // reads a directory per listing, so that a key at a time made a sweep quadratic
            // in the files kept. What a walk may miss (a key made seconds ago) is young.
            let limit = self.gc_room(pass).clamp(1, LIST_PAGE);
            let page = self
                .storage
                .list_walk(half.prefix(), cursor.as_deref(), limit)
                .await?;
            pass.keys += 1;
            if page.is_empty() {
                return Ok(true);
            }
            for listed in page {
                // The rest of something looked at already (the cursor is past its keys: a
                // file's other keys in the same page).
                if cursor.as_deref().is_some_and(|c| listed.key.as_str() <= c) {
                    continue;
                }
                if self.gc_room(pass) == 0 {
                    return Ok(false);
                }
                let next = match half {
                    Half::Files => self.gc_files_key(listed.key, now, pass).await,
                    Half::BlobRefs => self.gc_blob_refs_key(listed, now, pass).await,
                    Half::Untracked => self.record_untracked_key(listed.key, pass).await,
                };
                match next {
                    Some(next) => *cursor = Some(next),
                    None => return Ok(false),
                }
            }
        }
        Ok(false)
    }

    /// One key under `files/`: the file it belongs to is looked at. Where the walk goes on
    /// from (past the file's keys), or `None` when the budget ran out in the middle of the
    /// file (the next pass resumes on it).
    async fn gc_files_key(&self, key: String, now: u64, pass: &mut GcPass) -> Option<String> {
        let Some(file_id) = keys::file_of_key(&key)
            .filter(|id| is_id(id))
            .map(str::to_owned)
        else {
            // Not the service's: skipped, never removed.
            return Some(key);
        };
        pass.files_examined += 1;
        match self.gc_file(&file_id, now, pass).await {
            Ok(Step::Done) => {}
            Ok(Step::OutOfKeys) => return None,
            Err(err) => {
                pass.errors += 1;
                tracing::warn!(file_id, %err, "files gc: file skipped");
            }
        }
        Some(keys::past_file(&file_id))
    }

    fn gc_room(&self, pass: &GcPass) -> usize {
        self.config.gc_keys_per_pass.saturating_sub(pass.keys)
    }

    fn grace_ms(&self) -> u64 {
        self.config.unreferenced_grace_s.saturating_mul(1000)
    }

    async fn gc_file(&self, file_id: &str, now: u64, pass: &mut GcPass) -> Result<Step, FileError> {
        pass.keys += 2;
        let collecting = self
            .read_json::<FileMeta>(&keys::file_collecting(file_id))
            .await?;
        let meta = self
            .read_json::<FileMeta>(&keys::file_meta(file_id))
            .await?;
        let meta = match (collecting, meta) {
            // A removal a crash (or another node) left under way, the file already hidden.
            (Some(hidden), None) => {
                self.finish_collect(&hidden, pass).await?;
                return Ok(Step::Done);
            }
            // Stopped before the file was hidden: looked at afresh.
            (Some(_), Some(meta)) => {
                self.storage.delete(&keys::file_collecting(file_id)).await?;
                pass.keys += 1;
                meta
            }
            (None, Some(meta)) => meta,
            (None, None) => return self.gc_orphan(file_id, now, pass).await,
        };
        if !meta.tracked || meta.created_ms.saturating_add(self.grace_ms()) > now {
            return Ok(Step::Done);
        }
        match self.held(file_id, now, pass).await? {
            Held::Yes => Ok(Step::Done),
            Held::OutOfKeys => Ok(Step::OutOfKeys),
            Held::No => {
                self.collect(&meta, pass).await?;
                Ok(Step::Done)
            }
        }
    }

    /// Whether any of the file's markers holds; drops those that do not.
    async fn held(&self, file_id: &str, now: u64, pass: &mut GcPass) -> Result<Held, FileError> {
        let Some(refs) = self.message_refs.get() else {
            // No messaging to ask: any marker holds.
            let any = self
                .storage
                .list(&keys::file_refs(file_id), None, 1)
                .await?;
            pass.keys += 1;
            return Ok(if any.is_empty() { Held::No } else { Held::Yes });
        };
        let prefix = keys::file_refs(file_id);
        let mut after: Option<String> = None;
        loop {
            let room = self.gc_room(pass);
            if room == 0 {
                return Ok(Held::OutOfKeys);
            }
            // A marker costs a few keys (listed, its message read, maybe dropped).
            let page = self
                .storage
                .list(&prefix, after.as_deref(), (room / 4).clamp(1, LIST_PAGE))
                .await?;
            pass.keys += 1;
            let Some(last) = page.last() else {
                return Ok(Held::No);
            };
            after = Some(last.key.clone());
            for (i, listed) in page.iter().enumerate() {
                // At least one marker per page, so that a pass always gets on.
                if i > 0 && self.gc_room(pass) == 0 {
                    return Ok(Held::OutOfKeys);
                }
                let marker = match Marker::of_key(file_id, &listed.key) {
                    Some(marker) => marker,
                    // Not a marker this server writes: taken as holding, never removed.
                    None => return Ok(Held::Yes),
                };
                pass.keys += 1;
                match marker {
                    Marker::Sent { conv, seq } => {
                        if refs.carries_file(conv, seq, file_id).await? {
                            return Ok(Held::Yes);
                        }
                        self.drop_marker(&listed.key, pass).await?;
                    }
                    Marker::Pending { conv, head, at_ms } => {
                        // Its send may still be on its way to the sequencer.
                        if at_ms.saturating_add(self.grace_ms()) > now {
                            return Ok(Held::Yes);
                        }
                        // Half the room to read, half to write the markers found.
                        let room = (self.gc_room(pass) / 2).clamp(1, LIST_PAGE);
                        let until_ms = at_ms.saturating_add(self.grace_ms());
                        let scanned = refs
                            .carrying_after(conv, head, room, file_id, until_ms)
                            .await?;
                        pass.keys += scanned.read;
                        for &seq in &scanned.carrying {
                            let sent = Marker::Sent { conv, seq };
                            self.storage
                                .put(&sent.key(file_id), bytes::Bytes::new())
                                .await?;
                            pass.keys += 1;
                        }
                        if !scanned.at_end {
                            // Read on from there next time (a message can only come later).
                            let on = Marker::Pending {
                                conv,
                                head: scanned.last_seq,
                                at_ms,
                            };
                            self.storage
                                .put(&on.key(file_id), bytes::Bytes::new())
                                .await?;
                            pass.keys += 1;
                        }
                        self.drop_marker(&listed.key, pass).await?;
                        if !scanned.carrying.is_empty() || !scanned.at_end {
                            return Ok(Held::Yes);
                        }
                    }
                }
            }
        }
    }

    async fn drop_marker(&self, key: &str, pass: &mut GcPass) -> Result<(), FileError> {
        self.storage.delete(key).await?;
        pass.keys += 1;
        pass.markers_dropped += 1;
        metrics::counter!(super::metrics::MARKERS_DROPPED).increment(1);
        Ok(())
    }

    /// Hides the file, then removes the rest ([`Self::finish_collect`]); puts it back if a send
    /// marked it meanwhile.
    async fn collect(&self, meta: &FileMeta, pass: &mut GcPass) -> Result<(), FileError> {
        let file_id = meta.file_id.as_str();
        self.put_json(&keys::file_collecting(file_id), meta).await?;
        self.storage.delete(&keys::file_meta(file_id)).await?;
        pass.keys += 2;
        let marked = self
            .storage
            .list(&keys::file_refs(file_id), None, 1)
            .await?;
        pass.keys += 1;
        if !marked.is_empty() {
            self.put_json(&keys::file_meta(file_id), meta).await?;
            self.storage.delete(&keys::file_collecting(file_id)).await?;
            pass.keys += 2;
            tracing::info!(file_id, "files gc: sent while being collected, kept");
            return Ok(());
        }
        self.finish_collect(meta, pass).await
    }

    /// Removes a hidden file's keys, its record at the blob, and the blob if no file is left
    /// made of it; `collecting.json` last.
    async fn finish_collect(&self, meta: &FileMeta, pass: &mut GcPass) -> Result<(), FileError> {
        let file_id = meta.file_id.as_str();
        self.storage.delete(&keys::thumb(file_id)).await?;
        self.storage
            .delete(&keys::user_file(meta.uploader, file_id, meta.size))
            .await?;
        pass.keys += 2;
        pass.keys += self.delete_prefix(&keys::file_refs(file_id)).await?;
        self.drop_blob_ref(&meta.sha256, file_id, pass).await?;
        self.storage.delete(&keys::file_collecting(file_id)).await?;
        pass.keys += 1;
        pass.files_collected += 1;
        metrics::counter!(super::metrics::FILES_COLLECTED).increment(1);
        tracing::debug!(file_id, size = meta.size, "files gc: file collected");
        Ok(())
    }

    /// Deletes the file's record at the blob, and the blob if that was its last record. The
    /// look at the records and the blob's delete happen under the blob's lock, which a complete
    /// reusing the blob takes to write its record and decide (`FileService::complete`).
    async fn drop_blob_ref(
        &self,
        sha256: &str,
        file_id: &str,
        pass: &mut GcPass,
    ) -> Result<(), FileError> {
        self.storage
            .delete(&keys::blob_ref(sha256, file_id))
            .await?;
        pass.keys += 1;
        self.drop_blob_if_unreferenced(sha256, pass).await
    }

    /// Deletes the blob when no file's record is left at it, under the blob's lock.
    pub(super) async fn drop_blob_if_unreferenced(
        &self,
        sha256: &str,
        pass: &mut GcPass,
    ) -> Result<(), FileError> {
        let _blob = self.blob_lock(sha256).await;
        let others = self.storage.list(&keys::blob_refs(sha256), None, 1).await?;
        pass.keys += 1;
        if others.is_empty() {
            let blob = keys::blob(sha256);
            match self.storage.head(&blob).await {
                Ok(stored) => {
                    self.storage.delete(&blob).await?;
                    pass.blobs_collected += 1;
                    pass.bytes_collected += stored.size_bytes;
                    metrics::counter!(super::metrics::BLOBS_COLLECTED).increment(1);
                    metrics::counter!(super::metrics::BYTES_COLLECTED).increment(stored.size_bytes);
                }
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            pass.keys += 2;
        }
        Ok(())
    }

    /// Keys of a file with neither meta nor collecting record (a complete that stopped after
    /// its thumbnail, markers of a send refused as the file went): removed past the grace.
    async fn gc_orphan(
        &self,
        file_id: &str,
        now: u64,
        pass: &mut GcPass,
    ) -> Result<Step, FileError> {
        let room = self.gc_room(pass);
        if room == 0 {
            return Ok(Step::OutOfKeys);
        }
        let page = self
            .storage
            .list(&keys::file_dir(file_id), None, room.min(LIST_PAGE))
            .await?;
        pass.keys += page.len().max(1);
        for listed in page {
            if listed.meta.modified_ms.saturating_add(self.grace_ms()) <= now {
                self.storage.delete(&listed.key).await?;
                pass.keys += 1;
            }
        }
        Ok(Step::Done)
    }

    /// Holds the collector back (a backup copying the files) until the guard is dropped; waits
    /// for a pass under way to end.
    pub async fn pause_gc(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.gc_gate).lock_owned().await
    }

    /// Runs a pass every `files.gc_interval_s` on the current runtime, for as long as the
    /// service lives; logs a summary line each time a sweep reaches the last file.
    pub fn start_gc(self: &Arc<Self>) {
        let service = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.gc_interval_s.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sweep = GcPass::default();
            let mut passes = 0u64;
            loop {
                tick.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                match service.gc_pass(now_ms()).await {
                    Ok(pass) => {
                        sweep.add(&pass);
                        passes += 1;
                        if pass.wrapped {
                            tracing::info!(
                                passes,
                                files_examined = sweep.files_examined,
                                files_collected = sweep.files_collected,
                                blobs_collected = sweep.blobs_collected,
                                bytes_collected = sweep.bytes_collected,
                                markers_dropped = sweep.markers_dropped,
                                errors = sweep.errors,
                                "files gc: sweep done"
                            );
                            sweep = GcPass::default();
                            passes = 0;
                        }
                    }
                    Err(err) => tracing::warn!(%err, "files gc pass"),
                }
            }
        });
    }
}

mod blob_refs;
#[cfg(test)]
mod tests;
mod untracked;
