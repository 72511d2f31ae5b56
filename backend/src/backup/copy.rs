//! A copy of every part from a [`DumpView`] into a [`DumpStore`], in bounded batches, resumable.
//!
//! The checkpoint (`CHECKPOINT_FILE` in the destination's data dir) names the source and holds,
//! per part, whether it is done and the resume key of the last batch imported. It is written
//! before the first import and after each batch; a rerun with the same source continues from
//! it (the batch in flight when a copy died is imported again, which import allows). Without a
//! checkpoint the destination must be empty. The caller removes it once verification passes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BackupError, write_atomic};
use crate::store::dump::{DumpStore, DumpView, Part, ResumeKey};

/// The checkpoint's file name, in the destination's data dir (a server refuses to open a
/// data dir that holds one).
pub const CHECKPOINT_FILE: &str = crate::store::dump::COPY_CHECKPOINT_FILE;
const CHECKPOINT_FORMAT: u32 = 1;
/// Progress is reported at most this often (and at the end of each part).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    source: String,
    parts: BTreeMap<String, PartState>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PartState {
    done: bool,
    /// The resume key after the last batch imported, hex.
    resume: Option<String>,
    records: u64,
}

/// Where a copy is, for progress lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub part: Part,
    pub parts_done: usize,
    pub parts_total: usize,
    /// Records imported by this run, and what an earlier run had done.
    pub records: u64,
    pub records_before: u64,
    pub records_per_s: f64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "part {}/{} {:<18} {} records copied{}, {:.0} records/s",
            self.parts_done + 1,
            self.parts_total,
            self.part.name(),
            self.records,
            if self.records_before > 0 {
                format!(" (+{} before resuming)", self.records_before)
            } else {
                String::new()
            },
            self.records_per_s
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CopyReport {
    pub records: u64,
    /// Continued from a checkpoint.
    pub resumed: bool,
    pub elapsed: Duration,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

fn load(path: &Path, source: &str) -> Result<Option<Checkpoint>, BackupError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BackupError::io(path)(e)),
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
        BackupError::Corrupt(format!("{}: not a copy checkpoint: {e}", path.display()))
    })?;
    if checkpoint.format != CHECKPOINT_FORMAT || checkpoint.source != source {
        return Err(BackupError::NotEmpty(format!(
            "{} belongs to a copy from {}, not from {source}: finish that one, or start over into an empty destination",
            path.display(),
            checkpoint.source
        )));
    }
    Ok(Some(checkpoint))
}

fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), BackupError> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(checkpoint).expect("a checkpoint serialises"),
    )
}

/// Copies every part of `source` (named `source_id` in the checkpoint) into `dest`,
/// `batch_records` records per batch, calling `progress` now and then.
pub fn copy(
    source: &dyn DumpView,
    source_id: &str,
    dest: &dyn DumpStore,
    checkpoint_path: &Path,
    batch_records: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<CopyReport, BackupError> {
    let started = Instant::now();
    let (mut checkpoint, resumed) = match load(checkpoint_path, source_id)? {
        Some(c) => (c, true),
        None => {
            if !dest.is_empty()? {
                return Err(BackupError::NotEmpty(format!(
                    "the destination is not empty and has no checkpoint of this copy ({}): copies go into an empty store",
                    checkpoint_path.display()
                )));
            }
            let fresh = Checkpoint {
                format: CHECKPOINT_FORMAT,
                source: source_id.to_owned(),
                parts: BTreeMap::new(),
            };
            save(checkpoint_path, &fresh)?;
            (fresh, false)
        }
    };
    // After the checkpoint (a copy that dies before its first batch leaves an empty store)
    // and before any batch: a server refuses the store until `finish`.
    dest.mark_import(Some(source_id))?;
    let records_before: u64 = checkpoint.parts.values().map(|p| p.records).sum();
    let mut records = 0u64;
    let mut last_report = Instant::now();
    for (index, part) in Part::ALL.into_iter().enumerate() {
        let mut state = checkpoint
            .parts
            .get(part.name())
            .cloned()
            .unwrap_or_default();
        let mut report = |records: u64, force: bool| {
            if force || last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                progress(&Progress {
                    part,
                    parts_done: index,
                    parts_total: Part::ALL.len(),
                    records,
                    records_before,
                    records_per_s: records as f64 / started.elapsed().as_secs_f64().max(1e-3),
                });
            }
        };
        while !state.done {
            let after = match &state.resume {
                None => None,
                Some(h) => Some(ResumeKey(unhex(h).ok_or_else(|| {
                    BackupError::Corrupt(format!("{}: bad resume key", checkpoint_path.display()))
                })?)),
            };
            let page = source.export(part, after.as_ref(), batch_records)?;
            dest.import(&page.items)?;
            let n: u64 = page.items.iter().map(|i| i.records() as u64).sum();
            records += n;
            state.records += n;
            state.done = page.resume.is_none();
            state.resume = page.resume.map(|k| hex(&k.0));
            checkpoint
                .parts
                .insert(part.name().to_owned(), state.clone());
            save(checkpoint_path, &checkpoint)?;
            report(records, false);
        }
        report(records, true);
    }
    dest.finish_import()?;
    Ok(CopyReport {
        records,
        resumed,
        elapsed: started.elapsed(),
    })
}

/// Removes the store's mark of the copy, then its checkpoint, once the copy has been verified
/// (in this order: a finish that dies between them leaves the checkpoint, and a rerun
/// finishes again; the other order would leave a marked store and no copy to finish it).
pub fn finish(checkpoint_path: &Path, dest: &dyn DumpStore) -> Result<(), BackupError> {
    dest.mark_import(None)?;
    match std::fs::remove_file(checkpoint_path) {
        Ok(()) => super::sync_parent(checkpoint_path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackupError::io(checkpoint_path)(e)),
    }
}
