//! The store of record on PostgreSQL: every port of `store/ports.rs` on a database that the
//! nodes of a cluster share. One file per part, as `store/fjall/`:
//!
//! - `connect.rs`: the driver's settings (URL, TLS, timeouts, durability) and the pool;
//! - `migrate.rs` + `migrations/*.sql`: the schema, versioned, applied at open;
//! - `log.rs` (the conversation log's reads) and `append.rs` (a commit group: ONE transaction,
//!   a fixed number of round trips whatever its size), `cursors.rs`, `owners.rs`;
//! - `accounts.rs`, `account_admin.rs`, `contacts.rs`, `groups.rs`, `audit.rs`,
//!   `push_tokens.rs`: the other ports, a table or a few each (`migrations/0001_init.sql`);
//! - `dump.rs`: export and import of the whole store (`ringchat migrate`, `store/dump.rs`);
//! - `explain.rs` (tests): every port query's plan uses an index for its lookup key.
//!
//! The ports are synchronous and called from blocking threads (the sequencer's commit thread,
//! the bounded read pool, spawn_blocking). The adapter owns a small tokio runtime of its own
//! (two named `rc-pg` workers) that drives the connections, and each call `block_on`s
//! its query on it: the driver never runs on the gateway's shards or the backend's workers,
//! and the threads parked on a slow database are the callers' bounded ones.
//!
//! A failed statement (connection lost, timeout, server restarting) is a
//! [`StoreError::Engine`], which the server answers with UNAVAILABLE and a `retry_after_ms`;
//! unlike fjall it never stops the store's writes ([`StoreHealth::fail`] is not called): the
//! transaction was rolled back, and the next commit group may well succeed on a fresh
//! connection (the pool drops closed ones). While the database is away, `away.rs` answers
//! at once instead of trying a connection per request, and every call is bounded by
//! `connect_timeout_ms + statement_timeout_ms` (README "When PostgreSQL goes away").

mod account_admin;
mod accounts;
mod append;
mod audit;
mod away;
mod connect;
mod contacts;
mod cursors;
mod dump;
#[cfg(test)]
mod explain;
mod groups;
mod in_doubt;
#[cfg(test)]
mod in_doubt_tests;
mod log;
mod migrate;
mod owners;
mod push_tokens;

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::{StoreEngine, StoreError, StoreHealth};
use crate::config::{Durability, PostgresConfig};

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_transient(&e) {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Engine(Box::new(e))
        }
    }
}

/// Whether a driver error says the server is away or busy rather than that a statement is
/// wrong: a lost connection or no SQL state at all (I/O, timeout), or a state of class 08
/// (connection exception), 53 (insufficient resources), 57P01–57P03 (shutting down, cannot
/// connect now), 57014 (statement timeout) or 40001/40P01 (serialization, deadlock).
fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(state) = e.code() else {
        return true;
    };
    let code = state.code();
    e.is_closed()
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01"
        )
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // No connection within the timeout, or none could be made: the server is away or
        // every connection is busy.
        Self::Unavailable(format!("PostgreSQL connection pool: {e}").into())
    }
}

/// Parameters of a statement.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A u64 of the server as the bigint with the same bits (the schema's rule).
fn i(v: u64) -> i64 {
    v as i64
}

/// Column `idx` of a row; a type the schema does not promise is a corrupt store.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| StoreError::Corrupt(e.into()))
}

/// A bigint column as the u64 with the same bits.
fn u(row: &Row, idx: usize) -> Result<u64, StoreError> {
    col::<i64>(row, idx).map(|v| v as u64)
}

/// Where a batched lookup's row goes among `len` keys: column 0 is the key's `WITH ORDINALITY`
/// number (from 1); a number outside the keys is corrupt.
fn placed(row: &Row, len: usize) -> Result<usize, StoreError> {
    usize::try_from(u(row, 0)?.wrapping_sub(1))
        .ok()
        .filter(|at| *at < len)
        .ok_or_else(|| StoreError::Corrupt("a batched row out of place".into()))
}

/// An integer column as u32; a negative value is corrupt.
fn u32_col(row: &Row, idx: usize) -> Result<u32, StoreError> {
    let v: i32 = col(row, idx)?;
    u32::try_from(v).map_err(|e| StoreError::Corrupt(e.into()))
}

