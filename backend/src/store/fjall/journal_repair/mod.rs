//! Opening fjall after a power cut: a torn last journal batch is dropped, corruption before it
//! stops the server.
//!
//! fjall (pinned to 3.1.13 in Cargo.toml, because this module reads its journal format) writes
//! every write batch to its journal (`<data dir>/<id>.jnl`) as a Start entry (item count,
//! seqno), the items, and an End entry (xxh3 over the items' bytes, then the magic `FJL\x03`).
//! At open it replays the journals and quietly drops an incomplete tail (a batch whose End
//! never made it, zeros where the next entry should be). But a power cut can also leave the last
//! batch *torn*: its End marker reached the disk while a block inside it did not (or came back
//! zeroed). fjall then fails to open with `JournalRecovery(ChecksumMismatch)` (or
//! `InsufficientLength` / `TooManyItems`), on every restart.
//!
//! Such a batch was never acknowledged: acks follow the fdatasync of the journal, and a batch
//! whose fdatasync returned is on disk whole. So when the first bad batch is the last batch of
//! the newest journal, [`open_database`] truncates that journal to the start of the batch (and
//! fsyncs it), logs what it dropped, and opens again. A bad batch anywhere else (followed by
//! other batches, or in an older, sealed journal, which fjall fsyncs whole before it starts the
//! next one) may have acknowledged writes behind it: the store refuses to open, with an error
//! that says where.
//!
//! fjall also stops reading a journal, *without* an error, at the first entry it cannot decode
//! (an unknown tag, a zeroed header, a bad trailer) and truncates the file there. Before fjall
//! opens, we look past that point for a complete batch with a good checksum: if there is one,
//! the unreadable entry is not the tail and the store refuses to open rather than let fjall
//! drop acknowledged writes. This reads every journal once more at start-up (tens of ms for a
//! 64 MiB pre-sized journal here).
//!
//! What fjall 3.1.13 / lsm-tree 3.1.10 fsync, read from their source:
//! - journals: the file after it is created and pre-sized, and the directory after creating it
//!   (`Journal::create_new`, `Writer::rotate`);
//! - table (segment) files: the file, then its directory (`table::writer`, `fsync_directory`);
//! - the `version` marker, `keyspaces/` and the data dir when a database is created; each
//!   tree's version file through a fsynced temp file and rename, then the tree's folder;
//! - blob files (key-value separation, our `messages` keyspace): the file (`sync_all`), but
//!   **not** the `blobs/` directory after creating one; only `BlobTree::open` fsyncs `blobs/`.
//!   A version that names a blob file can so be durable before the blob file's directory entry.
//!   On ext4 (one journal transaction commits every pending metadata change, so the version's
//!   own fsync carries the blob file's entry) this does not lose the file in practice; POSIX does
//!   not promise it. We fsync every keyspace's `blobs/` directory at open (entries a crash left
//!   unsynced), and [`sync_blob_dirs`] is there for the store to call after its flushes;
//! - nothing above the data dir: the data dir's own entry in its parent is fsynced here when
//!   the database is created.

use std::hash::Hasher as _;
use std::path::{Path, PathBuf};

use fjall::JournalRecoveryError;

use crate::store::StoreError;

/// fjall's `file::MAGIC_BYTES`: the trailer of every End entry.
const MAGIC: &[u8; 4] = b"FJL\x03";
const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
/// fjall's marker file, written once the database exists.
const VERSION_MARKER: &str = "version";
/// Repairs per open: one torn tail at most (a second would mean our reading disagrees with
/// fjall's, and we stop rather than cut more).
const REPAIRS_MAX: usize = 1;

/// Corruption in a journal that is not the unacknowledged torn tail.
#[derive(Debug, thiserror::Error)]
#[error(
    "fjall journal {} is corrupt: {what}; this is not the torn last batch of the newest \
     journal (which is dropped by itself), so acknowledged writes may lie behind it and the \
     store will not open: restore the data dir from a backup (moving the journal away loses \
     the acknowledged writes in it)",
    .file.display()
)]
pub struct JournalCorrupt {
    pub file: PathBuf,
    pub what: String,
}

