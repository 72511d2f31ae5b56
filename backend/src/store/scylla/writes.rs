//! Writes gathered for batches: a commit group's rows go out as a few batches sent at once,
//! never one request per row in turn.

use futures_util::future::try_join_all;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, engine};
use crate::store::StoreError;

/// Estimated bytes of one batch, at most: under ScyllaDB's default
/// `batch_size_warn_threshold_in_kb` (128), far under its fail threshold (1024).
pub(crate) const BATCH_BYTES_MAX: usize = 64 * 1024;
/// Statements in one batch, at most.
pub(super) const BATCH_STATEMENTS_MAX: usize = 256;
/// What a statement costs besides its variable-size values (keys, ids, framing).
pub(super) const STATEMENT_OVERHEAD_BYTES: usize = 64;

pub(super) type Values = Box<dyn SerializeRow + Send + Sync>;

/// Statements with their values, to be sent as batches.
#[derive(Default)]
pub(super) struct Writes<'a> {
    items: Vec<(&'a PreparedStatement, Values, usize)>,
}

impl<'a> Writes<'a> {
    /// Adds a statement; `bytes` is the size of its variable-size values (text, blobs).
    pub fn push(
        &mut self,
        st: &'a PreparedStatement,
        values: impl SerializeRow + Send + Sync + 'static,
        bytes: usize,
    ) {
        self.items
            .push((st, Box::new(values), bytes + STATEMENT_OVERHEAD_BYTES));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The statements cut into batches, in order.
    fn chunks(self) -> Vec<Vec<(&'a PreparedStatement, Values)>> {
        cut(self
            .items
            .into_iter()
            .map(|(st, values, size)| ((st, values), size))
            .collect())
    }
}

/// The last write of each key, in reverse order. Statements of one batch share its
/// timestamp, and at equal timestamps ScyllaDB keeps a delete over a write and the larger of
/// two values, not the later one: so a batch carries one write per row.
pub(super) fn last_per_key<T, K: std::hash::Hash + Eq>(
    items: &[T],
    key: impl Fn(&T) -> K,
) -> impl Iterator<Item = &T> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .rev()
        .filter(move |item| seen.insert(key(item)))
}

/// Items `(item, bytes)` cut into runs of at most [`BATCH_STATEMENTS_MAX`] items and
/// [`BATCH_BYTES_MAX`] bytes (an item larger than that alone), in order.
pub(super) fn cut<T>(items: Vec<(T, usize)>) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for (item, size) in items {
        let full = out.last().is_none_or(|last| {
            last.len() >= BATCH_STATEMENTS_MAX || bytes + size > BATCH_BYTES_MAX
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("pushed above").push(item);
    }
    out
}

impl ScyllaStore {
    /// Sends `writes` as batches of `kind`, all at once; returns when every one is written.
    /// A batch of one statement is sent as that statement.
    pub(super) async fn send(&self, kind: BatchType, writes: Writes<'_>) -> Result<(), StoreError> {
        let sends = writes.chunks().into_iter().map(|chunk| async move {
            if chunk.len() == 1 {
                let (st, values) = chunk.into_iter().next().expect("one statement");
                return self.exec(st, values).await.map(drop);
            }
            let mut batch = Batch::new(kind);
            // Every statement batched here is an idempotent upsert or delete.
            batch.set_is_idempotent(true);
            let mut values = Vec::with_capacity(chunk.len());
            for (st, v) in chunk {
                batch.append_statement(st.clone());
                values.push(v);
            }
            self.session()
                .batch(&batch, values)
                .await
                .map(drop)
                .map_err(engine)
        });
        try_join_all(sends).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_last_write_of_each_key() {
        let writes = [(1, "a"), (2, "b"), (1, "c"), (3, "d"), (2, "e")];
        let kept: Vec<_> = last_per_key(&writes, |w| w.0).map(|w| w.1).collect();
        assert_eq!(kept, ["e", "d", "c"]);
    }

    #[test]
    fn batches_are_cut_by_bytes_and_statements_in_order() {
        assert!(cut::<u32>(Vec::new()).is_empty());
        let sizes = [40_000, 20_000, 10_000, 100_000, 1, 2];
        let items: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
        let runs = cut(items);
        assert_eq!(runs, vec![vec![0, 1], vec![2], vec![3], vec![4, 5]]);
        let many: Vec<(usize, usize)> = (0..600).map(|i| (i, 10)).collect();
        let runs = cut(many);
        assert_eq!(
            runs.iter().map(Vec::len).collect::<Vec<_>>(),
            [
                BATCH_STATEMENTS_MAX,
                BATCH_STATEMENTS_MAX,
                600 - 2 * BATCH_STATEMENTS_MAX
            ]
        );
        assert_eq!(runs.concat(), (0..600).collect::<Vec<_>>());
    }
}
