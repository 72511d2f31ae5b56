//! `ringchat migrate` between the embedded store and PostgreSQL with the real binary: a store
//! of 100,000 messages (and two users who signed up on a real server) copied into a fresh
//! database and verified; a server with `engine = "postgres"` on that database serves them
//! (the old password logs in, Sync returns the old messages with their seqs, a new send takes
//! the next seq); then PostgreSQL → a new embedded store, verified. The URL comes from the
//! environment and from a file, with a password the output never shows (the test server
//! trusts local connections: the password is sent nowhere). Needs the server that
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL); fails without it.

mod common;

use std::path::Path;

use common::TestServer;
use common::migrate::{fill_store, migrate_messages, ringchat_in, ringchat_in_with, text};
use ringchat_bench::client::conversation_id;

fn body(i: usize) -> String {
    format!("before the migration {i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_to_postgresql_is_served_from_it_and_migrates_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, c) = (tmp.path().join("a"), tmp.path().join("c"));

    // Two users and 20 messages through a real server on the embedded store.
    let mut server = TestServer::start_in(&a, &[]);
    let (mut al, alice) = server.user("alice").await;
    let bob = server.user("bob").await.1;
    for i in 0..20 {
        let ack = al
            .send_text(bob.user_id, &format!("m{i}"), &body(i))
            .await
            .unwrap()
            .expect("acked");
        assert_eq!(ack.seq, i as u64 + 1);
    }
    drop(al);
    server.stop();
    let messages = migrate_messages();
    fill_store(&a, messages);

    // embedded → PostgreSQL.
    let url = common::store::fresh_database();
    let secret = "topsecret-pw";
    let joint = if url.contains('?') { '&' } else { '?' };
    let with_password = format!("{url}{joint}password={secret}");
    let pg = format!("postgres:{with_password}");
    let embedded = |d: &Path| format!("embedded:{}", d.display());
    let (from_a, to_c) = (embedded(&a), embedded(&c));
    // `postgres:` alone: the URL from the server's variable, not the command line.
    let out = ringchat_in_with(
        tmp.path(),
        &["migrate", "--from", &from_a, "--to", "postgres:"],
        &[("RINGCHAT_STORAGE__POSTGRES__URL", with_password.as_str())],
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains(secret), "{report}");
    assert!(report.contains("verification passed"), "{report}");
    let total = messages + 20;
    assert!(
        report.contains(&format!("{:<18} {:>12} records", "messages", total)),
        "{report}"
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("checkpoint")),
        "the checkpoint is removed once verified"
    );

    // A server on PostgreSQL serves the migrated users and messages.
    let data = tmp.path().join("pg-node");
    let mut server = TestServer::start_in(
        &data,
        &[
            ("STORAGE__ENGINE", "postgres"),
            ("STORAGE__POSTGRES__URL", url.as_str()),
        ],
    );
    let (mut al, again) = server.device("alice", "phone").await;
    assert_eq!(again.user_id, alice.user_id, "the old password logs in");
    let conv = conversation_id(alice.user_id, bob.user_id);
    let stored = al.sync_all(conv, 0).await.unwrap();
    assert_eq!(stored.len(), 20);
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1);
        assert_eq!(m.client_msg_id, format!("m{i}"));
        assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(i));
    }
    let ack = al
        .send_text(bob.user_id, "after", "after the migration")
        .await
        .unwrap()
        .expect("acked");
    assert_eq!(ack.seq, 21, "a new send takes the next seq");
    let resend = al
        .send_text(bob.user_id, "m19", &body(19))
        .await
        .unwrap()
        .expect("acked");
    assert_eq!(resend.seq, 20, "the dedup window came along");
    drop(al);
    server.stop();

    // PostgreSQL → a new embedded store, verified; and a copy into a non-empty database is
    // refused.
    let url_file = tmp.path().join("pg-url");
    std::fs::write(&url_file, format!("{with_password}\n")).unwrap();
    let from_file = format!("postgres:file:{}", url_file.display());
    let out = ringchat_in(
        tmp.path(),
        &["migrate", "--from", &from_file, "--to", &to_c],
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains(secret), "{report}");
    assert!(
        report.contains("verification passed")
            && report.contains(&format!("{:<18} {:>12} records", "messages", total + 1)),
        "{report}"
    );
    let out = ringchat_in(tmp.path(), &["migrate", "--from", &from_a, "--to", &pg]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert!(!text(&out).contains(secret), "{}", text(&out));
}
