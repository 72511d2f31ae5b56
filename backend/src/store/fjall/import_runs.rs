//! Imported runs of messages, written so that a conversation's runs never overlap, however an
//! earlier import of the same messages cut them.
//!
//! PostgreSQL and ScyllaDB cut runs at page boundaries, which move with `--batch-records` and
//! with the rows a live source holds: a copy that died after importing a batch and before
//! saving its checkpoint imports those messages again in other runs. A run is keyed by its
//! first seq, so a new run only replaces an old one that starts at the same seq; any other old
//! run that shares seqs with a new one would stay beside it, and reads (which walk runs in key
//! order) would return those messages twice. So an old run that shares seqs with a new one
//! keeps only its other messages, as runs keyed by their first seq: the import is idempotent
//! whatever the run cuts, and the new run's messages win.

use std::collections::BTreeMap;

use fjall::Readable;

use super::log::{decode_run, encode_run};
use super::{FjallStore, key_u64, pair_key};
use crate::store::{MessageRecord, StoreError};

/// A run's first and last seq.
fn span(run: &[MessageRecord]) -> (u64, u64) {
    (run[0].seq, run[run.len() - 1].seq)
}

impl FjallStore {
    /// Adds `runs` (each non-empty, one conversation's consecutive seqs, none sharing a seq
    /// with another) to `batch`, with what is left of the stored runs they overlap. Called
    /// under the write lock: the published view is the store as it is.
    pub(super) fn import_runs(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        runs: &[&[MessageRecord]],
    ) -> Result<(), StoreError> {
        // Conversation → the spans of its new runs, by first seq.
        let mut spans: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
        for run in runs {
            let (lo, hi) = span(run);
            spans
                .entry(run[0].conv_id.to_wire())
                .or_default()
                .insert(lo, hi);
        }
        for (conv, of_conv) in &spans {
            let mut last_hi = None;
            for (lo, hi) in of_conv {
                if last_hi.is_some_and(|last| *lo <= last) {
                    return Err(StoreError::Corrupt(
                        format!("dump: two runs of one batch share seqs of conversation {conv}")
                            .into(),
                    ));
                }
                last_hi = Some(*hi);
            }
        }
        let covered = |conv: u64, seq: u64| {
            spans[&conv]
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, hi)| seq <= *hi)
        };
        // Key → the value it gets (`None`: removed): one write per key, new runs last.
        let mut writes: BTreeMap<[u8; 16], Option<fjall::Slice>> = BTreeMap::new();
        let view = self.view();
        for run in runs {
            let conv = run[0].conv_id.to_wire();
            let (lo, hi) = span(run);
            // The stored run holding `lo` (it may start before it) and every one starting in
            // the span.
            let from = self.run_start(&view, conv, lo)?.unwrap_or(lo);
            for guard in view.range(&self.runs, pair_key(conv, from)..=pair_key(conv, hi)) {
                let (key, value) = guard.into_inner()?;
                let start = key_u64(&key, 8)?;
                if writes.contains_key(&pair_key(conv, start)) {
                    continue;
                }
                let old = decode_run(&key, &value)?;
                if !old.iter().any(|m| covered(conv, m.seq)) {
                    continue;
                }
                writes.insert(pair_key(conv, start), None);
                let left: Vec<&MessageRecord> =
                    old.iter().filter(|m| !covered(conv, m.seq)).collect();
                for piece in left.chunk_by(|a, b| b.seq == a.seq + 1) {
                    writes.insert(
                        pair_key(conv, piece[0].seq),
                        Some(encode_run(piece.iter().copied())),
                    );
                }
            }
        }
        for run in runs {
            let (lo, _) = span(run);
            writes.insert(
                pair_key(run[0].conv_id.to_wire(), lo),
                Some(encode_run(run.iter())),
            );
        }
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(&self.runs, key, value),
                None => batch.remove(&self.runs, key),
            }
        }
        Ok(())
    }
}
