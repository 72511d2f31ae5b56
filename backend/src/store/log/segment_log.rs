//! The log itself: appends to the newest segment, rolls to a new one, syncs, reads by position
//! and replays.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::record::{self, HEADER_BYTES};
use super::recovery::{self, segment_path, sync_dir};
use super::{Damage, LogError, LogOptions, Position, Recovered};

/// Sealed segments kept open for `read` at once; the least recently used is closed past this.
pub const SEGMENTS_OPEN_MAX: usize = 16;

/// Append-only log of checksummed records in segment files. One writer (`&mut self`); `read` and
/// `replay` take `&self`.
pub struct SegmentLog {
    dir: PathBuf,
    options: LogOptions,
    /// Length of every segment but the newest, by id. Sealed segments never change.
    sealed: BTreeMap<u64, u64>,
    active: File,
    active_id: u64,
    active_len: u64,
    /// Whether anything was written since the last successful sync.
    unsynced: bool,
    /// A write or sync failed: the files' state is unknown, so no more writes.
    failed: bool,
    /// The records of one write, headers included; reused.
    write_buf: Vec<u8>,
    /// Sealed segments open for `read`, most recently used first.
    readers: Mutex<Vec<(u64, Arc<File>)>>,
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), checks every record and drops a torn tail
    /// (see `recovery.rs`). Everything recovered is synced before this returns.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(SegmentLog, Recovered), LogError> {
        if options.segment_bytes_max < HEADER_BYTES as u64 + u64::from(options.record_bytes_max) {
            return Err(LogError::Options(
                "segment_bytes_max must hold a record of record_bytes_max plus its 8-byte header",
            ));
        }
        recovery::create_dir_durably(dir)?;
        let ids = recovery::segment_ids(dir)?;
        let mut buf = Vec::new();
        let (segments, last_file, recovered) = recovery::recover(dir, &ids, &options, &mut buf)?;
        let mut sealed: BTreeMap<u64, u64> = segments.iter().map(|s| (s.id, s.len)).collect();
        let (active, active_id, active_len) = match (last_file, sealed.pop_last()) {
            (Some(file), Some((id, len))) => {
                // A crashed process's writes may still be only in the page cache.
                file.sync_data().map_err(LogError::Sync)?;
                (file, id, len)
            }
            _ => (create_segment(dir, 0)?, 0, 0),
        };
        let log = SegmentLog {
            dir: dir.to_owned(),
            options,
            sealed,
            active,
            active_id,
            active_len,
            unsynced: false,
            failed: false,
            write_buf: Vec::new(),
            readers: Mutex::new(Vec::new()),
        };
        Ok((log, recovered))
    }

    /// Writes one record (one `write` call) and returns where it starts. Not durable until
    /// `sync`. On `Io`, the log is failed like after a failed `sync`.
    pub fn append(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        self.check_writable()?;
        self.check_len(payload.len())?;
        let position = self.stage(payload)?;
        self.write_staged()?;
        Ok(position)
    }

    /// Writes several records with one `write` call (two when they cross into a new segment)
    /// and pushes their positions onto `positions`. Nothing is written if one is too long.
    pub fn append_many(
        &mut self,
        payloads: &[&[u8]],
        positions: &mut Vec<Position>,
    ) -> Result<(), LogError> {
        self.check_writable()?;
        for payload in payloads {
            self.check_len(payload.len())?;
        }
        for payload in payloads {
            positions.push(self.stage(payload)?);
        }
        self.write_staged()
    }

    /// `fdatasync`s the newest segment: every record appended so far is durable once this
    /// returns `Ok` (older segments were synced when the log moved past them). On
    /// `LogError::Sync` the state on disk is unknown: the caller must stop, not retry.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.check_writable()?;
        if self.unsynced {
            if let Err(e) = self.active.sync_data() {
                self.failed = true;
                return Err(LogError::Sync(e));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Reads the record at `pos` into `buf` (replacing its contents) and checks its checksum.
    pub fn read(&self, pos: Position, buf: &mut Vec<u8>) -> Result<(), LogError> {
        let segment_len = self
            .segment_len(pos.segment)
            .ok_or(LogError::NoRecord(pos))?;
        if pos.offset.saturating_add(HEADER_BYTES as u64) > segment_len {
            return Err(LogError::NoRecord(pos));
        }
        let corrupt = |reason| LogError::Corrupt {
            segment: pos.segment,
            offset: pos.offset,
            reason,
        };
        let reader;
        let file = if pos.segment == self.active_id {
            &self.active
        } else {
            reader = self.reader(pos.segment)?;
            &*reader
        };
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        file.read_exact_at(buf, pos.offset)?;
        let len = record::header_len(buf);
        if len > self.options.record_bytes_max {
            let max = self.options.record_bytes_max;
            return Err(corrupt(Damage::LengthOverLimit { len, max }));
        }
        if pos.offset + (HEADER_BYTES as u64) + u64::from(len) > segment_len {
            return Err(corrupt(Damage::Short));
        }
        buf.resize(HEADER_BYTES + len as usize, 0);
        file.read_exact_at(&mut buf[HEADER_BYTES..], pos.offset + HEADER_BYTES as u64)?;
        if !record::checksum_ok(buf) {
            return Err(corrupt(Damage::Checksum));
        }
        buf.drain(..HEADER_BYTES);
        Ok(())
    }

    /// Calls `f` with every record after `from` (every record for `None`), in log order, and
    /// stops at the first error `f` returns. One buffer is reused throughout.
    pub fn replay<E: From<LogError>>(
        &self,
        from: Option<Position>,
        mut f: impl FnMut(Position, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = Vec::new();
        let (first, mut start) = match from {
            None => (0, 0),
            Some(pos) => {
                self.read(pos, &mut buf)?;
                (pos.segment, pos.offset + (HEADER_BYTES + buf.len()) as u64)
            }
        };
        let segments = self.sealed.range(first..).map(|(&id, &len)| (id, len));
        for (id, len) in segments.chain([(self.active_id, self.active_len)]) {
            let sealed_file;
            let file = if id == self.active_id {
                &self.active
            } else {
                sealed_file = File::open(segment_path(&self.dir, id)).map_err(LogError::Io)?;
                &sealed_file
            };
            let max = self.options.record_bytes_max;
            let visit = |offset, payload: &[u8]| {
                f(
                    Position {
                        segment: id,
                        offset,
                    },
                    payload,
                )
            };
            let scanned = record::scan(file, start, len, max, &mut buf, visit)?;
            if let Some(bad) = scanned.bad {
                return Err(E::from(LogError::Corrupt {
                    segment: id,
                    offset: scanned.end,
                    reason: bad.damage,
                }));
            }
            start = 0;
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), LogError> {
        let max = self.options.record_bytes_max;
        if len > max as usize {
            return Err(LogError::RecordTooLarge { len, max });
        }
        Ok(())
    }

    /// Adds a record to `write_buf`, first writing what is staged and rolling to a new segment
    /// if the record would take the newest one past `segment_bytes_max`.
    fn stage(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        let staged_end = self.active_len + self.write_buf.len() as u64;
        let record_bytes = (HEADER_BYTES + payload.len()) as u64;
        if staged_end > 0 && staged_end + record_bytes > self.options.segment_bytes_max {
            self.write_staged()?;
            self.roll()?;
        }
        let offset = self.active_len + self.write_buf.len() as u64;
        record::encode(payload, &mut self.write_buf);
        Ok(Position {
            segment: self.active_id,
            offset,
        })
    }

    fn write_staged(&mut self) -> Result<(), LogError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.write_all_at(&self.write_buf, self.active_len) {
            // Part of it may be in the file: appending after it would bury a bad record.
            self.failed = true;
            self.write_buf.clear();
            return Err(LogError::Io(e));
        }
        self.active_len += self.write_buf.len() as u64;
        self.unsynced = true;
        self.write_buf.clear();
        Ok(())
    }

    /// Seals the newest segment and starts the next one. The sealed segment is synced first,
    /// since `sync` covers only the newest (and recovery only tolerates damage in the last one);
    /// the new file's directory entry is synced before any record in it can be acknowledged.
    fn roll(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let id = self.active_id + 1;
        let file = create_segment(&self.dir, id).inspect_err(|_| self.failed = true)?;
        self.sealed.insert(self.active_id, self.active_len);
        self.active = file;
        self.active_id = id;
        self.active_len = 0;
        Ok(())
    }

    fn segment_len(&self, id: u64) -> Option<u64> {
        if id == self.active_id {
            Some(self.active_len)
        } else {
            self.sealed.get(&id).copied()
        }
    }

    /// A sealed segment's file, opened on demand and kept among the `SEGMENTS_OPEN_MAX` most
    /// recently used.
    fn reader(&self, id: u64) -> Result<Arc<File>, LogError> {
        let lock = || self.readers.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut readers = lock();
            if let Some(i) = readers.iter().position(|(open, _)| *open == id) {
                let entry = readers.remove(i);
                let file = Arc::clone(&entry.1);
                readers.insert(0, entry);
                return Ok(file);
            }
        }
        let file = Arc::new(File::open(segment_path(&self.dir, id))?);
        let mut readers = lock();
        readers.retain(|(open, _)| *open != id);
        readers.insert(0, (id, Arc::clone(&file)));
        readers.truncate(SEGMENTS_OPEN_MAX);
        Ok(file)
    }

    #[cfg(test)]
    pub(super) fn readers_open(&self) -> usize {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Creates segment `id` (it must not exist) and syncs the directory entry.
fn create_segment(dir: &Path, id: u64) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, id))?;
    sync_dir(dir).map_err(LogError::Sync)?;
    Ok(file)
}
