//! `[log]`: the filter, the console's format, the rotated files, and the limits of the live
//! tail, the search and the export.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The default filter: INFO, but the storage engine's routine INFO lines ("Creating database",
/// "Finished ingestion writer" …) only from WARN on.
pub const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";
/// Longest filter accepted (config, `PUT /api/logs/filter`, `PATCH /api/config`).
pub const FILTER_BYTES_MAX: usize = 1024;
/// Name of the default log directory, next to the data dir.
const DEFAULT_DIR_NAME: &str = "ringchat-logs";

/// How the console (stderr) shows log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleFormat {
    /// One readable line per event; colours only when stderr is a terminal.
    Text,
    /// The same JSON lines as the files.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which events are logged (`tracing` filter directives). `RINGCHAT_LOG`, when set, wins.
    pub filter: String,
    /// The console's format.
    pub format: ConsoleFormat,
    /// Write JSON-lines files (rotated) into `dir`.
    pub file: bool,
    /// Where the files go; empty: `ringchat-logs` next to `storage.data_dir`.
    pub dir: String,
    /// A file is closed and a new one started before it would pass this size, in bytes.
    pub file_bytes_max: u64,
    /// Also start a new file when the UTC date changes.
    pub rotate_daily: bool,
    /// Files kept; the oldest are deleted past it.
    pub files_max: usize,
    /// Lines waiting for each writer (files, console), at most; past it lines are dropped
    /// and counted, so that logging never blocks a shard or the sequencer.
    pub buffer_lines_max: usize,
    /// Longest line written, in bytes; a longer event keeps the start of its message only.
    pub line_bytes_max: usize,
    /// Recent events kept in memory for the live tail (and the capacity of its broadcast).
    pub tail_events_max: usize,
    /// Live-tail streams (`GET /api/logs/stream`) open at once, at most.
    pub streams_max: usize,
    /// Live-tail streams one operator (a dashboard user's sessions, or one API key) holds
    /// at once, at most.
    pub streams_per_operator_max: usize,
    /// A stream ends after this long, in seconds; the browser reconnects (authenticating again)
    /// and resumes where it was.
    pub stream_duration_max_s: u64,
    /// Bytes of log files one search request reads, at most, before it returns a cursor.
    pub search_scan_bytes_max: u64,
    /// Bytes one export sends, at most.
    pub export_bytes_max: u64,
    /// An export ends after this long, in seconds, however far it got (the download is then
    /// incomplete): a client that reads slowly, or not at all, holds its `scans_max` slot no
    /// longer.
    pub export_duration_max_s: u64,
    /// Searches and exports running at once, at most.
    pub scans_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: DEFAULT_FILTER.to_owned(),
            format: ConsoleFormat::Text,
            file: true,
            dir: String::new(),
            file_bytes_max: 64 * 1024 * 1024,
            rotate_daily: true,
            files_max: 14,
            buffer_lines_max: 16_384,
            line_bytes_max: 16 * 1024,
            tail_events_max: 2_048,
            streams_max: 16,
            streams_per_operator_max: 4,
            stream_duration_max_s: 600,
            search_scan_bytes_max: 32 * 1024 * 1024,
            export_bytes_max: 256 * 1024 * 1024,
            export_duration_max_s: 600,
            scans_max: 2,
        }
    }
}

impl LogConfig {
    /// The log directory: `dir`, or `ringchat-logs` beside the data dir.
    pub fn resolve_dir(&self, data_dir: &Path) -> PathBuf {
        if !self.dir.is_empty() {
            return PathBuf::from(&self.dir);
        }
        match data_dir.parent() {
            Some(parent) => parent.join(DEFAULT_DIR_NAME),
            None => PathBuf::from(DEFAULT_DIR_NAME),
        }
    }

    /// Values that parse but make no sense.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(why) = parse_filter(&self.filter) {
            out.push(format!("log.filter: {why}"));
        }
        let mut range = |key: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                out.push(format!("log.{key}: must be between {lo} and {hi}"));
            }
        };
        range("file_bytes_max", self.file_bytes_max, 1024, 1 << 40);
        range("files_max", self.files_max as u64, 1, 100_000);
        range(
            "buffer_lines_max",
            self.buffer_lines_max as u64,
            1,
            10_000_000,
        );
        range("line_bytes_max", self.line_bytes_max as u64, 256, 16 << 20);
        range("tail_events_max", self.tail_events_max as u64, 1, 1_000_000);
        range("streams_max", self.streams_max as u64, 1, 10_000);
        range(
            "streams_per_operator_max",
            self.streams_per_operator_max as u64,
            1,
            10_000,
        );
        range(
            "stream_duration_max_s",
            self.stream_duration_max_s,
            1,
            24 * 3600,
        );
        // A search must be able to read past the longest line it skips (see `search`).
        range(
            "search_scan_bytes_max",
            self.search_scan_bytes_max,
            1 << 20,
            1 << 40,
        );
        range("export_bytes_max", self.export_bytes_max, 1024, 1 << 40);
        range(
            "export_duration_max_s",
            self.export_duration_max_s,
            1,
            24 * 3600,
        );
        range("scans_max", self.scans_max as u64, 1, 64);
        out
    }
}

/// Checks filter directives (`info,ringchat_backend=debug`) and builds the filter.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    if directives.trim().is_empty() {
        return Err(
            "the filter is empty (for example \"info\" or \"warn,ringchat_backend=debug\")".into(),
        );
    }
    if directives.len() > FILTER_BYTES_MAX {
        return Err(format!(
            "the filter is longer than {FILTER_BYTES_MAX} bytes"
        ));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("{directives:?} is not a valid filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_filters_are_checked() {
        assert!(LogConfig::default().problems().is_empty());
        assert!(parse_filter(DEFAULT_FILTER).is_ok());
        assert!(parse_filter("warn,ringchat_backend::admin=debug").is_ok());
        assert!(parse_filter("").is_err());
        assert!(parse_filter("info,=nonsense=").is_err());
        assert!(parse_filter(&"a".repeat(FILTER_BYTES_MAX + 1)).is_err());
        let none_each = LogConfig {
            streams_per_operator_max: 0,
            ..LogConfig::default()
        };
        assert!(
            none_each.problems()[0].starts_with("log.streams_per_operator_max"),
            "{:?}",
            none_each.problems()
        );
    }

    #[test]
    fn the_default_dir_is_beside_the_data_dir() {
        let c = LogConfig::default();
        assert_eq!(
            c.resolve_dir(Path::new("/var/lib/ringchat/data")),
            Path::new("/var/lib/ringchat/ringchat-logs")
        );
        assert_eq!(
            c.resolve_dir(Path::new("./ringchat-data")),
            Path::new("./ringchat-logs")
        );
    }
}
