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
