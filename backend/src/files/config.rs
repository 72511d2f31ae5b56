//! `[files]`: uploads over HTTP, their limits, and where the bytes are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Smallest and largest `files.chunk_bytes`: below, a large file is too many requests; above,
/// each chunk in flight holds too much memory (a chunk is checked whole before it is stored).
pub const CHUNK_BYTES_MIN: u64 = 64 * 1024;
pub const CHUNK_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Chunks one file may have, at most: bounds the present-chunks answer and each listing.
pub const CHUNKS_PER_FILE_MAX: u64 = 100_000;
/// Largest `files.file_bytes_max` and `files.user_quota_bytes`: 1 TiB and 1 PiB (typo guards).
pub const FILE_BYTES_LIMIT: u64 = 1 << 40;
pub const QUOTA_BYTES_LIMIT: u64 = 1 << 50;
/// Longest file name a server may be configured to accept, in bytes.
pub const NAME_BYTES_LIMIT: usize = 1024;

/// Where finished files and uploads in progress are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStorageKind {
    /// Files under `files.dir` on this machine: one box.
    #[default]
    Local,
    /// S3-compatible object storage (`[files.s3]`), shared by the nodes of a cluster.
    S3,
}

/// `[files]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Off: no `/files` paths on the client listeners.
    pub enabled: bool,
    pub storage: FileStorageKind,
    /// `storage = "local"`: the directory; empty means `files` under `storage.data_dir`.
    pub dir: PathBuf,
    /// Size of every chunk of an upload but the last, in bytes (the server tells the client).
    pub chunk_bytes: u64,
    /// Largest file, in bytes.
    pub file_bytes_max: u64,
    /// Uploads one user may have started and not completed, at most: 429 past it.
    pub uploads_in_progress_max: u32,
    /// Bytes one user may keep: finished files plus the declared sizes of uploads in progress.
    pub user_quota_bytes: u64,
    /// Files one user may keep, finished or in progress (each quota check lists them).
    pub files_per_user_max: u32,
    /// An upload not completed this long after it was created is removed, in seconds.
    pub upload_lifetime_s: u64,
    /// Longest file name, in bytes of UTF-8.
    pub name_bytes_max: usize,
    /// Chunk bodies being received at once on this node, at most (each held in memory until
    /// its checksum is verified): 503 with Retry-After past it.
    pub chunks_in_flight_max: usize,
    /// Chunk bodies one user may be sending at once on this node, at most: a user's slow
    /// chunks never hold the whole node's room (503 with Retry-After past it).
    pub chunks_in_flight_per_user_max: usize,
    /// Upload completes running at once on this node, at most: 503 with Retry-After past it.
    /// Each assembles a file from its chunks, holding on S3 up to `files.s3.part_bytes` ×
    /// (`parts_in_flight_max` + 2) bytes of memory (32 MiB by default).
    pub completes_in_flight_max: usize,
    /// A request body (a chunk, the JSON of `POST /files`) must arrive at this rate at least,
    /// in bytes per second: a body of `n` bytes is given `body_timeout_ms_min` plus
    /// `n / body_bytes_per_s_min` seconds, then answered 408 and its connection closed. A
    /// trickled body would otherwise hold its chunk slot (and its memory) for minutes.
    pub body_bytes_per_s_min: u64,
    /// The least time any request body is given, in milliseconds (see `body_bytes_per_s_min`).
    pub body_timeout_ms_min: u64,
    /// A finished file that no message references (none sent, or every one recalled) is
    /// removed by the collector this long after it was completed, in seconds: it covers
    /// "uploaded, message not sent yet".
    pub unreferenced_grace_s: u64,
    /// Time between two passes of the collector (`gc.rs`), in seconds.
    pub gc_interval_s: u64,
    /// Storage keys one collector pass lists, reads or deletes, at most (it resumes where it
    /// stopped on the next pass).
    pub gc_keys_per_pass: usize,
    /// Real time one pass of the uploads' cleanup (every minute) may take, in milliseconds:
    /// a pass goes on while most of what it looks at has expired, the abandoned uploads'
    /// walk for half of this, the completed uploads' records for the rest.
    pub cleanup_pass_ms_max: u64,
    /// `[files.s3]`: the bucket with `storage = "s3"`.
    pub s3: super::storage::s3::S3Config,
    /// `[files.thumbnail]`: how images' thumbnails are made (once, at complete).
    pub thumbnail: super::thumbnail::ThumbnailConfig,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            storage: FileStorageKind::Local,
            dir: PathBuf::new(),
            chunk_bytes: 1024 * 1024,
            file_bytes_max: 100 * 1024 * 1024,
            uploads_in_progress_max: 8,
            user_quota_bytes: 1024 * 1024 * 1024,
            files_per_user_max: 10_000,
            upload_lifetime_s: 24 * 3600,
            name_bytes_max: 255,
            chunks_in_flight_max: 64,
            chunks_in_flight_per_user_max: 4,
            completes_in_flight_max: 16,
            body_bytes_per_s_min: 16 * 1024,
            body_timeout_ms_min: 10_000,
            unreferenced_grace_s: 24 * 3600,
            gc_interval_s: 300,
            gc_keys_per_pass: 10_000,
            cleanup_pass_ms_max: 10_000,
            s3: Default::default(),
            thumbnail: Default::default(),
        }
    }
}

