//! [`DumpStore`] on ScyllaDB: what `ringchat migrate` reads from and writes into.
//!
//! - `export.rs`: each part is one table's full scan in token order, a page per call, the
//!   driver's paging state as the resume key. ScyllaDB has no snapshot: a view reads what is
//!   there when each page is read, so a copy *from* ScyllaDB runs with the servers stopped
//!   (or the cluster read-only); the verification pass (a second full read) reports a
//!   source that moved.
//! - `import.rs`: a batch is written as UNLOGGED batches grouped by partition, a bounded
//!   number in flight, then heads, owner epochs and counters raised by LWT: idempotent.
//! - `finish_import` counts `user_group_counts` (the one table derived from others that the
//!   items do not carry), as whole values: a store imported into has no `user_group_tallies`
//!   yet (the changes servers add later).

mod export;
mod import;
mod statements;

use super::{ScyllaStore, engine};
use crate::store::StoreError;
use crate::store::dump::{DumpItem, DumpPage, DumpStore, DumpView, Part, ResumeKey};
pub(super) use statements::Statements;

/// Every table `is_empty` looks at (the index tables follow the records they index).
const TABLES: [&str; 20] = [
    "meta",
    "users",
    "tokens",
    "messages",
    "conv_meta",
    "cursor_rows",
    "recent",
    "relations",
    "contact_summaries",
    "profiles",
    "groups",
    "group_members",
    "user_groups",
    "group_applications",
    "mentions",
    "group_reads",
    "user_flags",
    "invites",
    "audit",
    "push_tokens",
];

struct ScyllaDumpView<'a> {
    store: &'a ScyllaStore,
    st: &'a Statements,
}

impl DumpView for ScyllaDumpView<'_> {
    fn export(
        &self,
        part: Part,
        after: Option<&ResumeKey>,
        records_max: usize,
    ) -> Result<DumpPage, StoreError> {
        let mut after = after.cloned();
        // A page whose rows were all filtered out (rows past a head, unclaimed conversations)
        // is not returned: the next one is read.
        loop {
            let page = self.store.run(self.store.export_page(
                self.st,
                part,
                after.as_ref(),
                records_max,
            ))?;
            if !page.items.is_empty() || page.resume.is_none() {
                return Ok(page);
            }
            after = page.resume;
        }
    }
}

impl ScyllaStore {
    /// The dump statements, prepared at the first call.
    fn dump_statements(&self) -> Result<&Statements, StoreError> {
        if let Some(st) = self.dump_st.get() {
            return Ok(st);
        }
        let prepared = self.run(Statements::prepare(self.session()))?;
        Ok(self.dump_st.get_or_init(|| prepared))
    }

    /// Counts each user's groups from `user_groups`: a full scan in token order, where each
    /// user's rows (one partition) come together, so a count is written as soon as its
    /// user's rows end; a page of counts is written at once, a bounded number in flight.
    async fn count_user_groups(&self, d: &Statements) -> Result<(), StoreError> {
        let mut current: Option<(i64, u32)> = None;
        let mut after: Option<ResumeKey> = None;
        loop {
            let (rows, resume) = self
                .scan::<(i64,)>(
                    &d.scan_user_group_ids,
                    after.as_ref(),
                    export::PAGE_ROWS_MAX,
                )
                .await?;
            let mut counts = Vec::new();
            for (user,) in rows {
                match &mut current {
                    Some((u, n)) if *u == user => *n += 1,
                    _ => counts.extend(current.replace((user, 1))),
                }
            }
            if resume.is_none() {
                counts.extend(current.take());
            }
            let writes = counts.into_iter().map(|(user, n)| {
                let n = i32::try_from(n).unwrap_or(i32::MAX);
                self.exec(&self.st.user_group_count_put, (user, n))
            });
            import::bounded(
                writes.map(|w| async move { w.await.map(drop) }),
                self.copy_requests_max,
            )
            .await?;
            match resume {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }
}

impl DumpStore for ScyllaStore {
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError> {
        Ok(Box::new(ScyllaDumpView {
            store: self,
            st: self.dump_statements()?,
        }))
    }

    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        self.writable()?;
        let d = self.dump_statements()?;
        self.run(self.import_async(d, items))
    }

    fn finish_import(&self) -> Result<(), StoreError> {
        self.writable()?;
        let d = self.dump_statements()?;
        self.run(self.count_user_groups(d))
    }

    /// Not tracked in ScyllaDB: the copy's checkpoint is in `ringchat migrate`'s working
    /// directory only, and a server started on a keyspace mid-copy is not refused (README).
    fn mark_import(&self, _source: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.run(async {
            for table in TABLES {
                let result = self
                    .session()
                    .query_unpaged(format!("SELECT * FROM {table} LIMIT 1"), ())
                    .await
                    .map_err(engine)?;
                let rows = result.into_rows_result().map_err(engine)?;
                if rows.rows_num() > 0 {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests;
