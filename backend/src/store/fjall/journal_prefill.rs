//! fjall starts each journal as a 64 MiB sparse file (`set_len`) and appends into it. The first
//! write into a block of the hole allocates that block, and on ext4 (XFS alike) an allocation
//! is metadata: the commit group's fdatasync then waits for a commit of the file system's own
//! journal (jbd2). Under the paced load (10,000 msgs/s, `fsync`) that was 28 % of the commit
//! groups' fdatasyncs, ~0.85 ms each against ~0.07 ms for the others (docs/BENCHMARKS.md,
//! "The journal written into allocated blocks").
//!
//! [`JournalPrefill`] keeps the hole ahead of fjall's writes filled with zeros and synced,
//! `storage.journal_prefill_mib` at most, so that fjall's appends overwrite allocated blocks and
//! their fdatasync is data only. The allocations, and their jbd2 commits, happen on this
//! thread, half that lead at a time.
//!
//! Why it cannot damage the journal:
//! - zeros go only where the file is a hole (`SEEK_DATA` finds no data there), and a hole
//!   reads as zeros: the file's content is the same, byte for byte, before and after;
//! - that check and the write are made under the store's write lock, which every write to the
//!   database holds (`write_locks.rs`), after flushing fjall's journal buffer (empty unless a
//!   writer left bytes in it): nothing can be written into the range between them;
//! - the file is opened without `O_APPEND`, `O_TRUNC` or `O_CREAT`, and nothing is written past
//!   its length.
//!
//! A journal fjall has rotated away from, or deleted, at most gets zeros it did not need. On a
//! file system without `SEEK_DATA` the whole file reads as data, and nothing is written.
//!
//! Not filled: the journal fjall recovers at open. Its replay truncates the file to the last
//! whole batch and fjall reopens it `O_APPEND` (fjall 3.1.13, `Writer::from_file`), so it has
//! no hole to fill, and zeros at its end would sit between the recovered batches and the next
//! ones: the next replay would stop at them and drop what follows. Its appends allocate as
//! they go until fjall rotates it (at a flush once it is past 64 MB); the next journal is
//! filled as usual. Filling it too would take fjall opening a recovered journal as it creates
//! one (positioned at its end and pre-sized, without `O_APPEND`), a change to fjall itself.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use super::newest_journal::NewestJournal;
use super::periodic::Periodic;
use super::write_locks::WriteLocks;
use crate::store::StoreHealth;

/// How often fjall's progress is looked at: at 40 MB/s of journal writes it moves 400 KB.
const TICK: Duration = Duration::from_millis(10);
/// Zeros written per hold of the write lock: a commit group waits for one piece at most.
const PIECE_BYTES: usize = 128 * 1024;
/// fjall's progress is probed this far apart, [`PROBE_BYTES`] each.
const PROBE_STEP: u64 = 64 * 1024;
/// The filled part ends on a multiple of this (a multiple of any block size): `SEEK_DATA` from
/// inside a block partly written would find that block, and take it for fjall's writes.
const ALIGN: u64 = 64 * 1024;
const PROBE_BYTES: usize = 64;

/// The background thread; stopped (and joined) when dropped.
pub(super) struct JournalPrefill {
    _thread: Periodic,
}

