//! The files service: uploads in chunks (create, put chunk, present chunks, complete), finished
//! files' metadata, and the per-user limits. Downloads are in `download.rs`, the removal of
//! abandoned uploads in `cleanup.rs`. Everything lives in the [`FileStorage`] port under the
//! keys of `model::keys`.
//!
//! Order of writes at complete, so that nothing half done is ever served: the blob (durable),
//! then the file's meta.json, then the uploader's index entry, then the upload's `done` marker
//! (a retried complete answers the same file id from it), and only then the chunks go. The
//! blob's reference record for the new file (`blobs/xx/{sha256}.refs/{file_id}`) is written
//! before the blob is reused or written, for the collector (`gc.rs`), and again after the
//! meta (`keep_blob`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::FilesConfig;
use super::download::{DownloadAccess, UploaderOnly};
use super::error::FileError;
use super::model::{
    FileMeta, NewUpload, UploadDone, UploadMeta, check_name, is_id, is_sha256_hex, keys, new_id,
    normalize_mime,
};
use super::storage::{FileStorage, StorageError};
use crate::admin::auth::credentials::hex;
use crate::api::UserId;
use crate::cluster::leases::Leases;
use crate::time::now_ms;

/// Keys asked for per listing page.
pub(super) const LIST_PAGE: usize = 1_000;
/// Largest JSON record the service reads back (meta.json, done): they are written small.
const RECORD_BYTES_MAX: usize = 64 * 1024;
/// Creates of users hashing to the same stripe run one at a time (count and quota checked,
/// then the upload written, without a race between two creates of one user).
const USER_LOCK_STRIPES: usize = 64;
/// How long a node may hold a user's turn to create an upload across the cluster: longer than
/// listing the user's records and writing one takes, short enough that a node that dies
/// holding it delays the user's next create by no more.
const CREATE_LEASE: Duration = Duration::from_secs(30);
/// How long a create waits for the user's turn held by another node before `503 busy`.
const CREATE_LEASE_WAIT: Duration = Duration::from_secs(5);
/// A complete's reuse of a stored blob and the collector's delete of a blob hashing to the same
/// stripe run one at a time (`blob_lock`).
const BLOB_LOCK_STRIPES: usize = 64;

/// What `POST /files` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Created {
    pub upload_id: String,
    pub chunk_size: u64,
}

pub struct FileService {
    pub(super) storage: Arc<dyn FileStorage>,
    pub(super) config: FilesConfig,
    pub(super) access: OnceLock<Arc<dyn DownloadAccess>>,
    user_locks: [tokio::sync::Mutex<()>; USER_LOCK_STRIPES],
    /// Cluster mode: the same per-user turn across the nodes (`cluster/leases.rs`).
    cluster_leases: OnceLock<Arc<Leases>>,
    blob_locks: [tokio::sync::Mutex<()>; BLOB_LOCK_STRIPES],
    /// Who answers for files' reference markers (`refs.rs`).
    pub(super) message_refs: OnceLock<Arc<dyn super::refs::MessageRefs>>,
    /// Where the collector's next pass starts (`gc.rs`).
    pub(super) gc_cursor: Mutex<Option<String>>,
    /// Every file from before the collector has its record at its blob (`gc/untracked.rs`):
    /// the collector deletes no blob before.
    pub(super) untracked_recorded: AtomicBool,
    /// Where the walk recording them stopped (`gc/untracked.rs`).
    pub(super) untracked_cursor: Mutex<Option<String>>,
    /// Held by a collector pass, and by a backup copying the files (`pause_gc`).
    pub(super) gc_gate: Arc<tokio::sync::Mutex<()>>,
    /// Uploads being completed on this node (`user/upload_id`): a second complete waits its turn.
    completing: Mutex<HashSet<String>>,
    /// Chunk bodies being received, at most `files.chunks_in_flight_max`.
    chunk_permits: Arc<Semaphore>,
    /// Completes running, at most `files.completes_in_flight_max`: each assembly holds up to a
    /// few S3 parts in memory.
    pub(super) complete_permits: Semaphore,
    /// Thumbnails being made, one at a time: each decode may take a second of CPU and a few
    /// hundred MiB (`thumbnail.pixels_max`), on the blocking threads logins and reads share.
    pub(super) thumb_permits: Semaphore,
    /// Chunk bodies being received per user, each at most `chunks_in_flight_per_user_max`.
    chunks_by_user: Arc<Mutex<HashMap<UserId, usize>>>,
    /// Where the cleanup's next pass starts (`cleanup.rs`).
    pub(super) cleanup_cursor: Mutex<Option<String>>,
    /// Where the cleanup's walk of completed uploads' records stopped.
    pub(super) cleanup_done_cursor: Mutex<Option<String>>,
}

