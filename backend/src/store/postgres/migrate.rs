//! The schema, versioned: each migration is an `.sql` file in `migrations/`, compiled in, and
//! applied once, in order, at open. All of them run in one transaction under an advisory lock,
//! so two nodes starting at once apply each migration once (the second waits, then finds them
//! applied), and a failed migration leaves the schema as it was.

use deadpool_postgres::Object;

use crate::store::StoreError;

/// `(version, name, SQL)`, ascending. A released migration is never edited: a change is a
/// new file.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "init", include_str!("migrations/0001_init.sql"))];

/// Key of the advisory lock that migrations run under (any fixed number; "ringchat").
const MIGRATION_LOCK: i64 = 0x7269_6e67_6368_6174;

/// Brings the schema up to the latest version; refuses a database that a newer ringchat
/// migrated past what this one knows.
pub(super) async fn to_latest(client: &mut Object, schema: Option<&str>) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = schema {
        // `schema` is [a-z0-9_] (checked by `connect::pool`).
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"
        ))
        .await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > latest {
        return Err(StoreError::Engine(
            format!(
                "the database schema is at version {applied}, newer than this ringchat knows \
                 ({latest}): run a newer ringchat"
            )
            .into(),
        ));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "PostgreSQL schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (at, (version, _, _)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, at + 1);
        }
    }
}
