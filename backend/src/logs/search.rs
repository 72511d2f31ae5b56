//! Reading the retained files: a search, newest first, that reads at most a budget of bytes per
//! request and returns a cursor (file number, byte offset) to go on from; and an export,
//! oldest first, of every matching line. Both skip a file whose last write is before `since`,
//! and the half-written last line of the file being written.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::files;
use super::filter::LineFilter;
use super::line::LogLine;

/// Bytes read from a file at a time, going backwards.
const BLOCK_BYTES: u64 = 64 * 1024;
/// A line longer than this (not one the writer made) is skipped, not held in memory.
pub const LINE_READ_BYTES_MAX: usize = 1 << 20;

/// Where a search goes on: before `offset` in file `number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub number: u64,
    pub offset: u64,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Self> {
        let (n, o) = s.split_once('-')?;
        Some(Self {
            number: n.parse().ok()?,
            offset: o.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.number, self.offset)
    }
}

#[derive(Debug)]
pub struct Found {
    pub lines: Vec<LogLine>,
    pub next: Option<Cursor>,
    pub scanned_bytes: u64,
}

/// Up to `limit` matching lines, newest first, from `cursor` (or the newest line) back,
/// reading about `scan_bytes_max` bytes at most.
pub fn search(
    dir: &Path,
    filter: &LineFilter,
    cursor: Option<Cursor>,
    limit: usize,
    scan_bytes_max: u64,
) -> io::Result<Found> {
    let mut found = Found {
        lines: Vec::new(),
        next: None,
        scanned_bytes: 0,
    };
    for (number, path) in files::list(dir)?.into_iter().rev() {
        if cursor.is_some_and(|c| number > c.number) {
            continue;
        }
        let Some(file) = open_unless_older(&path, filter)? else {
            continue;
        };
        let end = match cursor {
            Some(c) if c.number == number => c.offset.min(file.metadata()?.len()),
            _ => file.metadata()?.len(),
        };
        let budget = scan_bytes_max.saturating_sub(found.scanned_bytes);
        let stop = scan_back(&file, end, budget, |start, raw| {
            found.scanned_bytes += raw.len() as u64 + 1;
            if let Ok(line) = serde_json::from_slice::<LogLine>(raw)
                && filter.matches(&line)
            {
                found.lines.push(line);
                if found.lines.len() == limit {
                    return Some(start);
                }
            }
            (found.scanned_bytes >= scan_bytes_max).then_some(start)
        })?;
        if let Some(offset) = stop {
            found.next = Some(Cursor { number, offset });
            return Ok(found);
        }
    }
    Ok(found)
}