/// A u32 as an integer column (values above i32::MAX keep their bits).
fn i32_of(v: u32) -> i32 {
    v as i32
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.into()))
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

/// A limit as SQL's bigint (`usize::MAX` means no limit).
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub struct PgStore {
    /// Drives the connections; `None` only while dropping (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// Whether the database is known to be away (`away.rs`).
    away: away::Away,
    /// Commits whose answer was lost, until they finished on the database (`in_doubt.rs`).
    in_doubt: in_doubt::InDoubt,
    /// A call with no answer by then is abandoned as `Unavailable`: waiting for a connection
    /// plus a statement's time, so that a database that went silent holds no caller forever.
    call_timeout: std::time::Duration,
    /// Never failed by this adapter (see the module doc); kept for the port.
    health: Arc<StoreHealth>,
    /// The server's data dir lock, held while the store is open (`store/open.rs`).
    _dir_lock: Option<std::fs::File>,
    /// Tests (`explain.rs`): statements are EXPLAINed, not run, and their plans kept here.
    #[cfg(test)]
    explained: Option<std::sync::Mutex<Vec<(String, String)>>>,
}

impl PgStore {
    /// Connects to the database `config` names and brings its schema up to date; refuses a
    /// schema this ringchat does not know (`migrate.rs`) and a database a copy into has not
    /// finished (`ringchat migrate --to`): a server runs on neither.
    pub fn open(config: &PostgresConfig, durability: Durability) -> Result<Self, StoreError> {
        Self::open_in(config, durability, None)
    }

    /// [`Self::open`] for a copy into the database (`ringchat migrate --to`, which resumes its
    /// own unfinished copy): a copy's mark is no reason to refuse it.
    pub fn open_for_import(
        config: &PostgresConfig,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        Self::connect(config, durability, None)
    }

    /// [`Self::open`], with every table in `schema` (created if missing; `[a-z0-9_]` only)
    /// instead of the connection's default search path: the tests' own schema each.
    pub(crate) fn open_in(
        config: &PostgresConfig,
        durability: Durability,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(config, durability, schema)?;
        if let Some(source) = store.unfinished_import()? {
            return Err(StoreError::UnfinishedImport(source));
        }
        Ok(store)
    }

    fn connect(
        config: &PostgresConfig,
        durability: Durability,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(crate::threads::POSTGRES)
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let pool = {
            let _entered = runtime.enter();
            connect::pool(config, durability, schema)?
        };
        let store = Self {
            runtime: Some(runtime),
            handle,
            pool,
            away: away::Away::new(config.reconnect_interval_ms),
            in_doubt: in_doubt::InDoubt::default(),
            call_timeout: std::time::Duration::from_millis(
                config
                    .connect_timeout_ms
                    .saturating_add(config.statement_timeout_ms),
            ),
            health: Arc::default(),
            _dir_lock: None,
            #[cfg(test)]
            explained: None,
        };
        let mut client = store.block(async {
            let client = store.client().await?;
            connect::check_encoding(&client).await?;
            Ok(client)
        })?;
        // Not bounded by the call timeout (nor, inside, by `statement_timeout`): a migration
        // may wait for another node's or a lock held by a long transaction, or build an index
        // on a large table; cut short, it rolls back and the server could never start.
        store.block_on(migrate::to_latest(&mut client, schema))?;
        Ok(store)
    }

    /// The store, holding the data dir's lock for as long as it is open.
    pub fn holding_dir_lock(mut self, lock: std::fs::File) -> Self {
        self._dir_lock = Some(lock);
        self
    }