fn corrupt(file: &Path, what: String) -> StoreError {
    StoreError::Corrupt(Box::new(JournalCorrupt {
        file: file.to_owned(),
        what,
    }))
}

fn engine(e: fjall::Error) -> StoreError {
    StoreError::Engine(e.into())
}

/// Opens the fjall database in `dir` (which exists), dropping a torn, never-acknowledged last
/// journal batch if that is what keeps it from opening. `background_threads` (at least one):
/// fjall's flush and compaction workers.
pub(super) fn open_database(
    dir: &Path,
    background_threads: usize,
) -> Result<fjall::Database, StoreError> {
    let created = !dir.join(VERSION_MARKER).exists();
    check_nothing_after_the_end(dir)?;
    let mut repairs = 0;
    let db = loop {
        match fjall::Database::builder(dir)
            .worker_threads(background_threads)
            .open()
        {
            Ok(db) => break db,
            Err(fjall::Error::JournalRecovery(
                why @ (JournalRecoveryError::ChecksumMismatch
                | JournalRecoveryError::InsufficientLength
                | JournalRecoveryError::TooManyItems),
            )) => {
                if repairs == REPAIRS_MAX {
                    return Err(corrupt(
                        dir,
                        format!(
                            "fjall still finds a bad batch ({why:?}) after the torn tail was dropped"
                        ),
                    ));
                }
                repairs += 1;
                repair(dir, why)?;
            }
            Err(e) => return Err(engine(e)),
        }
    };
    if created {
        // The data dir is new: its entry in the parent, like fjall's own files, must survive a
        // power cut (fjall fsyncs the data dir itself, not its parent).
        fsync_dir(dir)?;
        match dir.parent() {
            Some(parent) if parent.as_os_str().is_empty() => fsync_dir(Path::new("."))?,
            Some(parent) => fsync_dir(parent)?,
            None => {}
        }
    }
    sync_blob_dirs(dir)?;
    Ok(db)
}

/// Fsyncs every keyspace's `blobs/` directory, which fjall does not do after creating a blob
/// file (see the module docs).
pub(crate) fn sync_blob_dirs(dir: &Path) -> Result<(), StoreError> {
    let keyspaces = dir.join("keyspaces");
    let entries = match std::fs::read_dir(&keyspaces) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let blobs = entry?.path().join("blobs");
        if blobs.is_dir() {
            fsync_dir(&blobs)?;
        }
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// How a batch failed fjall's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ChecksumMismatch,
    InsufficientLength,
    TooManyItems,
}

/// One batch, Start to End, as found in a journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    /// Byte offset of its Start entry.
    start: u64,
    /// Byte offset just past its End entry.
    end: u64,
    item_count: u32,
    seqno: u64,
    fault: Option<Fault>,
}

/// A journal file read the way fjall reads it.
#[derive(Debug, Default)]
struct Scan {
    /// Every batch that has an End entry, in file order.
    batches: Vec<Batch>,
    /// Where fjall stops reading this journal (an entry it cannot decode, zeros, the end).
    stop: usize,
}

impl Scan {
    /// The first bad batch and whether any batch follows it.
    fn first_fault(&self) -> Option<(&Batch, bool)> {
        let i = self.batches.iter().position(|b| b.fault.is_some())?;
        Some((&self.batches[i], i + 1 < self.batches.len()))
    }
}

/// One entry, decoded only as far as the batch checks need.
enum Entry {
    Start {
        item_count: u32,
        seqno: u64,
    },
    /// An item or a clear: its encoded bytes go into the batch checksum.
    Counted,
    End {
        checksum: u64,
    },
}

