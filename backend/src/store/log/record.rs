//! The record format and the sequential scan of a segment.
//!
//! A record is `[len: u32 LE][crc: u32 LE][payload: len bytes]`. `crc` is the CRC32C of the four
//! length bytes followed by the payload. Covering the length matters: with a checksum of the
//! payload alone, eight zero bytes would be a valid empty record, so a zero-filled tail (what
//! many file systems show after a crash) would read as records and could never be told from data.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::LogError;

pub(super) const HEADER_BYTES: usize = 8;
/// Bytes a scan reads from the file at a time (more when one record is longer).
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Why a stored record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("record cut off by the end of the segment")]
    Short,
    #[error("record length {len} is over the limit of {max} bytes")]
    LengthOverLimit { len: u32, max: u32 },
    #[error("record checksum mismatch")]
    Checksum,
    #[error("segment file missing")]
    MissingSegment,
}

fn checksum(len_le: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_le), payload)
}

/// Appends one record to `out`. The caller has checked `payload` against the length limit.
pub(super) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("caller checks the record length limit");
    let len_le = len.to_le_bytes();
    out.extend_from_slice(&len_le);
    out.extend_from_slice(&checksum(len_le, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload length a header claims.
pub(super) fn header_len(header: &[u8]) -> u32 {
    u32::from_le_bytes(header[..4].try_into().expect("4 bytes"))
}

/// Whether `record` (header and payload) checks out. The caller has sized it from the header.
pub(super) fn checksum_ok(record: &[u8]) -> bool {
    let (header, payload) = record.split_at(HEADER_BYTES);
    let stored = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    stored == checksum(header[..4].try_into().expect("4 bytes"), payload)
}

/// The first offset in `bytes` at which a whole valid record (within `bytes`) starts.
/// Costs a checksum of `len` bytes only at offsets whose length field is plausible and fits.
pub(super) fn find_valid(bytes: &[u8], record_bytes_max: u32) -> Option<usize> {
    (0..bytes.len().saturating_sub(HEADER_BYTES - 1)).find(|&at| {
        let len = header_len(&bytes[at..]);
        let fits = (len as usize) <= bytes.len() - at - HEADER_BYTES;
        len <= record_bytes_max && fits && checksum_ok(&bytes[at..at + HEADER_BYTES + len as usize])
    })
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanEnd {
    /// End of the last valid record (the scan's `start` when there was none).
    pub end: u64,
    /// The record at `end` could not be read, or `None` if the scan reached its end.
    pub bad: Option<BadRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadRecord {
    pub damage: Damage,
    /// The payload length its header claims, when that is within `record_bytes_max`.
    pub plausible_len: Option<u32>,
}

/// Reads the records of `file` in `start..end` in order, checking each, and calls
/// `visit(offset, payload)` for each valid one; stops at the first that is not. `buf` is the
/// only buffer used (it grows to the chunk size or one record, whichever is larger).
pub(super) fn scan<E: From<LogError>>(
    file: &File,
    start: u64,
    end: u64,
    record_bytes_max: u32,
    buf: &mut Vec<u8>,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    buf.clear();
    // `buf` holds the file's bytes from `buf_at`; records are parsed from `buf[pos..]`.
    let mut buf_at = start;
    let mut pos = 0usize;
    loop {
        let offset = buf_at + pos as u64;
        let bad = |damage, plausible_len| {
            let bad = Some(BadRecord {
                damage,
                plausible_len,
            });
            Ok(ScanEnd { end: offset, bad })
        };
        let left = end - offset;
        if left == 0 {
            return Ok(ScanEnd { end, bad: None });
        }
        if left < HEADER_BYTES as u64 {
            return bad(Damage::Short, None);
        }
        fill(file, buf, &mut buf_at, &mut pos, HEADER_BYTES, end).map_err(LogError::Io)?;
        let len = header_len(&buf[pos..]);
        if len > record_bytes_max {
            let max = record_bytes_max;
            return bad(Damage::LengthOverLimit { len, max }, None);
        }
        let record_bytes = HEADER_BYTES + len as usize;
        if left < record_bytes as u64 {
            return bad(Damage::Short, Some(len));
        }
        fill(file, buf, &mut buf_at, &mut pos, record_bytes, end).map_err(LogError::Io)?;
        let record = &buf[pos..pos + record_bytes];
        if !checksum_ok(record) {
            return bad(Damage::Checksum, Some(len));
        }
        visit(offset, &record[HEADER_BYTES..])?;
        pos += record_bytes;
    }
}

/// Makes `buf[pos..pos + need]` hold file bytes, reading on (up to `end`) when it does not.
fn fill(
    file: &File,
    buf: &mut Vec<u8>,
    buf_at: &mut u64,
    pos: &mut usize,
    need: usize,
    end: u64,
) -> std::io::Result<()> {
    if buf.len() - *pos >= need {
        return Ok(());
    }
    buf.drain(..*pos);
    *buf_at += *pos as u64;
    *pos = 0;
    let have = buf.len();
    let want = need.max(SCAN_CHUNK_BYTES).min((end - *buf_at) as usize);
    debug_assert!(
        want >= need,
        "the caller checked that the record ends before `end`"
    );
    buf.resize(want, 0);
    file.read_exact_at(&mut buf[have..], *buf_at + have as u64)
}
