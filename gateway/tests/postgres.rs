//! The server on PostgreSQL (`[storage] engine = "postgres"`): messages between two users,
//! pipelined; a kill -9 with sends in flight; after the restart every acked message is there,
//! once, with its seq and content, and resends are recognised. Needs the server that
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL); fails without it.

mod common;

/// A fresh database on the test server, for this test's server alone; returns its URL.
async fn fresh_database() -> String {
    let url = std::env::var("RINGCHAT_TEST_POSTGRES_URL").expect(
        "RINGCHAT_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
         (`bash scripts/test.sh` starts one; README \"PostgreSQL as the store\")",
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    let name = format!(
        "ringchat_it_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let (base, _) = url
        .rsplit_once('/')
        .expect("a URL of the form postgres://user@host:port/database");
    format!("{base}/{name}")
}

#[tokio::test]
async fn acked_messages_survive_a_kill_9_with_postgresql_as_the_store() {
    let url = fresh_database().await;
    let env = [
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
    ];
    common::kill9::acked_messages_survive_kill_9(&env, 300, 150).await;
}