/// Reads entries from a byte slice; `None` where fjall's reader would stop (end of data, an
/// unknown tag, zeros, a bad trailer).
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// fjall's `Entry::decode_from`, without building keys and values.
    fn entry(&mut self) -> Option<Entry> {
        match self.u8()? {
            TAG_START => {
                let item_count = self.u32()?;
                let seqno = self.u64()?;
                Some(Entry::Start { item_count, seqno })
            }
            TAG_ITEM => {
                // Value type: Value, Tombstone, WeakTombstone, Indirection.
                if !matches!(self.u8()?, 0 | 1 | 2 | 4) {
                    return None;
                }
                // Compression: none or lz4.
                if !matches!(self.u8()?, 0 | 1) {
                    return None;
                }
                let _keyspace_id = self.u64()?;
                let key_len = self.u16()?;
                let _value_len = self.u32()?;
                let on_disk_len = self.u32()?;
                self.take(usize::from(key_len))?;
                self.take(on_disk_len as usize)?;
                Some(Entry::Counted)
            }
            TAG_END => {
                let checksum = self.u64()?;
                (self.take(MAGIC.len())? == MAGIC).then_some(Entry::End { checksum })
            }
            TAG_CLEAR => {
                let _keyspace_id = self.u64()?;
                Some(Entry::Counted)
            }
            _ => None,
        }
    }
}

/// Reads a journal's batches with fjall's checks (`JournalBatchReader`), but goes on past a bad
/// batch to see whether anything follows it.
fn scan(data: &[u8]) -> Scan {
    let mut cursor = Cursor { data, pos: 0 };
    let mut out = Scan::default();
    // The batch being read: (start, item_count, seqno, items still expected, fault so far).
    let mut open: Option<(u64, u32, u64, u32, Option<Fault>)> = None;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    loop {
        let at = cursor.pos;
        out.stop = at;
        let Some(entry) = cursor.entry() else {
            // fjall stops here, truncates the file and drops an incomplete batch.
            return out;
        };
        match entry {
            Entry::Start { item_count, seqno } => {
                if open.is_some() {
                    // fjall: a Start inside a batch ends the journal there.
                    return out;
                }
                hasher = xxhash_rust::xxh3::Xxh3::new();
                open = Some((at as u64, item_count, seqno, item_count, None));
            }
            Entry::Counted => {
                hasher.update(&data[at..cursor.pos]);
                let Some((_, _, _, left, fault)) = open.as_mut() else {
                    // fjall: an item outside a batch ends the journal there.
                    return out;
                };
                if *left == 0 {
                    fault.get_or_insert(Fault::TooManyItems);
                } else {
                    *left -= 1;
                }
            }
            Entry::End { checksum } => {
                let Some((start, item_count, seqno, left, mut fault)) = open.take() else {
                    // fjall: an End outside a batch ends the journal there.
                    return out;
                };
                if left > 0 {
                    fault.get_or_insert(Fault::InsufficientLength);
                }
                if hasher.finish() != checksum {
                    fault.get_or_insert(Fault::ChecksumMismatch);
                }
                out.batches.push(Batch {
                    start,
                    end: cursor.pos as u64,
                    item_count,
                    seqno,
                    fault,
                });
            }
        }
    }
}