impl FileService {
    pub fn new(storage: Arc<dyn FileStorage>, config: FilesConfig) -> Self {
        Self {
            storage,
            chunk_permits: Arc::new(Semaphore::new(config.chunks_in_flight_max)),
            complete_permits: Semaphore::new(config.completes_in_flight_max),
            chunks_by_user: Arc::default(),
            thumb_permits: Semaphore::new(1),
            config,
            access: OnceLock::new(),
            user_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            cluster_leases: OnceLock::new(),
            blob_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            message_refs: OnceLock::new(),
            gc_cursor: Mutex::new(None),
            untracked_recorded: AtomicBool::new(false),
            untracked_cursor: Mutex::new(None),
            gc_gate: Arc::new(tokio::sync::Mutex::new(())),
            completing: Mutex::new(HashSet::new()),
            cleanup_cursor: Mutex::new(None),
            cleanup_done_cursor: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Who else than the uploader may download a file (files-media sets it once); until set,
    /// only uploaders download.
    pub fn set_download_access(&self, access: Arc<dyn DownloadAccess>) -> Result<(), FileError> {
        self.access
            .set(access)
            .map_err(|_| FileError::Unavailable("download access set twice".into()))
    }

    pub(super) fn download_access(&self) -> &dyn DownloadAccess {
        self.access.get().map_or(&UploaderOnly, |a| a.as_ref())
    }

    /// Room for one chunk body in memory; `Busy` when `chunks_in_flight_max` are being received.
    pub fn chunk_permit(&self) -> Result<OwnedSemaphorePermit, FileError> {
        Arc::clone(&self.chunk_permits)
            .try_acquire_owned()
            .map_err(|_| FileError::Busy)
    }

    /// Room for one chunk body of `user`'s: `Busy` past the node's or the user's limit.
    fn chunk_room(&self, user: UserId) -> Result<ChunkRoom, FileError> {
        {
            let mut by_user = self
                .chunks_by_user
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = by_user.entry(user).or_default();
            if *n >= self.config.chunks_in_flight_per_user_max {
                return Err(FileError::Busy);
            }
            *n += 1;
        }
        // Dropped (and the user's count given back) if the node has no room.
        let mut room = ChunkRoom {
            user,
            by_user: Arc::clone(&self.chunks_by_user),
            _permit: None,
        };
        room._permit = Some(self.chunk_permit()?);
        Ok(room)
    }

    /// A chunk's place in a live upload of `user`'s, checked before its body is read: a chunk
    /// for no upload, out of range or of the wrong declared length takes no room, and one
    /// that passes holds room for its body (`files.chunks_in_flight_max`, per user
    /// `chunks_in_flight_per_user_max`) until it is stored or refused.
    pub async fn chunk_slot(
        &self,
        user: UserId,
        upload_id: &str,
        index: u64,
        sha256: &str,
        declared_len: Option<u64>,
    ) -> Result<ChunkSlot, FileError> {
        if !is_sha256_hex(sha256) {
            return Err(FileError::bad(
                "bad_chunk_sha256",
                "X-Chunk-Sha256: expected the chunk's SHA-256 as 64 lowercase hex characters",
            ));
        }
        let meta = self.live_upload(user, upload_id).await?;
        let count = meta.chunk_count();
        if index >= count {
            return Err(FileError::bad(
                "bad_chunk_index",
                format!("chunk index {index}: this upload has chunks 0 to {count} (exclusive)"),
            ));
        }
        let len = meta.chunk_len(index);
        if let Some(declared) = declared_len.filter(|&d| d != len) {
            return Err(wrong_size(index, len, declared));
        }
        Ok(ChunkSlot {
            index,
            len,
            _room: self.chunk_room(user)?,
        })
    }

    /// `POST /files`: checks the request and the user's limits, and records the upload.
    pub async fn create_upload(&self, user: UserId, req: NewUpload) -> Result<Created, FileError> {
        check_name(&req.name, self.config.name_bytes_max)?;
        let mime = normalize_mime(&req.mime)?;
        if !is_sha256_hex(&req.sha256) {
            return Err(FileError::bad(
                "bad_sha256",
                "sha256: expected the file's SHA-256 as 64 lowercase hex characters",
            ));
        }
        // An empty file carries nothing to share, and would cost no quota: refused, so that
        // what a user keeps is bounded by the quota.
        if req.size == 0 {
            return Err(FileError::bad(
                "empty_file",
                "size: an empty file cannot be uploaded",
            ));
        }
        if req.size > self.config.file_bytes_max {
            return Err(FileError::TooLarge {
                max: self.config.file_bytes_max,
            });
        }
        let _one_at_a_time = self.user_locks[user as usize % USER_LOCK_STRIPES]
            .lock()
            .await;
        // In a cluster the user's creates on other nodes take turns with this one too:
        // limits checked by listing the storage hold only if no other create writes between
        // the list and the write.
        let Some(leases) = self.cluster_leases.get() else {
            return self.create_checked(user, req, mime).await;
        };
        let name = format!("files-create:{user}");
        let lease = match leases.take(&name, CREATE_LEASE, CREATE_LEASE_WAIT).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Err(FileError::CreatesBusy),
            Err(e) => return Err(FileError::Unavailable(format!("cluster lease: {e}"))),
        };
        let created = self.create_checked(user, req, mime).await;
        leases.give_back(lease).await;
        created
    }

    /// Cluster mode: a user's upload creates take turns across the nodes.
    pub fn share_user_turns(&self, leases: Arc<Leases>) {
        if self.cluster_leases.set(leases).is_err() {
            tracing::warn!("files: cluster leases set twice; keeping the first");
        }
    }

    /// The rest of [`Self::create_upload`], the user's turn held: the limits, then the record.
    async fn create_checked(
        &self,
        user: UserId,
        req: NewUpload,
        mime: String,
    ) -> Result<Created, FileError> {
        let now = now_ms();
        let in_progress = self.uploads_in_progress(user, now).await?;
        if in_progress.len() >= self.config.uploads_in_progress_max as usize {
            return Err(FileError::TooManyUploads {
                max: self.config.uploads_in_progress_max,
            });
        }
        let (finished, files) = self.finished_bytes(user).await?;
        // Counted beside the bytes: a quota of tiny files would grow every listing of them.
        let files_max = self.config.files_per_user_max;
        if files + in_progress.len() as u64 >= u64::from(files_max) {
            return Err(FileError::TooManyFiles { max: files_max });
        }
        let used = finished + in_progress.iter().map(|u| u.size).sum::<u64>();
        let quota = self.config.user_quota_bytes;
        if used.saturating_add(req.size) > quota {
            return Err(FileError::OverQuota { quota, used });
        }
        let upload_id = new_id()?;
        let meta = UploadMeta {
            name: req.name,
            size: req.size,
            mime,
            sha256: req.sha256,
            chunk_bytes: self.config.chunk_bytes,
            created_ms: now,
        };
        self.put_json(&keys::upload_meta(user, &upload_id), &meta)
            .await?;
        metrics::counter!(super::metrics::UPLOADS_CREATED).increment(1);
        tracing::debug!(user, upload_id, size = meta.size, "upload created");
        Ok(Created {
            upload_id,
            chunk_size: meta.chunk_bytes,
        })
    }

    /// `PUT /files/{upload_id}/chunks/{index}`: stores the chunk once its bytes match
    /// `sha256`. A chunk sent again replaces the one stored (the same bytes: no change).
    pub async fn put_chunk(
        &self,
        user: UserId,
        upload_id: &str,
        index: u64,
        sha256: &str,
        bytes: Bytes,
    ) -> Result<(), FileError> {
        let slot = self
            .chunk_slot(user, upload_id, index, sha256, None)
            .await?;
        self.put_chunk_in(user, upload_id, slot, sha256, bytes)
            .await
    }

    /// Stores a chunk's body in the slot [`Self::chunk_slot`] checked for it.
    pub async fn put_chunk_in(
        &self,
        user: UserId,
        upload_id: &str,
        slot: ChunkSlot,
        sha256: &str,
        bytes: Bytes,
    ) -> Result<(), FileError> {
        let index = slot.index;
        if bytes.len() as u64 != slot.len {
            return Err(wrong_size(index, slot.len, bytes.len() as u64));
        }
        let (hashed, body) = tokio::task::spawn_blocking(move || (sha256_hex(&bytes), bytes))
            .await
            .map_err(|e| FileError::Unavailable(format!("hashing: {e}")))?;
        if hashed != sha256 {
            return Err(FileError::ChunkMismatch);
        }
        let len = body.len() as u64;
        self.storage
            .put(&keys::chunk(user, upload_id, index), body)
            .await?;
        metrics::counter!(super::metrics::BYTES_IN).increment(len);
        Ok(())
    }

    /// `GET /files/{upload_id}/chunks`: the indices stored, in order.
    pub async fn present_chunks(
        &self,
        user: UserId,
        upload_id: &str,
    ) -> Result<Vec<u64>, FileError> {
        let meta = self.live_upload(user, upload_id).await?;
        self.chunk_indices(user, upload_id, &meta).await
    }

    /// `POST /files/{upload_id}/complete`: assembles the chunks into the file's blob while
    /// hashing them, and records the file once its bytes are durable. A retry after success
    /// answers the same file id.
    pub async fn complete(&self, user: UserId, upload_id: &str) -> Result<String, FileError> {
        if !is_id(upload_id) {
            return Err(FileError::NotFound);
        }
        // Held to the end, its blob rewritten after the meta included.
        let _permit =
            self.complete_permits
                .try_acquire()
                .map_err(|_| FileError::CompletesBusy {
                    max: self.config.completes_in_flight_max,
                })?;
        let _turn = Completing::claim(&self.completing, format!("{user}/{upload_id}"))?;
        for done in [
            keys::upload_done(user, upload_id),
            keys::upload_done_before(user, upload_id),
        ] {
            if let Some(done) = self.read_json::<UploadDone>(&done).await? {
                return Ok(done.file_id);
            }
        }
        let meta = self.live_upload(user, upload_id).await?;
        let count = meta.chunk_count();
        let present = self.chunk_indices(user, upload_id, &meta).await?;
        if (present.len() as u64) < count {
            return Err(FileError::ChunksMissing {
                missing: count - present.len() as u64,
                total: count,
            });
        }
        let blob = keys::blob(&meta.sha256);
        let file_id = new_id()?;
        // The blob's reference record for this file comes first, and the choice to reuse a
        // stored blob is made under the blob's lock, which the collector holds from its look
        // at a blob's records to the blob's delete (`gc.rs`): on this node a blob this
        // complete reuses is never deleted under it.
        let stored = {
            let _blob = self.blob_lock(&meta.sha256).await;
            self.storage
                .put(&keys::blob_ref(&meta.sha256, &file_id), Bytes::new())
                .await?;
            // Content already stored (same SHA-256) is hashed all the same: only a client
            // that has the bytes gets a file of them.
            matches!(self.storage.head(&blob).await, Ok(m) if m.size_bytes == meta.size)
        };
        if let Err(e) = self
            .write_blob(user, upload_id, &meta, (!stored).then_some(&blob))
            .await
        {
            // No file. A blob write may fail after the blob became visible (a directory fsync
            // after the rename, an S3 complete done but reported failed), and the blobs' sweep
            // (`gc/blob_refs.rs`) finds a blob only through its records: then the record stays,
            // and past the grace the sweep removes it, whose file never came, and the blob with
            // it if it was the last. Otherwise (only hashed, or a mismatch: nothing written)
            // the record goes now; left behind, it would only keep the blob.
            let may_be_visible = !stored && !matches!(e, FileError::FileMismatch);
            if !may_be_visible {
                let _ = self
                    .storage
                    .delete(&keys::blob_ref(&meta.sha256, &file_id))
                    .await;
            }
            return Err(e);
        }
        let now = now_ms();
        let thumb = self
            .make_thumb(&file_id, &meta.mime, &blob, meta.size)
            .await;
        let file = FileMeta {
            file_id: file_id.clone(),
            uploader: user,
            name: meta.name.clone(),
            size: meta.size,
            mime: meta.mime.clone(),
            sha256: meta.sha256.clone(),
            created_ms: now,
            thumb,
            tracked: true,
        };
        self.put_json(&keys::file_meta(&file_id), &file).await?;
        self.keep_blob(user, upload_id, &meta, &file_id).await?;
        self.storage
            .put(&keys::user_file(user, &file_id, file.size), Bytes::new())
            .await?;
        let done = UploadDone {
            file_id: file_id.clone(),
            completed_ms: now,
        };
        self.put_json(&keys::upload_done(user, upload_id), &done)
            .await?;
        // The file is safe; what is left is tidying (the cleanup would do it too).
        self.delete_prefix(&keys::chunks(user, upload_id)).await?;
        self.storage
            .delete(&keys::upload_meta(user, upload_id))
            .await?;
        metrics::counter!(super::metrics::UPLOADS_COMPLETED).increment(1);
        tracing::info!(
            user,
            upload_id,
            file_id,
            size = file.size,
            "upload completed"
        );
        Ok(file_id)
    }

    /// Makes sure the file just recorded (its meta.json written) keeps its blob. The collector
    /// removes a blob's record whose file has no meta.json once the record is older than
    /// `files.unreferenced_grace_s` (`gc/blob_refs.rs`), and the blob with its last record; a
    /// complete slower than the grace (a multi-GiB assembly, a short grace) may have lost both
    /// between its record and its meta. So, meta written: the record is put again
    /// (idempotent), then the blob is looked for and written again from the chunks (still
    /// here) if it went. Both under the blob's lock, which the collector holds from its look
    /// at the records to the blob's delete: on this node it sees the record or the complete
    /// sees the blob gone. A collector on another node looks for the meta again after removing
    /// a record and puts the record back if the meta appeared (`gc_blob_ref`): one of the two
    /// sees the other's write. Also covers a blob reused and deleted by another node's
    /// collection that looked at its records before ours was written.
    async fn keep_blob(
        &self,
        user: UserId,
        upload_id: &str,
        meta: &UploadMeta,
        file_id: &str,
    ) -> Result<(), FileError> {
        let blob = keys::blob(&meta.sha256);
        let gone = {
            let _blob = self.blob_lock(&meta.sha256).await;
            self.storage
                .put(&keys::blob_ref(&meta.sha256, file_id), Bytes::new())
                .await?;
            matches!(self.storage.head(&blob).await, Err(StorageError::NotFound))
        };
        if gone {
            tracing::warn!(file_id, "blob deleted under a complete: written again");
            self.write_blob(user, upload_id, meta, Some(&blob)).await?;
        }
        Ok(())
    }

    /// Hashes the upload's chunks, writing them into `blob` when given; a whole-file mismatch
    /// discards the upload.
    async fn write_blob(
        &self,
        user: UserId,
        upload_id: &str,
        meta: &UploadMeta,
        blob: Option<&str>,
    ) -> Result<(), FileError> {
        let mut writer = match blob {
            Some(blob) => Some(self.storage.create(blob).await?),
            None => None,
        };
        let hashed = self
            .assemble(user, upload_id, meta, writer.as_deref_mut())
            .await;
        let hashed = match hashed {
            Ok(hashed) => hashed,
            Err(e) => {
                if let Some(w) = writer {
                    let _ = w.abort().await;
                }
                return Err(e);
            }
        };
        if hashed != meta.sha256 {
            if let Some(w) = writer {
                let _ = w.abort().await;
            }
            self.delete_upload(user, upload_id).await?;
            tracing::info!(
                user,
                upload_id,
                "upload discarded: whole-file sha256 mismatch"
            );
            return Err(FileError::FileMismatch);
        }
        if let Some(w) = writer {
            w.finish().await?;
        }
        Ok(())
    }

    /// The lock of the blobs whose SHA-256 hashes to one stripe.
    pub(super) async fn blob_lock(&self, sha256: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = u8::from_str_radix(&sha256[..2], 16).unwrap_or(0) as usize;
        self.blob_locks[stripe % BLOB_LOCK_STRIPES].lock().await
    }

    /// A finished file's metadata (`files/{file_id}/meta.json`); `None` when there is none.
    pub async fn file(&self, file_id: &str) -> Result<Option<FileMeta>, FileError> {
        if !is_id(file_id) {
            return Ok(None);
        }
        self.read_json(&keys::file_meta(file_id)).await
    }

    /// Streams the chunks in order into `writer` (when given) and returns their SHA-256.
    async fn assemble(
        &self,
        user: UserId,
        upload_id: &str,
        meta: &UploadMeta,
        mut writer: Option<&mut (dyn super::storage::ObjectWriter + 'static)>,
    ) -> Result<String, FileError> {
        let mut hashing = super::blocking_hash::BlockingHash::default();
        for index in 0..meta.chunk_count() {
            let (_, mut pieces) = self
                .storage
                .get(&keys::chunk(user, upload_id, index), None)
                .await?;
            let mut len = 0;
            while let Some(piece) = pieces.try_next().await? {
                len += piece.len() as u64;
                hashing.add(piece.clone()).await?;
                if let Some(w) = writer.as_deref_mut() {
                    w.write(piece).await?;
                }
            }
            if len != meta.chunk_len(index) {
                return Err(FileError::Unavailable(format!(
                    "chunk {index} of upload {upload_id} has {len} bytes in storage"
                )));
            }
        }
        hashing.finish().await
    }

    /// An upload of `user` that exists, is not completed and has not outlived its lifetime.
    async fn live_upload(&self, user: UserId, upload_id: &str) -> Result<UploadMeta, FileError> {
        if !is_id(upload_id) {
            return Err(FileError::NotFound);
        }
        let meta: UploadMeta = self
            .read_json(&keys::upload_meta(user, upload_id))
            .await?
            .ok_or(FileError::NotFound)?;
        if self.expired(meta.created_ms, now_ms()) {
            return Err(FileError::NotFound);
        }
        Ok(meta)
    }

    pub(super) fn expired(&self, since_ms: u64, now: u64) -> bool {
        since_ms.saturating_add(self.config.upload_lifetime_s.saturating_mul(1000)) <= now
    }

    async fn chunk_indices(
        &self,
        user: UserId,
        upload_id: &str,
        meta: &UploadMeta,
    ) -> Result<Vec<u64>, FileError> {
        let count = meta.chunk_count();
        let mut present = Vec::new();
        let prefix = keys::chunks(user, upload_id);
        self.for_each_key(&prefix, |key| {
            if let Some(index) = key[prefix.len()..]
                .parse::<u64>()
                .ok()
                .filter(|&i| i < count)
            {
                present.push(index);
            }
        })
        .await?;
        Ok(present)
    }

    /// The user's uploads that are neither completed nor expired. One listing step per upload:
    /// each hop skips the upload's chunks. A completed upload leaves nothing under `uploads/`
    /// (its record is under `uploads_done/`), so this costs the uploads in progress (at most
    /// `uploads_in_progress_max`) and the abandoned ones the cleanup has not removed yet.
    async fn uploads_in_progress(
        &self,
        user: UserId,
        now: u64,
    ) -> Result<Vec<UploadMeta>, FileError> {
        let prefix = keys::uploads_of(user);
        let mut after: Option<String> = None;
        let mut out = Vec::new();
        while let Some((_, upload_id)) = self.next_upload(&prefix, after.as_deref()).await? {
            after = Some(past_upload(user, &upload_id));
            if let Some(meta) = self
                .read_json::<UploadMeta>(&keys::upload_meta(user, &upload_id))
                .await?
                && !self.expired(meta.created_ms, now)
                && self
                    .read_json::<UploadDone>(&keys::upload_done(user, &upload_id))
                    .await?
                    .is_none()
            {
                out.push(meta);
            }
        }
        Ok(out)
    }

    /// The first upload with a key under `prefix` after `after`: `(user, upload_id)`.
    pub(super) async fn next_upload(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Option<(UserId, String)>, FileError> {
        let mut after = after.map(str::to_owned);
        loop {
            let page = self.storage.list(prefix, after.as_deref(), 1).await?;
            let Some(first) = page.into_iter().next() else {
                return Ok(None);
            };
            match keys::upload_of_key(&first.key) {
                Some((user, id)) if is_id(id) => return Ok(Some((user, id.to_owned()))),
                // Not the service's: skipped (never removed, it is not ours to judge).
                _ => after = Some(first.key),
            }
        }
    }

    /// Bytes of the user's finished files, from the sizes in their index keys.
    /// The bytes and the number of the user's finished files.
    async fn finished_bytes(&self, user: UserId) -> Result<(u64, u64), FileError> {
        let (mut total, mut files) = (0u64, 0u64);
        self.for_each_key(&keys::user_files(user), |key| {
            total = total.saturating_add(keys::user_file_size(key).unwrap_or(0));
            files += 1;
        })
        .await?;
        Ok((total, files))
    }

    /// Every key under `prefix`, page by page.
    pub(super) async fn for_each_key(
        &self,
        prefix: &str,
        mut f: impl FnMut(&str),
    ) -> Result<(), FileError> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(prefix, after.as_deref(), LIST_PAGE)
                .await?;
            for listed in &page {
                f(&listed.key);
            }
            if page.len() < LIST_PAGE {
                return Ok(());
            }
            after = page.last().map(|l| l.key.clone());
        }
    }

    /// Removes every key of an upload.
    pub(super) async fn delete_upload(
        &self,
        user: UserId,
        upload_id: &str,
    ) -> Result<(), FileError> {
        self.delete_prefix(&keys::upload_dir(user, upload_id))
            .await
            .map(drop)
    }

    /// Removes every key under `prefix`; how many there were.
    pub(super) async fn delete_prefix(&self, prefix: &str) -> Result<usize, FileError> {
        let mut deleted = 0;
        loop {
            let page = self.storage.list(prefix, None, LIST_PAGE).await?;
            if page.is_empty() {
                return Ok(deleted);
            }
            for listed in page {
                self.storage.delete(&listed.key).await?;
                deleted += 1;
            }
        }
    }

    pub(super) async fn read_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, FileError> {
        match self.read_record(key).await? {
            Some(bytes) => parse_record(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A record's bytes (at most `RECORD_BYTES_MAX`); `None` when there is none.
    pub(super) async fn read_record(&self, key: &str) -> Result<Option<Vec<u8>>, FileError> {
        let mut pieces = match self
            .storage
            .get(key, Some(0..RECORD_BYTES_MAX as u64))
            .await
        {
            Ok((_, pieces)) => pieces,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        while let Some(piece) = pieces.try_next().await? {
            bytes.extend_from_slice(&piece);
        }
        Ok(Some(bytes))
    }

    pub(super) async fn put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(value).expect("records serialise");
        Ok(self.storage.put(key, Bytes::from(bytes)).await?)
    }
}

/// A record read back (`read_record`), or why it cannot be.
pub(super) fn parse_record<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, FileError> {
    serde_json::from_slice(bytes)
        .map_err(|e| FileError::Unavailable(format!("{key}: unreadable record: {e}")))
}

/// A key that sorts after every key of the upload (`~` is above the key alphabet).
pub(super) fn past_upload(user: UserId, upload_id: &str) -> String {
    format!("{}~", keys::upload_dir(user, upload_id))
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// This node's claim on completing one upload; released on drop.
struct Completing<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Completing<'a> {
    fn claim(set: &'a Mutex<HashSet<String>>, key: String) -> Result<Self, FileError> {
        let mut held = set.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(key.clone()) {
            return Err(FileError::Completing);
        }
        Ok(Self { set, key })
    }
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        let mut held = self.set.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.key);
    }
}

fn wrong_size(index: u64, want: u64, got: u64) -> FileError {
    FileError::bad(
        "bad_chunk_size",
        format!("chunk {index} must be exactly {want} bytes (got {got})"),
    )
}

/// A checked chunk's index and length, and the room its body holds (`FileService::chunk_slot`).
pub struct ChunkSlot {
    index: u64,
    len: u64,
    _room: ChunkRoom,
}

impl ChunkSlot {
    /// The body's exact length in bytes.
    pub fn body_len(&self) -> u64 {
        self.len
    }
}

/// Room for one chunk body: the node's permit and one of the user's.
struct ChunkRoom {
    user: UserId,
    by_user: Arc<Mutex<HashMap<UserId, usize>>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ChunkRoom {
    fn drop(&mut self) {
        let mut by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                by_user.remove(&self.user);
            }
        }
    }
}
