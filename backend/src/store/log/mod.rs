//! A durable, append-only segment log: the lowest layer of the planned embedded store (commit
//! groups appended here, state kept in memory and checkpointed into fjall).
//!
//! Files are `DIR/NNNNNNNNNNNNNNNNNNNN.seg` (the segment id, zero-padded to 20 digits), holding
//! records back to back; `record.rs` has the format. Only the newest segment is ever written;
//! a segment is made durable before the next one is created, so after a crash only the last
//! segment can end in a torn write. `recovery.rs` has the rules `SegmentLog::open` applies.
//!
//! *Invariant*: a record is acknowledged only after a successful `sync`, so a torn tail holds
//! nothing acknowledged and may be dropped; damage anywhere else is never dropped silently.
//!
//! Deliberately absent: deleting old segments (the checkpointing step will own that), and a lock
//! on the directory (the store's data dir lock covers it).

// Nothing calls the log yet: it becomes the message-log adapter in a later step.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

mod record;
mod recovery;
mod segment_log;
#[cfg(test)]
mod tests;

pub use record::Damage;
pub use segment_log::{SEGMENTS_OPEN_MAX, SegmentLog};

/// Where a record starts: its segment and the byte offset of its header in that segment.
/// Ordered like the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is not written past this size (a new one is started instead). At least
    /// `record_bytes_max` plus the 8-byte record header, so any record fits in a new segment.
    pub segment_bytes_max: u64,
    /// Largest payload `append` accepts; a longer one is refused with `RecordTooLarge`. Recovery
    /// also treats a longer stored length as damage, so do not lower it below what is stored.
    pub record_bytes_max: u32,
}

/// What `SegmentLog::open` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Valid records in the log.
    pub records: u64,
    /// The newest valid record.
    pub last: Option<Position>,
    /// Bytes of a torn write dropped from the end of the last segment (never acknowledged).
    pub torn_tail_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid log options: {0}")]
    Options(&'static str),
    #[error("log record of {len} bytes is over the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: u32 },
    /// Damage that is not a torn tail: open refuses to start rather than drop records.
    #[error(
        "log segment {segment} is damaged at offset {offset} ({reason}) before the log's end, \
         so this is not a torn write: nothing was changed; the store must be repaired by hand"
    )]
    Corrupt {
        segment: u64,
        offset: u64,
        reason: Damage,
    },
    /// `fdatasync` (or the directory fsync of a new segment) failed: which of the written records
    /// are on disk is unknown, and the kernel may have dropped the dirty pages already, so a retry
    /// could claim success for lost data. The caller must stop (acknowledge nothing more) and
    /// let a restart's recovery find what survived. The log refuses writes from here on.
    #[error("making the log durable failed, its state on disk is unknown: {0}")]
    Sync(std::io::Error),
    /// An earlier write or sync failed; the log accepts no more writes.
    #[error("the log failed earlier and accepts no more writes")]
    Failed,
    /// The position is past the log's end or in a segment the log does not have.
    #[error("no log record at segment {} offset {}", .0.segment, .0.offset)]
    NoRecord(Position),
}