    /// Runs a call's queries on the adapter's runtime, blocking the calling thread. Callers are
    /// blocking threads (the ports' contract); one inside a multi-threaded runtime's context
    /// (a `spawn_blocking` thread, or a worker on a path that breaks the contract) goes through
    /// `block_in_place`, which a blocking thread passes straight through and a worker survives
    /// by handing its tasks on. Register, login, messaging and presence were checked to call
    /// only from blocking threads (presence's friend reads moved to `spawn_blocking`).
    fn block<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let result = self.block_on(async {
            match tokio::time::timeout(self.call_timeout, f).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(
                    format!("PostgreSQL did not answer within {:?}", self.call_timeout).into(),
                )),
            }
        });
        if let Err(StoreError::Unavailable(_)) = &result {
            metrics::counter!("ringchat_store_unavailable_total").increment(1);
        }
        result
    }

    /// [`Self::block`] without its timeout: for the schema's migration at open only.
    fn block_on<T>(&self, f: impl Future<Output = T>) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(f))
            }
            _ => self.handle.block_on(f),
        }
    }

    /// A pooled connection, or `Unavailable` at once while the database is known to be away
    /// or a commit whose answer was lost has not finished on it (`in_doubt.rs`).
    async fn client(&self) -> Result<Object, StoreError> {
        use deadpool_postgres::{PoolError, TimeoutType};
        self.away.check()?;
        match self.pool.get().await {
            Ok(client) => {
                self.away.reached();
                self.in_doubt.settle(&client).await?;
                Ok(client)
            }
            Err(e) => {
                // No connection could be made; a wait for a busy pool's slot is load, not an
                // outage.
                if matches!(
                    e,
                    PoolError::Backend(_) | PoolError::Timeout(TimeoutType::Create)
                ) {
                    self.away.failed(&e);
                }
                Err(e.into())
            }
        }
    }

    async fn rows_async(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        #[cfg(test)]
        if self.explain(sql, params).await? {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// The rows of one statement (prepared once per connection).
    fn rows(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.block(self.rows_async(sql, params))
    }

    /// The row of a statement that returns at most one.
    fn row(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// Runs one statement on its own (its own transaction); returns the rows it changed.
    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
        self.block(async {
            #[cfg(test)]
            if self.explain(sql, params).await? {
                return Ok(0);
            }
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.execute(&statement, params).await?)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped on an async thread, where dropping a runtime (which waits
        // for its workers) panics; its connections need nothing more of it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl StoreEngine for PgStore {
    fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    /// Every acknowledged write was committed with its durability: nothing is left to do.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The database answers and takes writes: a standby (a failover onto one, a primary
    /// demoted) or sessions made read-only (`default_transaction_read_only`) answer reads but
    /// refuse every write, so the node is not ready on them. `transaction_read_only` is that
    /// of the check's own transaction, which starts as any other of its session.
    fn reachable(&self) -> Result<(), StoreError> {
        let row = self
            .row(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'",
                &[],
            )?
            .ok_or_else(|| StoreError::Corrupt("the readiness check returned no row".into()))?;
        if col::<bool>(&row, 0)? {
            return Err(StoreError::ReadOnly(
                "PostgreSQL is a standby in recovery, read-only: point [storage.postgres] url \
                 at the primary"
                    .into(),
            ));
        }
        if col::<bool>(&row, 1)? {
            return Err(StoreError::ReadOnly(
                "PostgreSQL sessions are read-only (default_transaction_read_only is on for \
                 the database, the role or the server)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The URL of the test server (`scripts/test.sh` starts one): the PostgreSQL tests fail, never
/// skip, without it.
#[cfg(test)]
pub(crate) fn test_url() -> String {
    std::env::var("RINGCHAT_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "RINGCHAT_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server \
             (`bash scripts/test.sh` starts one; README \"PostgreSQL as the store\" says how \
             to run them by hand)"
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    /// Marks a test dir whose schema was made fresh: a later open of the dir is a restart.
    const FRESH_MARK: &str = "postgres-schema";

    /// The schema of a test dir: derived from its path, so each test gets its own.
    pub(crate) fn schema_of(dir: &Path) -> String {
        let hash = dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("rc_test_{hash:016x}")
    }

    pub(crate) fn test_config(pool_connections_max: usize) -> PostgresConfig {
        PostgresConfig {
            url: test_url(),
            pool_connections_max,
            ..PostgresConfig::default()
        }
    }

    /// Opens the test dir's schema; the first open of a dir drops what an earlier run with
    /// the same path may have left.
    pub(crate) fn open_test_store(dir: &Path) -> Result<PgStore, StoreError> {
        open_test_store_with(dir, test_config(4))
    }

    /// [`open_test_store`] with `config` (its URL the test server's).
    pub(crate) fn open_test_store_with(
        dir: &Path,
        config: PostgresConfig,
    ) -> Result<PgStore, StoreError> {
        let schema = schema_of(dir);
        let mark = dir.join(FRESH_MARK);
        if !mark.exists() {
            let store = PgStore::open_in(&test_config(1), Durability::Fsync, None)?;
            store.execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])?;
            std::fs::write(&mark, &schema)?;
        }
        PgStore::open_in(&config, Durability::Fsync, Some(&schema))
    }

    /// [`open_test_store`] with a statement timeout of `statement_timeout_ms` (and a second to
    /// connect): for tests that make calls time out. Opening migrates under a lock the other
    /// tests' opens take too, which it waits for whatever the timeouts (`migrate.rs`).
    pub(crate) fn open_test_store_timed(dir: &Path, statement_timeout_ms: u64) -> PgStore {
        let config = PostgresConfig {
            statement_timeout_ms,
            connect_timeout_ms: 1_000,
            ..test_config(2)
        };
        open_test_store_with(dir, config).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// One database session on the test dir's schema (a pool of one connection), for what
    /// must stay on one session between statements: a transaction holding a lock.
    pub(crate) struct Session(PgStore);

    impl Session {
        pub(crate) fn open(dir: &Path) -> Self {
            Self(open_test_store_with(dir, test_config(1)).expect("a session"))
        }

        /// Runs `sql` (no parameters) on the session.
        pub(crate) fn run(&self, sql: &str) {
            self.0
                .execute(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }

        /// The bigint that `sql` selects.
        pub(crate) fn count(&self, sql: &str) -> i64 {
            let row = self
                .0
                .row(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            col(&row.expect("a row"), 0).expect("a bigint")
        }
    }

    /// The storage ports' conformance suite, on a PostgreSQL schema of its own per test.
    struct PostgresAdapter;

    impl crate::store::conformance::Adapter for PostgresAdapter {
        type Store = PgStore;
        const EXCLUSIVE: bool = false;

        fn try_open(dir: &Path) -> Result<PgStore, StoreError> {
            open_test_store(dir)
        }
    }

    mod conformance {
        crate::store::conformance::conformance_suite!(super::PostgresAdapter);
    }

    /// A database in another encoding than UTF8 is refused at open with a clear error: on it
    /// a name outside the encoding would fail its whole commit group once someone wrote one.
    #[test]
    fn a_database_not_in_utf8_is_refused_at_open() {
        let name = format!("rc_test_latin1_{}", std::process::id());
        let admin = PgStore::open_in(&test_config(1), Durability::Fsync, None).unwrap();
        admin
            .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
            .unwrap();
        admin
            .execute(
                &format!(
                    "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
                     TEMPLATE template0"
                ),
                &[],
            )
            .unwrap();
        let url = test_url();
        let (base, _) = url.rsplit_once('/').expect("a URL that names a database");
        let config = PostgresConfig {
            url: format!("{base}/{name}"),
            ..test_config(1)
        };
        // The store (if it opened) is closed before its database is dropped.
        let refused = match PgStore::open(&config, Durability::Fsync) {
            Err(StoreError::Engine(e)) => Ok(e.to_string()),
            Err(other) => Err(format!("expected the encoding's refusal, got {other}")),
            Ok(_) => Err("opened a LATIN1 database".to_owned()),
        };
        admin
            .execute(&format!("DROP DATABASE {name} WITH (FORCE)"), &[])
            .unwrap();
        let why = refused.unwrap_or_else(|e| panic!("{e}"));
        assert!(why.contains("LATIN1") && why.contains("UTF8"), "{why}");
    }

    /// A server that is away is `Unavailable` (the client is told to retry), not an engine
    /// failure: the listener is closed before the store tries it.
    #[test]
    fn a_server_that_is_away_makes_the_store_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = PostgresConfig {
            url: format!("postgres://ringchat@127.0.0.1:{port}/ringchat"),
            connect_timeout_ms: 2_000,
            ..PostgresConfig::default()
        };
        match PgStore::open(&config, Durability::Fsync) {
            Err(StoreError::Unavailable(_)) => {}
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("opened a store on a closed port"),
        }
    }
}