/// Whether a complete batch (Start, its items, an End whose checksum matches) starts at `at`.
fn valid_batch_at(data: &[u8], at: usize) -> bool {
    let mut cursor = Cursor { data, pos: at };
    let Some(Entry::Start { item_count, .. }) = cursor.entry() else {
        return false;
    };
    if item_count == 0 {
        return false; // fjall writes no empty batch
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for _ in 0..item_count {
        let from = cursor.pos;
        match cursor.entry() {
            Some(Entry::Counted) => hasher.update(&data[from..cursor.pos]),
            _ => return false,
        }
    }
    matches!(cursor.entry(), Some(Entry::End { checksum }) if checksum == hasher.finish())
}

/// The first complete batch at or after `from`, if any.
fn valid_batch_from(data: &[u8], from: usize) -> Option<usize> {
    let end = written_len(data);
    (from..end).find(|&at| data[at] == TAG_START && valid_batch_at(data, at))
}

/// The length of `data` without its trailing zeros (fjall pre-sizes a journal to 64 MiB of
/// zeros). Compares whole pages, so that it stays fast in unoptimised builds too.
fn written_len(data: &[u8]) -> usize {
    const PAGE: usize = 4096;
    static ZEROS: [u8; PAGE] = [0; PAGE];
    let mut end = data.len();
    while end >= PAGE && data[end - PAGE..end] == ZEROS[..] {
        end -= PAGE;
    }
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// fjall reads a journal up to the first entry it cannot decode and drops the rest without an
/// error (its "tolerate a corrupt tail"). That is right for a torn tail and silently loses
/// acknowledged writes when complete batches follow: refuse to open then. A batch whose
/// checksum fails is such an entry too when fjall compresses its values (lz4, from 4 KiB on):
/// fjall decompresses each value as it reads it, before the checksum, and a value that does
/// not decompress ends its reading silently. So the rule of [`repair`] applies here already:
/// a bad batch followed by others, or in a sealed journal, refuses the open.
fn check_nothing_after_the_end(dir: &Path) -> Result<(), StoreError> {
    let journals = journals(dir)?;
    let newest = journals.last().map(|(id, _)| *id);
    for (id, path) in journals {
        let data = std::fs::read(&path)?;
        let scan = scan(&data);
        if let Some((bad, followed)) = scan.first_fault()
            && (followed || Some(id) != newest)
        {
            return Err(corrupt(
                &path,
                format!(
                    "batch at byte {} ({} bytes, seqno {}) is bad ({:?}), and {}",
                    bad.start,
                    bad.end - bad.start,
                    bad.seqno,
                    bad.fault.expect("a bad batch"),
                    if followed {
                        "batches follow it"
                    } else {
                        "it is in a sealed (older) journal"
                    }
                ),
            ));
        }
        let stop = scan.stop;
        if let Some(next) = valid_batch_from(&data, stop) {
            return Err(corrupt(
                &path,
                format!(
                    "fjall cannot read the entry at byte {stop} and would drop everything \
                     after it, but a complete batch follows at byte {next}"
                ),
            ));
        }
    }
    Ok(())
}

/// The journal files in `dir`, oldest first.
pub(super) fn journals(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            out.push((id, path));
        }
    }
    out.sort();
    Ok(out)
}

/// fjall refused a journal batch: drop it if it is the last batch of the newest journal,
/// refuse otherwise.
fn repair(dir: &Path, why: JournalRecoveryError) -> Result<(), StoreError> {
    let journals = journals(dir)?;
    let newest = journals.last().map(|(id, _)| *id);
    for (id, path) in &journals {
        let data = std::fs::read(path)?;
        let scan = scan(&data);
        let Some((bad, followed)) = scan.first_fault() else {
            continue;
        };
        let what = format!(
            "batch at byte {} ({} bytes, seqno {}, {} items) is bad ({:?})",
            bad.start,
            bad.end - bad.start,
            bad.seqno,
            bad.item_count,
            bad.fault.expect("a bad batch")
        );
        if Some(*id) != newest {
            return Err(corrupt(
                path,
                format!("{what}, in a sealed (older) journal"),
            ));
        }
        if followed {
            return Err(corrupt(path, format!("{what}, and batches follow it")));
        }
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        file.set_len(bad.start)?;
        file.sync_all()?;
        drop(file);
        tracing::warn!(
            journal = %path.display(),
            offset = bad.start,
            batch_bytes = bad.end - bad.start,
            bytes_dropped = len - bad.start,
            items = bad.item_count,
            seqno = bad.seqno,
            fault = ?bad.fault.expect("a bad batch"),
            "dropped the torn last batch of the newest journal (never acknowledged: acks follow \
             its fdatasync), keeping every batch before it"
        );
        return Ok(());
    }
    Err(corrupt(
        dir,
        format!("fjall reports a bad batch ({why:?}) that reading its journals does not find"),
    ))
}

#[cfg(test)]
mod tests;