impl JournalPrefill {
    /// Starts filling ahead of fjall's writes in `dir`'s newest journal, `lead` bytes at most,
    /// until the store fails (then fjall's state is unknown, and nothing more is written).
    pub(super) fn start(
        dir: &Path,
        db: fjall::Database,
        locks: Arc<WriteLocks>,
        health: Arc<StoreHealth>,
        lead: u64,
    ) -> io::Result<Self> {
        let newest = NewestJournal::new(dir.to_owned(), true);
        let mut filler = Filler::new(newest, locks, lead);
        let flush = move || {
            db.persist(fjall::PersistMode::Buffer)
                .map_err(io::Error::other)
        };
        let dir = dir.to_owned();
        let mut failing: Option<String> = None;
        let thread = Periodic::start(crate::threads::JOURNAL_PREFILL, TICK, move || {
            if health.failure().is_some() {
                return ControlFlow::Break(());
            }
            match filler.tick(&flush) {
                Ok(()) => failing = None,
                Err(e) => {
                    // Only a lost speed-up: fjall's own writes allocate what is not filled.
                    let why = e.to_string();
                    if failing.as_ref() != Some(&why) {
                        tracing::warn!(error = %why, dir = %dir.display(),
                            "filling the journal ahead of its writes failed");
                        failing = Some(why);
                    }
                    filler.newest.forget();
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(Self { _thread: thread })
    }
}

/// One journal's filling.
struct Filler {
    newest: NewestJournal,
    locks: Arc<WriteLocks>,
    lead: u64,
    /// The journal being filled.
    id: Option<u64>,
    /// fjall has written at least this far.
    reached: u64,
    /// Everything before this is fjall's or zeros (filled, or found written).
    filled: u64,
    zeros: Vec<u8>,
}

impl Filler {
    fn new(newest: NewestJournal, locks: Arc<WriteLocks>, lead: u64) -> Self {
        Self {
            newest,
            locks,
            lead,
            id: None,
            reached: 0,
            filled: 0,
            zeros: vec![0; PIECE_BYTES],
        }
    }

    /// `flush` empties fjall's journal buffer into the file (called under the write lock).
    fn tick(&mut self, flush: &impl Fn() -> io::Result<()>) -> io::Result<()> {
        let Some((id, file)) = self.newest.find()? else {
            return Ok(());
        };
        if self.id != Some(id) {
            (self.id, self.reached, self.filled) = (Some(id), 0, 0);
        }
        let len = file.metadata()?.len();
        self.reached = advance(file, self.reached, self.filled, len)?;
        // Past the filled part only from a `SEEK_HOLE` (on a block's end): fjall overtook it.
        self.filled = self.filled.max(self.reached);
        // Half the lead used up: fill the next half (a few MiB, one sync).
        if self.filled >= len || self.filled - self.reached > self.lead / 2 {
            return Ok(());
        }
        let to = align_up(self.reached.saturating_add(self.lead), len);
        self.filled = fill(file, &self.locks, flush, &self.zeros, (self.filled, to))?;
        file.sync_data()
    }
}

/// How far fjall has written at least, from what was known (`reached`): past `filled` if data
/// is found there (fjall overtook the filling), else by probes of the filled part, every
/// [`PROBE_STEP`]: one holding a byte that is not zero is fjall's. A probe that lands on
/// zeros fjall wrote stops the estimate there: filling then only stays behind (the journal is
/// never at risk: see the module's comment).
fn advance(file: &File, reached: u64, filled: u64, len: u64) -> io::Result<u64> {
    if let Some(data) = seek_data(file, filled)?
        && data < len
    {
        return Ok(seek_hole(file, data)?.max(reached));
    }
    let mut reached = reached;
    let mut probe = [0u8; PROBE_BYTES];
    let mut at = reached;
    while at + PROBE_BYTES as u64 <= filled {
        file.read_exact_at(&mut probe, at)?;
        if probe.iter().all(|b| *b == 0) {
            break;
        }
        reached = at + PROBE_BYTES as u64;
        at = (at / PROBE_STEP + 1) * PROBE_STEP;
    }
    Ok(reached)
}

/// Writes zeros into the holes of `[from, to)`, a piece at a time under the write lock (after
/// `flush`), and returns how far it got (`to`, or past fjall's data found in the way).
fn fill(
    file: &File,
    locks: &WriteLocks,
    flush: &impl Fn() -> io::Result<()>,
    zeros: &[u8],
    (from, to): (u64, u64),
) -> io::Result<u64> {
    let mut at = from;
    while at < to {
        let end = (at + zeros.len() as u64).min(to);
        let _writing = locks.write_lock();
        flush()?;
        let hole_end = match seek_data(file, at)? {
            Some(data) if data < end => data,
            _ => end,
        };
        if hole_end > at {
            let n = usize::try_from(hole_end - at).expect("a piece fits in memory");
            file.write_all_at(&zeros[..n], at)?;
        }
        at = if hole_end < end {
            // fjall's data from `hole_end` on: the next hole starts after it.
            seek_hole(file, hole_end)?
        } else {
            end
        };
    }
    Ok(at)
}

/// `at` rounded up to a multiple of [`ALIGN`], at most `len`.
fn align_up(at: u64, len: u64) -> u64 {
    at.div_ceil(ALIGN).saturating_mul(ALIGN).min(len)
}

/// The first byte of data at or after `at`; `None` if there is none up to the end.
fn seek_data(file: &File, at: u64) -> io::Result<Option<u64>> {
    match rustix::fs::seek(file, SeekFrom::Data(at)) {
        Ok(pos) => Ok(Some(pos)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The first byte of a hole at or after `at` (the file's end counts as one).
fn seek_hole(file: &File, at: u64) -> io::Result<u64> {
    Ok(rustix::fs::seek(file, SeekFrom::Hole(at))?)
}

#[cfg(test)]
mod tests;
