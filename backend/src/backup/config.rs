//! `[backup]`: scheduled backups of the embedded store, written by the running server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::StorageEngine;

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
    /// Every problem, as `key: problem` lines, for a server whose store of record is `engine`.
    pub fn problems(&self, engine: StorageEngine) -> Vec<String> {
        let mut out = Vec::new();
        // Only the embedded store has a dump the server can write (`StoreEngine::dump`):
        // accepted, every scheduled backup would fail, for ever.
        if engine != StorageEngine::Embedded
            && (!self.dir.as_os_str().is_empty() || self.interval_s > 0)
        {
            out.push(
                "backup.dir: only the embedded store is backed up by the server; use the database's own tools (README, \"Backup, restore and moving to a cluster store\")"
                    .to_owned(),
            );
        }
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

#[cfg(test)]
mod tests {
    use crate::config::{Settings, StorageEngine};

    const ONLY_EMBEDDED: &str = "backup.dir: only the embedded store is backed up by the server";

    /// A PostgreSQL or ScyllaDB store has no dump of the server's own: `[backup]` with it is a
    /// problem at start, not a failure every interval.
    #[test]
    fn backups_of_the_server_need_the_embedded_store() {
        for engine in [StorageEngine::Postgres, StorageEngine::Scylla] {
            for (dir, interval_s) in [
                ("/var/backups/ringchat", 0),
                ("/var/backups/ringchat", 3_600),
                ("", 3_600),
            ] {
                let mut settings = Settings::default();
                settings.storage.engine = engine;
                settings.backup.dir = dir.into();
                settings.backup.interval_s = interval_s;
                let problems = settings.problems();
                assert!(
                    problems.iter().any(|p| p.starts_with(ONLY_EMBEDDED)),
                    "{engine:?} {dir:?} {interval_s}: {problems:?}"
                );
            }
            // No [backup]: nothing to say.
            let mut settings = Settings::default();
            settings.storage.engine = engine;
            let problems = settings.problems();
            assert!(
                !problems.iter().any(|p| p.starts_with(ONLY_EMBEDDED)),
                "{problems:?}"
            );
        }
        let mut settings = Settings::default();
        settings.backup.dir = "/var/backups/ringchat".into();
        settings.backup.interval_s = 3_600;
        assert_eq!(settings.problems(), Vec::<String>::new());
    }
}
