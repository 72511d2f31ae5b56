//! Opening fjall after a power cut: what a power cut can tear is cut off, corruption that may
//! hide acknowledged writes stops the server.
//!
//! fjall (pinned to 3.1.13 in Cargo.toml, because this module reads its journal format) writes
//! every write batch to its journal (`<data dir>/<id>.jnl`) as a Start entry (item count,
//! seqno), the items, and an End entry (xxh3 over the items' bytes, then the magic `FJL\x03`).
//! At open it replays the journals and quietly drops an incomplete tail (a batch whose End
//! never made it, zeros where the next entry should be). But a power cut can also leave a
//! batch *torn*: its End marker reached the disk while a block inside it did not (or came back
//! zeroed). fjall then fails to open with `JournalRecovery(ChecksumMismatch)` (or
//! `InsufficientLength` / `TooManyItems`), on every restart. And it stops reading a journal,
//! *without* an error, at the first entry it cannot decode (an unknown tag, a zeroed header, a
//! bad trailer, an lz4 value that does not decompress) and truncates the file there, dropping
//! whatever follows.
//!
//! So [`open_database`] reads every journal first (tens of ms for a 64 MiB pre-sized journal
//! here) and finds its first bad point: a bad batch, or an entry fjall cannot decode with
//! written bytes after it. What it does there depends on what a power cut can leave:
//! - `durability = "fsync"`: acks follow the fdatasync of the journal, and a batch whose
//!   fdatasync returned is on disk whole, so only the newest journal's last batch can be torn,
//!   and it was never acknowledged. If nothing after the bad point *continues the journal*,
//!   the journal is cut there (truncated, fsynced) and the cut logged. If a batch after it
//!   does, acknowledged writes may lie behind the bad point: the store refuses to open, with
//!   an error that says where.
//! - `durability = "none"`: the newest journal holds every batch since the last background
//!   fdatasync (`journal_sync.rs`), and the page cache writes their pages back in any order,
//!   so a batch can be torn with whole ones after it. The newest journal is cut at its first
//!   bad point whatever follows, and the log says how much went (acked writes: this durability
//!   gives them up to a power cut). Nothing counts these cuts but the log: the store opens
//!   before the server's metrics exist.
//! - A sealed journal (any but the newest) was fsynced whole before fjall started the next
//!   one: a bad batch in it refuses the open whatever the durability, and so does an entry
//!   fjall cannot decode with a batch after it that continues the journal.
//!
//! A batch *continues the journal* when fjall can have written it there: it is complete with
//! a good checksum, writes only keyspaces the store has, its seqno is above the last good
//! batch's by at most one per smallest batch that fits between them (plus
//! [`SEQNO_UNJOURNALED_MAX`]), and batches of the next seqnos follow it up to the end of the
//! written data, or up to the Start of the next seqno's batch (a torn tail after them). This
//! matters because message content below fjall's 4 KiB compression threshold is in the journal
//! byte for byte: a user can send a well-formed batch, and a torn batch that holds it must not
//! make the store refuse to open. A batch inside a value is followed by the rest of the value
//! and the next item's or End entry, never by the journal's next batch (unless the rest of the
//! batch holding it is lost as well and the value ends where the written data does: a torn
//! tail that stays refused, as before this rule). The price: under `fsync`, whole batches
//! between two bad regions of the newest journal (not a power cut's: a disk's or a bug's)
//! count only if the second region begins with a readable Start of the next seqno; otherwise
//! the store opens without them. A single bad region before whole batches is still refused.
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

use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher as _;
use std::path::{Path, PathBuf};

use fjall::JournalRecoveryError;

use crate::config::Durability;
use crate::store::StoreError;

/// fjall's `file::MAGIC_BYTES`: the trailer of every End entry.
const MAGIC: &[u8; 4] = b"FJL\x03";
const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
/// fjall's marker file, written once the database exists.
const VERSION_MARKER: &str = "version";
/// Seqnos fjall takes between two batches of a journal without a journal entry (it takes one
/// to remove a keyspace), at most: the store removes a handful of keyspaces in a row.
const SEQNO_UNJOURNALED_MAX: u64 = 64;
/// Bytes of the smallest batch fjall writes: Start (tag, u32, u64), one Clear (tag, u64), End
/// (tag, u64, magic).
const BATCH_BYTES_MIN: u64 = 13 + 9 + 13;

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

