//! `[backup]`: scheduled backups of the embedded store, written by the running server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest `backup.keep`.
pub const KEEP_MAX: usize = 10_000;

/// `[backup]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where the server writes backups (scheduled ones and `POST /api/backups`), one directory
    /// each; "" turns both off.
    pub dir: PathBuf,
    /// Seconds between scheduled backups; 0 is none (the admin API still takes them).
    pub interval_s: u64,
    /// Backups kept in `dir`, newest first; older ones are deleted after each new one.
    pub keep: usize,
    /// Records per page read from the snapshot and written to the backup.
    pub batch_records: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            interval_s: 0,
            keep: 7,
            batch_records: super::BATCH_RECORDS_DEFAULT,
        }
    }
}

impl BackupConfig {
    /// Every problem, as `key: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=KEEP_MAX).contains(&self.keep) {
            out.push(format!("backup.keep: must be between 1 and {KEEP_MAX}"));
        }
        if !(1..=super::BATCH_RECORDS_MAX).contains(&self.batch_records) {
            out.push(format!(
                "backup.batch_records: must be between 1 and {}",
                super::BATCH_RECORDS_MAX
            ));
        }
        if self.interval_s > 0 && self.dir.as_os_str().is_empty() {
            out.push("backup.interval_s: scheduled backups need backup.dir".to_owned());
        }
        if self.interval_s > 0 && self.interval_s < 60 {
            out.push("backup.interval_s: must be 0 (off) or at least 60".to_owned());
        }
        out
    }
}
