//! What `SegmentLog::open` does with the files it finds.
//!
//! Every segment is scanned in order and every record's checksum verified. When a record cannot
//! be read (cut off by the end of the file, a length over `record_bytes_max`, or a checksum
//! mismatch) at offset X:
//!
//! - in any segment but the last, the log is `Corrupt` (segments are made durable before the
//!   next one is created, so a crash cannot tear them);
//! - in the last segment, the rest of the file is searched for a valid record: at every offset
//!   from the bad record's claimed end (X + 8 + its length) if that length is within
//!   `record_bytes_max`, or from X + 1 if it is not, up to the end of the file. If one is found
//!   the log is `Corrupt` (damage before the tail). If none is, the bytes from X to the end of the
//!   file are a torn write: the file is truncated to X, the truncation is fsynced, and a warning
//!   says how many bytes went. A record whose claimed end is past the end of the file (cut off)
//!   leaves nothing to search, so it is a torn tail.
//!
//! The search reads the rest of the file into memory (about one segment at most) and computes a
//! checksum only at offsets whose length field is within the limit and ends inside the file.
//!
//! The rule assumes the unsynced end of the log is one write. Without a sync per commit group
//! (durability `none`) many writes can be in flight at a crash, and a file system that persists a
//! later page before an earlier one leaves a hole followed by valid, never-acknowledged records:
//! that is reported as `Corrupt` too.
//!
//! Known blind spot of the rule: a length field damaged into a plausible but larger value hides
//! the records its claimed extent covers; if that extent reaches past the end of the file they are
//! dropped as a torn tail (with the warning). Searching the bad record's own payload instead
//! would close it but make user-controlled bytes inside a torn record able to look like a record.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, BadRecord, Damage, HEADER_BYTES};
use super::{LogError, LogOptions, Position, Recovered};

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn segment_id(name: &std::ffi::OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(".seg")?;
    let all_digits = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| digits.parse().ok()).flatten()
}

/// The ids of the segments in `dir`, ascending; other files are ignored. A gap is `Corrupt`.
pub(super) fn segment_ids(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(id) = segment_id(&entry?.file_name()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        return Err(LogError::Corrupt {
            segment: pair[0] + 1,
            offset: 0,
            reason: Damage::MissingSegment,
        });
    }
    Ok(ids)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing ancestors, and fsyncs the parent of each one created, so that
/// the directory entries survive a crash.
pub(super) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for created in missing {
        match created.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// A segment as recovery left it.
#[derive(Debug)]
pub(super) struct RecoveredSegment {
    pub id: u64,
    /// Bytes of valid records (the file's length, after any truncation).
    pub len: u64,
}

/// Scans the segments `ids` (ascending, contiguous) and truncates a torn tail off the last one.
/// The last segment's file is returned open for reading and writing.
pub(super) fn recover(
    dir: &Path,
    ids: &[u64],
    options: &LogOptions,
    buf: &mut Vec<u8>,
) -> Result<(Vec<RecoveredSegment>, Option<File>, Recovered), LogError> {
    let mut found = Recovered {
        records: 0,
        last: None,
        torn_tail_bytes: 0,
    };
    let mut segments = Vec::with_capacity(ids.len());
    let mut last_file = None;
    for (i, &id) in ids.iter().enumerate() {
        let is_last = i + 1 == ids.len();
        let file = OpenOptions::new()
            .read(true)
            .write(is_last)
            .open(segment_path(dir, id))?;
        let file_len = file.metadata()?.len();
        let scanned = record::scan::<LogError>(
            &file,
            0,
            file_len,
            options.record_bytes_max,
            buf,
            |offset, _| {
                found.records += 1;
                found.last = Some(Position {
                    segment: id,
                    offset,
                });
                Ok(())
            },
        )?;
        let mut len = file_len;
        if let Some(bad) = scanned.bad {
            let corrupt = LogError::Corrupt {
                segment: id,
                offset: scanned.end,
                reason: bad.damage,
            };
            if !is_last || valid_record_follows(&file, scanned.end, file_len, bad, options, buf)? {
                return Err(corrupt);
            }
            len = scanned.end;
            found.torn_tail_bytes = file_len - len;
            file.set_len(len)?;
            file.sync_all()?;
            tracing::warn!(
                segment = id,
                offset = len,
                dropped_bytes = found.torn_tail_bytes,
                damage = %bad.damage,
                "log: dropped a torn write at the end of the last segment (never acknowledged)"
            );
        }
        segments.push(RecoveredSegment { id, len });
        if is_last {
            last_file = Some(file);
        }
    }
    Ok((segments, last_file, found))
}

/// Whether a valid record starts anywhere after the bad record at `at` (see the module doc).
fn valid_record_follows(
    file: &File,
    at: u64,
    file_len: u64,
    bad: BadRecord,
    options: &LogOptions,
    buf: &mut Vec<u8>,
) -> Result<bool, LogError> {
    let from = match bad.plausible_len {
        Some(len) => at + (HEADER_BYTES as u64) + u64::from(len),
        None => at + 1,
    };
    if from + HEADER_BYTES as u64 > file_len {
        return Ok(false);
    }
    let rest =
        usize::try_from(file_len - from).map_err(|_| io::Error::other("segment too long"))?;
    buf.clear();
    buf.resize(rest, 0);
    file.read_exact_at(buf, from)?;
    Ok(record::find_valid(buf, options.record_bytes_max).is_some())
}
