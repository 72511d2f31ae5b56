//! `[observe]`: the admin overview's history and the activity counters, every bound named.

use serde::{Deserialize, Serialize};

/// `[observe]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Seconds of one-per-second samples kept for the overview's charts (each a few hundred
    /// bytes, more with many cores).
    pub history_seconds: u32,
    /// Seconds the overview's latency percentiles are taken over.
    pub latency_window_seconds: u32,
    /// Seconds between measurements of the store's size on disk (a walk of the data dir but
    /// the local file storage).
    pub store_size_interval_s: u32,
    /// Seconds between measurements of the local file storage's size on disk (a walk of
    /// `files.dir`, a stat per file, on a thread of its own).
    pub files_size_interval_s: u32,
    /// UTC days of activity kept, in memory and in `<data_dir>/activity/` (16 KiB each).
    pub activity_days_kept: u32,
    /// Senders counted per minute for "heaviest senders" (space-saving): anyone who sends more
    /// than 1/this of a minute's messages is never missed. Each stored message scans them.
    pub top_senders_tracked: u32,
    /// Seconds between writes of the day's activity counts (also written at shutdown).
    pub activity_persist_interval_s: u32,
    /// `[observe.otlp]`: spans of messages' paths across nodes (off by default); last, as a
    /// table follows the plain keys in TOML.
    pub otlp: super::otlp::OtlpConfig,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            history_seconds: 300,
            latency_window_seconds: 5,
            store_size_interval_s: 10,
            files_size_interval_s: 300,
            activity_days_kept: 90,
            top_senders_tracked: 64,
            activity_persist_interval_s: 60,
            otlp: super::otlp::OtlpConfig::default(),
        }
    }
}

impl ObserveConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (10..=86_400).contains(&self.history_seconds),
            "observe.history_seconds: must be between 10 and 86400",
        );
        check(
            (1..=60).contains(&self.latency_window_seconds),
            "observe.latency_window_seconds: must be between 1 and 60",
        );
        check(
            (1..=3_600).contains(&self.store_size_interval_s),
            "observe.store_size_interval_s: must be between 1 and 3600",
        );
        check(
            (10..=86_400).contains(&self.files_size_interval_s),
            "observe.files_size_interval_s: must be between 10 and 86400",
        );
        check(
            (31..=3_660).contains(&self.activity_days_kept),
            "observe.activity_days_kept: must be between 31 (a month of actives) and 3660",
        );
        check(
            (8..=1_024).contains(&self.top_senders_tracked),
            "observe.top_senders_tracked: must be between 8 and 1024",
        );
        check(
            (1..=3_600).contains(&self.activity_persist_interval_s),
            "observe.activity_persist_interval_s: must be between 1 and 3600",
        );
        out.extend(self.otlp.problems());
        out
    }
}
