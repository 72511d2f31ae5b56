//! The store's and the files' size on disk. The data dir (but the local file storage) is walked
//! every `observe.store_size_interval_s` by the sampler; the local file storage, which may hold
//! millions of files, every `observe.files_size_interval_s` on a thread of its own, so that
//! its walk (a stat per file) never holds up the sampler's one-second loop, nor a thread of the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::sampler::lock;
use crate::admin::Admin;
use crate::config::Settings;
use crate::files::FileStorageKind;
use crate::time::now_ms;

/// The store's data dir on disk, and the local file storage's.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct StoreUsage {
    /// Bytes of every file under the data dir but the local file storage's directory.
    pub size_bytes: u64,
    /// Free and total bytes of the file system holding it (for an unprivileged user).
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// When it was measured; 0 before the first measurement.
    pub measured_at_ms: u64,
    /// Bytes of every file under the local file storage's directory (`files.dir`), wherever
    /// it is; 0 with S3 storage, files off, or before the first measurement.
    pub files_bytes: u64,
    /// When the files were measured (every `observe.files_size_interval_s`); 0 before.
    pub files_measured_at_ms: u64,
}

/// The local file storage's last measurement.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FilesUsage {
    pub size_bytes: u64,
    pub measured_at_ms: u64,
}

/// Bytes of every regular file under a directory (blocking): [`dir_bytes`], but in tests.
pub(super) type Walk = Arc<dyn Fn(&Path) -> u64 + Send + Sync>;

/// The local file storage's directory, when files are on and stored on this machine.
pub(super) fn local_files_dir(settings: &Settings) -> Option<PathBuf> {
    let files = &settings.files;
    (files.enabled && files.storage == FileStorageKind::Local)
        .then(|| files.local_dir(&settings.storage.data_dir))
}

/// The data dir's size (every file under it but under `skip`, the local file storage) and its
/// file system's free space. Blocking.
pub fn measure_store(dir: &Path, skip: Option<&Path>) -> StoreUsage {
    let (free, total) = match rustix::fs::statvfs(dir) {
        Ok(s) => (
            s.f_bavail.saturating_mul(s.f_frsize),
            s.f_blocks.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    };
    StoreUsage {
        size_bytes: walk(dir, skip),
        disk_free_bytes: free,
        disk_total_bytes: total,
        measured_at_ms: now_ms(),
        ..StoreUsage::default()
    }
}

/// Measures the local file storage every `every`, each walk on a thread of its own; runs while
/// the sampler does. A walk still running when the next is due delays it (one walk at a time).
pub(super) async fn measure_files(admin: Arc<Admin>, dir: PathBuf, every: Duration, walk: Walk) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (done, bytes) = tokio::sync::oneshot::channel();
        let (dir, walk) = (dir.clone(), Arc::clone(&walk));
        let spawned = std::thread::Builder::new()
            .name("rc-files-size".into())
            .spawn(move || {
                let _ = done.send(walk(&dir));
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "the files' size was not measured (no thread)");
            continue;
        }
        if let Ok(size_bytes) = bytes.await {
            *lock(&admin.overview.files) = FilesUsage {
                size_bytes,
                measured_at_ms: now_ms(),
            };
        }
    }
}

/// Bytes of every regular file under `root` (symlinks not followed).
pub(super) fn dir_bytes(root: &Path) -> u64 {
    walk(root, None)
}

/// Bytes of every regular file under `root` but under `skip` (symlinks not followed). Files
/// that vanish during the walk (compaction) are skipped. `skip` is recognised by its device
/// and inode, not its spelling: `files.dir` may name the data dir's `files` absolutely while
/// the data dir is relative (or through a symlink).
fn walk(root: &Path, skip: Option<&Path>) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let skip = skip
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()));
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                if skip != Some((meta.dev(), meta.ino())) {
                    dirs.push(entry.path());
                }
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
