//! Reading the retained files: a search, newest first, that reads at most a budget of bytes per
//! request and returns a cursor (file number, byte offset) to go on from; and an export,
//! oldest first, of every matching line. Both skip a file whose last write is before `since`,
//! and the half-written last line of the file being written; both end at the first line well
//! outside the time range (`LineFilter::ends_*_scan`: the files are in time order), and the
//! export as soon as its reader has gone, matching or not.

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
/// Lines an export reads between two looks at whether its reader is still there (and at
/// each file's start): a filter that matches nothing sends nothing, so no send would tell.
const GONE_CHECK_LINES: u32 = 1024;

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
        let mut before_range = false;
        let stop = scan_back(&file, end, budget, |start, raw| {
            found.scanned_bytes += raw.len() as u64 + 1;
            if let Ok(line) = serde_json::from_slice::<LogLine>(raw) {
                if filter.ends_backward_scan(&line) {
                    before_range = true;
                    return Some(start);
                }
                if filter.matches(&line) {
                    found.lines.push(line);
                    if found.lines.len() == limit {
                        return Some(start);
                    }
                }
            }
            (found.scanned_bytes >= scan_bytes_max).then_some(start)
        })?;
        if before_range {
            // Every older line is before `since` too: nothing left to page to.
            return Ok(found);
        }
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
/// at `deadline`, and once `gone` says the reader went away (asked every
/// [`GONE_CHECK_LINES`] lines and at each file), even while reading lines that do not match.
pub fn export(
    dir: &Path,
    filter: &LineFilter,
    bytes_max: u64,
    chunk_bytes: usize,
    deadline: Instant,
    gone: impl Fn() -> bool,
    mut out: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<ExportEnd> {
    let mut sent = 0u64;
    let mut chunk = Vec::with_capacity(chunk_bytes);
    let mut raw = Vec::new();
    let mut since_look = 0u32;
    'files: for (_, path) in files::list(dir)? {
        if gone() {
            return Ok(ExportEnd::Stopped);
        }
        let Some(file) = open_unless_older(&path, filter)? else {
            continue;
        };
        let mut reader = BufReader::new(file);
        loop {
            if Instant::now() >= deadline {
                return Ok(ExportEnd::Stopped);
            }
            since_look += 1;
            if since_look == GONE_CHECK_LINES {
                since_look = 0;
                if gone() {
                    return Ok(ExportEnd::Stopped);
                }
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
            let Ok(line) = serde_json::from_slice::<LogLine>(&raw[..raw.len() - 1]) else {
                continue;
            };
            if filter.ends_forward_scan(&line) {
                // Every later line is after `until` too.
                break 'files;
            }
            if !filter.matches(&line) {
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

    /// A log dir with one file of `lines` (`files::list` names).
    fn dir_with(lines: &[String]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join(files::file_name(1, 20_000)), text).unwrap();
        dir
    }

    fn event(ts: &str, msg: &str) -> String {
        format!(r#"{{"ts":"{ts}","level":"INFO","target":"t","msg":"{msg}"}}"#)
    }

    fn run_export(dir: &Path, filter: &LineFilter, gone: impl Fn() -> bool) -> (ExportEnd, String) {
        let mut got = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let end = export(dir, filter, u64::MAX, 1, deadline, gone, |c| {
            got.extend(c);
            true
        })
        .unwrap();
        (end, String::from_utf8(got).unwrap())
    }

    #[test]
    fn an_export_whose_reader_left_stops_though_nothing_matches() {
        let lines: Vec<String> = (0..10_000)
            .map(|i| event("2026-12-02T10:00:00.000000Z", &format!("line {i}")))
            .collect();
        let dir = dir_with(&lines);
        let never = LineFilter::parse(None, None, Some("no line says this"), None, None).unwrap();
        let looks = std::cell::Cell::new(0u32);
        let (end, got) = run_export(dir.path(), &never, || {
            looks.set(looks.get() + 1);
            true
        });
        assert_eq!(end, ExportEnd::Stopped);
        assert_eq!(got, "");
        assert_eq!(looks.get(), 1, "it looked at the file's start, and stopped");
        // A reader still there gets the whole scan.
        let (end, _) = run_export(dir.path(), &never, || false);
        assert_eq!(end, ExportEnd::Complete);
    }

    #[test]
    fn scans_end_at_the_first_line_well_outside_the_time_range() {
        let lines = [
            event("2026-12-02T10:00:00.000000Z", "early"),
            event("2026-12-02T11:00:00.000000Z", "in range"),
            // Out of order by less than the slack: still read.
            event("2026-12-02T12:00:05.000000Z", "a little late"),
            event("2026-12-02T11:59:59.000000Z", "written late"),
            event("2026-12-02T13:00:00.000000Z", "well past until"),
            // Past the end of the scan: an export that read on would send it.
            event("2026-12-02T11:30:00.000000Z", "never read"),
        ];
        let dir = dir_with(&lines);
        let range = LineFilter::parse(
            None,
            None,
            None,
            Some("2026-12-02T10:30:00Z"),
            Some("2026-12-02T12:00:00Z"),
        )
        .unwrap();
        let (end, got) = run_export(dir.path(), &range, || false);
        assert_eq!(end, ExportEnd::Complete);
        let msgs: Vec<_> = got
            .lines()
            .map(|l| serde_json::from_str::<LogLine>(l).unwrap().msg)
            .collect();
        assert_eq!(msgs, ["in range", "written late"]);

        // Backwards: ends at the first line well before `since`, with no cursor to go on.
        let lines = [
            event("2026-12-02T11:00:00.000000Z", "never read"),
            event("2026-12-02T10:00:00.000000Z", "well before since"),
            event("2026-12-02T11:00:00.000000Z", "in range"),
        ];
        let dir = dir_with(&lines);
        let found = search(dir.path(), &range, None, 50, u64::MAX).unwrap();
        let msgs: Vec<_> = found.lines.iter().map(|l| l.msg.as_str()).collect();
        assert_eq!(msgs, ["in range"]);
        assert_eq!(found.next, None);
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
