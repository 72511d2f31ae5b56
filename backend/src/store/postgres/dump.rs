//! [`DumpStore`] on PostgreSQL: what `ringchat migrate` reads from and writes into.
//!
//! - A view is one connection in a `REPEATABLE READ READ ONLY` transaction: every page of
//!   every part comes from the same snapshot while the servers keep writing. The connection
//!   is closed with the view, never handed back to the pool inside its transaction.
//! - `export.rs`: each part is one table read in primary-key order by keyset pages.
//! - `import.rs`: a batch is one transaction of multi-row upserts, idempotent.
//! - `finish_import` counts `user_group_counts` (the one table derived from others) and logs
//!   the users whose shared e-mail address stayed with a lower user id; the counters were
//!   raised (never lowered) by the import of the `Counters` part.

mod export;
mod import;

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;

use std::collections::HashMap;

use super::{PgStore, col, limit, u};
use crate::store::dump::{Counter, DumpItem, DumpPage, DumpStore, DumpView, Part, ResumeKey};
use crate::store::{StoreError, email_key, log_email_not_indexed};

/// Every table `is_empty` looks at.
const TABLES: [&str; 21] = [
    "counters",
    "users",
    "tokens",
    "messages",
    "cursor_rows",
    "recent",
    "conv_owners",
    "relations",
    "contact_summaries",
    "profiles",
    "groups",
    "group_members",
    "user_groups",
    "user_group_counts",
    "group_applications",
    "mentions",
    "read_histograms",
    "audit",
    "user_flags",
    "invites",
    "push_tokens",
];

struct PgDumpView<'a> {
    store: &'a PgStore,
    /// `None` only while dropping.
    client: Option<Object>,
}

impl PgDumpView<'_> {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a view's connection lives as long as the view")
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client();
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// The counters the store keeps, in one page.
    async fn counters(&self) -> Result<DumpPage, StoreError> {
        let mut items = Vec::new();
        for row in self
            .query("SELECT name, value FROM counters ORDER BY name", &[])
            .await?
        {
            let name: &str = col(&row, 0)?;
            if let Some((counter, _)) = import::COUNTER_NAMES.iter().find(|(_, n)| *n == name) {
                items.push(DumpItem::Counter {
                    counter: *counter,
                    next: u(&row, 1)?,
                });
            }
        }
        let last_audit = self
            .query("SELECT id FROM audit ORDER BY id DESC LIMIT 1", &[])
            .await?;
        if let Some(row) = last_audit.first() {
            items.push(DumpItem::Counter {
                counter: Counter::Audit,
                next: u(row, 0)? + 1,
            });
        }
        Ok(DumpPage {
            items,
            resume: None,
        })
    }
}

impl DumpView for PgDumpView<'_> {
    fn export(
        &self,
        part: Part,
        after: Option<&ResumeKey>,
        records_max: usize,
    ) -> Result<DumpPage, StoreError> {
        let Some(table) = export::table(part) else {
            return self.store.block(self.counters());
        };
        let n = limit(records_max.max(1));
        let mut params: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(n)];
        if let Some(key) = after {
            params.extend(table.params_of(key)?);
        }
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p).collect();
        let rows = self
            .store
            .block(self.query(&table.sql(after.is_some()), &params))?;
        let resume = match rows.last() {
            Some(last) if rows.len() as i64 >= n => Some(table.resume_of(last)?),
            _ => None,
        };
        Ok(DumpPage {
            items: table.items(&rows)?,
            resume,
        })
    }
}

impl Drop for PgDumpView<'_> {
    fn drop(&mut self) {
        // Detached from the pool: closing the connection ends its transaction.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl DumpStore for PgStore {
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError> {
        let client = self.block(async {
            let client = self.client().await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            Ok(client)
        })?;
        Ok(Box::new(PgDumpView {
            store: self,
            client: Some(client),
        }))
    }

    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let batch = self.import_batch(items);
        self.block(self.run_batch(&[], &batch))
    }

    fn finish_import(&self) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO user_group_counts (user_id, count) \
             SELECT user_id, count(*)::integer FROM user_groups GROUP BY user_id \
             ON CONFLICT (user_id) DO UPDATE SET count = excluded.count",
            &[],
        )?;
        self.log_emails_not_indexed()
    }

    fn mark_import(&self, source: Option<&str>) -> Result<(), StoreError> {
        match source {
            Some(source) => self.execute(
                "INSERT INTO import_in_progress (source) VALUES ($1) \
                 ON CONFLICT (only_row) DO UPDATE SET source = excluded.source",
                &[&source],
            )?,
            None => self.execute("DELETE FROM import_in_progress", &[])?,
        };
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let any: Vec<String> = TABLES
            .iter()
            .map(|t| format!("EXISTS (SELECT 1 FROM {t})"))
            .collect();
        let sql = format!("SELECT {}", any.join(" OR "));
        match self.row(&sql, &[])? {
            Some(row) => Ok(!col::<bool>(&row, 0)?),
            None => Ok(true),
        }
    }
}

impl PgStore {
    /// Logs each imported user whose address stayed with a lower user id
    /// ([`crate::store::keeps_email`]), as the embedded store's index build does.
    fn log_emails_not_indexed(&self) -> Result<(), StoreError> {
        let mut shared = Vec::new();
        for row in self.rows(import::EMAILS_NOT_INDEXED, &[])? {
            let key = email_key(&col::<String>(&row, 1)?);
            if !key.is_empty() {
                shared.push((u(&row, 0)?, key));
            }
        }
        if shared.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = shared.iter().map(|(_, k)| k.as_str()).collect();
        let holders: HashMap<String, u64> = self
            .rows(import::EMAIL_HOLDERS, &[&keys])?
            .iter()
            .map(|row| Ok((col::<String>(row, 0)?, u(row, 1)?)))
            .collect::<Result<_, StoreError>>()?;
        for (user, key) in shared {
            log_email_not_indexed(user, holders.get(&key).copied());
        }
        Ok(())
    }

    /// The source of a copy into this database that has not finished (`mark_import`), its
    /// credentials hidden: a mark written before 2026-12-06 may hold a source's password.
    pub fn unfinished_import(&self) -> Result<Option<String>, StoreError> {
        self.row("SELECT source FROM import_in_progress", &[])?
            .map(|row| col::<String>(&row, 0).map(|s| crate::live::credentials_hidden(&s)))
            .transpose()
    }
}

#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod tests;
