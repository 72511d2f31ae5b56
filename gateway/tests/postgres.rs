//! The server on PostgreSQL (`[storage] engine = "postgres"`): messages between two users,
//! pipelined; a kill -9 with sends in flight; after the restart every acked message is there,
//! once, with its seq and content, and resends are recognised. Needs the server that
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL); fails without it. The harness
//! (`common/store.rs`) gives the server a fresh database of its own.

mod common;

#[tokio::test]
async fn acked_messages_survive_a_kill_9_with_postgresql_as_the_store() {
    let env = [("STORAGE__ENGINE", "postgres")];
    common::kill9::acked_messages_survive_kill_9(&env, 300, 150).await;
}

/// Runs a PostgreSQL client tool of the installed server version (pg_dump, pg_restore).
fn run_tool(tool: &str, args: &[&str]) {
    let out = std::process::Command::new(common::pg_cluster::pg_bin().join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// README "Backups": for PostgreSQL the database's own tools. `pg_dump -Fc` of a live server
/// (a consistent snapshot while it serves), `pg_restore` into an empty database, and a server
/// on the restored database has every user and every acked message, and goes on from there.
#[tokio::test]
async fn pg_dump_of_a_live_server_restores_into_a_working_store() {
    use ringchat_bench::client::conversation_id;
    let source = common::store::fresh_database();
    let server = common::TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", source.as_str()),
    ]);
    let (mut alice, a) = server.user("alice").await;
    let (_bob, b) = server.user("bob").await;
    let conv = conversation_id(a.user_id, b.user_id);
    for i in 0..40 {
        let ack = alice
            .send_text(b.user_id, &format!("c{i}"), &format!("before the dump {i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.seq, i + 1);
    }

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("ringchat.dump");
    let dump_s = dump.display().to_string();
    run_tool("pg_dump", &["-Fc", "-f", &dump_s, "-d", &source]);
    // Written after the snapshot: not in it.
    alice
        .send_text(b.user_id, "after", "after the dump")
        .await
        .unwrap()
        .unwrap();

    let target = common::store::fresh_database();
    run_tool("pg_restore", &["--no-owner", "-d", &target, &dump_s]);
    let restored = common::TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", target.as_str()),
    ]);
    let (mut bob, _) = restored.device("bob", "bob-restored").await;
    let messages = bob.sync_all(conv, 0).await.unwrap();
    common::kill9::assert_gap_free(&messages);
    assert_eq!(
        messages.len(),
        40,
        "the snapshot's messages, and only those"
    );
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            std::str::from_utf8(&m.content).unwrap(),
            format!("before the dump {i}")
        );
    }
    // The restored store goes on: the next seq, and a resend of a stored message is known.
    let (mut alice, _) = restored.device("alice", "alice-restored").await;
    let next = alice
        .send_text(b.user_id, "c-new", "after the restore")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.seq, next.duplicate), (41, false));
    let again = alice
        .send_text(b.user_id, "c3", "before the dump 3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.seq, again.duplicate), (4, true));
}

/// A migration at start waits for what it needs, past `statement_timeout_ms` and the call
/// timeout (`connect_timeout_ms + statement_timeout_ms`): here migration 5's CREATE INDEX on
/// `invites` behind a transaction that holds a lock on it, as in a rolling upgrade meeting a
/// long transaction of the nodes still running. Each try waits 5 s at most for a lock, then
/// rolls back and tries again. Once the lock is released the migration
/// completes and the server starts and serves. It used to run under both timeouts: the
/// migration was cancelled, rolled back, and the server exited, every start again.
#[test]
fn a_migration_waits_past_the_timeouts_for_a_lock_and_the_server_starts() {
    use common::TestServer;
    /// How long the migration must have waited: several times the call timeout below.
    const WAITED: &str = "3 seconds";
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut server = TestServer::start_in(&data_dir, &[("STORAGE__ENGINE", "postgres")]);
    server.stop();
    drop(server);

    let url = common::store::database_url(&data_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let connect = || {
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(connection);
            client
        })
    };
    let (holder, watcher) = (connect(), connect());
    // Back to version 4, the schema before migration 5's index.
    rt.block_on(holder.batch_execute(
        "DELETE FROM schema_migrations WHERE version = 5; DROP INDEX invites_issuer_id",
    ))
    .unwrap();
    // A transaction that writes invites, open until the test says: CREATE INDEX waits for it.
    rt.block_on(holder.batch_execute("BEGIN; LOCK TABLE invites IN ROW EXCLUSIVE MODE"))
        .unwrap();

    let dir = data_dir.clone();
    let starting = std::thread::spawn(move || {
        TestServer::start_in(
            &dir,
            &[
                ("STORAGE__ENGINE", "postgres"),
                ("STORAGE__POSTGRES__STATEMENT_TIMEOUT_MS", "300"),
                ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "700"),
            ],
        )
    });
    // The start of the CREATE INDEX waiting on the lock, once it has waited `WAITED`.
    let waiting_since = || -> Option<std::time::SystemTime> {
        assert!(
            !starting.is_finished(),
            "the server's start ended while its migration should still wait (its log is above)"
        );
        rt.block_on(watcher.query_opt(
            &format!(
                "SELECT query_start FROM pg_stat_activity WHERE application_name = 'ringchat' \
                 AND datname = current_database() AND wait_event_type = 'Lock' \
                 AND query LIKE '%CREATE INDEX invites_issuer_id%' \
                 AND now() - query_start > interval '{WAITED}'"
            ),
            &[],
        ))
        .unwrap()
        .map(|row| row.get(0))
    };
    let mut first = None;
    common::wait_until(
        "the migration waiting on the lock for longer than the timeouts",
        || {
            first = waiting_since();
            first.is_some()
        },
    );
    // Each try waits for a lock 5 s at most (a node stopped mid-wait leaves no transaction
    // queued holding locks): the next try waits again, and the server still starts.
    common::wait_until("the migration tried again, still waiting", || {
        waiting_since().is_some_and(|since| Some(since) > first)
    });
    rt.block_on(holder.batch_execute("COMMIT")).unwrap();
    let server = starting
        .join()
        .expect("the server starts once the lock is released");

    let version: i32 = rt
        .block_on(watcher.query_one("SELECT max(version) FROM schema_migrations", &[]))
        .unwrap()
        .get(0);
    assert_eq!(version, 5);
    assert!(
        server.log_lines_with("PostgreSQL schema: applying a migration") >= 2,
        "each step is logged before it runs, so a wait shows which; once per try"
    );
    assert!(server.log_lines_with("rolled back, trying again") >= 1);
    rt.block_on(async {
        let (mut alice, _) = server.user("alice").await;
        let (_bob, b) = server.user("bob").await;
        let ack = alice
            .send_text(b.user_id, "c1", "after the migration")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.seq, 1);
    });
    drop(server);
    drop((holder, watcher));
    common::store::drop_database(&data_dir);
}
