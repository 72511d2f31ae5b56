//! The log files: `ringchat-YYYY-MM-DD.NNNNNN.log` (the UTC date it was started, then a number
//! that only grows), JSON lines. A file is never renamed, so a search cursor naming one stays
//! valid; the writer starts a new one by size or by day and deletes the oldest past
//! `files_max`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::config::LogConfig;
use super::line::{LogLine, Severity, timestamp};
use super::sink::LineTarget;

const PREFIX: &str = "ringchat-";
const SUFFIX: &str = ".log";
/// After a failed write, the next attempt waits this long (a full disk is not retried per line).
const RETRY_AFTER: Duration = Duration::from_secs(1);
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The log files in `dir`, oldest first, as (number, path).
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let number = parse_name(name.to_str()?)?;
            Some((number, e.path()))
        })
        .collect();
    files.sort_unstable_by_key(|(n, _)| *n);
    Ok(files)
}

fn parse_name(name: &str) -> Option<u64> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (date, number) = middle.split_once('.')?;
    (date.len() == 10 && number.len() >= 6 && number.bytes().all(|b| b.is_ascii_digit()))
        .then(|| number.parse().ok())
        .flatten()
}

pub(super) fn file_name(number: u64, day: u64) -> String {
    let date = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(day * 86_400));
    format!("{PREFIX}{}.{number:06}{SUFFIX}", &date.to_string()[..10])
}

fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

struct Current {
    day: u64,
    bytes: u64,
    out: BufWriter<File>,
}

/// The writer's side: appends lines, rotates, prunes.
pub struct RotatingFile {
    dir: PathBuf,
    bytes_max: u64,
    files_max: usize,
    daily: bool,
    current: Option<Current>,
    last_number: u64,
    retry_at: Option<Instant>,
}

impl RotatingFile {
    /// Creates `dir` (owner and group only) and continues the newest file if it is today's and
    /// has room.
    pub fn open(dir: &Path, config: &LogConfig) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
        let newest = list(dir)?.pop();
        let mut file = Self {
            dir: dir.to_owned(),
            bytes_max: config.file_bytes_max,
            files_max: config.files_max,
            daily: config.rotate_daily,
            current: None,
            last_number: newest.as_ref().map_or(0, |(n, _)| *n),
            retry_at: None,
        };
        if let Some((number, path)) = newest {
            let bytes = std::fs::metadata(&path)?.len();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let day = today();
            if bytes < file.bytes_max && (!file.daily || name == file_name(number, day)) {
                file.current = Some(Current {
                    day,
                    bytes,
                    out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, append(&path)?),
                });
            }
        }
        if file.current.is_none() {
            file.start_next(today())?;
        }
        Ok(file)
    }

    fn start_next(&mut self, day: u64) -> io::Result<()> {
        if let Some(mut old) = self.current.take() {
            old.out.flush()?;
        }
        let number = self.last_number + 1;
        let path = self.dir.join(file_name(number, day));
        self.current = Some(Current {
            day,
            bytes: 0,
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, append(&path)?),
        });
        self.last_number = number;
        self.prune()
    }

    /// Deletes the oldest files past `files_max` (the current one counts).
    fn prune(&self) -> io::Result<()> {
        let files = list(&self.dir)?;
        let excess = files.len().saturating_sub(self.files_max);
        for (_, path) in &files[..excess] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn write_inner(&mut self, line: &[u8]) -> io::Result<()> {
        let day = today();
        let len = line.len() as u64;
        let rotate = match &self.current {
            None => true,
            Some(c) => {
                (c.bytes > 0 && c.bytes + len > self.bytes_max) || (self.daily && c.day != day)
            }
        };
        if rotate {
            self.start_next(day)?;
        }
        let current = self
            .current
            .as_mut()
            .expect("a file is open after rotation");
        current.out.write_all(line)?;
        current.bytes += len;
        Ok(())
    }

    fn attempt(&mut self, f: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(io::Error::other("still failing; retried shortly"));
        }
        let r = f(self);
        if r.is_err() {
            // Start afresh next time (a new file: the failed one may end in half a line).
            self.current = None;
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        } else {
            self.retry_at = None;
        }
        r
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl LineTarget for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.attempt(|f| f.write_inner(line))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.attempt(|f| match &mut f.current {
            Some(c) => c.out.flush(),
            None => Ok(()),
        })
    }

    fn note_dropped(&mut self, n: u64) -> io::Result<()> {
        let mut fields = Map::new();
        fields.insert("dropped".into(), Value::from(n));
        let note = LogLine {
            ts: timestamp(SystemTime::now()),
            level: Severity::Warn,
            target: "ringchat::logs".into(),
            thread: None,
            msg: "log lines dropped: the writer did not keep up or could not write (log.buffer_lines_max)".into(),
            fields,
        };
        let mut line = note.to_json(usize::MAX).into_bytes();
        line.push(b'\n');
        self.write_line(&line)
    }

    fn describe(&self) -> String {
        format!("log files in {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bytes: u64, files: usize) -> LogConfig {
        LogConfig {
            file_bytes_max: bytes,
            files_max: files,
            ..LogConfig::default()
        }
    }

    #[test]
    fn names_parse_back() {
        let name = file_name(42, 20_000);
        assert_eq!(name, "ringchat-2024-10-04.000042.log");
        assert_eq!(parse_name(&name), Some(42));
        assert_eq!(parse_name("ringchat-2024-10-04.000042.log.gz"), None);
        assert_eq!(parse_name("other.log"), None);
    }

    #[test]
    fn rotates_by_size_keeps_files_max_and_continues_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let line = [b'x'; 99]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let mut f = RotatingFile::open(&dir, &config(1024, 3)).unwrap();
        for _ in 0..45 {
            f.write_line(&line).unwrap();
        }
        f.flush().unwrap();
        let files = list(&dir).unwrap();
        // 45 lines of 100 bytes, 10 per file: files 1..=5 made, the newest 3 kept.
        assert_eq!(files.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [3, 4, 5]);
        for (_, path) in &files {
            assert!(std::fs::metadata(path).unwrap().len() <= 1024);
        }
        drop(f);
        let mut again = RotatingFile::open(&dir, &config(1024, 3)).unwrap();
        again.write_line(&line).unwrap();
        again.flush().unwrap();
        let files = list(&dir).unwrap();
        assert_eq!(files.last().unwrap().0, 5, "the newest file had room");
        assert_eq!(std::fs::metadata(&files[2].1).unwrap().len(), 600);
    }
}