impl FilesConfig {
    /// How long a request body of `bytes` may take to arrive.
    pub fn body_timeout(&self, bytes: u64) -> std::time::Duration {
        let rate = self.body_bytes_per_s_min.max(1);
        std::time::Duration::from_millis(self.body_timeout_ms_min)
            + std::time::Duration::from_millis(bytes.saturating_mul(1000) / rate)
    }

    /// The local adapter's directory.
    pub fn local_dir(&self, data_dir: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            data_dir.join("files")
        } else {
            self.dir.clone()
        }
    }

    /// Every problem of the section, as `key: problem` lines. `cluster` is whether the node
    /// runs in cluster mode.
    pub fn problems(&self, cluster: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&self.chunk_bytes),
            "files.chunk_bytes: must be between 65536 (64 KiB) and 16777216 (16 MiB)",
        );
        check(
            (1..=FILE_BYTES_LIMIT).contains(&self.file_bytes_max),
            "files.file_bytes_max: must be between 1 and 1099511627776 (1 TiB)",
        );
        check(
            self.chunk_bytes == 0
                || self.file_bytes_max.div_ceil(self.chunk_bytes) <= CHUNKS_PER_FILE_MAX,
            "files.file_bytes_max: at most 100000 chunks of files.chunk_bytes per file (raise chunk_bytes)",
        );
        check(
            (1..=1_000).contains(&self.uploads_in_progress_max),
            "files.uploads_in_progress_max: must be between 1 and 1000",
        );
        check(
            (1..=QUOTA_BYTES_LIMIT).contains(&self.user_quota_bytes),
            "files.user_quota_bytes: must be between 1 and 1125899906842624 (1 PiB)",
        );
        check(
            (1024..=1 << 30).contains(&self.body_bytes_per_s_min),
            "files.body_bytes_per_s_min: must be between 1024 and 1073741824 (1 GiB/s)",
        );
        check(
            (100..=600_000).contains(&self.body_timeout_ms_min),
            "files.body_timeout_ms_min: must be between 100 and 600000 (10 minutes)",
        );
        check(
            (60..=30 * 24 * 3600).contains(&self.upload_lifetime_s),
            "files.upload_lifetime_s: must be between 60 and 2592000 (30 days)",
        );
        check(
            (1..=NAME_BYTES_LIMIT).contains(&self.name_bytes_max),
            "files.name_bytes_max: must be between 1 and 1024",
        );
        check(
            (1..=4_096).contains(&self.chunks_in_flight_max),
            "files.chunks_in_flight_max: must be between 1 and 4096",
        );
        check(
            (1..=1_000_000).contains(&self.files_per_user_max),
            "files.files_per_user_max: must be between 1 and 1000000",
        );
        check(
            (1..=4_096).contains(&self.chunks_in_flight_per_user_max),
            "files.chunks_in_flight_per_user_max: must be between 1 and 4096",
        );
        check(
            (1..=1_024).contains(&self.completes_in_flight_max),
            "files.completes_in_flight_max: must be between 1 and 1024",
        );
        check(
            (60..=365 * 24 * 3600).contains(&self.unreferenced_grace_s),
            "files.unreferenced_grace_s: must be between 60 and 31536000 (365 days)",
        );
        check(
            (1..=24 * 3600).contains(&self.gc_interval_s),
            "files.gc_interval_s: must be between 1 and 86400 (a day)",
        );
        check(
            (10..=1_000_000).contains(&self.gc_keys_per_pass),
            "files.gc_keys_per_pass: must be between 10 and 1000000",
        );
        check(
            (100..=50_000).contains(&self.cleanup_pass_ms_max),
            "files.cleanup_pass_ms_max: must be between 100 and 50000 (less than the minute between passes)",
        );
        if self.enabled && cluster && self.storage == FileStorageKind::Local {
            out.push("files.storage: \"local\" keeps files on one node, which the other nodes of a cluster cannot read; use storage = \"s3\" in cluster mode (or enabled = false)".into());
        }
        if self.enabled && self.storage == FileStorageKind::S3 {
            out.extend(self.s3.problems());
            let largest = (self.s3.part_bytes as u64).saturating_mul(super::storage::s3::PARTS_MAX);
            if self.file_bytes_max > largest {
                out.push(format!(
                    "files.file_bytes_max: with storage = \"s3\" a file is at most files.s3.part_bytes × 10000 (S3's most parts per upload), {largest} bytes with part_bytes = {}; raise files.s3.part_bytes or lower file_bytes_max",
                    self.s3.part_bytes
                ));
            }
        }
        out.extend(self.thumbnail.problems("files.thumbnail"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_value_is_named() {
        assert!(FilesConfig::default().problems(false).is_empty());
        let bad = FilesConfig {
            chunk_bytes: 1000,
            file_bytes_max: 0,
            uploads_in_progress_max: 0,
            user_quota_bytes: 0,
            upload_lifetime_s: 1,
            name_bytes_max: 0,
            chunks_in_flight_max: 0,
            chunks_in_flight_per_user_max: 0,
            completes_in_flight_max: 0,
            unreferenced_grace_s: 1,
            gc_interval_s: 0,
            gc_keys_per_pass: 1,
            cleanup_pass_ms_max: 0,
            ..FilesConfig::default()
        };
        let problems = bad.problems(false).join("\n");
        for key in [
            "files.chunk_bytes",
            "files.file_bytes_max: must be between",
            "files.uploads_in_progress_max",
            "files.user_quota_bytes",
            "files.upload_lifetime_s",
            "files.name_bytes_max",
            "files.chunks_in_flight_max",
            "files.chunks_in_flight_per_user_max",
            "files.completes_in_flight_max",
            "files.unreferenced_grace_s",
            "files.gc_interval_s",
            "files.gc_keys_per_pass",
            "files.cleanup_pass_ms_max",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let too_many_chunks = FilesConfig {
            chunk_bytes: CHUNK_BYTES_MIN,
            file_bytes_max: FILE_BYTES_LIMIT,
            ..FilesConfig::default()
        };
        assert!(too_many_chunks.problems(false)[0].contains("100000 chunks"));
    }

    #[test]
    fn on_s3_a_file_must_fit_in_the_most_parts_s3_takes() {
        let s3 = |file_bytes_max: u64, part_bytes: usize| FilesConfig {
            storage: FileStorageKind::S3,
            file_bytes_max,
            chunk_bytes: CHUNK_BYTES_MAX,
            s3: crate::files::storage::s3::S3Config {
                bucket: "b".into(),
                access_key_id: "id".into(),
                secret_access_key: "secret".into(),
                part_bytes,
                ..Default::default()
            },
            ..FilesConfig::default()
        };
        let part = 8 << 20;
        assert!(s3(part as u64 * 10_000, part).problems(false).is_empty());
        let problems = s3(part as u64 * 10_000 + 1, part).problems(false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("files.file_bytes_max")
                && problems[0].contains("files.s3.part_bytes"),
            "{problems:?}"
        );
        // Bigger parts make room; local storage has no such limit.
        assert!(s3(FILE_BYTES_LIMIT, 128 << 20).problems(false).is_empty());
        let local = FilesConfig {
            file_bytes_max: FILE_BYTES_LIMIT,
            chunk_bytes: CHUNK_BYTES_MAX,
            ..FilesConfig::default()
        };
        assert!(local.problems(false).is_empty());
    }

    #[test]
    fn local_storage_is_refused_in_cluster_mode_unless_files_are_off() {
        let problems = FilesConfig::default().problems(true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("other nodes"), "{problems:?}");
        let off = FilesConfig {
            enabled: false,
            ..FilesConfig::default()
        };
        assert!(off.problems(true).is_empty());
    }

    #[test]
    fn the_local_dir_defaults_under_the_data_dir() {
        let config = FilesConfig::default();
        assert_eq!(
            config.local_dir(Path::new("/var/lib/ringchat")),
            Path::new("/var/lib/ringchat/files")
        );
    }
}