/// Opens a log file, or `None` if it is gone (pruned meanwhile) or holds nothing at or after
/// `filter.since` (its last write is earlier).
fn open_unless_older(path: &Path, filter: &LineFilter) -> io::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(since) = filter.since_time
        && file.metadata()?.modified()? < since
    {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Visits the whole lines of `file` before `end`, last first, as (start offset, bytes without
/// the newline); a partial line at `end` is left out. `visit` returns `Some(offset)` to stop
/// there. Stops by itself, at a line boundary, once `budget` bytes are read. Returns where it
/// stopped, or `None` at the file's start.
fn scan_back(
    file: &File,
    end: u64,
    budget: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Option<u64>,
) -> io::Result<Option<u64>> {
    let mut read = 0u64;
    // `buf` holds the file's bytes from `buf_start`; while `complete`, it ends with the
    // newline of the line being assembled.
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = end;
    let mut complete = end == 0 || {
        let mut last = [0u8];
        file.read_exact_at(&mut last, end - 1)?;
        last[0] == b'\n'
    };
    // The line being assembled is longer than any the writer makes: skipped.
    let mut too_long = false;
    loop {
        let body_end = if complete {
            buf.len().saturating_sub(1)
        } else {
            buf.len()
        };
        match buf[..body_end].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let start = buf_start + i as u64 + 1;
                if complete
                    && !too_long
                    && let Some(stop) = visit(start, &buf[i + 1..body_end])
                {
                    return Ok(Some(stop));
                }
                buf.truncate(i + 1);
                complete = true;
                too_long = false;
            }
            None if buf_start == 0 => {
                if complete
                    && !too_long
                    && !buf.is_empty()
                    && let Some(stop) = visit(0, &buf[..body_end])
                {
                    return Ok(Some(stop));
                }
                return Ok(None);
            }
            None => {
                if read >= budget {
                    // Go on from the end of the line being assembled next time.
                    return Ok(Some(if complete {
                        buf_start + buf.len() as u64
                    } else {
                        end
                    }));
                }
                if buf.len() > LINE_READ_BYTES_MAX {
                    too_long = true;
                    // Keep only the newline that ends it (its place no longer matters).
                    buf.clear();
                    if complete {
                        buf.push(b'\n');
                    }
                }
                let from = buf_start.saturating_sub(BLOCK_BYTES);
                let mut block = vec![0u8; (buf_start - from) as usize];
                file.read_exact_at(&mut block, from)?;
                read += block.len() as u64;
                block.extend_from_slice(&buf);
                buf = block;
                buf_start = from;
            }
        }
    }
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportEnd {
    /// Every matching line was handed over.
    Complete,
    /// Stopped at `bytes_max`, the last chunk handed over.
    Cut,
    /// `out` refused a chunk (the reader went away, or did not take it in time), or the
    /// deadline passed.
    Stopped,
}

/// Every matching line, oldest first, as raw bytes with newlines, in chunks of about
/// `chunk_bytes` handed to `out` (which returns false to stop). Stops after `bytes_max` bytes,
/// and at `deadline`, even while reading lines that do not match.
pub fn export(
    dir: &Path,
    filter: &LineFilter,
    bytes_max: u64,
    chunk_bytes: usize,
    deadline: Instant,
    mut out: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<ExportEnd> {
    let mut sent = 0u64;
    let mut chunk = Vec::with_capacity(chunk_bytes);
    let mut raw = Vec::new();
    for (_, path) in files::list(dir)? {
        let Some(file) = open_unless_older(&path, filter)? else {
            continue;
        };
        let mut reader = BufReader::new(file);
        loop {
            if Instant::now() >= deadline {
                return Ok(ExportEnd::Stopped);
            }
            raw.clear();
            let n = (&mut reader)
                .take(LINE_READ_BYTES_MAX as u64)
                .read_until(b'\n', &mut raw)?;
            if n == 0 {
                break;
            }
            if raw.last() != Some(&b'\n') {
                if n < LINE_READ_BYTES_MAX {
                    break; // the half-written last line
                }
                skip_line(&mut reader)?;
                continue;
            }
            let matches = serde_json::from_slice::<LogLine>(&raw[..raw.len() - 1])
                .is_ok_and(|l| filter.matches(&l));
            if !matches {
                continue;
            }
            if sent + raw.len() as u64 > bytes_max {
                if !chunk.is_empty() && !out(std::mem::take(&mut chunk)) {
                    return Ok(ExportEnd::Stopped);
                }
                return Ok(ExportEnd::Cut);
            }
            sent += raw.len() as u64;
            chunk.extend_from_slice(&raw);
            if chunk.len() >= chunk_bytes
                && !out(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(chunk_bytes),
                ))
            {
                return Ok(ExportEnd::Stopped);
            }
        }
    }
    if !chunk.is_empty() && !out(chunk) {
        return Ok(ExportEnd::Stopped);
    }
    Ok(ExportEnd::Complete)
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_back(text: &str, end: u64, budget: u64) -> (Vec<(u64, String)>, Option<u64>) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), text).unwrap();
        let file = File::open(tmp.path()).unwrap();
        let mut seen = Vec::new();
        let stop = scan_back(&file, end, budget, |start, l| {
            seen.push((start, String::from_utf8_lossy(l).into_owned()));
            None
        })
        .unwrap();
        (seen, stop)
    }

    #[test]
    fn reads_lines_backwards_leaving_out_a_partial_one() {
        let text = "one\ntwo\nthree\npart";
        let (seen, stop) = lines_back(text, text.len() as u64, u64::MAX);
        assert_eq!(
            seen,
            [(8, "three".into()), (4, "two".into()), (0, "one".into())]
        );
        assert_eq!(stop, None);
        let (seen, _) = lines_back(text, 8, u64::MAX);
        assert_eq!(seen, [(4, "two".into()), (0, "one".into())]);
        assert_eq!(lines_back("", 0, u64::MAX).0, []);
    }

    #[test]
    fn long_files_cross_blocks_and_the_budget_stops_at_a_line() {
        let text: String = (0..20_000).map(|i| format!("line {i:05}\n")).collect();
        let (seen, stop) = lines_back(&text, text.len() as u64, u64::MAX);
        assert_eq!(seen.len(), 20_000);
        assert_eq!(seen[0].1, "line 19999");
        assert_eq!(seen[19_999], (0, "line 00000".into()));
        assert_eq!(stop, None);
        let (some, stop) = lines_back(&text, text.len() as u64, 1);
        let stop = stop.expect("stopped by the budget");
        assert!(some.len() < 20_000);
        assert_eq!(
            stop,
            some.last().unwrap().0,
            "goes on before the last line seen"
        );
    }
}