/// Opens the fjall database in `dir` (which exists), first cutting the newest journal at a
/// bad batch that may be dropped (see the module docs: which one depends on `durability`).
/// `background_threads` (at least one): fjall's flush and compaction workers.
pub(super) fn open_database(
    dir: &Path,
    background_threads: usize,
    durability: Durability,
) -> Result<fjall::Database, StoreError> {
    let created = !dir.join(VERSION_MARKER).exists();
    check_journals(dir, durability)?;
    let db = match fjall::Database::builder(dir)
        .worker_threads(background_threads)
        .open()
    {
        Ok(db) => db,
        Err(fjall::Error::JournalRecovery(
            why @ (JournalRecoveryError::ChecksumMismatch
            | JournalRecoveryError::InsufficientLength
            | JournalRecoveryError::TooManyItems),
        )) => {
            // Our reading of the journals found nothing (more) to cut: it disagrees with
            // fjall's, and we stop rather than guess.
            return Err(corrupt(
                dir,
                format!(
                    "fjall finds a bad batch ({why:?}) that reading its journals does not find"
                ),
            ));
        }
        Err(e) => return Err(engine(e)),
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

/// One entry, decoded only as far as the batch checks need.
enum Entry {
    Start {
        item_count: u32,
        seqno: u64,
    },
    /// An item or a clear: its encoded bytes go into the batch checksum.
    Counted {
        keyspace_id: u64,
    },
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
                let keyspace_id = self.u64()?;
                let key_len = self.u16()?;
                let _value_len = self.u32()?;
                let on_disk_len = self.u32()?;
                self.take(usize::from(key_len))?;
                self.take(on_disk_len as usize)?;
                Some(Entry::Counted { keyspace_id })
            }
            TAG_END => {
                let checksum = self.u64()?;
                (self.take(MAGIC.len())? == MAGIC).then_some(Entry::End { checksum })
            }
            TAG_CLEAR => {
                let keyspace_id = self.u64()?;
                Some(Entry::Counted { keyspace_id })
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
            Entry::Counted { .. } => {
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

/// The last whole batch before a journal's bad point: what a batch after that point must
/// continue to count as the journal's own.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    seqno: u64,
    /// Byte offset just past it in the journal being read (0 when it is in an older one).
    end: usize,
}

impl Anchor {
    /// Whether a batch of `seqno` at byte `at` may follow: above the anchor's seqno, by no more
    /// than one per smallest batch that fits between them, plus the seqnos fjall takes without
    /// a journal entry.
    fn admits(self, seqno: u64, at: usize) -> bool {
        let between_bytes = at.saturating_sub(self.end) as u64;
        let highest = self
            .seqno
            .saturating_add(1 + between_bytes / BATCH_BYTES_MIN + SEQNO_UNJOURNALED_MAX);
        seqno > self.seqno && seqno <= highest
    }
}

/// Whether `next` may be the seqno of the batch right after one of `prev` (fjall takes a batch's
/// seqno under the journal's lock, so they rise in journal order).
fn follows(prev: u64, next: u64) -> bool {
    next > prev && next <= prev.saturating_add(1 + SEQNO_UNJOURNALED_MAX)
}

/// A journal's bytes, with what a batch in them must match to count as one fjall wrote there.
struct Journal<'a> {
    data: &'a [u8],
    /// `data` without its trailing zeros.
    written: usize,
    /// The store's keyspace ids (`keyspaces/<id>/`).
    keyspaces: &'a BTreeSet<u64>,
}

impl Journal<'_> {
    /// The batch at `at`, if it is complete (Start, its items, an End whose checksum matches),
    /// not empty (fjall writes no empty batch) and writes only keyspaces the store has: its
    /// seqno and the offset just past its End.
    fn batch_at(&self, at: usize) -> Option<(u64, usize)> {
        let mut cursor = Cursor {
            data: self.data,
            pos: at,
        };
        let Some(Entry::Start { item_count, seqno }) = cursor.entry() else {
            return None;
        };
        if item_count == 0 {
            return None;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for _ in 0..item_count {
            let from = cursor.pos;
            match cursor.entry() {
                Some(Entry::Counted { keyspace_id }) if self.keyspaces.contains(&keyspace_id) => {
                    hasher.update(&self.data[from..cursor.pos]);
                }
                _ => return None,
            }
        }
        match cursor.entry() {
            Some(Entry::End { checksum }) if checksum == hasher.finish() => {
                Some((seqno, cursor.pos))
            }
            _ => None,
        }
    }

    /// The first batch at or after `from` that continues the journal after `anchor` (unknown
    /// when no whole batch precedes it in any journal: then the seqno is not checked).
    ///
    /// Not every well-formed batch in the bytes counts: message content is stored in the
    /// journal as it was sent (below fjall's 4 KiB compression threshold), so a user can send
    /// one, and a torn batch that holds it would otherwise keep the store from opening. A batch
    /// fjall wrote has a seqno just above the last good one and writes the store's keyspaces,
    /// and is followed by the journal: batches of the next seqnos up to the end of the written
    /// data, or up to the Start of the next seqno's batch (a tail torn after them). A batch
    /// inside a value is followed by the rest of the value and the next item or End entry.
    fn continued_after(&self, from: usize, anchor: Option<Anchor>) -> Option<usize> {
        // Batch start -> whether the batches from it on reach the end: each batch is walked
        // once, however many candidates chain through it.
        let mut reaches_end = HashMap::new();
        (from..self.written).find(|&at| {
            if self.data[at] != TAG_START {
                return false;
            }
            let Some((seqno, _)) = self.batch_at(at) else {
                return false;
            };
            anchor.is_none_or(|a| a.admits(seqno, at))
                && self.chain_reaches_end(at, &mut reaches_end)
        })
    }

    /// Whether the batches from the whole batch at `at` on, each of a seqno just above the one
    /// before, run to the end of the written data or to the Start of the next seqno's batch.
    fn chain_reaches_end(&self, at: usize, known: &mut HashMap<usize, bool>) -> bool {
        let mut walked = Vec::new();
        let mut at = at;
        let reaches = loop {
            if let Some(&known) = known.get(&at) {
                break known;
            }
            walked.push(at);
            let Some((seqno, end)) = self.batch_at(at) else {
                unreachable!("the walk goes from whole batch to whole batch");
            };
            if end >= self.written {
                break true;
            }
            match self.batch_at(end) {
                // `end` only grows: the walk ends within the data.
                Some((next, _)) if follows(seqno, next) => at = end,
                _ => {
                    let mut cursor = Cursor {
                        data: self.data,
                        pos: end,
                    };
                    break matches!(
                        cursor.entry(),
                        Some(Entry::Start { seqno: next, .. }) if follows(seqno, next)
                    );
                }
            }
        };
        for at in walked {
            known.insert(at, reaches);
        }
        reaches
    }
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

/// The store's keyspace ids: the folders in `keyspaces/` (none before the store exists).
fn keyspace_ids(dir: &Path) -> Result<BTreeSet<u64>, StoreError> {
    let entries = match std::fs::read_dir(dir.join("keyspaces")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.into()),
    };
    let mut ids = BTreeSet::new();
    for entry in entries {
        if let Some(id) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// Reads every journal before fjall does, and cuts the newest one at its first bad point where
/// that may be dropped, or refuses to open (see the module docs):
/// - a bad batch (checksum, item count) anywhere, or an entry fjall cannot decode with a batch
///   after it that continues the journal, in a sealed journal: refused (fjall fsyncs a journal
///   whole before it starts the next);
/// - the same in the newest journal with `durability = "fsync"`: refused, unless nothing after
///   it continues the journal, then it is the unacknowledged torn tail and is cut;
/// - the newest journal with `durability = "none"`: cut at its first bad or unreadable point,
///   whatever follows (unsynced batches reach the disk in any order, and none of them was
///   promised to survive a power cut).
///
/// fjall itself stops reading a journal at the first entry it cannot decode and drops the rest
/// without an error, and a batch whose lz4 value does not decompress is such an entry (it
/// decompresses before it checks the batch), hence the reading here, before fjall's.
fn check_journals(dir: &Path, durability: Durability) -> Result<(), StoreError> {
    let journals = journals(dir)?;
    let keyspaces = keyspace_ids(dir)?;
    let newest = journals.last().map(|(id, _)| *id);
    // The seqno of the last whole batch of the journals read so far.
    let mut last_seqno: Option<u64> = None;
    for (id, path) in &journals {
        let data = std::fs::read(path)?;
        let scan = scan(&data);
        let journal = Journal {
            data: &data,
            written: written_len(&data),
            keyspaces: &keyspaces,
        };
        let whole_before_bad = scan.batches.iter().take_while(|b| b.fault.is_none());
        let anchor = whole_before_bad
            .clone()
            .last()
            .map(|b| Anchor {
                seqno: b.seqno,
                end: b.end as usize,
            })
            .or(last_seqno.map(|seqno| Anchor { seqno, end: 0 }));
        last_seqno = anchor.map(|a| a.seqno);
        let fault = scan.batches.iter().find(|b| b.fault.is_some());
        let bad_at = match fault {
            Some(bad) => bad.start as usize,
            None if scan.stop < journal.written => scan.stop,
            None => continue,
        };
        let is_newest = Some(*id) == newest;
        if is_newest && durability == Durability::None {
            cut_unsynced(path, &journal, &scan, bad_at)?;
            continue;
        }
        let continued = journal.continued_after(bad_at, anchor);
        match (fault, continued) {
            (Some(bad), _) if !is_newest => {
                return Err(corrupt(
                    path,
                    format!("{}, in a sealed (older) journal", describe(bad)),
                ));
            }
            (Some(bad), Some(next)) => {
                return Err(corrupt(
                    path,
                    format!(
                        "{}, and batches follow it (the next from byte {next})",
                        describe(bad)
                    ),
                ));
            }
            (Some(bad), None) => cut_torn_tail(path, bad)?,
            (None, Some(next)) => {
                return Err(corrupt(
                    path,
                    format!(
                        "fjall cannot read the entry at byte {} and would drop everything \
                         after it, but a complete batch follows at byte {next}",
                        scan.stop
                    ),
                ));
            }
            // An incomplete last batch (or bytes fjall cannot read with no batch of the
            // journal's after them): fjall drops it as it reads.
            (None, None) => {}
        }
    }
    Ok(())
}

fn describe(bad: &Batch) -> String {
    format!(
        "batch at byte {} ({} bytes, seqno {}, {} items) is bad ({:?})",
        bad.start,
        bad.end - bad.start,
        bad.seqno,
        bad.item_count,
        bad.fault.expect("a bad batch")
    )
}

/// Truncates `path` to `len` bytes, durably; returns the length it had.
fn truncate(path: &Path, len: u64) -> Result<u64, StoreError> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let before = file.metadata()?.len();
    file.set_len(len)?;
    file.sync_all()?;
    Ok(before)
}

/// `durability = "fsync"`: the newest journal's bad batch is its last, never acknowledged
/// (acks follow its fdatasync, and a batch whose fdatasync returned is on disk whole).
fn cut_torn_tail(path: &Path, bad: &Batch) -> Result<(), StoreError> {
    let len = truncate(path, bad.start)?;
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
    Ok(())
}

/// `durability = "none"`: the newest journal holds every batch since its last background
/// fdatasync, and the page cache writes their pages back in any order, so a power cut can tear
/// one with whole ones after it. Acks did not wait for the disk: these writes are the ones that
/// durability gives up to a power cut. Cut at the first bad point, keep everything before it.
fn cut_unsynced(
    path: &Path,
    journal: &Journal<'_>,
    scan: &Scan,
    at: usize,
) -> Result<(), StoreError> {
    let dropped = scan.batches.iter().filter(|b| b.start as usize >= at);
    let whole_dropped = dropped.clone().filter(|b| b.fault.is_none()).count();
    let seqno_first = dropped.clone().map(|b| b.seqno).next();
    let seqno_last = dropped.map(|b| b.seqno).next_back();
    let what = match scan.batches.iter().find(|b| b.fault.is_some()) {
        Some(bad) => describe(bad),
        None => format!("fjall cannot read the entry at byte {at}"),
    };
    truncate(path, at as u64)?;
    tracing::warn!(
        journal = %path.display(),
        offset = at,
        bytes_dropped = journal.written - at,
        whole_batches_dropped = whole_dropped,
        seqno_first = ?seqno_first,
        seqno_last = ?seqno_last,
        what = %what,
        "cut the newest journal at its first bad point (durability = \"none\": its batches \
         since the last background fdatasync may reach the disk in any order, and a power cut \
         loses the writes acknowledged in them), keeping every batch before it"
    );
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

#[cfg(test)]
mod tests;
