//! Which store a test server runs on. `RINGCHAT_TEST_STORE=postgres` runs every test server on
//! PostgreSQL (`[storage] engine = "postgres"`), each in a database of its own on the server
//! named by `RINGCHAT_TEST_POSTGRES_URL` (`scripts/postgres-test-server.sh` starts a private
//! one); unset or `embedded`, on the embedded store. A test may also ask for PostgreSQL itself
//! (`STORAGE__ENGINE=postgres` in its env) and gets its database the same way.
//!
//! A server's database is named after its data dir, so that a restart on the same dir (a
//! kill -9 test) reopens the same database. The first start of a dir in this test process
//! makes the database afresh (dropping what an earlier run with the same path left); a
//! `TestServer` that owns its temp dir drops it again when it goes away.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Whether `RINGCHAT_TEST_STORE` asks for PostgreSQL; anything but `postgres`, `embedded` or
/// unset is a mistake that stops the test.
pub fn on_postgres() -> bool {
    match std::env::var("RINGCHAT_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("embedded") | Ok("") | Err(std::env::VarError::NotPresent) => false,
        Ok(other) => panic!("RINGCHAT_TEST_STORE={other:?}: expected \"postgres\" or \"embedded\""),
        Err(e) => panic!("RINGCHAT_TEST_STORE: {e}"),
    }
}

/// For a test about the embedded engine itself (its files in the data dir, disk full, power
/// loss, …): true on a PostgreSQL run, after saying so on the terminal (past the test
/// harness's capture, so a passing run shows it; grep for "embedded store only").
pub fn embedded_only(test: &str, why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped on RINGCHAT_TEST_STORE=postgres, embedded store only: {why}"
    );
    true
}

/// The test PostgreSQL server's URL; a clear failure without one.
fn server_url() -> String {
    std::env::var("RINGCHAT_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "RINGCHAT_TEST_POSTGRES_URL is not set: a server on PostgreSQL needs a PostgreSQL \
             server (`source scripts/postgres-test-server.sh` starts one; README \"PostgreSQL \
             as the store\")"
        )
    })
}

/// The database of a data dir: a hash of its path (FNV-1a), `[a-z0-9_]` only.
fn database_of(data_dir: &Path) -> String {
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("ringchat_it_{hash:016x}")
}

/// The databases made by this process that are still there.
static MADE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Runs `statements` one by one (DROP/CREATE DATABASE refuse a transaction block, which a
/// multi-statement query is) on the test server's own database.
fn admin_sql(statements: Vec<String>) -> Result<(), String> {
    sql_at(server_url(), statements)
}

/// Makes the trigger function `lose_answer()`, which fails the write that fired it with the
/// error of a connection lost mid-write (SQLSTATE 08006): what the server sees when the answer
/// to a COMMIT is lost, and reads as `StoreError::Unavailable`. (The write is in fact rolled
/// back; the server cannot tell, so it must treat it as one that may have landed.) The
/// connection itself stays up, so no later call of the test meets it dead. For `sql_in`, with
/// a `CREATE TRIGGER … EXECUTE FUNCTION lose_answer()`.
pub const LOSE_ANSWER: &str = "CREATE FUNCTION lose_answer() RETURNS trigger LANGUAGE plpgsql AS \
     $$ BEGIN RAISE EXCEPTION 'the answer was lost (test)' USING ERRCODE = 'connection_failure'; \
     END $$";

/// Runs `statements` in the database of the server on `data_dir` (made when it started): a
/// test that changes, under a running server, what its store accepts.
pub fn sql_in(data_dir: &Path, statements: Vec<String>) -> Result<(), String> {
    sql_at(database_url(data_dir), statements)
}

/// Runs `statements` one by one at `url`, on a thread of its own: callers may be on a
/// runtime's thread, where blocking on another runtime panics.
pub fn sql_at(url: String, statements: Vec<String>) -> Result<(), String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the PostgreSQL admin connection: {e}"))?;
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connect to the test PostgreSQL server {url}: {e}"))?;
            tokio::spawn(connection);
            for sql in &statements {
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
            }
            Ok(())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the PostgreSQL admin thread panicked".into()))
}

/// The URL of `data_dir`'s database, made afresh at the dir's first start in this process.
pub fn database_url(data_dir: &Path) -> String {
    let name = database_of(data_dir);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if !made.contains(&name) {
        admin_sql(vec![
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        made.insert(name.clone());
    }
    let url = server_url();
    let (base, _) = url
        .rsplit_once('/')
        .expect("RINGCHAT_TEST_POSTGRES_URL of the form postgres://user@host:port/database");
    format!("{base}/{name}")
}

/// A database of its own for a test that names the URL itself (a migration's destination, a
/// restore's target): made afresh, under a key no data dir has.
pub fn fresh_database() -> String {
    static MADE_FRESH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE_FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    database_url(Path::new(&format!(
        "fresh-database:{}:{n}",
        std::process::id()
    )))
}

/// Drops `data_dir`'s database, if this process made it (its server must be gone). Never
/// panics (it runs in `Drop`); a database it cannot drop goes with the private cluster.
pub fn drop_database(data_dir: &Path) {
    let name = database_of(data_dir);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if made.remove(&name)
        && let Err(e) = admin_sql(vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
    {
        let _ = writeln!(std::io::stderr(), "test database left behind: {e}");
    }
}

/// The settings that put a server on `data_dir`'s database, when it runs on PostgreSQL: by
/// `RINGCHAT_TEST_STORE`, or because `env` (full `RINGCHAT_…` names) names the engine but no
/// URL. Appended after `env`, so they win over the base settings.
pub fn env_for(data_dir: &Path, env: &[(String, String)]) -> Vec<(String, String)> {
    let get = |key: &str| env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let engine = get("RINGCHAT_STORAGE__ENGINE");
    let postgres = match engine {
        Some(e) => e == "postgres",
        None => on_postgres(),
    };
    if !postgres || get("RINGCHAT_STORAGE__POSTGRES__URL").is_some() {
        return Vec::new();
    }
    vec![
        ("RINGCHAT_STORAGE__ENGINE".into(), "postgres".into()),
        (
            "RINGCHAT_STORAGE__POSTGRES__URL".into(),
            database_url(data_dir),
        ),
    ]
}
