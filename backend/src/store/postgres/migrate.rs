//! The schema, versioned: each migration is an `.sql` file in `migrations/`, compiled in, and
//! applied once, in order, at open. All of them run in one transaction under an advisory lock,
//! so two nodes starting at once apply each migration once (the second waits, then finds them
//! applied), and a failed migration leaves the schema as it was. They run without the
//! connections' `statement_timeout`: an index built on a large table takes what it takes,
//! logged step by step, rather than rolling back and leaving a server that can never start.
//! A wait for a lock (another node's migration, a long transaction or a `pg_dump` on a table
//! a migration alters) is cut at `MIGRATION_LOCK_WAIT_MS` and the whole transaction retried
//! after a pause: PostgreSQL does not notice a client gone while its backend waits on a lock,
//! so a node stopped mid-wait (a deploy rolled back, a liveness probe) must not leave a
//! transaction queued that holds the locks it took before and blocks every node's requests.

use deadpool_postgres::Object;

use crate::store::StoreError;

/// `(version, name, SQL)`, ascending. A released migration is never edited: a change is a
/// new file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "import_marker",
        include_str!("migrations/0002_import_marker.sql"),
    ),
    (
        3,
        "application_inviter",
        include_str!("migrations/0003_application_inviter.sql"),
    ),
    (
        4,
        "user_group_added",
        include_str!("migrations/0004_user_group_added.sql"),
    ),
    (
        5,
        "invites_by_issuer",
        include_str!("migrations/0005_invites_by_issuer.sql"),
    ),
];

/// Tables of the first migration whose presence without `schema_migrations` means a schema
/// this ringchat did not make (by hand, or by something else): refused rather than guessed at.
const OWN_TABLES: [&str; 3] = ["counters", "users", "messages"];

/// Key of the advisory lock that migrations run under (any fixed number; "ringchat").
const MIGRATION_LOCK: i64 = 0x7269_6e67_6368_6174;

/// How long one try waits for any one lock (the advisory lock included) before it rolls back,
/// in milliseconds: what a transaction left behind by a stopped node can hold others up.
const MIGRATION_LOCK_WAIT_MS: u64 = 5_000;

/// The pause between tries, in milliseconds, so that a node waiting for a long lock holder
/// does not queue behind it again at once.
const MIGRATION_RETRY_PAUSE_MS: u64 = 1_000;

/// Brings the schema up to the latest version; refuses a schema this ringchat does not know:
/// one a newer ringchat migrated past what this one knows, one whose migration history is not
/// this ringchat's, and ringchat's tables without a history. A migration is never partly
/// applied: all of them run in the one transaction, tried again (and logged) for as long as a
/// lock it needs is held longer than `MIGRATION_LOCK_WAIT_MS`.
pub(super) async fn to_latest(client: &mut Object, schema: Option<&str>) -> Result<(), StoreError> {
    let mut tries: u64 = 0;
    loop {
        match try_to_latest(client, schema).await {
            Err(e) if waited_past_lock_timeout(&e) => {
                tries += 1;
                tracing::warn!(
                    tries,
                    error = %e,
                    "PostgreSQL schema: a lock the migrations need is held by another \
                     session; rolled back, trying again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(MIGRATION_RETRY_PAUSE_MS))
                    .await;
            }
            done => return done,
        }
    }
}

/// Whether `e` is a statement cut by `lock_timeout` (SQL state 55P03).
fn waited_past_lock_timeout(e: &StoreError) -> bool {
    let StoreError::Engine(source) = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| *code == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

async fn try_to_latest(client: &mut Object, schema: Option<&str>) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // For this transaction only: the pooled connection keeps its timeouts afterwards.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {MIGRATION_LOCK_WAIT_MS}"
    ))
    .await?;
    tracing::info!("PostgreSQL schema: taking the migration lock (another node may hold it)");
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = schema {
        // `schema` is [a-z0-9_] (checked by `connect::pool`).
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"
        ))
        .await?;
    }
    let tracked: bool = tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !tracked {
        for table in OWN_TABLES {
            let exists: bool = tx
                .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
                .await?
                .try_get(0)?;
            if exists {
                return Err(schema_error(format!(
                    "the database has a table {table:?} but no schema_migrations: its schema was \
                     not made by ringchat's migrations; point [storage.postgres] url at an empty \
                     database (or schema)"
                )));
            }
        }
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let rows = tx
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut history = Vec::with_capacity(rows.len());
    for row in &rows {
        history.push((row.try_get::<_, i32>(0)?, row.try_get::<_, String>(1)?));
    }
    let applied = check_history(&history)?;
    let pending: Vec<_> = MIGRATIONS.iter().filter(|m| m.0 > applied).collect();
    for &(version, name, sql) in &pending {
        // Before the step, so that one waiting on a lock shows which it is.
        tracing::info!(version, name, "PostgreSQL schema: applying a migration");
        let started = std::time::Instant::now();
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(
            version,
            name,
            took_ms = started.elapsed().as_millis() as u64,
            "PostgreSQL schema: migration applied"
        );
    }
    tx.commit().await?;
    match pending.last() {
        Some((version, ..)) => tracing::info!(version, "PostgreSQL schema: migrations committed"),
        None => tracing::info!(version = applied, "PostgreSQL schema: up to date"),
    }
    Ok(())
}

fn schema_error(why: String) -> StoreError {
    StoreError::Engine(why.into())
}

/// The version the applied migrations `history` (ascending) bring the schema to; refuses a
/// schema a newer ringchat migrated past what this one knows, and one whose history is not
/// this ringchat's migrations from the first on (a gap, or another migration under a number).
fn check_history(history: &[(i32, String)]) -> Result<i32, StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let applied = history.last().map_or(0, |m| m.0);
    if applied > latest {
        return Err(schema_error(format!(
            "the database schema is at version {applied}, newer than this ringchat knows \
             ({latest}): run a newer ringchat"
        )));
    }
    for (at, (version, name)) in history.iter().enumerate() {
        let (known_version, known_name, _) = MIGRATIONS[at];
        if (*version, name.as_str()) != (known_version, known_name) {
            return Err(schema_error(format!(
                "the database's schema_migrations lists migration {version} {name:?} where this \
                 ringchat's migration {known_version} is {known_name:?}: the schema was changed \
                 by something other than ringchat's migrations; it is not one this ringchat knows"
            )));
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests;
